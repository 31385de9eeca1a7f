//! Agents SIGKILLed while their principal is unreachable: the next agent
//! on the spool directory delivers every line they had spooled, once.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdktr_principal::testing::{free_port, spooled, workspace_binary};
use cdktr_store::{LogQuery, Store};

use crate::{started, Killed};

fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

fn agent(ports: &[u16; 3], spool: &Path, workflow: &str, task: &str, command: &[&str]) -> Command {
    let mut c = Command::new(workspace_binary("cdktr-agent"));
    c.args(["run", "--workflow-id", workflow, "--task", task, "--"])
        .args(command)
        .env("CDKTR_PRINCIPAL_HOST", "127.0.0.1")
        .env("CDKTR_PRINCIPAL_PORT", ports[0].to_string())
        .env("CDKTR_LOGS_LISTENING_PORT", ports[1].to_string())
        .env("CDKTR_SPOOL_DIR", spool)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn agents_killed_while_their_principal_is_unreachable_lose_no_line_they_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let db = dir.path().join("app.db");
    let ports = [free_port(), free_port(), free_port()];
    // Killed at three moments: just started, a few MiB in (one segment),
    // past the first 16 MiB segment. Every line an agent accepts is in its
    // spool within a batch; what the spool holds after the kill is what
    // must arrive, each line once.
    let mut expected: HashMap<(String, String), usize> = HashMap::new();
    let mut total = 0;
    for (round, kill_at) in [1u64, 3 << 20, 20 << 20].into_iter().enumerate() {
        let task = format!("t{round}");
        let before: usize = spooled(&spool).len();
        let mut child = Killed(
            agent(&ports, &spool, "killed", &task, &["seq", "1", "50000000"])
                .spawn()
                .unwrap(),
        );
        let end = Instant::now() + Duration::from_secs(120);
        while spool_bytes(&spool) < kill_at + 1 || spooled(&spool).len() <= before {
            assert!(
                Instant::now() < end,
                "round {round}: the agent never spooled {kill_at} bytes"
            );
            assert!(child.0.try_wait().unwrap().is_none(), "round {round}: the agent exited");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
        let mut this_round = 0;
        for e in spooled(&spool) {
            seqs.entry(e.publisher_id.clone()).or_default().push(e.seq);
            if e.message.task_name == task {
                *expected.entry((task.clone(), e.message.payload)).or_default() += 1;
                this_round += 1;
            }
        }
        for (publisher, s) in &seqs {
            let contiguous: Vec<u64> = (1..=s.len() as u64).collect();
            assert_eq!(s, &contiguous, "{publisher}: the spool holds 1..n in order");
        }
        eprintln!("round {round}: killed with {this_round} line(s) in its spool");
        total += this_round;
    }
    assert!(expected.values().all(|&n| n == 1));

    let mut principal = started(
        Command::new(env!("CARGO_BIN_EXE_cdktr-principal"))
            .arg("--db")
            .arg(&db)
            .args(["--api-port", &ports[0].to_string()])
            .args(["--listening-port", &ports[1].to_string()])
            .args(["--publishing-port", &ports[2].to_string()])
            .args(["--flush-interval", "200ms"])
            .env("RUST_LOG", "error"),
    );
    let start = Instant::now();
    let status = agent(&ports, &spool, "after", "a", &["true"]).status().unwrap();
    assert!(status.success(), "{status:?}");
    let recovery = start.elapsed();
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the spool directory ends empty: {left:?}");
    let ok = Command::new("kill")
        .args(["-TERM", &principal.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(principal.0.wait().unwrap().success());

    let store = Store::open(&db).unwrap();
    let rows = store
        .query_logs(&LogQuery {
            workflow_id: Some("killed".into()),
            start_ms: Some(0),
            limit: Some(usize::MAX >> 1),
            ..LogQuery::default()
        })
        .unwrap();
    let mut stored: HashMap<(String, String), usize> = HashMap::new();
    for r in rows {
        *stored.entry((r.task_name, r.payload)).or_default() += 1;
    }
    let duplicated = stored.values().filter(|&&n| n > 1).count();
    let lost = expected.keys().filter(|k| !stored.contains_key(k)).count();
    eprintln!(
        "spooled {total}, stored {}, duplicated {duplicated}, lost {lost}, recovery {recovery:?}",
        stored.len()
    );
    assert_eq!(stored, expected, "every spooled line stored once, nothing else");
}
