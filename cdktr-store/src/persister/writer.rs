//! The persister's writer thread: one batch at a time into DuckDB, while
//! the persister's own thread keeps taking lines off the channel. A write
//! that runs a DuckDB checkpoint takes hundreds of milliseconds; without
//! this thread the channel filled meanwhile and the log manager, and with it
//! the live stream, waited (`docs/performance.md`, "Second round").

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdktr_log::Line;
use crossbeam_channel::{bounded, Receiver, Sender};
use duckdb::{params, Connection};

use super::blocks::BlockIndex;
use super::columns;
use crate::error::{Error, Result};
use crate::store::{chrono_now_ms, Store};

/// What one transaction writes: the lines, numbered from `first_line`, and
/// each publisher's new mark.
pub(super) struct Batch {
    pub lines: Vec<Line>,
    pub first_line: u64,
    /// Each line's publisher key.
    pub keys: Vec<u32>,
    /// Publishers numbered for this batch.
    pub fresh: Vec<(u32, String)>,
    pub lost: Vec<(String, u64, u64)>,
    /// Per publisher: its new mark.
    pub marks: Vec<(String, u64)>,
    /// When the oldest line was taken.
    pub since: Option<Instant>,
    /// Bytes of the lines.
    pub bytes: usize,
    /// Fail on purpose (tests).
    pub fail: Option<Fail>,
    /// A try of this very batch failed where it may have landed all the
    /// same (in its commit: DuckDB's automatic checkpoint runs after the
    /// write-ahead log has the batch, and its failure fails the commit; or
    /// the look for an earlier try failed). It must go again as it is,
    /// never merged with other lines, and the writer looks first.
    pub unsure: bool,
}

impl Batch {
    /// The number of its last line (of the line before it, if it has none).
    fn last_line(&self) -> u64 {
        (self.first_line + self.lines.len() as u64).saturating_sub(1)
    }
}

/// A write made to fail on purpose (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// As if DuckDB had refused it: nothing written.
    Write,
    /// Committed, then reported failed, as when the checkpoint DuckDB runs
    /// inside a commit fails.
    AfterCommit,
}

/// Writes still to fail on purpose, of each kind (tests).
#[derive(Debug, Default)]
pub(crate) struct Failpoints {
    pub writes: AtomicU32,
    pub commits: AtomicU32,
}

impl Failpoints {
    /// How the next write fails, if it does.
    pub fn next(&self) -> Option<Fail> {
        let take = |n: &AtomicU32| n.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
        if take(&self.writes) {
            Some(Fail::Write)
        } else if take(&self.commits) {
            Some(Fail::AfterCommit)
        } else {
            None
        }
    }
}

/// A batch back from the writer; written, without its lines (freed on the
/// writer's thread, not the receiving one).
pub(super) struct Written {
    pub batch: Batch,
    /// Lines in the batch.
    pub lines: usize,
    /// How long the write took, or why it failed.
    pub result: Result<Duration>,
    /// DuckDB had invalidated the database and it was opened again.
    pub reopened: bool,
}

