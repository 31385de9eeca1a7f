//! The cdktr principal: the log bus, the log store and the API wired into
//! one process. The [`LogManager`](cdktr_log::LogManager) receives every
//! agent's lines and hands each, without loss, to the
//! [`Persister`](cdktr_store::Persister), which batches them into DuckDB;
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
#![warn(missing_docs)]

mod liveness;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cdktr_log::api::PrincipalStats;
use cdktr_log::{ApiConfig, BusConfig, LogManager};
use cdktr_store::{Location, Persister, PersisterConfig, Store};

pub use liveness::{DEFAULT_HEARTBEAT_TIMEOUT, ENV_HEARTBEAT_TIMEOUT_MS};

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
    /// An environment variable of the principal's own holds a value that
    /// cannot be used.
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Result alias for the principal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// DuckDB's buffer memory for a file database unless told otherwise: it
/// keeps the principal under 256 MiB while it ingests 10 million lines, for
/// about 4% of its ingest rate (`docs/performance.md`).
pub const DEFAULT_FILE_MEMORY_LIMIT: &str = "128MB";

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

/// Parses a duration as people write it: a whole number and a unit, `ms`,
/// `s`, `m`, `h` or `d` (`500ms`, `30s`, `1h`).
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (expected e.g. 500ms, 30s, 15m, 1h, 2d)"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("{s:?} needs a unit: ms, s, m, h or d")),
        other => return Err(format!("unknown unit {other:?} in {s:?} (expected ms, s, m, h or d)")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Reads `CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS` (default 30000).
///
/// # Errors
/// [`Error::InvalidEnv`] unless it is a whole number of milliseconds, at
/// least 1.
pub fn heartbeat_timeout_from_env() -> Result<Duration> {
    match std::env::var(ENV_HEARTBEAT_TIMEOUT_MS) {
        Err(_) => Ok(DEFAULT_HEARTBEAT_TIMEOUT),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(Error::InvalidEnv {
                var: ENV_HEARTBEAT_TIMEOUT_MS,
                value: v,
                reason: "expected milliseconds, at least 1",
            }),
        },
    }
}

/// Configures a [`Principal`].
#[derive(Debug, Clone)]
pub struct PrincipalBuilder {
    bus: BusConfig,
    api: ApiConfig,
    database: Location,
    persister: PersisterConfig,
    heartbeat_timeout: Duration,
    query_workers: usize,
    query_delay: Duration,
    db_memory_limit: Option<String>,
    db_threads: Option<u32>,
}

impl PrincipalBuilder {
    /// Where the bus binds (default: `BusConfig::default()`).
    pub fn bus(mut self, bus: BusConfig) -> Self {
        self.bus = bus;
        self
    }

    /// Where the API binds (default: `ApiConfig::default()`, port 5561).
    pub fn api(mut self, api: ApiConfig) -> Self {
        self.api = api;
        self
    }

    /// How long an agent may stay silent before its unfinished workflow
    /// instances are marked CRASHED (default 30 s).
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Threads answering queries, each with its own database connection
    /// (default 2). Status updates never wait for them.
    pub fn query_workers(mut self, n: usize) -> Self {
        self.query_workers = n.max(1);
        self
    }

    /// Makes every query wait this long first. For tests showing that a
    /// slow query does not hold up status updates.
    #[doc(hidden)]
    pub fn query_delay(mut self, delay: Duration) -> Self {
        self.query_delay = delay;
        self
    }

    /// Caps DuckDB's buffer memory, e.g. `1GB` (default:
    /// [`DEFAULT_FILE_MEMORY_LIMIT`] for a file, DuckDB's own, 80% of RAM,
    /// in memory). A file database writes blocks out past it; an in-memory
    /// one fails writes.
    pub fn db_memory_limit(mut self, limit: impl Into<String>) -> Self {
        self.db_memory_limit = Some(limit.into());
        self
    }

    /// DuckDB's thread count (default: DuckDB's, one per core).
    pub fn db_threads(mut self, threads: u32) -> Self {
        self.db_threads = Some(threads);
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

    /// Opens the database, starts the persister, the log manager, then the
    /// API server.
    ///
    /// # Errors
    /// [`Error::Store`] if the database cannot be opened;
    /// [`Error::Bus`] if a port is in use.
    pub fn start(self) -> Result<Principal> {
        let store = Store::open_location(&self.database)?;
        let file = matches!(self.database, Location::File(_));
        if let Some(limit) = self
            .db_memory_limit
            .as_deref()
            .or(file.then_some(DEFAULT_FILE_MEMORY_LIMIT))
        {
            store.set_memory_limit(limit)?;
        }
        if let Some(n) = self.db_threads {
            store.set_threads(n)?;
        }
        let persister = Arc::new(Persister::start(&store, self.persister)?);
        let manager = Arc::new(LogManager::builder(&self.bus).sink(persister.sender()).start()?);
        let server = server::Server::start(server::Parts {
            api: self.api.clone(),
            store: store.try_clone()?,
            manager: manager.clone(),
            persister: persister.clone(),
            heartbeat_timeout: self.heartbeat_timeout,
            query_workers: self.query_workers,
            query_delay: self.query_delay,
        })?;
        let port = server.endpoint().rsplit(':').next().and_then(|p| p.parse().ok());
        let api = ApiConfig {
            port: port.unwrap_or(self.api.port),
            ..self.api
        };
        Ok(Principal {
            store,
            persister,
            manager,
            server,
            api,
        })
    }
}

/// The running principal; [`shutdown`](Self::shutdown) stops it without
/// losing an accepted line.
pub struct Principal {
    store: Store,
    persister: Arc<Persister>,
    manager: Arc<LogManager>,
    server: server::Server,
    api: ApiConfig,
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
            api: ApiConfig::default(),
            database: Location::File(default_db_path()),
            persister: PersisterConfig::default(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            query_workers: 2,
            query_delay: Duration::ZERO,
            db_memory_limit: None,
            db_threads: None,
        }
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
        self.server.stats(&self.manager, &self.persister)
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
            persister,
            manager,
            mut server,
            api: _,
        } = self;
        server.stop();
        drop(server);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_written_and_bad_ones_are_explained() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "30", "s", "1.5s", "-1s", "10y", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) || e.contains("unit"), "{bad:?}: {e}");
        }
    }
}
