//! Existing participants join a union from a date, as Russia planned for the EAEU: before it
//! Russia's node issues and receives in Russia's name, from it in the union's (numbered
//! `EA-RU-…`, still signed by Russia's node); what it issued before keeps its name through
//! confirmation and void; a partner learns the union through Russia's signed participant list,
//! and sends certificates for the union to Russia's node by `importing_member`. Both nodes
//! read a clock the test moves across the date.

use std::sync::Arc;
use std::time::Duration;

use kp_node::clock::Clock;
use kp_tests::shifted::{start_with, ShiftedClock};
use kp_tests::*;
use serde_json::{json, Value};

/// Certificate JSON from `from` to `to` issued on the clock's today.
fn certificate(clock: &ShiftedClock, from: &str, to: &str, member: Option<&str>, variant: u64) -> String {
    let today = clock.now().date();
    let mut v: Value = serde_json::from_str(&certificate_json(from, to, None, variant)).unwrap();
    v["issued_on"] = today.to_string().into();
    v["expires_on"] = today.add_days(30).unwrap().to_string().into();
    v["parcels"][0]["origin"] = "RU".into();
    if let Some(m) = member {
        v["importing_member"] = m.into();
    }
    v.to_string()
}

fn status_of(api: &Api, number: &str) -> String {
    let (_, v) = api.get(&format!("/v1/certificates/{number}"));
    v["status"].as_str().unwrap_or("").to_owned()
}

#[test]
fn a_participant_that_joins_a_union_issues_in_its_name_from_the_date_and_keeps_what_it_issued_before() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let ru = start_with(&rt, init_dir(tmp.path(), "RU", 0), clock.clone());
    let inn = start_with(&rt, init_dir(tmp.path(), "IN", 0), clock.clone());
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);

    // Russia records the Eurasian Economic Union, with itself and Belarus as members, from the
    // day after tomorrow. Both are participants today: that no longer stops them joining.
    let joins = clock.now().date().add_days(2).unwrap();
    let body = json!({"status": "active", "name": "Eurasian Economic Union", "effective_from": joins.to_string(), "members": ["RU", "BY"]});
    let (status, v) = ru.api.post("/v1/participants/EA", &body.to_string());
    assert_eq!(status, 200, "{v}");
    // A change dated before the pending join would silently replace it: refused, by field.
    let (status, v) = ru.api.post("/v1/participants/EA", &json!({"status": "suspended"}).to_string());
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["problems"][0]["field"], "effective_from", "{v}");
    // A union cannot be a member of another.
    let (status, v) = ru.api.post(
        "/v1/participants/XU",
        &json!({"status": "active", "name": "Union of unions", "members": ["EU"]}).to_string(),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("EU is a union itself"), "{v}");

    // Before the date: Russia's own name, and only that.
    let before = ru.api.submit(&certificate(&clock, "RU", "IN", None, 1));
    let before_voided = ru.api.submit(&certificate(&clock, "RU", "IN", None, 2));
    assert!(before.starts_with("RU-"), "{before}");
    let (status, v) = ru.api.post("/v1/certificates", &certificate(&clock, "EA", "IN", None, 3));
    assert_eq!(status, 422, "{v}");
    wait_until(Duration::from_secs(20), "IN has both", || {
        status_of(&inn.api, &before) == "received" && status_of(&inn.api, &before_voided) == "received"
    });

    // Three days on: Russia is a member state of the EAEU.
    clock.shift_days(3);
    wait_linked(&ru.api, inn.code);
    // India learns the union from Russia's signed participant list.
    let (status, v) = ru.api.get("/v1/participants/export");
    assert_eq!(status, 200, "{v}");
    let (status, v) = inn.api.post("/v1/participants/import", &json!({"list": v["list"]}).to_string());
    assert_eq!(status, 200, "{v}");
    let (_, ea) = inn.api.get("/v1/participants/EA");
    assert_eq!(ea["participant"]["members"], json!(["RU", "BY"]), "{ea}");

    // Russia's node now issues in the union's name, from Russia's range of its numbers.
    let (status, v) = ru.api.post("/v1/certificates", &certificate(&clock, "RU", "IN", None, 4));
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("RU is a member state of EA"), "{v}");
    let after = ru.api.submit(&certificate(&clock, "EA", "IN", None, 5));
    assert!(after.starts_with("EA-RU-"), "{after}");
    wait_until(Duration::from_secs(20), "IN has the union's certificate", || {
        status_of(&inn.api, &after) == "received"
    });
    let got = inn.api.certificate(&after);
    assert_eq!(got["peer"], "RU", "{got}");
    assert_eq!(got["certificate"]["exporting_participant"], "EA", "{got}");

    // What Russia issued before keeps its name: confirmed by India, voided by Russia.
    let carats = inn.api.certificate(&before)["carats"].clone();
    let confirm = json!({"received_on": clock.now().date().to_string(), "parcels": 2, "carats": carats});
    let (status, v) = inn.api.post(&format!("/v1/certificates/{before}/confirm"), &confirm.to_string());
    assert_eq!(status, 200, "{v}");
    let (status, v) =
        ru.api.post(&format!("/v1/certificates/{before_voided}/void"), r#"{"reason":"shipment cancelled"}"#);
    assert_eq!(status, 200, "{v}");
    wait_until(Duration::from_secs(20), "the confirmation and the void cross", || {
        status_of(&ru.api, &before) == "import_confirmed" && status_of(&inn.api, &before_voided) == "voided"
    });
    assert_eq!(ru.api.certificate(&before)["certificate"]["exporting_participant"], "RU");

    // India ships to the union through Russia's node: to EA, naming RU as the member state.
    let (status, v) = inn.api.post("/v1/certificates", &certificate(&clock, "IN", "RU", None, 6));
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("RU is a member state of EA"), "{v}");
    let to_union = inn.api.submit(&certificate(&clock, "IN", "EA", Some("RU"), 7));
    wait_until(Duration::from_secs(20), "RU receives it for the union", || {
        status_of(&ru.api, &to_union) == "received"
    });
    assert_eq!(inn.api.certificate(&to_union)["peer"], "RU");

    // India's statistics count each certificate under the name it was issued in.
    let year = clock.now().date().year();
    let (status, v) = inn.api.get(&format!("/v1/stats?period={year}&by=partner"));
    assert_eq!(status, 200, "{v}");
    let imports = |partner: &str| -> u64 {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["flow"] == "import" && r["partner"] == partner)
            .map(|r| r["certificates"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((imports("RU"), imports("EA")), (1, 1), "{v:#}");
    // The union's figures still break down by member state: Russia's node sent it.
    assert_eq!(v["members"][0]["union"], "EA", "{v:#}");
    assert_eq!(v["members"][0]["member"], "RU", "{v:#}");
    assert_eq!(v["members"][0]["certificates"], 1, "{v:#}");
    // India's export to the union, by the member state that received it.
    wait_until(Duration::from_secs(20), "IN has RU's receipt", || {
        status_of(&inn.api, &to_union) == "delivered"
    });
    let (_, v) = inn.api.get(&format!("/v1/stats?period={year}&by=partner"));
    let export = v["members"].as_array().unwrap().iter().find(|r| r["flow"] == "export").cloned();
    assert_eq!(
        export.map(|r| (r["union"].clone(), r["member"].clone())),
        Some((json!("EA"), json!("RU"))),
        "{v:#}"
    );
}
