use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong on the log bus.
///
/// Decoding errors (`Frames` through `Field`) say precisely what was wrong
/// with a message; the manager counts them as rejected and carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable holds a value that cannot be used.
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name, e.g. `CDKTR_LOGS_LISTENING_PORT`.
        var: &'static str,
        /// The value as found in the environment.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Of two variables that go together, one is set and the other not.
    #[error("{given} is set but {missing} is not: {why}")]
    EnvPair {
        /// The variable that is set.
        given: &'static str,
        /// The variable that is missing.
        missing: &'static str,
        /// Why both are needed.
        why: &'static str,
    },

    /// A CURVE key file cannot be read, is not a key, or cannot be
    /// written.
    #[error("key file {}: {reason}", path.display())]
    Key {
        /// The file (or directory).
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Keys were given but this build's libzmq has no CURVE (it was built
    /// without libsodium: see README, "Security").
    #[error("CURVE keys were given, but this build's libzmq has no CURVE (built without libsodium)")]
    CurveUnavailable,

    /// A string is not a log level this crate knows.
    #[error("unknown log level {0:?} (expected TRACE, DEBUG, INFO, WARN or ERROR)")]
    UnknownLevel(String),

    /// A string is not one of the run statuses.
    #[error("unknown status {0:?} (expected PENDING, RUNNING, WAITING, COMPLETED, FAILED or CRASHED)")]
    UnknownStatus(String),

    /// A log query cannot be answered as stated.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// The principal did not answer an API request in time: it is not
    /// running, not at that address, or overloaded.
    #[error("no answer from the principal at {endpoint} within {after:?}")]
    Timeout {
        /// The API endpoint.
        endpoint: String,
        /// How long the client waited.
        after: Duration,
    },

    /// The principal answered an API request with an error.
    #[error("the principal refused the request ({kind}): {message}")]
    Api {
        /// The error's kind, e.g. `invalid` (see `docs/api.md`).
        kind: ErrorKind,
        /// What the principal said.
        message: String,
    },

    /// An API reply could not be decoded or was not the reply expected.
    #[error("unexpected reply from the principal: {0}")]
    Reply(String),

    /// The publisher's spool directory cannot be used.
    #[error("spool directory {dir}: {source}")]
    Spool {
        /// The directory.
        dir: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    #[cfg(feature = "sockets")]
    /// A socket could not be bound, usually because the port is in use.
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        /// The endpoint that was asked for.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },

    #[cfg(feature = "sockets")]
    /// A socket could not connect (a malformed host, not an absent peer:
    /// ZeroMQ connects lazily and retries on its own).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint that was asked for.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },

    #[cfg(feature = "sockets")]
    /// Any other ZeroMQ failure, with what was being done at the time.
    #[error("zeromq failed to {op}: {source}")]
    Zmq {
        /// What was being done.
        op: &'static str,
        /// What ZeroMQ said.
        source: zmq::Error,
    },

    /// A background thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// Which component's thread.
        name: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },

    /// The component has shut down, or its background thread died.
    #[error("the {0} has shut down")]
    Closed(&'static str),

    /// A flush did not complete in the time given; nothing was dropped, the
    /// messages stay queued.
    #[error("flush timed out after {0:?} with messages still queued")]
    FlushTimeout(Duration),

    /// A message did not have exactly the two frames (topic, body) of the
    /// wire format.
    #[error("expected 2 frames (topic, body), got {0}")]
    Frames(usize),

    /// A message body (or, when publishing, a payload) is larger than the
    /// configured limit.
    #[error("message body of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// Size of the body frame.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// The body is not a MessagePack map, or not valid MessagePack at all,
    /// or a field has the wrong type, is missing or is not UTF-8.
    #[error("malformed message body: {0}")]
    Body(String),

    /// The body was written in a format version this crate does not read.
    #[error("unsupported wire format version {0} (this build reads version 1)")]
    Version(u64),

    /// The sequence number is 0; sequences start at 1.
    #[error("sequence number 0 is invalid (sequences start at 1)")]
    ZeroSequence,

    /// The topic frame is not the body's workflow id followed by a NUL byte.
    #[error("topic frame does not match the workflow id in the body")]
    TopicMismatch,
}

/// Result alias for the log bus.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for the errors that describe a malformed message on the wire.
    pub fn is_decode(&self) -> bool {
        matches!(
            self,
            Error::Frames(_)
                | Error::Oversize { .. }
                | Error::Body(_)
                | Error::Version(_)
                | Error::ZeroSequence
                | Error::TopicMismatch
        )
    }

    #[cfg(feature = "sockets")]
    pub(crate) fn zmq(op: &'static str) -> impl FnOnce(zmq::Error) -> Error {
        move |source| Error::Zmq { op, source }
    }
}

/// Why the principal refused an API request (`docs/api.md`). On the wire: the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not one MessagePack map with an `"op"` string.
    Malformed,
    /// An `"op"` this principal does not know.
    UnknownOp,
    /// A known op with missing, unknown or ill-typed fields, or a query
    /// that cannot be answered as stated.
    Invalid,
    /// Too many requests are waiting; retry later.
    Busy,
    /// The database failed; the request may succeed if retried.
    Database,
    /// A query ran past the principal's time limit and was stopped;
    /// narrow it.
    TimedOut,
    /// The principal is shutting down.
    ShuttingDown,
    /// The request is not allowed: a SQL statement that writes or reaches
    /// outside the database and its archive.
    Forbidden,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::UnknownOp => "unknown_op",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Busy => "busy",
            ErrorKind::Database => "database",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Forbidden => "forbidden",
        })
    }
}
