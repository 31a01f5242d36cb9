//! An operator's first day: retried submissions, signing a number already issued,
//! sealing a voided certificate, and what the command line says when something is wrong.
//! Every test runs the real `kpnode` binary.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use kp_tests::*;

/// Runs `kpnode args`, which must fail (with exit status `code`, if given) saying each of
/// `says` on stderr; returns stderr.
fn fails(args: &[&str], code: Option<i32>, says: &[&str]) -> String {
    let (status, _, err) = kpnode(args);
    match code {
        Some(code) => assert_eq!(status, code, "kpnode {args:?}: {err}"),
        None => assert_ne!(status, 0, "kpnode {args:?}: {err}"),
    }
    for s in says {
        assert!(err.contains(s), "kpnode {args:?}: expected {s:?} in: {err}");
    }
    err
}

/// A one-connection proxy that loses the answer: it forwards the request to `upstream` and,
/// as soon as the first byte of the answer arrives, reports it on `answered` and waits on
/// `go_on` before closing the client's connection without forwarding anything. The daemon
/// writes no byte of its answer before the submission is flushed (the store actor answers
/// only after the flush), so the first byte proves the certificate is durable, and the test
/// kills the daemon before the client has seen any of the answer: exactly a crash between
/// the flush and the HTTP answer, with no test hook in the daemon.
fn answer_losing_proxy(upstream: SocketAddr) -> (SocketAddr, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (answered_tx, answered) = mpsc::channel();
    let (go_on, go_on_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        // One connection only: a client retrying on its own would find nobody listening.
        let (mut client, _) = listener.accept().unwrap();
        drop(listener);
        let mut server = TcpStream::connect(upstream).unwrap();
        let (mut c, mut s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut c, &mut s);
        });
        let mut first = [0u8; 1];
        let n = server.read(&mut first).unwrap_or(0);
        assert_eq!(n, 1, "the daemon began an answer");
        answered_tx.send(()).unwrap();
        let _ = go_on_rx.recv_timeout(Duration::from_secs(60));
        let _ = client.shutdown(Shutdown::Both);
        let _ = client.flush();
    });
    (addr, answered, go_on)
}

/// Defect 1: the daemon dies after storing a certificate and before answering; the client
/// retries (with `kpnode cert submit`, which sends the file's SHA-256 as Idempotency-Key)
/// and gets the first certificate back: one certificate, not two.
#[test]
fn a_submission_retried_after_a_crash_between_flush_and_answer_issues_one_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let dir_s = dir.root().to_str().unwrap().to_owned();
    let mut node = ProcessNode::start(&dir);
    let api = node.api();
    let upstream: SocketAddr = api.base.trim_start_matches("http://").parse().unwrap();

    let json = certificate_json("RU", "IN", None, 21);
    let file = tmp.path().join("shipment.json");
    std::fs::write(&file, &json).unwrap();
    // The key `kpnode cert submit` derives from the file.
    let key = kp_protocol::Digest::of(json.as_bytes()).to_hex();

    let (proxy, answered, go_on) = answer_losing_proxy(upstream);
    let through_proxy = Api::new(proxy, &api.token);
    let body = json.clone();
    let header = key.clone();
    let client = std::thread::spawn(move || {
        through_proxy.try_post_with("/v1/certificates", &body, &[("Idempotency-Key", &header)])
    });
    answered.recv_timeout(Duration::from_secs(30)).expect("the daemon answers the submission");
    node.kill9();
    go_on.send(()).unwrap();
    assert_eq!(client.join().unwrap(), None, "the client saw no answer: the crash came first");

    let node = ProcessNode::start(&dir);
    let api = node.api();
    let stored = api.certificates("out");
    assert_eq!(stored.len(), 1, "the submission was durable before the answer: {stored:?}");
    let number = stored[0]["number"].as_str().unwrap().to_owned();

    // The operator retries with the CLI: the first certificate, marked as already stored.
    let out = kpnode_ok(&["cert", "submit", file.to_str().unwrap(), "--dir", &dir_s]);
    assert!(out.starts_with(&format!("{number} queued (already stored)")), "{out}");
    // And again through the API with the same key: 200, the same number.
    let (status, v) =
        api.try_post_with("/v1/certificates", &json, &[("Idempotency-Key", &key)]).expect("an answer");
    assert_eq!(
        (status, v["number"].as_str(), v["already_stored"].as_bool()),
        (200, Some(&*number), Some(true))
    );
    assert_eq!(api.certificates("out").len(), 1, "still exactly one certificate");

    // The same key with other content is refused, naming the first certificate.
    let other = certificate_json("RU", "IN", None, 22);
    let (status, v) =
        api.try_post_with("/v1/certificates", &other, &[("Idempotency-Key", &key)]).expect("an answer");
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"], "idempotency_key_reused", "{v}");
    assert!(v["message"].as_str().unwrap().contains(&number), "{v}");
    // A malformed key is refused, naming the header.
    let (status, v) = api
        .try_post_with("/v1/certificates", &other, &[("Idempotency-Key", "has spaces")])
        .expect("an answer");
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["problems"][0]["field"], "Idempotency-Key", "{v}");
    assert_eq!(api.certificates("out").len(), 1);

    // A changed file is a new submission: a second certificate, as the operator meant.
    std::fs::write(&file, &other).unwrap();
    let out = kpnode_ok(&["cert", "submit", file.to_str().unwrap(), "--dir", &dir_s]);
    assert!(!out.contains("already stored") && !out.starts_with(&number), "{out}");
    assert_eq!(api.certificates("out").len(), 2);
}

