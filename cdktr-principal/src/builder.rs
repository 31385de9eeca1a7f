//! [`PrincipalBuilder`]: the principal's settings, from code or from the
//! environment, and starting it.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cdktr_log::config::{env, process_env, Lookup};
use cdktr_log::curve::Authorizer;
use cdktr_log::{ApiConfig, BusConfig, LogManager};
use cdktr_store::archive::{
    ArchiveConfig, Archiver, Retention, ENV_ARCHIVE_DIR, ENV_ARCHIVE_RETENTION, ENV_HOT_RETENTION,
};
use cdktr_store::persister::{MinFreeSpace, ENV_FLUSH_INTERVAL_MS, ENV_MIN_FREE_SPACE};
use cdktr_store::{Location, MemoryLimit, Persister, PersisterConfig, Store};

use crate::security::{is_loopback, Security};
use crate::{
    default_db_path, default_db_threads, server, Principal, Result, DEFAULT_FILE_MEMORY_LIMIT,
    DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_QUERY_TIMEOUT, ENV_DB_CHECKPOINT_THRESHOLD, ENV_DB_MEMORY_LIMIT, ENV_DB_PATH,
    ENV_DB_THREADS, ENV_HEARTBEAT_TIMEOUT_MS, ENV_QUERY_TIMEOUT_MS,
};

/// Configures a [`Principal`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start`"]
pub struct PrincipalBuilder {
    bus: BusConfig,
    api: ApiConfig,
    database: Location,
    persister: PersisterConfig,
    heartbeat_timeout: Duration,
    query_workers: usize,
    query_timeout: Duration,
    #[cfg(feature = "testing")]
    query_delay: Duration,
    db_memory_limit: Option<String>,
    db_threads: Option<u32>,
    db_checkpoint_threshold: Option<String>,
    archive: ArchiveConfig,
    archive_dir: Option<PathBuf>,
    security: Security,
}

impl PrincipalBuilder {
    pub(crate) fn new() -> PrincipalBuilder {
        PrincipalBuilder {
            bus: BusConfig::default(),
            api: ApiConfig::default(),
            database: Location::File(default_db_path()),
            persister: PersisterConfig::default(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            query_workers: 2,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            #[cfg(feature = "testing")]
            query_delay: Duration::ZERO,
            db_memory_limit: None,
            db_threads: None,
            db_checkpoint_threshold: None,
            archive: ArchiveConfig::default(),
            archive_dir: None,
            security: Security::default(),
        }
    }

    /// The defaults with the environment applied: the principal's address
    /// and ports (`CDKTR_PRINCIPAL_HOST`, `CDKTR_PRINCIPAL_PORT`,
    /// `CDKTR_LOGS_LISTENING_PORT`, `CDKTR_LOGS_PUBLISHING_PORT`), the
    /// database (`CDKTR_DB_PATH`, `CDKTR_DB_MEMORY_LIMIT`,
    /// `CDKTR_DB_THREADS`, `CDKTR_DB_CHECKPOINT_THRESHOLD`), `CDKTR_LOG_FLUSH_INTERVAL_MS` and
    /// `CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS`, and CURVE
    /// (`CDKTR_CURVE_SECRET_KEY` with `CDKTR_AUTHORIZED_KEYS_DIR`). The
    /// binary reads them this way
    /// too, then applies its flags.
    ///
    /// # Errors
    /// [`Error::Bus`](crate::Error::Bus) with [`cdktr_log::Error::InvalidEnv`], naming the first
    /// variable that cannot be used.
    pub fn from_env() -> Result<PrincipalBuilder> {
        Self::from_lookup(process_env)
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<PrincipalBuilder> {
        let get: Lookup<'_> = &get;
        let mut b = PrincipalBuilder::new()
            .bus(BusConfig::from_lookup(get)?)
            .api(ApiConfig::from_lookup(get)?);
        if let Some(location) = env(ENV_DB_PATH, get)? {
            b.database = location;
        }
        if let Some(MemoryLimit(limit)) = env(ENV_DB_MEMORY_LIMIT, get)? {
            b.db_memory_limit = Some(limit);
        }
        if let Some(n) = env::<NonZeroU32>(ENV_DB_THREADS, get)? {
            b.db_threads = Some(n.get());
        }
        if let Some(MemoryLimit(size)) = env(ENV_DB_CHECKPOINT_THRESHOLD, get)? {
            b.db_checkpoint_threshold = Some(size);
        }
        if let Some(interval) = env(ENV_FLUSH_INTERVAL_MS, get)? {
            b.persister.flush_interval = interval;
        }
        if let Some(min) = env(ENV_MIN_FREE_SPACE, get)? {
            b.persister.min_free_space = min;
        }
        if let Some(timeout) = env(ENV_HEARTBEAT_TIMEOUT_MS, get)? {
            b.heartbeat_timeout = timeout;
        }
        if let Some(timeout) = env(ENV_QUERY_TIMEOUT_MS, get)? {
            b.query_timeout = timeout;
        }
        if let Some(Retention(hot)) = env(ENV_HOT_RETENTION, get)? {
            b.archive.hot_retention = hot;
        }
        if let Some(Retention(keep)) = env(ENV_ARCHIVE_RETENTION, get)? {
            b.archive.archive_retention = keep;
        }
        if let Some(dir) = env::<PathBuf>(ENV_ARCHIVE_DIR, get)? {
            b.archive_dir = Some(dir);
        }
        if let Some(auth) = Authorizer::from_lookup(get)? {
            b.security = Security::Curve(auth);
        }
        #[cfg(feature = "testing")]
        if let Some(at) = get("CDKTR_TEST_ARCHIVE_FAILPOINT") {
            b.archive.failpoint = cdktr_store::archive::Failpoint::parse(&at);
        }
        Ok(b)
    }

    /// The host the bus and the API bind.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.bus.host = host.into();
        self.api.host.clone_from(&self.bus.host);
        self
    }

    /// The API's port (0: any free port).
    pub fn api_port(mut self, port: u16) -> Self {
        self.api.port = port;
        self
    }

    /// The port agents push logs to (0: any free port).
    pub fn listening_port(mut self, port: u16) -> Self {
        self.bus.listening_port = port;
        self
    }

    /// The port subscribers read the live stream from (0: any free port).
    pub fn publishing_port(mut self, port: u16) -> Self {
        self.bus.publishing_port = port;
        self
    }

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

    /// The longest one query runs before DuckDB is told to stop it and the
    /// client gets `timed_out` (default 30 s).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Threads answering log queries, each with its own database
    /// connection (default 2; recent runs and timelines have one more of
    /// their own). Status updates never wait for them.
    pub fn query_workers(mut self, n: usize) -> Self {
        self.query_workers = n.max(1);
        self
    }

    /// Makes every query wait this long first. For tests showing that a
    /// slow query does not hold up status updates (the `testing` feature).
    #[cfg(feature = "testing")]
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

    /// How much write-ahead log DuckDB gathers before it checkpoints, e.g.
    /// `256MB` (default: DuckDB's, `16MB`): larger trades the live
    /// stream's worst pauses for lines per second
    /// ([`Store::set_checkpoint_threshold`]).
    pub fn db_checkpoint_threshold(mut self, size: impl Into<String>) -> Self {
        self.db_checkpoint_threshold = Some(size.into());
        self
    }

    /// DuckDB's thread count (default [`default_db_threads`]: one fewer
    /// than the cores).
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

    /// The free space kept on the database's filesystem: under it, writes
    /// pause (default: the smaller of 1 GiB and 5%).
    pub fn min_free_space(mut self, min: MinFreeSpace) -> Self {
        self.persister.min_free_space = min;
        self
    }

    /// How long lines stay in DuckDB before they move to the archive
    /// (default 7 days; `None` keeps every line in DuckDB).
    pub fn hot_retention(mut self, keep: Option<Duration>) -> Self {
        self.archive.hot_retention = keep;
        self
    }

    /// How long archived days are kept (default: `None`, for ever).
    pub fn archive_retention(mut self, keep: Option<Duration>) -> Self {
        self.archive.archive_retention = keep;
        self
    }

    /// Where the archive lives (default: `archive/` beside the database
    /// file; an in-memory database has none unless given one).
    pub fn archive_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.archive_dir = Some(dir.into());
        self
    }

