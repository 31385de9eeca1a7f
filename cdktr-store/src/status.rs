//! Workflow and task status history: insert-only, one row per change.

use duckdb::params;

pub use cdktr_log::status::{RecentWorkflows, RunStatus, StatusChange, WorkflowRun};

use crate::error::{Error, Result};
use crate::store::Store;

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
                Ok(Some((parse_status(status)?, ts)))
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
                status: parse_status(status)?,
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
                status: parse_status(status)?,
                first_ms,
                last_ms,
            });
        }
        Ok(out)
    }

    /// Workflow instances whose current status is RUNNING or WAITING: what
    /// a principal that restarted must hear about from some agent.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn unfinished_workflows(&self) -> Result<Vec<String>> {
        let op = "reading unfinished workflows";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT workflow_instance_id FROM ( \
                     SELECT workflow_instance_id, arg_max(status::VARCHAR, (timestamp_ms, rowid)) AS status \
                     FROM workflow_run_status GROUP BY workflow_instance_id) \
                 WHERE status IN ('RUNNING', 'WAITING') ORDER BY workflow_instance_id",
            )
            .map_err(Error::db(op))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(Error::db(op))?;
        rows.collect::<duckdb::Result<Vec<_>>>().map_err(Error::db(op))
    }

    /// Records that a workflow instance's agent died: one CRASHED row for
    /// the instance, and one for each of its tasks not yet finished, all in
    /// one transaction. Does nothing, and returns false, for an instance
    /// that is unknown or already finished, so calling it twice writes one
    /// row. The rows are stamped `now_ms`, or just after the instance's
    /// latest change if that is later (a skewed agent clock), so CRASHED is
    /// always the current status.
    ///
    /// # Errors
    /// [`Error::Db`]; nothing is written then.
    pub fn mark_crashed(&self, workflow_instance_id: &str, now_ms: i64) -> Result<bool> {
        let op = "marking a workflow crashed";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(Error::db(op))?;
        let latest = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT workflow_id, status::VARCHAR, timestamp_ms FROM workflow_run_status \
                     WHERE workflow_instance_id = ? ORDER BY timestamp_ms DESC, rowid DESC LIMIT 1",
                )
                .map_err(Error::db(op))?;
            let mut rows = stmt
                .query_map([workflow_instance_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(Error::db(op))?;
            rows.next().transpose().map_err(Error::db(op))?
        };
        let Some((workflow_id, status, last_ms)) = latest else {
            return Ok(false);
        };
        if parse_status(status)?.is_final() {
            return Ok(false);
        }
        let at = now_ms.max(last_ms + 1);
        tx.execute(
            "INSERT INTO workflow_run_status VALUES (?, ?, 'CRASHED', ?)",
            params![workflow_id, workflow_instance_id, at],
        )
        .map_err(Error::db(op))?;
        tx.execute(
            "INSERT INTO task_run_status \
             SELECT task_id, task_instance_id, workflow_instance_id, 'CRASHED', greatest(?, last_ms + 1) FROM ( \
                 SELECT task_id, task_instance_id, workflow_instance_id, \
                        arg_max(status::VARCHAR, (timestamp_ms, rowid)) AS status, max(timestamp_ms) AS last_ms \
                 FROM task_run_status WHERE workflow_instance_id = ? \
                 GROUP BY task_id, task_instance_id, workflow_instance_id) \
             WHERE status NOT IN ('COMPLETED', 'FAILED', 'CRASHED')",
            params![at, workflow_instance_id],
        )
        .map_err(Error::db(op))?;
        tx.commit().map_err(Error::db(op))?;
        Ok(true)
    }
}

/// Only this crate writes the ENUM column, so an unknown name means a
/// newer schema or a hand-edited file.
fn parse_status(s: String) -> Result<RunStatus> {
    s.parse().map_err(|_| Error::UnknownStatus(s))
}