/// Defect 13: a number already used for other content is invalid input: exit 2, naming it.
#[test]
fn a_reused_number_with_other_content_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let dir_s = dir.root().to_str().unwrap();
    let _node = ProcessNode::start(&dir);
    let file = tmp.path().join("c.json");
    std::fs::write(&file, certificate_json("RU", "IN", Some("RU-2026-000777"), 1)).unwrap();
    kpnode_ok(&["cert", "submit", file.to_str().unwrap(), "--dir", dir_s]);
    std::fs::write(&file, certificate_json("RU", "IN", Some("RU-2026-000777"), 2)).unwrap();
    fails(
        &["cert", "submit", file.to_str().unwrap(), "--dir", dir_s],
        Some(2),
        &["RU-2026-000777 already exists with different content"],
    );
}

/// Defect 2: `cert sign` refuses a number the node already holds, with the daemon running and
/// with it stopped, exit 2, naming the number; a number of its own still signs.
#[test]
fn cert_sign_refuses_a_number_the_node_already_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, mut node, number) = node_with_a_certificate(tmp.path(), 0);
    let dir_s = dir.root().to_str().unwrap();

    let clash = tmp.path().join("clash.json");
    std::fs::write(&clash, certificate_json("RU", "IN", Some(&number), 9999)).unwrap();
    let kpc = tmp.path().join("clash.kpc");
    let args = ["cert", "sign", clash.to_str().unwrap(), "--out", kpc.to_str().unwrap(), "--dir", dir_s];
    fails(&args, Some(2), &[format!("number: {number} is already on this node (out, queued)").as_str()]);
    assert!(!kpc.exists(), "nothing was signed");

    node.stop();
    fails(&args, Some(2), &[format!("number: {number} is already on this node").as_str()]);
    assert!(!kpc.exists(), "nothing was signed");

    let fresh = tmp.path().join("fresh.json");
    std::fs::write(&fresh, certificate_json("RU", "IN", Some("RU-2026-009999"), 1)).unwrap();
    let out =
        kpnode_ok(&["cert", "sign", fresh.to_str().unwrap(), "--out", kpc.to_str().unwrap(), "--dir", dir_s]);
    assert!(out.contains("Signed certificate RU-2026-009999"), "{out}");
}

