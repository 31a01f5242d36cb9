//! The offline commands, as an operator runs them: init, peer export, cert validate, cert
//! sign and verify, for two participants in temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;

const CERT: &str = include_str!("../../protocol/tests/fixtures/certificate.json");

fn kpnode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpnode"))
        .args(args)
        .env_remove("KPNODE_DIR")
        .output()
        .expect("kpnode runs")
}

fn ok(args: &[&str]) -> String {
    let out = kpnode(args);
    assert!(out.status.success(), "kpnode {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with `code`; returns its stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = kpnode(args);
    assert_eq!(out.status.code(), Some(code), "kpnode {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Node {
    dir: PathBuf,
    bundle: PathBuf,
}

fn init(tmp: &Path, code: &str, authority: &str, port: u16) -> Node {
    let dir = tmp.join(code);
    ok(&[
        "init",
        "--participant",
        code,
        "--authority",
        authority,
        "--dir",
        s(&dir),
        "--peer-listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let bundle = tmp.join(format!("{code}.bundle"));
    let out = ok(&["peer", "export", "--dir", s(&dir), "--out", s(&bundle)]);
    assert!(out.contains("fingerprint: "), "{out}");
    Node { dir, bundle }
}

/// The fixture certificate, turned around to go from `from` to `to`.
fn certificate(tmp: &Path, from: &str, to: &str) -> PathBuf {
    let mut v: serde_json::Value = serde_json::from_str(CERT).unwrap();
    let today = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date();
    v["number"] = format!("{from}-2026-000777").into();
    v["exporting_participant"] = from.into();
    v["importing_participant"] = to.into();
    v["issued_on"] = today.to_string().into();
    v["expires_on"] = today.add_days(30).unwrap().to_string().into();
    let path = tmp.join(format!("{from}-{to}.json"));
    fs::write(&path, v.to_string()).unwrap();
    path
}

#[test]
fn two_participants_sign_and_verify_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let ru = init(tmp.path(), "RU", "Gokhran of Russia", 17701);
    let inn = init(tmp.path(), "IN", "Directorate General of Foreign Trade", 17702);

    let ru_kpc = tmp.path().join("ru.kpc");
    let out = ok(&[
        "cert",
        "sign",
        s(&certificate(tmp.path(), "RU", "IN")),
        "--out",
        s(&ru_kpc),
        "--dir",
        s(&ru.dir),
    ]);
    assert!(out.contains("Signed certificate RU-2026-000777"), "{out}");
    let in_kpc = tmp.path().join("in.kpc");
    ok(&["cert", "sign", s(&certificate(tmp.path(), "IN", "RU")), "--out", s(&in_kpc), "--dir", s(&inn.dir)]);

    let out = ok(&["verify", s(&ru_kpc), "--bundle", s(&ru.bundle)]);
    assert!(out.starts_with("Authentic: certificate RU-2026-000777 issued by RU"), "{out}");
    let out = ok(&["verify", s(&in_kpc), "--bundle", s(&inn.bundle)]);
    assert!(out.contains("issued by IN"), "{out}");

    // Each checked against the other participant's bundle.
    let err = fails(&["verify", s(&ru_kpc), "--bundle", s(&inn.bundle)], 2);
    assert!(err.contains("signed by RU, but the bundle is IN's"), "{err}");
    let err = fails(&["verify", s(&in_kpc), "--bundle", s(&ru.bundle)], 2);
    assert!(err.contains("signed by IN"), "{err}");
}

#[test]
fn verify_fails_when_one_byte_of_the_signed_certificate_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let ru = init(tmp.path(), "RU", "Gokhran of Russia", 17703);
    let kpc = tmp.path().join("c.kpc");
    ok(&["cert", "sign", s(&certificate(tmp.path(), "RU", "IN")), "--out", s(&kpc), "--dir", s(&ru.dir)]);
    let original = fs::read(&kpc).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let body_start = text.find("\n\n").unwrap() + 2;

    // Every byte of the file, one at a time (a different letter in its place).
    let tampered = tmp.path().join("t.kpc");
    let mut reasons = std::collections::BTreeSet::new();
    for i in 0..original.len() {
        let mut bytes = original.clone();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        fs::write(&tampered, &bytes).unwrap();
        let err = fails(&["verify", s(&tampered), "--bundle", s(&ru.bundle)], 2);
        assert!(err.starts_with("error: "), "byte {i}: {err}");
        reasons.insert(err.split(": ").nth(2).unwrap_or("").to_owned());
        if i == body_start + 200 {
            // A change inside the signed content is caught by the signature or the decoder.
            assert!(
                err.contains("signature does not verify")
                    || err.contains("damaged")
                    || err.contains("invalid"),
                "{err}"
            );
        }
    }
    assert!(reasons.len() > 1, "{reasons:?}");

    // A decoded, altered and re-armored document still fails: the signature covers it.
    let b64: String = text[body_start..].lines().take_while(|l| !l.starts_with("-----")).collect();
    let mut doc = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let n = doc.len();
    doc[n - 100] ^= 0x01;
    // The flipped bit must leave a document that still decodes, or this check tests the
    // decoder instead of the signature.
    let d = kp_protocol::SignedDocument::from_bytes(&doc)
        .expect("the altered document still decodes (flip a byte inside a text field if not)");
    let cert = d.body::<kp_protocol::Certificate>().expect("and its certificate decodes");
    fs::write(&tampered, kp_protocol::portable::to_armored(&d, &cert)).unwrap();
    let err = fails(&["verify", s(&tampered), "--bundle", s(&ru.bundle)], 2);
    assert!(err.contains("signature does not verify"), "{err}");
}

#[test]
fn verify_fails_when_the_bundle_self_signature_is_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let ru = init(tmp.path(), "RU", "Gokhran of Russia", 17704);
    let kpc = tmp.path().join("c.kpc");
    ok(&["cert", "sign", s(&certificate(tmp.path(), "RU", "IN")), "--out", s(&kpc), "--dir", s(&ru.dir)]);

    let text = fs::read_to_string(&ru.bundle).unwrap();
    let body_start = text.find("\n\n").unwrap() + 2;
    let b64: String = text[body_start..].lines().take_while(|l| !l.starts_with("-----")).collect();
    let mut wire = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let n = wire.len();
    wire[n - 1] ^= 0x01; // the last byte of the self-signature
    let headers = &text[..body_start];
    let mut broken = headers.to_owned();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wire);
    for chunk in b64.as_bytes().chunks(64) {
        broken.push_str(std::str::from_utf8(chunk).unwrap());
        broken.push('\n');
    }
    broken.push_str("-----END KPNODE ENROLMENT BUNDLE-----\n");
    let bad_bundle = tmp.path().join("broken.bundle");
    fs::write(&bad_bundle, broken).unwrap();
    let err = fails(&["verify", s(&kpc), "--bundle", s(&bad_bundle)], 2);
    assert!(err.contains("self-signature does not verify"), "{err}");

    // An edited header is refused too.
    fs::write(&bad_bundle, text.replace("Authority: Gokhran", "Authority: Fokhran")).unwrap();
    let err = fails(&["verify", s(&kpc), "--bundle", s(&bad_bundle)], 2);
    assert!(err.contains("differs from what its signed content produces"), "{err}");
}

