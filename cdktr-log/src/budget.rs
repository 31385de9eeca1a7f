//! [`ByteBudget`]: a bound in bytes on what a queue of log lines holds, so
//! that memory does not grow with the payload size when queues are bounded
//! in lines.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The bytes a queue's items hold, shared by its two ends: the sender
/// [`acquire`](Self::acquire)s an item's size before sending it, the
/// receiver [`release`](Self::release)s it when it takes the item.
///
/// ```
/// let budget = cdktr_log::budget::ByteBudget::new(1_000);
/// assert!(budget.acquire(600, std::time::Duration::ZERO));
/// assert!(!budget.acquire(600, std::time::Duration::ZERO), "over the budget");
/// budget.release(600);
/// assert!(budget.acquire(600, std::time::Duration::ZERO));
/// ```
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    /// Senders waiting for room: only then does a release wake anyone.
    waiting: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
    max: usize,
}

/// The longest a waiting sender sleeps before it looks again (a release
/// between its look and its sleep is not missed for longer).
const RECHECK: Duration = Duration::from_millis(5);

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> ByteBudget {
        ByteBudget {
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Takes `n` bytes of the budget, waiting up to `timeout` for them to
    /// be free; false if they were not. An item larger than the whole
    /// budget is let through when nothing else is held, so that it cannot
    /// wait forever.
    pub fn acquire(&self, n: usize, timeout: Duration) -> bool {
        if self.try_take(n) {
            return true;
        }
        let end = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_add(1, SeqCst);
        let taken = loop {
            if self.try_take(n) {
                break true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            guard = self
                .freed
                .wait_timeout(guard, left.min(RECHECK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiting.fetch_sub(1, SeqCst);
        taken
    }

    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(SeqCst);
        loop {
            if used != 0 && used + n > self.max {
                return false;
            }
            match self.used.compare_exchange_weak(used, used + n, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives back `n` bytes. Lock-free unless a sender waits.
    pub fn release(&self, n: usize) {
        let _ = self.used.fetch_update(SeqCst, SeqCst, |u| Some(u.saturating_sub(n)));
        if self.waiting.load(SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.freed.notify_all();
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }
}