/// Defect 3: `cert qr` refuses a voided certificate, with the void's reason, on the daemon
/// and on the stopped node's store; no seal is written.
#[test]
fn cert_qr_refuses_a_voided_certificate_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, mut node, number) = node_with_a_certificate(tmp.path(), 0);
    let dir_s = dir.root().to_str().unwrap();
    let png = tmp.path().join("seal.png");
    let png_s = png.to_str().unwrap();
    // Before the void, it gets a seal, and its .kpc can be exported (from the daemon).
    kpnode_ok(&["cert", "qr", &number, "--out", png_s, "--dir", dir_s]);
    std::fs::remove_file(&png).unwrap();
    let kpc = tmp.path().join("c.kpc");
    let kpc_s = kpc.to_str().unwrap();
    kpnode_ok(&["cert", "export", &number, "--out", kpc_s, "--dir", dir_s]);
    assert!(std::fs::read_to_string(&kpc).unwrap().contains(&format!("Number: {number}")));
    std::fs::remove_file(&kpc).unwrap();

    kpnode_ok(&["cert", "void", &number, "--reason", "shipment cancelled", "--dir", dir_s]);
    let err = fails(
        &["cert", "qr", &number, "--out", png_s, "--dir", dir_s],
        None,
        &[format!("certificate {number} was voided at").as_str()],
    );
    assert!(err.contains("reason: shipment cancelled") && err.contains("gets no seal"), "{err}");
    assert!(!png.exists(), "no seal was written");
    fails(
        &["cert", "export", &number, "--out", kpc_s, "--dir", dir_s],
        None,
        &["reason: shipment cancelled", "not exported as a .kpc"],
    );
    assert!(!kpc.exists(), "no .kpc was written");

    node.stop();
    fails(
        &["cert", "qr", &number, "--out", png_s, "--dir", dir_s],
        None,
        &["reason: shipment cancelled", "gets no seal"],
    );
    assert!(!png.exists(), "no seal was written");
}

/// RU running as a process in `tmp`, listening for peers on `port`, with one certificate
/// issued: (dir, node, number).
fn node_with_a_certificate(
    tmp: &std::path::Path,
    port: u16,
) -> (kp_node::home::NodeDir, ProcessNode, String) {
    let dir = init_dir(tmp, "RU", port);
    let node = ProcessNode::start(&dir);
    let number = node.api().submit(&certificate_json("RU", "IN", None, 1));
    (dir, node, number)
}

/// The importer in `dir` confirms `number` with `kpnode cert confirm`: received today, two
/// parcels, 110.00 carats (fewer than `certificate_json` declares: a discrepancy), with
/// `remarks` if given.
fn confirm_110_carats(number: &str, remarks: Option<&str>, dir: &str) {
    let today = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().to_string();
    let mut args =
        vec!["cert", "confirm", number, "--received-on", &today, "--parcels", "2", "--carats", "110.00"];
    if let Some(remarks) = remarks {
        args.extend(["--remarks", remarks]);
    }
    args.extend(["--dir", dir]);
    kpnode_ok(&args);
}

/// A node with one certificate issued, stopped: (dir, number, bundle path).
fn stopped_node_with_a_certificate(tmp: &std::path::Path) -> (kp_node::home::NodeDir, String, String) {
    // A real port: an enrolment bundle names the address partners dial.
    let (dir, mut node, number) = node_with_a_certificate(tmp, free_port());
    node.stop();
    let bundle = tmp.join("ru.bundle").to_str().unwrap().to_owned();
    kpnode_ok(&["peer", "export", "--out", &bundle, "--dir", dir.root().to_str().unwrap()]);
    (dir, number, bundle)
}

