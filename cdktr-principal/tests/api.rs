//! The principal's API and the `cdktr-logs` CLI, against the real
//! `cdktr-principal` binary as a child process.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cdktr_log::api::{ErrorKind, Request, Response};
use cdktr_log::{ApiClient, ApiConfig, BusConfig, Level, LogMessage, LogPublisher, RunStatus};

const WAIT: Duration = Duration::from_secs(60);

/// A principal child process on free ports, as its banner reports them.
struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    bus: BusConfig,
    api: ApiConfig,
}

fn port_of(banner: &str, after: &str) -> u16 {
    let rest = &banner[banner.find(after).unwrap_or_else(|| panic!("{after:?} in {banner:?}")) + after.len()..];
    let endpoint = rest.split([',', ' ']).next().unwrap();
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

fn start(db: &Path, extra_env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdktr-principal"));
    cmd.arg("--db")
        .arg(db)
        .args(cdktr_principal::testing::ANY_PORT_FLAGS)
        .args(["--flush-interval", "60s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    let host = "127.0.0.1".to_string();
    Running {
        bus: BusConfig {
            host: host.clone(),
            listening_port: port_of(&banner, "logs in on "),
            publishing_port: port_of(&banner, "out on "),
        },
        api: ApiConfig {
            host,
            port: port_of(&banner, "API on "),
        },
        child,
        stdout,
    }
}

impl Running {
    fn client(&self) -> ApiClient {
        ApiClient::connect(&self.api).unwrap().with_timeout(WAIT)
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().unwrap()
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cdktr_principal::testing::workspace_binary("cdktr-logs"));
        c.args(args)
            .env("CDKTR_PRINCIPAL_PORT", self.api.port.to_string())
            .env("CDKTR_LOGS_PUBLISHING_PORT", self.bus.publishing_port.to_string());
        c
    }

    /// SIGTERM, then the summary line.
    fn stop(mut self) -> String {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}: {rest}");
        rest
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line(instance: &str, level: Level, payload: &str) -> LogMessage {
    LogMessage {
        workflow_id: "etl".into(),
        workflow_name: "Nightly ETL".into(),
        workflow_instance_id: instance.into(),
        task_name: "load".into(),
        task_instance_id: format!("{instance}-load"),
        timestamp_ms: cdktr_log::message::now_ms(),
        level,
        payload: payload.into(),
    }
}

fn stdout_lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json_payloads(out: &Output) -> Vec<String> {
    stdout_lines(out)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            v["payload"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Records an update or heartbeat through the client's typed methods.
fn send(api: &mut ApiClient, r: &Request) -> cdktr_log::Result<()> {
    match r {
        Request::WorkflowStatusUpdate {
            workflow_id,
            workflow_instance_id,
            status,
            timestamp_ms,
        } => api.record_workflow_status(workflow_id, workflow_instance_id, *status, *timestamp_ms),
        Request::TaskStatusUpdate {
            task_id,
            task_instance_id,
            workflow_instance_id,
            status,
            timestamp_ms,
        } => api.record_task_status(task_id, task_instance_id, workflow_instance_id, *status, *timestamp_ms),
        Request::Heartbeat { agent_id, running } => api.heartbeat(agent_id, running),
        other => panic!("not an update: {other:?}"),
    }
}

fn update(instance: &str, status: RunStatus, at: i64) -> Request {
    Request::WorkflowStatusUpdate {
        workflow_id: "etl".into(),
        workflow_instance_id: instance.into(),
        status,
        timestamp_ms: Some(at),
    }
}

fn task_update(instance: &str, status: RunStatus, at: i64) -> Request {
    Request::TaskStatusUpdate {
        task_id: "load".into(),
        task_instance_id: format!("{instance}-load"),
        workflow_instance_id: instance.into(),
        status,
        timestamp_ms: Some(at),
    }
}

#[test]
fn lines_and_statuses_round_trip_through_the_cli_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let p = start(&db, &[]);

    // `tail` follows live: start it first, then publish.
    let mut tail = p
        .cli_command(&["tail", "-w", "etl", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let tail_out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(tail_out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let publisher = LogPublisher::connect(&p.bus).unwrap();
    let end = Instant::now() + WAIT;
    while rx.recv_timeout(Duration::from_millis(50)).is_err() {
        assert!(Instant::now() < end, "tail never received anything");
        publisher.publish(line("etl-0", Level::Debug, "probe")).unwrap();
    }
    let lines = [
        (Level::Info, "extracting"),
        (Level::Warn, "slow disk"),
        (Level::Error, "row 7 rejected"),
        (Level::Info, "done: 10 rows"),
    ];
    for (level, payload) in lines {
        publisher.publish(line("etl-1", level, payload)).unwrap();
    }
    publisher.flush(WAIT).unwrap();
    let mut live = Vec::new();
    while live.len() < lines.len() {
        let l = rx.recv_timeout(WAIT).expect("tail keeps printing");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["payload"] != "probe" {
            live.push(v["payload"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(live, lines.map(|(_, p)| p));
    tail.kill().unwrap();
    tail.wait().unwrap();

    // Queryable within the freshness bound (250 ms) although the flush
    // interval is 60 s: a query writes what has waited longer than that.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let all = json_payloads(&p.cli(&["query", "-i", "etl-1", "-o", "json"]));
        if all == lines.map(|(_, p)| p) {
            break;
        }
        let expected: Vec<String> = lines.iter().map(|(_, p)| p.to_string()).collect();
        assert!(expected.starts_with(&all), "a prefix at most: {all:?}");
        assert!(Instant::now() < end, "never queryable");
    }
    assert_eq!(
        json_payloads(&p.cli(&["query", "-w", "etl", "-n", "2", "-o", "json"])),
        ["row 7 rejected", "done: 10 rows"]
    );
    assert_eq!(
        json_payloads(&p.cli(&["query", "-i", "etl-1", "--level", "warn", "-o", "json"])),
        ["slow disk", "row 7 rejected"]
    );
    assert_eq!(
        json_payloads(&p.cli(&["query", "--grep", "rows", "--since", "1h", "-o", "json"])),
        ["done: 10 rows"]
    );
    assert!(json_payloads(&p.cli(&["query", "-i", "etl-1", "--until", "1h", "-o", "json"])).is_empty());
    let text = stdout_lines(&p.cli(&["query", "-i", "etl-1", "--task", "load"]));
    assert_eq!(text.len(), 4);
    assert!(text[2].contains("ERROR") && text[2].ends_with("etl/etl-1 load/etl-1-load: row 7 rejected"));
    assert!(!text[2].contains('\x1b'), "no colour when piped");

    // Status updates, as an agent sends them.
    let mut api = p.client();
    let t0 = 1_795_000_000_000;
    for r in [
        update("etl-1", RunStatus::Pending, t0),
        update("etl-1", RunStatus::Running, t0 + 10),
        task_update("etl-1", RunStatus::Running, t0 + 20),
        task_update("etl-1", RunStatus::Completed, t0 + 1_500),
        update("etl-1", RunStatus::Completed, t0 + 1_510),
        update("etl-2", RunStatus::Running, t0 + 2_000),
    ] {
        send(&mut api, &r).unwrap();
    }
    let timeline = api.timeline("etl-1").unwrap();
    let statuses: Vec<_> = timeline.iter().map(|c| (c.task.is_some(), c.status)).collect();
    assert_eq!(
        statuses,
        [
            (false, RunStatus::Pending),
            (false, RunStatus::Running),
            (true, RunStatus::Running),
            (true, RunStatus::Completed),
            (false, RunStatus::Completed)
        ]
    );
    let table = stdout_lines(&p.cli(&["status"]));
    assert!(
        table[0].starts_with("WORKFLOW") && table[0].contains("DURATION"),
        "{table:?}"
    );
    assert!(table[1].contains("etl-2") && table[1].contains("RUNNING"), "{table:?}");
    assert!(
        table[2].contains("etl-1") && table[2].contains("COMPLETED") && table[2].contains("1.510s"),
        "{table:?}"
    );
    let timeline_table = stdout_lines(&p.cli(&["status", "-i", "etl-1"]));
    assert_eq!(timeline_table.len(), 6, "{timeline_table:?}");
    assert!(timeline_table[3].contains("etl-1-load") && timeline_table[3].contains("RUNNING"));
    let recent_json = stdout_lines(&p.cli(&["status", "--recent", "1", "-o", "json"]));
    assert_eq!(recent_json.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&recent_json[0]).unwrap();
    assert_eq!(
        (v["workflow_instance_id"].as_str(), v["status"].as_str()),
        (Some("etl-2"), Some("RUNNING"))
    );

    let stats: serde_json::Value = serde_json::from_str(&stdout_lines(&p.cli(&["stats", "-o", "json"]))[0]).unwrap();
    assert!(stats["received"].as_u64().unwrap() >= 5, "{stats}");
    assert_eq!(
        stats["persisted"], stats["received"],
        "queries flushed everything: {stats}"
    );
    assert!(stdout_lines(&p.cli(&["stats"]))
        .iter()
        .any(|l| l.starts_with("persisted:")));

    // SIGTERM, then a restart on the same file: every line and status is there.
    drop(publisher);
    let summary = p.stop();
    assert!(summary.contains(" received, "), "{summary}");
    let p = start(&db, &[]);
    assert_eq!(
        json_payloads(&p.cli(&["query", "-i", "etl-1", "-o", "json"])),
        lines.map(|(_, p)| p)
    );
    assert_eq!(p.client().timeline("etl-1").unwrap(), timeline);
    p.stop();
}

#[test]
fn garbage_unknown_ops_and_wrong_types_get_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&dir.path().join("app.db"), &[]);
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    req.connect(&p.api.endpoint()).unwrap();
    let ask = |body: &[u8]| -> Response {
        req.send(body, 0).unwrap();
        Response::from_bytes(&req.recv_bytes(0).expect("a reply, not silence")).unwrap()
    };
    let kind = |r: Response| match r {
        Response::Error { kind, .. } => kind,
        other => panic!("expected an error, got {other:?}"),
    };
    let mp = |v: serde_json::Value| rmp_serde::to_vec_named(&v).unwrap();
    // Deterministic "random" bytes.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in [0usize, 1, 7, 64, 4096] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(kind(ask(&junk)), ErrorKind::Malformed, "{len} random bytes");
    }
    assert_eq!(
        kind(ask(&mp(serde_json::json!({"op": "Shutdown"})))),
        ErrorKind::UnknownOp
    );
    assert_eq!(
        kind(ask(&mp(serde_json::json!({"op": ["Ping"]})))),
        ErrorKind::Malformed
    );
    for wrong in [
        serde_json::json!({"op": "GetWorkflowTimeline", "workflow_instance_id": 12}),
        serde_json::json!({"op": "GetWorkflowTimeline"}),
        serde_json::json!({"op": "QueryLogs", "query": {"limit": "ten"}}),
        serde_json::json!({"op": "QueryLogs", "query": {"limit": 0}}),
        serde_json::json!({"op": "QueryLogs", "query": {"start_ms": 10, "end_ms": 5}}),
        serde_json::json!({"op": "QueryLogs", "query": {"workflow": "etl"}}),
        serde_json::json!({"op": "GetRecentWorkflowStatuses", "limit": 0}),
        serde_json::json!({"op": "WorkflowStatusUpdate", "workflow_id": "w", "workflow_instance_id": "i", "status": "DONE"}),
        serde_json::json!({"op": "Heartbeat", "agent_id": "a", "running": "etl-1"}),
    ] {
        assert_eq!(kind(ask(&mp(wrong.clone()))), ErrorKind::Invalid, "{wrong}");
    }
    // Hostile strings are data.
    let evil = "'; DROP TABLE logstore; --\n\u{0}\u{1b}[31m";
    assert_eq!(ask(&update(evil, RunStatus::Running, 5).to_bytes()), Response::Accepted);
    let mut client = p.client();
    assert_eq!(client.timeline(evil).unwrap().len(), 1);

    // A DEALER that skips the REQ envelope, and multi-frame bodies.
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    dealer.connect(&p.api.endpoint()).unwrap();
    dealer.send(Request::Ping {}.to_bytes(), 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(reply[0], b"");
    assert_eq!(kind(Response::from_bytes(&reply[1]).unwrap()), ErrorKind::Malformed);
    dealer
        .send_multipart([b"".to_vec(), b"a".to_vec(), b"b".to_vec()], 0)
        .unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(
        kind(Response::from_bytes(reply.last().unwrap()).unwrap()),
        ErrorKind::Malformed
    );

    // Raw TCP junk, not ZMTP at all, and a peer that connects and vanishes.
    for _ in 0..3 {
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", p.api.port)).unwrap();
        let _ = raw.write_all(b"GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\x7f");
        drop(raw);
    }
    // A request larger than the limit closes that connection only.
    let big = ctx.socket(zmq::REQ).unwrap();
    big.connect(&p.api.endpoint()).unwrap();
    big.send(vec![0x90u8; cdktr_log::api::MAX_REQUEST_BYTES + 1], 0)
        .unwrap();

    // Still serving, and it counted the errors.
    assert_eq!(client.ping().unwrap().0, cdktr_log::api::API_VERSION);
    let stats = client.stats().unwrap();
    assert_eq!(stats.request_errors, 18, "{stats:?}");
    p.stop();
}

#[test]
fn a_silent_agent_gets_exactly_one_crashed_row_per_running_instance() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let p = start(&db, &[("CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS", "300")]);
    let mut api = p.client();
    let t0 = cdktr_log::message::now_ms();
    for i in 1..=3 {
        send(&mut api, &update(&format!("run-{i}"), RunStatus::Running, t0)).unwrap();
    }
    send(&mut api, &task_update("run-1", RunStatus::Running, t0)).unwrap();
    send(&mut api, &update("run-3", RunStatus::Completed, t0 + 1)).unwrap();
    // Agent A runs 1 to 3 (3 has finished); agent B keeps beating.
    send(
        &mut api,
        &Request::Heartbeat {
            agent_id: "agent-a".into(),
            running: vec!["run-1".into(), "run-2".into(), "run-3".into()],
        },
    )
    .unwrap();
    send(&mut api, &update("run-4", RunStatus::Running, t0)).unwrap();
    let beat_b = Request::Heartbeat {
        agent_id: "agent-b".into(),
        running: vec!["run-4".into()],
    };
    let end = Instant::now() + WAIT;
    loop {
        send(&mut api, &beat_b).unwrap();
        let s = api.stats().unwrap();
        if s.crashed == 2 {
            break;
        }
        assert!(s.crashed < 2, "{s:?}");
        assert!(Instant::now() < end, "no CRASHED rows: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Many more sweeps (every 100 ms) happen while B keeps beating.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        send(&mut api, &beat_b).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // B keeps beating until this principal has stopped, however long the
    // checks below take: its run is to be orphaned by the restart, not
    // crashed by a sweep here while the test is busy.
    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let beater = {
        let (config, beating, beat) = (p.api.clone(), beating.clone(), beat_b.clone());
        std::thread::spawn(move || {
            let mut b = ApiClient::connect(&config)
                .unwrap()
                .with_timeout(Duration::from_millis(500));
            while beating.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = send(&mut b, &beat);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let crashed = |api: &mut ApiClient, i: &str| {
        api.timeline(i)
            .unwrap()
            .iter()
            .filter(|c| c.status == RunStatus::Crashed)
            .map(|c| c.task.is_some())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        crashed(&mut api, "run-1"),
        [false, true],
        "the workflow and its running task"
    );
    assert_eq!(crashed(&mut api, "run-2"), [false]);
    assert!(crashed(&mut api, "run-3").is_empty(), "finished runs are left alone");
    assert!(
        crashed(&mut api, "run-4").is_empty(),
        "a live agent's runs are left alone"
    );
    assert_eq!(api.stats().unwrap().crashed, 2);

    // After a restart, a RUNNING instance nobody claims is CRASHED once too.
    p.stop();
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    beater.join().unwrap();
    let p = start(&db, &[("CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS", "300")]);
    let mut api = p.client();
    let end = Instant::now() + WAIT;
    while api.stats().unwrap().crashed < 1 {
        assert!(Instant::now() < end, "the orphan was never marked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(crashed(&mut api, "run-4"), [false]);
    assert_eq!(crashed(&mut api, "run-1"), [false, true]);
    p.stop();
}

#[test]
fn a_slow_query_does_not_hold_up_status_updates() {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .query_workers(2)
        .query_delay(Duration::from_secs(3))
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    // Two slow queries occupy both workers.
    let slow: Vec<zmq::Socket> = (0..2)
        .map(|_| {
            let s = ctx.socket(zmq::REQ).unwrap();
            s.connect(principal.api_endpoint()).unwrap();
            s.send(
                Request::QueryLogs {
                    query: Default::default(),
                }
                .to_bytes(),
                0,
            )
            .unwrap();
            s
        })
        .collect();
    let mut api = ApiClient::connect(&principal.api_config()).unwrap().with_timeout(WAIT);
    for i in 0..20 {
        send(&mut api, &update(&format!("i{i}"), RunStatus::Running, i)).unwrap();
        send(
            &mut api,
            &Request::Heartbeat {
                agent_id: "a".into(),
                running: vec![format!("i{i}")],
            },
        )
        .unwrap();
    }
    // Every update was recorded while both queries were still running.
    for s in &slow {
        assert_eq!(s.poll(zmq::POLLIN, 0).unwrap(), 0, "the query finished first");
    }
    assert_eq!(
        principal.store().recent_workflows(&Default::default()).unwrap().len(),
        20
    );
    for s in &slow {
        s.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
        let r = Response::from_bytes(&s.recv_bytes(0).unwrap()).unwrap();
        assert!(matches!(r, Response::Logs(_)), "{r:?}");
    }
    principal.shutdown().unwrap();
}

#[test]
fn the_cli_fails_fast_on_an_unreachable_principal_and_explains_bad_arguments() {
    // Held, so nothing else takes the port: it accepts TCP but never
    // speaks ZeroMQ, like a hung principal.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = silent.local_addr().unwrap().port();
    for args in [
        &["query", "--timeout", "500ms"][..],
        &["status", "--timeout", "500ms"],
        &["status", "-i", "x", "--timeout", "500ms"],
        &["stats", "--timeout", "500ms"],
    ] {
        let started = Instant::now();
        let out = Command::new(cdktr_principal::testing::workspace_binary("cdktr-logs"))
            .args(args)
            .env("CDKTR_PRINCIPAL_PORT", free.to_string())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no answer from the principal") && err.contains(&free.to_string()),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(started.elapsed() < WAIT, "{args:?} hung");
    }
    for (args, says) in [
        (&["query", "--since", "yesterday"][..], "neither a duration"),
        (&["query", "-n", "0"], "--lines"),
        (&["query", "--level", "loud"], "unknown log level"),
        (&["status", "--status", "done"], "unknown status"),
        (&["status", "-i", "x", "--recent", "3"], "cannot be used with"),
        (&["query", "--timeout", "5"], "needs a unit"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = Command::new(cdktr_principal::testing::workspace_binary("cdktr-logs"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
