//! Acknowledged delivery: every line is written to the spool as it is
//! accepted and kept (in memory up to the cap, past it only in the spool)
//! until the principal reports it persisted; what it did not accept is
//! re-sent after a lost connection or a stall, and lines gone for good are
//! declared lost so that the rest of the stream is not held up.

use std::time::{Duration, Instant};

use super::acks::Acks;
use super::retention::Memory;
use super::socket::{PushSocket, Sent};
use super::spool::{Pending, Spool, HEADER};
use super::worker::Core;

/// The longest a stalled stream waits between re-sends.
const MAX_STALL: Duration = Duration::from_secs(30);
/// How often a failing spool is reported.
const WARN_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Acknowledged {
    /// Before `cursor` sent and awaiting acknowledgement, from it unsent.
    memory: Memory,
    cursor: usize,
    cap: usize,
    /// Every accepted line not yet acknowledged, and lines past the memory
    /// cap that wait to be read back.
    spool: Spool,
    spool_cap: u64,
    spool_warned: Option<Instant>,
    acks: Acks,
    /// The highest sequence number the principal accepted.
    accepted: u64,
    /// When `accepted` last moved or the stream was last rewound.
    progress_at: Instant,
    stall_base: Duration,
    stall: Duration,
    /// Lines declared lost and not yet passed by the principal.
    declared: Option<(u64, u64)>,
}

impl Acknowledged {
    pub fn new(acks: Acks, cap: usize, spool: Spool, spool_cap: u64, stall: Duration) -> Acknowledged {
        Acknowledged {
            memory: Memory::default(),
            cursor: 0,
            cap,
            spool,
            spool_cap,
            spool_warned: None,
            acks,
            accepted: 0,
            progress_at: Instant::now(),
            stall_base: stall,
            stall,
            declared: None,
        }
    }