/// Defect 4: `verify --qr SEAL --bundle B other.kpc` runs every check before printing: the
/// mismatch fails with nothing on stdout (no "Authentic" line first). Defect 10: an SVG seal
/// written by `cert qr` verifies like the PNG.
#[test]
fn verify_prints_one_verdict_after_every_check_and_reads_svg_seals() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, number, bundle) = stopped_node_with_a_certificate(tmp.path());
    let dir_s = dir.root().to_str().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    kpnode_ok(&["cert", "qr", &number, "--out", &p("seal.png"), "--dir", dir_s]);
    kpnode_ok(&["cert", "qr", &number, "--out", &p("seal.svg"), "--dir", dir_s]);

    let png = kpnode_ok(&["verify", "--qr", &p("seal.png"), "--bundle", &bundle]);
    let svg = kpnode_ok(&["verify", "--qr", &p("seal.svg"), "--bundle", &bundle]);
    assert!(svg.starts_with(&format!("Authentic QR seal: certificate {number}")), "{svg}");
    // Each seal is signed when it is drawn; everything else is the same.
    let facts =
        |out: &str| out.lines().filter(|l| !l.starts_with("  sealed     ")).collect::<Vec<_>>().join("\n");
    assert_eq!(facts(&png), facts(&svg), "the SVG says what the PNG says");
    // An SVG that is not one of ours is refused, saying what is read.
    std::fs::write(
        p("drawn.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>"#,
    )
    .unwrap();
    let (code, out, err) = kpnode(&["verify", "--qr", &p("drawn.svg"), "--bundle", &bundle]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("only SVG seals as `kpnode cert qr` writes them are read"), "{err}");

    let other = p("other.json");
    std::fs::write(&other, certificate_json("RU", "IN", Some("RU-2026-777777"), 9)).unwrap();
    kpnode_ok(&["cert", "sign", &other, "--out", &p("other.kpc"), "--dir", dir_s]);
    let (code, out, err) = kpnode(&["verify", &p("other.kpc"), "--qr", &p("seal.png"), "--bundle", &bundle]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the file or the seal was altered"), "{err}");
    assert_eq!(out, "", "no verdict before every check has passed");
    // The .kpc alone is authentic: one verdict, printed once.
    let out = kpnode_ok(&["verify", &p("other.kpc"), "--bundle", &bundle]);
    assert_eq!(out.matches("Authentic").count(), 1, "{out}");

    // The .kpc of the submitted certificate, exported from the (stopped) node, goes
    // with its seal: one verdict covering both.
    let out = kpnode_ok(&["cert", "export", &number, "--out", &p("issued.kpc"), "--dir", dir_s]);
    assert!(out.contains(&format!("Wrote the signed certificate {number}")), "{out}");
    let out = kpnode_ok(&["verify", &p("issued.kpc"), "--qr", &p("seal.svg"), "--bundle", &bundle]);
    assert!(out.starts_with(&format!("Authentic: certificate {number}")), "{out}");
    assert_eq!(out.matches("Authentic").count(), 1, "{out}");
    assert!(out.contains("the QR seal names exactly this signed certificate"), "{out}");
}

/// Defect 14: a `.kpc` whose signed bytes were changed says the file was changed or damaged,
/// without internal debug text and without advice to edit it.
#[test]
fn a_tampered_kpc_is_called_changed_or_damaged_without_debug_text() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let json = tmp.path().join("c.json");
    std::fs::write(&json, certificate_json("RU", "IN", Some("RU-2026-000042"), 1)).unwrap();
    let kpc = tmp.path().join("c.kpc");
    let bundle = tmp.path().join("ru.bundle");
    let dir_s = dir.root().to_str().unwrap();
    kpnode_ok(&["cert", "sign", json.to_str().unwrap(), "--out", kpc.to_str().unwrap(), "--dir", dir_s]);
    kpnode_ok(&["peer", "export", "--out", bundle.to_str().unwrap(), "--dir", dir_s]);

    // Put a control character into the exporter's name inside the signed bytes, and armor
    // them again with the same headers: what a careless "fix" or a damaged copy produces.
    let text = std::fs::read_to_string(&kpc).unwrap();
    let label = kp_protocol::portable::LABEL;
    let mut bytes = kp_protocol::armor::dearmor(&text, label).unwrap();
    let at = bytes.windows(8).position(|w| w == b"Exporter").expect("the exporter's name");
    bytes[at + 3] = 0x07;
    let headers: Vec<(&str, String)> = text
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_once(": ").map(|(k, v)| (k, v.to_owned())).unwrap())
        .collect();
    std::fs::write(&kpc, kp_protocol::armor::armor(label, &headers, &bytes)).unwrap();

    let (code, out, err) = kpnode(&["verify", kpc.to_str().unwrap(), "--bundle", bundle.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("the file was changed or damaged after it was signed"), "{err}");
    assert!(err.contains("control character") && err.contains("untouched copy"), "{err}");
    for internal in ["OtherString", "remove it", "(\""] {
        assert!(!err.contains(internal), "{internal:?} in {err}");
    }
}

