//! Two nodes in one process: certificates RU→IN, receipts, confirmations and voids, end to
//! end over mutual TLS.

use std::time::Duration;

use kp_tests::*;

#[test]
fn five_hundred_certificates_are_delivered_acknowledged_confirmed_and_voided() {
    let Pair { rt, tmp: _tmp, mut ru, mut inn } = linked_pair(0, 0);

    // 500 certificates from 8 threads at once.
    let numbers: Vec<String> = submit_from_threads(&ru.api, 500);
    assert_eq!(numbers.len(), 500);
    let mut unique = numbers.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 500, "every certificate got its own number");

    wait_until(Duration::from_secs(60), "all 500 are delivered", || ru.api.count("out", "delivered") == 500);
    let inbound = inn.api.certificates("in");
    assert_eq!(inbound.len(), 500);
    assert!(inbound.iter().all(|c| c["status"] == "received" && c["peer"] == "RU"));
    // Each outbound certificate carries IN's receipt.
    let out = ru.api.certificates("out");
    assert!(
        out.iter().all(|c| c["receipt"]["receiver"] == "IN"),
        "every delivered certificate has a receipt"
    );

    // A matching confirmation, one with a discrepancy, and a void.
    let (confirmed, discrepant, voided) = (&numbers[0], &numbers[1], &numbers[2]);
    let today = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().to_string();
    let c = inn.api.certificate(confirmed);
    let body = serde_json::json!({"received_on": today, "parcels": 2, "carats": c["carats"]}).to_string();
    let (s, v) = inn.api.post(&format!("/v1/certificates/{confirmed}/confirm"), &body);
    assert_eq!((s, v["status"].as_str()), (200, Some("import_confirmed")), "{v}");
    let body = serde_json::json!({"received_on": today, "parcels": 1, "carats": "5.00"}).to_string();
    let (s, v) = inn.api.post(&format!("/v1/certificates/{discrepant}/confirm"), &body);
    assert_eq!((s, v["status"].as_str()), (200, Some("import_discrepancy")), "{v}");
    let (s, v) =
        ru.api.post(&format!("/v1/certificates/{voided}/void"), r#"{"reason": "shipment cancelled"}"#);
    assert_eq!((s, v["status"].as_str()), (200, Some("voided")), "{v}");

    wait_until(Duration::from_secs(20), "the exporter sees both confirmations", || {
        ru.api.certificate(confirmed)["status"] == "import_confirmed"
            && ru.api.certificate(discrepant)["status"] == "import_discrepancy"
    });
    let d = ru.api.certificate(discrepant);
    let detail = d["confirmation"]["discrepancy"].as_str().unwrap();
    assert!(detail.contains("parcels: certified 2, received 1") && detail.contains("carats:"), "{detail}");
    wait_until(Duration::from_secs(20), "the importer sees the void", || {
        inn.api.certificate(voided)["status"] == "voided"
    });
    assert_eq!(inn.api.certificate(voided)["void"]["reason"], "shipment cancelled");

    // A voided certificate cannot be confirmed; a confirmed one cannot be voided.
    let body = serde_json::json!({"received_on": today, "parcels": 2, "carats": "1.00"}).to_string();
    let (s, v) = inn.api.post(&format!("/v1/certificates/{voided}/confirm"), &body);
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("voided"), "{v}");
    let (s, v) = ru.api.post(&format!("/v1/certificates/{confirmed}/void"), r#"{"reason": "x"}"#);
    assert_eq!(s, 409, "{v}");

    // Wait until the confirmations are acknowledged, then audit both logs from disk.
    wait_until(Duration::from_secs(20), "the confirmations are acknowledged", || {
        inn.api.certificate(confirmed)["confirmation"]["acknowledged"] == true
            && inn.api.certificate(discrepant)["confirmation"]["acknowledged"] == true
            && ru.api.certificate(voided)["void"]["acknowledged"] == true
    });
    ru.stop(&rt);
    inn.stop(&rt);
    let ru_log = audit(&ru.dir);
    let in_log = audit(&inn.dir);
    // RU: 500 certificates and a void sent; IN: 2 confirmations sent.
    assert_eq!((ru_log.sent, ru_log.received), (501, 2), "{ru_log:?}");
    assert_eq!((in_log.sent, in_log.received), (2, 501), "{in_log:?}");
}

