//! The persister's thread: takes the stream off the channel, drops
//! re-sends, and writes batches with each publisher's mark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdktr_log::budget::ByteBudget;
use cdktr_log::stats::StatsCell;
use cdktr_log::Line;
use crossbeam_channel::{never, select, Receiver};
use duckdb::Connection;

use super::publishers::Publishers;
use super::space::{self, Space};
use super::writer::{Batch, Failpoints, Writer};

mod write;

use super::{Ctrl, HashMap, Marks, Oldest, PersisterConfig, PersisterStats, Watermark, SHARE_EVERY};
use crate::error::{Error, Result};
use crate::store::Store;
use write::{InFlight, Take};

/// After it has emptied the channel, the persister looks at it again only
/// this much later (control requests and finished writes are still taken
/// at once). Woken for every few lines, it and the log manager that woke
/// it traded 16,000-22,000 context switches a second under full load
/// (issue 15); lines wait in the channel meanwhile, not at the publishers,
/// and the live stream does not go through here.
const GATHER: Duration = Duration::from_millis(1);

pub(super) fn load_marks(conn: &Connection) -> Result<HashMap<String, u64>> {
    let read = || Error::db("reading publisher watermarks");
    let mut stmt = conn
        .prepare("SELECT publisher_id, max(seq) FROM publisher_watermark GROUP BY publisher_id")
        .map_err(read())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
        .map_err(read())?;
    rows.collect::<duckdb::Result<HashMap<_, _>>>().map_err(read())
}

/// The number after the highest line number ever given, archived lines
/// included.
pub(super) fn next_line(conn: &Connection) -> Result<u64> {
    conn.query_row(
        "SELECT greatest((SELECT max(line_id) FROM logstore), (SELECT max(max_line_id) FROM archive_file))",
        [],
        |r| r.get::<_, Option<u64>>(0),
    )
    .map(|n| n.map_or(0, |n| n + 1))
    .map_err(Error::db("reading the newest line number"))
}

pub(super) struct Worker {
    writer: Writer,
    /// The batch the writer has; taken back before the next is handed.
    in_flight: Option<InFlight>,
    /// A batch whose commit failed and may have landed all the same: it
    /// goes to the writer again as it is, before anything else, and the
    /// writer looks first (written twice, its lines would be stored twice).
    unsure: Option<Batch>,
    rx: Receiver<Line>,
    ctrl: Receiver<Ctrl>,
    config: PersisterConfig,
    /// Highest sequence number accepted (pending or written) per publisher.
    marks: HashMap<String, u64>,
    publishers: Publishers,
    pending: Vec<Line>,
    /// Bytes of the pending lines ([`Line::memory_bytes`]).
    pending_bytes: usize,
    /// The input channel's bytes, given back as lines are taken.
    budget: Arc<ByteBudget>,
    /// When the oldest pending line was taken.
    pending_since: Option<Instant>,
    /// Lines declared lost, to be written with the next batch.
    lost: Vec<(String, u64, u64)>,
    stats: PersisterStats,
    counters: Arc<StatsCell<PersisterStats>>,
    /// When the oldest unwritten line was taken, for queries.
    oldest: Arc<Oldest>,
    written: Marks,
    shared_at: Instant,
    /// Accepted marks moved since they were last shared.
    dirty: bool,
    /// The last write failed: wait for the interval before the next.
    failing: bool,
    /// The number the next stored line gets (`logstore.line_id`).
    next_line: u64,
    space: Space,
    /// Writes still to fail on purpose (tests).
    failures: Arc<Failpoints>,
    /// The interval came: batches are written until nothing is pending.
    draining: bool,
}

impl Worker {
    pub fn new(
        store: Store,
        (rx, budget): (Receiver<Line>, Arc<ByteBudget>),
        ctrl: Receiver<Ctrl>,
        config: PersisterConfig,
        (marks, publishers, next_line): (HashMap<String, u64>, Publishers, u64),
        (counters, failures, oldest): (Arc<StatsCell<PersisterStats>>, Arc<Failpoints>, Arc<Oldest>),
        written: Marks,
    ) -> Result<Worker> {
        let db = match store.location() {
            crate::Location::File(p) => Some(p.to_path_buf()),
            crate::Location::Memory => None,
        };
        let space = Space::new(db.as_deref(), config.min_free_space);
        Ok(Worker {
            writer: Writer::start(store)?,
            in_flight: None,
            unsure: None,
            rx,
            ctrl,
            config,
            marks,
            publishers,
            pending: Vec::new(),
            pending_bytes: 0,
            budget,
            pending_since: None,
            lost: Vec::new(),
            stats: PersisterStats::default(),
            counters,
            oldest,
            written,
            shared_at: Instant::now(),
            dirty: false,
            failing: false,
            next_line,
            space,
            failures,
            draining: false,
        })
    }

