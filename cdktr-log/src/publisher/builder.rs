//! [`PublisherBuilder`]: the publisher's settings, and starting it (with a
//! worker per dead publisher's spool to adopt).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};

use super::acknowledged::Acknowledged;
use super::acks::Acks;
use super::best_effort::BestEffort;
use super::socket::{PushSocket, SEND_HWM};
use super::spool::Spool;
use super::worker::{Core, Delivery, Worker};
use super::{Command, LogPublisher, PublisherStats};
use crate::config::{ApiConfig, BusConfig};
use crate::curve::ClientKeys;
use crate::error::{Error, Result};
use crate::stats::StatsCell;
use crate::wire;

/// Configures a [`LogPublisher`]; see [`LogPublisher::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start`"]
pub struct PublisherBuilder {
    config: BusConfig,
    api: Option<ApiConfig>,
    publisher_id: Option<String>,
    buffer_bytes: usize,
    spool_dir: Option<PathBuf>,
    spool_bytes: u64,
    queue: usize,
    send_hwm: i32,
    shutdown_timeout: Duration,
    max_message_bytes: usize,
    stall_timeout: Duration,
    adopt_orphans: bool,
    curve: Option<ClientKeys>,
}

/// The default spool directory: `$HOME/.cdktr/spool`.
pub fn default_spool_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cdktr").join("spool")
}

impl PublisherBuilder {
    /// Connects to the log port with CURVE, as a client with these keys
    /// (the key's role must be `publisher` or `admin`).
    pub fn curve(mut self, keys: ClientKeys) -> Self {
        self.curve = Some(keys);
        self
    }

    pub(super) fn new(config: &BusConfig) -> PublisherBuilder {
        PublisherBuilder {
            config: config.clone(),
            api: None,
            publisher_id: None,
            buffer_bytes: 64 << 20,
            spool_dir: None,
            spool_bytes: 1 << 30,
            queue: 16_384,
            send_hwm: SEND_HWM,
            shutdown_timeout: Duration::from_secs(5),
            max_message_bytes: wire::DEFAULT_MAX_MESSAGE_BYTES,
            stall_timeout: Duration::from_secs(5),
            adopt_orphans: true,
            curve: None,
        }
    }

    /// Names this publisher on the wire. Must never be used by another
    /// publisher, before or after this one: the principal takes a reused
    /// id's sequence numbers for re-sends. The default is random.
    pub fn publisher_id(mut self, id: impl Into<String>) -> Self {
        self.publisher_id = Some(id.into());
        self
    }

    /// Acknowledged delivery: keep every line until the principal at `api`
    /// reports it persisted, spill past the memory cap, re-send what was
    /// not accepted. See `docs/delivery.md`.
    pub fn acknowledged_by(mut self, api: &ApiConfig) -> Self {
        self.api = Some(api.clone());
        self
    }

    /// Most bytes held in memory (default 64 MiB). Past it, acknowledged
    /// mode reads lines back from the spool as memory frees; best effort
    /// drops and counts.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Where acknowledged mode writes every line until the principal has
    /// persisted it (default `$HOME/.cdktr/spool`), so that a killed
    /// process loses none. A publisher started on a directory re-sends what
    /// dead publishers left in it.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Most bytes in the spool directory for this publisher (default
    /// 1 GiB); past it, new lines are dropped and counted.
    pub fn spool_bytes(mut self, bytes: u64) -> Self {
        self.spool_bytes = bytes;
        self
    }

    /// Capacity of the channel from callers to the background thread
    /// (default 16,384 messages); `publish` waits while it is full.
    pub fn queue_capacity(mut self, messages: usize) -> Self {
        self.queue = messages.max(1);
        self
    }

    /// Largest encoded body sent (default 4 MiB, the manager's default
    /// limit). `publish` refuses a message whose payload alone is larger;
    /// one that still encodes larger is dropped and counted.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How long [`LogPublisher::shutdown`] (and drop) keep trying to deliver
    /// (and, acknowledged, to have acknowledged) what is queued (default
    /// 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long the principal may hold back its acceptance of sent lines
    /// before they are re-sent (default 5 s; doubles while nothing moves,
    /// up to 30 s).
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Whether to re-send what dead publishers left in the spool directory
    /// (default true).
    pub fn adopt_orphans(mut self, adopt: bool) -> Self {
        self.adopt_orphans = adopt;
        self
    }