    /// Nothing to send or to see acknowledged.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && !self.spool.is_behind()
    }

    pub fn has_unsent(&self) -> bool {
        self.cursor < self.memory.len()
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Bytes in the spool directory.
    pub fn spooled_bytes(&self) -> u64 {
        self.spool.bytes()
    }

    /// Keeps the line `core` just encoded as `seq`: written to the spool,
    /// and in memory while there is room and nothing waits to be read back.
    pub fn accept(&mut self, core: &mut Core, seq: u64) {
        let (topic, body) = core.frames();
        let p = Pending::new(seq, topic, body);
        if self.spool.bytes() + HEADER + p.frames.len() as u64 > self.spool_cap {
            core.drop_one("spool full");
            return;
        }
        let keep = !self.spool.is_behind() && self.memory.bytes() + p.frames.len() <= self.cap;
        if let Err(e) = self.spool.append(&p, keep) {
            self.warn_spool(core, &e);
            if !keep {
                core.drop_one("memory full and spool unusable");
                return;
            }
            // Kept in memory only: delivered, but lost if this process dies.
        }
        core.seq = seq;
        if keep {
            self.memory.push_back(p);
        } else {
            core.stats.spilled += 1;
        }
    }

    fn warn_spool(&mut self, core: &Core, e: &std::io::Error) {
        if self.spool_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.spool_warned = Some(Instant::now());
            log::error!("log publisher {}: cannot write the spool: {e}", core.publisher_id);
        }
    }

    /// Reads lines past the memory cap back once memory has room (and the
    /// principal has said how far it is, so that an adopted spool skips
    /// what is stored).
    pub fn refill(&mut self, core: &mut Core) {
        if !self.spool.is_behind() || self.memory.bytes() > self.cap / 2 || self.acks.latest().is_none() {
            return;
        }
        while self.memory.bytes() < self.cap / 4 * 3 {
            let done = self.memory.back().map_or(0, |p| p.seq).max(core.stats.acknowledged);
            match self.spool.read() {
                Ok(Some(p)) if p.seq <= done => {}
                Ok(Some(p)) => {
                    // An adopted spool: continue its numbering.
                    core.seq = core.seq.max(p.seq);
                    self.memory.push_back(p);
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("log publisher {}: cannot read the spool back: {e}", core.publisher_id);
                    break;
                }
            }
        }
    }

    /// Writes what was accepted since the last call to the spool, then
    /// sends from the cursor while the socket has room; what is sent stays
    /// until acknowledged.
    pub fn send(&mut self, core: &mut Core, socket: &PushSocket) {
        if let Err(e) = self.spool.flush() {
            self.warn_spool(core, &e);
        }
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

    /// Drops what the principal has persisted, declares lines it can never
    /// get, and notices a stream the principal stopped accepting (a message
    /// lost or shed): re-sends from the first message it did not accept.
    pub fn take_acks(&mut self, core: &mut Core) {
        self.acks.wanted(!self.is_empty());
        let Some(mark) = self.acks.latest() else {
            return;
        };
        if mark.persisted > core.stats.acknowledged {
            core.stats.acknowledged = mark.persisted;
            while self.memory.front().is_some_and(|p| p.seq <= core.stats.acknowledged) {
                self.memory.pop_front();
                self.cursor = self.cursor.saturating_sub(1);
            }
            if let Err(e) = self.spool.release(core.stats.acknowledged) {
                self.warn_spool(core, &e);
            }
        }
        if mark.accepted != self.accepted {
            self.accepted = mark.accepted;
            self.progress_at = Instant::now();
            self.stall = self.stall_base;
        }
        self.declare_lost(core);
        // Someone waits on the principal's writes: a caller of
        // `wait_persisted`, a shutdown, or this publisher at its memory cap
        // (it sends nothing more until lines are acknowledged).
        let urgent = core.stopping
            || core.orphan
            || core.awaits_persisted()
            || self.spool.is_behind()
            || self.memory.bytes() >= self.cap / 2;
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

    /// The principal has everything up to `have`; if the next line this
    /// publisher holds is numbered past `have + 1`, the lines between are
    /// nowhere (a spool torn or unwritable when its owner died, or left by
    /// an older version) and the principal would wait for them forever.
    fn declare_lost(&mut self, core: &mut Core) {
        let have = self.accepted.max(core.stats.acknowledged);
        if self.declared.is_some_and(|(_, last)| have >= last) {
            self.declared = None;
            self.acks.declare_lost(None);
        }
        let Some(next) = self.memory.first_after(have) else {
            return;
        };
        if next.seq == have + 1 {
            return;
        }
        let gap = (have + 1, next.seq - 1);
        if self.declared != Some(gap) {
            log::warn!(
                "log publisher {}: lines {}..={} are lost (not in memory or in the spool); declaring them",
                core.publisher_id,
                gap.0,
                gap.1
            );
            core.stats.declared_lost += gap.1 - gap.0 + 1;
            self.declared = Some(gap);
            self.acks.declare_lost(Some(gap));
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

    /// At shutdown: what the principal has not persisted is already in the
    /// spool, for the next publisher on the directory; an empty spool is
    /// deleted.
    pub fn finish(self, core: &mut Core) {
        let Acknowledged { mut spool, memory, .. } = self;
        let id = &core.publisher_id;
        if let Err(e) = spool.release(core.stats.acknowledged) {
            log::warn!("log publisher {id}: spool not tidied: {e}");
        }
        if let Err(e) = spool.flush() {
            // Held only in memory, which goes with this publisher: counted.
            let lost = spool.unwritten_after(core.stats.acknowledged);
            core.stats.dropped += lost;
            log::error!("log publisher {id}: spool not written at shutdown ({lost} unacknowledged line(s) lost): {e}");
        }
        if spool.is_empty() {
            if let Err(e) = spool.remove() {
                log::warn!("log publisher {id}: spool not tidied: {e}");
            }
            return;
        }
        let left = core.seq.saturating_sub(core.stats.acknowledged);
        core.stats.left_in_spool = left.max(memory.len() as u64);
        log::warn!(
            "log publisher {id}: {} line(s) unacknowledged, kept in the spool ({} bytes); \
             the next publisher started on that directory sends them",
            core.stats.left_in_spool,
            spool.bytes(),
        );
    }
}
