//! What the manager refuses: malformed and oversize messages, a port in use, a shared publisher id.

use super::*;

#[test]
fn malformed_messages_are_counted_and_dropped_while_valid_ones_flow() {
    const MAX: usize = 64 << 10;
    let (tx, sink) = bounded(100_000);
    let manager = LogManager::builder(&any_ports())
        .max_message_bytes(MAX)
        .sink(tx)
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let raw = ctx.socket(zmq::PUSH).unwrap();
    raw.connect(manager.listening_endpoint()).unwrap();
    let mut live = LogSubscriber::all(manager.config()).unwrap();

    let valid = |seq: u64| {
        let (mut t, mut b) = (Vec::new(), Vec::new());
        wire::encode("raw", seq, &msg("wf", format!("valid {seq}")), &mut t, &mut b);
        vec![t, b]
    };
    let wrong_type = {
        let v = serde_json::json!({"v": 1, "publisher_id": "raw", "seq": 1, "workflow_id": "wf",
            "workflow_name": "n", "workflow_instance_id": "i", "task_name": "t", "task_instance_id": "ti",
            "timestamp_ms": "yesterday", "level": "INFO", "payload": "p"});
        vec![b"wf\0".to_vec(), rmp_serde::to_vec(&v).unwrap()]
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    let malformed: Vec<Vec<Vec<u8>>> = vec![
        vec![random(100)],
        vec![Vec::new()],
        vec![b"wf\0".to_vec()],
        vec![b"wf\0".to_vec(), random(200)],
        vec![b"wf\0".to_vec(), valid(1).pop().unwrap(), b"extra".to_vec()],
        (0..50).map(|i| vec![i as u8; 10]).collect(),
        vec![b"wf\0".to_vec(), vec![0x81; MAX + 1]],
        wrong_type,
        vec![b"other\0".to_vec(), valid(1).pop().unwrap()],
        vec![random(3), random(3), random(3)],
    ];
    let mut seq = 0;
    let mut bad = 0;
    for round in 0..20 {
        for m in &malformed {
            seq += 1;
            raw.send_multipart(valid(seq), 0).unwrap();
            raw.send_multipart(m.clone(), 0).unwrap();
            bad += 1;
        }
        raw.send_multipart(vec![random(round + 1)], 0).unwrap();
        bad += 1;
    }
    seq += 1;
    raw.send_multipart(valid(seq), 0).unwrap();

    let got = take(&sink, seq as usize);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1 && e.publisher_id == "raw"));
    assert!(
        wait_until(|| manager.stats().rejected == bad),
        "rejected {} of {bad}",
        manager.stats().rejected
    );
    let stats = manager.stats();
    assert_eq!(stats.received, seq + bad);
    assert_eq!(stats.forwarded, seq);

    // A frame past ZeroMQ's hard limit (twice the body limit) makes ZeroMQ
    // drop that peer; nobody else is affected and the manager carries on.
    let hostile = ctx.socket(zmq::PUSH).unwrap();
    hostile.connect(manager.listening_endpoint()).unwrap();
    hostile
        .send_multipart(vec![b"wf\0".to_vec(), vec![0u8; 2 * MAX + 1]], 0)
        .unwrap();
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    join(&mut live, &publisher, "after");
    assert!(live.rejected() == 0);
    assert_eq!(manager.shutdown().unwrap().rejected, bad);
}

#[test]
fn a_port_in_use_is_a_bind_error_naming_the_endpoint() {
    let (manager, _sink) = start(&any_ports(), 10);
    let taken = manager.config().clone();
    let err = LogManager::builder(&BusConfig {
        publishing_port: 0,
        ..taken.clone()
    })
    .start()
    .err()
    .unwrap();
    assert!(
        matches!(&err, cdktr_log::Error::Bind { endpoint, .. } if endpoint.ends_with(&taken.listening_port.to_string()))
    );
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn oversize_messages_are_refused_or_counted_never_sent() {
    let (manager, sink) = start(&any_ports(), 1000);
    let publisher = LogPublisher::builder(manager.config())
        .max_message_bytes(1000)
        .start()
        .unwrap();
    // The payload alone is over the limit: the caller hears about it.
    let err = publisher.publish(msg("wf", "x".repeat(1001))).unwrap_err();
    assert!(
        matches!(err, cdktr_log::Error::Oversize { len: 1001, max: 1000 }),
        "{err}"
    );
    let log = publisher.task_logger(cdktr_log::TaskContext::default());
    assert!(matches!(
        log.info("y".repeat(1001)),
        Err(cdktr_log::Error::Oversize { .. })
    ));
    // Under the limit, but not once encoded: dropped and counted, not sent.
    publisher.publish(msg("wf", "z".repeat(990))).unwrap();
    publisher.publish(msg("wf", "fits")).unwrap();
    let got = take(&sink, 1);
    assert_eq!(got[0].message.payload, "fits");
    assert_eq!(got[0].seq, 1, "a dropped message takes no sequence number: no hole");
    let stats = publisher.shutdown().unwrap();
    assert_eq!((stats.published, stats.sent, stats.dropped), (2, 1, 1));
    assert_eq!(manager.shutdown().unwrap().rejected, 0);
}

#[test]
fn two_live_publishers_sharing_an_id_are_noticed() {
    let config = any_ports();
    let (manager, rx) = start(&config, 100_000);
    let bus = manager.config().clone();
    let twins: Vec<LogPublisher> = (0..2)
        .map(|_| LogPublisher::builder(&bus).publisher_id("twin").start().unwrap())
        .collect();
    // Both number from 1: their lines interleave at the manager.
    for i in 0..2_000 {
        for p in &twins {
            p.publish(msg("wf", format!("{i}"))).unwrap();
        }
        if i % 10 == 0 {
            for p in &twins {
                p.flush(Duration::from_secs(10)).unwrap();
            }
        }
    }
    for p in twins {
        p.shutdown().unwrap();
    }
    assert!(
        wait_until(|| manager.stats().received == 4_000),
        "{:?}",
        manager.stats()
    );
    assert!(manager.stats().shared_ids >= 1, "{:?}", manager.stats());
    drop(rx);
}
