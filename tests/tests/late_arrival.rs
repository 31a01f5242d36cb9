//! A shipment that arrives after its certificate expired: the importer still confirms it (a
//! `received_on` after `expires_on` is accepted, one in the future or before the issue date is
//! not), the exporter accepts the confirmation, and both nodes show the late arrival — the API's
//! certificate view and list, the console's certificate page and list, `kpnode cert show` and
//! `cert list` — and `kpnode reconcile` counts it, per partner and in all.
//!
//! A certificate cannot be issued already expired, nor delivered after its expiry, so the two
//! nodes share a clock the test moves forward between the delivery and the confirmation.

use std::sync::Arc;
use std::time::Duration;

use kp_node::clock::Clock;
use kp_protocol::Date;
use kp_tests::console::Console;
use kp_tests::shifted::{start_with, ShiftedClock};
use kp_tests::*;
use serde_json::Value;

/// Certificate JSON from RU to IN issued on `issued_on`, expiring on `expires_on`.
fn certificate(variant: u64, issued_on: Date, expires_on: Date) -> String {
    let mut v: Value = serde_json::from_str(&certificate_json("RU", "IN", None, variant)).unwrap();
    v["issued_on"] = issued_on.to_string().into();
    v["expires_on"] = expires_on.to_string().into();
    v.to_string()
}

fn confirm(api: &Api, number: &str, received_on: Date, carats: &str) -> (u16, Value) {
    let body = serde_json::json!({"received_on": received_on.to_string(), "parcels": 2, "carats": carats});
    api.post(&format!("/v1/certificates/{number}/confirm"), &body.to_string())
}

/// The status certificate `number` shows on `api`'s node ("" while it has none).
fn status_of(api: &Api, number: &str) -> String {
    let (_, v) = api.get(&format!("/v1/certificates/{number}"));
    v["status"].as_str().unwrap_or("").to_owned()
}

