//! Markers: a subscriber learns when its subscriptions are in force, so a
//! follower can tell which lines the live stream will bring.

use std::time::Duration;

use cdktr_log::testing::any_ports;
use cdktr_log::{Level, LogManager, LogMessage, LogPublisher, LogSubscriber};

const WAIT: Duration = Duration::from_secs(30);

fn msg(workflow_id: &str, payload: String) -> LogMessage {
    LogMessage {
        workflow_id: workflow_id.into(),
        workflow_name: "markers".into(),
        workflow_instance_id: "run".into(),
        task_name: "t".into(),
        task_instance_id: "t-1".into(),
        timestamp_ms: 0,
        level: Level::Info,
        payload,
    }
}

#[test]
fn a_line_published_right_after_wait_subscribed_always_arrives() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let manager = LogManager::builder(&any_ports()).sink(tx).start().unwrap();
    let config = manager.config().clone();
    let publisher = LogPublisher::builder(&config).start().unwrap();
    // The publisher's connection is up once a line has gone through.
    publisher.publish(msg("w", "warm-up".into())).unwrap();
    rx.recv_timeout(WAIT).unwrap();
    // A new subscriber is the slow joiner ZeroMQ warns of: without the
    // marker, a line published at once is usually lost.
    for i in 0..50 {
        let mut sub = LogSubscriber::builder(&config).workflow("w").connect().unwrap();
        assert!(sub.wait_subscribed(WAIT).unwrap(), "no marker within {WAIT:?}");
        publisher.publish(msg("w", format!("line {i}"))).unwrap();
        let env = sub
            .recv_timeout(WAIT)
            .unwrap()
            .expect("the line published after the marker arrives");
        assert_eq!(env.message.payload, format!("line {i}"));
    }
    assert_eq!(manager.stats().marks, 50);
}

#[test]
fn another_subscribers_markers_never_reach_a_reader_as_lines() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let manager = LogManager::builder(&any_ports()).sink(tx).start().unwrap();
    let config = manager.config().clone();
    // Subscribed to everything, and to the empty workflow id (topic "\0",
    // a prefix of every marker's topic).
    let mut all = LogSubscriber::all(&config).unwrap();
    let mut empty = LogSubscriber::builder(&config).workflow("").connect().unwrap();
    assert!(all.wait_subscribed(WAIT).unwrap());
    assert!(empty.wait_subscribed(WAIT).unwrap());
    let mut other = LogSubscriber::builder(&config).workflow("w").connect().unwrap();
    for _ in 0..10 {
        assert!(other.wait_subscribed(WAIT).unwrap());
    }
    let publisher = LogPublisher::builder(&config).start().unwrap();
    publisher.publish(msg("", "the empty workflow".into())).unwrap();
    for sub in [&mut all, &mut empty] {
        let env = sub.recv_timeout(WAIT).unwrap().expect("the line arrives");
        assert_eq!(env.message.payload, "the empty workflow");
        assert_eq!(sub.rejected(), 0, "markers are not malformed lines");
        assert!(sub.recv_timeout(Duration::from_millis(100)).unwrap().is_none());
    }
}
