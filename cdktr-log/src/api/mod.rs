//! The principal's request/reply API: the protocol, and (with the
//! `sockets` feature) a client.
//!
//! One request, one reply, each a single MessagePack map (`docs/api.md`
//! specifies the bytes for callers in other languages). Requests name their
//! operation in `"op"`, replies their kind in `"reply"`. A request the
//! principal cannot serve gets a [`Response::Error`], never silence.
//!
//! ```no_run
//! use cdktr_log::api::ApiClient;
//! use cdktr_log::config::ApiConfig;
//! use cdktr_log::query::LogQuery;
//!
//! let mut client = ApiClient::connect(&ApiConfig::from_env()?)?;
//! let page = client.query_logs(&LogQuery { workflow_id: Some("etl".into()), ..LogQuery::default() })?;
//! for line in &page.lines {
//!     println!("{}", line.display());
//! }
//! # Ok::<(), cdktr_log::Error>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::message::{LogMessage, MessageRef};
use crate::query::{Cursor, LogPage, LogQuery, PageLine, Snapshot};
use crate::sql::SqlRows;
use crate::status::{RecentWorkflows, RunStatus, StatusChange, WorkflowRun};

mod check;
#[cfg(feature = "sockets")]
mod client;
mod logs;
#[cfg(feature = "sockets")]
mod page;
#[cfg(feature = "sockets")]
mod poller;
#[cfg(feature = "sockets")]
pub use client::{ApiClient, Pages};
#[cfg(feature = "sockets")]
pub use page::ReplyPage;
#[cfg(feature = "sockets")]
pub use poller::{LazyClient, Poller};

/// The protocol version a principal reports in [`Response::Pong`].
pub const API_VERSION: u32 = 1;
/// Largest request the principal reads; a larger one closes the connection.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most log lines in one [`Response::Logs`] page, whatever the query's
/// limit.
pub const MAX_PAGE_LINES: usize = 10_000;
/// A page stops adding lines once it holds this many bytes of text (it
/// always holds at least one line).
pub const MAX_PAGE_BYTES: usize = 8 << 20;
/// How long [`ApiClient`] waits for a reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`Response::Logs`] writes each line and origin (`docs/api.md`,
/// "Replies"). Arrays leave out the field names, nearly half of a page's
/// bytes: less to send, write and read (`docs/performance.md`, session 15).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Layout {
    /// A line is a map of its fields, an origin a map: what a client that
    /// does not ask gets.
    #[default]
    Maps,
    /// A line is an array of its eight fields, an origin an array
    /// `[publisher_id, seq]`, in the order `docs/api.md` gives. What
    /// [`ApiClient`] asks for.
    Arrays,
}

impl Layout {
    fn is_maps(&self) -> bool {
        *self == Layout::Maps
    }
}

