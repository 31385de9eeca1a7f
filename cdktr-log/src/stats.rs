//! Counters that a component's worker thread keeps and any thread reads.

use std::sync::{Mutex, PoisonError};

/// A component's counters as its worker last published them.
///
/// The worker counts in a plain struct it owns and publishes a copy once
/// per round of work; readers take a copy. The lock is held only for the
/// copy, never while counting, so the hot path pays one uncontended lock
/// per round rather than an atomic per counter per message.
#[derive(Debug, Default)]
pub struct StatsCell<T>(Mutex<T>);

impl<T: Copy> StatsCell<T> {
    /// A cell holding `initial`.
    pub fn new(initial: T) -> Self {
        StatsCell(Mutex::new(initial))
    }

    /// Replaces what readers see.
    pub fn publish(&self, value: &T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = *value;
    }

    /// The counters as last published.
    pub fn snapshot(&self) -> T {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::StatsCell;

    #[test]
    fn readers_see_the_last_published_copy() {
        let cell = StatsCell::new((0u64, 0u64));
        assert_eq!(cell.snapshot(), (0, 0));
        cell.publish(&(3, 4));
        assert_eq!(cell.snapshot(), (3, 4));
    }
}
