//! Opening the database and keeping its schema.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use duckdb::Connection;

use cdktr_log::config::Setting;

use crate::archive::ArchiveState;
use crate::error::{Error, Result};
use crate::migrations::{index_new_blocks, MIGRATIONS};

/// The newest schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 5;

/// Rows per DuckDB row group in a file database (DuckDB's default is
/// 122,880). A transaction that appends at least a row group is written
/// compressed straight into the file; a smaller one goes through the
/// write-ahead log, and the table's unfinished row group is compressed
/// again at every checkpoint. The persister's batches are whole row
/// groups, so each full batch takes the first path: 2.6 times the MB/s of
/// 1 KiB lines, a third of the longest write (`docs/performance.md`,
/// session 11).
pub const ROW_GROUP_SIZE: usize = 20_480;

/// The name a file database is attached under; every connection uses it.
const CATALOG: &str = "cdktr";

/// A size DuckDB takes as its memory limit or checkpoint threshold, e.g.
/// `128MB` or `1GiB`; checked, so nothing but a size reaches the SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit(pub String);

impl Setting for MemoryLimit {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        let digits = raw
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(raw.len());
        let (n, unit) = raw.split_at(digits);
        let units = ["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"];
        if n.is_empty() || n.parse::<f64>().is_err() || !units.contains(&unit.trim()) {
            return Err("expected a size such as 128MB or 1GiB");
        }
        Ok(MemoryLimit(format!("{n}{}", unit.trim())))
    }
}

/// `:memory:` or a file path, as `CDKTR_DB_PATH` and `--db` take it.
impl Setting for Location {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        Ok(match raw {
            ":memory:" => Location::Memory,
            path => Location::File(path.into()),
        })
    }
}

/// Where a store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In memory: gone when the last handle is dropped.
    Memory,
    /// One DuckDB file.
    File(PathBuf),
}

/// A handle on the log database: DuckDB in memory or in one file.
///
/// Every table is insert-only: nothing in this crate updates or deletes a
/// row. A `Store` serializes its own calls; for concurrent work take more
/// handles with [`try_clone`](Self::try_clone), each its own DuckDB
/// connection to the same database.
///
/// A database DuckDB has invalidated (a fatal error, such as a checkpoint
/// failing on a full disk) refuses everything until it is opened again;
/// [`recover`](Self::recover) does that, for every handle.
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    conn: Mutex<Handle>,
}

/// What the handles on one database share.
pub(crate) struct Shared {
    location: Location,
    /// Bumped at each reopen; a handle of an older one clones anew.
    generation: AtomicU64,
    /// A connection to the newest instance, new handles are cloned from it.
    root: Mutex<Connection>,
    /// `SET` statements made through any handle, made again after a reopen.
    settings: Mutex<Vec<String>>,
    /// The `publisher` table as read last: key to publisher id.
    publishers: Mutex<HashMap<u32, String>>,
    /// The archive as readers see it; changed under its write lock.
    pub(crate) archive: RwLock<ArchiveState>,
    /// The number of the next archive file.
    pub(crate) next_file_no: AtomicU64,
    /// The archive's files and lines, kept beside the lock for readers
    /// that must not wait (the API's Stats).
    pub(crate) archive_files: AtomicU64,
    pub(crate) archived_lines: AtomicU64,
    /// Archiver passes that failed (logged; retried at the next check).
    pub(crate) archive_failures: AtomicU64,
}

struct Handle {
    generation: u64,
    conn: Connection,
    /// The archive generation this connection's history view shows.
    history_view: Option<u64>,
}

/// A handle's connection, locked.
pub(crate) struct Conn<'a>(MutexGuard<'a, Handle>);

impl Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl Conn<'_> {
    pub(crate) fn history_view(&self) -> Option<u64> {
        self.0.history_view
    }

    pub(crate) fn set_history_view(&mut self, generation: u64) {
        self.0.history_view = Some(generation);
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0.conn
    }
}