/// Defect 15: a forgotten --dir says KPNODE_DIR works too; a port in use names the node.toml
/// setting to change.
#[test]
fn usage_errors_name_kpnode_dir_and_the_setting_of_a_port_in_use() {
    fails(&["cert", "list"], Some(2), &["--dir <DIR>", "export KPNODE_DIR=DIR"]);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", taken.local_addr().unwrap().port());
    let err =
        fails(&["run", "--dir", dir.root().to_str().unwrap()], Some(1), &["cannot listen for peers on"]);
    assert!(
        err.contains("set network.peer_listen in the node directory's node.toml to a free port"),
        "{err}"
    );
}

/// The remarks of an import confirmation are shown by `cert show`, text and JSON, on
/// the importing side (before and after the exporter acknowledges it) and on the exporting side.
#[test]
fn confirmation_remarks_are_shown_on_both_sides() {
    let ProcessPair { tmp: _tmp, ru_dir, in_dir, ru, inn } = enrolled_processes();
    let (ru_s, in_s) = (ru_dir.root().to_str().unwrap(), in_dir.root().to_str().unwrap());
    let number = ru.api().submit(&certificate_json("RU", "IN", None, 3));
    wait_until(Duration::from_secs(20), "IN has the certificate", || {
        inn.api().get(&format!("/v1/certificates/{number}")).0 == 200
    });
    let remarks = "seal 4471 intact; weighed at Mumbai customs";
    confirm_110_carats(&number, Some(remarks), in_s);
    let shown = |dir: &str| {
        let json: serde_json::Value =
            serde_json::from_str(&kpnode_ok(&["cert", "show", &number, "--json", "--dir", dir])).unwrap();
        (json, kpnode_ok(&["cert", "show", &number, "--dir", dir]))
    };
    // The importing side shows them at once (the confirmation may still be queued).
    let (json, text) = shown(in_s);
    assert_eq!(json["confirmation"]["remarks"], remarks, "{json}");
    assert!(text.contains(&format!("remarks: {remarks}")), "{text}");
    // The exporting side once it has the confirmation, and the importing side once the
    // exporter acknowledged it (it is then read from the log).
    wait_until(Duration::from_secs(20), "both sides have settled the confirmation", || {
        let (r, _) = shown(ru_s);
        let (i, _) = shown(in_s);
        r["confirmation"].is_object() && i["confirmation"]["acknowledged"] == true
    });
    for dir in [ru_s, in_s] {
        let (json, text) = shown(dir);
        assert_eq!(json["confirmation"]["remarks"], remarks, "{json}");
        assert!(text.contains(&format!("remarks: {remarks}")), "{text}");
    }
    // The discrepancy (110.00 carats weighed, 110.53 certified) is
    // reported by reconcile on both sides, exit 1, not "Everything is reconciled" on one.
    for dir in [ru_s, in_s] {
        let (code, out, err) = kpnode(&["reconcile", "--dir", dir]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.contains(&format!("discrepancy{}", " ".repeat(13))) && out.contains(&number), "{out}");
        assert!(!out.contains("Everything is reconciled"), "{out}");
        assert!(err.contains("1 certificate(s) need attention"), "{err}");
    }
}