    /// Connects and starts the background thread. The principal need not be
    /// up: ZeroMQ connects when it appears.
    ///
    /// # Errors
    /// [`Error::Connect`] for an endpoint ZeroMQ cannot parse or resolve,
    /// [`Error::Zmq`] if a socket cannot be made, [`Error::Spawn`] if the
    /// thread cannot be started, [`Error::Spool`] if the spool directory
    /// cannot be used.
    pub fn start(self) -> Result<LogPublisher> {
        let publisher_id: Arc<str> = self.publisher_id.clone().unwrap_or_else(random_id).into();
        let stats = Arc::new(StatsCell::default());
        let (tx, rx) = bounded(self.queue);
        let mut orphans = Vec::new();
        if self.api.is_some() && self.adopt_orphans {
            let dir = self.spool_path();
            for id in Spool::orphans(&dir) {
                let Some(spool) = Spool::open(&dir, &id).map_err(|e| spool_error(&dir, e))? else {
                    continue; // another new publisher took it first
                };
                log::info!(
                    "log publisher: re-sending what publisher {id} left in {}",
                    dir.display()
                );
                let (otx, orx) = bounded(4);
                let worker = self.worker(id.into(), orx, Arc::default(), Some(spool), true)?;
                orphans.push((otx, spawn(worker)?));
            }
        }
        let worker = self.worker(publisher_id.clone(), rx, stats.clone(), None, false)?;
        Ok(LogPublisher {
            tx,
            stats,
            publisher_id,
            worker: Some(spawn(worker)?),
            orphans,
            shutdown_timeout: self.shutdown_timeout,
            max_message_bytes: self.max_message_bytes,
        })
    }

    fn spool_path(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(default_spool_dir)
    }

    fn worker(
        &self,
        publisher_id: Arc<str>,
        rx: Receiver<Command>,
        stats: Arc<StatsCell<PublisherStats>>,
        adopted: Option<Spool>,
        orphan: bool,
    ) -> Result<Worker> {
        let delivery = match &self.api {
            None => Delivery::BestEffort(BestEffort::new(self.buffer_bytes)),
            Some(api) => {
                let dir = self.spool_path();
                let spool = match adopted {
                    Some(s) => s,
                    None => own_spool(&dir, &publisher_id)?,
                };
                let acks = Acks::start(api, publisher_id.clone(), self.curve.clone())?;
                Delivery::Acknowledged(Box::new(Acknowledged::new(
                    acks,
                    self.buffer_bytes,
                    spool,
                    self.spool_bytes,
                    self.stall_timeout,
                )))
            }
        };
        let watch = matches!(delivery, Delivery::Acknowledged(_));
        let socket = PushSocket::connect(
            self.config.listening_endpoint(),
            self.send_hwm,
            watch,
            self.curve.as_ref(),
        )?;
        let core = Core::new(publisher_id, self.max_message_bytes, orphan);
        Ok(Worker::new(rx, socket, delivery, core, stats))
    }
}

fn spawn(worker: Worker) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cdktr-log-publisher".into())
        .spawn(move || worker.run())
        .map_err(|source| Error::Spawn {
            name: "publisher",
            source,
        })
}

/// A new publisher's spool: its id is new, so it has no segments.
fn own_spool(dir: &std::path::Path, publisher_id: &str) -> Result<Spool> {
    let in_use = |why: String| spool_error(dir, std::io::Error::other(why));
    match Spool::open(dir, publisher_id).map_err(|e| spool_error(dir, e))? {
        None => Err(in_use(format!("a live publisher named {publisher_id} holds its spool"))),
        Some(s) if !s.is_empty() => Err(in_use(format!(
            "an earlier publisher named {publisher_id} left lines in the spool; \
             publisher ids must never be reused (start with a new id to have them sent)"
        ))),
        Some(s) => Ok(s),
    }
}

fn spool_error(dir: &std::path::Path, source: std::io::Error) -> Error {
    Error::Spool {
        dir: dir.to_owned(),
        source,
    }
}

/// A random id, so that two publishers never share a sequence space.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("pub-{}-{:016x}", std::process::id(), h.finish())
}
