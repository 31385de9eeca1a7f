use std::path::PathBuf;

/// Everything that can go wrong in the log store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened: the path is a directory, not a
    /// DuckDB file, unreadable, or locked by another process.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The path that was asked for.
        path: PathBuf,
        /// Why, as DuckDB or the OS put it.
        reason: String,
    },

    /// The database's parent directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// The file was written by a newer version of this crate.
    #[error("database schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew {
        /// The version recorded in the file.
        found: i64,
        /// The newest version this build can use.
        supported: i64,
    },

    /// A query was asked for that cannot be answered as stated.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// A string is not one of the run statuses.
    #[error("unknown status {0:?} (expected PENDING, RUNNING, WAITING, COMPLETED, FAILED or CRASHED)")]
    UnknownStatus(String),

    /// An environment variable holds a value that cannot be used.
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A statement failed in DuckDB.
    #[error("database error while {op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// What DuckDB said.
        source: duckdb::Error,
    },

    /// Writes are paused: the database's filesystem has less free space
    /// than the persister keeps ([`crate::PersisterConfig::min_free_space`]).
    #[error("writes paused: {free} bytes free on the database's filesystem, under the space kept free")]
    SpaceLow {
        /// Free bytes when last looked at.
        free: u64,
    },

    /// A file or folder of the archive could not be written, synced,
    /// renamed or read.
    #[error("archive {path}: {source}")]
    Archive {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// An export's file could not be put in place.
    #[error("export {path}: {source}")]
    Export {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A SQL statement was refused: it would write, or reach outside the
    /// database and its archive.
    #[error("refused: {0}")]
    Forbidden(String),

    /// A worker thread (the persister's, the archiver's) could not be started.
    #[error("cannot start a worker thread: {0}")]
    Spawn(std::io::Error),

    /// The persister has stopped (or its thread died).
    #[error("the persister has shut down")]
    Closed,

    /// A flush did not finish in the time given.
    #[error("flush did not finish within {0:?}")]
    FlushTimeout(std::time::Duration),

    /// Shutdown gave up with rows that could not be written.
    #[error("{0} row(s) could not be persisted before shutdown gave up")]
    Unpersisted(usize),
}

/// Result alias for the log store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn db(op: &'static str) -> impl FnOnce(duckdb::Error) -> Error {
        move |source| Error::Db { op, source }
    }
}

/// The protocol's errors that reach the store: a setting or a query that
/// cannot be used.
impl From<cdktr_log::Error> for Error {
    fn from(e: cdktr_log::Error) -> Error {
        match e {
            cdktr_log::Error::InvalidEnv { var, value, reason } => Error::InvalidEnv { var, value, reason },
            cdktr_log::Error::UnknownStatus(s) => Error::UnknownStatus(s),
            cdktr_log::Error::InvalidQuery(m) => Error::InvalidQuery(m),
            other => Error::InvalidQuery(other.to_string()),
        }
    }
}
