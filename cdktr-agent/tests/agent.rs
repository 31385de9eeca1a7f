//! The agent against a real principal, with real child processes run
//! through `sh -c`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use cdktr_agent::{Agent, AgentConfig, Outcome, Task, Workflow};
use cdktr_log::{ApiConfig, BusConfig, Level, LogMessage, RunStatus};
use cdktr_principal::Principal;
use cdktr_store::{LogQuery, StatusChange, Store};

const WAIT: Duration = Duration::from_secs(120);

/// An in-memory principal on free ports.
fn local() -> cdktr_principal::PrincipalBuilder {
    cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .flush_interval(Duration::from_millis(200))
}

fn principal() -> Principal {
    local().start().unwrap()
}

fn config(bus: &BusConfig, api: &ApiConfig, spool: &Path) -> AgentConfig {
    AgentConfig {
        bus: bus.clone(),
        api: api.clone(),
        agent_id: "test-agent".into(),
        heartbeat_interval: Duration::from_millis(200),
        max_line_bytes: 64 << 10,
        spool_dir: Some(spool.to_owned()),
        shutdown_timeout: WAIT,
        kill_grace: Duration::from_secs(5),
        curve: None,
    }
}

/// Runs `workflow` with a fresh agent and returns the report, every stored
/// line of the instance and its timeline.
fn run(p: &Principal, workflow: &Workflow) -> (cdktr_agent::RunReport, Vec<LogMessage>, Vec<StatusChange>) {
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(p.bus().config(), &p.api_config(), spool.path())).unwrap();
    let report = agent.run(workflow, &AtomicBool::new(false)).unwrap();
    let done = agent.shutdown().unwrap();
    assert_eq!(
        (done.statuses_undelivered, done.logs.left_in_spool, done.logs.dropped),
        (0, 0, 0)
    );
    let (lines, timeline) = stored(p.store(), &report.workflow_instance_id);
    (report, lines, timeline)
}

fn stored(store: &Store, instance: &str) -> (Vec<LogMessage>, Vec<StatusChange>) {
    let lines = store
        .query_logs(&LogQuery {
            start_ms: Some(0),
            workflow_instance_id: Some(instance.into()),
            limit: Some(10_000_000),
            ..LogQuery::default()
        })
        .unwrap();
    (lines, store.timeline(instance).unwrap())
}

/// The timeline as (task or "", status).
fn shape(timeline: &[StatusChange]) -> Vec<(String, RunStatus)> {
    timeline
        .iter()
        .map(|c| (c.task.as_ref().map_or(String::new(), |t| t.0.clone()), c.status))
        .collect()
}

fn payloads(lines: &[LogMessage], level: Level, prefix: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.level == level && l.payload.starts_with(prefix))
        .map(|l| l.payload.clone())
        .collect()
}

fn ok_timeline(tasks: &[&str]) -> Vec<(String, RunStatus)> {
    let mut t = vec![(String::new(), RunStatus::Pending), (String::new(), RunStatus::Running)];
    for name in tasks {
        for s in [RunStatus::Pending, RunStatus::Running, RunStatus::Completed] {
            t.push((name.to_string(), s));
        }
    }
    t.push((String::new(), RunStatus::Completed));
    t
}

#[test]
fn a_task_writing_100000_lines_to_both_streams_delivers_every_line_in_order() {
    let p = principal();
    let script = "(seq 1 50000 | sed 's/^/out /') & (seq 1 50000 | sed 's/^/err /' >&2); wait";
    let workflow = Workflow::single("flood", Task::shell("spew", script));
    let (report, lines, timeline) = run(&p, &workflow);
    assert_eq!(report.status, RunStatus::Completed);
    let expect = |prefix: &str| (1..=50_000).map(|i| format!("{prefix} {i}")).collect::<Vec<_>>();
    assert_eq!(payloads(&lines, Level::Info, "out "), expect("out"));
    assert_eq!(payloads(&lines, Level::Warn, "err "), expect("err"));
    assert_eq!(lines.len(), 100_001, "the lines and one last line");
    let task_instance = &report.tasks[0].task_instance_id;
    assert!(lines.iter().all(|l| l.workflow_id == "flood"
        && l.workflow_instance_id == report.workflow_instance_id
        && l.task_name == "spew"
        && &l.task_instance_id == task_instance));
    let last = lines.iter().find(|l| l.payload.contains("exited with code 0")).unwrap();
    assert!(
        last.payload.starts_with("task spew exited with code 0 after "),
        "{}",
        last.payload
    );
    assert_eq!(shape(&timeline), ok_timeline(&["spew"]));
    assert!(timeline.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
    p.shutdown().unwrap();
}

#[test]
fn binary_output_missing_newlines_and_long_lines_are_kept_not_dropped() {
    let p = principal();
    let script = "printf 'a\\377b\\000c\\r\\n'; head -c 200000 /dev/zero | tr '\\000' x; echo; printf 'no newline'";
    let (report, lines, _) = run(&p, &Workflow::single("bytes", Task::shell("odd", script)));
    assert_eq!(report.status, RunStatus::Completed);
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l.level == Level::Info && !l.payload.starts_with("task odd"))
        .map(|l| l.payload.as_str())
        .collect();
    assert_eq!(out[0], "a\u{fffd}b\0c");
    assert_eq!(
        out[1..5].iter().map(|s| s.len()).collect::<Vec<_>>(),
        [65536, 65536, 65536, 3392]
    );
    assert!(out[1..5].iter().all(|s| s.bytes().all(|b| b == b'x')));
    assert_eq!(out[5], "no newline");
    assert_eq!(out.len(), 6);
    p.shutdown().unwrap();
}

