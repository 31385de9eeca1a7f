//! The agent: runs workflow instances, publishing their output and
//! recording their statuses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cdktr_log::api::LazyClient;
use cdktr_log::api::Request;
use cdktr_log::config::{env, process_env, Lookup};
use cdktr_log::curve::ClientKeys;
use cdktr_log::{ApiConfig, BusConfig, Level, LogPublisher, PublisherStats, RunStatus, TaskContext};

use crate::error::Result;
use crate::status::{Heartbeats, Reporter};
use crate::task::{self, Outcome};
use crate::workflow::Workflow;

/// Env var naming the agent (default `<hostname>-<pid>`).
pub const ENV_AGENT_ID: &str = "CDKTR_AGENT_ID";
/// Env var: the spool directory for undelivered log lines (default
/// `$HOME/.cdktr/spool`).
pub const ENV_SPOOL_DIR: &str = "CDKTR_SPOOL_DIR";
/// Env var: how often, in ms, the agent sends heartbeats (default 5000).
pub const ENV_HEARTBEAT_INTERVAL_MS: &str = "CDKTR_AGENT_HEARTBEAT_INTERVAL_MS";
/// Env var: how long, in ms, the agent waits at exit for the principal to
/// take what is pending (default 60000).
pub const ENV_SHUTDOWN_TIMEOUT_MS: &str = "CDKTR_AGENT_SHUTDOWN_TIMEOUT_MS";

/// How an agent reaches the principal and treats its tasks.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The log bus.
    pub bus: BusConfig,
    /// The principal's API.
    pub api: ApiConfig,
    /// This agent's id in heartbeats.
    pub agent_id: String,
    /// How often heartbeats go out (default 5 s; keep it well under the
    /// principal's heartbeat timeout, 30 s by default).
    pub heartbeat_interval: Duration,
    /// Longest log line; longer output lines are split (default 64 KiB).
    pub max_line_bytes: usize,
    /// Where log lines the principal has not acknowledged are kept.
    pub spool_dir: Option<PathBuf>,
    /// How long [`Agent::shutdown`] waits for the principal to take the
    /// pending statuses and log lines (default 60 s).
    pub shutdown_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a task is stopped (default 5 s).
    pub kill_grace: Duration,
    /// CURVE keys for every connection to the principal (role `publisher`),
    /// from `CDKTR_CURVE_SECRET_KEY` and `CDKTR_CURVE_SERVER_KEY`.
    pub curve: Option<ClientKeys>,
}

impl AgentConfig {
    /// The defaults, with the environment applied: the principal's address
    /// (`CDKTR_PRINCIPAL_HOST`, `CDKTR_PRINCIPAL_PORT`,
    /// `CDKTR_LOGS_LISTENING_PORT`), `CDKTR_AGENT_ID`, `CDKTR_SPOOL_DIR`,
    /// `CDKTR_AGENT_HEARTBEAT_INTERVAL_MS` and
    /// `CDKTR_AGENT_SHUTDOWN_TIMEOUT_MS`.
    ///
    /// # Errors
    /// [`Error::Bus`](crate::Error::Bus) with [`cdktr_log::Error::InvalidEnv`], naming the first
    /// variable that cannot be used.
    pub fn from_env() -> Result<AgentConfig> {
        Self::from_lookup(process_env)
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<AgentConfig> {
        let get: Lookup<'_> = &get;
        Ok(AgentConfig {
            bus: BusConfig::from_lookup(get)?,
            api: ApiConfig::from_lookup(get)?,
            agent_id: env(ENV_AGENT_ID, get)?.unwrap_or_else(default_agent_id),
            heartbeat_interval: env(ENV_HEARTBEAT_INTERVAL_MS, get)?
                .map_or(Duration::from_secs(5), |d: Duration| d.max(Duration::from_millis(10))),
            max_line_bytes: 64 << 10,
            spool_dir: env(ENV_SPOOL_DIR, get)?,
            shutdown_timeout: env(ENV_SHUTDOWN_TIMEOUT_MS, get)?.unwrap_or(Duration::from_secs(60)),
            kill_grace: Duration::from_secs(5),
            curve: ClientKeys::from_lookup(get)?,
        })
    }
}

fn default_agent_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "agent".into());
    format!("{host}-{}", std::process::id())
}

