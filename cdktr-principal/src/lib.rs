//! The cdktr principal: the log bus, the log store and the API wired into
//! one process. The [`cdktr_log::LogManager`] receives every
//! agent's lines and hands each, without loss, to the
//! [`cdktr_store::Persister`], which batches them into DuckDB;
//! the API server (`docs/api.md`) answers queries and records the agents'
//! status updates and heartbeats, marking CRASHED what a silent agent ran.
//!
//! ```
//! use cdktr_log::{ApiClient, ApiConfig, BusConfig};
//! use cdktr_principal::Principal;
//! use cdktr_store::Location;
//!
//! // Port 0 binds free ports; the handle says which.
//! let bus = BusConfig { host: "127.0.0.1".into(), listening_port: 0, publishing_port: 0 };
//! let api = ApiConfig { host: "127.0.0.1".into(), port: 0 };
//! let principal = Principal::builder().bus(bus).api(api).database(Location::Memory).start()?;
//! println!("agents push to {}", principal.bus().listening_endpoint());
//!
//! let mut client = ApiClient::connect(&principal.api_config())?;
//! assert_eq!(client.ping()?.0, cdktr_log::api::API_VERSION);
//! let summary = principal.shutdown()?;
//! assert_eq!(summary.received, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

mod builder;
mod error;
mod liveness;
mod queries;
mod security;
mod server;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cdktr_log::api::PrincipalStats;
use cdktr_log::{ApiConfig, LogManager};
use cdktr_store::{Persister, Store};

pub use builder::PrincipalBuilder;
pub use error::{Error, Result};
pub use liveness::{DEFAULT_HEARTBEAT_TIMEOUT, ENV_HEARTBEAT_TIMEOUT_MS};
pub use queries::{DEFAULT_QUERY_TIMEOUT, ENV_QUERY_TIMEOUT_MS};
pub use security::Security;

/// DuckDB's buffer memory for a file database unless told otherwise. 64 MB
/// was tried and is too little: a 10,000-line page of a 1M-line instance
/// failed with "Out of Memory" while 50k lines/s were being written
/// (`docs/performance.md`, "Following").
pub const DEFAULT_FILE_MEMORY_LIMIT: &str = "128MB";

/// Env var naming the database file (`:memory:` for in memory).
pub const ENV_DB_PATH: &str = "CDKTR_DB_PATH";
/// Env var capping DuckDB's buffer memory (a DuckDB size, e.g. `1GB`).
pub const ENV_DB_MEMORY_LIMIT: &str = "CDKTR_DB_MEMORY_LIMIT";
/// Env var setting how much write-ahead log DuckDB gathers before it
/// checkpoints (a DuckDB size; DuckDB's default, `16MB`, unless set).
pub const ENV_DB_CHECKPOINT_THRESHOLD: &str = "CDKTR_DB_CHECKPOINT_THRESHOLD";
/// Env var setting DuckDB's thread count (default [`default_db_threads`]).
pub const ENV_DB_THREADS: &str = "CDKTR_DB_THREADS";

/// DuckDB's threads unless told otherwise: one fewer than the cores this
/// process may use, at least one (which means no worker thread: each
/// caller runs its own statement). With DuckDB's own default, one per
/// core, a write's pipeline went to a worker while the writer spun waiting
/// for it, so a write took two cores; on 2 cores one thread stored 14%
/// more lines a second and the live tail kept its core (`docs/performance.md`,
/// "DuckDB's threads and the byte budget", issue 15).
pub fn default_db_threads() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores.saturating_sub(1).max(1)).unwrap_or(u32::MAX)
}

/// The default database file: `$HOME/.cdktr/app.db`.
pub fn default_db_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cdktr").join("app.db")
}

/// The running principal; [`shutdown`](Self::shutdown) stops it without
/// losing an accepted line.
#[must_use = "dropping the principal stops it"]
pub struct Principal {
    store: Store,
    archiver: Option<cdktr_store::archive::Archiver>,
    persister: Arc<Persister>,
    manager: Arc<LogManager>,
    server: server::Server,
    api: ApiConfig,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("bus", self.manager.config())
            .field("api", &self.api)
            .field("database", self.store.location())
            .finish_non_exhaustive()
    }
}

/// What a principal did, reported at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages received from agents.
    pub received: u64,
    /// Malformed messages dropped.
    pub rejected: u64,
    /// Rows written to the database.
    pub persisted: u64,
    /// Re-sent messages dropped as duplicates.
    pub duplicates: u64,
}

impl Principal {
    /// A builder with the defaults.
    pub fn builder() -> PrincipalBuilder {
        PrincipalBuilder::new()
    }

    /// The bus as bound (with the actual ports when 0 was asked for).
    pub fn bus(&self) -> &LogManager {
        &self.manager
    }

    /// The API as bound (with the actual port when 0 was asked for).
    pub fn api_config(&self) -> ApiConfig {
        self.api.clone()
    }

    /// `tcp://host:port` of the API.
    pub fn api_endpoint(&self) -> &str {
        self.server.endpoint()
    }

    /// Every counter, as the API's Stats request returns them.
    pub fn stats(&self) -> PrincipalStats {
        self.server.stats(&self.manager, &self.persister, &self.store)
    }

    /// Where the database lives.
    pub fn database(&self) -> &cdktr_store::Location {
        self.store.location()
    }

    /// The store, for queries and status history.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The persister, for its counters and `flush_now`.
    pub fn persister(&self) -> &Persister {
        &self.persister
    }

    /// Runs a log query that sees every line the persister has received,
    /// written or not: pending lines are flushed first (nothing is written
    /// when none are pending). This is how a line is queryable within a moment of its
    /// arrival although batches are otherwise written every 30 s; frequent
    /// queries only make the batches smaller.
    ///
    /// If the database is failing writes, the query still runs and sees
    /// what is written; the pending lines stay pending and are retried.
    ///
    /// # Errors
    /// [`Error::Store`] for an invalid query or a failing read.
    pub fn query_logs(&self, query: &cdktr_store::LogQuery) -> Result<Vec<cdktr_log::LogMessage>> {
        if let Err(e) = self.persister.flush_now(Duration::from_secs(10)) {
            log::warn!("query: pending lines could not be written first: {e}");
        }
        Ok(self.store.query_logs(query)?)
    }

    /// Counters as of now.
    pub fn summary(&self) -> Summary {
        let (m, p) = (self.manager.stats(), self.persister.stats());
        Summary {
            received: m.received,
            rejected: m.rejected,
            persisted: p.persisted,
            duplicates: p.duplicates,
        }
    }

    /// Stops the API (answering the queries it took), then the bus
    /// (forwarding everything received), then the persister (writing
    /// everything), and closes the database.
    ///
    /// # Errors
    /// [`Error::Store`] if accepted lines could not be written.
    pub fn shutdown(self) -> Result<Summary> {
        let Principal {
            store,
            archiver,
            persister,
            manager,
            mut server,
            api: _,
        } = self;
        server.stop();
        drop(server);
        if let Some(a) = archiver {
            a.shutdown();
        }
        // The server's threads held the only other references.
        let m = match Arc::try_unwrap(manager) {
            Ok(manager) => manager.shutdown()?,
            Err(shared) => shared.stats(),
        };
        let p = match Arc::try_unwrap(persister) {
            Ok(persister) => persister.shutdown()?,
            Err(shared) => shared.stats(),
        };
        drop(store);
        Ok(Summary {
            received: m.received,
            rejected: m.rejected,
            persisted: p.persisted,
            duplicates: p.duplicates,
        })
    }
}
