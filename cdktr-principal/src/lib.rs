//! The cdktr principal: the log bus and the log store wired into one
//! process. The [`LogManager`](cdktr_log::LogManager) receives every
//! agent's lines and hands each, without loss, to the
//! [`Persister`](cdktr_store::Persister), which batches them into DuckDB.
//!
//! ```
//! use cdktr_log::BusConfig;
//! use cdktr_principal::Principal;
//! use cdktr_store::Location;
//!
//! let bus = BusConfig { host: "127.0.0.1".into(), listening_port: 0, publishing_port: 0 };
//! let principal = Principal::builder().bus(bus).database(Location::Memory).start()?;
//! println!("agents push to {}", principal.bus().listening_endpoint());
//! let summary = principal.shutdown()?;
//! assert_eq!(summary.received, 0);
//! # Ok::<(), cdktr_principal::Error>(())
//! ```
#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use cdktr_log::{BusConfig, LogManager};
use cdktr_store::{Location, Persister, PersisterConfig, Store};

/// What can stop the principal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bus failed (a port in use, a bad variable).
    #[error(transparent)]
    Bus(#[from] cdktr_log::Error),
    /// The store failed (a database that cannot be opened, a bad variable).
    #[error(transparent)]
    Store(#[from] cdktr_store::Error),
}

/// Result alias for the principal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Env var naming the database file (`:memory:` for in memory).
pub const ENV_DB_PATH: &str = "CDKTR_DB_PATH";

/// The default database file: `$HOME/.cdktr/app.db`.
pub fn default_db_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cdktr").join("app.db")
}

/// Parses a database argument: `:memory:` or a path.
pub fn location_from(arg: &str) -> Location {
    if arg == ":memory:" {
        Location::Memory
    } else {
        Location::File(arg.into())
    }
}

/// Configures a [`Principal`].
#[derive(Debug, Clone)]
pub struct PrincipalBuilder {
    bus: BusConfig,
    database: Location,
    persister: PersisterConfig,
}

impl PrincipalBuilder {
    /// Where the bus binds (default: `BusConfig::default()`).
    pub fn bus(mut self, bus: BusConfig) -> Self {
        self.bus = bus;
        self
    }

    /// Where the database lives (default: [`default_db_path`]).
    pub fn database(mut self, location: Location) -> Self {
        self.database = location;
        self
    }

    /// How the persister batches.
    pub fn persister(mut self, config: PersisterConfig) -> Self {
        self.persister = config;
        self
    }

    /// The flush interval of the persister.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.persister.flush_interval = interval;
        self
    }

    /// Opens the database, starts the persister, then the log manager.
    ///
    /// # Errors
    /// [`Error::Store`] if the database cannot be opened;
    /// [`Error::Bus`] if a port is in use.
    pub fn start(self) -> Result<Principal> {
        let store = Store::open_location(&self.database)?;
        let persister = Persister::start(&store, self.persister)?;
        let manager = LogManager::builder(&self.bus).sink(persister.sender()).start()?;
        Ok(Principal {
            store,
            persister,
            manager,
        })
    }
}

/// The running principal; [`shutdown`](Self::shutdown) stops it without
/// losing an accepted line.
pub struct Principal {
    store: Store,
    persister: Persister,
    manager: LogManager,
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
        PrincipalBuilder {
            bus: BusConfig::default(),
            database: Location::File(default_db_path()),
            persister: PersisterConfig::default(),
        }
    }

    /// The bus as bound (with the actual ports when 0 was asked for).
    pub fn bus(&self) -> &LogManager {
        &self.manager
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

    /// Stops accepting, forwards and persists everything accepted, and
    /// closes the database.
    ///
    /// # Errors
    /// [`Error::Store`] if accepted lines could not be written.
    pub fn shutdown(self) -> Result<Summary> {
        let Principal {
            store,
            persister,
            manager,
        } = self;
        let m = manager.shutdown()?;
        let p = persister.shutdown()?;
        drop(store);
        Ok(Summary {
            received: m.received,
            rejected: m.rejected,
            persisted: p.persisted,
            duplicates: p.duplicates,
        })
    }
}
