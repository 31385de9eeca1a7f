//! Acknowledged delivery: every line is kept (in memory, past the cap in
//! the spool) until the principal reports it persisted, and what it did not
//! accept is re-sent after a lost connection or a stall.

use std::time::{Duration, Instant};

use super::acks::Acks;
use super::retention::{Memory, Overflow, Spilled};
use super::socket::{PushSocket, Sent};
use super::spool::{Pending, Spool};
use super::worker::Core;

/// The longest a stalled stream waits between re-sends.
const MAX_STALL: Duration = Duration::from_secs(30);

pub(super) struct Acknowledged {
    /// Before `cursor` sent and awaiting acknowledgement, from it unsent.
    memory: Memory,
    cursor: usize,
    cap: usize,
    /// Messages after the last one in memory.
    overflow: Overflow,
    acks: Acks,
    /// The highest sequence number the principal accepted.
    accepted: u64,
    /// When `accepted` last moved or the stream was last rewound.
    progress_at: Instant,
    stall_base: Duration,
    stall: Duration,
}

impl Acknowledged {
    pub fn new(acks: Acks, cap: usize, overflow: Overflow, stall: Duration) -> Acknowledged {
        Acknowledged {
            memory: Memory::default(),
            cursor: 0,
            cap,
            overflow,
            acks,
            accepted: 0,
            progress_at: Instant::now(),
            stall_base: stall,
            stall,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && !self.overflow.holds_any()
    }

    pub fn has_unsent(&self) -> bool {
        self.cursor < self.memory.len()
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Bytes waiting in the spool directory.
    pub fn spooled_bytes(&self) -> u64 {
        self.overflow.bytes()
    }

    /// Keeps the line `core` just encoded as `seq`: in memory while there
    /// is room and nothing waits in the spool, else in the spool.
    pub fn accept(&mut self, core: &mut Core, seq: u64) {
        let (topic, body) = core.frames();
        let p = Pending::new(seq, topic, body);
        if !self.overflow.holds_any() && self.memory.bytes() + p.frames.len() <= self.cap {
            core.seq = seq;
            self.memory.push_back(p);
            return;
        }
        match self.overflow.spill(&core.publisher_id, &p) {
            Ok(Spilled::Yes) => {
                core.seq = seq;
                core.stats.spilled += 1;
            }
            Ok(Spilled::Full) => core.drop_one("retention buffer and spool full"),
            Err(e) => {
                log::error!("log publisher {}: cannot spill: {e}", core.publisher_id);
                core.drop_one("spool unusable");
            }
        }
    }

    /// Moves spilled messages back into memory once memory has room.
    pub fn refill(&mut self, core: &mut Core) {
        if !self.overflow.holds_any() || self.memory.bytes() > self.cap / 2 {
            return;
        }
        let highest = self.overflow.refill(
            &mut self.memory,
            self.cap / 4 * 3,
            core.stats.acknowledged,
            &core.publisher_id,
        );
        // An adopted spool: continue its numbering.
        core.seq = core.seq.max(highest);
    }

    /// Sends from the cursor while the socket has room; what is sent stays
    /// until acknowledged.
    pub fn send(&mut self, core: &mut Core, socket: &PushSocket) {
        while let Some(p) = self.memory.get(self.cursor) {
            let (topic, body) = p.frames.split_at(p.split);
            if matches!(socket.try_send(topic, body), Sent::NoRoom) {
                break;
            }
            // A lost body frame is re-sent when the principal's acceptance stalls.
            if p.seq > core.highest_sent {
                core.highest_sent = p.seq;
                core.stats.sent += 1;
            } else {
                core.stats.resent += 1;
            }
            self.cursor += 1;
        }
    }

    /// Drops what the principal has persisted, and notices a stream the
    /// principal stopped accepting (a message lost or shed): re-sends from
    /// the first message it did not accept.
    pub fn take_acks(&mut self, core: &mut Core) {
        self.acks.wanted(!self.is_empty());
        let Some(mark) = self.acks.latest() else {
            return;
        };
        core.stats.acknowledged = core.stats.acknowledged.max(mark.persisted);
        while self.memory.front().is_some_and(|p| p.seq <= core.stats.acknowledged) {
            self.memory.pop_front();
            self.cursor = self.cursor.saturating_sub(1);
        }
        if mark.accepted != self.accepted {
            self.accepted = mark.accepted;
            self.progress_at = Instant::now();
            self.stall = self.stall_base;
        }
        // Someone waits on the principal's writes: a caller of
        // `wait_persisted`, a shutdown, or this publisher at its memory cap
        // (it sends nothing more until lines are acknowledged).
        let spooling = self.overflow.holds_any();
        let urgent =
            core.stopping || core.orphan || core.awaits_persisted() || spooling || self.memory.bytes() >= self.cap / 2;
        self.acks.want(!self.is_empty(), urgent);
        if core.highest_sent > self.accepted && self.progress_at.elapsed() >= self.stall {
            log::warn!(
                "log publisher {}: the principal accepted nothing past seq {} for {:?}; re-sending from there",
                core.publisher_id,
                self.accepted,
                self.stall
            );
            self.rewind(self.accepted);
            self.stall = (self.stall * 2).min(MAX_STALL);
        }
    }

    /// A broken connection may have lost what was in flight: re-send all
    /// that is unacknowledged.
    pub fn connection_lost(&mut self, core: &Core) {
        if self.cursor > 0 {
            log::info!(
                "log publisher {}: connection lost; re-sending {} unacknowledged message(s)",
                core.publisher_id,
                self.cursor
            );
            self.rewind(0);
        }
    }

    /// Sends again from the first retained message after `after`.
    fn rewind(&mut self, after: u64) {
        self.cursor = self
            .memory
            .iter()
            .take_while(|p| p.seq <= after)
            .count()
            .min(self.cursor);
        self.progress_at = Instant::now();
    }

    /// At shutdown: what the principal has not persisted goes to the spool,
    /// in order, for the next publisher on the directory.
    pub fn keep_unacknowledged(&mut self, core: &mut Core) {
        let id = core.publisher_id.clone();
        let dir = self.overflow.dir.clone();
        let left = self.memory.len() as u64;
        if left > 0 {
            let spool = match self.overflow.spool.take() {
                Some(s) => Ok(Some(s)),
                None => Spool::open(&dir, &id),
            };
            match spool {
                Ok(Some(mut s)) => match s.push_front(self.memory.iter()).and_then(|()| s.flush()) {
                    Ok(()) => {
                        core.stats.left_in_spool += left;
                        self.overflow.spool = Some(s);
                    }
                    Err(e) => {
                        log::error!("log publisher {id}: cannot keep unacknowledged lines: {e}");
                        core.stats.dropped += left;
                    }
                },
                Ok(None) => {
                    log::error!(
                        "log publisher {id}: another live publisher owns its spool in {}; \
                         {left} unacknowledged line(s) lost",
                        dir.display()
                    );
                    core.stats.dropped += left;
                }
                Err(e) => {
                    log::error!(
                        "log publisher {id}: spool in {} unusable ({e}); {left} unacknowledged line(s) lost",
                        dir.display()
                    );
                    core.stats.dropped += left;
                }
            }
            self.memory.clear();
            self.cursor = 0;
        }
        if let Some(mut s) = self.overflow.spool.take() {
            if s.is_empty() {
                if let Err(e) = s.remove() {
                    log::warn!("log publisher {id}: spool not tidied: {e}");
                }
            } else {
                let _ = s.flush();
                if core.stats.left_in_spool == 0 {
                    core.stats.left_in_spool = s.records;
                }
                log::warn!(
                    "log publisher {id}: {} bytes of unacknowledged lines kept in {}; \
                     the next publisher started on that directory sends them",
                    s.bytes,
                    dir.display()
                );
                // Kept open (and locked) until the worker ends, so its size is counted.
                self.overflow.spool = Some(s);
            }
        }
    }
}
