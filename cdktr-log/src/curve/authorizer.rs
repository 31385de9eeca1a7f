//! Who may connect: the principal's key pair, its directory of allowed
//! client keys (re-read when it changes), and a ZAP handler per ZeroMQ
//! context that answers libzmq's "may this key connect here?".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{Certificate, KeyPair, PublicKey, Role, ENV_AUTHORIZED_KEYS_DIR};
use crate::config::Lookup;
use crate::error::{Error, Result};

/// The directory is looked at again at most this often.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A refused key is logged at most once per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The handshake interval of a CURVE server socket. libzmq holds a
/// connection it refused with a "temporary" failure until the handshake
/// interval ends, and the client tries again only then; so this is also how
/// soon a client whose key was added gets in.
const HANDSHAKE: Duration = Duration::from_secs(3);
/// How often a ZAP handler looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// A server socket, as its ZAP domain names it: which roles may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// The log PULL socket: publishers and admins.
    Logs,
    /// The live PUB socket: readers and admins.
    Live,
    /// The API ROUTER: every role; each request is checked against it.
    Api,
}

impl Endpoint {
    /// The ZAP domain the socket sets.
    pub fn domain(self) -> &'static str {
        match self {
            Endpoint::Logs => "cdktr-logs",
            Endpoint::Live => "cdktr-live",
            Endpoint::Api => "cdktr-api",
        }
    }

    fn from_domain(domain: &[u8]) -> Option<Endpoint> {
        [Endpoint::Logs, Endpoint::Live, Endpoint::Api]
            .into_iter()
            .find(|e| e.domain().as_bytes() == domain)
    }

    /// Whether `role` may connect to this endpoint.
    pub fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin) | (Endpoint::Logs, Role::Publisher) | (Endpoint::Live, Role::Reader) | (Endpoint::Api, _)
        )
    }
}

/// The key files of a directory, sorted, each with its modification time
/// and length: what tells a change.
type Listing = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// An allowed client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Client {
    name: String,
    role: Role,
}

#[derive(Default)]
struct Keys {
    by_key: HashMap<PublicKey, Client>,
    by_name: HashMap<String, Role>,
}

struct Inner {
    pair: KeyPair,
    dir: PathBuf,
    keys: RwLock<Keys>,
    /// When the directory was last looked at, and what it held then.
    seen: Mutex<(Instant, Listing)>,
    refused: AtomicU64,
    /// Reloads that removed a key.
    removals: AtomicU64,
    logged: Mutex<HashMap<String, Instant>>,
}