/// An operator on either side settles a discrepancy with a signed
/// resolution (`kpnode cert resolve`); the partner's node stores it too, both sides' `cert show`
/// shows it, and `reconcile` stops counting it on both sides.
#[test]
fn a_signed_resolution_settles_a_discrepancy_on_both_sides() {
    let ProcessPair { tmp: _tmp, ru_dir, in_dir, ru, inn } = enrolled_processes();
    let (ru_s, in_s) = (ru_dir.root().to_str().unwrap(), in_dir.root().to_str().unwrap());
    let number = ru.api().submit(&certificate_json("RU", "IN", None, 3));
    wait_until(Duration::from_secs(20), "IN has the certificate", || {
        inn.api().get(&format!("/v1/certificates/{number}")).0 == 200
    });
    let show_json = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&kpnode_ok(&["cert", "show", &number, "--json", "--dir", dir])).unwrap()
    };
    // Resolving is refused while there is no discrepancy to resolve.
    let (code, _, err) = kpnode(&["cert", "resolve", &number, "--note", "nothing yet", "--dir", in_s]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("only a certificate in import_discrepancy can be resolved"), "{err}");

    confirm_110_carats(&number, None, in_s);
    wait_until(Duration::from_secs(20), "RU has the discrepancy", || {
        show_json(ru_s)["status"] == "import_discrepancy"
    });
    for dir in [ru_s, in_s] {
        let (code, out, err) = kpnode(&["reconcile", "--dir", dir]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("1 certificate(s) need attention"), "{err}");
    }

    // The importer resolves it; the exporter receives the signed resolution.
    let note = "recounted at Mumbai customs: 0.53 ct of dust lost in transit";
    let said = kpnode_ok(&[
        "cert",
        "resolve",
        &number,
        "--note",
        note,
        "--by",
        "A. Sharma, Mumbai customs",
        "--dir",
        in_s,
    ]);
    assert!(said.contains("resolved"), "{said}");
    wait_until(Duration::from_secs(20), "RU has the resolution", || {
        show_json(ru_s)["resolution"].is_object()
    });
    for dir in [ru_s, in_s] {
        let json = show_json(dir);
        assert_eq!(json["resolution"]["note"], note, "{json}");
        assert_eq!(json["resolution"]["resolved_by"], "A. Sharma, Mumbai customs", "{json}");
        assert_eq!(json["resolution"]["participant"], "IN", "{json}");
        // The discrepancy itself stays on record.
        assert_eq!(json["status"], "import_discrepancy", "{json}");
        let text = kpnode_ok(&["cert", "show", &number, "--dir", dir]);
        assert!(text.contains("resolved") && text.contains(note), "{text}");
        let (code, out, err) = kpnode(&["reconcile", "--dir", dir]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("resolved") && out.contains(&number), "{out}");
        assert!(out.contains("Everything is reconciled"), "{out}");
        let rec: serde_json::Value =
            serde_json::from_str(&kpnode_ok(&["reconcile", "--json", "--dir", dir])).unwrap();
        assert_eq!(rec["attention"], 0, "{rec}");
    }
    // Once only, on either side.
    fails(&["cert", "resolve", &number, "--note", "again", "--dir", ru_s], None, &["already resolved by IN"]);
}

