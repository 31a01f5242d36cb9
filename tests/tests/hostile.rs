//! Hostile peers: a client holding an enrolled peer's keys speaks the wire protocol directly
//! and sends what no well-behaved node would. After each attempt the node under attack is
//! still up, still serving its other peer, has logged what happened, and has stored nothing
//! it should not have.

use std::time::Duration;

use kp_keys::NodeKeys;
use kp_protocol::{Certificate, Frame, RejectCode, SignedDocument};
use kp_tests::raw::{admission, sign_by_hand, Admission, RawPeer};
use kp_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now() -> kp_protocol::Timestamp {
    kp_node::clock::Clock::now(&kp_node::clock::SystemClock)
}

fn sign(cert: &Certificate, code: &str, keys: &NodeKeys) -> SignedDocument {
    sign_by_hand(cert, code, keys, now())
}

/// The victim's log so far.
fn log_of(node: &ProcessNode) -> String {
    std::fs::read_to_string(&node.log).unwrap_or_default()
}

/// KZ (a real node) delivers a certificate to IN: the victim still serves its other peer.
fn still_serving(kz: &Api, inn: &Api, n: u64) {
    let number = kz.submit(&certificate_json("KZ", "IN", Some(&format!("KZ-2026-{:06}", 500 + n)), n));
    wait_until(Duration::from_secs(30), &format!("IN still takes KZ's {number}"), || {
        kz.certificate(&number)["status"] == "delivered"
    });
    assert_eq!(inn.get("/healthz").0, 200);
}

/// The connection is closed by the other side within `limit`.
async fn closed(raw: &mut RawPeer, limit: Duration) -> bool {
    match raw.recv(limit).await {
        Ok(None) | Err(_) => true,
        Ok(Some(_)) => false,
    }
}

