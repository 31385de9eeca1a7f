//! Agents' side of the bus: hands log lines to a background thread that
//! pushes them to the principal, and, with acknowledged delivery, keeps
//! each line until the principal says it is in the database.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::api::ApiClient;
use crate::config::{ApiConfig, BusConfig};
use crate::error::{Error, Result};
use crate::message::{now_ms, Level, LogMessage};
use crate::spool::{Pending, Spool};
use crate::wire::{self, Fields};

/// Publishes log messages to the principal's log manager.
///
/// [`publish`](Self::publish) only hands the message to a background thread
/// over a bounded channel; that thread encodes it, stamps it with this
/// publisher's id and the next sequence number, and pushes it.
///
/// Two delivery modes (`docs/delivery.md`):
///
/// - **Acknowledged** ([`PublisherBuilder::acknowledged_by`]): every line
///   is kept until the principal reports it persisted; lines past the memory
///   cap spill to files in the spool directory; after a lost connection, a
///   restarted principal or a failing database, everything not yet
///   accepted is re-sent, in order, and the principal stores each line
///   exactly once. Lines still unacknowledged at shutdown stay in the spool
///   and are sent by the next publisher using the same directory.
/// - **Best effort** (the default): lines are kept in memory only while
///   the socket cannot take them, up to [`PublisherBuilder::buffer_bytes`];
///   a line lost in a connection that breaks is not re-sent.
///
/// Lines that cannot be kept (both caps full) are dropped, counted in
/// [`PublisherStats::dropped`] and logged; they take no sequence number, so
/// the stream the principal sees has no holes.
///
/// Dropping the publisher shuts it down as [`shutdown`](Self::shutdown)
/// does.
///
/// ```no_run
/// use cdktr_log::{ApiConfig, BusConfig, LogPublisher, TaskContext};
///
/// let publisher = LogPublisher::builder(&BusConfig::from_env()?)
///     .acknowledged_by(&ApiConfig::from_env()?)
///     .start()?;
/// let log = publisher.task_logger(TaskContext {
///     workflow_id: "etl".into(),
///     workflow_name: "Nightly ETL".into(),
///     workflow_instance_id: "etl-20261127-1".into(),
///     task_name: "extract".into(),
///     task_instance_id: "extract-1".into(),
/// });
/// log.info("extracted 10 rows")?;
/// publisher.shutdown()?;
/// # Ok::<(), cdktr_log::Error>(())
/// ```
pub struct LogPublisher {
    tx: Sender<Command>,
    counters: Arc<Counters>,
    publisher_id: Arc<str>,
    worker: Option<JoinHandle<()>>,
    /// Workers re-sending what dead publishers left in the spool.
    orphans: Vec<(Sender<Command>, JoinHandle<()>)>,
    shutdown_timeout: Duration,
    max_message_bytes: usize,
}

/// The workflow and task a [`TaskLogger`] writes for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskContext {
    /// See [`LogMessage::workflow_id`].
    pub workflow_id: String,
    /// See [`LogMessage::workflow_name`].
    pub workflow_name: String,
    /// See [`LogMessage::workflow_instance_id`].
    pub workflow_instance_id: String,
    /// See [`LogMessage::task_name`].
    pub task_name: String,
    /// See [`LogMessage::task_instance_id`].
    pub task_instance_id: String,
}

/// A task's logger: `log.info("...")` with the workflow and task filled in.
///
/// Cheap to clone and to send to other threads; it shares its publisher's
/// queue, and fails with [`Error::Closed`] once the publisher has shut down.
#[derive(Clone)]
pub struct TaskLogger {
    tx: Sender<Command>,
    ctx: Arc<TaskContext>,
    max_message_bytes: usize,
}

/// Counters of a publisher, as of the moment they are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages accepted from callers.
    pub published: u64,
    /// Messages handed to the socket (the first time).
    pub sent: u64,
    /// Messages handed to the socket again after a lost connection or a
    /// stall (acknowledged mode).
    pub resent: u64,
    /// Messages dropped: both caps full, or (best effort) undelivered when
    /// shutdown timed out.
    pub dropped: u64,
    /// Highest sequence number the principal reported persisted
    /// (acknowledged mode).
    pub acknowledged: u64,
    /// Messages held in memory: unsent, or (acknowledged mode) unacknowledged.
    pub buffered: u64,
    /// Bytes held in memory.
    pub buffered_bytes: u64,
    /// Messages written to the spool directory so far.
    pub spilled: u64,
    /// Bytes in the spool directory now.
    pub spooled_bytes: u64,
    /// Messages left in the spool at shutdown, unacknowledged, for the next
    /// publisher using the directory.
    pub left_in_spool: u64,
}

