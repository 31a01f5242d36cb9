//! A certificate's life beyond issue, confirm and void, across real nodes:
//! - replacement: the exporter issues a certificate that names the one it replaces; the old
//!   one becomes `replaced` on both sides, linked to the new one, can no longer be confirmed or
//!   voided, and statistics count only the replacement;
//! - a union's member states: a certificate to the EU names the member state where the
//!   shipment is imported, goes to that member's node, which confirms it, and a member's node
//!   refuses a certificate meant for another member.

use std::time::Duration;

use kp_keys::NodeKeys;
use kp_protocol::RejectCode;
use kp_tests::console::Console;
use kp_tests::raw::{deliver_one, rejected, sign_by_hand};
use kp_tests::*;
use serde_json::{json, Value};

fn now() -> kp_protocol::Timestamp {
    use kp_node::clock::Clock;
    kp_node::clock::SystemClock.now()
}

fn status_of(api: &Api, number: &str) -> String {
    let (_, v) = api.get(&format!("/v1/certificates/{number}"));
    v["status"].as_str().unwrap_or("").to_owned()
}

fn confirm(api: &Api, number: &str, carats: &Value) -> (u16, Value) {
    let body = json!({"received_on": now().date().to_string(), "parcels": 2, "carats": carats});
    api.post(&format!("/v1/certificates/{number}/confirm"), &body.to_string())
}

/// The certificates of `flow` the statistics of this year count for `partner`.
fn counted(api: &Api, flow: &str, partner: &str) -> (u64, Value) {
    let year = now().date().year();
    let (status, v) = api.get(&format!("/v1/stats?period={year}&by=partner"));
    assert_eq!(status, 200, "{v}");
    let n = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["flow"] == flow && r["partner"] == partner)
        .map(|r| r["certificates"].as_u64().unwrap())
        .sum();
    (n, v)
}