#[test]
fn hostile_peers_cannot_crash_confuse_or_lock_out_a_node() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let kz_dir = init_dir(tmp.path(), "KZ", free_port());
    // A short handshake timeout, so the slow attacks finish quickly.
    let config = std::fs::read_to_string(in_dir.config_path()).unwrap();
    std::fs::write(
        in_dir.config_path(),
        config.replace("handshake_timeout = \"10s\"", "handshake_timeout = \"2s\""),
    )
    .unwrap();
    assert!(std::fs::read_to_string(in_dir.config_path()).unwrap().contains("handshake_timeout = \"2s\""));
    enrol_cli(&in_dir, &ru_dir);
    enrol_cli(&in_dir, &kz_dir);
    let inn = ProcessNode::start(&in_dir);
    let kz = ProcessNode::start(&kz_dir);
    let (in_api, kz_api) = (inn.api(), kz.api());
    let addr: std::net::SocketAddr = in_dir.config().unwrap().network.peer_listen;
    let ru_keys = NodeKeys::load(&ru_dir.keys_dir()).unwrap();
    let kz_keys = NodeKeys::load(&kz_dir.keys_dir()).unwrap();
    still_serving(&kz_api, &in_api, 0);

    // 1. A length prefix far beyond the maximum: closed before anything is allocated.
    let errors_before = metric(&in_api, "kpnode_protocol_errors_total");
    rt.block_on(async {
        let mut raw = RawPeer::connect(addr, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        raw.writer.get_mut().write_all(&[0x7f, 0xff, 0xff, 0xff]).await.unwrap();
        raw.writer.get_mut().flush().await.unwrap();
        assert!(closed(&mut raw, Duration::from_secs(10)).await, "an oversized frame closes the connection");
    });
    still_serving(&kz_api, &in_api, 1);

    // 2. A plausible length followed by garbage.
    rt.block_on(async {
        let mut raw = RawPeer::connect(addr, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        let mut junk = vec![0u8, 0, 0, 40];
        junk.extend((0..40u8).map(|i| i.wrapping_mul(97).wrapping_add(13)));
        raw.writer.get_mut().write_all(&junk).await.unwrap();
        raw.writer.get_mut().flush().await.unwrap();
        assert!(closed(&mut raw, Duration::from_secs(10)).await, "garbage closes the connection");
    });
    still_serving(&kz_api, &in_api, 2);

    // 3. A valid frame of a type that has no business on this link.
    rt.block_on(async {
        let mut raw = RawPeer::connect(addr, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        raw.send(&Frame::Pong { nonce: 7 }).await.unwrap();
        assert!(closed(&mut raw, Duration::from_secs(10)).await, "an unexpected frame closes the connection");
    });
    assert!(metric(&in_api, "kpnode_protocol_errors_total") >= errors_before + 3.0);
    wait_until(Duration::from_secs(5), "the closures are logged", || {
        let log = log_of(&inn);
        log.contains("closed the connection") && log.contains("unexpected Pong frame")
    });
    still_serving(&kz_api, &in_api, 3);

    // 4–7. Documents: a bad signature, a third participant's, a replay, a reused number.
    let genuine =
        sign(&parse_certificate(&certificate_json("RU", "IN", Some("RU-2026-000001"), 1)), "RU", &ru_keys);
    let mut forged = genuine.clone();
    forged.signature[10] ^= 0x40;
    let third =
        sign(&parse_certificate(&certificate_json("KZ", "IN", Some("KZ-2026-000777"), 2)), "KZ", &kz_keys);
    let reused =
        sign(&parse_certificate(&certificate_json("RU", "IN", Some("RU-2026-000001"), 99)), "RU", &ru_keys);
    let replies = rt.block_on(async {
        let mut raw = RawPeer::connect(addr, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        let mut replies = Vec::new();
        for doc in [&forged, &third, &genuine, &genuine, &reused] {
            raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
            replies.push(raw.recv(Duration::from_secs(10)).await.unwrap().expect("an answer"));
        }
        // A replay on a new connection, too.
        let mut again = RawPeer::connect(addr, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        again
            .send(&Frame::Deliver { message_id: genuine.message_id(), document: genuine.clone() })
            .await
            .unwrap();
        replies.push(again.recv(Duration::from_secs(10)).await.unwrap().expect("an answer"));
        replies
    });
    let reject = |f: &Frame| match f {
        Frame::Reject { code, detail, .. } => (*code, detail.clone()),
        other => panic!("expected a Reject, got {other:?}"),
    };
    let receipt_seq = |f: &Frame| match f {
        Frame::Receipt { proofs, .. } => proofs[0].item.log_seq,
        other => panic!("expected a Receipt, got {other:?}"),
    };
    assert_eq!(reject(&replies[0]).0, RejectCode::BadSignature, "{:?}", replies[0]);
    assert_eq!(reject(&replies[1]).0, RejectCode::WrongSigner, "{:?}", replies[1]);
    let first = receipt_seq(&replies[2]);
    assert_eq!(receipt_seq(&replies[3]), first, "a replay gets the original receipt");
    let (code, detail) = reject(&replies[4]);
    assert_eq!(code, RejectCode::Conflict, "{detail}");
    assert!(detail.contains("RU-2026-000001"), "{detail}");
    assert_eq!(receipt_seq(&replies[5]), first, "and so does a replay on a new connection");
    let from_ru: Vec<serde_json::Value> =
        in_api.certificates("in").into_iter().filter(|c| c["peer"] == "RU").collect();
    assert_eq!(from_ru.len(), 1, "only the genuine certificate is stored, once");
    assert_eq!(from_ru[0]["message_id"], genuine.message_id().to_string());
    assert!(log_of(&inn).contains("refused a delivery"));
    still_serving(&kz_api, &in_api, 4);

    // 7b. At most 8 connections per peer: the ninth is refused, counted and logged; once one
    // of the eight closes, its place is free again.
    let inbound_from_ru = || {
        let s = in_api.status();
        let ru = s["peers"].as_array().unwrap().iter().find(|p| p["participant"] == "RU").unwrap().clone();
        ru["link"]["inbound_connections"].as_u64().unwrap()
    };
    wait_until(Duration::from_secs(20), "IN holds no connection from RU", || inbound_from_ru() == 0);
    let refused_before = metric(&in_api, "kpnode_handshakes_refused_total");
    let mut eight = rt.block_on(async {
        let mut eight = Vec::new();
        for i in 0..8 {
            let raw = RawPeer::connect(addr, &ru_keys, "RU".parse().unwrap()).await;
            eight.push(raw.unwrap_or_else(|e| panic!("connection {} of 8 refused: {e}", i + 1)));
        }
        eight
    });
    assert_eq!(inbound_from_ru(), 8);
    let ninth = rt.block_on(admission(addr, &ru_keys, "RU".parse().unwrap(), Duration::from_secs(10)));
    assert!(matches!(ninth, Admission::Refused(_)), "a ninth connection must be refused, got {ninth:?}");
    assert!(metric(&in_api, "kpnode_handshakes_refused_total") >= refused_before + 1.0, "and counted");
    wait_until(Duration::from_secs(5), "the ninth is logged", || {
        log_of(&inn).contains("refused a connection: the peer already holds too many")
    });
    drop(eight.pop());
    wait_until(Duration::from_secs(20), "the closed connection is released", || inbound_from_ru() == 7);
    let again = rt.block_on(admission(addr, &ru_keys, "RU".parse().unwrap(), Duration::from_secs(10)));
    assert_eq!(again, Admission::Accepted, "a place freed by a closed connection is taken again");
    drop(eight);
    still_serving(&kz_api, &in_api, 7);

    // 8. A thousand idle connections: the node keeps accepting its real peers meanwhile.
    // KZ stops, so that it has to dial IN afresh through the flood.
    let mut kz = kz;
    kz.stop();
    let refused_before = metric(&in_api, "kpnode_handshakes_refused_total");
    // The flood is kept up: whenever the node drops one of the idle connections, another
    // takes its place.
    // `held` is how many the flood holds open after each refill, and `fewest` the smallest of
    // those while KZ reconnects: a thousand open at once, not a thousand over time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let measuring = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fewest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let flood = {
        let (stop, held, measuring, fewest) = (stop.clone(), held.clone(), measuring.clone(), fewest.clone());
        rt.spawn(async move {
            let mut idle: Vec<tokio::net::TcpStream> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut buf = [0u8; 1];
                // Keep the ones the node has not closed yet.
                idle.retain(|s| match s.try_read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                while idle.len() < 1000 {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(s) => idle.push(s),
                        Err(_) => break,
                    }
                }
                held.store(idle.len(), std::sync::atomic::Ordering::SeqCst);
                if measuring.load(std::sync::atomic::Ordering::SeqCst) {
                    fewest.fetch_min(idle.len(), std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    wait_until(Duration::from_secs(30), "a thousand idle connections are open at once", || {
        held.load(std::sync::atomic::Ordering::SeqCst) >= 1000
    });
    measuring.store(true, std::sync::atomic::Ordering::SeqCst);
    // KZ comes back and dials IN through the flood.
    let kz = ProcessNode::start(&kz_dir);
    let kz_api = kz.api();
    still_serving(&kz_api, &in_api, 5);
    assert_eq!(in_api.get("/v1/status").0, 200, "the API answers during the flood");
    wait_until(Duration::from_secs(10), "the flood is measured during the reconnection", || {
        fewest.load(std::sync::atomic::Ordering::SeqCst) != usize::MAX
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    rt.block_on(flood).unwrap();
    let fewest = fewest.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fewest, 1000, "the flood held 1,000 connections open at once throughout KZ's reconnection");
    assert!(metric(&in_api, "kpnode_handshakes_refused_total") > refused_before, "the flood is counted");
    assert!(log_of(&inn).contains("dropped unfinished handshakes"), "and logged");

    // 9. Slowloris: a handshake that trickles in a byte at a time is dropped at the timeout.
    let dropped = rt.block_on(async {
        // Timed from before the connection: the timeout runs from the node's accept.
        let started = std::time::Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The start of a TLS record (a 512-byte ClientHello), one byte every 300 ms for 12 s.
        let header = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        for b in header.into_iter().chain(std::iter::repeat_n(0, 29)) {
            if tcp.write_all(&[b]).await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                _ => {}
            }
        }
        None
    });
    // Dropped before the trickle (12 s) ended, and not before the 2 s timeout: the timeout did
    // it. (Load can only make it later, which the trickle's length allows for.)
    let after = dropped.expect("the trickling handshake is dropped before it ends");
    assert!(after >= Duration::from_millis(1900), "dropped after {after:?}, before the timeout");
    wait_until(Duration::from_secs(5), "the slow handshake is logged", || {
        log_of(&inn).contains("TLS handshake did not finish in time")
    });
    still_serving(&kz_api, &in_api, 6);

    // The victim's log still verifies, and it holds exactly what it should.
    drop(kz);
    let mut inn = inn;
    inn.stop();
    let report = audit(&in_dir);
    assert_eq!(report.received, 9, "8 certificates from KZ and 1 from RU");
}
