//! Batches the log stream into DuckDB.

mod blocks;
mod columns;
mod space;
mod worker;
mod writer;

pub use space::{MinFreeSpace, ENV_MIN_FREE_SPACE};

use worker::Worker;

mod publishers;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdktr_log::budget::ByteBudget;
use cdktr_log::stats::StatsCell;
pub use cdktr_log::wire::Watermark;
use cdktr_log::Line;
use crossbeam_channel::{bounded, Sender};

use crate::error::{Error, Result};
use crate::store::Store;

/// Env var overriding the flush interval, in milliseconds.
pub const ENV_FLUSH_INTERVAL_MS: &str = "CDKTR_LOG_FLUSH_INTERVAL_MS";

/// How a [`Persister`] batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersisterConfig {
    /// Write whatever is pending at least this often (default 30 s). Failed
    /// writes are retried at this pace too.
    pub flush_interval: Duration,
    /// Write as soon as this many messages are pending (default 40,960:
    /// two of the store's row groups, [`ROW_GROUP_SIZE`](crate::ROW_GROUP_SIZE)).
    /// A batch of whole row groups is compressed once, straight into the
    /// file; a smaller one goes through DuckDB's write-ahead log and is
    /// compressed again at every checkpoint. Each write leaves a partly
    /// used block in the file: with batches of one row group the file was
    /// 1.8 times as large, with two 1.2 times (against batches through the
    /// log); three were no smaller, and slower.
    pub batch_size: usize,
    /// Write as soon as the pending messages hold this many bytes (default
    /// 32 MiB: a row group of 1 KiB lines), so that larger payloads make
    /// smaller batches. A batch over a row group is cut at a whole number
    /// of them.
    pub batch_bytes: usize,
    /// Most bytes of messages in the input channel (default 4 MiB), for a
    /// sender that takes them from [`Persister::budget`].
    pub channel_bytes: usize,
    /// Capacity of the input channel (default 32,768). A full channel
    /// makes the log manager wait: that is the back-pressure. For lines of
    /// over 128 bytes in memory (a line of the load generator holds ~270),
    /// `channel_bytes` is reached first: a sender waiting on the budget is
    /// let in once half of it is free, one waiting on a full channel as
    /// soon as one line fits, two context switches a line while the
    /// persister catches up.
    pub channel_capacity: usize,
    /// Most messages held unwritten, the batch being written included
    /// (default 122,880: three batches, so that lines are taken while one
    /// is written). Past it, while
    /// writes succeed, the persister stops taking input (back-pressure);
    /// while they fail, it keeps taking input so that the bus keeps flowing
    /// and sheds what it cannot hold: a replaying publisher re-sends it, a
    /// message from any other publisher is lost and counted in
    /// [`PersisterStats::shed`].
    pub max_pending: usize,
    /// Most bytes of messages held unwritten, by [`Line::memory_bytes`]
    /// (default 64 MiB: two batches of 1 KiB lines); as `max_pending`, in
    /// bytes.
    pub max_pending_bytes: usize,
    /// How long [`Persister::shutdown`] keeps retrying a failing write
    /// (default 10 s).
    pub shutdown_timeout: Duration,
    /// Writes pause while the database file's filesystem has less free
    /// space than this (default: the smaller of 1 GiB and 5%) plus the
    /// next write's lines (their [`Line::memory_bytes`]: what a write adds
    /// at most), as if they failed: publishers
    /// keep their lines until space returns.
    pub min_free_space: MinFreeSpace,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        PersisterConfig {
            flush_interval: Duration::from_secs(30),
            batch_size: 2 * crate::ROW_GROUP_SIZE,
            batch_bytes: 32 << 20,
            channel_bytes: 4 << 20,
            channel_capacity: 32_768,
            max_pending: 6 * crate::ROW_GROUP_SIZE,
            max_pending_bytes: 64 << 20,
            shutdown_timeout: Duration::from_secs(10),
            min_free_space: MinFreeSpace::Auto,
        }
    }
}