    pub fn run(mut self) -> Result<()> {
        let mut next_flush = Instant::now() + self.config.flush_interval;
        let (rx, ctrl, stalled) = (self.rx.clone(), self.ctrl.clone(), never());
        let done = self.writer.done.clone();
        // Input is not looked at before this (`GATHER`).
        let mut gather_until: Option<Instant> = None;
        loop {
            let gathering = gather_until.filter(|&t| Instant::now() < t);
            // Memory stays bounded while writes fail: stop taking input.
            let taking = self.failing || !self.full();
            let input = if taking && gathering.is_none() { &rx } else { &stalled };
            // While a batch is with the writer, its return wakes us.
            let mut timeout = match self.in_flight {
                Some(_) => self.config.flush_interval,
                None => next_flush.saturating_duration_since(Instant::now()),
            };
            if self.dirty {
                timeout = timeout.min(SHARE_EVERY);
            }
            if let Some(t) = gathering {
                timeout = timeout.min(t.saturating_duration_since(Instant::now()));
            }
            select! {
                recv(input) -> m => {
                    if let Ok(env) = m {
                        self.accept(env);
                        // Take what else is waiting without a select each,
                        // a batch at most, so that timers are still seen.
                        for _ in 1..self.config.batch_size {
                            // A full batch goes to the writer before more is
                            // taken; while the writer has one, lines are taken
                            // up to the limit (while writes fail, input is
                            // shed instead).
                            let write_now = self.batch_ready() && self.in_flight.is_none();
                            if !self.failing && (write_now || self.full()) {
                                break;
                            }
                            match rx.try_recv() {
                                Ok(env) => self.accept(env),
                                Err(_) => {
                                    gather_until = Some(Instant::now() + GATHER);
                                    break;
                                }
                            }
                        }
                    }
                }
                recv(done) -> w => {
                    if let Ok(w) = w {
                        if let Err(e) = self.finish_write(w) {
                            log::error!("persister: write failed, {} row(s) kept for retry: {e}", self.pending.len());
                        }
                    }
                }
                recv(ctrl) -> c => match c {
                    Ok(Ctrl::Pin(reply)) => {
                        let _ = reply.send(self.pin());
                        next_flush = Instant::now() + self.config.flush_interval;
                    }
                    Ok(Ctrl::Flush(reply)) => {
                        self.take_waiting();
                        let _ = reply.send(self.flush());
                        next_flush = Instant::now() + self.config.flush_interval;
                    }
                    Ok(Ctrl::FlushOlder(age, reply)) => {
                        self.take_waiting();
                        if self.oldest_unwritten().is_some_and(|t| t.elapsed() >= age) {
                            let _ = reply.send(self.flush());
                            next_flush = Instant::now() + self.config.flush_interval;
                        } else {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Ok(Ctrl::FlushSoon) => {
                        if !self.failing {
                            next_flush = Instant::now();
                        }
                    }
                    Ok(Ctrl::DeclareLost(publisher, first, last)) => {
                        if self.declare_lost(publisher, first, last) && !self.failing {
                            next_flush = Instant::now();
                        }
                    }
                    Ok(Ctrl::Shutdown) | Err(_) => return self.finish(),
                },
                default(timeout) => {}
            }
            let due = Instant::now() >= next_flush;
            let ready = due || self.draining || (!self.failing && self.batch_ready());
            if self.in_flight.is_none() && ready {
                // When due, everything pending is written, a batch at a time
                // (after failed writes more than a batch may wait; one small
                // transaction is likelier to fit on a filling disk).
                self.draining = due || self.draining;
                if self.unsure.is_some() || !self.pending.is_empty() || !self.lost.is_empty() {
                    match self.start_write(Take::Batch) {
                        Ok(()) | Err(Error::SpaceLow { .. }) => {}
                        Err(e) => log::error!(
                            "persister: write failed, {} row(s) kept for retry: {e}",
                            self.pending.len()
                        ),
                    }
                }
                // Space is looked at again soon, so that writes resume
                // when it returns.
                let wait = match self.space.low {
                    true => self.config.flush_interval.min(space::CHECK_EVERY),
                    false => self.config.flush_interval,
                };
                next_flush = Instant::now() + wait;
            }
            self.share_marks();
            self.publish_stats();
        }
    }

    /// As much as the persister holds unwritten (the writer's batch
    /// included), in lines or bytes.
    fn full(&self) -> bool {
        let (lines, bytes) = self.held();
        self.pending.len() + lines >= self.config.max_pending
            || self.pending_bytes + bytes >= self.config.max_pending_bytes
    }

    /// Lines and bytes taken out of `pending` and not yet written: the
    /// writer's batch and one that may have landed.
    fn held(&self) -> (usize, usize) {
        let (lines, bytes) = self.in_flight.as_ref().map_or((0, 0), |f| (f.lines, f.bytes));
        match &self.unsure {
            Some(b) => (lines + b.lines.len(), bytes + b.bytes),
            None => (lines, bytes),
        }
    }

    /// A batch to write, in lines or bytes.
    fn batch_ready(&self) -> bool {
        self.pending.len() >= self.config.batch_size || self.pending_bytes >= self.config.batch_bytes
    }

    fn accept(&mut self, env: Line) {
        let bytes = env.memory_bytes();
        // Out of the channel: its bytes leave the channel's budget.
        self.budget.release(bytes);
        let full = self.full();
        // One lookup on the hot path; a new publisher's entry is made only
        // when its first line is taken.
        let mark = self.marks.get_mut(env.publisher_id());
        let last = mark.as_deref().copied().unwrap_or(0);
        if env.seq <= last {
            self.stats.duplicates += 1;
        } else if env.replays && env.seq != last + 1 {
            // Its publisher re-sends from the gap; taking this one now
            // would make the gap's messages look like duplicates.
            self.stats.gaps += 1;
        } else if full {
            // Only reached while writes fail (otherwise input stalls first).
            self.stats.shed += 1;
            if self.stats.shed.is_power_of_two() {
                log::warn!(
                    "persister: writes failing and {} lines held; {} shed so far (replaying publishers re-send them)",
                    self.pending.len(),
                    self.stats.shed
                );
            }
        } else {
            match mark {
                Some(m) => *m = env.seq,
                None => {
                    self.marks.insert(env.publisher_id().to_owned(), env.seq);
                }
            }
            if self.pending.is_empty() {
                self.pending_since = Some(Instant::now());
            }
            self.pending.push(env);
            self.pending_bytes += bytes;
            self.dirty = true;
        }
    }

    /// Moves the mark past lines that will never come; true if it moved.
    fn declare_lost(&mut self, publisher: String, first: u64, last: u64) -> bool {
        let accepted = self.marks.get(&publisher).copied().unwrap_or(0);
        if first == 0 || first > accepted + 1 || last <= accepted {
            return false; // lines before it still to come, or nothing new
        }
        let from = accepted + 1;
        log::warn!(
            "persister: publisher {publisher} declared lines {from}..={last} lost ({} line(s))",
            last - accepted
        );
        self.stats.declared_lost += last - accepted;
        self.marks.insert(publisher.clone(), last);
        self.lost.push((publisher, from, last));
        self.dirty = true;
        true
    }

    /// Shares the accepted marks with the API, at most every few ms.
    fn share_marks(&mut self) {
        if !self.dirty || self.shared_at.elapsed() < SHARE_EVERY {
            return;
        }
        self.shared_at = Instant::now();
        self.dirty = false;
        let mut shared = self.written.lock().unwrap_or_else(|e| e.into_inner());
        for (publisher, &seq) in &self.marks {
            match shared.get_mut(publisher.as_str()) {
                Some(w) => w.accepted = seq,
                None => {
                    let w = Watermark {
                        persisted: 0,
                        accepted: seq,
                    };
                    shared.insert(publisher.clone(), w);
                }
            }
        }
    }

    /// Moves what is already in the channel into the pending batch.
    fn take_waiting(&mut self) {
        while !self.full() {
            match self.rx.try_recv() {
                Ok(env) => self.accept(env),
                Err(_) => break,
            }
        }
    }

    /// Writes every line that was in the channel when asked (the manager
    /// had handed them over before the request was made); returns the
    /// newest line's number.
    fn pin(&mut self) -> Result<i64> {
        let mut waiting = self.rx.len();
        loop {
            while waiting > 0 && !self.full() {
                match self.rx.try_recv() {
                    Ok(env) => self.accept(env),
                    Err(_) => break,
                }
                waiting -= 1;
            }
            self.flush()?;
            if waiting == 0 || self.rx.is_empty() {
                break;
            }
        }
        Ok(self.next_line as i64 - 1)
    }

    fn finish(mut self) -> Result<()> {
        self.take_waiting();
        let deadline = Instant::now() + self.config.shutdown_timeout;
        loop {
            let result = self.flush();
            match result {
                Ok(()) if self.rx.is_empty() => return Ok(()),
                Ok(()) => self.take_waiting(),
                Err(e) if Instant::now() >= deadline => {
                    let unwritten = self.pending.len() + self.held().0;
                    log::error!("persister: giving up at shutdown with {unwritten} row(s) unwritten: {e}");
                    return Err(Error::Unpersisted(unwritten + self.rx.len()));
                }
                Err(e) => {
                    log::warn!("persister: write failed at shutdown, retrying: {e}");
                    std::thread::sleep(self.config.flush_interval.min(Duration::from_millis(200)));
                }
            }
        }
    }

    /// When the oldest line not yet written was taken.
    fn oldest_unwritten(&self) -> Option<Instant> {
        let unsure = self.unsure.as_ref().and_then(|b| b.since);
        self.in_flight
            .as_ref()
            .and_then(|f| f.since)
            .or(unsure)
            .or(self.pending_since)
    }

    fn publish_stats(&mut self) {
        self.oldest.set(self.oldest_unwritten());
        self.stats.pending = (self.pending.len() + self.held().0) as u64;
        self.stats.space_low = self.space.low;
        self.stats.free_space_bytes = self.space.free;
        self.counters.publish(&self.stats);
    }
}
