//! CURVE keys for every socket of the bus and the API (CurveZMQ:
//! Curve25519 keys, encryption and authentication).
//!
//! A key pair lives in two files in ZeroMQ's certificate format (the one
//! czmq's `zcert` and pyzmq's `zmq.auth.load_certificate` read):
//! `NAME.key` with both keys (mode 0600) and `NAME.pub` with the public key
//! only. The principal allows a client whose `NAME.pub` is in its authorized
//! keys directory with a `role` in its metadata (see [`Role`]).
//!
//! ```no_run
//! use cdktr_log::curve::{KeyPair, Role};
//! # fn main() -> cdktr_log::Result<()> {
//! let dir = std::path::Path::new("/etc/cdktr/keys");
//! let pair = KeyPair::generate()?;
//! let (secret, public) = pair.write(dir, "agent-7", Some(Role::Publisher))?;
//! println!("copy {} into the principal's authorized keys directory", public.display());
//! let again = KeyPair::read(&secret)?;
//! assert_eq!(again.public, pair.public);
//! # Ok(()) }
//! ```

mod authorizer;
mod cert;

use std::path::{Path, PathBuf};

pub use authorizer::{Authorizer, Endpoint, ZapHandler};
pub use cert::{Certificate, KeyPair, PublicKey};

use crate::config::{env, Lookup};
use crate::error::{Error, Result};

/// Env var: the path of this process's own secret key file (`NAME.key`).
pub const ENV_CURVE_SECRET_KEY: &str = "CDKTR_CURVE_SECRET_KEY";
/// Env var: the principal's public key, as its `.pub` file's path (for
/// clients).
pub const ENV_CURVE_SERVER_KEY: &str = "CDKTR_CURVE_SERVER_KEY";
/// Env var: the principal's directory of allowed client keys.
pub const ENV_AUTHORIZED_KEYS_DIR: &str = "CDKTR_AUTHORIZED_KEYS_DIR";

/// What a client key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Push log lines, status updates, heartbeats, watermarks.
    Publisher,
    /// Subscribe to the live stream, query, timeline, stats, sql, export.
    Reader,
    /// Everything.
    Admin,
}

impl Role {
    /// The name in a key file's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "publisher" => Ok(Role::Publisher),
            "reader" => Ok(Role::Reader),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Key {
                path: PathBuf::new(),
                reason: format!("unknown role {other:?} (expected publisher, reader or admin)"),
            }),
        }
    }
}

/// Whether this process's libzmq has CURVE (built with libsodium).
pub fn available() -> bool {
    zmq::has("curve").unwrap_or(false)
}

/// [`ENV_CURVE_SECRET_KEY`]'s key pair and the path in `other`: both set,
/// or neither (`None`).
///
/// # Errors
/// [`Error::EnvPair`] when only one is set (`why` says why both are
/// needed); [`Error::InvalidEnv`]; [`Error::Key`] for the key pair.
pub(crate) fn paired(get: Lookup<'_>, other: &'static str, why: &'static str) -> Result<Option<(KeyPair, PathBuf)>> {
    let secret: Option<PathBuf> = env(ENV_CURVE_SECRET_KEY, get)?;
    let path: Option<PathBuf> = env(other, get)?;
    let (given, missing) = match (secret, path) {
        (None, None) => return Ok(None),
        (Some(secret), Some(path)) => {
            let pair = KeyPair::read(&secret).map_err(from_var(ENV_CURVE_SECRET_KEY))?;
            return Ok(Some((pair, path)));
        }
        (Some(_), None) => (ENV_CURVE_SECRET_KEY, other),
        (None, Some(_)) => (other, ENV_CURVE_SECRET_KEY),
    };
    Err(Error::EnvPair { given, missing, why })
}

/// A key file's error, saying which variable named the file.
pub(crate) fn from_var(var: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Key { path, reason } => Error::Key {
            path,
            reason: format!("{reason} (named by {var})"),
        },
        other => other,
    }
}

fn require_curve() -> Result<()> {
    if available() {
        Ok(())
    } else {
        Err(Error::CurveUnavailable)
    }
}

/// A client's keys: its own pair and the principal's public key.
#[derive(Clone)]
pub struct ClientKeys {
    /// This client's key pair.
    pub pair: KeyPair,
    /// The principal's public key.
    pub server: PublicKey,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("public", &self.pair.public)
            .field("server", &self.server)
            .finish()
    }
}

impl ClientKeys {
    /// Reads the pair from `secret` (`NAME.key`) and the principal's key
    /// from `server` (its `.pub` or `.key` file).
    ///
    /// # Errors
    /// [`Error::Key`] naming the file that cannot be read or is not a key.
    pub fn read(secret: &Path, server: &Path) -> Result<ClientKeys> {
        Ok(ClientKeys {
            pair: KeyPair::read(secret)?,
            server: Certificate::read(server)?.public,
        })
    }

    /// From the process environment, as [`from_lookup`](Self::from_lookup).
    ///
    /// # Errors
    /// As [`from_lookup`](Self::from_lookup).
    pub fn from_env() -> Result<Option<ClientKeys>> {
        ClientKeys::from_lookup(&crate::config::process_env)
    }

    /// From [`ENV_CURVE_SECRET_KEY`] and [`ENV_CURVE_SERVER_KEY`]: `None`
    /// when neither is set.
    ///
    /// # Errors
    /// [`Error::EnvPair`] when only one is set; [`Error::InvalidEnv`] for
    /// an empty one; [`Error::Key`] as [`read`](Self::read).
    pub fn from_lookup(get: Lookup<'_>) -> Result<Option<ClientKeys>> {
        let why = "a CURVE client needs its own key pair and the principal's public key";
        let Some((pair, server)) = paired(get, ENV_CURVE_SERVER_KEY, why)? else {
            return Ok(None);
        };
        let server = Certificate::read(&server).map_err(from_var(ENV_CURVE_SERVER_KEY))?;
        Ok(Some(ClientKeys {
            pair,
            server: server.public,
        }))
    }

    /// Makes `socket` a CURVE client with these keys (before it connects).
    ///
    /// # Errors
    /// [`Error::CurveUnavailable`]; [`Error::Zmq`].
    pub fn apply(&self, socket: &zmq::Socket) -> Result<()> {
        require_curve()?;
        socket
            .set_curve_serverkey(&self.server.0)
            .map_err(Error::zmq("set CURVE_SERVERKEY"))?;
        socket
            .set_curve_publickey(&self.pair.public.0)
            .map_err(Error::zmq("set CURVE_PUBLICKEY"))?;
        socket
            .set_curve_secretkey(self.pair.secret())
            .map_err(Error::zmq("set CURVE_SECRETKEY"))
    }
}

#[cfg(test)]
mod tests;
