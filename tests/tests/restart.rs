//! Nodes that stop and start again: nothing queued is lost and nothing is delivered twice.

use std::time::Duration;

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
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (ru, mut inn) = linked_ru_in(&rt, tmp.path());
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
