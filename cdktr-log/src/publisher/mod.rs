//! Agents' side of the bus: hands log lines to a background thread that
//! pushes them to the principal, and, with acknowledged delivery, keeps
//! each line until the principal says it is in the database.

mod acknowledged;
mod acks;
mod best_effort;
mod builder;
mod retention;
mod socket;
pub(crate) mod spool;
mod stats;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

pub use builder::{default_spool_dir, PublisherBuilder};
pub use stats::PublisherStats;

use crate::config::BusConfig;
use crate::error::{Error, Result};
use crate::message::{now_ms, Level, LogMessage};
use crate::stats::StatsCell;

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
#[must_use = "dropping the publisher shuts it down"]
pub struct LogPublisher {
    tx: Sender<Command>,
    stats: Arc<StatsCell<PublisherStats>>,
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
    handle: Handle,
    ctx: Arc<TaskContext>,
}

/// Publishes a task's lines through a publisher's queue (the
/// [`TaskLogger`]s' and the `tracing` layer's path); fails with
/// [`Error::Closed`] once the publisher has shut down.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: Sender<Command>,
    max_message_bytes: usize,
}

impl Handle {
    /// As [`TaskLogger::log_at`]: the context is shared, not copied.
    pub fn publish(&self, ctx: Arc<TaskContext>, level: Level, timestamp_ms: i64, payload: String) -> Result<()> {
        check_size(payload.len(), self.max_message_bytes)?;
        let cmd = Command::Task {
            ctx,
            level,
            timestamp_ms,
            payload,
        };
        send(&self.tx, cmd)
    }
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

impl LogPublisher {
    /// A builder with the defaults, pushing to `config`'s listening endpoint.
    pub fn builder(config: &BusConfig) -> PublisherBuilder {
        PublisherBuilder::new(config)
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

    /// A handle on this publisher's queue for task loggers and the
    /// `tracing` layer.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }

    /// A logger for one task's lines.
    pub fn task_logger(&self, ctx: TaskContext) -> TaskLogger {
        TaskLogger {
            handle: self.handle(),
            ctx: Arc::new(ctx),
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

    /// Waits until the spools of dead publishers this one adopted at start
    /// are sent and acknowledged (their threads end then); true if they
    /// are, false at the timeout.
    pub fn wait_adopted(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.orphans.iter().all(|(_, t)| t.is_finished()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The counters as of now.
    pub fn stats(&self) -> PublisherStats {
        self.stats.snapshot()
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
        self.handle
            .publish(self.ctx.clone(), level, timestamp_ms, payload.into())
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

impl std::fmt::Debug for LogPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPublisher")
            .field("publisher_id", &self.publisher_id)
            .field("orphans", &self.orphans.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TaskLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskLogger")
            .field("context", &self.ctx)
            .finish_non_exhaustive()
    }
}