/// The numbers of a reconciliation's findings of `key` for `partner`.
fn findings(v: &Value, partner: &str, key: &str) -> Vec<String> {
    let p = v["partners"].as_array().unwrap().iter().find(|p| p["partner"] == partner).expect("the partner");
    p[key].as_array().unwrap().iter().map(|f| f["number"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_shipment_confirmed_after_its_certificate_expired_is_a_late_arrival_on_both_sides() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let mut ru = start_with(&rt, init_dir(tmp.path(), "RU", 0), clock.clone());
    let mut inn = start_with(&rt, init_dir(tmp.path(), "IN", 0), clock.clone());
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);

    // Three certificates valid for one day; `on_time` is confirmed as received on its expiry
    // date, the last day that is not late (a day ahead of the clock, within the tolerance).
    let issued = clock.now().date();
    let expires = issued.add_days(1).unwrap();
    let late = ru.api.submit(&certificate(1, issued, expires));
    let late_short = ru.api.submit(&certificate(2, issued, expires));
    let on_time = ru.api.submit(&certificate(3, issued, expires));
    wait_until(Duration::from_secs(20), "IN has the three certificates", || {
        [&late, &late_short, &on_time].iter().all(|n| status_of(&inn.api, n) == "received")
    });
    let (status, v) = confirm(&inn.api, &on_time, expires, "110.53");
    assert_eq!(status, 200, "{v}");
    assert!(v.get("late_arrival").is_none(), "{v}");

    // Three days later: the unconfirmed certificates show `expired` on both sides.
    clock.shift_days(3);
    let today = clock.now().date();
    for (node, n) in [(&ru, &late), (&inn, &late)] {
        assert_eq!(node.api.certificate(n)["status"], "expired", "{} {n}", node.code);
    }
    wait_linked(&ru.api, inn.code);

    // A date of receipt in the future or before the issue date is still refused.
    let (status, v) = confirm(&inn.api, &late, today.add_days(2).unwrap(), "110.51");
    assert_eq!(status, 422, "{v}");
    assert!(v["problems"][0]["message"].as_str().unwrap().contains("lies in the future"), "{v}");
    let (status, v) = confirm(&inn.api, &late, issued.add_days(-1).unwrap(), "110.51");
    assert_eq!(status, 422, "{v}");
    assert!(
        v["problems"][0]["message"].as_str().unwrap().contains("before the certificate was issued"),
        "{v}"
    );

    // Received the day after expiry, as certified; received two days after, short.
    let (status, v) = confirm(&inn.api, &late, expires.add_days(1).unwrap(), "110.51");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "import_confirmed", "{v}");
    let (status, v) = confirm(&inn.api, &late_short, today, "100.00");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "import_discrepancy", "{v}");
    wait_until(Duration::from_secs(30), "RU has both confirmations", || {
        status_of(&ru.api, &late) == "import_confirmed"
            && status_of(&ru.api, &late_short) == "import_discrepancy"
    });

    // The API, on both sides: the mark with the days late, on the certificate and in the list.
    for node in [&ru, &inn] {
        let who = node.code;
        let v = node.api.certificate(&late);
        assert_eq!(v["status"], "import_confirmed", "{who}: {v}");
        assert_eq!(
            v["late_arrival"],
            serde_json::json!({"received_on": expires.add_days(1).unwrap().to_string(), "days_late": 1}),
            "{who}: {v}"
        );
        let v = node.api.certificate(&late_short);
        assert_eq!(v["status"], "import_discrepancy", "{who}: {v}");
        assert_eq!(v["late_arrival"]["days_late"], 2, "{who}: {v}");
        let v = node.api.certificate(&on_time);
        assert_eq!(v["status"], "import_confirmed", "{who}: {v}");
        assert!(v.get("late_arrival").is_none(), "{who}: {v}");
        let listed = node.api.every_page("/v1/certificates?limit=1000");
        let marked: Vec<&str> = listed
            .iter()
            .filter(|c| c.get("late_arrival").is_some())
            .map(|c| c["number"].as_str().unwrap())
            .collect();
        assert_eq!(marked, vec![late.as_str(), late_short.as_str()], "{who}");

        // reconcile counts them, for the partner and in all, without calling them a problem.
        let (status, v) = node.api.get("/v1/reconcile");
        assert_eq!(status, 200, "{v}");
        let partner = if who == ru.code { "IN" } else { "RU" };
        assert_eq!(v["late_arrivals"], 2, "{who}: {v:#}");
        assert_eq!(findings(&v, partner, "late_arrivals"), vec![late.clone(), late_short.clone()], "{who}");
        assert_eq!(v["attention"], 1, "{who}: only the discrepancy needs attention: {v:#}");
    }

    // The console, on both sides: the certificate page says it, the list marks it.
    for (node, name) in [(&ru, "rita"), (&inn, "indira")] {
        let mut console = Console::sign_in(&node.api, name);
        let page = console.get(&format!("/certificates/{late}"));
        assert!(page.contains("id=\"late-arrival\""), "{}: {page}", node.code);
        assert!(page.contains("after the certificate expired"), "{page}");
        let page = console.get(&format!("/certificates/{on_time}"));
        assert!(!page.contains("id=\"late-arrival\""), "{page}");
        let list = console.get("/certificates");
        assert_eq!(list.matches("(late arrival)").count(), 2, "{}: {list}", node.code);
    }

    // The OpenAPI document describes the additions.
    let (status, doc) = ru.api.get("/v1/openapi.json");
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["CertView"]["properties"]["late_arrival"].is_object(), "{:#}", schemas["CertView"]);
    assert!(schemas["LateArrival"]["properties"]["days_late"].is_object(), "{:#}", schemas["LateArrival"]);
    assert!(
        schemas["Reconciliation"]["properties"]["late_arrivals"].is_object(),
        "{:#}",
        schemas["Reconciliation"]
    );
    let partner = &schemas["PartnerReconciliation"]["properties"]["late_arrivals"];
    assert!(partner.is_object(), "{:#}", schemas["PartnerReconciliation"]);

    // The command line on the stopped nodes' stores: cert show, cert list and reconcile.
    ru.stop(&rt);
    inn.stop(&rt);
    for code in ["RU", "IN"] {
        let dir = tmp.path().join(code);
        let dir = dir.to_str().unwrap();
        let shown = kpnode_ok(&["cert", "show", &late, "--dir", dir]);
        assert!(shown.contains("status        import_confirmed"), "{code}: {shown}");
        let mark = format!(
            "LATE ARRIVAL  received on {}, 1 day(s) after it expired on {expires}",
            expires.add_days(1).unwrap()
        );
        assert!(shown.contains(&mark), "{code}: {shown}");
        let shown = kpnode_ok(&["cert", "show", &on_time, "--dir", dir]);
        assert!(!shown.contains("LATE ARRIVAL"), "{code}: {shown}");
        let list = kpnode_ok(&["cert", "list", "--dir", dir]);
        let line = |n: &str| {
            list.lines().find(|l| l.starts_with(n)).unwrap_or_else(|| panic!("{n} in {list}")).to_owned()
        };
        assert!(line(&late).contains("import_confirmed (LATE)"), "{code}: {list}");
        assert!(line(&late_short).contains("import_discrepancy (LATE)"), "{code}: {list}");
        assert!(!line(&on_time).contains("LATE"), "{code}: {list}");
        let (exit, out, err) = kpnode(&["reconcile", "--dir", dir]);
        assert_eq!(exit, 1, "{code}: the discrepancy needs attention: {out}{err}");
        assert!(out.contains("LATE ARRIVALS"), "{code}: {out}");
        assert_eq!(out.matches("late arrival ").count(), 2, "{code}: {out}");
        let v: Value = serde_json::from_str(&kpnode(&["reconcile", "--json", "--dir", dir]).1).unwrap();
        assert_eq!(v["late_arrivals"], 2, "{code}: {v:#}");
    }
}
