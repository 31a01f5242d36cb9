//! Hostile local input: whatever reaches the API, and whatever lies in the node directory,
//! gets a clear error naming the field or file, and changes nothing else. A damaged key file
//! stops the node at start; it is never silently replaced by a new key.

use kp_tests::*;
use serde_json::{json, Value};

#[test]
fn hostile_api_input_gets_a_clear_error_and_changes_nothing() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let api = &ru.api;
    let good: Value = serde_json::from_str(&certificate_json("RU", "IN", None, 1)).unwrap();
    let with = |path: &[&str], v: Value| {
        let mut c = good.clone();
        let mut cur = &mut c;
        for k in &path[..path.len() - 1] {
            cur = match k.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*k],
            };
        }
        cur[path[path.len() - 1]] = v;
        c.to_string()
    };
    let post_bytes = |path: &str, body: &[u8]| -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent
            .post(&format!("{}{path}", api.base))
            .header("Authorization", &format!("Bearer {}", api.token))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };

    // (what, status, a field that must be named (or ""), words the message must contain)
    let cases: Vec<(&str, (u16, Value), &str, &str)> = vec![
        ("malformed JSON", api.post("/v1/certificates", "{\"number\": "), "", "not valid JSON"),
        (
            "a duplicate key",
            api.post("/v1/certificates", r#"{"remarks": "a", "remarks": "b"}"#),
            "",
            "duplicate key",
        ),
        ("invalid UTF-8", post_bytes("/v1/certificates", b"{\"remarks\": \"\xff\xfe\"}"), "", "UTF-8"),
        (
            "a body over the limit",
            post_bytes("/v1/certificates", &vec![b' '; (1 << 20) + 10]),
            "",
            "larger than",
        ),
        (
            "a wrong type",
            api.post("/v1/certificates", &with(&["parcels"], json!("many"))),
            "parcels",
            "must be an array",
        ),
        (
            "a number where text belongs",
            api.post("/v1/certificates", &with(&["exporter", "name"], json!(42))),
            "exporter.name",
            "must be a string",
        ),
        (
            "an over-long field",
            api.post("/v1/certificates", &with(&["importer", "address"], json!("x".repeat(300)))),
            "importer.address",
            "256",
        ),
        (
            "a control character",
            api.post("/v1/certificates", &with(&["importer", "name"], json!("Kiran\u{202e}Gems"))),
            "importer.name",
            "contains a control character",
        ),
        (
            "a path in a number",
            api.post("/v1/certificates", &with(&["number"], json!("RU-../../etc/passwd"))),
            "number",
            "must be made of capital letters",
        ),
        (
            "an enormous number of parcels",
            api.post("/v1/certificates", &with(&["parcels"], json!(vec![good["parcels"][0].clone(); 1001]))),
            "parcels",
            "at most 1000",
        ),
        (
            "a float for carats",
            api.post("/v1/certificates", &with(&["parcels", "0", "carats"], json!(12.5))),
            "parcels[0].carats",
            "must be a string",
        ),
        (
            "a path trick in the URL",
            api.get("/v1/certificates/..%2F..%2Fetc%2Fpasswd"),
            "number",
            "capital letters",
        ),
        ("a NUL in the URL", api.get("/v1/certificates/RU%00"), "number", "capital letters"),
        (
            "a confirmation of nothing",
            api.post("/v1/certificates/RU-2026-000001/confirm", "null"),
            "",
            "invalid type: null, expected struct ConfirmRequest",
        ),
        (
            "a negative log position",
            api.get("/v1/log?from=-1"),
            "from",
            "query parameter from: invalid digit",
        ),
        (
            "an absurd limit",
            api.get("/v1/log?limit=99999999999999999999999"),
            "limit",
            "query parameter limit: number too large",
        ),
        (
            "a made-up status",
            api.post("/v1/participants/IN", r#"{"status": "banned"}"#),
            "status",
            "not a participant status",
        ),
        (
            "a bundle of junk",
            api.post("/v1/peers", r#"{"bundle": "junk", "fingerprint": "AAAA"}"#),
            "bundle",
            "not an enrolment bundle",
        ),
        (
            "an unknown field",
            api.post("/v1/keys/rotate", r#"{"signing": true, "everything": true}"#),
            "",
            "unknown field",
        ),
    ];
    for (what, (status, v), field, words) in cases {
        assert!((400..500).contains(&status), "{what}: {status} {v}");
        assert!(v["error"].is_string(), "{what}: the error shape: {v}");
        assert!(!words.is_empty(), "{what}: every case says which words the message must hold");
        // The field and the words in one and the same problem (or, for a body refused before
        // it is parsed, in the message).
        let named = v["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["field"] == field && p["message"].as_str().is_some_and(|m| m.contains(words)))
            || (field.is_empty() && v["message"].as_str().is_some_and(|m| m.contains(words)));
        assert!(named, "{what}: no problem with field {field:?} and {words:?} in {v}");
    }
    // An unknown certificate is 404, not 500.
    assert_eq!(api.get("/v1/certificates/RU-2026-999999").0, 404);

    // Nothing was stored, nothing changed, and the node is well.
    let status = api.status();
    assert_eq!(status["certificates_out"], 0);
    assert_eq!(status["log_entries"], 0);
    assert_eq!(api.get("/healthz").0, 200);
    let (_, keys) = api.get("/v1/keys");
    assert_eq!(keys["own"]["signing"].as_array().map(Vec::len), Some(1), "no rotation happened: {keys}");
    assert_eq!(api.get("/v1/participants/IN").1["participant"]["status"], "active");
}

/// Runs `kpnode run` on `dir`, which must fail to start; returns its stderr.
fn fails_to_start(dir: &kp_node::home::NodeDir, code: i32) -> String {
    let (got, _, err) = kpnode(&["run", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(got, code, "expected exit {code}: {err}");
    err
}

#[test]
fn a_corrupt_config_or_key_file_stops_the_node_at_start_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let config = dir.config_path();
    let original = std::fs::read_to_string(&config).unwrap();

    for (broken, words) in [
        ("participant = [\n".to_owned(), "node.toml"),
        (format!("{original}\ncolour = \"red\"\n"), "colour"),
        (original.replace("max_in_flight = 256", "max_in_flight = 0"), "delivery.max_in_flight"),
        (
            original.replace("handshake_timeout = \"10s\"", "handshake_timeout = \"soon\""),
            "delivery.handshake_timeout",
        ),
        (original.replace("participant = \"RU\"", "participant = \"Russia\""), "participant"),
    ] {
        assert_ne!(broken, original, "the test changed nothing for {words}");
        std::fs::write(&config, &broken).unwrap();
        let err = fails_to_start(&dir, 2);
        assert!(err.contains(words), "{words} not named: {err}");
        assert!(err.contains("node.toml"), "the file is named: {err}");
    }
    std::fs::write(&config, &original).unwrap();

    let keys = dir.keys_dir();
    let signing = keys.join("signing.key.pem");
    let good_key = std::fs::read(&signing).unwrap();
    // A damaged signing key: named, and left as it is (never replaced by a new key).
    std::fs::write(&signing, b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n").unwrap();
    let err = fails_to_start(&dir, 1);
    assert!(err.contains("signing.key.pem"), "{err}");
    assert_eq!(
        std::fs::read(&signing).unwrap(),
        b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"
    );
    // A missing one: named, and not created.
    std::fs::remove_file(&signing).unwrap();
    let err = fails_to_start(&dir, 1);
    assert!(err.contains("signing.key.pem"), "{err}");
    assert!(!signing.exists(), "a missing key must not be generated anew");
    // Another participant's key: refused as not matching the key history.
    let other = init_dir(tmp.path(), "IN", free_port());
    std::fs::copy(other.keys_dir().join("signing.key.pem"), &signing).unwrap();
    let err = fails_to_start(&dir, 1);
    assert!(err.contains("signing.key.pem") && err.contains("key history"), "{err}");
    std::fs::write(&signing, &good_key).unwrap();
    // A damaged key history, and a damaged TLS certificate.
    let history = keys.join("history.bin");
    let good_history = std::fs::read(&history).unwrap();
    let mut bad = good_history.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&history, &bad).unwrap();
    let err = fails_to_start(&dir, 1);
    assert!(err.contains("history.bin"), "{err}");
    std::fs::write(&history, &good_history).unwrap();
    let cert = keys.join("tls.cert.pem");
    let good_cert = std::fs::read(&cert).unwrap();
    std::fs::write(&cert, b"not a certificate").unwrap();
    let err = fails_to_start(&dir, 1);
    assert!(err.contains("tls.cert.pem"), "{err}");
    std::fs::write(&cert, &good_cert).unwrap();

    // Restored, it starts.
    let mut node = ProcessNode::start(&dir);
    node.stop();
}
