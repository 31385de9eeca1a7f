//! The principal's hub: PULL from agents, PUB to subscribers, and a lossless
//! hand-off to in-process sinks such as the Persister.

mod connections;
mod forwarder;
mod relisten;
mod streams;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use connections::Connections;
use forwarder::{Forwarder, Sink};
use relisten::Relisten;
use streams::Streams;

use crate::budget::ByteBudget;
use crate::config::BusConfig;
use crate::curve::{Authorizer, Endpoint};
use crate::error::{Error, Result};
use crate::stats::StatsCell;
use crate::wire::{Line, DEFAULT_MAX_MESSAGE_BYTES};

/// The running log manager; shuts down and joins its thread on
/// [`shutdown`](Self::shutdown) or drop.
///
/// Every valid message is republished on the PUB socket and handed to each
/// sink. Sinks get every message: a full sink channel makes the manager
/// wait (back-pressure reaches the publishers through ZeroMQ's queues). A
/// subscriber that falls behind only loses its own messages, at its PUB
/// high-water mark, and never slows the manager. Malformed messages are
/// counted in [`ManagerStats::rejected`] and dropped.
///
/// ```
/// use cdktr_log::{BusConfig, LogManager};
///
/// let (sink, persisted) = crossbeam_channel::bounded(10_000);
/// let config = BusConfig { host: "127.0.0.1".into(), listening_port: 0, publishing_port: 0 };
/// let manager = LogManager::builder(&config).sink(sink).start()?;
/// println!("agents push to {}", manager.listening_endpoint());
/// let stats = manager.shutdown()?;
/// assert_eq!(stats.received, 0);
/// # drop(persisted);
/// # Ok::<(), cdktr_log::Error>(())
/// ```
#[must_use = "dropping the manager stops it"]
pub struct LogManager {
    config: BusConfig,
    listening_endpoint: String,
    publishing_endpoint: String,
    stop: Arc<AtomicBool>,
    counters: Arc<StatsCell<ManagerStats>>,
    worker: Option<JoinHandle<()>>,
}

/// Counters of a manager, as of the moment they are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManagerStats {
    /// Messages received on the PULL socket, valid or not.
    pub received: u64,
    /// Valid messages republished on the PUB socket.
    pub forwarded: u64,
    /// Re-sent messages (sequence number at or below one already
    /// republished) given to the sinks but not republished, so that
    /// subscribers see each line once.
    pub replayed: u64,
    /// Malformed messages dropped.
    pub rejected: u64,
    /// Messages a sink could not take because its receiver was gone.
    pub sink_lost: u64,
    /// Total time spent waiting for full sinks.
    pub sink_blocked: Duration,
    /// Connections to the log port open now.
    pub connections: u64,
    /// Connections to the log port that closed: their publisher stopped,
    /// or sent a frame over twice the message limit (ZeroMQ drops the
    /// connection then).
    pub disconnects: u64,
    /// Connections ZeroMQ could not accept (out of file descriptors).
    pub accept_failures: u64,
    /// The log port is not listening for now: the process is short of
    /// file descriptors.
    pub refusing_connections: bool,
    /// Times the log port stopped listening for want of file descriptors
    /// (closing the connections it had; publishers reconnect).
    pub listener_pauses: u64,
    /// Publisher ids whose numbers kept stepping back: two live publishers
    /// sharing one id (each noticed at most once per 10 s, logged).
    pub shared_ids: u64,
    /// Markers sent, one per follower that attached.
    pub marks: u64,
}

/// Configures a [`LogManager`]; see [`LogManager::builder`].
#[must_use = "a builder does nothing until `start`"]
pub struct ManagerBuilder {
    config: BusConfig,
    sinks: Vec<Sink>,
    max_message_bytes: usize,
    pub_hwm: i32,
    authorizer: Option<Authorizer>,
}

impl ManagerBuilder {
    /// Adds an in-process sink that receives every valid message, in
    /// arrival order, without loss.
    pub fn sink(mut self, sink: Sender<Line>) -> Self {
        self.sinks.push(Sink { tx: sink, budget: None });
        self
    }

    /// As [`sink`](Self::sink), its queue also bounded in bytes: the manager
    /// takes each line's [`Line::memory_bytes`] from `budget` before sending
    /// it and waits while they do not fit; the receiver gives them back as
    /// it takes each message. So memory stays bounded whatever the payload
    /// size.
    pub fn sink_within(mut self, sink: Sender<Line>, budget: Arc<ByteBudget>) -> Self {
        self.sinks.push(Sink {
            tx: sink,
            budget: Some(budget),
        });
        self
    }

