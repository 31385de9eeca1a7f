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

mod archive;
mod cli;
mod liveness;
mod pages;
mod requests;