#[test]
fn a_replacement_supersedes_the_old_certificate_on_both_sides() {
    let Pair { rt, tmp: _tmp, ru, inn } = linked_pair(0, 0);
    let old = ru.api.submit(&certificate_json("RU", "IN", None, 1));
    wait_until(Duration::from_secs(20), "IN has the first certificate", || {
        status_of(&inn.api, &old) == "received"
    });

    // The correction: the same shipment with the importer's address put right; `replaces`
    // left out of the JSON (the route names it).
    let mut fixed: Value = serde_json::from_str(&certificate_json("RU", "IN", None, 1)).unwrap();
    fixed["importer"]["address"] = "3 Bourse Street, corrected".into();
    let (status, v) = ru.api.post(&format!("/v1/certificates/{old}/replace"), &fixed.to_string());
    assert_eq!(status, 201, "{v}");
    let new = v["number"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let shown = ru.api.certificate(&old);
    assert_eq!(shown["status"], "replaced", "{shown}");
    assert_eq!(shown["replaced_by"]["by"], new.as_str(), "{shown}");
    assert_eq!(ru.api.certificate(&new)["certificate"]["replaces"], old.as_str());

    // The importer links the two when the replacement arrives.
    wait_until(Duration::from_secs(20), "IN has the replacement", || status_of(&inn.api, &new) == "received");
    let shown = inn.api.certificate(&old);
    assert_eq!(shown["status"], "replaced", "{shown}");
    assert_eq!(shown["replaced_by"]["by"], new.as_str(), "{shown}");
    let got = inn.api.certificate(&new);
    assert_eq!(got["certificate"]["replaces"], old.as_str(), "{got}");
    assert_eq!(got["certificate"]["importer"]["address"], "3 Bourse Street, corrected");

    // The old one can no longer be confirmed, voided or replaced again.
    let (status, v) = confirm(&inn.api, &old, &got["carats"]);
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("replaced"), "{v}");
    let (status, v) = ru.api.post(&format!("/v1/certificates/{old}/void"), r#"{"reason":"issued in error"}"#);
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("void the certificate that replaces it"), "{v}");
    let (status, v) =
        ru.api.post(&format!("/v1/certificates/{old}/replace"), &certificate_json("RU", "IN", None, 7));
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("already replaced"), "{v}");
    // A replacement whose JSON names another certificate, or itself, is refused by field.
    let mut other = fixed.clone();
    other["replaces"] = "RU-1999-000001".into();
    let (status, v) = ru.api.post(&format!("/v1/certificates/{new}/replace"), &other.to_string());
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["problems"][0]["field"], "replaces", "{v}");
    let mut itself = fixed.clone();
    itself["number"] = new.as_str().into();
    let (status, v) = ru.api.post(&format!("/v1/certificates/{new}/replace"), &itself.to_string());
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["problems"][0]["field"], "number", "{v}");
    // Only the exporter replaces: IN cannot replace what it received.
    let (status, v) =
        inn.api.post(&format!("/v1/certificates/{new}/replace"), &certificate_json("IN", "RU", None, 8));
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("only the exporting authority replaces it"), "{v}");

    // The replacement is confirmed once, as any certificate.
    let (status, v) = confirm(&inn.api, &new, &got["carats"]);
    assert_eq!(status, 200, "{v}");
    let (status, v) = confirm(&inn.api, &new, &got["carats"]);
    assert_eq!(status, 409, "{v}");
    wait_until(Duration::from_secs(20), "RU has the confirmation", || {
        status_of(&ru.api, &new) == "import_confirmed"
    });
    // A confirmed certificate cannot be replaced.
    let (status, v) =
        ru.api.post(&format!("/v1/certificates/{new}/replace"), &certificate_json("RU", "IN", None, 9));
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("confirmed"), "{v}");

    // Statistics count the replacement only, on both sides.
    let (n, v) = counted(&ru.api, "export", "IN");
    assert_eq!(n, 1, "{v:#}");
    assert_eq!(v["replaced_excluded"], 1, "{v:#}");
    let (n, v) = counted(&inn.api, "import", "RU");
    assert_eq!(n, 1, "{v:#}");
    assert_eq!(v["replaced_excluded"], 1, "{v:#}");
    // The console's page of the old certificate says so and links the replacement.
    let mut console = Console::sign_in(&inn.api, "indira");
    let page = console.get(&format!("/certificates/{old}"));
    assert!(page.contains("id=\"replaced-by\""), "{page}");
    assert!(page.contains(&format!("<a href=\"/certificates/{new}\">{new}</a>")), "{page}");
    let listed = ru.api.every_page("/v1/certificates?status=replaced");
    assert_eq!(listed.iter().map(|c| c["number"].as_str().unwrap()).collect::<Vec<_>>(), vec![old.as_str()]);

    // An idempotency key is bound to its route: the same key and JSON sent first as a new
    // certificate and then as a replacement is refused, not answered with the first.
    let headers = [("Idempotency-Key", "shipment-77")];
    let body = certificate_json("RU", "IN", None, 77);
    let (status, v) = ru.api.try_post_with("/v1/certificates", &body, &headers).unwrap();
    assert_eq!(status, 201, "{v}");
    let (status, v) = ru
        .api
        .try_post_with(
            &format!("/v1/certificates/{}/replace", v["number"].as_str().unwrap()),
            &body,
            &headers,
        )
        .unwrap();
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("shipment-77"), "{v}");

    // The command line: `cert replace` through the daemon, keyed by the file and OLD.
    let third = ru.api.submit(&certificate_json("RU", "IN", None, 3));
    let file = _tmp.path().join("replacement.json");
    std::fs::write(&file, certificate_json("RU", "IN", None, 4)).unwrap();
    // The CLI finds the daemon through node.toml's api_listen: name the address it bound.
    set_setting(&ru.dir, "network", "api_listen", &format!("\"{}\"", ru.handle().api_addr()));
    let dir = ru.dir.root().to_str().unwrap().to_owned();
    let out = kpnode_ok(&["cert", "replace", &third, file.to_str().unwrap(), "--dir", &dir]);
    let fourth = out.split_whitespace().next().unwrap().to_owned();
    assert_ne!(fourth, third, "{out}");
    let again = kpnode_ok(&["cert", "replace", &third, file.to_str().unwrap(), "--dir", &dir]);
    assert!(again.starts_with(&format!("{fourth} ")) && again.contains("(already stored)"), "{again}");
    assert_eq!(status_of(&ru.api, &third), "replaced");
    let shown = kpnode_ok(&["cert", "show", &third, "--dir", &dir]);
    assert!(shown.contains(&format!("REPLACED BY   {fourth}")), "cert show names the replacement: {shown}");
    drop(rt);
}

