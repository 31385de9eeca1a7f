//! Run statuses: what the agents report and the store's history holds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The state of a workflow or task run. On the wire and in the database it
/// is the upper-case name, e.g. `"RUNNING"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    /// Scheduled, not started.
    Pending,
    /// Executing.
    Running,
    /// Paused, waiting on something outside it.
    Waiting,
    /// Finished successfully.
    Completed,
    /// Finished unsuccessfully.
    Failed,
    /// Its agent stopped reporting while it ran.
    Crashed,
}

impl RunStatus {
    /// Every status, in the ENUM's order.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Crashed,
    ];

    /// The upper-case name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Waiting => "WAITING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Crashed => "CRASHED",
        }
    }

    /// True for the statuses a run never leaves.
    pub const fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Crashed)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;

    /// Accepts the names in any case.
    fn from_str(s: &str) -> Result<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownStatus(s.to_owned()))
    }
}

/// One row of an instance's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// `None` for the workflow's own status; the task's id and instance id
    /// for a task's (on the wire: a two-element array, or nil).
    pub task: Option<(String, String)>,
    /// The new status.
    pub status: RunStatus,
    /// When it changed, in ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// A workflow instance with its current status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// The workflow definition.
    pub workflow_id: String,
    /// The instance.
    pub workflow_instance_id: String,
    /// Its most recent status.
    pub status: RunStatus,
    /// Its first status change.
    pub first_ms: i64,
    /// Its most recent status change.
    pub last_ms: i64,
}

/// Which workflow instances a recent-statuses query returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecentWorkflows {
    /// Most instances returned (must not be 0; default 20).
    pub limit: usize,
    /// Only this workflow's instances.
    pub workflow_id: Option<String>,
    /// Only instances whose current status is this.
    pub status: Option<RunStatus>,
}

impl Default for RecentWorkflows {
    fn default() -> Self {
        RecentWorkflows {
            limit: 20,
            workflow_id: None,
            status: None,
        }
    }
}
