//! The principal's acknowledgements: its watermark for this publisher,
//! polled on a thread of its own so that a principal that is down never
//! holds up sending.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{LazyClient, Poller};
use crate::config::ApiConfig;
use crate::curve::ClientKeys;
use crate::error::Result;
use crate::wire::Watermark;

/// How often the principal is asked for the watermark while lines await
/// acknowledgement.
const ACK_POLL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Marks {
    persisted: AtomicU64,
    accepted: AtomicU64,
    /// Answers received so far.
    answers: AtomicU64,
    /// Lines await acknowledgement: ask.
    wanted: AtomicBool,
    /// Someone waits on the principal's writes: ask it to write now.
    urgent: AtomicBool,
    /// Lines to declare lost, first and last, until the principal passes them.
    lost: Mutex<Option<(u64, u64)>>,
}

pub(super) struct Acks {
    marks: Arc<Marks>,
    _poller: Poller,
}

impl Acks {
    pub fn start(api: &ApiConfig, publisher_id: Arc<str>, keys: Option<ClientKeys>) -> Result<Acks> {
        let marks = Arc::new(Marks::default());
        let m = marks.clone();
        let client = LazyClient::new(api, Duration::from_secs(1)).curve(keys);
        let poller = Poller::start("log-acks", client, ACK_POLL, move |client| {
            if !m.wanted.load(Relaxed) {
                return true;
            }
            let lost = *m.lost.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((first, last)) = lost {
                if let Err(e) = client.call(|c| c.declare_lost(&publisher_id, first, last)) {
                    log::debug!("log publisher {publisher_id}: declaring lines lost: {e}");
                }
            }
            match client.call(|c| c.watermark_flushing(&publisher_id, m.urgent.load(Relaxed))) {
                Ok(mark) => {
                    m.persisted.store(mark.persisted, Relaxed);
                    m.accepted.store(mark.accepted, Relaxed);
                    m.answers.fetch_add(1, Relaxed);
                    true
                }
                Err(e) => {
                    log::debug!("log publisher {publisher_id}: watermark: {e}");
                    false
                }
            }
        })?;
        Ok(Acks { marks, _poller: poller })
    }

    /// Whether to keep asking.
    pub fn wanted(&self, waiting: bool) {
        self.marks.wanted.store(waiting, Relaxed);
    }

    /// Whether to keep asking, and whether to ask the principal to write
    /// now rather than at its flush interval.
    pub fn want(&self, waiting: bool, urgent: bool) {
        self.marks.wanted.store(waiting, Relaxed);
        self.marks.urgent.store(waiting && urgent, Relaxed);
    }

    /// Tells the principal, at each poll, that these lines will never come.
    pub fn declare_lost(&self, lines: Option<(u64, u64)>) {
        *self.marks.lost.lock().unwrap_or_else(|e| e.into_inner()) = lines;
    }

    /// The latest watermark; `None` until the principal has answered once.
    pub fn latest(&self) -> Option<Watermark> {
        (self.marks.answers.load(Relaxed) > 0).then(|| Watermark {
            persisted: self.marks.persisted.load(Relaxed),
            accepted: self.marks.accepted.load(Relaxed),
        })
    }
}