/// Configures a [`LogPublisher`]; see [`LogPublisher::builder`].
#[derive(Debug, Clone)]
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
}

enum Command {
    Publish(LogMessage),
    Task {
        ctx: Arc<TaskContext>,
        level: Level,
        timestamp_ms: i64,
        payload: String,
    },
    /// Answer once everything accepted so far is sent (`false`) or
    /// persisted (`true`).
    Flush(Sender<()>, bool),
    Shutdown(Instant),
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    sent: AtomicU64,
    resent: AtomicU64,
    dropped: AtomicU64,
    acknowledged: AtomicU64,
    buffered: AtomicU64,
    buffered_bytes: AtomicU64,
    spilled: AtomicU64,
    spooled_bytes: AtomicU64,
    left_in_spool: AtomicU64,
}

/// The default spool directory: `$HOME/.cdktr/spool`.
pub fn default_spool_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cdktr").join("spool")
}

impl PublisherBuilder {
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
    /// mode spills to the spool directory; best effort drops and counts.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Where acknowledged mode spills (default `$HOME/.cdktr/spool`). A
    /// publisher started on a directory re-sends what dead publishers left
    /// in it.
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
        let counters = Arc::new(Counters::default());
        let (tx, rx) = bounded(self.queue);
        let spool_dir = self.spool_dir.clone().unwrap_or_else(default_spool_dir);
        let mut orphans = Vec::new();
        if self.api.is_some() && self.adopt_orphans {
            for id in Spool::orphans(&spool_dir) {
                let Some(spool) = Spool::open(&spool_dir, &id).map_err(|e| spool_error(&spool_dir, e))? else {
                    continue; // another new publisher took it first
                };
                log::info!(
                    "log publisher: re-sending what publisher {id} left in {}",
                    spool_dir.display()
                );
                let (otx, orx) = bounded(4);
                let worker = self.worker(id.into(), orx, Arc::new(Counters::default()), Some(spool), true)?;
                orphans.push((otx, spawn(worker)?));
            }
        }
        let worker = self.worker(publisher_id.clone(), rx, counters.clone(), None, false)?;
        Ok(LogPublisher {
            tx,
            counters,
            publisher_id,
            worker: Some(spawn(worker)?),
            orphans,
            shutdown_timeout: self.shutdown_timeout,
            max_message_bytes: self.max_message_bytes,
        })
    }

    fn worker(
        &self,
        publisher_id: Arc<str>,
        rx: Receiver<Command>,
        counters: Arc<Counters>,
        spool: Option<Spool>,
        orphan: bool,
    ) -> Result<Worker> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::PUSH).map_err(Error::zmq("create a PUSH socket"))?;
        socket.set_sndhwm(self.send_hwm).map_err(Error::zmq("set SNDHWM"))?;
        // No ZMTP heartbeats: their PINGs travel behind the data, so a
        // principal applying back-pressure answers late, the connection is
        // declared dead and whatever was in flight is lost (seen here: about
        // 1 run in 3 lost 500-7,000 of 1,000,000 messages). TCP keepalive
        // notices a dead host without that failure mode.
        socket.set_tcp_keepalive(1).map_err(Error::zmq("set TCP_KEEPALIVE"))?;
        socket
            .set_tcp_keepalive_idle(30)
            .map_err(Error::zmq("set TCP_KEEPALIVE_IDLE"))?;
        socket
            .set_reconnect_ivl_max(1_000)
            .map_err(Error::zmq("set RECONNECT_IVL_MAX"))?;
        let mut monitor = None;
        let ack = match &self.api {
            Some(api) => {
                // Queue nothing for a connection that is not up: what a
                // broken connection held is re-sent from the retention.
                socket.set_immediate(true).map_err(Error::zmq("set IMMEDIATE"))?;
                let endpoint = format!("inproc://cdktr-publisher-monitor-{}", MONITORS.fetch_add(1, Relaxed));
                socket
                    .monitor(&endpoint, zmq::SocketEvent::DISCONNECTED as i32)
                    .map_err(Error::zmq("monitor the PUSH socket"))?;
                let m = ctx.socket(zmq::PAIR).map_err(Error::zmq("create the monitor socket"))?;
                m.connect(&endpoint).map_err(Error::zmq("connect the monitor socket"))?;
                monitor = Some(m);
                Some(Acks::start(api.clone(), publisher_id.to_string())?)
            }
            None => None,
        };
        let endpoint = self.config.listening_endpoint();
        socket
            .connect(&endpoint)
            .map_err(|source| Error::Connect { endpoint, source })?;
        Ok(Worker {
            rx,
            socket,
            monitor,
            ctx: Some(ctx),
            publisher_id,
            counters,
            ack,
            retained: VecDeque::new(),
            cursor: 0,
            buffer_cap: self.buffer_bytes,
            spool,
            spool_dir: self.spool_dir.clone().unwrap_or_else(default_spool_dir),
            spool_cap: self.spool_bytes,
            stats: PublisherStats::default(),
            seq: 0,
            highest_sent: 0,
            accepted: 0,
            progress_at: Instant::now(),
            stall_base: self.stall_timeout,
            stall: self.stall_timeout,
            topic: Vec::with_capacity(64),
            body: Vec::with_capacity(512),
            flushes: Vec::new(),
            last_drop_warning: None,
            max_body: self.max_message_bytes,
            orphan,
            stopping: false,
        })
    }
}

