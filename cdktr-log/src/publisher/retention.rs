//! Where a publisher keeps encoded lines it cannot let go of yet: in
//! memory, oldest first, and (acknowledged delivery) past the memory cap in
//! the spool directory.

use std::collections::VecDeque;
use std::path::PathBuf;

use super::spool::{Pending, Spool};

/// Encoded messages in memory, oldest first, with contiguous sequence
/// numbers.
#[derive(Default)]
pub(super) struct Memory {
    items: VecDeque<Pending>,
    bytes: usize,
}

impl Memory {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, i: usize) -> Option<&Pending> {
        self.items.get(i)
    }

    pub fn front(&self) -> Option<&Pending> {
        self.items.front()
    }

    pub fn push_back(&mut self, p: Pending) {
        self.bytes += p.frames.len();
        self.items.push_back(p);
    }

    pub fn pop_front(&mut self) -> Option<Pending> {
        let p = self.items.pop_front()?;
        self.bytes -= p.frames.len();
        Some(p)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.items.iter()
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }
}

/// The spool directory side of acknowledged delivery: opened on the first
/// spill (or handed an adopted spool), capped in bytes.
pub(super) struct Overflow {
    pub spool: Option<Spool>,
    pub dir: PathBuf,
    pub cap: u64,
}

/// What became of a message that did not fit in memory.
pub(super) enum Spilled {
    Yes,
    /// The spool is at its cap.
    Full,
}

impl Overflow {
    /// True when messages wait in the spool (so new ones must queue behind
    /// them).
    pub fn holds_any(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    pub fn bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.bytes)
    }

    /// Appends `p`, opening this publisher's spool first if need be.
    pub fn spill(&mut self, publisher_id: &str, p: &Pending) -> std::io::Result<Spilled> {
        if self.spool.is_none() {
            match Spool::open(&self.dir, publisher_id)? {
                Some(s) => self.spool = Some(s),
                None => {
                    return Err(std::io::Error::other(format!(
                        "another live publisher named {publisher_id} owns its spool files"
                    )))
                }
            }
        }
        let spool = self.spool.as_mut().expect("opened above");
        if spool.bytes + 16 + p.frames.len() as u64 > self.cap {
            return Ok(Spilled::Full);
        }
        spool.push(p)?;
        Ok(Spilled::Yes)
    }

    /// Moves spilled messages back into `memory` until it holds
    /// `fill_to` bytes, skipping those already acknowledged. Returns the
    /// highest sequence number read (an adopted spool continues its
    /// numbering).
    pub fn refill(&mut self, memory: &mut Memory, fill_to: usize, acknowledged: u64, publisher_id: &str) -> u64 {
        let mut highest = 0;
        let Some(spool) = self.spool.as_mut() else {
            return highest;
        };
        while memory.bytes() < fill_to {
            match spool.pop() {
                Ok(Some(p)) if p.seq <= acknowledged => {}
                Ok(Some(p)) => {
                    highest = highest.max(p.seq);
                    memory.push_back(p);
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("log publisher {publisher_id}: cannot read the spool back: {e}");
                    break;
                }
            }
        }
        highest
    }
}