    /// The archiver's settings, whole.
    pub fn archive(mut self, config: ArchiveConfig) -> Self {
        self.archive = config;
        self
    }

    /// Who may use the sockets (default [`Security::Loopback`]).
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Opens the database, starts the persister, the log manager, then the
    /// API server.
    ///
    /// # Errors
    /// [`Error::Insecure`](crate::Error::Insecure) for a host that is not a
    /// loopback address with [`Security::Loopback`];
    /// [`Error::Store`](crate::Error::Store) if the database cannot be opened;
    /// [`Error::Bus`](crate::Error::Bus) if a port is in use.
    pub fn start(self) -> Result<Principal> {
        let hosts = [&self.bus.host, &self.api.host];
        if let (Security::Loopback, Some(host)) = (&self.security, hosts.into_iter().find(|h| !is_loopback(h))) {
            return Err(crate::Error::Insecure { host: host.clone() });
        }
        let authorizer = match &self.security {
            Security::Curve(auth) => Some(auth.clone()),
            Security::Loopback | Security::Insecure => None,
        };
        let store = Store::open_location(&self.database)?;
        let file = matches!(self.database, Location::File(_));
        if let Some(limit) = self
            .db_memory_limit
            .as_deref()
            .or(file.then_some(DEFAULT_FILE_MEMORY_LIMIT))
        {
            store.set_memory_limit(limit)?;
        }
        store.set_threads(self.db_threads.unwrap_or_else(default_db_threads))?;
        if let Some(size) = &self.db_checkpoint_threshold {
            store.set_checkpoint_threshold(size)?;
        }
        let archive_dir = self.archive_dir.clone().or_else(|| match &self.database {
            Location::File(db) => Some(db.parent().unwrap_or(Path::new(".")).join("archive")),
            Location::Memory => None,
        });
        if let Some(dir) = &archive_dir {
            store.open_archive(dir)?;
        }
        store.lock_down()?;
        let archiving = self.archive.hot_retention.is_some() || self.archive.archive_retention.is_some();
        let archiver = match archive_dir {
            Some(_) if archiving => Some(Archiver::start(&store, self.archive.clone())?),
            _ => None,
        };
        let persister = Arc::new(Persister::start(&store, self.persister)?);
        let mut manager = LogManager::builder(&self.bus).sink_within(persister.sender(), persister.budget());
        if let Some(auth) = &authorizer {
            manager = manager.curve(auth.clone());
        }
        let manager = Arc::new(manager.start()?);
        let server = server::Server::start(server::Parts {
            api: self.api.clone(),
            store: store.try_clone()?,
            manager: manager.clone(),
            persister: persister.clone(),
            heartbeat_timeout: self.heartbeat_timeout,
            query_workers: self.query_workers,
            query_timeout: self.query_timeout,
            #[cfg(feature = "testing")]
            query_delay: self.query_delay,
            authorizer,
        })?;
        let port = server.endpoint().rsplit(':').next().and_then(|p| p.parse().ok());
        let api = ApiConfig {
            port: port.unwrap_or(self.api.port),
            ..self.api
        };
        Ok(Principal {
            store,
            archiver,
            persister,
            manager,
            server,
            api,
        })
    }
}