static MONITORS: AtomicU64 = AtomicU64::new(0);

fn spawn(worker: Worker) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cdktr-log-publisher".into())
        .spawn(move || worker.run())
        .map_err(|source| Error::Spawn {
            name: "publisher",
            source,
        })
}

fn spool_error(dir: &std::path::Path, source: std::io::Error) -> Error {
    Error::Spool {
        dir: dir.to_owned(),
        source,
    }
}

impl LogPublisher {
    /// A builder with the defaults, pushing to `config`'s listening endpoint.
    pub fn builder(config: &BusConfig) -> PublisherBuilder {
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
        }
    }

    /// Connects with the defaults (best effort); see
    /// [`PublisherBuilder::start`].
    pub fn connect(config: &BusConfig) -> Result<LogPublisher> {
        Self::builder(config).start()
    }

    /// This publisher's id on the wire.
    pub fn publisher_id(&self) -> &str {
        &self.publisher_id
    }

    /// Queues `message` for delivery. Waits only while the channel to the
    /// background thread is full, never on the network.
    ///
    /// # Errors
    /// [`Error::Oversize`] if the payload exceeds
    /// [`PublisherBuilder::max_message_bytes`] (split long lines before);
    /// [`Error::Closed`] if the background thread has stopped.
    pub fn publish(&self, message: LogMessage) -> Result<()> {
        check_size(message.payload.len(), self.max_message_bytes)?;
        send(&self.tx, Command::Publish(message))
    }

    /// A logger for one task's lines.
    pub fn task_logger(&self, ctx: TaskContext) -> TaskLogger {
        TaskLogger {
            tx: self.tx.clone(),
            ctx: Arc::new(ctx),
            max_message_bytes: self.max_message_bytes,
        }
    }

    /// Waits until everything published before this call has been handed to
    /// the socket (ZeroMQ then delivers it as soon as the principal is
    /// reachable).
    ///
    /// # Errors
    /// [`Error::FlushTimeout`] if the principal did not take the messages
    /// within `timeout` (they stay queued); [`Error::Closed`] if the
    /// background thread has stopped.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.wait(timeout, false)
    }

    /// Waits until everything published before this call is in the
    /// principal's database (acknowledged mode; best effort, as
    /// [`flush`](Self::flush)).
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub fn wait_persisted(&self, timeout: Duration) -> Result<()> {
        self.wait(timeout, true)
    }

    fn wait(&self, timeout: Duration, persisted: bool) -> Result<()> {
        let (done_tx, done_rx) = bounded(1);
        let start = Instant::now();
        self.tx
            .send_timeout(Command::Flush(done_tx, persisted), timeout)
            .map_err(|e| match e {
                crossbeam_channel::SendTimeoutError::Timeout(_) => Error::FlushTimeout(timeout),
                crossbeam_channel::SendTimeoutError::Disconnected(_) => Error::Closed("publisher"),
            })?;
        match done_rx.recv_timeout(timeout.saturating_sub(start.elapsed())) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(Error::FlushTimeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed("publisher")),
        }
    }

    /// The counters as of now.
    pub fn stats(&self) -> PublisherStats {
        self.counters.read()
    }

    /// Delivers what is queued (waiting up to the shutdown timeout for the
    /// principal and, acknowledged, for its acknowledgements), stops the
    /// background thread and returns the final counters. Acknowledged, what
    /// is still unacknowledged at the timeout stays in the spool
    /// ([`PublisherStats::left_in_spool`]); best effort, it is counted in
    /// `dropped` and logged.
    ///
    /// # Errors
    /// [`Error::Closed`] if the background thread had died.
    pub fn shutdown(mut self) -> Result<PublisherStats> {
        self.stop()
    }

    fn stop(&mut self) -> Result<PublisherStats> {
        let Some(worker) = self.worker.take() else {
            return Ok(self.stats());
        };
        let deadline = Instant::now() + self.shutdown_timeout;
        let _ = self.tx.send(Command::Shutdown(deadline));
        for (tx, _) in &self.orphans {
            let _ = tx.send(Command::Shutdown(deadline));
        }
        let died = worker.join().is_err();
        for (_, t) in self.orphans.drain(..) {
            let _ = t.join();
        }
        if died {
            return Err(Error::Closed("publisher"));
        }
        Ok(self.stats())
    }
}

