use std::path::PathBuf;

/// Everything that can stop the agent (a task that fails is not an error:
/// it is a FAILED run, in its report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log bus or the principal's API could not be set up.
    #[error(transparent)]
    Bus(#[from] cdktr_log::Error),

    /// A workflow file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A workflow file is not valid YAML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line and column.
        message: String,
    },

    /// A workflow that cannot be run as stated (no tasks, an empty
    /// command, an empty id).
    #[error("invalid workflow: {0}")]
    Invalid(String),

    /// A background thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// Which thread.
        name: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Result alias for the agent.
pub type Result<T, E = Error> = std::result::Result<T, E>;
