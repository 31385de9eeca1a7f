//! cdktr-logs: the logging bus and log store of cdktr, a distributed
//! workflow orchestrator.
//!
//! This facade re-exports what an embedder needs, each part behind a
//! feature (all on by default):
//!
//! - [`bus`] (`cdktr-log`, always): the message type, wire format,
//!   [`LogPublisher`], [`LogManager`] and [`LogSubscriber`], and [`api`],
//!   the principal's request/reply API with its [`ApiClient`].
//! - [`store`] (`store`, `cdktr-store`): the DuckDB log store.
//! - [`principal`] (`principal`, `cdktr-principal`): bus, store and API
//!   server in one process, as the `cdktr-principal` binary runs them.
//! - [`agent`] (`agent`, `cdktr-agent`): runs workflow tasks and streams
//!   their output, as the `cdktr-agent` binary does.
//! - `cli`: the `cdktr-logs` binary. With `--no-default-features
//!   --features cli` it builds without DuckDB.
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
//! use cdktr_logs::{ApiClient, ApiConfig, LogQuery, RunStatus};
//!
//! let mut api = ApiClient::connect(&ApiConfig::from_env()?)?;
//! api.record_workflow_status("etl", "etl-20261127-1", RunStatus::Running, None)?;
//! let query = LogQuery { workflow_instance_id: Some("etl-20261127-1".into()), ..LogQuery::default() };
//! for page in api.pages(query) {
//!     for line in page?.lines {
//!         println!("{}", line.display());
//!     }
//! }
//! # Ok::<(), cdktr_logs::bus::Error>(())
//! ```
//!
//! Running a principal inside your own program:
//!
//! ```
//! # #[cfg(feature = "principal")] {
//! use cdktr_logs::principal::Principal;
//! use cdktr_logs::store::Location;
//! use cdktr_logs::{ApiConfig, BusConfig};
//!
//! let principal = Principal::builder()
//!     .bus(BusConfig { host: "127.0.0.1".into(), listening_port: 0, publishing_port: 0 })
//!     .api(ApiConfig { host: "127.0.0.1".into(), port: 0 })
//!     .database(Location::Memory)
//!     .start()?;
//! principal.shutdown()?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

#[cfg(feature = "agent")]
pub use cdktr_agent as agent;
pub use cdktr_log as bus;
pub use cdktr_log::api;
#[cfg(feature = "principal")]
pub use cdktr_principal as principal;
#[cfg(feature = "store")]
pub use cdktr_store as store;

pub use cdktr_log::{
    ApiClient, ApiConfig, BusConfig, Envelope, Level, LevelFilter, Line, LogManager, LogMessage, LogPage, LogPublisher,
    LogQuery, LogSubscriber, Order, RecentWorkflows, RunStatus, StatusChange, TaskContext, TaskLogger, WorkflowRun,
};