/// A request to the principal. On the wire: a map whose `"op"` is the
/// variant's name, with the variant's fields beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Request {
    /// Is the principal there? Replies [`Response::Pong`].
    Ping {},
    /// One page of stored logs; replies [`Response::Logs`]. The query's
    /// `limit` is the page size (at most [`MAX_PAGE_LINES`]); pass the
    /// reply's `next` as the query's `after` for the following page.
    QueryLogs {
        /// The query.
        query: LogQuery,
        /// How the reply writes each line; left out when [`Layout::Maps`],
        /// so that such a request is what it was before the field.
        #[serde(default, skip_serializing_if = "Layout::is_maps")]
        layout: Layout,
    },
    /// Pins the stored history for a follower; replies
    /// [`Response::Snapshot`]. Every line the principal had received when
    /// the request came is written first; then `row` names the newest
    /// stored row, and `persisted` the highest number per publisher among
    /// the stored lines `query` matches (its limit, order, `after` and
    /// `as_of` aside). See [`Snapshot`].
    Snapshot {
        /// The follower's filters.
        query: LogQuery,
    },
    /// Runs one read-only SQL statement over the database and its archive
    /// (the `log_history` view holds every line, hot and archived);
    /// replies [`Response::Rows`]. A statement that would write, attach,
    /// copy, load, change a setting or read a file outside the archive,
    /// and more than one statement, get [`ErrorKind::Forbidden`].
    Sql {
        /// The statement.
        sql: String,
        /// Most rows to return (at most [`crate::sql::MAX_SQL_ROWS`], the
        /// default).
        #[serde(default)]
        max_rows: Option<u64>,
    },
    /// How many stored lines a query matches (its limit, order and `after`
    /// aside); replies [`Response::Count`].
    CountLogs {
        /// The query.
        query: LogQuery,
    },
    /// The most recently active workflow instances; replies
    /// [`Response::Workflows`]. The filter's fields sit beside `"op"`.
    GetRecentWorkflowStatuses(RecentWorkflows),
    /// Every status change of one instance and its tasks; replies
    /// [`Response::Timeline`].
    GetWorkflowTimeline {
        /// The instance.
        workflow_instance_id: String,
    },
    /// An agent records a workflow instance's status; replies
    /// [`Response::Accepted`] once it is in the database.
    WorkflowStatusUpdate {
        /// The workflow definition.
        workflow_id: String,
        /// The instance.
        workflow_instance_id: String,
        /// The new status.
        status: RunStatus,
        /// When it changed (ms since the epoch); the principal's clock if
        /// absent.
        #[serde(default)]
        timestamp_ms: Option<i64>,
    },
    /// An agent records a task instance's status; replies
    /// [`Response::Accepted`] once it is in the database.
    TaskStatusUpdate {
        /// The task's id in the workflow definition.
        task_id: String,
        /// The task instance.
        task_instance_id: String,
        /// The workflow instance it belongs to.
        workflow_instance_id: String,
        /// The new status.
        status: RunStatus,
        /// When it changed (ms since the epoch); the principal's clock if
        /// absent.
        #[serde(default)]
        timestamp_ms: Option<i64>,
    },
    /// An agent is alive and running these workflow instances; replies
    /// [`Response::Accepted`]. An agent silent for the heartbeat timeout
    /// has each instance still unfinished marked CRASHED.
    Heartbeat {
        /// The agent, unique among live agents.
        agent_id: String,
        /// The workflow instance ids it is running.
        #[serde(default)]
        running: Vec<String>,
    },
    /// The highest sequence number of a publisher that is safely in the
    /// database; replies [`Response::Watermark`].
    GetPublisherWatermark {
        /// The publisher.
        publisher_id: String,
        /// Write what is pending now rather than at the next flush
        /// interval: the publisher is waiting on it (shutting down, or at
        /// its memory cap). Default false.
        #[serde(default)]
        flush: bool,
    },
    /// Lines `first..=last` of a replaying publisher are gone for good
    /// (its spool was torn when it was killed); replies
    /// [`Response::Accepted`]. The principal records them as lost and takes
    /// the lines after them, once it has every line before `first`.
    DeclareLost {
        /// The publisher.
        publisher_id: String,
        /// The first lost sequence number, from 1.
        first: u64,
        /// The last lost sequence number, at least `first`.
        last: u64,
    },
    /// Every counter of the principal; replies [`Response::Stats`].
    Stats {},
}

impl Request {
    /// The operation's name, as in `"op"`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping {} => "Ping",
            Request::QueryLogs { .. } => "QueryLogs",
            Request::Snapshot { .. } => "Snapshot",
            Request::Sql { .. } => "Sql",
            Request::CountLogs { .. } => "CountLogs",
            Request::GetRecentWorkflowStatuses(_) => "GetRecentWorkflowStatuses",
            Request::GetWorkflowTimeline { .. } => "GetWorkflowTimeline",
            Request::WorkflowStatusUpdate { .. } => "WorkflowStatusUpdate",
            Request::TaskStatusUpdate { .. } => "TaskStatusUpdate",
            Request::Heartbeat { .. } => "Heartbeat",
            Request::GetPublisherWatermark { .. } => "GetPublisherWatermark",
            Request::DeclareLost { .. } => "DeclareLost",
            Request::Stats {} => "Stats",
        }
    }

    /// Every operation's name.
    pub const OPS: [&'static str; 13] = [
        "Ping",
        "QueryLogs",
        "Snapshot",
        "Sql",
        "CountLogs",
        "GetRecentWorkflowStatuses",
        "GetWorkflowTimeline",
        "WorkflowStatusUpdate",
        "TaskStatusUpdate",
        "Heartbeat",
        "GetPublisherWatermark",
        "DeclareLost",
        "Stats",
    ];

    /// The request as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a Request always serializes")
    }

    /// Reads a request, saying precisely what is wrong with a bad one: the
    /// error is the kind and message of the [`Response::Error`] to send back.
    /// It accepts exactly what `docs/api.md` says: one map with `str` keys
    /// and nothing after it, strings as `str` (never `bin`), maps where the
    /// documents say map.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Request, (ErrorKind, String)> {
        let op = check::request_op(bytes).map_err(|r| (r.kind, r.message))?;
        if !Request::OPS.contains(&op) {
            return Err((
                ErrorKind::UnknownOp,
                format!("unknown op {op:?}; known: {}", Request::OPS.join(", ")),
            ));
        }
        rmp_serde::from_slice(bytes).map_err(|e| (ErrorKind::Invalid, format!("{op}: {e}")))
    }
}

