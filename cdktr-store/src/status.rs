//! Workflow and task status history: insert-only, one row per change.

use std::fmt;
use std::str::FromStr;

use duckdb::params;

use crate::error::{Error, Result};
use crate::store::Store;

/// The state of a workflow or task run (the `run_status` ENUM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// `None` for the workflow's own status; the task's id and instance id
    /// for a task's.
    pub task: Option<(String, String)>,
    /// The new status.
    pub status: RunStatus,
    /// When it changed, in ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// A workflow instance with its current status.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Which instances [`Store::recent_workflows`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentWorkflows {
    /// Most instances returned (must not be 0).
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

impl Store {
    /// Records a workflow instance's status change.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn record_workflow_status(
        &self,
        workflow_id: &str,
        workflow_instance_id: &str,
        status: RunStatus,
        timestamp_ms: i64,
    ) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT INTO workflow_run_status VALUES (?, ?, ?, ?)")
            .and_then(|mut s| {
                s.execute(params![
                    workflow_id,
                    workflow_instance_id,
                    status.as_str(),
                    timestamp_ms
                ])
            })
            .map(drop)
            .map_err(Error::db("recording a workflow status"))
    }

    /// Records a task instance's status change.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn record_task_status(
        &self,
        task_id: &str,
        task_instance_id: &str,
        workflow_instance_id: &str,
        status: RunStatus,
        timestamp_ms: i64,
    ) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT INTO task_run_status VALUES (?, ?, ?, ?, ?)")
            .and_then(|mut s| {
                s.execute(params![
                    task_id,
                    task_instance_id,
                    workflow_instance_id,
                    status.as_str(),
                    timestamp_ms
                ])
            })
            .map(drop)
            .map_err(Error::db("recording a task status"))
    }

    /// The most recent status of a workflow instance, with its time; `None`
    /// for an instance never recorded. Of two changes with the same
    /// timestamp, the one recorded last wins.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn latest_workflow_status(&self, workflow_instance_id: &str) -> Result<Option<(RunStatus, i64)>> {
        let op = "reading a workflow status";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT status::VARCHAR, timestamp_ms FROM workflow_run_status WHERE workflow_instance_id = ? \
                 ORDER BY timestamp_ms DESC, rowid DESC LIMIT 1",
            )
            .map_err(Error::db(op))?;
        let mut rows = stmt
            .query_map([workflow_instance_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(Error::db(op))?;
        match rows.next() {
            None => Ok(None),
            Some(row) => {
                let (status, ts) = row.map_err(Error::db(op))?;
                Ok(Some((status.parse()?, ts)))
            }
        }
    }

    /// Every status change of a workflow instance and its tasks, in time
    /// order (at equal times: the workflow's first, then in the order
    /// recorded).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn timeline(&self, workflow_instance_id: &str) -> Result<Vec<StatusChange>> {
        let op = "reading a timeline";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT NULL::VARCHAR AS task_id, NULL::VARCHAR AS task_instance_id, status::VARCHAR AS status, \
                        timestamp_ms, 0 AS kind, rowid AS n \
                 FROM workflow_run_status WHERE workflow_instance_id = ? \
                 UNION ALL \
                 SELECT task_id, task_instance_id, status::VARCHAR, timestamp_ms, 1, rowid \
                 FROM task_run_status WHERE workflow_instance_id = ? \
                 ORDER BY timestamp_ms, kind, n",
            )
            .map_err(Error::db(op))?;
        let rows = stmt
            .query_map([workflow_instance_id, workflow_instance_id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(Error::db(op))?;
        let mut out = Vec::new();
        for row in rows {
            let (task_id, task_instance_id, status, timestamp_ms) = row.map_err(Error::db(op))?;
            out.push(StatusChange {
                task: task_id.zip(task_instance_id),
                status: status.parse()?,
                timestamp_ms,
            });
        }
        Ok(out)
    }

    /// The most recently active workflow instances with their current
    /// status, newest first.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] for a limit of 0; [`Error::Db`].
    pub fn recent_workflows(&self, q: &RecentWorkflows) -> Result<Vec<WorkflowRun>> {
        if q.limit == 0 {
            return Err(Error::InvalidQuery("limit must be at least 1".into()));
        }
        let op = "reading recent workflows";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT workflow_id, workflow_instance_id, status, first_ms, last_ms FROM ( \
                     SELECT workflow_id, workflow_instance_id, \
                            arg_max(status::VARCHAR, (timestamp_ms, rowid)) AS status, \
                            min(timestamp_ms) AS first_ms, max(timestamp_ms) AS last_ms \
                     FROM workflow_run_status \
                     WHERE (?::VARCHAR IS NULL OR workflow_id = ?::VARCHAR) \
                     GROUP BY workflow_id, workflow_instance_id) \
                 WHERE (?::VARCHAR IS NULL OR status = ?::VARCHAR) \
                 ORDER BY last_ms DESC, workflow_instance_id DESC LIMIT ?",
            )
            .map_err(Error::db(op))?;
        let wf = q.workflow_id.as_deref();
        let st = q.status.map(RunStatus::as_str);
        let rows = stmt
            .query_map(params![wf, wf, st, st, q.limit as u64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(Error::db(op))?;
        let mut out = Vec::new();
        for row in rows {
            let (workflow_id, workflow_instance_id, status, first_ms, last_ms) = row.map_err(Error::db(op))?;
            out.push(WorkflowRun {
                workflow_id,
                workflow_instance_id,
                status: status.parse()?,
                first_ms,
                last_ms,
            });
        }
        Ok(out)
    }
}
