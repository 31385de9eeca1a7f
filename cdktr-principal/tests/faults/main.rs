//! Faults the spec names, survived for real, against the real binaries:
//! agents SIGKILLed while their principal is unreachable ([`spool`]), a
//! network cut between an agent and the principal ([`network`]), the
//! database's disk filling up ([`disk`]), greedy queries ([`queries`]),
//! and connections it cannot keep ([`connections`]).
//! A test that needs root (a network namespace, a tmpfs) says why and
//! passes without checking anything where it cannot have it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

mod connections;
mod disk;
mod network;
mod queries;
mod spool;

/// A child process, killed if the test ends before it does.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A principal child, once its banner says it is up.
pub fn started(command: &mut Command) -> Killed {
    let mut child = Killed(command.stdout(Stdio::piped()).spawn().unwrap());
    let mut banner = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("API on"), "{banner}");
    child
}

/// Collects a child's stderr, as it comes, for the test to read.
pub fn collect_stderr(child: &mut Killed) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let (err, sink) = (child.0.stderr.take().expect("stderr piped"), log.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&line);
            s.push('\n');
        }
    });
    log
}

/// A log line numbered `i`.
pub fn line(i: usize) -> cdktr_log::LogMessage {
    cdktr_log::LogMessage {
        workflow_id: "faults".into(),
        workflow_name: "faults".into(),
        workflow_instance_id: format!("faults-{}", i % 7),
        task_name: "t".into(),
        task_instance_id: "t-1".into(),
        timestamp_ms: cdktr_log::message::now_ms(),
        level: cdktr_log::Level::Info,
        payload: format!("line {i}"),
    }
}
