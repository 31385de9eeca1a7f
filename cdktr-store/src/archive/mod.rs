//! The archive: log lines older than a hot retention leave DuckDB for
//! Parquet files, one folder per day (`logstore/day=YYYY-MM-DD/`), which
//! DuckDB's CLI, Python, R or Spark can read while the principal runs.
//! Reads through the [`Store`] see hot and archived lines as one history.
//!
//! ```
//! use std::time::Duration;
//! use cdktr_store::archive::{archive_pass, ArchiveConfig};
//! use cdktr_store::{LogQuery, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("app.db"))?;
//! store.open_archive(dir.path().join("archive"))?;
//! let config = ArchiveConfig {
//!     hot_retention: Some(Duration::from_secs(7 * 86_400)),
//!     ..ArchiveConfig::default()
//! };
//! // The principal runs passes on a thread ([`Archiver`]); one by hand:
//! let report = archive_pass(&store, &config, cdktr_log::message::now_ms(), &|| false)?;
//! assert_eq!(report.lines, 0);
//! # Ok::<(), cdktr_store::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use cdktr_log::stats::StatsCell;
use crossbeam_channel::{bounded, Sender};

use crate::error::{Error, Result};
use crate::store::{chrono_now_ms, Store};

mod manifest;
mod mover;

pub(crate) use manifest::ArchiveState;
pub use manifest::{ArchivedFile, Reconciled};
pub(crate) use mover::sql_string;
pub use mover::{archive_pass, PassReport};

/// Env var: how long lines stay in DuckDB before the archive, e.g. `7d`;
/// `0` keeps every line in DuckDB.
pub const ENV_HOT_RETENTION: &str = "CDKTR_HOT_RETENTION";
/// Env var: how long archived days are kept, e.g. `365d`; unset keeps
/// them forever.
pub const ENV_ARCHIVE_RETENTION: &str = "CDKTR_ARCHIVE_RETENTION";
/// Env var: the archive directory (default: `archive/` beside the
/// database file).
pub const ENV_ARCHIVE_DIR: &str = "CDKTR_ARCHIVE_DIR";
/// Lines stay in DuckDB this long unless configured.
pub const DEFAULT_HOT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How long something is kept: a duration such as `7d` or `36h`, or `0`
/// (and, for the archive, unset) for ever. As `CDKTR_HOT_RETENTION`,
/// `CDKTR_ARCHIVE_RETENTION` and the principal's flags take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl cdktr_log::config::Setting for Retention {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        match raw.trim() {
            "0" => Ok(Retention(None)),
            s => match humantime::parse_duration(s) {
                Ok(d) if d.is_zero() => Ok(Retention(None)),
                Ok(d) => Ok(Retention(Some(d))),
                Err(_) => Err("expected a duration such as 7d or 36h, or 0 for ever"),
            },
        }
    }
}

/// How the archiver works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// Lines stamped longer ago than this move to the archive; `None`
    /// keeps every line in DuckDB.
    pub hot_retention: Option<Duration>,
    /// Archived days older than this are deleted; `None` keeps them.
    pub archive_retention: Option<Duration>,
    /// Most lines moved in one step (one file).
    pub chunk_lines: usize,
    /// Lines per Parquet row group.
    pub row_group_lines: usize,
    /// How often the archiver looks for work.
    pub check_every: Duration,
    /// After each step the archiver rests this many times as long as the
    /// step took, so that ingestion keeps most of the cores (0: no rest).
    pub rest_factor: u32,
    /// Tests only: where to stop the process dead.
    pub failpoint: Option<Failpoint>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            hot_retention: Some(DEFAULT_HOT_RETENTION),
            archive_retention: None,
            chunk_lines: 250_000,
            row_group_lines: 61_440,
            check_every: Duration::from_secs(60),
            rest_factor: 1,
            failpoint: None,
        }
    }
}

/// A step of a move or a deletion at which a test kills the process
/// (`std::process::abort`, as sudden as `kill -9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// The file is written and synced under its temporary name.
    Written,
    /// The manifest row and the deletion are committed; not renamed yet.
    Committed,
    /// Expired files are recorded as deleted; not removed yet.
    Expired,
}

impl Failpoint {
    /// Reads a failpoint's name: `written`, `committed` or `expired`.
    pub fn parse(name: &str) -> Option<Failpoint> {
        match name {
            "written" => Some(Failpoint::Written),
            "committed" => Some(Failpoint::Committed),
            "expired" => Some(Failpoint::Expired),
            _ => None,
        }
    }
}

impl ArchiveConfig {
    fn failpoint(&self, at: Failpoint) {
        if self.failpoint == Some(at) {
            log::error!("archive: failpoint {at:?} reached; aborting");
            std::process::abort();
        }
    }
}

/// The archiver's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArchiverStats {
    /// Lines moved to the archive since start.
    pub lines: u64,
    /// Files written since start.
    pub files: u64,
    /// Files deleted by the archive's retention since start.
    pub deleted_files: u64,
    /// Passes that failed (retried at the next check).
    pub failures: u64,
}

/// The archiver's thread; dropping it (or [`shutdown`](Self::shutdown))
/// stops it after the step in progress.
#[must_use = "dropping the archiver stops it"]
#[derive(Debug)]
pub struct Archiver {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<StatsCell<ArchiverStats>>,
}

