//! Status updates and heartbeats to the principal's API, each on a thread
//! of its own so that a principal that is down never holds up a task.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdktr_log::api::{ErrorKind, LazyClient, Poller, Request, Response};
use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::error::{Error, Result};

/// Sends status updates one at a time, in order, retrying each until the
/// principal has recorded it.
pub(crate) struct Reporter {
    tx: Option<Sender<Request>>,
    queued: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    /// Set to give up on what is still queued.
    abandon: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Reporter {
    pub fn start(client: LazyClient) -> Result<Reporter> {
        let (tx, rx) = unbounded();
        let (queued, delivered, abandon) = (
            Arc::default(),
            Arc::<AtomicU64>::default(),
            Arc::<AtomicBool>::default(),
        );
        let (d, a) = (delivered.clone(), abandon.clone());
        let thread = std::thread::Builder::new()
            .name("cdktr-agent-status".into())
            .spawn(move || deliver(client, rx, d, a))
            .map_err(|source| Error::Spawn { name: "status", source })?;
        Ok(Reporter {
            tx: Some(tx),
            queued,
            delivered,
            abandon,
            thread: Some(thread),
        })
    }

    pub fn send(&self, update: Request) {
        if let Some(tx) = &self.tx {
            self.queued.fetch_add(1, Relaxed);
            let _ = tx.send(update);
        }
    }

    /// Waits up to `timeout` for everything queued to be recorded; returns
    /// how many updates could not be.
    pub fn finish(mut self, timeout: Duration) -> u64 {
        drop(self.tx.take());
        let end = Instant::now() + timeout;
        while self.delivered.load(Relaxed) < self.queued.load(Relaxed) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.abandon.store(true, Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

fn deliver(mut client: LazyClient, rx: Receiver<Request>, delivered: Arc<AtomicU64>, abandon: Arc<AtomicBool>) -> u64 {
    let mut lost = 0;
    for update in rx.iter() {
        let mut backoff = Duration::from_millis(50);
        loop {
            if abandon.load(Relaxed) {
                lost += 1;
                break;
            }
            let retry = match client.call(|c| c.call(&update)) {
                Ok(Response::Accepted) => false,
                Ok(Response::Error { kind, message }) => {
                    let transient = matches!(kind, ErrorKind::Busy | ErrorKind::Database | ErrorKind::ShuttingDown);
                    if !transient {
                        log::error!("agent: the principal refused a status update ({kind}): {message}");
                        lost += 1;
                    }
                    transient
                }
                Ok(other) => {
                    log::error!("agent: unexpected reply to a status update: {other:?}");
                    lost += 1;
                    false
                }
                Err(e) => {
                    log::debug!("agent: status update not delivered yet: {e}");
                    true
                }
            };
            if !retry {
                break;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        delivered.fetch_add(1, Relaxed);
    }
    if lost > 0 {
        log::warn!("agent: {lost} status update(s) were refused or not delivered before the agent stopped");
    }
    lost
}

/// Tells the principal, every interval, which workflow instances this agent
/// is running.
pub(crate) struct Heartbeats {
    running: Arc<Mutex<BTreeSet<String>>>,
    _poller: Poller,
}

impl Heartbeats {
    pub fn start(client: LazyClient, agent_id: String, interval: Duration) -> Result<Heartbeats> {
        let running: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let r = running.clone();
        // Short, so that after a network cut the next try (on a fresh
        // connection) follows within about a second of the link returning.
        let client = client.timeout(interval.min(Duration::from_secs(1)));
        let poller = Poller::start("agent-heartbeat", client, interval, move |client| {
            let list: Vec<String> = r.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
            match client.call(|c| c.heartbeat(&agent_id, &list)) {
                Ok(()) => true,
                Err(e) => {
                    log::debug!("agent: heartbeat not delivered: {e}");
                    false
                }
            }
        })?;
        Ok(Heartbeats {
            running,
            _poller: poller,
        })
    }

    /// Adds (`true`) or removes an instance from the next heartbeats.
    pub fn set(&self, instance: &str, running: bool) {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running {
            r.insert(instance.to_owned());
        } else {
            r.remove(instance);
        }
    }
}
