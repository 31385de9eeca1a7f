//! Faults the spec names, survived for real, against the real binaries:
//! agents SIGKILLed while their principal is unreachable, and a network cut
//! between an agent and the principal. For the cut each side runs in a
//! network namespace the test makes (root and `ip` needed; without them the
//! test says why and passes without checking anything).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdktr_principal::testing::{free_port, spooled, workspace_binary};
use cdktr_store::{LogQuery, Store};

/// Two namespaces joined by a veth pair: the principal at 10.77.0.1, the
/// agent at 10.77.0.2. Removed on drop.
struct Net {
    principal_ns: String,
    agent_ns: String,
    principal_if: String,
}

const PRINCIPAL_IP: &str = "10.77.0.1";

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

    /// Cuts (`false`) or restores the link: with the principal's end down,
    /// the agent's packets are dropped silently, as on a real cut.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        assert!(ip(&[
            "-n",
            &self.principal_ns,
            "link",
            "set",
            &self.principal_if,
            state
        ]));
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

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A principal child, once its banner says it is up.
fn started(command: &mut Command) -> Killed {
    let mut child = Killed(command.stdout(Stdio::piped()).spawn().unwrap());
    let mut banner = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("API on"), "{banner}");
    child
}

fn timeline(net: &Net, instance: &str) -> String {
    let out = net
        .run(&net.principal_ns, &workspace_binary("cdktr-logs"))
        .args(["status", "-i", instance, "-o", "json", "--host", PRINCIPAL_IP])
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
    let principal = started(
        net.run(&net.principal_ns, Path::new(env!("CARGO_BIN_EXE_cdktr-principal")))
            .arg("--db")
            .arg(dir.path().join("app.db"))
            .args([
                "--host",
                PRINCIPAL_IP,
                "--heartbeat-timeout",
                "12s",
                "--flush-interval",
                "200ms",
            ])
            .env("RUST_LOG", "warn"),
    );

    // One task of 25 s; heartbeats every second.
    let mut agent = Killed(
        net.run(&net.agent_ns, &workspace_binary("cdktr-agent"))
            .args(["run", "--workflow-id", "cut", "--", "sh", "-c", "sleep 25"])
            .env("CDKTR_PRINCIPAL_HOST", PRINCIPAL_IP)
            .env("CDKTR_AGENT_HEARTBEAT_INTERVAL_MS", "1000")
            .env("CDKTR_SPOOL_DIR", dir.path().join("spool"))
            .env("HOME", dir.path())
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
    while !timeline(&net, &instance).contains("RUNNING") {
        assert!(Instant::now() < end, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Heartbeats flow; then 8 s without a network, under the 12 s timeout.
    std::thread::sleep(Duration::from_secs(2));
    net.link(false);
    std::thread::sleep(Duration::from_secs(8));
    net.link(true);

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
    let statuses = timeline(&net, &instance);
    assert!(
        !statuses.contains("CRASHED"),
        "a healthy run was marked CRASHED:\n{statuses}"
    );
    assert!(statuses.contains("COMPLETED"), "{statuses}");
    let _ = Command::new("kill")
        .args(["-TERM", &principal.0.id().to_string()])
        .status();
}

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

/// A tmpfs of a few MiB on a new directory, unmounted on drop; `None`, with
/// the reason printed, where the test may not mount one.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("skipped: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().to_str().unwrap()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }

    /// Fills the disk until `left` bytes are free.
    fn fill(&self, left: u64) -> std::path::PathBuf {
        let path = self.path().join("filler");
        let take = self.free().saturating_sub(left);
        std::fs::write(&path, vec![0u8; take as usize]).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A principal on `db` with the free space it keeps, its stderr collected.
fn principal_on(db: &Path, ports: &[u16; 3], min_free: &str) -> (Killed, std::sync::Arc<std::sync::Mutex<String>>) {
    let child = started(
        Command::new(env!("CARGO_BIN_EXE_cdktr-principal"))
            .arg("--db")
            .arg(db)
            .args(["--api-port", &ports[0].to_string()])
            .args(["--listening-port", &ports[1].to_string()])
            .args(["--publishing-port", &ports[2].to_string()])
            .args(["--flush-interval", "200ms", "--min-free-space", min_free])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped()),
    );
    let mut child = child;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (err, sink) = (child.0.stderr.take().unwrap(), log.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (child, log)
}

#[test]
fn a_filling_disk_pauses_writes_with_a_warning_and_everything_is_stored_once_when_space_returns() {
    // Kept free: 8 MiB (writes pause before DuckDB sees ENOSPC); then 0,
    // DuckDB running into the full disk itself: with 3 MiB left a WAL write
    // fails (retried); with 24 MiB left the WAL passes DuckDB's checkpoint
    // threshold and the checkpoint fails, which invalidates the database
    // (measured: reopened 1). Either way no restart, every line once.
    for (min_free, left) in [("8MiB", 20u64 << 20), ("0", 3 << 20), ("0", 24 << 20)] {
        let Some(disk) = SmallDisk::mount("64m") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let db = disk.path().join("app.db");
        let ports = [free_port(), free_port(), free_port()];
        let (principal, log) = principal_on(&db, &ports, min_free);
        let filler = disk.fill(left);
        let bus = cdktr_log::BusConfig {
            host: "127.0.0.1".into(),
            listening_port: ports[1],
            publishing_port: ports[2],
        };
        let api_config = cdktr_log::ApiConfig {
            host: "127.0.0.1".into(),
            port: ports[0],
        };
        let publisher = cdktr_log::LogPublisher::builder(&bus)
            .acknowledged_by(&api_config)
            .spool_dir(spool.path())
            .stall_timeout(Duration::from_millis(500))
            .start()
            .unwrap();
        let mut api = cdktr_log::ApiClient::connect(&api_config).unwrap();
        let line = |i: usize| cdktr_log::LogMessage {
            workflow_id: "disk".into(),
            workflow_name: "disk".into(),
            workflow_instance_id: format!("disk-{}", i % 7),
            task_name: "t".into(),
            task_instance_id: "t-1".into(),
            timestamp_ms: cdktr_log::message::now_ms(),
            level: cdktr_log::Level::Info,
            payload: format!("{i:08} {:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(8),
        };
        let mut sent = 0;
        let end = Instant::now() + Duration::from_secs(180);
        let hit = loop {
            for _ in 0..5_000 {
                publisher.publish(line(sent)).unwrap();
                sent += 1;
            }
            let s = api.stats().unwrap();
            if s.space_low || s.failed_flushes > 0 {
                break s;
            }
            assert!(Instant::now() < end, "{min_free}: the disk never filled: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // More lines while it is full: held by the publisher, none lost.
        for _ in 0..20_000 {
            publisher.publish(line(sent)).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
        let paused = api.stats().unwrap();
        if min_free != "0" {
            assert!(paused.space_low, "{paused:?}");
            assert_eq!(paused.failed_flushes, hit.failed_flushes, "no write tried while paused");
            let warnings = log.lock().unwrap().matches("writes paused").count();
            assert_eq!(warnings, 1, "one warning:\n{}", log.lock().unwrap());
            let cli = Command::new(workspace_binary("cdktr-logs"))
                .args(["stats", "--api-port", &ports[0].to_string()])
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&cli.stdout).contains("warning: database writes paused"));
        }
        let held = publisher.stats();
        assert!(held.acknowledged < sent as u64, "{held:?}");
        let start = Instant::now();
        std::fs::remove_file(filler).unwrap();
        publisher.wait_persisted(Duration::from_secs(120)).unwrap();
        let recovery = start.elapsed();
        let after = api.stats().unwrap();
        assert!(!after.space_low, "{after:?}");
        publisher.shutdown().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &principal.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut principal = principal;
        assert!(principal.0.wait().unwrap().success(), "{}", log.lock().unwrap());
        let store = Store::open(&db).unwrap();
        let rows = store
            .query_logs(&LogQuery {
                start_ms: Some(0),
                limit: Some(usize::MAX >> 1),
                ..LogQuery::default()
            })
            .unwrap();
        let distinct: std::collections::HashSet<_> = rows.iter().map(|r| &r.payload).collect();
        eprintln!(
            "min free {min_free}: sent {sent}, stored {}, duplicated {}, lost {}; failed writes {}, \
             reopened {}, shed {}; stored again {recovery:?} after space returned",
            distinct.len(),
            rows.len() - distinct.len(),
            sent - distinct.len(),
            after.failed_flushes,
            after.reopened,
            after.shed,
        );
        assert_eq!(
            (rows.len(), distinct.len()),
            (sent, sent),
            "{min_free}: every line once"
        );
    }
}
