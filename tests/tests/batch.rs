//! Bulk submission: `POST /v1/certificates/batch` answers each certificate on its own, stores
//! exactly the valid ones (which reach the importer), honours its limits, its idempotency and
//! `atomic=true`; `kpnode cert submit` with several files or NDJSON on stdin uses it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kp_tests::*;
use serde_json::Value;

/// Certificate JSON whose first parcel's carats are not a number: invalid.
fn invalid_json(variant: u64) -> String {
    let mut v: Value = serde_json::from_str(&certificate_json("RU", "IN", None, variant)).unwrap();
    v["parcels"][0]["carats"] = "many".into();
    v.to_string()
}

fn numbers_in(api: &Api) -> Vec<String> {
    api.certificates("in").iter().filter_map(|c| c["number"].as_str().map(str::to_owned)).collect()
}

#[test]
fn a_batch_answers_each_item_and_stores_exactly_the_valid_ones() {
    let Pair { rt: _rt, tmp: _tmp, ru, inn } = linked_pair(0, 0);
    let batch = format!(
        "[{},{},\n{} , {}]",
        certificate_json("RU", "IN", None, 1),
        invalid_json(2),
        certificate_json("RU", "IN", None, 3),
        certificate_json("RU", "ZZ", None, 4),
    );
    let key = [("Idempotency-Key", "batch-1")];
    let (status, v) = ru.api.try_post_with("/v1/certificates/batch", &batch, &key).expect("an answer");
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["stored"].as_u64(), v["refused"].as_u64()), (Some(2), Some(2)), "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{v}");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i, "{v}");
    }
    assert_eq!(items[0]["code"], 201, "{v}");
    assert_eq!(items[2]["code"], 201, "{v}");
    let stored: Vec<String> = [&items[0], &items[2]]
        .iter()
        .map(|i| i["certificate"]["number"].as_str().unwrap().to_owned())
        .collect();
    assert!(stored.iter().all(|n| n.starts_with("RU-")) && stored[0] != stored[1], "{v}");
    // The invalid ones carry their problems by field, in the single route's error shape.
    assert_eq!(items[1]["code"], 422, "{v}");
    assert_eq!(items[1]["error"]["error"], "invalid_certificate", "{v}");
    let problems = items[1]["error"]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["field"] == "parcels[0].carats"), "{v}");
    assert_eq!(items[3]["code"], 422, "{v}");
    assert!(items[3]["error"]["problems"].to_string().contains("importing_participant"), "{v}");
    // Exactly the valid ones are stored, and delivered.
    let mut out: Vec<String> =
        ru.api.certificates("out").iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    out.sort();
    let mut expected = stored.clone();
    expected.sort();
    assert_eq!(out, expected);
    wait_until(Duration::from_secs(20), "the importer has both", || {
        let mut got = numbers_in(&inn.api);
        got.sort();
        got == expected
    });

    // The same batch with the same key: the first answers again, nothing issued twice.
    let (status, v) = ru.api.try_post_with("/v1/certificates/batch", &batch, &key).expect("an answer");
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["stored"].as_u64(), v["already_stored"].as_u64()), (Some(0), Some(2)), "{v}");
    assert_eq!(v["items"][0]["code"], 200, "{v}");
    assert_eq!(v["items"][0]["certificate"]["number"], stored[0].as_str(), "{v}");
    assert_eq!(v["items"][2]["certificate"]["number"], stored[1].as_str(), "{v}");
    // The key with an item changed: that item is refused, naming the first certificate.
    let changed = format!("[{}]", certificate_json("RU", "IN", None, 9));
    let (_, v) = ru.api.try_post_with("/v1/certificates/batch", &changed, &key).expect("an answer");
    assert_eq!(v["items"][0]["code"], 409, "{v}");
    assert_eq!(v["items"][0]["error"]["error"], "idempotency_key_reused", "{v}");
    assert!(v["items"][0]["error"]["message"].as_str().unwrap().contains(&stored[0]), "{v}");
    assert_eq!(ru.api.certificates("out").len(), 2);

    // atomic=true: one invalid item and nothing is stored; the valid one says why.
    let atomic = format!("[{},{}]", certificate_json("RU", "IN", None, 10), invalid_json(11));
    let (status, v) = ru.api.post("/v1/certificates/batch?atomic=true", &atomic);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["items"][0]["code"], 424, "{v}");
    assert_eq!(v["items"][0]["error"]["error"], "not_attempted", "{v}");
    assert!(v["items"][0]["error"]["message"].as_str().unwrap().contains("item(s) 1 "), "{v}");
    assert_eq!(v["items"][1]["code"], 422, "{v}");
    assert_eq!(v["stored"], 0, "{v}");
    assert_eq!(ru.api.certificates("out").len(), 2);
    // The same batch without atomic stores the valid one.
    let (_, v) = ru.api.post("/v1/certificates/batch", &atomic);
    assert_eq!((v["stored"].as_u64(), v["refused"].as_u64()), (Some(1), Some(1)), "{v}");
    assert_eq!(ru.api.certificates("out").len(), 3);
}

