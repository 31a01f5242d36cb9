//! The participant registry and what it enforces: suspension (held messages, refused
//! certificates both ways), restriction (origin areas, enhanced vigilance), union
//! participants (member states issue in the union's name; intra-union trade needs no
//! certificate), and the registry's files and log.

use std::time::Duration;

use kp_keys::NodeKeys;
use kp_protocol::{Frame, RejectCode};
use kp_tests::raw::{deliver_one, rejected, sign_by_hand, RawPeer};
use kp_tests::*;
use serde_json::{json, Value};

fn now() -> kp_protocol::Timestamp {
    kp_node::clock::Clock::now(&kp_node::clock::SystemClock)
}

fn set(api: &Api, code: &str, body: Value) -> Value {
    let (s, v) = api.post(&format!("/v1/participants/{code}"), &body.to_string());
    assert_eq!(s, 200, "participants set {code}: {v}");
    v
}

fn queued_for(api: &Api, peer: &str) -> u64 {
    api.status()["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["participant"] == peer)
        .and_then(|p| p["queued"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_suspended_participant_is_refused_both_ways_and_its_queue_is_held_until_reinstated() {
    // IN on a fixed port, so that RU dials it again after it restarts.
    let Pair { rt, tmp: _tmp, ru, mut inn } = linked_pair(0, free_port());

    // IN goes offline; three certificates queue up for it at RU.
    inn.stop(&rt);
    let queued: Vec<String> = (0..3).map(|i| ru.api.submit(&certificate_json("RU", "IN", None, i))).collect();
    assert_eq!(queued_for(&ru.api, "IN"), 3);

    // RU suspends IN.
    let v = set(&ru.api, "IN", json!({"status": "suspended", "reason": "Plenary decision 2026/7"}));
    assert_eq!(v["participant"]["status"], "suspended");

    // A new certificate to IN is refused, saying why and how to undo it.
    let (s, v) = ru.api.post("/v1/certificates", &certificate_json("RU", "IN", None, 9));
    assert_eq!(s, 422, "{v}");
    let problem = v["problems"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert_eq!(v["problems"][0]["field"], "importing_participant", "{v}");
    assert!(problem.contains("IN is suspended") && problem.contains("Plenary decision 2026/7"), "{problem}");
    assert!(problem.contains("kpnode participants set IN --status active"), "{problem}");

    // IN comes back: the link is up, but the three stay held at RU.
    let mut inn = TestNode::start(&rt, inn.dir.clone());
    wait_linked(&ru.api, inn.code);
    wait_until(Duration::from_secs(10), "RU shows IN's queue held", || {
        let s = ru.api.status();
        s["warnings"].as_array().into_iter().flatten().any(|w| w.as_str().is_some_and(|w| w.contains("held")))
    });
    assert_eq!(queued_for(&ru.api, "IN"), 3, "nothing dropped");
    assert_eq!(inn.api.certificates("in").len(), 0, "nothing delivered");

    // IN's certificates to RU are rejected, and IN shows RU's reason.
    let from_in = inn.api.submit(&certificate_json("IN", "RU", None, 1));
    wait_until(Duration::from_secs(20), "IN's certificate is rejected", || {
        inn.api.certificate(&from_in)["status"] == "rejected"
    });
    let c = inn.api.certificate(&from_in);
    assert_eq!(c["rejection"]["code"], "suspended", "{c}");
    let detail = c["rejection"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("IN is suspended") && detail.contains("Plenary decision 2026/7"), "{detail}");
    assert!(ru.api.certificates("in").is_empty(), "RU stored nothing from IN");

    // Reinstated: the held three go out, exactly once.
    set(&ru.api, "IN", json!({"status": "active", "reason": "Readmitted"}));
    wait_until(Duration::from_secs(30), "the held certificates are delivered", || {
        ru.api.count("out", "delivered") == 3
    });
    let inbound = inn.api.certificates("in");
    let mut numbers: Vec<&str> = inbound.iter().filter_map(|c| c["number"].as_str()).collect();
    numbers.sort();
    let mut expected: Vec<&str> = queued.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(numbers, expected);
    assert_eq!(queued_for(&ru.api, "IN"), 0);
    inn.stop(&rt);
}

fn restricted_certificate(number: &str, areas: [Option<&str>; 2]) -> String {
    let mut v: Value = serde_json::from_str(&certificate_json("KZ", "RU", Some(number), 3)).unwrap();
    for (i, area) in areas.iter().enumerate() {
        v["parcels"][i]["origin"] = "KZ".into();
        if let Some(a) = area {
            v["parcels"][i]["origin_area"] = (*a).into();
        }
    }
    v.to_string()
}

#[test]
fn a_restricted_participants_certificates_must_satisfy_the_rule_and_are_marked_for_vigilance() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let kz = TestNode::start(&rt, init_dir(tmp.path(), "KZ", 0));
    enrol_pair(&ru, &kz);
    wait_linked(&kz.api, ru.code);

    let v = set(
        &ru.api,
        "KZ",
        json!({"status": "restricted", "reason": "Operational framework", "approved_origin_areas": ["Zone A", "Zone B"]}),
    );
    assert_eq!(v["participant"]["approved_origin_areas"], json!(["Zone A", "Zone B"]));

    // Without an approved origin area: rejected, naming the rule.
    kz.api.submit(&restricted_certificate("KZ-2026-000001", [Some("Zone A"), None]));
    kz.api.submit(&restricted_certificate("KZ-2026-000002", [Some("Zone C"), Some("Zone A")]));
    // With one for every parcel: accepted under enhanced vigilance.
    kz.api.submit(&restricted_certificate("KZ-2026-000003", [Some("Zone A"), Some("zone b")]));
    wait_until(Duration::from_secs(20), "all three are settled", || {
        kz.api.count("out", "rejected") == 2 && kz.api.count("out", "delivered") == 1
    });
    let c = kz.api.certificate("KZ-2026-000001");
    assert_eq!(c["rejection"]["code"], "restricted", "{c}");
    let detail = c["rejection"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("parcels[1].origin_area: names no origin area"), "{detail}");
    assert!(detail.contains("Zone A, Zone B"), "{detail}");
    let detail =
        kz.api.certificate("KZ-2026-000002")["rejection"]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("\"Zone C\" is not approved"), "{detail}");

    let inbound = ru.api.certificates("in");
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0]["number"], "KZ-2026-000003");
    let why = inbound[0]["enhanced_vigilance"].as_str().unwrap_or_default();
    assert!(why.contains("KZ is restricted") && why.contains("enhanced vigilance"), "{}", inbound[0]);
    assert_eq!(ru.api.status()["certificates_under_vigilance"], 1);
}

#[test]
fn member_states_issue_in_their_unions_name_and_no_one_else_may() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let be = TestNode::start(&rt, init_dir(tmp.path(), "BE", 0));
    let de = TestNode::start(&rt, init_dir(tmp.path(), "DE", 0));
    let kz = TestNode::start(&rt, init_dir(tmp.path(), "KZ", 0));
    enrol_pair(&ru, &be);
    enrol_pair(&ru, &kz);
    enrol_pair(&be, &de);
    wait_linked(&be.api, ru.code);

    // BE issues in the EU's name, numbered within the union; RU accepts it from BE.
    let mut eu_cert: Value = serde_json::from_str(&certificate_json("EU", "RU", None, 1)).unwrap();
    eu_cert["parcels"][0]["origin"] = "BE".into();
    // With the sourcing declarations the exporter makes, signed as part of the certificate.
    let declarations = json!([
        {"code": "WDC-SoW", "text": "The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict."},
        {"code": "KP-RSP-2021", "text": "Sourced in line with the responsible-sourcing principles adopted by the 2021 plenary."}
    ]);
    eu_cert["declarations"] = declarations.clone();
    let number = be.api.submit(&eu_cert.to_string());
    assert!(number.starts_with("EU-BE-"), "{number}");
    wait_until(Duration::from_secs(20), "RU receives it", || ru.api.certificates("in").len() == 1);
    let got = ru.api.certificate(&number);
    assert_eq!(got["peer"], "BE");
    assert_eq!(got["certificate"]["exporting_participant"], "EU");
    assert_eq!(got["certificate"]["declarations"], declarations, "the declarations arrive as signed");
    let (_, log) = ru.api.get("/v1/log");
    let entry =
        log.as_array().unwrap().iter().find(|e| e["certificate"] == number.as_str()).cloned().unwrap();
    assert_eq!(entry["document"]["declarations"], declarations, "and are in the log's export");
    // RU's confirmation goes back to BE, which accepts it for the EU's export.
    let today = now().date().to_string();
    let body = json!({"received_on": today, "parcels": 2, "carats": got["carats"]}).to_string();
    let (s, v) = ru.api.post(&format!("/v1/certificates/{number}/confirm"), &body);
    assert_eq!(s, 200, "{v}");
    wait_until(Duration::from_secs(20), "BE records the confirmation", || {
        be.api.certificate(&number)["status"] == "import_confirmed"
    });

    // A non-member signing in the EU's name is refused.
    let kz_keys = NodeKeys::load(&kz.dir.keys_dir()).unwrap();
    let be_keys = NodeKeys::load(&be.dir.keys_dir()).unwrap();
    let forged = parse_certificate(&certificate_json("EU", "RU", Some("EU-KZ-2026-000001"), 2));
    let by_kz = sign_by_hand(&forged, "KZ", &kz_keys, now());
    // And a document BE really signed, presented by KZ instead of BE.
    let genuine = parse_certificate(&certificate_json("EU", "RU", Some("EU-BE-2026-900001"), 3));
    let by_be = sign_by_hand(&genuine, "BE", &be_keys, now());
    let replies = rt.block_on(async {
        let mut raw =
            RawPeer::connect(ru.handle().peer_addr(), &kz_keys, "KZ".parse().unwrap()).await.unwrap();
        let mut replies = Vec::new();
        for doc in [&by_kz, &by_be] {
            raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
            replies.push(raw.recv(Duration::from_secs(10)).await.unwrap());
        }
        replies
    });
    let detail = rejected(&replies[0], RejectCode::InvalidDocument);
    assert!(detail.contains("in the name of KZ"), "{detail}");
    rejected(&replies[1], RejectCode::WrongSigner);
    assert_eq!(ru.api.certificates("in").len(), 1, "nothing more stored");

    // A member may not take another member's numbers: BE's own API refuses EU-DE-…, and RU
    // refuses such a certificate signed by BE and delivered over BE's own link.
    let taken = certificate_json("EU", "RU", Some("EU-DE-2026-000007"), 5);
    let (s, v) = be.api.post("/v1/certificates", &taken);
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("not in BE's range"), "{v}");
    let by_be = sign_by_hand(&parse_certificate(&taken), "BE", &be_keys, now());
    let reply = deliver_one(&rt, ru.handle().peer_addr(), &be_keys, "BE".parse().unwrap(), &by_be);
    let detail = rejected(&reply, RejectCode::InvalidDocument);
    assert!(detail.contains("EU-DE-2026-000007 is not in BE's range"), "{detail}");
    assert_eq!(ru.api.certificates("in").len(), 1, "nothing more stored");

    // Trade between members of one union needs no certificate: BE → DE is refused.
    for importing in ["DE", "EU"] {
        let (s, v) = be.api.post("/v1/certificates", &certificate_json("EU", importing, None, 4));
        assert_eq!(s, 422, "{v}");
        let text = v.to_string();
        assert!(text.contains("within EU") || text.contains("must differ"), "{importing}: {text}");
    }
    let (_, v) = be.api.post("/v1/certificates", &certificate_json("EU", "DE", None, 4));
    assert!(v.to_string().contains("BE and DE are both within EU"), "{v}");
    drop(de);
}