impl Drop for LogPublisher {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("log publisher {}: {e}", self.publisher_id);
        }
    }
}

impl TaskLogger {
    /// The workflow and task this logger writes for.
    pub fn context(&self) -> &TaskContext {
        &self.ctx
    }

    /// Queues one line at `level`, stamped with the current time.
    ///
    /// # Errors
    /// [`Error::Closed`] if the publisher has shut down.
    pub fn log(&self, level: Level, payload: impl Into<String>) -> Result<()> {
        self.log_at(level, now_ms(), payload)
    }

    /// Queues one line with an explicit timestamp (ms since the Unix epoch).
    ///
    /// # Errors
    /// [`Error::Oversize`] for a payload over the publisher's limit;
    /// [`Error::Closed`] if the publisher has shut down.
    pub fn log_at(&self, level: Level, timestamp_ms: i64, payload: impl Into<String>) -> Result<()> {
        let payload = payload.into();
        check_size(payload.len(), self.max_message_bytes)?;
        let cmd = Command::Task {
            ctx: self.ctx.clone(),
            level,
            timestamp_ms,
            payload,
        };
        send(&self.tx, cmd)
    }

    /// [`log`](Self::log) at TRACE.
    pub fn trace(&self, payload: impl Into<String>) -> Result<()> {
        self.log(Level::Trace, payload)
    }
    /// [`log`](Self::log) at DEBUG.
    pub fn debug(&self, payload: impl Into<String>) -> Result<()> {
        self.log(Level::Debug, payload)
    }
    /// [`log`](Self::log) at INFO.
    pub fn info(&self, payload: impl Into<String>) -> Result<()> {
        self.log(Level::Info, payload)
    }
    /// [`log`](Self::log) at WARN.
    pub fn warn(&self, payload: impl Into<String>) -> Result<()> {
        self.log(Level::Warn, payload)
    }
    /// [`log`](Self::log) at ERROR.
    pub fn error(&self, payload: impl Into<String>) -> Result<()> {
        self.log(Level::Error, payload)
    }
}

fn check_size(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::Oversize { len, max });
    }
    Ok(())
}

fn send(tx: &Sender<Command>, cmd: Command) -> Result<()> {
    tx.send(cmd).map_err(|_| Error::Closed("publisher"))
}

impl Counters {
    fn read(&self) -> PublisherStats {
        PublisherStats {
            published: self.published.load(Relaxed),
            sent: self.sent.load(Relaxed),
            resent: self.resent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
            spilled: self.spilled.load(Relaxed),
            spooled_bytes: self.spooled_bytes.load(Relaxed),
            left_in_spool: self.left_in_spool.load(Relaxed),
        }
    }

    fn store(&self, s: &PublisherStats) {
        self.published.store(s.published, Relaxed);
        self.sent.store(s.sent, Relaxed);
        self.resent.store(s.resent, Relaxed);
        self.dropped.store(s.dropped, Relaxed);
        self.acknowledged.store(s.acknowledged, Relaxed);
        self.buffered.store(s.buffered, Relaxed);
        self.buffered_bytes.store(s.buffered_bytes, Relaxed);
        self.spilled.store(s.spilled, Relaxed);
        self.spooled_bytes.store(s.spooled_bytes, Relaxed);
        self.left_in_spool.store(s.left_in_spool, Relaxed);
    }
}

/// How often the principal is asked for a publisher's watermark while
/// lines await acknowledgement.
const ACK_POLL: Duration = Duration::from_millis(100);
/// The longest a stalled stream waits between re-sends.
const MAX_STALL: Duration = Duration::from_secs(30);