/// Every counter of a principal, as [`Request::Stats`] returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrincipalStats {
    /// Log messages received from publishers.
    pub received: u64,
    /// Log messages republished to subscribers.
    pub forwarded: u64,
    /// Re-sent log messages given to the store but not republished.
    pub replayed: u64,
    /// Malformed log messages dropped.
    pub rejected: u64,
    /// Log lines written to the database.
    pub persisted: u64,
    /// Log lines received but not written yet.
    pub pending: u64,
    /// Re-sent log lines dropped because they were already taken.
    pub duplicates: u64,
    /// Lines of replaying publishers dropped after a gap, awaiting the
    /// re-send.
    pub gaps: u64,
    /// Lines their publishers declared lost for good (recorded in
    /// `publisher_gap`).
    pub declared_lost: u64,
    /// Lines shed while writes failed and the persister was full.
    pub shed: u64,
    /// Batch writes that failed (and were kept for retry).
    pub failed_flushes: u64,
    /// Batch writes that succeeded.
    pub batches: u64,
    /// The longest a batch write has taken, in ms (DuckDB checkpoints
    /// included).
    pub slowest_write_ms: u64,
    /// How long, in all, the log manager waited for the store to take lines
    /// (its queue full), in ms: meanwhile lines wait at the publishers, and
    /// the live stream waits too.
    pub store_waited_ms: u64,
    /// Times the database was opened again after DuckDB invalidated it.
    pub reopened: u64,
    /// Writes are paused: the database's filesystem is under the free
    /// space the principal keeps (`CDKTR_DB_MIN_FREE_SPACE`).
    pub space_low: bool,
    /// Free bytes on the database's filesystem (0 for `:memory:`).
    pub free_space_bytes: u64,
    /// Connections to the log port open now.
    pub connections: u64,
    /// Connections to the log port that closed (a publisher stopped, or
    /// sent a frame over twice the message limit).
    pub disconnects: u64,
    /// The log port is not listening: the principal is short of file
    /// descriptors (it logs a warning, and listens again when some close).
    pub refusing_connections: bool,
    /// Times the log port stopped listening for want of file descriptors.
    pub listener_pauses: u64,
    /// Publisher ids that two live publishers appear to share (logged).
    pub shared_ids: u64,
    /// Parquet files in the archive now.
    pub archive_files: u64,
    /// Log lines in the archive now (moved out of DuckDB, not yet past
    /// the archive's retention).
    pub archived_lines: u64,
    /// Archiver passes that failed (each logged with why; retried at the
    /// next check).
    pub archive_failures: u64,
    /// Agents whose heartbeats are current.
    pub live_agents: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// CRASHED rows written for silent agents' instances.
    pub crashed: u64,
    /// API requests served.
    pub requests: u64,
    /// API requests answered with an error.
    pub request_errors: u64,
    /// Milliseconds since the principal started.
    pub uptime_ms: u64,
    /// The principal's resident memory now, in bytes (0 where unknown).
    pub rss_bytes: u64,
    /// The most resident memory the principal has used, in bytes.
    pub peak_rss_bytes: u64,
    /// CPU time the principal has used, user and system, in ms (0 where
    /// unknown): over an interval, with the lines persisted, what a line
    /// costs a core.
    pub cpu_ms: u64,
    /// With CURVE: connections refused at the handshake (unknown key, or
    /// a role not allowed on that socket) and requests refused for the
    /// caller's role or a removed key.
    pub refused: u64,
}

