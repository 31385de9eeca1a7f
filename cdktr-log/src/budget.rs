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
/// A sender that found the budget spent waits until half of it is free,
/// not until one item fits: woken for every item the receiver takes, the
/// two threads traded two context switches per item while the receiver
/// caught up, on cores the receiver needed (issue 15).
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
    /// be free; false if they were not. Once it has to wait, it waits until
    /// at most half the budget is held and `n` fits. An item larger than
    /// the whole budget is let through when nothing else is held, so that
    /// it cannot wait forever.
    pub fn acquire(&self, n: usize, timeout: Duration) -> bool {
        if self.try_take(n) {
            return true;
        }
        let end = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_add(1, SeqCst);
        let taken = loop {
            if self.used.load(SeqCst) <= self.low_water() && self.try_take(n) {
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

    /// Where a waiting sender is let in again.
    fn low_water(&self) -> usize {
        self.max / 2
    }

    /// Gives back `n` bytes. Lock-free unless a sender waits and at most
    /// half the budget is held.
    pub fn release(&self, n: usize) {
        let before = match self.used.fetch_update(SeqCst, SeqCst, |u| Some(u.saturating_sub(n))) {
            Ok(u) | Err(u) => u,
        };
        if before.saturating_sub(n) <= self.low_water() && self.waiting.load(SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.freed.notify_all();
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Polls `f` for up to 10 s.
    fn within_10s(f: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        f()
    }

    /// A thread acquiring `n` bytes, once it waits for them.
    fn waiting_sender(budget: &Arc<ByteBudget>, n: usize) -> std::thread::JoinHandle<bool> {
        let sender = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.acquire(n, Duration::from_secs(30)))
        };
        assert!(within_10s(|| budget.waiting.load(SeqCst) == 1), "the sender waits");
        sender
    }

    #[test]
    fn a_waiting_sender_is_let_in_once_half_the_budget_is_free_not_when_one_item_fits() {
        let budget = Arc::new(ByteBudget::new(1_000));
        assert!(budget.acquire(1_000, Duration::ZERO));
        let sender = waiting_sender(&budget, 100);
        // Room for its 100 bytes, but 900 of 1,000 still held.
        budget.release(100);
        // It looks again every 5 ms; 40 looks later it still has not taken.
        std::thread::sleep(RECHECK * 40);
        assert_eq!(budget.used(), 900, "let in before half the budget was free");
        assert_eq!(budget.waiting.load(SeqCst), 1);
        budget.release(400);
        assert!(sender.join().unwrap(), "let in at half");
        assert_eq!(budget.used(), 600);
    }

    #[test]
    fn a_sender_that_did_not_wait_takes_any_room_there_is() {
        let budget = ByteBudget::new(1_000);
        assert!(budget.acquire(950, Duration::ZERO));
        assert!(budget.acquire(50, Duration::from_secs(1)), "50 bytes fit: no wait");
        assert!(!budget.acquire(1, Duration::from_millis(20)), "full");
        budget.release(600);
        assert!(budget.acquire(100, Duration::ZERO));
        assert_eq!(budget.used(), 500);
    }

    #[test]
    fn an_item_larger_than_the_budget_waits_for_an_empty_budget_then_passes() {
        let budget = Arc::new(ByteBudget::new(1_000));
        assert!(budget.acquire(300, Duration::ZERO));
        let sender = waiting_sender(&budget, 5_000);
        budget.release(300);
        assert!(sender.join().unwrap());
        assert_eq!(budget.used(), 5_000);
    }
}