impl PersisterConfig {
    /// The defaults, with `CDKTR_LOG_FLUSH_INTERVAL_MS` and
    /// `CDKTR_DB_MIN_FREE_SPACE` applied when set.
    ///
    /// # Errors
    /// [`Error::InvalidEnv`] naming the first variable that cannot be
    /// used.
    pub fn from_env() -> Result<PersisterConfig> {
        Self::from_lookup(cdktr_log::config::process_env)
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<PersisterConfig> {
        let d = PersisterConfig::default();
        Ok(PersisterConfig {
            flush_interval: cdktr_log::config::env(ENV_FLUSH_INTERVAL_MS, &get)?.unwrap_or(d.flush_interval),
            min_free_space: cdktr_log::config::env(ENV_MIN_FREE_SPACE, &get)?.unwrap_or(d.min_free_space),
            ..d
        })
    }
}

/// Counters of a persister, as of the moment they are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersisterStats {
    /// Rows written to `logstore`.
    pub persisted: u64,
    /// Writes that failed (their rows were kept and retried).
    pub failed_flushes: u64,
    /// Messages taken from the channel and not yet written.
    pub pending: u64,
    /// Messages dropped on arrival because their publisher's sequence
    /// number was already accepted (re-sent messages).
    pub duplicates: u64,
    /// Messages of replaying publishers dropped because they followed a
    /// gap; the publisher re-sends from the gap.
    pub gaps: u64,
    /// Lines their publishers declared lost for good
    /// ([`Persister::declare_lost`]).
    pub declared_lost: u64,
    /// Messages dropped because writes were failing and `max_pending` were
    /// held.
    pub shed: u64,
    /// Batches written.
    pub batches: u64,
    /// Times the database was opened again after DuckDB invalidated it.
    pub reopened: u64,
    /// Writes are paused: the database's filesystem has less free space
    /// than [`PersisterConfig::min_free_space`].
    pub space_low: bool,
    /// Free bytes on the database's filesystem when last looked at (0 for
    /// an in-memory database).
    pub free_space_bytes: u64,
    /// How long the last successful write took.
    pub last_flush: Duration,
    /// The longest a successful write has taken.
    pub slowest_flush: Duration,
}

/// Writes the log stream into the `logstore` table, in batches.
///
/// A batch is written when it reaches [`PersisterConfig::batch_size`] or
/// when the flush interval passes, whichever comes first, in one
/// transaction together with each publisher's highest sequence number. A
/// failed write keeps the batch and retries it on the next interval; it is
/// never dropped. A message whose sequence number is at or below its
/// publisher's mark is a re-send and is dropped on arrival, so re-sending
/// is idempotent.
///
/// [`shutdown`](Self::shutdown), and drop, write everything pending.
#[must_use = "dropping the persister shuts it down"]
pub struct Persister {
    input: Sender<Line>,
    budget: Arc<ByteBudget>,
    ctrl: Sender<Ctrl>,
    counters: Arc<StatsCell<PersisterStats>>,
    written: Marks,
    oldest: Arc<Oldest>,
    /// Writes still to fail on purpose (tests; set before the next write
    /// starts, whatever is in the channels).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    failures: Arc<writer::Failpoints>,
    worker: Option<JoinHandle<Result<()>>>,
}

/// A map looked up once or twice per line: foldhash, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Each publisher's marks, as the API reports them.
type Marks = Arc<Mutex<std::collections::HashMap<String, Watermark>>>;

/// When the oldest line not yet written was taken, shared so that a query
/// learns without a round trip whether it must wait for a write.
struct Oldest {
    base: Instant,
    /// Nanoseconds after `base`, plus one; 0 for none.
    at: AtomicU64,
}