/// The importer confirms while the exporter's node is down; the exporter, not having seen the
/// confirmation, voids while the importer's node is down. When both are back, the void and
/// the confirmation cross: the importer refuses the void (it had confirmed first, the rule the
/// exporter applies to its own operator), naming the confirmation; the exporter refuses the
/// confirmation (its void is authoritative there), naming the void. The exporter stays
/// `voided`, the importer `import_confirmed`, and each shows the other's refusal.
#[test]
fn a_void_that_crosses_the_importers_confirmation_is_refused_by_each_side_and_both_show_the_conflict() {
    // Fixed ports: each dials the other again after a restart.
    let Pair { rt, tmp: _tmp, mut ru, mut inn } = linked_pair(free_port(), free_port());
    let number = ru.api.submit(&certificate_json("RU", "IN", None, 1));
    wait_until(Duration::from_secs(20), "the certificate is delivered", || {
        ru.api.certificate(&number)["status"] == "delivered"
    });

    ru.stop(&rt);
    let today = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().to_string();
    let c = inn.api.certificate(&number);
    let body = serde_json::json!({"received_on": today, "parcels": c["parcels"], "carats": c["carats"]});
    let (s, v) = inn.api.post(&format!("/v1/certificates/{number}/confirm"), &body.to_string());
    assert_eq!((s, v["status"].as_str()), (200, Some("import_confirmed")), "{v}");
    inn.stop(&rt);

    let ru_dir = ru.dir.clone();
    ru = TestNode::start(&rt, ru_dir);
    let (s, v) =
        ru.api.post(&format!("/v1/certificates/{number}/void"), r#"{"reason": "shipment cancelled"}"#);
    assert_eq!((s, v["status"].as_str()), (200, Some("voided")), "{v}");
    let in_dir = inn.dir.clone();
    inn = TestNode::start(&rt, in_dir);

    // The importer refuses the void (it confirmed first), naming its confirmation.
    wait_until(Duration::from_secs(30), "the importer refuses the void", || {
        ru.api.certificate(&number)["void"]["rejection"].is_object()
    });
    let rejection = ru.api.certificate(&number)["void"]["rejection"].clone();
    assert_eq!(rejection["code"], "conflict", "{rejection}");
    let detail = rejection["detail"].as_str().unwrap();
    assert!(
        detail.contains("IN confirmed receipt of certificate") && detail.contains("cannot be voided"),
        "{detail}"
    );
    // The exporter refuses the confirmation (it voided), naming its void.
    wait_until(Duration::from_secs(30), "the exporter refuses the confirmation", || {
        inn.api.certificate(&number)["confirmation"]["rejection"].is_object()
    });
    let theirs = inn.api.certificate(&number);
    let rejection = &theirs["confirmation"]["rejection"];
    assert_eq!(rejection["code"], "voided", "{rejection}");
    let detail = rejection["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("RU voided certificate {number}")) && detail.contains("shipment cancelled"),
        "{detail}"
    );
    // Each side keeps its own status and shows the other's refusal: nothing flips silently.
    assert_eq!(theirs["status"], "import_confirmed", "{theirs}");
    assert!(theirs.get("void").is_none(), "the importer stored no void: {theirs}");
    let ours = ru.api.certificate(&number);
    assert_eq!(ours["status"], "voided", "{ours}");
    assert!(ours["confirmation"].is_null(), "the exporter stored no confirmation: {ours}");
    ru.stop(&rt);
    inn.stop(&rt);
}
