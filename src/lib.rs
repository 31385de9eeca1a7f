//! cdktr-logs: the logging bus and log store of cdktr, a distributed
//! workflow orchestrator.
//!
//! This facade re-exports the crates an embedder needs:
//!
//! - [`bus`] (`cdktr-log`): the message type, wire format, [`LogPublisher`],
//!   [`LogManager`] and [`LogSubscriber`].
//! - [`store`] (`cdktr-store`): the DuckDB log store.
//! - [`api`]: the principal's request/reply API and its [`ApiClient`], for
//!   agents and tools (no DuckDB needed).
//!
//! ```
//! use cdktr_logs::{BusConfig, Level, LogMessage};
//!
//! let config = BusConfig::default();
//! assert_eq!(config.listening_endpoint(), "tcp://127.0.0.1:5562");
//! assert_eq!("warning".parse::<Level>()?, Level::Warn);
//! # Ok::<(), cdktr_logs::bus::Error>(())
//! ```
//!
//! Talking to a running principal:
//!
//! ```no_run
//! use cdktr_logs::api::Request;
//! use cdktr_logs::{ApiClient, ApiConfig, LogQuery, RunStatus};
//!
//! let mut api = ApiClient::connect(&ApiConfig::from_env()?)?;
//! api.send(&Request::WorkflowStatusUpdate {
//!     workflow_id: "etl".into(),
//!     workflow_instance_id: "etl-20261127-1".into(),
//!     status: RunStatus::Running,
//!     timestamp_ms: None,
//! })?;
//! let page = api.query_logs(&LogQuery { workflow_instance_id: Some("etl-20261127-1".into()), ..LogQuery::default() })?;
//! # let _ = page;
//! # Ok::<(), cdktr_logs::bus::Error>(())
//! ```

pub use cdktr_log as bus;
pub use cdktr_log::api;
pub use cdktr_store as store;

pub use cdktr_log::{
    ApiClient, ApiConfig, BusConfig, Envelope, Level, LevelFilter, LogManager, LogMessage, LogPage, LogPublisher,
    LogQuery, LogSubscriber, Order, RecentWorkflows, RunStatus, StatusChange, TaskContext, TaskLogger, WorkflowRun,
};