/// Polls the principal for this publisher's watermark on a thread of its
/// own, so that a principal that is down never holds up sending.
struct Acks {
    persisted: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    /// Answers received so far.
    answers: Arc<AtomicU64>,
    wanted: Arc<AtomicBool>,
    /// Ask the principal to write now: the worker is waiting on it.
    urgent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acks {
    fn start(api: ApiConfig, publisher_id: String) -> Result<Acks> {
        let (persisted, accepted, answers) = Default::default();
        let (wanted, urgent, stop) = Default::default();
        let mut acks = Acks {
            persisted,
            accepted,
            answers,
            wanted,
            urgent,
            stop,
            thread: None,
        };
        let (p, a, n, w, s) = (
            acks.persisted.clone(),
            acks.accepted.clone(),
            acks.answers.clone(),
            acks.wanted.clone(),
            acks.stop.clone(),
        );
        let u = acks.urgent.clone();
        let thread = std::thread::Builder::new()
            .name("cdktr-log-acks".into())
            .spawn(move || {
                let mut client: Option<ApiClient> = None;
                while !s.load(Relaxed) {
                    if w.load(Relaxed) {
                        if client.is_none() {
                            client = ApiClient::connect(&api)
                                .map(|c| c.with_timeout(Duration::from_secs(1)))
                                .map_err(|e| log::warn!("log publisher {publisher_id}: no API client: {e}"))
                                .ok();
                        }
                        if let Some(c) = client.as_mut() {
                            match c.watermark_flushing(&publisher_id, u.load(Relaxed)) {
                                Ok(mark) => {
                                    p.store(mark.persisted, Relaxed);
                                    a.store(mark.accepted, Relaxed);
                                    n.fetch_add(1, Relaxed);
                                }
                                Err(e) => log::debug!("log publisher {publisher_id}: watermark: {e}"),
                            }
                        }
                    }
                    std::thread::sleep(ACK_POLL);
                }
            })
            .map_err(|source| Error::Spawn {
                name: "publisher acknowledgements",
                source,
            })?;
        acks.thread = Some(thread);
        Ok(acks)
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    rx: Receiver<Command>,
    socket: zmq::Socket,
    /// Disconnect events of `socket` (acknowledged mode).
    monitor: Option<zmq::Socket>,
    ctx: Option<zmq::Context>,
    publisher_id: Arc<str>,
    counters: Arc<Counters>,
    ack: Option<Acks>,
    /// Messages in memory, oldest first, contiguous sequence numbers:
    /// before `cursor` sent and awaiting acknowledgement, from it unsent.
    retained: VecDeque<Pending>,
    cursor: usize,
    buffer_cap: usize,
    /// Messages after the last one in memory (acknowledged mode).
    spool: Option<Spool>,
    spool_dir: PathBuf,
    spool_cap: u64,
    stats: PublisherStats,
    /// The last sequence number given out.
    seq: u64,
    highest_sent: u64,
    accepted: u64,
    /// When `accepted` last moved or the stream was last rewound.
    progress_at: Instant,
    stall_base: Duration,
    stall: Duration,
    topic: Vec<u8>,
    body: Vec<u8>,
    /// Waiters, each until every seq up to its own is sent (false) or
    /// persisted (true).
    flushes: Vec<(u64, bool, Sender<()>)>,
    last_drop_warning: Option<Instant>,
    max_body: usize,
    /// Re-sends a dead publisher's spool, then stops.
    orphan: bool,
    /// Shutdown has begun.
    stopping: bool,
}

/// Messages ZeroMQ queues per connection before `send` reports no room.
const SEND_HWM: i32 = 10_000;

/// Commands taken from the channel between two attempts to send.
const BATCH: usize = 1024;

impl Worker {
    fn acknowledged(&self) -> bool {
        self.ack.is_some()
    }

    fn run(mut self) {
        let mut deadline = None;
        let mut disconnected = false;
        loop {
            let idle = self.retained.is_empty() && self.spool.as_ref().is_none_or(Spool::is_empty);
            // Block for work only when there is nothing to send or to see
            // acknowledged.
            if idle && deadline.is_none() && !disconnected && !self.orphan {
                match self.rx.recv() {
                    Ok(cmd) => self.handle(cmd, &mut deadline),
                    Err(_) => disconnected = true,
                }
            }
            for _ in 0..BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd, &mut deadline),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            self.take_acks();
            self.watch_connection();
            self.refill();
            self.send_retained();
            self.answer_flushes();
            self.publish_stats();
            let empty = self.retained.is_empty() && self.spool.as_ref().is_none_or(Spool::is_empty);
            let stopping = deadline.is_some() || disconnected || self.orphan;
            if stopping && (empty || deadline.is_some_and(|d| Instant::now() >= d)) {
                break;
            }
            if self.cursor < self.retained.len() {
                // Wait for room in the socket, not longer than a tick so new
                // commands keep being taken off the channel.
                let _ = self.socket.poll(zmq::POLLOUT, 10);
            } else if !empty {
                // Sent, awaiting acknowledgement: look again shortly.
                match self.rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(cmd) => self.handle(cmd, &mut deadline),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => disconnected = true,
                }
            }
        }
        self.finish(deadline);
    }