/// `cert example` prints a certificate that validates today for the
/// node; the certificate JSON reference and its example ship in docs/ and the README links
/// them (and nothing outside the repository).
#[test]
fn cert_example_validates_and_the_json_reference_ships_in_docs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "IN", 0);
    let dir_s = dir.root().to_str().unwrap();
    let file = tmp.path().join("example.json");
    std::fs::write(&file, kpnode_ok(&["cert", "example", "--dir", dir_s])).unwrap();
    let out = kpnode_ok(&["cert", "validate", file.to_str().unwrap(), "--dir", dir_s]);
    assert!(out.contains("valid certificate (no number: assigned on submit): IN → RU"), "{out}");
    std::fs::write(&file, kpnode_ok(&["cert", "example", "--to", "AE"])).unwrap();
    let out = kpnode_ok(&["cert", "validate", file.to_str().unwrap()]);
    assert!(out.contains("RU → AE"), "{out}");
    let (code, _, err) = kpnode(&["cert", "example", "--dir", dir_s, "--to", "IN"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("importing_participant: is IN, the same as the exporting participant"), "{err}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let reference = std::fs::read_to_string(root.join("docs/certificate-json.md")).unwrap();
    let example = std::fs::read_to_string(root.join("docs/certificate-example.json")).unwrap();
    // The example is valid on the day it is dated.
    let issued: kp_protocol::Date = "2026-11-28".parse().unwrap();
    let registry = kp_exchange::registry::Registry::default();
    let directory = registry.on(issued);
    let ctx = kp_protocol::ValidationContext {
        today: issued,
        max_validity_days: Some(60),
        participants: &directory,
        exporter: None,
        importer: None,
    };
    kp_protocol::CertificateDraft::from_json(&example, &ctx).expect("the docs' example is valid");
    // Every field of the example is described.
    let v: serde_json::Value = serde_json::from_str(&example).unwrap();
    let mut fields: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    fields.extend(v["parcels"][0].as_object().unwrap().keys().map(|k| format!("parcels[].{k}")));
    fields.extend(v["shipment"].as_object().unwrap().keys().cloned());
    fields.extend(v["exporter"].as_object().unwrap().keys().cloned());
    for f in fields {
        assert!(reference.contains(&format!("`{f}`")), "docs/certificate-json.md does not describe {f}");
    }
    // Each new command has its own line in --help.
    let help = kpnode_ok(&["cert", "--help"]);
    assert!(help.contains("example   Print a valid certificate JSON"), "{help}");
    assert!(help.contains("export    Write the portable signed certificate (.kpc)"), "{help}");
    assert!(help.contains("qr        Exporting side: a QR code"), "{help}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("(docs/certificate-json.md)") && readme.contains("(docs/certificate-example.json)")
    );
    assert!(
        !readme.contains("shared/") && !readme.contains(concat!("DESIGN", ".md")),
        "the README points outside the repo"
    );
}

/// A certificate queued for a participant that is not enrolled shows in `status`
/// (text and API), `peer list` (daemon running and stopped) and /metrics.
#[test]
fn certificates_for_a_participant_not_enrolled_stay_in_view() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let dir_s = dir.root().to_str().unwrap();
    let mut node = ProcessNode::start(&dir);
    let file = tmp.path().join("ae.json");
    std::fs::write(&file, certificate_json("RU", "AE", None, 1)).unwrap();
    let (code, _, err) = kpnode(&["cert", "submit", file.to_str().unwrap(), "--dir", dir_s]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("AE is not an enrolled peer"), "{err}");

    let api = node.api();
    let status = api.status();
    assert_eq!(status["not_enrolled"], serde_json::json!([{"participant": "AE", "queued": 1}]), "{status}");
    let text = kpnode_ok(&["status", "--dir", dir_s]);
    assert!(text.contains("1 message(s) are queued for AE, which is not an enrolled peer"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("AE") && l.contains("not enrolled") && l.contains(" 1 ")),
        "{text}"
    );
    let list = kpnode_ok(&["peer", "list", "--dir", dir_s]);
    assert!(
        list.lines().any(|l| l.starts_with("AE") && l.contains("not enrolled") && l.contains(" 1 ")),
        "{list}"
    );
    let (s, metrics) = api.get("/metrics");
    assert_eq!(s, 200);
    assert!(metrics.as_str().unwrap().contains("kpnode_queue_depth{peer=\"AE\"} 1"), "{metrics}");

    node.stop();
    let list = kpnode_ok(&["peer", "list", "--dir", dir_s]);
    assert!(
        list.lines().any(|l| l.starts_with("AE") && l.contains("not enrolled") && l.contains(" 1 ")),
        "{list}"
    );
}