#[test]
fn a_batch_over_its_limits_or_unauthenticated_is_refused_whole() {
    let Pair { rt: _rt, tmp: _tmp, ru, inn: _inn } = enrolled_pair(0, 0);
    let one = certificate_json("RU", "IN", None, 1);
    // 1001 valid certificates: refused whole, naming the limit.
    let over = format!("[{}]", vec![one.as_str(); 1001].join(","));
    let (status, v) = ru.api.post("/v1/certificates/batch", &over);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"], "too_large", "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("1001") && message.contains("at most 1000"), "{message}");
    assert!(ru.api.certificates("out").is_empty());

    // Not an array: refused whole, saying what it must be.
    let (status, v) = ru.api.post("/v1/certificates/batch", &one);
    assert_eq!(status, 422, "{v}");
    assert!(v["problems"][0]["message"].as_str().unwrap().contains("must be a JSON array"), "{v}");

    // A body over 16 × api.max_body_bytes (1 MiB by default): 413 naming the batch limit.
    // Sent by hand: the node may answer as soon as it has read past the limit and close the
    // connection while the rest of the body is still being written, which a client that only
    // reads once it has written all (ureq) sees as a broken pipe instead of the answer.
    let big = format!("[{}]", vec![one.as_str(); 1000].join(&" ".repeat(17_000)));
    let (status, v) =
        post_reading_while_writing(&ru.api, ru.handle().api_addr(), "/v1/certificates/batch", &big);
    assert_eq!(status, 413, "{v}");
    assert!(v["message"].as_str().unwrap().contains("16 × api.max_body_bytes"), "{v}");

    // Without the token: 401, as on every protected route.
    let stranger = Api::new(ru.handle().api_addr(), "not-the-token");
    let (status, v) = stranger.post("/v1/certificates/batch", &format!("[{one}]"));
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"], "unauthorized", "{v}");
    assert!(ru.api.certificates("out").is_empty());

    // The certificates of a batch share their durable writes: 200 need far fewer than 200
    // flushes (the single route needs one each, less what concurrent requests share).
    let flushes = || metric(&ru.api, "kpnode_flush_seconds_count");
    let before = flushes();
    let many: Vec<String> = (1000..1200).map(|v| certificate_json("RU", "IN", None, v)).collect();
    let (status, v) = ru.api.post("/v1/certificates/batch", &format!("[{}]", many.join(",")));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stored"], 200, "{v}");
    let used = flushes() - before;
    assert!((1.0..=20.0).contains(&used), "{used} flushes for a batch of 200");

    // The limit itself is accepted.
    let full = format!("[{}]", vec![one.as_str(); 1000].join(","));
    let (status, v) = ru.api.post("/v1/certificates/batch?idempotency=content", &full);
    assert_eq!(status, 200, "{v}");
    // Identical JSON keyed by content: stored once, the rest answered already stored.
    assert_eq!((v["stored"].as_u64(), v["already_stored"].as_u64()), (Some(1), Some(999)), "{v}");
}