#[test]
fn a_certificate_to_a_union_goes_to_the_member_state_it_names() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let be = TestNode::start(&rt, init_dir(tmp.path(), "BE", 0));
    let de = TestNode::start(&rt, init_dir(tmp.path(), "DE", 0));
    enrol_pair(&ru, &be);
    enrol_pair(&ru, &de);
    wait_linked(&ru.api, be.code);
    wait_linked(&ru.api, de.code);

    let to_member = |member: Option<&str>, variant: u64| {
        let mut v: Value = serde_json::from_str(&certificate_json("RU", "EU", None, variant)).unwrap();
        if let Some(m) = member {
            v["importing_member"] = m.into();
        }
        v.to_string()
    };
    // Without a member state, and with no node of the EU's own enrolled: refused, saying how.
    let (status, v) = ru.api.post("/v1/certificates", &to_member(None, 1));
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["problems"][0]["field"], "importing_member", "{v}");
    // A member of another union, or a participant that is no union at all: refused by field.
    let (status, v) = ru.api.post("/v1/certificates", &to_member(Some("IN"), 1));
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("IN is not a member state of EU"), "{v}");

    // To Belgium and to Germany: each goes to its member state's node only.
    let to_be = ru.api.submit(&to_member(Some("BE"), 2));
    let to_de = ru.api.submit(&to_member(Some("DE"), 3));
    assert_eq!(ru.api.certificate(&to_be)["peer"], "BE");
    assert_eq!(ru.api.certificate(&to_de)["peer"], "DE");
    wait_until(Duration::from_secs(20), "BE and DE have theirs", || {
        status_of(&be.api, &to_be) == "received" && status_of(&de.api, &to_de) == "received"
    });
    assert_eq!(be.api.certificates("in").len(), 1);
    assert_eq!(de.api.certificates("in").len(), 1);
    let got = be.api.certificate(&to_be);
    assert_eq!(got["certificate"]["importing_participant"], "EU", "{got}");
    assert_eq!(got["certificate"]["importing_member"], "BE", "{got}");

    // The confirmation comes from the member state's node, and RU accepts it from BE.
    let (status, v) = confirm(&be.api, &to_be, &got["carats"]);
    assert_eq!(status, 200, "{v}");
    wait_until(Duration::from_secs(20), "RU has BE's confirmation", || {
        status_of(&ru.api, &to_be) == "import_confirmed"
    });
    assert_eq!(status_of(&ru.api, &to_de), "delivered");

    // A certificate meant for Germany, signed by RU and delivered to BE, is refused by BE.
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let mut meant_for_de: Value = serde_json::from_str(&to_member(Some("DE"), 4)).unwrap();
    meant_for_de["number"] = "RU-2026-900004".into();
    let doc = sign_by_hand(&parse_certificate(&meant_for_de.to_string()), "RU", &ru_keys, now());
    let reply = deliver_one(&rt, be.handle().peer_addr(), &ru_keys, "RU".parse().unwrap(), &doc);
    let detail = rejected(&reply, RejectCode::NotAddressedToUs);
    assert!(detail.contains("is for DE, a member state of EU, not BE"), "{detail}");
    assert_eq!(be.api.certificates("in").len(), 1, "nothing more stored");

    // Statistics aggregate the union's imports under EU on the exporter's side.
    let (n, v) = counted(&ru.api, "export", "EU");
    assert_eq!(n, 2, "{v:#}");
}