    /// Largest body accepted (default 4 MiB). Larger bodies are rejected and
    /// counted; bodies over twice this size make ZeroMQ drop the sender's
    /// connection before anything is allocated (`ZMQ_MAXMSGSIZE`).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes.max(1);
        self
    }

    /// Messages queued per subscriber before that subscriber starts losing
    /// messages (default 10,000).
    pub fn subscriber_hwm(mut self, messages: i32) -> Self {
        self.pub_hwm = messages;
        self
    }

    /// CURVE on both sockets: only clients `authorizer` allows connect, log
    /// PULL for publishers and admins, live PUB for readers and admins.
    pub fn curve(mut self, authorizer: Authorizer) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Binds both sockets and starts forwarding.
    ///
    /// # Errors
    /// [`Error::Bind`] if either port is in use or the host is not local;
    /// [`Error::Zmq`] if a socket cannot be made; [`Error::Spawn`].
    pub fn start(self) -> Result<LogManager> {
        let ctx = zmq::Context::new();
        // Serving before the sockets bind: libzmq lets every client in
        // while no handler answers.
        let zap = self.authorizer.as_ref().map(|a| a.serve(&ctx)).transpose()?;
        let pull = ctx.socket(zmq::PULL).map_err(Error::zmq("create the PULL socket"))?;
        let hard_limit = i64::try_from(self.max_message_bytes.saturating_mul(2)).unwrap_or(i64::MAX);
        pull.set_maxmsgsize(hard_limit).map_err(Error::zmq("set MAXMSGSIZE"))?;
        // Per connection: 200 waiting messages keep 4 publishers at full
        // speed and bound what large payloads hold (libzmq's default,
        // 1,000, held 40 MB at 10 KiB a line).
        pull.set_rcvhwm(200).map_err(Error::zmq("set RCVHWM"))?;
        pull.set_linger(0).map_err(Error::zmq("set LINGER"))?;
        // A connection that never says hello holds a descriptor for
        // nothing: closed after this long (libzmq's default is 30 s).
        pull.set_handshake_ivl(10_000)
            .map_err(Error::zmq("set HANDSHAKE_IVL"))?;
        if let Some(a) = &self.authorizer {
            a.apply(&pull, Endpoint::Logs)?;
        }
        let listening_endpoint = bind(&pull, &self.config.listening_endpoint())?;
        let connections = Connections::watch(&ctx, &pull, &listening_endpoint, hard_limit)?;

        // XPUB: a PUB that also hears subscriptions, to answer markers.
        let publisher = ctx.socket(zmq::XPUB).map_err(Error::zmq("create the PUB socket"))?;
        publisher.set_sndhwm(self.pub_hwm).map_err(Error::zmq("set SNDHWM"))?;
        publisher.set_linger(0).map_err(Error::zmq("set LINGER"))?;
        if let Some(a) = &self.authorizer {
            a.apply(&publisher, Endpoint::Live)?;
        }
        let publishing_endpoint = bind(&publisher, &self.config.publishing_endpoint())?;

        let config = BusConfig {
            host: self.config.host.clone(),
            listening_port: port_of(&listening_endpoint),
            publishing_port: port_of(&publishing_endpoint),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(StatsCell::default());
        let worker = Forwarder {
            _ctx: ctx,
            pull,
            connections,
            publisher,
            sinks: self.sinks,
            max: self.max_message_bytes,
            stop: stop.clone(),
            counters: counters.clone(),
            stats: ManagerStats::default(),
            last_reject_warning: None,
            streams: Streams::default(),
            live: Relisten::new(&publishing_endpoint, "live port"),
            removals_seen: self.authorizer.as_ref().map_or(0, Authorizer::removals),
            authorizer: self.authorizer,
            _zap: zap,
        };
        let worker = std::thread::Builder::new()
            .name("cdktr-log-manager".into())
            .spawn(move || worker.run())
            .map_err(|source| Error::Spawn {
                name: "log manager",
                source,
            })?;
        Ok(LogManager {
            config,
            listening_endpoint,
            publishing_endpoint,
            stop,
            counters,
            worker: Some(worker),
        })
    }
}

impl LogManager {
    /// A builder binding `config`'s host and ports (0 picks free ports).
    pub fn builder(config: &BusConfig) -> ManagerBuilder {
        ManagerBuilder {
            config: config.clone(),
            sinks: Vec::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            pub_hwm: 10_000,
            authorizer: None,
        }
    }

    /// The bus configuration with the ports actually bound, for publishers
    /// and subscribers to connect with.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The endpoint agents push to, e.g. `tcp://127.0.0.1:5562`.
    pub fn listening_endpoint(&self) -> &str {
        &self.listening_endpoint
    }

    /// The endpoint subscribers connect to.
    pub fn publishing_endpoint(&self) -> &str {
        &self.publishing_endpoint
    }

    /// The counters as of now.
    pub fn stats(&self) -> ManagerStats {
        self.counters.snapshot()
    }

    /// Stops taking new messages, forwards what ZeroMQ had already received,
    /// closes the sockets (dropping the sinks' senders, so a sink sees its
    /// channel close) and returns the final counters.
    ///
    /// # Errors
    /// [`Error::Closed`] if the forwarding thread had panicked.
    pub fn shutdown(mut self) -> Result<ManagerStats> {
        self.stop()
    }

    fn stop(&mut self) -> Result<ManagerStats> {
        if let Some(worker) = self.worker.take() {
            self.stop.store(true, Relaxed);
            worker.join().map_err(|_| Error::Closed("log manager"))?;
        }
        Ok(self.stats())
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("{e}");
        }
    }
}

fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String> {
    socket.bind(endpoint).map_err(|source| Error::Bind {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    match socket.get_last_endpoint() {
        Ok(Ok(e)) => Ok(e),
        _ => Ok(endpoint.to_owned()),
    }
}

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager")
            .field("listening_endpoint", &self.listening_endpoint)
            .field("publishing_endpoint", &self.publishing_endpoint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("config", &self.config)
            .field("sinks", &self.sinks.len())
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}