/// A reply from the principal. On the wire: a map whose `"reply"` is the
/// variant's name, with the variant's fields beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply")]
pub enum Response {
    /// To [`Request::Ping`].
    Pong {
        /// [`API_VERSION`] of the principal.
        api: u32,
        /// The principal's crate version.
        version: String,
    },
    /// To [`Request::QueryLogs`]: `lines` and `next` beside `"reply"`.
    Logs(LogPage),
    /// To [`Request::Snapshot`]: `row` and `persisted` beside `"reply"`.
    Snapshot(Snapshot),
    /// To [`Request::Sql`]: `columns`, `rows` and `truncated` beside
    /// `"reply"`.
    Rows(SqlRows),
    /// To [`Request::CountLogs`].
    Count {
        /// Lines matched.
        count: u64,
    },
    /// To [`Request::GetRecentWorkflowStatuses`], newest first.
    Workflows {
        /// The instances.
        runs: Vec<WorkflowRun>,
    },
    /// To [`Request::GetWorkflowTimeline`], in time order.
    Timeline {
        /// The changes; empty for an unknown instance.
        changes: Vec<StatusChange>,
    },
    /// To a status update or heartbeat: recorded.
    Accepted,
    /// To [`Request::GetPublisherWatermark`].
    Watermark {
        /// The publisher asked about.
        publisher_id: String,
        /// Its highest persisted sequence number; 0 when none is.
        seq: u64,
        /// Its highest sequence number received and kept, persisted or not.
        #[serde(default)]
        accepted: u64,
    },
    /// To [`Request::Stats`].
    Stats(PrincipalStats),
    /// The request was refused.
    Error {
        /// Why, as a machine-readable kind.
        kind: ErrorKind,
        /// Why, for people.
        message: String,
    },
}

impl Response {
    /// An error reply.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }

    /// The reply as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Response::Logs(page) => {
                let text: usize = page.lines.iter().map(LogMessage::text_bytes).sum();
                logs::write(
                    page.lines.iter().map(MessageRef::from),
                    page.origins
                        .iter()
                        .map(|o| o.as_ref().map(|o| (o.publisher_id.as_str(), o.seq))),
                    page.next,
                    Layout::Maps,
                    text,
                )
            }
            _ => rmp_serde::encode::to_vec_named(self).expect("a Response always serializes"),
        }
    }

    /// The bytes of `Response::Logs` for a page of `lines` (each with its
    /// origin) and `next` in `layout`, written from borrowed rows: what a
    /// server sends without building a [`LogPage`] of owned strings.
    /// ([`to_bytes`](Self::to_bytes) writes [`Layout::Maps`].)
    ///
    /// # Panics
    /// With 2^32 lines or more (a page holds at most [`MAX_PAGE_LINES`]).
    pub fn logs_bytes(lines: &[PageLine<'_>], next: Option<Cursor>, layout: Layout) -> Vec<u8> {
        let text: usize = lines.iter().map(|l| l.message.text_bytes()).sum();
        logs::write(
            lines.iter().map(|l| l.message),
            lines.iter().map(|l| l.origin),
            next,
            layout,
            text,
        )
    }

    /// Reads a reply; a `Logs` reply in either [`Layout`].
    ///
    /// # Errors
    /// [`Error::Reply`] for bytes that are not a reply.
    pub fn from_bytes(bytes: &[u8]) -> Result<Response> {
        logs::read(bytes).unwrap_or_else(|| {
            match rmp_serde::from_slice(bytes).map_err(|e| Error::Reply(e.to_string()))? {
                Response::Logs(page) => logs::checked(page).map(Response::Logs),
                other => Ok(other),
            }
        })
    }

    /// The variant's name, as `"reply"` gives it on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Pong { .. } => "Pong",
            Response::Logs(_) => "Logs",
            Response::Snapshot(_) => "Snapshot",
            Response::Rows(_) => "Rows",
            Response::Count { .. } => "Count",
            Response::Workflows { .. } => "Workflows",
            Response::Timeline { .. } => "Timeline",
            Response::Accepted => "Accepted",
            Response::Watermark { .. } => "Watermark",
            Response::Stats(_) => "Stats",
            Response::Error { .. } => "Error",
        }
    }
}

#[cfg(test)]
mod tests;