    fn handle(&mut self, cmd: Command, deadline: &mut Option<Instant>) {
        match cmd {
            Command::Publish(m) => self.accept((&m).into()),
            Command::Task {
                ctx,
                level,
                timestamp_ms,
                payload,
            } => self.accept(Fields {
                workflow_id: &ctx.workflow_id,
                workflow_name: &ctx.workflow_name,
                workflow_instance_id: &ctx.workflow_instance_id,
                task_name: &ctx.task_name,
                task_instance_id: &ctx.task_instance_id,
                timestamp_ms,
                level,
                payload: &payload,
            }),
            Command::Flush(done, persisted) => self.flushes.push((self.seq, persisted, done)),
            Command::Shutdown(d) => {
                *deadline = Some(d);
                self.stopping = true;
            }
        }
    }

    fn accept(&mut self, fields: Fields<'_>) {
        self.stats.published += 1;
        let seq = self.seq + 1;
        let replays = self.acknowledged();
        wire::encode_fields(
            &self.publisher_id,
            seq,
            replays,
            fields,
            &mut self.topic,
            &mut self.body,
        );
        if self.body.len() > self.max_body {
            // The manager would reject it, or drop the connection with
            // everything in flight behind it.
            self.drop_one("message larger than max_message_bytes");
            return;
        }
        let size = self.topic.len() + self.body.len();
        // Best effort: straight to the socket when nothing waits before it.
        if !replays && self.retained.is_empty() {
            match try_send(&self.socket, &self.topic, &self.body) {
                Sent::Yes => {
                    self.seq = seq;
                    self.highest_sent = seq;
                    self.stats.sent += 1;
                    return;
                }
                Sent::Lost => {
                    self.seq = seq;
                    self.drop_one("send failed");
                    return;
                }
                Sent::NoRoom => {}
            }
        }
        let mut frames = Vec::with_capacity(size);
        frames.extend_from_slice(&self.topic);
        frames.extend_from_slice(&self.body);
        let p = Pending {
            seq,
            frames,
            split: self.topic.len(),
        };
        let spooling = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        if !spooling && self.stats.buffered_bytes as usize + size <= self.buffer_cap {
            self.seq = seq;
            self.stats.buffered += 1;
            self.stats.buffered_bytes += size as u64;
            self.retained.push_back(p);
            return;
        }
        if !replays {
            self.drop_one("retention buffer full");
            return;
        }
        match self.spill(&p) {
            Ok(true) => self.seq = seq,
            Ok(false) => self.drop_one("retention buffer and spool full"),
            Err(e) => {
                log::error!("log publisher {}: cannot spill: {e}", self.publisher_id);
                self.drop_one("spool unusable");
            }
        }
    }

    /// Writes a message to the spool; false when the spool is full.
    fn spill(&mut self, p: &Pending) -> std::io::Result<bool> {
        if self.spool.is_none() {
            match Spool::open(&self.spool_dir, &self.publisher_id)? {
                Some(s) => self.spool = Some(s),
                None => {
                    return Err(std::io::Error::other(format!(
                        "another live publisher named {} owns its spool files",
                        self.publisher_id
                    )))
                }
            }
        }
        let spool = self.spool.as_mut().expect("opened above");
        if spool.bytes + 16 + p.frames.len() as u64 > self.spool_cap {
            return Ok(false);
        }
        spool.push(p)?;
        self.stats.spilled += 1;
        self.stats.spooled_bytes = spool.bytes;
        Ok(true)
    }

    /// Moves spilled messages back into memory once memory has room.
    fn refill(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if spool.is_empty() || self.stats.buffered_bytes as usize > self.buffer_cap / 2 {
            return;
        }
        while (self.stats.buffered_bytes as usize) < self.buffer_cap / 4 * 3 {
            match spool.pop() {
                Ok(Some(p)) => {
                    if p.seq <= self.stats.acknowledged {
                        continue;
                    }
                    // An adopted spool: continue its numbering.
                    self.seq = self.seq.max(p.seq);
                    self.stats.buffered += 1;
                    self.stats.buffered_bytes += p.frames.len() as u64;
                    self.retained.push_back(p);
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("log publisher {}: cannot read the spool back: {e}", self.publisher_id);
                    break;
                }
            }
        }
        self.stats.spooled_bytes = spool.bytes;
    }

