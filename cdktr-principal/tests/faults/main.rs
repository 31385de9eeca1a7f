//! Faults the spec names, survived for real, against the real binaries:
//! agents SIGKILLed while their principal is unreachable ([`spool`]), a
//! network cut between an agent and the principal ([`network`]), the
//! database's disk filling up ([`disk`]) and greedy queries ([`queries`]).
//! A test that needs root (a network namespace, a tmpfs) says why and
//! passes without checking anything where it cannot have it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