/// The principal's side of CURVE: its key pair and the clients it allows.
/// Cheap to clone; every clone sees the same keys and counters.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("public", &self.inner.pair.public)
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Allows the clients whose key files are in `dir`. Each file (names
    /// starting with `.` aside) is a certificate with a `role` in its
    /// metadata; its `name`, or else the file name without extension,
    /// names the client in logs and as the API's `User-Id`. A file that
    /// cannot be read is skipped with a warning.
    ///
    /// # Errors
    /// [`Error::CurveUnavailable`]; [`Error::Key`] when `dir` cannot be
    /// listed.
    pub fn new(pair: KeyPair, dir: impl Into<PathBuf>) -> Result<Authorizer> {
        super::require_curve()?;
        let dir = dir.into();
        let listing = list(&dir)?;
        let auth = Authorizer {
            inner: Arc::new(Inner {
                pair,
                dir,
                keys: RwLock::new(Keys::default()),
                seen: Mutex::new((Instant::now(), Vec::new())),
                refused: AtomicU64::new(0),
                removals: AtomicU64::new(0),
                logged: Mutex::new(HashMap::new()),
            }),
        };
        auth.load(listing);
        Ok(auth)
    }

    /// From the process environment, as [`from_lookup`](Self::from_lookup).
    ///
    /// # Errors
    /// As [`from_lookup`](Self::from_lookup).
    pub fn from_env() -> Result<Option<Authorizer>> {
        Authorizer::from_lookup(&crate::config::process_env)
    }

    /// From [`ENV_CURVE_SECRET_KEY`](super::ENV_CURVE_SECRET_KEY) and [`ENV_AUTHORIZED_KEYS_DIR`]:
    /// `None` when neither is set.
    ///
    /// # Errors
    /// [`Error::EnvPair`] when only one is set; [`Error::InvalidEnv`] for
    /// an empty one; as [`new`](Self::new) and [`KeyPair::read`].
    pub fn from_lookup(get: Lookup<'_>) -> Result<Option<Authorizer>> {
        let why = "CURVE on the principal needs its own key pair and the clients' keys";
        let Some((pair, dir)) = super::paired(get, ENV_AUTHORIZED_KEYS_DIR, why)? else {
            return Ok(None);
        };
        Authorizer::new(pair, dir)
            .map(Some)
            .map_err(super::from_var(ENV_AUTHORIZED_KEYS_DIR))
    }

    /// The principal's public key, which clients need.
    pub fn public(&self) -> PublicKey {
        self.inner.pair.public
    }

    /// Makes `socket` a CURVE server for `endpoint` (before it binds, and
    /// after its other options: it sets the handshake interval, 3 s). A
    /// [`ZapHandler`] must be serving its context.
    ///
    /// # Errors
    /// [`Error::Zmq`].
    pub fn apply(&self, socket: &zmq::Socket, endpoint: Endpoint) -> Result<()> {
        socket.set_curve_server(true).map_err(Error::zmq("set CURVE_SERVER"))?;
        socket
            .set_handshake_ivl(HANDSHAKE.as_millis() as i32)
            .map_err(Error::zmq("set HANDSHAKE_IVL"))?;
        socket
            .set_curve_secretkey(self.inner.pair.secret())
            .map_err(Error::zmq("set CURVE_SECRETKEY"))?;
        socket
            .set_zap_domain(endpoint.domain())
            .map_err(Error::zmq("set ZAP_DOMAIN"))
    }

    /// Answers `context`'s ZAP requests on a thread until the handler is
    /// dropped. Start it before binding the context's CURVE sockets, and
    /// drop it after closing them.
    ///
    /// # Errors
    /// [`Error::Zmq`] (a handler already serves the context: `EADDRINUSE`);
    /// [`Error::Spawn`].
    pub fn serve(&self, context: &zmq::Context) -> Result<ZapHandler> {
        let rep = context.socket(zmq::REP).map_err(Error::zmq("create the ZAP socket"))?;
        rep.set_linger(0).map_err(Error::zmq("set LINGER"))?;
        rep.bind("inproc://zeromq.zap.01")
            .map_err(Error::zmq("bind the ZAP handler"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (auth, flag) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("cdktr-zap".into())
            .spawn(move || auth.answer(rep, &flag))
            .map_err(|source| Error::Spawn {
                name: "ZAP handler",
                source,
            })?;
        Ok(ZapHandler {
            stop,
            thread: Some(thread),
        })
    }

    /// The role of the client named `user_id` (the `User-Id` of its
    /// messages) as of now: `None` once its key file is removed.
    pub fn role_of(&self, user_id: &str) -> Option<Role> {
        self.reload_if_due();
        let keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.by_name.get(user_id).copied()
    }

    /// Connections and requests refused so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }

    /// How many times a reload of the directory removed a key: a server
    /// that sees it change closes its connections, and the clients
    /// reconnect with a new handshake.
    pub fn removals(&self) -> u64 {
        self.inner.removals.load(Relaxed)
    }

    /// Counts a refusal and logs it (at most once a minute per `who`).
    pub fn refuse(&self, who: &str, why: &str) {
        self.inner.refused.fetch_add(1, Relaxed);
        let mut logged = self.inner.logged.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = logged.get(who).is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
        if due {
            logged.insert(who.to_owned(), now);
            log::warn!("security: refused {who}: {why}");
        }
    }

    fn answer(&self, rep: zmq::Socket, stop: &AtomicBool) {
        while !stop.load(Relaxed) {
            // Here too, so that a removed key is noticed with no new
            // connection asking.
            self.reload_if_due();
            match rep.poll(zmq::POLLIN, POLL.as_millis() as i64) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => {
                    log::error!("security: the ZAP handler stops: {e}");
                    return;
                }
            }
            let request = match rep.recv_multipart(0) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("security: the ZAP handler stops: {e}");
                    return;
                }
            };
            let reply = self.decide(&request);
            if let Err(e) = rep.send_multipart(reply, 0) {
                log::error!("security: the ZAP handler cannot reply: {e}");
            }
        }
    }

    /// The ZAP reply (RFC 27) to `request`.
    fn decide(&self, request: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let id = request.get(1).cloned().unwrap_or_default();
        let reply = |code: &str, text: &str, user: &str| {
            vec![
                b"1.0".to_vec(),
                id.clone(),
                code.into(),
                text.into(),
                user.into(),
                Vec::new(),
            ]
        };
        // version, id, domain, address, identity, mechanism, key
        if request.len() != 7 || request[0] != b"1.0" || request[5] != b"CURVE" || request[6].len() != 32 {
            self.refuse("a malformed ZAP request", "not a CURVE request");
            return reply("400", "not a CURVE request", "");
        }
        let address = String::from_utf8_lossy(&request[3]).into_owned();
        let Some(endpoint) = Endpoint::from_domain(&request[2]) else {
            self.refuse(&address, "unknown ZAP domain");
            return reply("400", "unknown domain", "");
        };
        let key = PublicKey(request[6].as_slice().try_into().expect("checked: 32 bytes"));
        self.reload_if_due();
        let client = {
            let keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.by_key.get(&key).cloned()
        };
        // 300, "temporary failure", not 400: libzmq closes the connection
        // without an ERROR command, so the client reconnects and gets in
        // once its key is added; after a 400 it would never try again.
        match client {
            None => {
                self.refuse(
                    &format!("key {key} from {address}"),
                    "not in the authorized keys directory",
                );
                reply("300", "unknown key", "")
            }
            Some(c) if !endpoint.allows(c.role) => {
                let why = format!("role {} may not connect to {}", c.role.as_str(), endpoint.domain());
                self.refuse(&format!("{} from {address}", c.name), &why);
                reply("300", "role not allowed here", "")
            }
            Some(c) => reply("200", "OK", &c.name),
        }
    }

    fn reload_if_due(&self) {
        let listing = {
            let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0.elapsed() < RELOAD_EVERY {
                return;
            }
            seen.0 = Instant::now();
            match list(&self.inner.dir) {
                Ok(l) if l == seen.1 => return,
                Ok(l) => l,
                Err(e) => {
                    log::error!("security: {e}; keeping the keys read before");
                    return;
                }
            }
        };
        self.load(listing);
    }

    fn load(&self, listing: Listing) {
        let mut keys = Keys::default();
        for (path, _, _) in &listing {
            match client_of(path) {
                Ok((key, client)) => {
                    keys.by_name.insert(client.name.clone(), client.role);
                    keys.by_key.insert(key, client);
                }
                Err(e) => log::warn!("security: skipped: {e}"),
            }
        }
        log::info!(
            "security: {} authorized keys in {}",
            keys.by_key.len(),
            self.inner.dir.display()
        );
        let mut current = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        let removed = current
            .by_key
            .iter()
            .any(|(key, client)| keys.by_key.get(key).is_none_or(|now| now.role != client.role));
        if removed {
            self.inner.removals.fetch_add(1, Relaxed);
        }
        *current = keys;
        drop(current);
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner()).1 = listing;
    }
}

fn client_of(path: &Path) -> Result<(PublicKey, Client)> {
    let cert = Certificate::read(path)?;
    let role = cert.role.ok_or_else(|| Error::Key {
        path: path.to_owned(),
        reason: "no role in its metadata (role = \"publisher\", \"reader\" or \"admin\")".into(),
    })?;
    let name = cert.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok((cert.public, Client { name, role }))
}

/// The key files in `dir`, sorted, with what tells a change.
fn list(dir: &Path) -> Result<Listing> {
    let failed = |e: std::io::Error| Error::Key {
        path: dir.to_owned(),
        reason: format!("cannot list the authorized keys directory: {e}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            files.push((entry.path(), meta.modified().ok(), meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// A running ZAP handler; dropping it stops and joins its thread.
#[must_use = "the ZAP handler stops when dropped, and then CURVE sockets refuse every client"]
pub struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ZapHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZapHandler").finish_non_exhaustive()
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