    fn send_retained(&mut self) {
        while let Some(p) = self.retained.get(self.cursor) {
            let (topic, body) = p.frames.split_at(p.split);
            let sent = try_send(&self.socket, topic, body);
            if matches!(sent, Sent::NoRoom) {
                break;
            }
            let seq = p.seq;
            if self.acknowledged() {
                // Kept until acknowledged; a lost body frame is re-sent then.
                if seq > self.highest_sent {
                    self.highest_sent = seq;
                    self.stats.sent += 1;
                } else {
                    self.stats.resent += 1;
                }
                self.cursor += 1;
                continue;
            }
            let p = self.retained.pop_front().expect("present");
            self.stats.buffered -= 1;
            self.stats.buffered_bytes -= p.frames.len() as u64;
            self.highest_sent = seq;
            if matches!(sent, Sent::Yes) {
                self.stats.sent += 1;
            } else {
                self.drop_one("send failed");
            }
        }
    }

    /// Drops what the principal has persisted, and notices a stream the
    /// principal stopped accepting (a message lost or shed): re-sends from
    /// the first message it did not accept.
    fn take_acks(&mut self) {
        let Some(ack) = &self.ack else {
            return;
        };
        let waiting = !self.retained.is_empty() || self.spool.as_ref().is_some_and(|s| !s.is_empty());
        ack.wanted.store(waiting, Relaxed);
        let persisted = ack.persisted.load(Relaxed);
        let accepted = ack.accepted.load(Relaxed);
        if ack.answers.load(Relaxed) == 0 {
            return;
        }
        if persisted > self.stats.acknowledged {
            self.stats.acknowledged = persisted;
        }
        while self.retained.front().is_some_and(|p| p.seq <= self.stats.acknowledged) {
            let p = self.retained.pop_front().expect("present");
            self.stats.buffered -= 1;
            self.stats.buffered_bytes -= p.frames.len() as u64;
            self.cursor = self.cursor.saturating_sub(1);
        }
        if accepted != self.accepted {
            self.accepted = accepted;
            self.progress_at = Instant::now();
            self.stall = self.stall_base;
        }
        let spooling = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        let waiting = !self.retained.is_empty() || spooling;
        ack.wanted.store(waiting, Relaxed);
        // Someone waits on the principal's writes: a caller of
        // `wait_persisted`, a shutdown, or this publisher at its memory cap
        // (it sends nothing more until lines are acknowledged).
        let urgent = self.stopping
            || self.orphan
            || self.flushes.iter().any(|(_, persisted, _)| *persisted)
            || spooling
            || self.stats.buffered_bytes as usize >= self.buffer_cap / 2;
        ack.urgent.store(waiting && urgent, Relaxed);
        if self.highest_sent > self.accepted && self.progress_at.elapsed() >= self.stall {
            log::warn!(
                "log publisher {}: the principal accepted nothing past seq {} for {:?}; re-sending from there",
                self.publisher_id,
                self.accepted,
                self.stall
            );
            self.rewind(self.accepted);
            self.stall = (self.stall * 2).min(MAX_STALL);
        }
    }

    /// A broken connection may have lost what was in flight: re-send all
    /// that is unacknowledged.
    fn watch_connection(&mut self) {
        let Some(monitor) = &self.monitor else {
            return;
        };
        let mut disconnected = false;
        while let Ok(event) = monitor.recv_multipart(zmq::DONTWAIT) {
            let id = event
                .first()
                .filter(|f| f.len() >= 2)
                .map(|f| u16::from_le_bytes([f[0], f[1]]));
            disconnected |= id == Some(zmq::SocketEvent::DISCONNECTED as u16);
        }
        if disconnected && self.cursor > 0 {
            log::info!(
                "log publisher {}: connection lost; re-sending {} unacknowledged message(s)",
                self.publisher_id,
                self.cursor
            );
            self.rewind(0);
        }
    }

