//! The cdktr log bus: how a workflow task's log lines travel, in real time,
//! from the agents that run tasks to the principal and on to whoever watches.
//!
//! - Agents hold a [`LogPublisher`] (a ZeroMQ PUSH socket driven by a
//!   background thread) and write through per-task [`TaskLogger`]s. With
//!   acknowledged delivery it keeps every line until the principal has
//!   stored it, and re-sends what was lost (`docs/delivery.md`).
//! - The principal runs a [`LogManager`]: it PULLs from every agent,
//!   republishes each message on a PUB socket, and hands it, without loss,
//!   to in-process sinks such as the store's Persister.
//! - Anyone can follow the stream with a [`LogSubscriber`], filtered by
//!   exact workflow id; a [`LogFollower`] joins a run's stored history to
//!   its live lines with none missing or repeated, across principal
//!   restarts (the CLI's `tail -n` and the TUI use it).
//! - The principal's request/reply API ([`api`], `docs/api.md`): agents
//!   record statuses and heartbeats, tools query logs with [`LogQuery`],
//!   through an [`ApiClient`]. Its types live here, not in the store, so
//!   that agents and tools never link DuckDB.
//! - Beyond one machine, every socket uses CURVE ([`curve`]): the principal
//!   admits only keys it holds, each with a role; clients pass their keys
//!   to each builder (`.curve(keys)`).
//!
//! Every component is synchronous and thread-based; each has a handle that
//! shuts it down cleanly and joins its thread, also on drop. The bytes on
//! the wire are specified in `docs/wire-format.md` so that other languages
//! can publish and subscribe too.
//!
//! # Publish, forward, subscribe
//!
//! ```
//! use std::time::Duration;
//! use cdktr_log::{BusConfig, LogManager, LogPublisher, LogSubscriber, TaskContext};
//!
//! // Port 0 binds free ports; `manager.config()` says which.
//! let config = BusConfig { host: "127.0.0.1".into(), listening_port: 0, publishing_port: 0 };
//! let (sink, persisted) = crossbeam_channel::bounded(1024);
//! let manager = LogManager::builder(&config).sink(sink).start()?;
//! let mut watcher = LogSubscriber::builder(manager.config()).workflow("etl").connect()?;
//!
//! let publisher = LogPublisher::connect(manager.config())?;
//! let log = publisher.task_logger(TaskContext {
//!     workflow_id: "etl".into(),
//!     workflow_name: "Nightly ETL".into(),
//!     workflow_instance_id: "etl-1".into(),
//!     task_name: "extract".into(),
//!     task_instance_id: "extract-1".into(),
//! });
//! log.info("extracted 10 rows")?;
//!
//! // Sinks see every message; the subscriber sees those sent after it joined.
//! let line = persisted.recv_timeout(Duration::from_secs(10)).unwrap();
//! assert_eq!(line.payload(), "extracted 10 rows");
//! assert_eq!(line.seq, 1);
//! # let _ = watcher.recv_timeout(Duration::from_millis(10))?;
//! publisher.shutdown()?;
//! manager.shutdown()?;
//! # Ok::<(), cdktr_log::Error>(())
//! ```
//!
//! # With CURVE keys
//!
//! ```no_run
//! use cdktr_log::curve::{Authorizer, ClientKeys, KeyPair};
//! use cdktr_log::{BusConfig, LogManager, LogPublisher};
//!
//! // The principal's side: its pair, and a directory of allowed keys.
//! let auth = Authorizer::new(KeyPair::read("/etc/cdktr/principal.key".as_ref())?, "/etc/cdktr/authorized")?;
//! let (sink, _stored) = crossbeam_channel::bounded(1024);
//! let manager = LogManager::builder(&BusConfig::from_env()?).sink(sink).curve(auth).start()?;
//!
//! // An agent's side: its pair and the principal's public key.
//! let keys = ClientKeys::read("agent-7.key".as_ref(), "principal.pub".as_ref())?;
//! let publisher = LogPublisher::builder(manager.config()).curve(keys).start()?;
//! # Ok::<(), cdktr_log::Error>(())
//! ```
//!
//! # Configuration
//!
//! [`BusConfig::from_env`] reads `CDKTR_PRINCIPAL_HOST` (default
//! `127.0.0.1`), `CDKTR_LOGS_LISTENING_PORT` (5562) and
//! `CDKTR_LOGS_PUBLISHING_PORT` (5563); [`ApiConfig::from_env`] reads the
//! host and `CDKTR_PRINCIPAL_PORT` (5561).
//!
//! # Features
//!
//! - `sockets` (default): the ZeroMQ parts, [`LogPublisher`],
//!   [`LogManager`], [`LogSubscriber`] and [`ApiClient`]. Without it the
//!   crate is the protocol alone (messages, the wire codec, queries,
//!   statuses, API requests and replies) and builds no libzmq; the store
//!   uses it that way.
//! - `curve` (off here; on in the facade and the binaries): libzmq built
//!   with libsodium, so that [`curve`] keys work; outside this repository
//!   it needs the `.cargo/config.toml` table of the README's "Security".
//! - `tracing` (off by default): the `tracing` module, a
//!   `tracing_subscriber` layer that publishes events with the workflow
//!   context of their spans, and its flushing guard.
//! - `testing`: helpers for this workspace's tests (free ports, finding
//!   the workspace's binaries).
#![warn(missing_docs, missing_debug_implementations)]

pub mod api;
pub mod budget;
pub mod config;
mod error;
pub mod message;
pub mod query;
pub mod sql;
pub mod stats;
pub mod status;
pub mod wire;

#[cfg(feature = "sockets")]
pub mod curve;
#[cfg(feature = "sockets")]
pub mod follower;
#[cfg(feature = "sockets")]
mod inbox;
#[cfg(feature = "sockets")]
pub mod manager;
#[cfg(feature = "sockets")]
pub mod publisher;
#[cfg(feature = "sockets")]
pub mod subscriber;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tracing")]
pub mod tracing;

pub use config::{ApiConfig, BusConfig};
pub use error::{Error, ErrorKind, Result};
pub use message::{Level, LogMessage};
pub use query::{LevelFilter, LogPage, LogQuery, Order, Origin, PageLine, Snapshot};
pub use status::{RecentWorkflows, RunStatus, StatusChange, WorkflowRun};
pub use wire::{Envelope, Line};

#[cfg(feature = "sockets")]
pub use api::ApiClient;
#[cfg(feature = "sockets")]
pub use follower::{Followed, History, LogFollower};
#[cfg(feature = "sockets")]
pub use manager::{LogManager, ManagerBuilder, ManagerStats};
#[cfg(feature = "sockets")]
pub use publisher::{LogPublisher, PublisherBuilder, PublisherStats, TaskContext, TaskLogger};
#[cfg(feature = "sockets")]
pub use subscriber::{LogSubscriber, SubscriberBuilder};
