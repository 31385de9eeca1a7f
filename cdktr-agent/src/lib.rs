//! The cdktr agent: runs workflow tasks on this machine, streams every
//! line they write onto the log bus, and reports their statuses to the
//! principal.
//!
//! - [`Workflow`] and [`Task`]: what to run (a task is a command with
//!   arguments, working directory and environment); also read from a YAML
//!   file with [`Workflow::from_file`].
//! - [`Agent`]: runs workflow instances. Each output line is a log line
//!   (stdout INFO, stderr WARN by default; long lines split, invalid UTF-8
//!   replaced); a last line gives the exit code and duration. Statuses go
//!   through the principal's API in order, retried while it is down;
//!   heartbeats say which instances are running, so that the principal marks
//!   them CRASHED if the agent dies. Log lines use acknowledged delivery
//!   (`docs/delivery.md`).
//!
//! # Run a workflow
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use cdktr_agent::{Agent, AgentConfig, Task, Workflow};
//!
//! let agent = Agent::start(AgentConfig::from_env()?)?;
//! let workflow = Workflow {
//!     workflow_id: "nightly-etl".into(),
//!     workflow_name: Some("Nightly ETL".into()),
//!     tasks: vec![Task::shell("extract", "./extract.sh"), Task::new("load", "psql", ["-f", "load.sql"])],
//! };
//! let stop = AtomicBool::new(false); // set it from a signal handler to stop the run
//! let report = agent.run(&workflow, &stop)?;
//! println!("{} {}", report.workflow_instance_id, report.status);
//! agent.shutdown()?; // waits for the principal to take statuses and lines
//! # Ok::<(), cdktr_agent::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

mod agent;
mod error;
mod status;
pub mod task;
pub mod workflow;

pub use agent::{
    Agent, AgentConfig, RunReport, ShutdownReport, TaskReport, ENV_AGENT_ID, ENV_HEARTBEAT_INTERVAL_MS,
    ENV_SHUTDOWN_TIMEOUT_MS, ENV_SPOOL_DIR,
};
pub use error::{Error, Result};
pub use task::Outcome;
pub use workflow::{Task, Workflow};
