//! Agents' side of the bus: hands log lines to a background thread that
//! pushes them to the principal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::config::BusConfig;
use crate::error::{Error, Result};
use crate::message::{now_ms, Level, LogMessage};
use crate::wire::{self, Fields};

/// Publishes log messages to the principal's log manager.
///
/// [`publish`](Self::publish) only hands the message to a background thread
/// over a bounded channel; that thread encodes it, stamps it with this
/// publisher's id and the next sequence number, and pushes it. While the
/// principal is unreachable, messages are retained in memory up to
/// [`PublisherBuilder::buffer_bytes`] and sent when it comes back; beyond
/// that they are dropped, counted in [`PublisherStats::dropped`] and logged.
///
/// Dropping the publisher shuts it down as [`shutdown`](Self::shutdown)
/// does, so queued lines are delivered before the program exits.
///
/// ```no_run
/// use cdktr_log::{BusConfig, LogPublisher, TaskContext};
///
/// let publisher = LogPublisher::connect(&BusConfig::from_env()?)?;
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
    /// Messages accepted from callers (and given a sequence number).
    pub published: u64,
    /// Messages handed to the socket.
    pub sent: u64,
    /// Messages dropped because the retention buffer was full, or still
    /// undelivered when shutdown timed out.
    pub dropped: u64,
    /// Messages retained, waiting for the principal.
    pub buffered: u64,
    /// Bytes retained, waiting for the principal.
    pub buffered_bytes: u64,
}

/// Configures a [`LogPublisher`]; see [`LogPublisher::builder`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    config: BusConfig,
    publisher_id: Option<String>,
    buffer_bytes: usize,
    queue: usize,
    send_hwm: i32,
    shutdown_timeout: Duration,
    max_message_bytes: usize,
}

enum Command {
    Publish(LogMessage),
    Task {
        ctx: Arc<TaskContext>,
        level: Level,
        timestamp_ms: i64,
        payload: String,
    },
    Flush(Sender<()>),
    Shutdown(Instant),
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    buffered: AtomicU64,
    buffered_bytes: AtomicU64,
}

impl PublisherBuilder {
    /// Names this publisher on the wire. Must be unique among the publishers
    /// that are alive at the same time; the default is random.
    pub fn publisher_id(mut self, id: impl Into<String>) -> Self {
        self.publisher_id = Some(id.into());
        self
    }

    /// Most bytes retained in memory while the principal is unreachable
    /// (default 64 MiB). Past it, new messages are dropped and counted.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
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
    /// what is queued (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Connects and starts the background thread. The principal need not be
    /// up: ZeroMQ connects when it appears.
    ///
    /// # Errors
    /// [`Error::Connect`] for an endpoint ZeroMQ cannot parse or resolve,
    /// [`Error::Zmq`] if a socket cannot be made, [`Error::Spawn`] if the
    /// thread cannot be started.
    pub fn start(self) -> Result<LogPublisher> {
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
        let endpoint = self.config.listening_endpoint();
        socket
            .connect(&endpoint)
            .map_err(|source| Error::Connect { endpoint, source })?;

        let publisher_id: Arc<str> = self.publisher_id.unwrap_or_else(random_id).into();
        let (tx, rx) = bounded(self.queue);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            rx,
            socket,
            ctx: Some(ctx),
            publisher_id: publisher_id.clone(),
            counters: counters.clone(),
            buffer: VecDeque::new(),
            buffer_cap: self.buffer_bytes,
            stats: PublisherStats::default(),
            seq: 0,
            topic: Vec::with_capacity(64),
            body: Vec::with_capacity(512),
            flushes: Vec::new(),
            last_drop_warning: None,
            max_body: self.max_message_bytes,
        };
        let worker = std::thread::Builder::new()
            .name("cdktr-log-publisher".into())
            .spawn(move || worker.run())
            .map_err(|source| Error::Spawn {
                name: "publisher",
                source,
            })?;
        Ok(LogPublisher {
            tx,
            counters,
            publisher_id,
            worker: Some(worker),
            shutdown_timeout: self.shutdown_timeout,
            max_message_bytes: self.max_message_bytes,
        })
    }
}

impl LogPublisher {
    /// A builder with the defaults, pushing to `config`'s listening endpoint.
    pub fn builder(config: &BusConfig) -> PublisherBuilder {
        PublisherBuilder {
            config: config.clone(),
            publisher_id: None,
            buffer_bytes: 64 << 20,
            queue: 16_384,
            send_hwm: SEND_HWM,
            shutdown_timeout: Duration::from_secs(5),
            max_message_bytes: wire::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Connects with the defaults; see [`PublisherBuilder::start`].
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
        let (done_tx, done_rx) = bounded(1);
        let start = Instant::now();
        self.tx
            .send_timeout(Command::Flush(done_tx), timeout)
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
    /// principal), stops the background thread and returns the final
    /// counters. Anything still undelivered at the timeout is counted in
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
        let _ = self.tx.send(Command::Shutdown(Instant::now() + self.shutdown_timeout));
        worker.join().map_err(|_| Error::Closed("publisher"))?;
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
            dropped: self.dropped.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
        }
    }

