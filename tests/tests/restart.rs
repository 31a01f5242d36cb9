//! Nodes that stop and start again: nothing queued is lost and nothing is delivered twice.

use std::time::Duration;

use kp_keys::NodeKeys;
use kp_protocol::Frame;
use kp_tests::raw::RawPeer;
use kp_tests::*;

/// Submits `n` certificates RU→IN from a few threads; returns their numbers.
fn submit_many(api: &Api, n: u64, offset: u64) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let api = api.clone();
                s.spawn(move || {
                    (0..n)
                        .filter(|i| i % 4 == t)
                        .map(|i| api.submit(&certificate_json("RU", "IN", None, offset + i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_certificate_queued_while_the_importer_is_down_is_delivered_when_it_comes_up() {
    // IN on a fixed port, so that RU dials it again after it restarts.
    let Pair { rt, tmp: _tmp, ru, mut inn } = linked_pair(0, free_port());
    inn.stop(&rt);

    let numbers = submit_many(&ru.api, 20, 0);
    assert_eq!(ru.api.count("out", "queued"), 20);

    // No operator action: RU keeps dialling and delivers once IN is back.
    let inn = TestNode::start(&rt, inn.dir.clone());
    wait_until(Duration::from_secs(60), "the queued certificates are delivered", || {
        ru.api.count("out", "delivered") == 20
    });
    let inbound = inn.api.certificates("in");
    assert_eq!(inbound.len(), 20);
    for n in &numbers {
        assert!(inbound.iter().any(|c| c["number"] == n.as_str()), "{n} missing");
    }
}

#[test]
fn shutting_down_with_deliveries_in_flight_loses_nothing() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    let mut ru = TestNode::start(&rt, ru_dir.clone());
    let mut inn = TestNode::start(&rt, in_dir.clone());
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);

    // Every submission below was acknowledged, hence durable. They are queued while IN is
    // down, so that when it comes back the whole stream lies ahead; both nodes stop at the
    // first moment deliveries are seen in flight (sent, no receipt yet) with others still
    // queued.
    inn.stop(&rt);
    let numbers = submit_many(&ru.api, 2000, 0);
    let mut inn = TestNode::start(&rt, in_dir.clone());
    let in_flight = || {
        let s = ru.api.status();
        let link = s["peers"].as_array().unwrap().iter().find(|p| p["participant"] == "IN").unwrap().clone();
        (link["link"]["in_flight"].as_u64().unwrap_or(0), ru.api.count("out", "delivered"))
    };
    let mut at_stop = (0, 0);
    wait_until(Duration::from_secs(60), "deliveries are in flight", || {
        at_stop = in_flight();
        at_stop.0 > 0
    });
    ru.stop(&rt);
    inn.stop(&rt);
    assert!(at_stop.1 < 2000, "everything was delivered before the stop: {at_stop:?}");

    let ru = TestNode::start(&rt, ru_dir);
    let inn = TestNode::start(&rt, in_dir);
    wait_until(Duration::from_secs(60), "all 2,000 are delivered after the restart", || {
        ru.api.count("out", "delivered") == 2000
    });
    let inbound = inn.api.certificates("in");
    assert_eq!(inbound.len(), 2000, "each exactly once");
    let mut got: Vec<&str> = inbound.iter().map(|c| c["number"].as_str().unwrap()).collect();
    got.sort();
    let mut want: Vec<&str> = numbers.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want);
}

/// A partner that stops reading cannot keep a write, and with it the store, alive: when the
/// link ends (here: the node stops) its writer task is aborted, so the node's store closes
/// and the node starts again in the same process.
#[test]
fn a_partner_that_stops_reading_cannot_keep_the_store_open() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", 0);
    let in_dir = init_dir(tmp.path(), "IN", 0);
    let mut ru = TestNode::start(&rt, ru_dir.clone());
    let mut inn = TestNode::start(&rt, in_dir.clone());
    enrol_pair(&ru, &inn);
    ru.stop(&rt);
    let ru_keys = NodeKeys::load(&ru_dir.keys_dir()).unwrap();
    let addr = inn.handle().peer_addr();

    // A delivery with a bad signature: each copy is answered with a Reject, which the raw
    // peer never reads, through a receive buffer of a few kilobytes.
    let cert = parse_certificate(&certificate_json("RU", "IN", Some("RU-2026-000001"), 1));
    let mut doc = kp_tests::raw::sign_by_hand(
        &cert,
        "RU",
        &ru_keys,
        kp_node::clock::Clock::now(&kp_node::clock::SystemClock),
    );
    doc.signature[10] ^= 0x40;
    let frame = Frame::Deliver { message_id: doc.message_id(), document: doc };
    let (raw, sent) = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let mut raw = RawPeer::connect_over(tcp, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        let mut sent = 0u64;
        // Until the node's writer, then its reader, then our sends are stuck.
        while sent < 200_000 {
            match tokio::time::timeout(Duration::from_secs(3), raw.send(&frame)).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("the node closed the link after {sent} deliveries: {e}"),
                Err(_) => break,
            }
        }
        (raw, sent)
    });
    assert!(sent < 200_000, "the node kept reading although its answers were never read");
    assert!(
        metric(&inn.api, "kpnode_rejects_sent_total") < sent as f64,
        "some answers are stuck in the node's writer"
    );

    // The node stops while its writer is stuck; then its store is closed, and it starts again.
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), inn.handle.take().unwrap().shutdown()).await
    })
    .expect("the node stops although a partner does not read");
    let again = rt.block_on(kp_node::Node::start({
        let mut o = kp_node::NodeOptions::new(in_dir.clone());
        o.announce = false;
        o
    }));
    let handle = again.unwrap_or_else(|e| panic!("the store is still held after the stop: {e}"));
    drop(raw);
    rt.block_on(handle.shutdown());
}