#[test]
fn the_registry_round_trips_through_signed_lists_and_every_change_is_in_the_log() {
    init_logging();
    let tmp = tempfile::tempdir().unwrap();
    let ru = init_dir(tmp.path(), "RU", free_port());
    let inn = init_dir(tmp.path(), "IN", free_port());
    enrol_cli(&ru, &inn);
    let dir = |d: &kp_node::home::NodeDir| d.root().to_str().unwrap().to_owned();

    // Changes through the CLI, offline (no daemon running).
    let ok = |args: &[&str]| {
        let (code, out, err) = kpnode(args);
        assert_eq!(code, 0, "kpnode {args:?}: {err}");
        out
    };
    ok(&[
        "participants",
        "set",
        "CF",
        "--status",
        "restricted",
        "--area",
        "Berberati",
        "--area",
        "Carnot",
        "--reason",
        "Operational framework",
        "--dir",
        &dir(&ru),
    ]);
    ok(&["participants", "set", "XK", "--status", "active", "--name", "Newland", "--dir", &dir(&ru)]);
    ok(&[
        "participants",
        "set",
        "VE",
        "--status",
        "suspended",
        "--effective-from",
        "2099-01-01",
        "--dir",
        &dir(&ru),
    ]);
    let shown = ok(&["participants", "show", "CF", "--dir", &dir(&ru)]);
    assert!(shown.contains("restricted") && shown.contains("Berberati, Carnot"), "{shown}");
    let listed = ok(&["participants", "list", "--dir", &dir(&ru)]);
    assert!(listed.contains("pending: suspended from 2099-01-01"), "{listed}");

    // A bad change names its problem and records nothing.
    let (code, _, err) =
        kpnode(&["participants", "set", "CF", "--status", "restricted", "--area", "", "--dir", &dir(&ru)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("approved_origin_areas[0]"), "{err}");
    let (code, _, err) = kpnode(&["participants", "set", "BE", "--status", "suspended", "--dir", &dir(&ru)]);
    assert_eq!(code, 2);
    assert!(err.contains("member state of EU"), "{err}");

    // The changes are in the log, signed, and the log verifies.
    let (code, out, err) = kpnode(&["log", "export", "--json", "--dir", &dir(&ru)]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let changes: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "participant-change").collect();
    assert_eq!(changes.len(), 3, "{out}");
    assert_eq!(changes[0]["direction"], "local");
    assert_eq!(changes[0]["document"]["entry"]["code"], "CF");
    assert_eq!(changes[0]["document"]["entry"]["approved_origin_areas"], json!(["Berberati", "Carnot"]));
    assert_eq!(changes[0]["document"]["source"], "operator");
    // Made offline: the log entries name the operating-system user who ran the command (as
    // `id -un` names them), and the signed change, which partners get, does not.
    let os_user = std::process::Command::new("id").arg("-un").output().unwrap();
    let os_user = String::from_utf8(os_user.stdout).unwrap().trim().to_owned();
    assert!(!os_user.is_empty());
    for c in &changes {
        assert_eq!(c["officer"].as_str(), Some(os_user.as_str()), "{c}");
        assert!(!c["document"].to_string().contains(&format!("\"{os_user}\"")), "{c}");
    }
    let report = audit(&ru);
    // The three changes, and RU's enrolment of IN (a `peer-change` entry, also signed).
    assert_eq!(report.recorded, 4);
    let enrolments: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "peer-change").collect();
    assert_eq!(enrolments.len(), 1, "{out}");
    assert_eq!(
        (&enrolments[0]["peer"], &enrolments[0]["document"]["action"]),
        (&json!("IN"), &json!("enrolled"))
    );
    assert_eq!(enrolments[0]["officer"].as_str(), Some(os_user.as_str()), "made offline: the OS user");

    // Export at RU, import at IN (RU is enrolled there, so its signature can be checked).
    let file = tmp.path().join("ru-participants.kpl");
    ok(&["participants", "export", "--out", file.to_str().unwrap(), "--dir", &dir(&ru)]);
    let out = ok(&["participants", "import", file.to_str().unwrap(), "--dry-run", "--dir", &dir(&inn)]);
    assert!(out.contains("2 change(s)") && out.contains("dry run"), "{out}");
    let out = ok(&["participants", "import", file.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert!(out.contains("2 change(s)"), "{out}");
    // The registries now agree on everything in force.
    let (_, ru_toml, _) = kpnode(&["participants", "list", "--toml", "--dir", &dir(&ru)]);
    let (_, in_toml, _) = kpnode(&["participants", "list", "--toml", "--dir", &dir(&inn)]);
    assert_eq!(ru_toml, in_toml);
    // And the TOML parses back to the same entries.
    let entries = kp_exchange::registry::parse_toml(&ru_toml).unwrap();
    assert_eq!(kp_exchange::registry::render_toml(&entries), ru_toml);
    // Importing again changes nothing.
    let out = ok(&["participants", "import", file.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert!(out.contains("0 change(s)"), "{out}");
    let (code, out, err) = kpnode(&["log", "export", "--json", "--dir", &dir(&inn)]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let imported: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "participant-change").collect();
    assert_eq!(imported.len(), 2);
    assert!(imported[0]["document"]["source"].as_str().unwrap().contains("signed by RU"), "{}", imported[0]);

    // A tampered list is refused.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut tampered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mid = tampered.iter().position(|l| l.is_empty()).unwrap() + 2;
    tampered[mid] = tampered[mid].chars().rev().collect();
    std::fs::write(&file, tampered.join("\n") + "\n").unwrap();
    let (code, _, err) = kpnode(&["participants", "import", file.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert_eq!(code, 2, "{err}");
}

/// A stale list does not undo a newer change, and a list from a removed peer is refused.
#[test]
fn an_older_list_never_overrides_a_newer_change_and_a_removed_peers_list_is_refused() {
    init_logging();
    let tmp = tempfile::tempdir().unwrap();
    let ru = init_dir(tmp.path(), "RU", free_port());
    let inn = init_dir(tmp.path(), "IN", free_port());
    let ae = init_dir(tmp.path(), "AE", free_port());
    enrol_cli(&ru, &inn);
    enrol_cli(&ae, &inn);
    let dir = |d: &kp_node::home::NodeDir| d.root().to_str().unwrap().to_owned();
    let ok = |args: &[&str]| {
        let (code, out, err) = kpnode(args);
        assert_eq!(code, 0, "kpnode {args:?}: {err}");
        out
    };
    let status_at = |d: &kp_node::home::NodeDir, code: &str| {
        let out = ok(&["participants", "show", code, "--json", "--dir", &dir(d)]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["participant"]["status"].as_str().unwrap().to_owned()
    };

    // RU's list, issued while KZ is active everywhere.
    let stale = tmp.path().join("ru-stale.kpl");
    ok(&["participants", "export", "--out", stale.to_str().unwrap(), "--dir", &dir(&ru)]);
    assert!(std::fs::read_to_string(&stale).unwrap().contains("Revision: 0"));
    // Then IN's operator suspends KZ.
    ok(&[
        "participants",
        "set",
        "KZ",
        "--status",
        "suspended",
        "--reason",
        "Plenary decision",
        "--dir",
        &dir(&inn),
    ]);

    // The stale list would reinstate KZ: the dry run says it is ignored, and why.
    let out = ok(&["participants", "import", stale.to_str().unwrap(), "--dry-run", "--dir", &dir(&inn)]);
    assert!(out.contains("0 change(s)") && out.contains("1 entry ignored"), "{out}");
    assert!(
        out.contains("KZ  active from")
            && out.contains("by this node's operator")
            && out.contains("after this list was issued"),
        "{out}"
    );
    let out = ok(&["participants", "import", stale.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert!(out.contains("ignored"), "{out}");
    assert_eq!(status_at(&inn, "KZ"), "suspended", "the stale list did not undo the suspension");

    // RU suspends CF and sends a newer list (revision 1); IN takes it. RU's older list then
    // cannot reinstate CF.
    ok(&["participants", "set", "CF", "--status", "suspended", "--dir", &dir(&ru)]);
    let newer = tmp.path().join("ru-newer.kpl");
    ok(&["participants", "export", "--out", newer.to_str().unwrap(), "--dir", &dir(&ru)]);
    assert!(std::fs::read_to_string(&newer).unwrap().contains("Revision: 1"));
    let out = ok(&["participants", "import", newer.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert!(out.contains("CF  suspended"), "{out}");
    let out = ok(&["participants", "import", stale.to_str().unwrap(), "--dry-run", "--dir", &dir(&inn)]);
    assert!(
        out.contains("CF  active from")
            && out.contains("from RU's list at revision 1, newer than this list's revision 0"),
        "{out}"
    );
    ok(&["participants", "import", stale.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert_eq!(status_at(&inn, "CF"), "suspended");

    // A list RU dates two days ahead, to outrank every change made until then: refused.
    let ru_keys = NodeKeys::load(&ru.keys_dir()).unwrap();
    let ahead = now().saturating_add_millis(2 * 86_400_000);
    let xk = kp_protocol::ParticipantEntry {
        code: "XK".parse().unwrap(),
        name: "Newland".parse().unwrap(),
        status: kp_protocol::ParticipantStatus::Active,
        effective_from: now().date(),
        reason: None,
        approved_origin_areas: Vec::new(),
        members: Vec::new(),
    };
    let list =
        kp_protocol::registry::ParticipantListV2 { issued_on: ahead.date(), revision: 99, entries: vec![xk] };
    let doc = sign_by_hand(&list, "RU", &ru_keys, ahead);
    let future = tmp.path().join("ru-future.kpl");
    std::fs::write(&future, kp_protocol::registry::list_v2_to_armored(&doc, &list)).unwrap();
    let (code, _, err) = kpnode(&["participants", "import", future.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in the future for this node"), "{err}");

    // AE's list, then AE is removed at IN: its lists are no longer accepted.
    ok(&["participants", "set", "XK", "--status", "active", "--name", "Newland", "--dir", &dir(&ae)]);
    let from_ae = tmp.path().join("ae.kpl");
    ok(&["participants", "export", "--out", from_ae.to_str().unwrap(), "--dir", &dir(&ae)]);
    ok(&["peer", "remove", "AE", "--dir", &dir(&inn)]);
    let (code, _, err) = kpnode(&["participants", "import", from_ae.to_str().unwrap(), "--dir", &dir(&inn)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("signed by AE, which is no longer enrolled here"), "{err}");
    let (code, _, _) = kpnode(&["participants", "show", "XK", "--dir", &dir(&inn)]);
    assert_ne!(code, 0, "nothing from AE's list was recorded");
}
