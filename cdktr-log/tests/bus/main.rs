//! The bus end to end over real ZeroMQ sockets on free loopback ports.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cdktr_log::{wire, BusConfig, Envelope, Level, Line, LogManager, LogMessage, LogPublisher, LogSubscriber};
use crossbeam_channel::{bounded, Receiver};

const WAIT: Duration = Duration::from_secs(30);

fn any_ports() -> BusConfig {
    BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    }
}

use cdktr_log::testing::free_port;

fn start(config: &BusConfig, sink_capacity: usize) -> (LogManager, Receiver<Line>) {
    let (tx, rx) = bounded(sink_capacity);
    (LogManager::builder(config).sink(tx).start().unwrap(), rx)
}

/// As [`start`], but `None` when a port is taken.
fn try_start(config: &BusConfig, sink_capacity: usize) -> Option<(LogManager, Receiver<Line>)> {
    let (tx, rx) = bounded(sink_capacity);
    match LogManager::builder(config).sink(tx).start() {
        Ok(manager) => Some((manager, rx)),
        Err(cdktr_log::Error::Bind { endpoint, source }) => {
            println!("{endpoint} was taken ({source}); trying other ports");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Runs `scenario` on two ports chosen before anything listens on them.
/// Should something take one before the manager binds it (seen once in
/// about fifteen runs), the scenario returns `None` and runs again on new
/// ports.
fn on_free_ports(mut scenario: impl FnMut(BusConfig) -> Option<()>) {
    for _ in 0..5 {
        let config = BusConfig {
            host: "127.0.0.1".into(),
            listening_port: free_port(),
            publishing_port: free_port(),
        };
        if scenario(config).is_some() {
            return;
        }
    }
    panic!("no free ports in five tries");
}

fn msg(workflow_id: &str, payload: impl Into<String>) -> LogMessage {
    LogMessage {
        workflow_id: workflow_id.into(),
        workflow_name: format!("{workflow_id} name"),
        workflow_instance_id: format!("{workflow_id}-1"),
        task_name: "task".into(),
        task_instance_id: "task-1".into(),
        timestamp_ms: 1_700_000_000_000,
        level: Level::Info,
        payload: payload.into(),
    }
}

/// Polls `cond` until it holds or `WAIT` passes.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Takes `n` messages from a sink, failing the test if they do not come in time.
fn take(rx: &Receiver<Line>, n: usize) -> Vec<Envelope> {
    let end = Instant::now() + WAIT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match rx.recv_deadline(end) {
            Ok(e) => out.push(e.to_envelope()),
            Err(_) => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    out
}

/// Publishes probes on `workflow_id` until `sub` receives one, so that the
/// subscription is known to be in place (ZeroMQ subscriptions are
/// asynchronous); then drops any probes still in flight behind a marker.
fn join(sub: &mut LogSubscriber, publisher: &LogPublisher, workflow_id: &str) {
    let end = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < end, "subscriber never joined");
        publisher.publish(msg(workflow_id, "probe")).unwrap();
        if sub.recv_timeout(Duration::from_millis(20)).unwrap().is_some() {
            break;
        }
    }
    publisher.publish(msg(workflow_id, "joined")).unwrap();
    loop {
        let e = sub.recv_timeout(WAIT).unwrap().expect("marker arrives");
        if e.message.payload == "joined" {
            return;
        }
    }
}

mod flow;
mod limits;
mod pressure;
mod security;