impl Archiver {
    /// Starts archiving `store`'s database (whose archive is open): a pass
    /// at once, then one every `check_every`.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when the store has no archive open;
    /// [`Error::Db`]; [`Error::Spawn`].
    pub fn start(store: &Store, config: ArchiveConfig) -> Result<Archiver> {
        store.archive_dir()?;
        let store = store.try_clone()?;
        let stats = Arc::new(StatsCell::new(ArchiverStats::default()));
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let counters = stats.clone();
        let thread = std::thread::Builder::new()
            .name("cdktr-archiver".into())
            .spawn(move || {
                let stopped = || !matches!(stop_rx.try_recv(), Err(crossbeam_channel::TryRecvError::Empty));
                loop {
                    let mut s = counters.snapshot();
                    match archive_pass(&store, &config, chrono_now_ms(), &stopped) {
                        Ok(r) => {
                            s.lines += r.lines;
                            s.files += r.files;
                            s.deleted_files += r.deleted_files;
                            if r.lines > 0 {
                                log::info!("archive: moved {} lines in {} file(s)", r.lines, r.files);
                            }
                        }
                        Err(e) => {
                            s.failures += 1;
                            store.shared.archive_failures.fetch_add(1, SeqCst);
                            log::error!("archive: pass failed, retrying in {:?}: {e}", config.check_every);
                        }
                    }
                    counters.publish(&s);
                    match stop_rx.recv_timeout(config.check_every) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
            })
            .map_err(Error::Spawn)?;
        Ok(Archiver {
            stop: Some(stop_tx),
            thread: Some(thread),
            stats,
        })
    }

    /// The counters now.
    pub fn stats(&self) -> ArchiverStats {
        self.stats.snapshot()
    }

    /// Stops the thread after the step in progress and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl Store {
    /// Opens the archive at `dir` (creating it): reads the manifest,
    /// finishes or undoes what a stop in the middle of a move left (the
    /// manifest is the truth), and from then on reads of this database see
    /// archived lines too. Call it before [`lock_down`](Self::lock_down).
    ///
    /// # Errors
    /// [`Error::Archive`] when the directory cannot be created or read;
    /// [`Error::Db`].
    pub fn open_archive(&self, dir: impl AsRef<Path>) -> Result<Reconciled> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Archive {
            path: dir.to_path_buf(),
            source,
        })?;
        let dir = dir.canonicalize().map_err(|source| Error::Archive {
            path: dir.to_path_buf(),
            source,
        })?;
        let manifest = manifest::Manifest::load(&self.conn())?;
        let done = manifest::reconcile(&dir, &manifest)?;
        for path in &done.missing {
            log::error!(
                "archive: {} is in the manifest but missing; its lines cannot be read",
                dir.join(path).display()
            );
        }
        for path in &done.unknown {
            log::warn!(
                "archive: {} is not in the manifest; left alone, not read",
                dir.join(path).display()
            );
        }
        let next = manifest.files.keys().max().map_or(1, |n| n + 1);
        self.shared.next_file_no.store(next, SeqCst);
        let mut state = self.archive_write();
        state.files = manifest
            .live()
            .filter(|f| !done.missing.contains(&f.path))
            .map(|f| (f.file_no, f.clone()))
            .collect();
        state.dir = Some(dir);
        self.archive_changed(&mut state);
        Ok(done)
    }

    /// The files of the archive now.
    pub fn archived_files(&self) -> Vec<ArchivedFile> {
        self.archive_read().files.values().cloned().collect()
    }

    pub(crate) fn archive_dir(&self) -> Result<PathBuf> {
        self.archive_read()
            .dir
            .clone()
            .ok_or_else(|| Error::InvalidQuery("no archive is open for this database".into()))
    }

    pub(crate) fn next_archive_file_no(&self) -> u64 {
        self.shared.next_file_no.fetch_add(1, SeqCst)
    }

    pub(crate) fn archive_read(&self) -> RwLockReadGuard<'_, ArchiveState> {
        self.shared.archive.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The archive's write lock. Readers hold the read lock for a whole
    /// query, and a writer waiting on a blocking lock would hold up every
    /// new reader behind the longest one: so it is tried, and only taken
    /// waiting after a while.
    pub(crate) fn archive_write(&self) -> RwLockWriteGuard<'_, ArchiveState> {
        let lock = &self.shared.archive;
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < give_up {
            match lock.try_write() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the archive as changed (under its write lock).
    pub(crate) fn archive_changed(&self, state: &mut ArchiveState) {
        state.generation += 1;
        let (files, lines) = state.totals();
        self.shared.archive_files.store(files, SeqCst);
        self.shared.archived_lines.store(lines, SeqCst);
    }

    /// Files in the archive, lines in them, and archiver passes that
    /// failed, now (without waiting on the archive's lock).
    pub fn archive_totals(&self) -> (u64, u64, u64) {
        (
            self.shared.archive_files.load(SeqCst),
            self.shared.archived_lines.load(SeqCst),
            self.shared.archive_failures.load(SeqCst),
        )
    }
}

/// The columns of a line, hot or archived, in the order reads use.
pub(crate) const LINE_COLUMNS: &str = "workflow_id, workflow_name, workflow_instance_id, task_name, \
     task_instance_id, timestamp_ms, level, payload, publisher_key, seq, line_id";

/// The SQL source of every line stamped in `[start, end)`: `hot` (the
/// lines of `logstore` to read), with the archive files that may hold such
/// lines after it.
pub(crate) fn history_source(state: &ArchiveState, start: i64, end: Option<i64>, hot: &str) -> String {
    let paths = state.paths_for(start, end);
    if paths.is_empty() {
        return hot.into();
    }
    let list: Vec<String> = paths.iter().map(|p| sql_string(p)).collect();
    format!(
        "(SELECT {LINE_COLUMNS} FROM {hot} UNION ALL SELECT {LINE_COLUMNS} FROM read_parquet([{}]))",
        list.join(", ")
    )
}
