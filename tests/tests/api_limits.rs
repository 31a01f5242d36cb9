//! The local API's connection limits: a slow-loris client that never finishes its request
//! header is cut off after `api.header_read_timeout`, one that trickles its body after a
//! header sent in time is answered 408 after `api.body_read_timeout`, and connections beyond
//! `api.max_connections` are answered `503` at once and closed (counted), rather than waiting
//! unanswered in the listen queue behind the connections that hold the slots; once a slot is
//! free a normal request gets its answer.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kp_tests::*;

/// What the server did to a connection that sent an unfinished header: answered 408 and/or
/// closed it (`Some`), or nothing yet (`None`) within `wait`.
fn cut_off(s: &mut TcpStream, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => Some("closed".into()),
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => Some(format!("reset: {e}")),
    }
}

/// Sends a complete request for `/healthz` on a new connection.
fn healthz_request(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: kpnode\r\nConnection: close\r\n\r\n").unwrap();
    s
}

#[test]
fn a_slow_loris_is_cut_off_and_connections_beyond_the_cap_are_refused_at_once() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "IN", 0);
    set_setting(&dir, "api", "header_read_timeout", "\"3s\"");
    set_setting(&dir, "api", "max_connections", "4");
    let api = dir.config().unwrap().api;
    assert_eq!((api.header_read_timeout, api.max_connections), (Duration::from_secs(3), 4));
    let node = TestNode::start(&rt, dir);
    let addr = node.handle().api_addr();
    let metrics = node.handle().shared().metrics.clone();

    // 1. A slow loris: a header line every 200 ms, never the blank line that ends it.
    // Timed from before the connection: the server's timeout runs from its accept, so a
    // pause between connecting and reading the clock cannot make the cut look early.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: kpnode\r\n").unwrap();
    let outcome = loop {
        assert!(started.elapsed() < Duration::from_secs(15), "the slow loris was never cut off");
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            break "write failed".to_owned();
        }
        if let Some(o) = cut_off(&mut slow, Duration::from_millis(200)) {
            break o;
        }
    };
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "cut off after {took:?} ({outcome}); api.header_read_timeout is 3s"
    );
    assert!(
        outcome.starts_with("HTTP/1.1 408") || outcome == "closed" || outcome.starts_with("reset"),
        "{outcome}"
    );
    assert!(!outcome.contains("200 OK"), "{outcome}");
    wait_until(Duration::from_secs(5), "the cut-off is counted", || metrics.api_header_timeouts.get() >= 1);

    // 2. Four idle connections take every slot, so a further connection with a complete
    // request is refused at once with a 503 naming the limit (counted): a local user holding
    // every slot cannot leave /healthz hanging unanswered in the listen queue.
    let cap_before = metrics.api_connection_cap_reached.get();
    let mut holders: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut last = String::new();
    wait_until(Duration::from_secs(5), "a connection beyond the cap is refused at once with a 503", || {
        let asked = Instant::now();
        let mut s = healthz_request(addr);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        last.clear();
        let _ = s.read_to_string(&mut last);
        // A 200: the server had not yet taken every holder; ask again.
        last.starts_with("HTTP/1.1 503") && asked.elapsed() < Duration::from_secs(2)
    });
    assert!(last.contains("api.max_connections"), "{last}");
    assert!(metrics.api_connection_cap_reached.get() > cap_before);
    // Once the idle ones are cut off by the header timeout, a new request is served.
    for h in &mut holders {
        let o = cut_off(h, Duration::from_secs(5));
        assert!(o.is_some(), "an idle connection holds its slot past api.header_read_timeout");
    }
    wait_until(Duration::from_secs(5), "the idle cut-offs are counted", || {
        metrics.api_header_timeouts.get() >= 5
    });
    let mut sixth = healthz_request(addr);
    let mut answer = String::new();
    sixth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sixth.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The API is whole again: an ordinary client is served, and the metrics show both limits.
    let (s, v) = node.api.get("/metrics");
    assert_eq!(s, 200);
    let text = v.as_str().unwrap();
    let exposition = kp_tests::prometheus::parse_strict(text).unwrap();
    assert!(exposition.value("kpnode_api_header_timeouts_total", &[]).unwrap() >= 5.0, "{text}");
    assert!(exposition.value("kpnode_api_connection_cap_reached_total", &[]).unwrap() >= 1.0, "{text}");
    assert_eq!(node.api.get("/healthz").0, 200);
}

#[test]
fn a_client_trickling_its_body_is_answered_408_and_cut_off() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "IN", 0);
    // A header timeout far longer than the body timeout: only the body deadline can act.
    set_setting(&dir, "api", "header_read_timeout", "\"60s\"");
    set_setting(&dir, "api", "body_read_timeout", "\"2s\"");
    assert_eq!(dir.config().unwrap().api.body_read_timeout, Duration::from_secs(2));
    let node = TestNode::start(&rt, dir);
    let addr = node.handle().api_addr();
    let metrics = node.handle().shared().metrics.clone();

    // The header in one go, announcing 1000 bytes; then a byte every 200 ms.
    let started = Instant::now(); // before connecting, as above
    let mut slow = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/certificates HTTP/1.1\r\nHost: kpnode\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        node.api.token
    );
    slow.write_all(head.as_bytes()).unwrap();
    let outcome = loop {
        assert!(started.elapsed() < Duration::from_secs(15), "the trickling body was never cut off");
        if slow.write_all(b" ").is_err() {
            break "write failed".to_owned();
        }
        if let Some(o) = cut_off(&mut slow, Duration::from_millis(200)) {
            break o;
        }
    };
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "answered after {took:?} ({outcome}); api.body_read_timeout is 2s"
    );
    assert!(outcome.starts_with("HTTP/1.1 408"), "{outcome}");
    assert!(outcome.contains("request_timeout") && outcome.contains("api.body_read_timeout"), "{outcome}");
    assert!(outcome.to_ascii_lowercase().contains("connection: close"), "{outcome}");
    // And the connection is closed: what is left of the body is never read.
    let mut rest = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = slow.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(metrics.api_body_timeouts.get(), 1);
    assert_eq!(metrics.api_header_timeouts.get(), 0, "the header timeout played no part");
    let (s, v) = node.api.get("/v1/certificates");
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(0)), "nothing was stored: {v}");

    // A body sent at once is read as usual (here: refused for its content, not its pace).
    let (s, v) = node.api.post("/v1/certificates", "{}");
    assert_eq!(s, 422, "{v}");
    let (s, v) = node.api.get("/metrics");
    assert_eq!(s, 200);
    let exposition = kp_tests::prometheus::parse_strict(v.as_str().unwrap()).unwrap();
    assert_eq!(exposition.value("kpnode_api_body_timeouts_total", &[]), Some(1.0));
}

#[test]
fn the_api_limits_are_checked_in_node_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "IN", 0);
    set_setting(&dir, "api", "header_read_timeout", "\"forever\"");
    set_setting(&dir, "api", "body_read_timeout", "\"2h\"");
    set_setting(&dir, "api", "max_connections", "0");
    let (code, _, err) = kpnode(&["run", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for key in ["api.header_read_timeout", "api.body_read_timeout", "api.max_connections"] {
        assert!(err.contains(key), "{key} not named: {err}");
    }
}
