//! What can stop the principal.

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
    /// The API socket could not be bound, usually because the port is in
    /// use.
    #[error("cannot bind the API on {endpoint}: {source}")]
    ApiBind {
        /// The endpoint that was asked for.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
    /// Any other ZeroMQ failure setting up the API server.
    #[error("API server: zeromq failed to {op}: {source}")]
    ApiSocket {
        /// What was being done.
        op: &'static str,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
    /// Asked to bind an address other than loopback with no CURVE keys:
    /// anyone who can reach it could write and read every log line.
    #[error(
        "refusing to bind {host} without CURVE keys: set CDKTR_CURVE_SECRET_KEY and CDKTR_AUTHORIZED_KEYS_DIR \
         (README, \"Security\"), or pass --insecure"
    )]
    Insecure {
        /// The host that was asked for.
        host: String,
    },
    /// An API server thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// Which thread.
        name: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Result alias for the principal.
pub type Result<T, E = Error> = std::result::Result<T, E>;