/// The writer's end of the persister: hand a batch, take it back written.
pub(super) struct Writer {
    jobs: Option<Sender<Batch>>,
    pub done: Receiver<Written>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(store: Store) -> Result<Writer> {
        let (jobs, jobs_rx) = bounded::<Batch>(1);
        let (done_tx, done) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("cdktr-writer".into())
            .spawn(move || {
                lower_priority();
                let mut index = BlockIndex::default();
                for batch in jobs_rx {
                    if done_tx.send(write(&store, &mut index, batch)).is_err() {
                        break;
                    }
                }
            })
            .map_err(Error::Spawn)?;
        Ok(Writer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands `batch` over (the writer takes one at a time: the caller has
    /// taken the previous one back); gives it back if the writer is gone.
    pub fn write(&self, batch: Batch) -> std::result::Result<(), Box<Batch>> {
        match &self.jobs {
            Some(jobs) => jobs.send(batch).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(batch)),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Record batches the appender is given between flushes (16,384 rows).
const APPENDER_CHUNKS: usize = 8;

/// How much lower the writer's CPU priority is than the threads that
/// receive and forward lines (a nice value).
const NICE: i32 = 10;

/// Lowers this thread's CPU priority: on a busy machine the live stream
/// comes first and writes catch up in between (lines wait in the
/// persister's bounded queue meanwhile, not at the publishers).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's id; a failure changes
    // nothing and is only logged.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, now + NICE) != 0 {
            log::debug!(
                "persister: could not lower the writer's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn write(store: &Store, index: &mut BlockIndex, mut batch: Batch) -> Written {
    let start = Instant::now();
    let lines = batch.lines.len();
    let outcome = write_unless_landed(&mut store.conn(), index, &batch);
    batch.unsure |= matches!(outcome, Err((true, _)));
    let result = outcome.map_err(|(_, e)| Error::Db {
        op: "writing a batch",
        source: e,
    });
    let mut reopened = false;
    if result.is_ok() {
        batch.lines = Vec::new();
    } else {
        // After a fatal error DuckDB refuses everything until the file is
        // opened again: do that here, rather than fail every retry until
        // someone restarts the principal.
        match store.recover() {
            Ok(r) => reopened = r,
            Err(e) => log::error!("persister: the database is invalidated and cannot be reopened yet: {e}"),
        }
    }
    Written {
        batch,
        lines,
        result: result.map(|()| start.elapsed()),
        reopened,
    }
}

/// Writes `b`, unless it is unsure and an earlier try landed. An error says
/// whether the batch may have landed all the same (it came from the
/// commit, or the look for an earlier try failed).
fn write_unless_landed(
    conn: &mut Connection,
    index: &mut BlockIndex,
    b: &Batch,
) -> std::result::Result<(), (bool, duckdb::Error)> {
    let injected = || duckdb::Error::ToSqlConversionFailure("injected write failure".into());
    if b.fail == Some(Fail::Write) {
        return Err((false, injected()));
    }
    let blocks = index.rows(&b.lines, b.first_line);
    if b.unsure && landed(conn, b).map_err(|e| (true, e))? {
        // Its index rows landed with it: the rows are those it had then
        // (nothing was committed since).
        index.committed(&blocks, b.last_line());
        return Ok(());
    }
    write_batch(conn, b, &blocks)?;
    index.committed(&blocks, b.last_line());
    match b.fail {
        Some(Fail::AfterCommit) => Err((true, injected())),
        _ => Ok(()),
    }
}

/// Whether an earlier try of `b` was committed: a transaction lands whole,
/// so one of its rows tells (its lines' numbers, else its first gap, else
/// its first mark).
fn landed(conn: &Connection, b: &Batch) -> duckdb::Result<bool> {
    let count = |sql: &str, p: &[&dyn duckdb::ToSql]| conn.query_row(sql, p, |r| r.get::<_, i64>(0));
    let n = if !b.lines.is_empty() {
        let end = b.first_line + b.lines.len() as u64;
        // The archiver may have moved them on since.
        count(
            "SELECT (SELECT count(*) FROM logstore WHERE line_id >= ?1 AND line_id < ?2) \
                  + (SELECT count(*) FROM archive_file WHERE max_line_id >= ?1 AND min_line_id < ?2)",
            &[&b.first_line, &end],
        )?
    } else if let Some((publisher, first, last)) = b.lost.first() {
        count(
            "SELECT count(*) FROM publisher_gap WHERE publisher_id = ? AND first_seq = ? AND last_seq = ?",
            &[publisher, first, last],
        )?
    } else if let Some((publisher, seq)) = b.marks.first() {
        count(
            "SELECT count(*) FROM publisher_watermark WHERE publisher_id = ? AND seq >= ?",
            &[publisher, seq],
        )?
    } else {
        0
    };
    Ok(n > 0)
}

/// Writes the batch and each publisher's new mark in one transaction; an
/// error says whether it came from the commit (then the batch may have
/// landed).
fn write_batch(
    conn: &mut Connection,
    b: &Batch,
    blocks: &[(&str, u64)],
) -> std::result::Result<(), (bool, duckdb::Error)> {
    let tx = conn.transaction().map_err(|e| (false, e))?;
    append_batch(&tx, b, blocks).map_err(|e| (false, e))?;
    tx.commit().map_err(|e| (true, e))
}

fn append_batch(tx: &duckdb::Transaction<'_>, b: &Batch, blocks: &[(&str, u64)]) -> duckdb::Result<()> {
    if !b.fresh.is_empty() {
        let mut app = tx.appender("publisher")?;
        for (key, id) in &b.fresh {
            app.append_row(params![*key, id])?;
        }
        app.flush()?;
    }
    if !b.lines.is_empty() {
        let mut app = tx.appender("logstore")?;
        // A vector's worth of rows at a time: what DuckDB takes per call,
        // and the Arrow copy of a large batch (a flush of everything
        // pending) is never whole in memory. The appender keeps what it is
        // given until flushed: flushed every 16,384 rows, its copy stays
        // small too (session 10: peak RSS under full ingest 285 -> 226 MiB
        // with 122,880-line batches). Still one transaction.
        let chunks = b.lines.chunks(columns::CHUNK).zip(b.keys.chunks(columns::CHUNK));
        for (i, (lines, keys)) in chunks.enumerate() {
            let first = b.first_line + (i * columns::CHUNK) as u64;
            app.append_record_batch(columns::logstore(lines, keys, first)?)?;
            if (i + 1) % APPENDER_CHUNKS == 0 {
                app.flush()?;
            }
        }
        // Dropping an appender flushes too, but throws the error away.
        app.flush()?;
        let mut app = tx.appender("instance_block")?;
        for (instance, block) in blocks {
            app.append_row(params![instance, block])?;
        }
        app.flush()?;
    }
    let now = chrono_now_ms();
    let mut app = tx.appender("publisher_watermark")?;
    for (publisher, seq) in &b.marks {
        app.append_row(params![publisher, *seq, now])?;
    }
    app.flush()?;
    if !b.lost.is_empty() {
        let mut app = tx.appender("publisher_gap")?;
        for (publisher, first, last) in &b.lost {
            app.append_row(params![publisher, *first, *last, now])?;
        }
        app.flush()?;
    }
    drop(app);
    Ok(())
}
