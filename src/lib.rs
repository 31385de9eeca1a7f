//! cdktr-logs: the logging bus and log store of cdktr, a distributed
//! workflow orchestrator.
//!
//! This facade re-exports the crates an embedder needs:
//!
//! - [`bus`] (`cdktr-log`): the message type, wire format, [`LogPublisher`],
//!   [`LogManager`] and [`LogSubscriber`].
//! - [`store`] (`cdktr-store`): the DuckDB log store.
//!
//! ```
//! use cdktr_logs::{BusConfig, Level, LogMessage};
//!
//! let config = BusConfig::default();
//! assert_eq!(config.listening_endpoint(), "tcp://127.0.0.1:5562");
//! assert_eq!("warning".parse::<Level>()?, Level::Warn);
//! # Ok::<(), cdktr_logs::bus::Error>(())
//! ```

pub use cdktr_log as bus;
pub use cdktr_store as store;

pub use cdktr_log::{
    BusConfig, Envelope, Level, LogManager, LogMessage, LogPublisher, LogSubscriber, TaskContext, TaskLogger,
};