impl Store {
    /// Opens (creating if needed) the database file at `path`, creating its
    /// parent directories and the schema.
    ///
    /// # Errors
    /// [`Error::Open`], naming the path, when it is a directory, not a DuckDB
    /// file, unreadable, or locked by another process;
    /// [`Error::CreateDir`]; [`Error::SchemaTooNew`] for a file written by a
    /// newer version.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if path.is_dir() {
            return Err(Error::Open {
                path,
                reason: "it is a directory".into(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.into(),
                source,
            })?;
        }
        let conn = open_file(&path)?;
        Self::init(conn, Location::File(path))
    }

    /// Opens a new, empty in-memory database.
    ///
    /// # Errors
    /// [`Error::Db`] if DuckDB cannot start.
    pub fn open_in_memory() -> Result<Store> {
        let conn =
            Connection::open_in_memory_with_flags(config()?).map_err(Error::db("opening an in-memory database"))?;
        Self::init(conn, Location::Memory)
    }

    /// Opens `location`.
    ///
    /// # Errors
    /// As [`open`](Self::open) and [`open_in_memory`](Self::open_in_memory).
    pub fn open_location(location: &Location) -> Result<Store> {
        match location {
            Location::Memory => Self::open_in_memory(),
            Location::File(p) => Self::open(p),
        }
    }

    /// Another handle on the same database, with its own connection.
    ///
    /// # Errors
    /// [`Error::Db`] if DuckDB refuses a new connection.
    pub fn try_clone(&self) -> Result<Store> {
        let conn = connect(&self.conn(), &self.shared.location).map_err(Error::db("opening another connection"))?;
        Ok(Store {
            conn: Mutex::new(Handle {
                generation: self.shared.generation.load(SeqCst),
                conn,
                history_view: None,
            }),
            shared: self.shared.clone(),
        })
    }

    /// Where the data lives.
    pub fn location(&self) -> &Location {
        &self.shared.location
    }

    /// Whether DuckDB has invalidated the database after a fatal error:
    /// then every statement fails until it is opened again.
    pub fn is_invalidated(&self) -> bool {
        let root = self.shared.root.lock().unwrap_or_else(|e| e.into_inner());
        invalidated(&root)
    }

    /// Opens a file database again if DuckDB has invalidated it; every
    /// handle moves to the new instance at its next call, and the settings
    /// made through any handle are made again. True if it was reopened.
    /// Only the newest instance is ever written: an invalidated one writes
    /// nothing. An in-memory database cannot be reopened (its data would be
    /// gone).
    ///
    /// # Errors
    /// [`Error::Open`] while the file cannot be opened yet (retry later).
    pub fn recover(&self) -> Result<bool> {
        let mut root = self.shared.root.lock().unwrap_or_else(|e| e.into_inner());
        if !invalidated(&root) {
            return Ok(false);
        }
        self.reopen(&mut root)?;
        Ok(true)
    }

    /// Reopens whether or not DuckDB invalidated the database: for tests of
    /// the recovery path (the `testing` feature). Never call it while
    /// another handle writes.
    ///
    /// # Errors
    /// As [`recover`](Self::recover).
    #[cfg(feature = "testing")]
    pub fn reopen_now(&self) -> Result<()> {
        let mut root = self.shared.root.lock().unwrap_or_else(|e| e.into_inner());
        self.reopen(&mut root)
    }

    fn reopen(&self, root: &mut Connection) -> Result<()> {
        let Location::File(path) = &self.shared.location else {
            return Err(Error::Open {
                path: ":memory:".into(),
                reason: "an in-memory database cannot be reopened".into(),
            });
        };
        let fresh = open_file(path)?;
        // DuckDB sizes its spill space from the free disk space at the time
        // it first needs it: reopened on a full disk, it would have none for
        // good ("failed to offload data block ... 0 bytes"). Free space is
        // watched by the persister, so give it no limit of its own.
        fresh
            .execute_batch("SET max_temp_directory_size = '1024TiB'")
            .map_err(Error::db("sizing the spill space"))?;
        let settings = self.shared.settings.lock().unwrap_or_else(|e| e.into_inner());
        for sql in settings.iter() {
            fresh.execute_batch(sql).map_err(Error::db("applying settings again"))?;
        }
        *root = fresh;
        let generation = self.shared.generation.fetch_add(1, SeqCst) + 1;
        log::warn!(
            "store: reopened {} after DuckDB invalidated it (generation {generation})",
            path.display()
        );
        Ok(())
    }

    /// Stops the statement this handle is running (from another thread):
    /// it fails with an interrupt error.
    pub fn interrupt_handle(&self) -> Arc<duckdb::InterruptHandle> {
        self.conn().interrupt_handle()
    }

    /// Runs a `SET` statement and keeps it for reopens.
    pub(crate) fn set(&self, sql: String, op: &'static str) -> Result<()> {
        self.conn().execute_batch(&sql).map_err(Error::db(op))?;
        self.shared.settings.lock().unwrap_or_else(|e| e.into_inner()).push(sql);
        Ok(())
    }

    /// Caps the memory DuckDB's buffer manager uses for this database
    /// (a DuckDB size such as `128MB` or `1GiB`); past it, a file database
    /// writes blocks out and reads them back as needed. An in-memory
    /// database cannot, so its writes fail past the cap.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] for a size DuckDB would not take (checked
    /// here, so nothing but a size reaches the SQL); [`Error::Db`].
    pub fn set_memory_limit(&self, limit: &str) -> Result<()> {
        self.set_size("memory_limit", "memory limit", limit, "setting the memory limit")
    }

    /// Sets a DuckDB setting that takes a size, checked first so that
    /// nothing but a size reaches the SQL.
    fn set_size(&self, setting: &str, what: &str, raw: &str, op: &'static str) -> Result<()> {
        let size = MemoryLimit::parse_setting(raw.trim())
            .map_err(|why| Error::InvalidQuery(format!("{what} {raw:?}: {why}")))?;
        self.set(format!("SET {setting} = '{}'", size.0), op)
    }

    /// How much write-ahead log DuckDB gathers before it checkpoints (a
    /// DuckDB size; DuckDB's default is `16MB`). A checkpoint compresses
    /// what was written since the last one into the file, within the write
    /// that crossed the threshold: a larger one makes fewer, longer
    /// checkpoints, so more lines per second and longer pauses of the
    /// persister (`docs/performance.md`, "The checkpoint threshold"); the
    /// log also grows to about this size and is replayed at the next open
    /// after a crash.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] for a size DuckDB would not take; [`Error::Db`].
    pub fn set_checkpoint_threshold(&self, size: &str) -> Result<()> {
        let op = "setting the checkpoint threshold";
        self.set_size("checkpoint_threshold", "checkpoint threshold", size, op)
    }

    /// How many threads DuckDB uses for this database's queries and writes.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn set_threads(&self, threads: u32) -> Result<()> {
        self.set(format!("SET threads = {}", threads.max(1)), "setting the thread count")
    }

    /// The schema version of the database.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn schema_version(&self) -> Result<i64> {
        current_version(&self.conn())
    }

    /// The publisher ids of `keys` (read again from the `publisher` table
    /// when one is not known yet).
    pub(crate) fn publisher_ids(&self, keys: &[u32]) -> Result<HashMap<u32, String>> {
        let mut known = self.shared.publishers.lock().unwrap_or_else(|e| e.into_inner());
        if keys.iter().any(|k| !known.contains_key(k)) {
            let read = || Error::db("reading the publisher table");
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT publisher_key, publisher_id FROM publisher")
                .map_err(read())?;
            *known = stmt
                .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
                .map_err(read())?
                .collect::<duckdb::Result<_>>()
                .map_err(read())?;
        }
        Ok(keys.iter().filter_map(|k| Some((*k, known.get(k)?.clone()))).collect())
    }

    pub(crate) fn conn(&self) -> Conn<'_> {
        // A panic while holding the lock leaves nothing half-done in DuckDB.
        let mut handle = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.shared.generation.load(SeqCst);
        if handle.generation != current {
            let root = self.shared.root.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(conn) = connect(&root, &self.shared.location) {
                handle.conn = conn;
                handle.generation = current;
                handle.history_view = None;
            }
        }
        Conn(handle)
    }

    fn init(conn: Connection, location: Location) -> Result<Store> {
        let reading = Error::db("reading the schema version");
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cdktr_schema_version (version BIGINT NOT NULL, applied_at_ms BIGINT NOT NULL)",
        )
        .map_err(reading)?;
        let found = current_version(&conn)?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            let applied = chrono_now_ms();
            let batch = format!(
                "BEGIN TRANSACTION; {sql}; INSERT INTO cdktr_schema_version VALUES ({version}, {applied}); COMMIT;"
            );
            if let Err(e) = conn.execute_batch(&batch) {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(Error::Db {
                    op: "creating the schema",
                    source: e,
                });
            }
        }
        index_new_blocks(&conn).map_err(Error::db("indexing lines by instance"))?;
        let settings = Vec::new();
        let handle = connect(&conn, &location).map_err(Error::db("opening another connection"))?;
        Ok(Store {
            shared: Arc::new(Shared {
                location,
                generation: AtomicU64::new(0),
                root: Mutex::new(conn),
                settings: Mutex::new(settings),
                publishers: Mutex::new(HashMap::new()),
                archive: RwLock::new(ArchiveState::default()),
                next_file_no: AtomicU64::new(1),
                archive_files: AtomicU64::new(0),
                archived_lines: AtomicU64::new(0),
                archive_failures: AtomicU64::new(0),
            }),
            conn: Mutex::new(Handle {
                generation: 0,
                conn: handle,
                history_view: None,
            }),
        })
    }
}