#[test]
fn a_failing_task_fails_the_workflow_and_stops_the_rest_unless_told_to_continue() {
    let p = principal();
    let workflow = Workflow {
        workflow_id: "fails".into(),
        workflow_name: None,
        tasks: vec![
            Task::shell("first", "echo one"),
            Task::shell("broken", "echo about to fail >&2; exit 3"),
            Task::shell("never", "echo never"),
        ],
    };
    let (report, lines, timeline) = run(&p, &workflow);
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.tasks.len(), 2);
    assert_eq!(report.tasks[1].outcome, Outcome::Exited(3));
    let mut expected = ok_timeline(&["first"]);
    expected.pop();
    for s in [RunStatus::Pending, RunStatus::Running, RunStatus::Failed] {
        expected.push(("broken".into(), s));
    }
    expected.push((String::new(), RunStatus::Failed));
    assert_eq!(shape(&timeline), expected);
    assert!(lines
        .iter()
        .any(|l| l.level == Level::Error && l.payload.starts_with("task broken exited with code 3")));
    assert!(lines
        .iter()
        .any(|l| l.task_name == "never" && l.payload == "task never not run: task broken failed"));
    assert!(!lines.iter().any(|l| l.payload == "never"));

    let mut tolerant = workflow.clone();
    tolerant.tasks[1].continue_on_failure = true;
    let (report, lines, _) = run(&p, &tolerant);
    assert_eq!(report.status, RunStatus::Completed);
    assert_eq!(report.tasks[1].status, RunStatus::Failed);
    assert!(lines.iter().any(|l| l.payload == "never"));
    p.shutdown().unwrap();
}

#[test]
fn a_task_killed_by_a_signal_or_not_started_is_failed_with_its_reason() {
    let p = principal();
    let (report, lines, _) = run(
        &p,
        &Workflow::single("sig", Task::shell("victim", "echo bye; kill -9 $$")),
    );
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.tasks[0].outcome, Outcome::Signalled(9));
    assert!(lines
        .iter()
        .any(|l| l.payload.contains("was killed by signal 9 (SIGKILL)")));
    assert!(lines.iter().any(|l| l.payload == "bye"));

    let (report, lines, timeline) = run(
        &p,
        &Workflow::single("nope", Task::new("ghost", "/nonexistent/cmd", ["x"])),
    );
    assert_eq!(report.status, RunStatus::Failed);
    assert!(matches!(report.tasks[0].outcome, Outcome::NotStarted(_)));
    assert!(lines
        .iter()
        .any(|l| l.level == Level::Error && l.payload.contains("cannot start")));
    assert_eq!(timeline.last().unwrap().status, RunStatus::Failed);
    p.shutdown().unwrap();
}

fn agent_binary(bus: &BusConfig, api: &ApiConfig, spool: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-agent"));
    c.env("CDKTR_LOGS_LISTENING_PORT", bus.listening_port.to_string())
        .env("CDKTR_PRINCIPAL_PORT", api.port.to_string())
        .env("CDKTR_SPOOL_DIR", spool)
        .env("CDKTR_AGENT_SHUTDOWN_TIMEOUT_MS", "120000")
        .stdout(Stdio::piped());
    c
}