/// How one task of a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    /// The task's name.
    pub name: String,
    /// Its instance id.
    pub task_instance_id: String,
    /// COMPLETED or FAILED.
    pub status: RunStatus,
    /// Its exit, signal, or why it did not start.
    pub outcome: Outcome,
    /// How long it ran.
    pub duration: Duration,
}

/// How a workflow instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The instance.
    pub workflow_instance_id: String,
    /// COMPLETED or FAILED.
    pub status: RunStatus,
    /// The tasks that ran, in order (tasks skipped after a failure are not
    /// listed).
    pub tasks: Vec<TaskReport>,
}

/// What the agent could not deliver when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Status updates the principal never recorded: refused, or not
    /// delivered before the shutdown timeout.
    pub statuses_undelivered: u64,
    /// The log publisher's counters: `left_in_spool` lines wait in the
    /// spool directory for the next agent.
    pub logs: PublisherStats,
}

/// Runs workflow instances: their output goes to the principal as log
/// lines (with acknowledged delivery), their statuses through its API, and
/// heartbeats say which instances are running.
#[must_use = "dropping the agent stops it"]
pub struct Agent {
    config: AgentConfig,
    publisher: LogPublisher,
    reporter: Reporter,
    heartbeats: Heartbeats,
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl Agent {
    /// Starts the agent's publisher, status and heartbeat threads. The
    /// principal need not be up.
    ///
    /// # Errors
    /// [`Error::Bus`](crate::Error::Bus) for an unusable address or spool directory;
    /// [`Error::Spawn`](crate::Error::Spawn).
    pub fn start(config: AgentConfig) -> Result<Agent> {
        let mut builder = LogPublisher::builder(&config.bus)
            .acknowledged_by(&config.api)
            // The agent waits for acknowledgements itself, in `shutdown`;
            // what is left then goes to the spool at once.
            .shutdown_timeout(Duration::from_millis(500))
            .max_message_bytes(cdktr_log::wire::DEFAULT_MAX_MESSAGE_BYTES);
        if let Some(dir) = &config.spool_dir {
            builder = builder.spool_dir(dir);
        }
        if let Some(keys) = &config.curve {
            builder = builder.curve(keys.clone());
        }
        let publisher = builder.start()?;
        let api = || LazyClient::new(&config.api, Duration::from_secs(2)).curve(config.curve.clone());
        let reporter = Reporter::start(api())?;
        let heartbeats = Heartbeats::start(api(), config.agent_id.clone(), config.heartbeat_interval)?;
        Ok(Agent {
            config,
            publisher,
            reporter,
            heartbeats,
        })
    }

    /// A new, readable, unique instance id:
    /// `<workflow id>-<UTC time>-<agent pid><counter>`.
    pub fn new_instance_id(&self, workflow_id: &str) -> String {
        let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ");
        let n = INSTANCES.fetch_add(1, Relaxed);
        format!("{workflow_id}-{now}-{:x}{n:x}", std::process::id())
    }

    /// Runs `workflow` as a new instance; see [`run_as`](Self::run_as).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a workflow that cannot be run.
    pub fn run(&self, workflow: &Workflow, cancel: &AtomicBool) -> Result<RunReport> {
        self.run_as(workflow, &self.new_instance_id(&workflow.workflow_id), cancel)
    }

    /// Runs `workflow` as instance `workflow_instance_id`: its tasks in
    /// order, each PENDING, RUNNING, then COMPLETED or FAILED, and the
    /// workflow likewise. A failing task fails the workflow and the next
    /// tasks do not run, unless it is marked `continue_on_failure`. When
    /// `cancel` is set, the running task is stopped (SIGTERM to its process
    /// group, SIGKILL after the grace), the workflow is FAILED with a line
    /// saying why, and no further task runs.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a workflow that cannot be run.
    pub fn run_as(&self, workflow: &Workflow, workflow_instance_id: &str, cancel: &AtomicBool) -> Result<RunReport> {
        workflow.check()?;
        // Strictly increasing, so that the timeline's order is the order of
        // events even within one millisecond.
        let last = std::cell::Cell::new(i64::MIN);
        let stamp = || {
            let t = cdktr_log::message::now_ms().max(last.get().saturating_add(1));
            last.set(t);
            Some(t)
        };
        let wf_status = |status| Request::WorkflowStatusUpdate {
            workflow_id: workflow.workflow_id.clone(),
            workflow_instance_id: workflow_instance_id.to_owned(),
            status,
            timestamp_ms: stamp(),
        };
        self.reporter.send(wf_status(RunStatus::Pending));
        self.heartbeats.set(workflow_instance_id, true);
        self.reporter.send(wf_status(RunStatus::Running));
        let mut reports = Vec::new();
        let mut failed: Option<String> = None;
        for (i, t) in workflow.tasks.iter().enumerate() {
            let task_instance_id = format!("{workflow_instance_id}.{}-{}", i + 1, t.name);
            let log = self.publisher.task_logger(TaskContext {
                workflow_id: workflow.workflow_id.clone(),
                workflow_name: workflow.name().to_owned(),
                workflow_instance_id: workflow_instance_id.to_owned(),
                task_name: t.name.clone(),
                task_instance_id: task_instance_id.clone(),
            });
            if let Some(why) = &failed {
                let _ = log.log(Level::Warn, format!("task {} not run: {why}", t.name));
                continue;
            }
            if cancel.load(Relaxed) {
                failed = Some("the agent was told to stop".into());
                let _ = log.log(
                    Level::Warn,
                    format!("task {} not run: the agent was told to stop", t.name),
                );
                continue;
            }
            let task_status = |status| Request::TaskStatusUpdate {
                task_id: t.name.clone(),
                task_instance_id: task_instance_id.clone(),
                workflow_instance_id: workflow_instance_id.to_owned(),
                status,
                timestamp_ms: stamp(),
            };
            self.reporter.send(task_status(RunStatus::Pending));
            self.reporter.send(task_status(RunStatus::Running));
            let start = Instant::now();
            let outcome = task::run(t, &log, self.config.max_line_bytes, cancel, self.config.kill_grace);
            let status = if outcome.success() {
                RunStatus::Completed
            } else {
                RunStatus::Failed
            };
            self.reporter.send(task_status(status));
            if outcome == Outcome::Stopped {
                failed = Some("the agent was told to stop".into());
            } else if !outcome.success() && !t.continue_on_failure {
                failed = Some(format!("task {} failed", t.name));
            }
            reports.push(TaskReport {
                name: t.name.clone(),
                task_instance_id,
                status,
                outcome,
                duration: start.elapsed(),
            });
        }
        let status = if failed.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        self.reporter.send(wf_status(status));
        self.heartbeats.set(workflow_instance_id, false);
        Ok(RunReport {
            workflow_instance_id: workflow_instance_id.to_owned(),
            status,
            tasks: reports,
        })
    }

    /// Waits up to the shutdown timeout for the principal to record every
    /// status and persist every log line (its own and those it adopted from
    /// dead agents' spools), then stops. Lines it could not
    /// take stay in the spool directory for the next agent.
    ///
    /// # Errors
    /// [`Error::Bus`](crate::Error::Bus) if the publisher's thread had died.
    pub fn shutdown(self) -> Result<ShutdownReport> {
        let Agent {
            config,
            publisher,
            reporter,
            heartbeats,
        } = self;
        let start = Instant::now();
        let statuses_undelivered = reporter.finish(config.shutdown_timeout);
        drop(heartbeats);
        let _ = publisher.wait_persisted(config.shutdown_timeout.saturating_sub(start.elapsed()));
        // What dead agents left in the spool directory, too.
        publisher.wait_adopted(config.shutdown_timeout.saturating_sub(start.elapsed()));
        let logs = publisher.shutdown()?;
        Ok(ShutdownReport {
            statuses_undelivered,
            logs,
        })
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
