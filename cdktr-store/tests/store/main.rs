//! The store against real DuckDB, in memory and on disk.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cdktr_log::{Envelope, Level, Line, LogMessage};
use cdktr_store::{
    Error, LevelFilter, LogQuery, Order, Persister, PersisterConfig, PersisterStats, RecentWorkflows, RunStatus,
    StatusChange, Store, ROW_GROUP_SIZE,
};

const T0: i64 = 1_795_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

fn message(i: usize) -> LogMessage {
    LogMessage {
        workflow_id: format!("wf{}", i % 3),
        workflow_name: format!("Workflow {}", i % 3),
        workflow_instance_id: format!("wf{}-{}", i % 3, i % 7),
        task_name: format!("task{}", i % 5),
        task_instance_id: format!("task{}-{}", i % 5, i % 11),
        timestamp_ms: T0 + (i as i64 * 7919) % 100_000,
        level: Level::ALL[i % 5],
        payload: format!("line {i} {}", ["alpha", "beta", "gamma", "delta"][i % 4]),
    }
}

fn env(publisher: &str, seq: u64, message: LogMessage) -> Line {
    Line::from(Envelope {
        publisher_id: publisher.into(),
        seq,
        replays: false,
        message,
    })
}

/// Polls `persister`'s counters until `done`, failing the test after
/// [`WAIT`] with `what` and the counters.
fn wait_for(persister: &Persister, what: &str, done: &dyn Fn(PersisterStats) -> bool) {
    let end = Instant::now() + WAIT;
    while !done(persister.stats()) {
        assert!(Instant::now() < end, "{what}: {:?}", persister.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// As [`env`], from a publisher that re-sends what was not accepted.
fn replaying(publisher: &str, seq: u64, message: LogMessage) -> Line {
    let mut line = env(publisher, seq, message);
    line.replays = true;
    line
}

fn all_of(q: LogQuery) -> LogQuery {
    LogQuery {
        start_ms: Some(i64::MIN),
        limit: Some(usize::MAX >> 1),
        ..q
    }
}

fn persist(store: &Store, config: PersisterConfig, messages: &[LogMessage]) -> cdktr_store::PersisterStats {
    let persister = Persister::start(store, config).unwrap();
    let tx = persister.sender();
    for (i, m) in messages.iter().enumerate() {
        tx.send(env("p", i as u64 + 1, m.clone())).unwrap();
    }
    persister.shutdown().unwrap()
}

mod archive;
mod instances;
mod persister;
mod queries;
mod schema;
mod sql;
mod status;