/// Reads the agent's stdout until a line containing `what`; returns it.
fn until(out: &mut impl BufRead, what: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the agent ended before printing {what:?}"
        );
        if line.contains(what) {
            return line.trim().to_owned();
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < end, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_binary_runs_a_file_while_the_principal_is_down_and_delivers_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.yaml");
    std::fs::write(
        &file,
        "workflow_id: late\nworkflow_name: Late principal\ntasks:\n  - name: hello\n    command: sh\n    args: [-c, 'echo hello; echo careful >&2']\n  - name: world\n    command: echo\n    args: [world]\n",
    )
    .unwrap();
    let bus = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: cdktr_principal::testing::free_port(),
        publishing_port: cdktr_principal::testing::free_port(),
    };
    let api = ApiConfig {
        host: "127.0.0.1".into(),
        port: cdktr_principal::testing::free_port(),
    };
    let mut agent = agent_binary(&bus, &api, &dir.path().join("spool"))
        .args(["run", "--file"])
        .arg(&file)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let started = until(&mut out, "instance ");
    let instance = started.rsplit(' ').next().unwrap().to_owned();
    assert!(instance.starts_with("late-"), "{started}");
    // Both tasks are over before any principal exists.
    until(&mut out, &format!("instance {instance} COMPLETED"));
    assert!(agent.try_wait().unwrap().is_none(), "it waits for the principal");

    let db = dir.path().join("app.db");
    let principal = Principal::builder()
        .bus(bus.clone())
        .api(api.clone())
        .database(cdktr_store::Location::File(db.clone()))
        .flush_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    let status = wait_exit(&mut agent);
    assert!(status.success(), "{status:?}");
    principal.shutdown().unwrap();

    let store = Store::open(&db).unwrap();
    let (lines, timeline) = stored(&store, &instance);
    assert_eq!(shape(&timeline), ok_timeline(&["hello", "world"]));
    let texts: Vec<(Level, &str, &str)> = lines
        .iter()
        .filter(|l| !l.payload.starts_with("task "))
        .map(|l| (l.level, l.task_name.as_str(), l.payload.as_str()))
        .collect();
    let mut sorted = texts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            (Level::Info, "hello", "hello"),
            (Level::Info, "world", "world"),
            (Level::Warn, "hello", "careful"),
        ]
    );
    assert!(lines.iter().all(|l| l.workflow_name == "Late principal"));
}

#[test]
fn sigterm_stops_the_task_fails_the_workflow_and_says_why() {
    let p = principal();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_binary(p.bus().config(), &p.api_config(), dir.path())
        .args(["run", "--workflow-id", "long", "--task", "sleeper", "--"])
        .args(["sh", "-c", "echo started; sleep 60; echo never"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let started = until(&mut out, "instance ");
    let instance = started.rsplit(' ').next().unwrap().to_owned();
    // Once its first line is stored, the task is surely running.
    let end = Instant::now() + WAIT;
    while !p
        .query_logs(&LogQuery {
            workflow_instance_id: Some(instance.clone()),
            payload_contains: Some("started".into()),
            ..LogQuery::default()
        })
        .unwrap()
        .iter()
        .any(|l| l.payload == "started")
    {
        assert!(Instant::now() < end, "the task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut agent);
    assert_eq!(status.code(), Some(1), "the workflow failed");
    assert!(sent.elapsed() < Duration::from_secs(30), "the sleep was not stopped");
    let (lines, timeline) = stored(p.store(), &instance);
    assert_eq!(timeline.last().unwrap().status, RunStatus::Failed);
    assert!(lines
        .iter()
        .any(|l| l.payload.contains("was stopped") && l.payload.contains("told to stop")));
    assert!(!lines.iter().any(|l| l.payload == "never"));
    p.shutdown().unwrap();
}

#[test]
fn bad_invocations_are_explained() {
    for (args, says) in [
        (&["run"][..], "required"),
        (&["run", "--workflow-id", "x"], "required"),
        (&["run", "--file", "/nonexistent.yaml"], "cannot read"),
        (&["run", "--workflow-id", "", "--", "true"], "id is empty"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cdktr-agent"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn an_agent_killed_mid_task_has_its_workflow_marked_crashed_once() {
    let p = local().heartbeat_timeout(Duration::from_millis(800)).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_binary(p.bus().config(), &p.api_config(), dir.path())
        .env("CDKTR_AGENT_HEARTBEAT_INTERVAL_MS", "100")
        .args(["run", "--workflow-id", "doomed", "--", "sleep", "5"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let instance = until(&mut out, "instance ").rsplit(' ').next().unwrap().to_owned();
    let running = || {
        p.store()
            .timeline(&instance)
            .unwrap()
            .iter()
            .any(|c| c.task.is_some() && c.status == RunStatus::Running)
    };
    let end = Instant::now() + WAIT;
    while !running() || p.stats().live_agents == 0 {
        assert!(Instant::now() < end, "the task never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Alive and beating: nothing is marked while it runs.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(p.stats().crashed, 0);
    agent.kill().unwrap();
    agent.wait().unwrap();
    while p.stats().crashed == 0 {
        assert!(Instant::now() < end, "never marked CRASHED");
        std::thread::sleep(Duration::from_millis(20));
    }
    let crashed: Vec<bool> = p
        .store()
        .timeline(&instance)
        .unwrap()
        .iter()
        .filter(|c| c.status == RunStatus::Crashed)
        .map(|c| c.task.is_some())
        .collect();
    assert_eq!(crashed, [false, true], "the workflow and its running task, once each");
    p.shutdown().unwrap();
}
