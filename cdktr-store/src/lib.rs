//! The cdktr log store: every log line and every status change of every
//! workflow run, in DuckDB (in memory or in one file), with older lines in
//! a Parquet archive that DuckDB's CLI, Python, R or Spark read while the
//! principal runs.
//!
//! - [`Store`] opens the database and keeps the schema (documented in
//!   `docs/schema.md`): `logstore`, `workflow_run_status`,
//!   `task_run_status`, all insert-only.
//! - [`Persister`] takes the log stream from the bus's `LogManager` and
//!   writes it in batches, retrying failed writes without losing a line.
//! - [`LogQuery`] is QueryLogs: time range, workflow, instance, task, level
//!   and payload filters, compiled to parameterized SQL.
//!   [`Store::read_page`] leaves a page's lines in DuckDB's result and
//!   lends them out ([`StoredPage::lines`]): no copy per string.
//! - Status history: [`Store::record_workflow_status`],
//!   [`Store::timeline`], [`Store::recent_workflows`].
//! - [`archive`]: lines past a hot retention move to Parquet files by day,
//!   crash-safe and exactly once; queries read hot and archived lines as one.
//! - [`Store::sql`]: one read-only statement, after [`Store::lock_down`]
//!   has closed the database to the outside.
//! - [`export`]: lines to a Parquet file, a page at a time.
//!
//! # Persist the stream and query it
//!
//! ```
//! use std::time::Duration;
//! use cdktr_log::{Envelope, Level, Line, LogMessage};
//! use cdktr_store::{LogQuery, Persister, PersisterConfig, Store};
//!
//! let store = Store::open_in_memory()?;
//! let persister = Persister::start(&store, PersisterConfig::default())?;
//! // In the principal, this sender is the LogManager's sink.
//! let sink = persister.sender();
//! let message = LogMessage {
//!     workflow_id: "etl".into(),
//!     workflow_name: "Nightly ETL".into(),
//!     workflow_instance_id: "etl-1".into(),
//!     task_name: "load".into(),
//!     task_instance_id: "load-1".into(),
//!     timestamp_ms: cdktr_log::message::now_ms(),
//!     level: Level::Error,
//!     payload: "connection refused".into(),
//! };
//! let line = Envelope { publisher_id: "agent-1".into(), seq: 1, replays: false, message };
//! sink.send(Line::from(line)).unwrap();
//!
//! // Batches are written every 30 s or 40,960 lines; don't wait for that.
//! persister.flush_now(Duration::from_secs(5))?;
//! let errors = store.query_logs(&LogQuery { workflow_id: Some("etl".into()), ..LogQuery::default() })?;
//! assert_eq!(errors[0].payload, "connection refused");
//! persister.shutdown()?;
//! # Ok::<(), cdktr_store::Error>(())
//! ```
//!
//! # Record and read status history
//!
//! ```
//! use cdktr_store::{RecentWorkflows, RunStatus, Store};
//!
//! let store = Store::open_in_memory()?;
//! store.record_workflow_status("etl", "etl-1", RunStatus::Running, 1_000)?;
//! store.record_task_status("extract", "extract-1", "etl-1", RunStatus::Running, 1_001)?;
//! store.record_task_status("extract", "extract-1", "etl-1", RunStatus::Completed, 2_000)?;
//! store.record_workflow_status("etl", "etl-1", RunStatus::Completed, 2_001)?;
//!
//! assert_eq!(store.latest_workflow_status("etl-1")?, Some((RunStatus::Completed, 2_001)));
//! assert_eq!(store.timeline("etl-1")?.len(), 4);
//! let recent = store.recent_workflows(&RecentWorkflows::default())?;
//! assert_eq!(recent[0].status, RunStatus::Completed);
//! # Ok::<(), cdktr_store::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod archive;
mod error;
pub mod export;
mod migrations;
pub mod persister;
pub mod query;
mod sql;
pub mod status;
mod store;

pub use cdktr_log::sql::{SqlColumn, SqlRows, SqlValue};
pub use duckdb::InterruptHandle;
pub use error::{Error, Result};
pub use migrations::INSTANCE_BLOCK_LINES;
pub use persister::{MinFreeSpace, Persister, PersisterConfig, PersisterStats};
pub use query::{Cursor, LevelFilter, Lines, LogPage, LogQuery, Order, Origin, PageLine, Snapshot, StoredPage};
pub use sql::HISTORY_VIEW;
pub use status::{RecentWorkflows, RunStatus, StatusChange, WorkflowRun};
pub use store::{Location, MemoryLimit, Store, ROW_GROUP_SIZE, SCHEMA_VERSION};