#[test]
fn validate_lists_every_problem_by_field_and_accepts_a_good_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let good = certificate(tmp.path(), "RU", "IN");
    let out = ok(&["cert", "validate", s(&good)]);
    assert!(out.contains("valid certificate RU-2026-000777: RU → IN, 2 parcel(s), 1830.35 carats"), "{out}");

    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&good).unwrap()).unwrap();
    v["parcels"][0]["hs_code"] = "7104.21".into();
    v["parcels"][1]["carats"] = "12.345".into();
    v["importing_participant"] = "RU".into();
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, v.to_string()).unwrap();
    let err = fails(&["cert", "validate", s(&bad)], 2);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(err.contains("bad.json: parcels[0].hs_code: \"7104.21\" is HS heading 7104"), "{err}");
    assert!(err.contains("synthetic diamonds are outside the Kimberley Process"), "{err}");
    assert!(err.contains("bad.json: parcels[1].carats:"), "{err}");
    assert!(err.contains("bad.json: importing_participant:"), "{err}");

    // With a node directory, the node's participant must be the exporter.
    let inn = init(tmp.path(), "IN", "DGFT", 17705);
    let err = fails(&["cert", "validate", s(&good), "--dir", s(&inn.dir)], 2);
    assert!(
        err.contains(
            "exporting_participant: is RU, but this certificate can only be issued in the name of IN"
        ),
        "{err}"
    );
    let err = fails(&["cert", "validate", s(&tmp.path().join("missing.json"))], 2);
    assert!(err.contains("missing.json: cannot read"), "{err}");
}

#[test]
fn init_refuses_an_existing_node_and_keeps_keys_private() {
    let tmp = tempfile::tempdir().unwrap();
    let ru = init(tmp.path(), "RU", "Gokhran of Russia", 17706);
    let err = fails(&["init", "--participant", "RU", "--authority", "Gokhran", "--dir", s(&ru.dir)], 2);
    assert!(err.contains("already holds a node"), "{err}");
    for f in ["signing.key.pem", "tls.key.pem", "history.bin"] {
        let mode = fs::metadata(ru.dir.join("keys").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let mode = fs::metadata(ru.dir.join("keys")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mode = fs::metadata(ru.dir.join("api.token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The keys are standard PEM that openssl reads.
    let pem = fs::read_to_string(ru.dir.join("keys/signing.key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert = fs::read_to_string(ru.dir.join("keys/tls.cert.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));

    let err =
        fails(&["init", "--participant", "XX", "--authority", "", "--dir", s(&tmp.path().join("x"))], 2);
    assert!(err.contains("--participant") && err.contains("--authority"), "{err}");
    assert!(!tmp.path().join("x").exists());
    // Usage errors exit 2 too.
    fails(&["cert", "sign"], 2);
}

/// `--help` of a command gives its long help (what it does, in paragraphs), `-h` the line.
#[test]
fn every_command_with_a_long_help_shows_it_on_help() {
    let expect = [
        ("init", "PKCS#8 PEM"),
        ("run", "READY=1"),
        ("bench", "durable sled stores"),
        ("status", "the last delivery"),
        ("verify", "Works without a node"),
        ("stats", "date of issue"),
        ("reconcile", "with the exact difference"),
        ("backup", "keep such a file as you keep the keys"),
        ("restore", "a node is never overwritten"),
        ("completions", "vendor_completions.d"),
        ("man", "man -l"),
    ];
    for (command, phrase) in expect {
        let long = ok(&[command, "--help"]).replace('\n', " ");
        assert!(long.contains(phrase), "kpnode {command} --help lacks {phrase:?}:\n{long}");
        let short = ok(&[command, "-h"]);
        assert!(short.len() < long.len(), "kpnode {command} -h is as long as --help");
    }
}