/// `kpnode cert submit` with `args`, `stdin` on its standard input.
fn submit_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(kpnode_bin())
        .args(args)
        .env_remove("KPNODE_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kpnode runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number on the line of `source` in `out` (`SOURCE: NUMBER STATUS`).
fn number_of(out: &str, source: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{source}: ")))
        .unwrap_or_else(|| panic!("{source} in {out}"));
    line[source.len() + 2..].split_whitespace().next().unwrap().to_owned()
}

#[test]
fn cert_submit_takes_many_files_and_ndjson_on_stdin() {
    let ProcessPair { tmp, ru_dir, in_dir: _in_dir, ru, inn } = enrolled_processes();
    let ru_s = ru_dir.root().to_str().unwrap();
    let file = |name: &str, text: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text + "\n").unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (a, b, c) = (
        file("a.json", certificate_json("RU", "IN", None, 1)),
        file("b.json", invalid_json(2)),
        file("c.json", certificate_json("RU", "IN", None, 3)),
    );
    // One invalid file among three: the others are stored, exit 2, the problem names the file.
    let (code, out, err) = kpnode(&["cert", "submit", &a, &b, &c, "--dir", ru_s]);
    assert_eq!(code, 2, "{out}\n{err}");
    let (na, nc) = (number_of(&out, &a), number_of(&out, &c));
    assert!(na.starts_with("RU-") && nc.starts_with("RU-") && na != nc, "{out}");
    assert!(out.contains(&format!("{a}: {na} queued")), "{out}");
    assert!(err.contains(&format!("error: {b}: parcels[0].carats:")), "{err}");
    assert!(err.contains("2 stored, 1 refused, 0 failed"), "{err}");
    assert!(!out.contains(&b), "{out}");

    // Again, all valid: exit 0, and nothing issued twice — each file is keyed by its SHA-256,
    // as when submitted alone.
    let (code, out, err) = kpnode(&["cert", "submit", &a, &c, "--dir", ru_s]);
    assert_eq!(code, 0, "{out}\n{err}");
    // (The status is the certificate's now: queued, or delivered already.)
    let line = out.lines().find(|l| l.starts_with(&format!("{a}: "))).unwrap();
    assert!(line.starts_with(&format!("{a}: {na} ")) && line.ends_with(" (already stored)"), "{out}");
    let alone = kpnode_ok(&["cert", "submit", &c, "--dir", ru_s]);
    assert!(alone.starts_with(&format!("{nc} ")) && alone.trim().ends_with(" (already stored)"), "{alone}");

    // NDJSON on stdin: one certificate per line, named by line; a line that is not JSON is
    // refused on its own.
    let ndjson = format!(
        "{}\nnot json\n\n{}\n",
        certificate_json("RU", "IN", None, 4),
        certificate_json("RU", "IN", None, 5)
    );
    let (code, out, err) = submit_with_stdin(&["cert", "submit", "-", "--dir", ru_s], &ndjson);
    assert_eq!(code, 2, "{out}\n{err}");
    let (n1, n4) = (number_of(&out, "-:1"), number_of(&out, "-:4"));
    assert!(err.contains("error: -:2: is not JSON"), "{err}");
    let mut all = vec![na, nc, n1, n4];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "{all:?}");
    wait_until(Duration::from_secs(30), "the importer has every stored certificate", || {
        let mut got = numbers_in(&inn.api());
        got.sort();
        got == all
    });
    assert_eq!(ru.api().certificates("out").len(), 4);

    // More lines than one batch holds: sent in two, one line each. (Identical JSON, keyed by
    // its text: stored once, however the batches are cut.)
    let same = certificate_json("RU", "IN", None, 6);
    let (code, out, err) =
        submit_with_stdin(&["cert", "submit", "-", "--dir", ru_s], &format!("{same}\n").repeat(1001));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1001, "{out}");
    let first = number_of(&out, "-:1");
    // (Its status by then may be queued or delivered.)
    let last = out.lines().last().unwrap();
    assert!(last.starts_with(&format!("-:1001: {first} ")) && last.ends_with(" (already stored)"), "{last}");
    assert_eq!(ru.api().certificates("out").len(), 5);

    // The daemon gone: a runtime failure, exit 1, each certificate named.
    let mut ru = ru;
    ru.stop();
    let (code, out, err) = kpnode(&["cert", "submit", &a, &c, "--dir", ru_s]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains(&format!("error: {a}: cannot reach the kpnode daemon")), "{err}");
    assert!(err.contains("0 stored, 0 refused, 2 failed"), "{err}");
}

#[test]
fn a_certificate_larger_than_api_max_body_bytes_is_refused_alone() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    set_setting(&dir, "api", "max_body_bytes", "2048");
    let mut ru = TestNode::start(&rt, dir);
    let small = certificate_json("RU", "IN", None, 1);
    let mut big: Value = serde_json::from_str(&certificate_json("RU", "IN", None, 2)).unwrap();
    big["exporter"]["address"] = "x".repeat(2100).into();
    let batch = format!("[{small},{big}]");
    // Alone, the large certificate is refused by the single route's limit too.
    let (status, _) = ru.api.post("/v1/certificates", &big.to_string());
    assert_eq!(status, 413);
    // atomic=true: the large one is refused, naming the limit; the small one is not stored.
    let (status, v) = ru.api.post("/v1/certificates/batch?atomic=true", &batch);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["items"][1]["code"], 413, "{v}");
    assert_eq!(v["items"][1]["error"]["error"], "too_large", "{v}");
    assert!(
        v["items"][1]["error"]["message"].as_str().unwrap().contains("2048 bytes api.max_body_bytes"),
        "{v}"
    );
    assert_eq!(v["items"][0]["code"], 424, "{v}");
    assert!(ru.api.certificates("out").is_empty());
    // Without atomic, the small one is stored.
    let (_, v) = ru.api.post("/v1/certificates/batch", &batch);
    assert_eq!((v["stored"].as_u64(), v["refused"].as_u64()), (Some(1), Some(1)), "{v}");
    assert_eq!(v["items"][1]["code"], 413, "{v}");
    assert_eq!(ru.api.certificates("out").len(), 1);
    ru.stop(&rt);
}

/// POSTs `body` on a raw connection, writing it from another thread (its write errors ignored)
/// while this one reads the answer: the status and the JSON body.
fn post_reading_while_writing(
    api: &Api,
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        api.token,
        body.len()
    );
    let mut writer = stream.try_clone().unwrap();
    let body = body.as_bytes().to_vec();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&body));
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(json).unwrap_or(serde_json::Value::String(json.to_owned())))
}