    /// Sends again from the first retained message after `after`.
    fn rewind(&mut self, after: u64) {
        self.cursor = self
            .retained
            .iter()
            .take_while(|p| p.seq <= after)
            .count()
            .min(self.cursor);
        self.progress_at = Instant::now();
    }

    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let sent = if self.acknowledged() {
            self.highest_sent
        } else {
            // Best effort trims as it sends; what remains is unsent.
            self.retained.front().map_or(self.seq, |p| p.seq - 1)
        };
        let persisted = if self.acknowledged() {
            self.stats.acknowledged
        } else {
            sent
        };
        self.flushes.retain(|(target, want_persisted, done)| {
            let ready = *target <= if *want_persisted { persisted } else { sent };
            if ready {
                let _ = done.send(());
            }
            !ready
        });
    }

    fn publish_stats(&self) {
        self.counters.store(&self.stats);
    }

    fn drop_one(&mut self, why: &str) {
        self.stats.dropped += 1;
        self.warn_drop(why);
    }

    fn warn_drop(&mut self, why: &str) {
        let now = Instant::now();
        if self
            .last_drop_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            self.last_drop_warning = Some(now);
            log::warn!(
                "log publisher {}: {why}, {} message(s) dropped so far",
                self.publisher_id,
                self.stats.dropped
            );
        }
    }

    fn finish(mut self, deadline: Option<Instant>) {
        let acknowledged = self.acknowledged();
        // Lines queued after shutdown began are not delivered; count them.
        while let Ok(cmd) = self.rx.try_recv() {
            if matches!(cmd, Command::Publish(_) | Command::Task { .. }) {
                self.stats.published += 1;
                self.stats.dropped += 1;
            }
        }
        if acknowledged {
            self.keep_unacknowledged();
        } else if !self.retained.is_empty() {
            self.stats.dropped += self.retained.len() as u64;
            self.stats.buffered = 0;
            self.stats.buffered_bytes = 0;
            self.retained.clear();
            self.warn_drop("principal unreachable at shutdown");
        }
        // Let ZeroMQ finish writing what it holds, up to the deadline.
        let linger = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
        let _ = self.socket.set_linger(linger.as_millis().min(i32::MAX as u128) as i32);
        self.publish_stats();
        drop(self.monitor.take());
        drop(self.ack.take());
        drop(self.socket);
        let closing = Instant::now();
        drop(self.ctx.take());
        // Acknowledged, anything lost here is re-sent from the spool.
        if !acknowledged && closing.elapsed() >= linger && self.stats.sent > 0 {
            // ZeroMQ gave up on whatever it still held; it cannot say how
            // much that was. Say so rather than stay silent.
            log::warn!(
                "log publisher {}: shutdown timed out with the principal not taking messages; \
                 up to {} message(s) queued in ZeroMQ may be lost",
                self.publisher_id,
                self.stats.sent.min(SEND_HWM as u64)
            );
        }
    }

    /// Acknowledged mode at shutdown: what the principal has not persisted
    /// goes to the spool, in order, for the next publisher on the directory.
    fn keep_unacknowledged(&mut self) {
        let left = self.retained.len() as u64;
        if left > 0 {
            let spool = match self.spool.take() {
                Some(s) => Ok(Some(s)),
                None => Spool::open(&self.spool_dir, &self.publisher_id),
            };
            match spool {
                Ok(Some(mut s)) => match s.push_front(self.retained.iter()).and_then(|()| s.flush()) {
                    Ok(()) => {
                        self.stats.left_in_spool += left;
                        self.stats.spooled_bytes = s.bytes;
                        self.spool = Some(s);
                    }
                    Err(e) => {
                        log::error!(
                            "log publisher {}: cannot keep unacknowledged lines: {e}",
                            self.publisher_id
                        );
                        self.stats.dropped += left;
                    }
                },
                Ok(None) | Err(_) => {
                    log::error!(
                        "log publisher {}: spool in {} unusable; {left} unacknowledged line(s) lost",
                        self.publisher_id,
                        self.spool_dir.display()
                    );
                    self.stats.dropped += left;
                }
            }
            self.retained.clear();
            self.stats.buffered = 0;
            self.stats.buffered_bytes = 0;
        }
        if let Some(mut s) = self.spool.take() {
            if s.is_empty() {
                if let Err(e) = s.remove() {
                    log::warn!("log publisher {}: spool not tidied: {e}", self.publisher_id);
                }
                self.stats.spooled_bytes = 0;
            } else {
                let _ = s.flush();
                self.stats.spooled_bytes = s.bytes;
                if self.stats.left_in_spool == 0 {
                    self.stats.left_in_spool = s.records;
                }
                log::warn!(
                    "log publisher {}: {} bytes of unacknowledged lines kept in {}; \
                     the next publisher started on that directory sends them",
                    self.publisher_id,
                    s.bytes,
                    self.spool_dir.display()
                );
            }
        }
    }
}

enum Sent {
    Yes,
    /// The socket has no room; nothing was sent, try again later.
    NoRoom,
    /// The topic went but the body did not: the message is lost.
    Lost,
}

/// Sends both frames without waiting.
fn try_send(socket: &zmq::Socket, topic: &[u8], body: &[u8]) -> Sent {
    match socket.send(topic, zmq::SNDMORE | zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Sent::NoRoom,
        Err(e) => {
            log::error!("log publisher: send failed, will retry: {e}");
            return Sent::NoRoom;
        }
    }
    // Once the first frame is in, ZeroMQ takes the rest; should it not, say so.
    match socket.send(body, 0) {
        Ok(()) => Sent::Yes,
        Err(e) => {
            log::error!("log publisher: body frame refused, message lost: {e}");
            Sent::Lost
        }
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
