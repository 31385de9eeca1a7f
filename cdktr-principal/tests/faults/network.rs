//! A network cut shorter than the heartbeat timeout. Each side runs in a
//! network namespace the test makes (root and `ip` needed), and every
//! connection uses CURVE keys (the principal binds an address that is not
//! loopback).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdktr_principal::testing::{workspace_binary, TestKeys};

use crate::{started, Killed};

/// Two namespaces joined by a veth pair: the principal at 10.77.0.1, the
/// agent at 10.77.0.2. Removed on drop.
struct Net {
    principal_ns: String,
    agent_ns: String,
    principal_if: String,
}

const PRINCIPAL_IP: &str = "10.77.0.1";
const AGENT_IP: &str = "10.77.0.2";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Net {
    /// `None`, with the reason printed, where namespaces cannot be made.
    fn make(tag: &str) -> Option<Net> {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let net = Net {
            principal_ns: format!("cdktr-p{id}"),
            agent_ns: format!("cdktr-a{id}"),
            principal_if: format!("vp{id}"),
        };
        let agent_if = format!("va{id}");
        if !ip(&["netns", "add", &net.principal_ns]) {
            println!("skipped: cannot make a network namespace (needs root and iproute2)");
            return None;
        }
        let ok = ip(&["netns", "add", &net.agent_ns])
            && ip(&[
                "link",
                "add",
                &net.principal_if,
                "netns",
                &net.principal_ns,
                "type",
                "veth",
                "peer",
                "name",
                &agent_if,
                "netns",
                &net.agent_ns,
            ])
            && ip(&[
                "-n",
                &net.principal_ns,
                "addr",
                "add",
                "10.77.0.1/30",
                "dev",
                &net.principal_if,
            ])
            && ip(&["-n", &net.agent_ns, "addr", "add", "10.77.0.2/30", "dev", &agent_if])
            && ip(&["-n", &net.principal_ns, "link", "set", "lo", "up"])
            && ip(&["-n", &net.agent_ns, "link", "set", "lo", "up"])
            && ip(&["-n", &net.principal_ns, "link", "set", &net.principal_if, "up"])
            && ip(&["-n", &net.agent_ns, "link", "set", &agent_if, "up"]);
        assert!(ok, "namespaces were made but could not be wired");
        Some(net)
    }

    /// Cuts (`false`) or restores the link. Each side drops what it would
    /// send the other (a blackhole route): the interfaces stay up, so no
    /// carrier change tells TCP anything, as on a real cut somewhere
    /// between two hosts.
    fn link(&self, up: bool) {
        let op = if up { "del" } else { "add" };
        for (ns, peer) in [(&self.agent_ns, PRINCIPAL_IP), (&self.principal_ns, AGENT_IP)] {
            assert!(ip(&["-n", ns, "route", op, "blackhole", &format!("{peer}/32")]));
        }
    }

    fn run(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.principal_ns]);
        ip(&["netns", "del", &self.agent_ns]);
    }
}

fn heartbeats(net: &Net, keys: &TestKeys) -> u64 {
    let out = net
        .run(&net.principal_ns, &workspace_binary("cdktr-logs"))
        .args(["stats", "-o", "json", "--host", PRINCIPAL_IP])
        .envs(keys.client_vars("reader"))
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats as JSON");
    stats["heartbeats"].as_u64().expect("a heartbeat count")
}

fn timeline(net: &Net, keys: &TestKeys, instance: &str) -> String {
    let out = net
        .run(&net.principal_ns, &workspace_binary("cdktr-logs"))
        .args(["status", "-i", instance, "-o", "json", "--host", PRINCIPAL_IP])
        .envs(keys.client_vars("reader"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_network_cut_shorter_than_the_heartbeat_timeout_marks_nothing_crashed() {
    let Some(net) = Net::make("c") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::write(&dir.path().join("keys"));
    let principal = started(
        net.run(&net.principal_ns, Path::new(env!("CARGO_BIN_EXE_cdktr-principal")))
            .arg("--db")
            .arg(dir.path().join("app.db"))
            .args([
                "--host",
                PRINCIPAL_IP,
                "--heartbeat-timeout",
                "20s",
                "--flush-interval",
                "200ms",
            ])
            .envs(keys.principal_vars())
            .env("RUST_LOG", "warn"),
    );

    // One task of 25 s; heartbeats every 5 s (the default).
    let mut agent = Killed(
        net.run(&net.agent_ns, &workspace_binary("cdktr-agent"))
            .args(["run", "--workflow-id", "cut", "--", "sh", "-c", "sleep 25"])
            .env("CDKTR_PRINCIPAL_HOST", PRINCIPAL_IP)
            .env("CDKTR_AGENT_HEARTBEAT_INTERVAL_MS", "5000")
            .env("CDKTR_SPOOL_DIR", dir.path().join("spool"))
            .env("HOME", dir.path())
            .envs(keys.client_vars("agent"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(agent.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let instance = first
        .trim()
        .rsplit(' ')
        .next()
        .expect("the agent names its instance")
        .to_string();
    let end = Instant::now() + Duration::from_secs(60);
    while !timeline(&net, &keys, &instance).contains("RUNNING") {
        assert!(Instant::now() < end, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Heartbeats flow; then 10 s without a network, under the 20 s
    // timeout. (A client that waited out its 5-s turn after a failed
    // heartbeat would next try about 4.5 s after the link returns.)
    std::thread::sleep(Duration::from_secs(2));
    net.link(false);
    std::thread::sleep(Duration::from_secs(10));
    let before = heartbeats(&net, &keys);
    net.link(true);
    // The agent's next heartbeat gets through within a second or two: not
    // at its next 5-s turn, nor behind TCP's retransmission backoff on a
    // connection opened before the cut (a failed heartbeat is tried again
    // every 250 ms, on a fresh connection).
    let back = Instant::now();
    while heartbeats(&net, &keys) == before {
        assert!(
            back.elapsed() < Duration::from_secs(11),
            "no heartbeat after the link returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = back.elapsed();
    eprintln!("first heartbeat {took:?} after the link returned");
    assert!(
        took <= Duration::from_secs(2),
        "first heartbeat only {took:?} after the link returned"
    );

    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the agent never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = out.lines().map_while(Result::ok).collect();
    assert!(status.success(), "{status:?}: {rest:?}");
    let statuses = timeline(&net, &keys, &instance);
    assert!(
        !statuses.contains("CRASHED"),
        "a healthy run was marked CRASHED:\n{statuses}"
    );
    assert!(statuses.contains("COMPLETED"), "{statuses}");
    let _ = Command::new("kill")
        .args(["-TERM", &principal.0.id().to_string()])
        .status();
}