    fn store(&self, s: &PublisherStats) {
        self.published.store(s.published, Relaxed);
        self.sent.store(s.sent, Relaxed);
        self.dropped.store(s.dropped, Relaxed);
        self.buffered.store(s.buffered, Relaxed);
        self.buffered_bytes.store(s.buffered_bytes, Relaxed);
    }
}

/// An encoded message waiting for the socket: topic and body in one
/// allocation.
struct Pending {
    seq: u64,
    frames: Vec<u8>,
    split: usize,
}

struct Worker {
    rx: Receiver<Command>,
    socket: zmq::Socket,
    ctx: Option<zmq::Context>,
    publisher_id: Arc<str>,
    counters: Arc<Counters>,
    buffer: VecDeque<Pending>,
    buffer_cap: usize,
    stats: PublisherStats,
    seq: u64,
    topic: Vec<u8>,
    body: Vec<u8>,
    /// Flush requests, each waiting until every seq up to its own is sent.
    flushes: Vec<(u64, Sender<()>)>,
    last_drop_warning: Option<Instant>,
    max_body: usize,
}

/// Messages ZeroMQ queues per connection before `send` reports no room.
const SEND_HWM: i32 = 10_000;

/// Commands taken from the channel between two attempts to drain the buffer.
const BATCH: usize = 1024;

impl Worker {
    fn run(mut self) {
        let mut deadline = None;
        let mut disconnected = false;
        loop {
            // Block for work only when there is nothing to retry.
            if self.buffer.is_empty() && deadline.is_none() && !disconnected {
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
            self.drain_buffer();
            self.answer_flushes();
            self.publish_stats();
            let done = self.buffer.is_empty() || deadline.is_some_and(|d| Instant::now() >= d);
            if (deadline.is_some() || disconnected) && done {
                break;
            }
            if !self.buffer.is_empty() {
                // Wait for room in the socket, not longer than a tick so new
                // commands keep being taken off the channel.
                let _ = self.socket.poll(zmq::POLLOUT, 10);
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
            Command::Flush(done) => self.flushes.push((self.seq, done)),
            Command::Shutdown(d) => *deadline = Some(d),
        }
    }

    fn accept(&mut self, fields: Fields<'_>) {
        self.seq += 1;
        self.stats.published += 1;
        wire::encode_fields(&self.publisher_id, self.seq, fields, &mut self.topic, &mut self.body);
        if self.body.len() > self.max_body {
            // The manager would reject it, or drop the connection with
            // everything in flight behind it.
            self.stats.dropped += 1;
            self.warn_drop("message larger than max_message_bytes");
            return;
        }
        // Keep order: while anything is retained, new messages queue behind it.
        if self.buffer.is_empty() {
            match try_send(&self.socket, &self.topic, &self.body) {
                Sent::Yes => {
                    self.stats.sent += 1;
                    return;
                }
                Sent::Lost => {
                    self.stats.dropped += 1;
                    self.warn_drop("send failed");
                    return;
                }
                Sent::NoRoom => {}
            }
        }
        let size = self.topic.len() + self.body.len();
        if self.stats.buffered_bytes as usize + size > self.buffer_cap {
            self.stats.dropped += 1;
            self.warn_drop("retention buffer full");
            return;
        }
        let mut frames = Vec::with_capacity(size);
        frames.extend_from_slice(&self.topic);
        frames.extend_from_slice(&self.body);
        self.buffer.push_back(Pending {
            seq: self.seq,
            frames,
            split: self.topic.len(),
        });
        self.stats.buffered += 1;
        self.stats.buffered_bytes += size as u64;
    }

    fn drain_buffer(&mut self) {
        while let Some(p) = self.buffer.front() {
            let (topic, body) = p.frames.split_at(p.split);
            let sent = try_send(&self.socket, topic, body);
            if matches!(sent, Sent::NoRoom) {
                break;
            }
            self.stats.buffered -= 1;
            self.stats.buffered_bytes -= p.frames.len() as u64;
            self.buffer.pop_front();
            if matches!(sent, Sent::Yes) {
                self.stats.sent += 1;
            } else {
                self.stats.dropped += 1;
                self.warn_drop("send failed");
            }
        }
    }

    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let sent_up_to = self.buffer.front().map_or(self.seq, |p| p.seq - 1);
        self.flushes.retain(|(target, done)| {
            let ready = *target <= sent_up_to;
            if ready {
                let _ = done.send(());
            }
            !ready
        });
    }

    fn publish_stats(&self) {
        self.counters.store(&self.stats);
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
        // Lines queued after shutdown began are not delivered; count them.
        while let Ok(cmd) = self.rx.try_recv() {
            if matches!(cmd, Command::Publish(_) | Command::Task { .. }) {
                self.stats.published += 1;
                self.stats.dropped += 1;
            }
        }
        if !self.buffer.is_empty() {
            self.stats.dropped += self.buffer.len() as u64;
            self.stats.buffered = 0;
            self.stats.buffered_bytes = 0;
            self.buffer.clear();
            self.warn_drop("principal unreachable at shutdown");
        }
        // Let ZeroMQ finish writing what it holds, up to the deadline.
        let linger = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
        let _ = self.socket.set_linger(linger.as_millis().min(i32::MAX as u128) as i32);
        self.publish_stats();
        drop(self.socket);
        let closing = Instant::now();
        drop(self.ctx.take());
        if closing.elapsed() >= linger && self.stats.sent > 0 {
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