impl Oldest {
    fn new() -> Oldest {
        Oldest {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn set(&self, since: Option<Instant>) {
        let at = since.map_or(0, |t| t.saturating_duration_since(self.base).as_nanos() as u64 + 1);
        self.at.store(at, Relaxed);
    }

    /// How long the oldest unwritten line has waited.
    fn age(&self) -> Option<Duration> {
        match self.at.load(Relaxed) {
            0 => None,
            at => Some(self.base.elapsed().saturating_sub(Duration::from_nanos(at - 1))),
        }
    }
}

/// How often the accepted marks are shared with [`Persister::watermark`].
const SHARE_EVERY: Duration = Duration::from_millis(5);

enum Ctrl {
    Flush(Sender<Result<()>>),
    Pin(Sender<Result<i64>>),
    FlushOlder(Duration, Sender<Result<()>>),
    Shutdown,
    FlushSoon,
    DeclareLost(String, u64, u64),
}

impl Persister {
    /// Starts a persister writing into `store`'s database through a
    /// connection of its own. Give [`sender`](Self::sender) to the log
    /// manager as its sink.
    ///
    /// # Errors
    /// [`Error::Db`] if the connection or the publishers' marks cannot be
    /// read; [`Error::Spawn`].
    pub fn start(store: &Store, config: PersisterConfig) -> Result<Persister> {
        let store = store.try_clone()?;
        let marks = worker::load_marks(&store.conn())?;
        let publishers = publishers::Publishers::load(&store.conn())?;
        let next_line = worker::next_line(&store.conn())?;
        let shared = marks
            .iter()
            .map(|(p, &seq)| {
                let w = Watermark {
                    persisted: seq,
                    accepted: seq,
                };
                (p.clone(), w)
            })
            .collect();
        let written = Arc::new(Mutex::new(shared));
        let (input, rx) = bounded(config.channel_capacity.max(1));
        let (ctrl, ctrl_rx) = bounded(16);
        let counters = Arc::new(StatsCell::default());
        let budget = Arc::new(ByteBudget::new(config.channel_bytes));
        let failures = Arc::new(writer::Failpoints::default());
        let oldest = Arc::new(Oldest::new());
        let worker = Worker::new(
            store,
            (rx, budget.clone()),
            ctrl_rx,
            config,
            (marks, publishers, next_line),
            (counters.clone(), failures.clone(), oldest.clone()),
            written.clone(),
        )?;
        let worker = std::thread::Builder::new()
            .name("cdktr-persister".into())
            .spawn(move || worker.run())
            .map_err(Error::Spawn)?;
        Ok(Persister {
            input,
            budget,
            ctrl,
            counters,
            written,
            oldest,
            failures,
            worker: Some(worker),
        })
    }

    /// The input channel: every message sent here is persisted.
    pub fn sender(&self) -> Sender<Line> {
        self.input.clone()
    }

    /// The input channel's byte budget ([`PersisterConfig::channel_bytes`]):
    /// give it with [`sender`](Self::sender) to
    /// `ManagerBuilder::sink_within`, and the channel is bounded in bytes
    /// as well as lines.
    pub fn budget(&self) -> Arc<ByteBudget> {
        self.budget.clone()
    }

    /// Takes everything already in the input channel and writes all that
    /// is pending, now.
    ///
    /// # Errors
    /// [`Error::Db`] if the write failed (the rows are kept and retried);
    /// [`Error::FlushTimeout`]; [`Error::Closed`].
    pub fn flush_now(&self, timeout: Duration) -> Result<()> {
        self.ask(timeout, Ctrl::Flush)
    }

    fn ask<T>(&self, timeout: Duration, ctrl: impl FnOnce(Sender<Result<T>>) -> Ctrl) -> Result<T> {
        let (tx, rx) = bounded(1);
        let start = Instant::now();
        self.ctrl.send_timeout(ctrl(tx), timeout).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(_) => Error::FlushTimeout(timeout),
            crossbeam_channel::SendTimeoutError::Disconnected(_) => Error::Closed,
        })?;
        match rx.recv_timeout(timeout.saturating_sub(start.elapsed())) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::FlushTimeout(timeout)),
            Err(_) => Err(Error::Closed),
        }
    }

    /// As [`flush_now`](Self::flush_now), but only when some line has
    /// been pending for `age` or more: the freshness a query needs without
    /// a write per query.
    ///
    /// # Errors
    /// As [`flush_now`](Self::flush_now).
    pub fn flush_older_than(&self, age: Duration, timeout: Duration) -> Result<()> {
        // Most queries find nothing that old: no round trip to the thread.
        // Lines still in the channel are taken within milliseconds, so
        // they are younger than any useful `age`.
        if self.oldest.age().is_none_or(|waited| waited < age) {
            return Ok(());
        }
        self.ask(timeout, |tx| Ctrl::FlushOlder(age, tx))
    }

    /// Writes every line received so far, then returns the newest stored
    /// row (-1 for none): the `row` of a [`Snapshot`](crate::Snapshot),
    /// which [`Store::snapshot`] completes.
    ///
    /// # Errors
    /// As [`flush_now`](Self::flush_now).
    pub fn pin(&self, timeout: Duration) -> Result<i64> {
        self.ask(timeout, Ctrl::Pin)
    }

    /// How far `publisher_id`'s stream has come; zeros for a publisher
    /// never seen. Answered from memory: `persisted` moves with each
    /// committed batch (the same as [`Store::publisher_watermark`]),
    /// `accepted` within a few milliseconds of arrival.
    pub fn watermark(&self, publisher_id: &str) -> Watermark {
        let marks = self.written.lock().unwrap_or_else(|e| e.into_inner());
        marks.get(publisher_id).copied().unwrap_or_default()
    }

    /// Asks for what is pending to be written at once rather than at the
    /// next interval, without waiting for it (a failing database keeps its
    /// retry pace).
    pub fn flush_soon(&self) {
        let _ = self.ctrl.try_send(Ctrl::FlushSoon);
    }

    /// Records that lines `first..=last` of `publisher_id` will never come:
    /// once every line before `first` is taken, the mark moves past `last`
    /// (so the lines after are taken), the loss is counted in
    /// `declared_lost` and written to `publisher_gap` with the next batch.
    /// Declaring before the earlier lines are in does nothing (the
    /// publisher declares again); declaring twice is harmless.
    pub fn declare_lost(&self, publisher_id: String, first: u64, last: u64) {
        let _ = self.ctrl.try_send(Ctrl::DeclareLost(publisher_id, first, last));
    }

    /// The counters as of now.
    pub fn stats(&self) -> PersisterStats {
        self.counters.snapshot()
    }

    /// Makes the next `n` writes fail as if the database had refused them.
    /// For tests of the retry path (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn fail_next_writes(&self, n: u32) {
        self.failures.writes.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the next `n` writes commit and then report a failure, as
    /// DuckDB does when the checkpoint it runs inside a commit fails: the
    /// persister cannot tell whether they landed. For tests of exactly-once
    /// after such a failure (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn fail_next_commits(&self, n: u32) {
        self.failures.commits.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Takes what is in the input channel, writes everything pending
    /// (retrying a failing write up to the shutdown timeout) and stops.
    ///
    /// # Errors
    /// [`Error::Unpersisted`] if rows could still not be written when the
    /// timeout passed; [`Error::Closed`] if the thread had died.
    pub fn shutdown(mut self) -> Result<PersisterStats> {
        self.stop()?;
        Ok(self.stats())
    }

    fn stop(&mut self) -> Result<()> {
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        let _ = self.ctrl.send(Ctrl::Shutdown);
        worker.join().map_err(|_| Error::Closed)?
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("persister: {e}");
        }
    }
}

impl Store {
    /// The highest sequence number of `publisher_id` that is in the
    /// database (written in the same transaction as its rows); 0 when none
    /// is. Everything the publisher sent up to it is stored, gaps aside.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn publisher_watermark(&self, publisher_id: &str) -> Result<u64> {
        self.conn()
            .prepare_cached("SELECT coalesce(max(seq), 0)::UBIGINT FROM publisher_watermark WHERE publisher_id = ?")
            .and_then(|mut s| s.query_row([publisher_id], |r| r.get::<_, u64>(0)))
            .map_err(Error::db("reading a publisher watermark"))
    }
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