/// DuckDB's answer to everything once a fatal error invalidated it.
fn invalidated(conn: &Connection) -> bool {
    // Reads a table: DuckDB can invalidate the attached file alone (a
    // failed checkpoint), which a query touching no table would not see.
    match conn.execute_batch("SELECT count(*) FROM cdktr_schema_version") {
        Ok(()) => false,
        Err(e) => {
            let m = e.to_string();
            m.contains("invalidated") || m.contains("FATAL")
        }
    }
}

/// The principal never reaches out to the network: no extension is
/// downloaded or loaded behind its back.
///
/// DuckDB 1.2's late materialization (ORDER BY ... LIMIT of 50 rows or
/// fewer) fails with an internal error when the query also filters on
/// `rowid`, as snapshots and cursors do: it is off.
fn config() -> Result<duckdb::Config> {
    duckdb::Config::default()
        .enable_autoload_extension(false)
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .and_then(|c| c.with("late_materialization_max_rows", "0"))
        .map_err(Error::db("configuring DuckDB"))
}

/// A file database, attached to an in-memory DuckDB: only an attached
/// database takes a row group size ([`ROW_GROUP_SIZE`]). DuckDB's spill
/// files go where they would for the file opened directly (`<path>.tmp`).
fn open_file(path: &Path) -> Result<Connection> {
    let failed = |reason: String| Error::Open {
        path: path.to_path_buf(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| failed("the path is not valid UTF-8".into()))?;
    let quoted = text.replace('\'', "''");
    let conn = Connection::open_in_memory_with_flags(config()?).map_err(|e| failed(e.to_string()))?;
    conn.execute_batch(&format!(
        "SET temp_directory = '{quoted}.tmp'; \
         ATTACH '{quoted}' AS {CATALOG} (TYPE DUCKDB, ROW_GROUP_SIZE {ROW_GROUP_SIZE}); USE {CATALOG};"
    ))
    .map_err(|e| failed(e.to_string()))?;
    Ok(conn)
}

/// Another connection to `conn`'s database, using the same catalog.
fn connect(conn: &Connection, location: &Location) -> duckdb::Result<Connection> {
    let new = conn.try_clone()?;
    if let Location::File(_) = location {
        new.execute_batch(&format!("USE {CATALOG}"))?;
    }
    Ok(new)
}

fn current_version(conn: &Connection) -> Result<i64> {
    conn.query_row("SELECT coalesce(max(version), 0) FROM cdktr_schema_version", [], |r| {
        r.get(0)
    })
    .map_err(Error::db("reading the schema version"))
}

pub(crate) fn chrono_now_ms() -> i64 {
    cdktr_log::message::now_ms()
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}