/// `cert list` and `cert show` read a stopped node's store, and say what the daemon
/// said.
#[test]
fn cert_list_and_show_work_with_the_daemon_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, mut node, number) = node_with_a_certificate(tmp.path(), 0);
    let dir_s = dir.root().to_str().unwrap();
    node.api().submit(&certificate_json("RU", "AE", None, 2));
    let show = ["cert", "show", number.as_str(), "--json", "--dir", dir_s];
    let list = ["cert", "list", "--peer", "IN", "--json", "--dir", dir_s];
    let (running_show, running_list) = (kpnode_ok(&show), kpnode_ok(&list));
    let running_text = kpnode_ok(&["cert", "show", &number, "--dir", dir_s]);
    node.stop();

    assert_eq!(kpnode_ok(&show), running_show, "the same view from the store");
    assert_eq!(kpnode_ok(&list), running_list);
    let listed: serde_json::Value = serde_json::from_str(&kpnode_ok(&list)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(kpnode_ok(&["cert", "show", &number, "--dir", dir_s]), running_text);
    fails(
        &["cert", "show", "RU-2026-999999", "--dir", dir_s],
        Some(1),
        &["there is no certificate RU-2026-999999 on this node"],
    );
    // What still needs the daemon says so.
    fails(&["status", "--dir", dir_s], Some(1), &["cannot reach the kpnode daemon"]);
}

/// A certificate naming another issuing authority than the node's is issued with a
/// warning by default, and refused (exit 2, naming the field) with
/// `certificates.authority_mismatch = "refuse"`, by submit, sign and validate alike.
#[test]
fn a_foreign_issuing_authority_is_warned_about_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let dir_s = dir.root().to_str().unwrap();
    let foreign = |variant: u64, number: Option<&str>| {
        let mut v: serde_json::Value =
            serde_json::from_str(&certificate_json("RU", "IN", number, variant)).unwrap();
        v["issuing_authority"] = "Ministry of Finance".into();
        v.to_string()
    };
    let file = tmp.path().join("foreign.json");
    let file_s = file.to_str().unwrap();
    std::fs::write(&file, foreign(1, None)).unwrap();
    let mut node = ProcessNode::start(&dir);
    let (code, _, err) = kpnode(&["cert", "submit", file_s, "--dir", dir_s]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: issuing_authority is \"Ministry of Finance\", but this node signs for \"Authority of RU\""),
        "{err}"
    );
    // The same name in other case and spacing is the same authority.
    let mut same: serde_json::Value = serde_json::from_str(&certificate_json("RU", "IN", None, 5)).unwrap();
    same["issuing_authority"] = "authority  of ru".into();
    std::fs::write(&file, same.to_string()).unwrap();
    let (code, _, err) = kpnode(&["cert", "submit", file_s, "--dir", dir_s]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("issuing_authority"), "{err}");
    node.stop();

    let toml = dir.root().join("node.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("authority_mismatch = \"warn\""), "{text}");
    std::fs::write(&toml, text.replace("authority_mismatch = \"warn\"", "authority_mismatch = \"refuse\""))
        .unwrap();
    let node2 = ProcessNode::start(&dir);
    std::fs::write(&file, foreign(2, None)).unwrap();
    let before = node2.api().certificates("out").len();
    fails(
        &["cert", "submit", file_s, "--dir", dir_s],
        Some(2),
        &["issuing_authority: is \"Ministry of Finance\""],
    );
    assert_eq!(node2.api().certificates("out").len(), before, "nothing was issued");
    std::fs::write(&file, foreign(3, Some("RU-2026-005555"))).unwrap();
    let kpc = tmp.path().join("f.kpc");
    fails(
        &["cert", "sign", file_s, "--out", kpc.to_str().unwrap(), "--dir", dir_s],
        Some(2),
        &["issuing_authority: is \"Ministry of Finance\""],
    );
    assert!(!kpc.exists());
    fails(
        &["cert", "validate", file_s, "--dir", dir_s],
        Some(2),
        &["issuing_authority: is \"Ministry of Finance\""],
    );
}
