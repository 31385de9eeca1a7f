//! Best-effort delivery: a line goes straight to the socket, or waits in
//! memory while the socket has no room; nothing is re-sent.

use super::retention::Memory;
use super::socket::{PushSocket, Sent};
use super::spool::Pending;
use super::worker::Core;

pub(super) struct BestEffort {
    /// Unsent messages.
    unsent: Memory,
    cap: usize,
}

impl BestEffort {
    pub fn new(cap: usize) -> BestEffort {
        BestEffort {
            unsent: Memory::default(),
            cap,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty()
    }

    pub fn memory(&self) -> &Memory {
        &self.unsent
    }

    /// Everything up to this sequence number has been handed to the socket.
    pub fn sent_up_to(&self, core: &Core) -> u64 {
        self.unsent.front().map_or(core.seq, |p| p.seq - 1)
    }

    /// Takes the line `core` just encoded as `seq`.
    pub fn accept(&mut self, core: &mut Core, socket: &PushSocket, seq: u64) {
        let (topic, body) = core.frames();
        // Straight to the socket when nothing waits before it.
        let sent = if self.unsent.is_empty() {
            socket.try_send(topic, body)
        } else {
            Sent::NoRoom
        };
        match sent {
            Sent::Yes => {
                core.seq = seq;
                core.highest_sent = seq;
                core.stats.sent += 1;
            }
            Sent::Lost => {
                core.seq = seq;
                core.drop_one("send failed");
            }
            Sent::NoRoom if self.unsent.bytes() + topic.len() + body.len() <= self.cap => {
                let p = Pending::new(seq, topic, body);
                core.seq = seq;
                self.unsent.push_back(p);
            }
            Sent::NoRoom => core.drop_one("retention buffer full"),
        }
    }

    /// Sends what waits, oldest first, while the socket has room.
    pub fn send(&mut self, core: &mut Core, socket: &PushSocket) {
        while let Some(p) = self.unsent.front() {
            let (topic, body) = p.frames.split_at(p.split);
            let sent = socket.try_send(topic, body);
            if matches!(sent, Sent::NoRoom) {
                break;
            }
            let p = self.unsent.pop_front().expect("present");
            core.highest_sent = p.seq;
            if matches!(sent, Sent::Yes) {
                core.stats.sent += 1;
            } else {
                core.drop_one("send failed");
            }
        }
    }

    /// At shutdown: what is still unsent is lost; count it.
    pub fn abandon(&mut self, core: &mut Core) {
        if !self.unsent.is_empty() {
            core.stats.dropped += self.unsent.len() as u64;
            self.unsent.clear();
            core.warn_drop("principal unreachable at shutdown");
        }
    }
}
