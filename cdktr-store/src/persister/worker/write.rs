//! The worker's side of the hand-off to the writer thread: a batch out
//! (with each publisher's new mark and key), back written or to retry.

use std::time::Instant;

use cdktr_log::Line;

use super::super::writer::{Batch, Written};
use super::super::HashMap;
use super::Worker;
use crate::error::{Error, Result};
use crate::ROW_GROUP_SIZE;

/// How much of what is pending a write takes.
pub(super) enum Take {
    /// A batch (`batch_size` lines or `batch_bytes`), the oldest first.
    Batch,
    /// Everything: a flush.
    All,
}

/// What the worker knows of the batch the writer has.
pub(super) struct InFlight {
    pub lines: usize,
    pub bytes: usize,
    /// When its oldest line was taken.
    pub since: Option<Instant>,
}

impl Worker {
    /// Writes everything pending now, after the batch the writer has.
    pub(super) fn flush(&mut self) -> Result<()> {
        // A failed batch is back in `pending`: written again with the rest;
        // one whose commit may have landed goes again first, on its own.
        let _ = self.wait_write();
        if self.unsure.is_some() {
            self.start_write(Take::Batch)?;
            self.wait_write()?;
        }
        if self.pending.is_empty() && self.lost.is_empty() {
            return Ok(());
        }
        self.start_write(Take::All)?;
        self.wait_write()
    }

    /// Hands pending lines to the writer, with each publisher's new mark
    /// and key.
    pub(super) fn start_write(&mut self, take: Take) -> Result<()> {
        if let Some(batch) = self.unsure.take() {
            if !self.space.room(batch.bytes as u64) {
                self.unsure = Some(batch);
                return Err(self.space_low());
            }
            return self.hand_over(batch);
        }
        let (n, bytes) = match take {
            Take::All => (self.pending.len(), self.pending_bytes),
            Take::Batch => self.next_batch(),
        };
        // What the write adds to the file is at most about what the lines
        // hold in memory (the log takes them raw, a row group compressed).
        if !self.space.room(bytes as u64) {
            return Err(self.space_low());
        }
        // Everything goes as it is; a batch goes in a buffer of its size,
        // and `pending` keeps its own (a batch split off would take a
        // buffer sized for all pending, and `pending` would grow a new one
        // by doubling).
        let lines: Vec<Line> = match n == self.pending.len() {
            true => std::mem::take(&mut self.pending),
            false => self.pending.drain(..n).collect(),
        };
        self.pending_bytes -= bytes;
        self.draining &= !self.pending.is_empty();
        // Lines left behind count as old as the oldest taken.
        let since = match self.pending.is_empty() {
            true => self.pending_since.take(),
            false => self.pending_since,
        };
        // One pass, one lookup per line: each publisher's new mark, and
        // its key (looked up once per publisher per batch).
        let mut marks: HashMap<&str, (u64, Option<u32>)> = HashMap::default();
        let mut keys = Vec::with_capacity(lines.len());
        let mut fresh = Vec::new();
        let publishers = &mut self.publishers;
        for e in &lines {
            let (m, key) = marks.entry(e.publisher_id()).or_insert((0, None));
            *m = (*m).max(e.seq);
            keys.push(*key.get_or_insert_with(|| publishers.key(e.publisher_id(), &mut fresh)));
        }
        for (publisher, _, last) in &self.lost {
            let (m, _) = marks.entry(publisher).or_insert((0, None));
            *m = (*m).max(*last);
        }
        let marks = marks.into_iter().map(|(p, (seq, _))| (p.to_owned(), seq)).collect();
        let fail = self.failures.next();
        let batch = Batch {
            first_line: self.next_line,
            keys,
            fresh,
            lost: std::mem::take(&mut self.lost),
            marks,
            since,
            bytes,
            fail,
            unsure: false,
            lines,
        };
        self.hand_over(batch)
    }

    /// Writes pause: as if they failed, until space returns.
    fn space_low(&mut self) -> Error {
        self.failing = true;
        self.draining = false;
        self.publish_stats();
        Error::SpaceLow { free: self.space.free }
    }

    fn hand_over(&mut self, batch: Batch) -> Result<()> {
        self.in_flight = Some(InFlight {
            lines: batch.lines.len(),
            bytes: batch.bytes,
            since: batch.since,
        });
        if let Err(batch) = self.writer.write(batch) {
            self.in_flight = None;
            self.give_back(*batch);
            self.failing = true;
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The oldest lines to write next, up to a batch in lines or bytes,
    /// and their bytes. More than a row group is cut at a whole number of
    /// row groups: a part of one after them would be written as a short
    /// row group, with a block of its own (measured: 1 KiB lines cut at
    /// 32 MiB made the file 1.8 times as large).
    fn next_batch(&self) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        while n < self.pending.len() && n < self.config.batch_size && bytes < self.config.batch_bytes {
            bytes += self.pending[n].memory_bytes();
            n += 1;
        }
        if n > ROW_GROUP_SIZE && n % ROW_GROUP_SIZE != 0 {
            let whole = n - n % ROW_GROUP_SIZE;
            bytes -= self.pending[whole..n].iter().map(Line::memory_bytes).sum::<usize>();
            n = whole;
        }
        (n, bytes)
    }

    /// Waits for the writer's batch, if it has one.
    pub(super) fn wait_write(&mut self) -> Result<()> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        match self.writer.done.recv() {
            Ok(w) => self.finish_write(w),
            Err(_) => {
                // Only a panic in the writer gets here: its batch is gone
                // with it. Said loudly, and the persister stops taking lines.
                let lost = self.in_flight.as_ref().map_or(0, |f| f.lines);
                log::error!("persister: the writer thread died with {lost} line(s) unwritten");
                self.failing = true;
                Err(Error::Closed)
            }
        }
    }

    /// Takes a batch back from the writer: its marks move on, or its lines
    /// wait for the next write.
    pub(super) fn finish_write(&mut self, w: Written) -> Result<()> {
        self.in_flight = None;
        if w.reopened {
            self.stats.reopened += 1;
        }
        let result = match w.result {
            Ok(took) => {
                let b = &w.batch;
                let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
                for (publisher, seq) in &b.marks {
                    let m = written.entry(publisher.clone()).or_default();
                    m.persisted = m.persisted.max(*seq);
                    m.accepted = m.accepted.max(*seq);
                }
                drop(written);
                self.stats.persisted += w.lines as u64;
                self.next_line += w.lines as u64;
                self.stats.batches += 1;
                self.stats.last_flush = took;
                self.stats.slowest_flush = self.stats.slowest_flush.max(took);
                self.failing = false;
                Ok(())
            }
            Err(e) => {
                self.stats.failed_flushes += 1;
                self.failing = true;
                // Retried when the interval comes again.
                self.draining = false;
                self.give_back(w.batch);
                Err(e)
            }
        };
        self.publish_stats();
        result
    }

    /// A batch that was not written: its lines back before those taken
    /// since, or, if its commit may have landed, kept whole to go again.
    fn give_back(&mut self, b: Batch) {
        if b.unsure {
            // Failed on purpose once is enough: the retry is a real one.
            self.unsure = Some(Batch { fail: None, ..b });
        } else {
            self.publishers.forget(&b.fresh);
            self.take_back(b);
        }
    }

    /// Puts a batch that was not written back before the lines taken since.
    fn take_back(&mut self, mut b: Batch) {
        b.lines.append(&mut self.pending);
        self.pending = b.lines;
        self.pending_bytes += b.bytes;
        self.pending_since = b.since.or(self.pending_since);
        b.lost.append(&mut self.lost);
        self.lost = b.lost;
    }
}
