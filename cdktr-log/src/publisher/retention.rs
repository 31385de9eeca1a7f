//! Where a publisher keeps encoded lines it cannot let go of yet, in
//! memory, oldest first (acknowledged delivery also writes them all to the
//! spool).

use std::collections::VecDeque;

use super::spool::Pending;

/// Encoded messages in memory, oldest first, in increasing sequence
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

    pub fn back(&self) -> Option<&Pending> {
        self.items.back()
    }

    /// The first message numbered past `seq`.
    pub fn first_after(&self, seq: u64) -> Option<&Pending> {
        self.items.get(self.items.partition_point(|p| p.seq <= seq))
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
