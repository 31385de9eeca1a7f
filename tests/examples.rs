//! Runs every example as a child process: an example that does not run is a
//! broken promise to the reader.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

#[test]
fn pubsub_runs_and_reports_every_line() {
    let out = Command::new(example("pubsub"))
        .output()
        .expect("cargo test builds examples");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("live: ").count(), 3, "{stdout}");
    assert!(
        stdout.contains("WARN  etl/etl-20261127-1 extract/extract-1: row 7 has no id; skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 dropped") && stdout.contains("0 rejected"),
        "{stdout}"
    );
}
