//! The UI's data, fetched on threads of their own so that the screen
//! answers keys whatever the principal does: a poller (runs, counters, the
//! open run's timeline) and a follower per open run.

use crossbeam_channel::{Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdktr_log::api::{LazyClient, Poller};
use cdktr_log::curve::ClientKeys;
use cdktr_log::follower::{Followed, History, LogFollower};
use cdktr_log::{ApiConfig, BusConfig, RecentWorkflows};

use super::app::Msg;

/// How often runs, counters and the open run's timeline are fetched.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Lines are handed to the screen in batches: at most this often...
const BATCH_EVERY: Duration = Duration::from_millis(50);
/// ...or once this many have come.
const BATCH_LINES: usize = 5_000;

/// A worker thread and the flag that stops it; stopped and joined on drop.
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(name: &str, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> std::io::Result<Worker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || f(flag))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands `m` to the screen, waiting while its queue is full; false once
/// the screen has gone or the worker is told to stop (so that stopping
/// never waits on a screen that is not reading).
fn hand_over(tx: &Sender<Msg>, mut m: Msg, stop: &AtomicBool) -> bool {
    loop {
        match tx.try_send(m) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Relaxed) {
                    return false;
                }
                m = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Fetches the counters, the runs and the open run's timeline every
/// second, on the project's [`Poller`] (a call that got no answer is tried
/// again within 250 ms). These are snapshots, each superseded by the next:
/// one that finds the screen's queue full is skipped, never waited on.
pub fn poller(
    client: LazyClient,
    workflow: Option<String>,
    open: Arc<Mutex<Option<String>>>,
    tx: Sender<Msg>,
) -> cdktr_log::Result<Poller> {
    Poller::start("ui-poller", client, POLL_EVERY, move |c| {
        let stats = match c.call(|c| c.stats()) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.try_send(Msg::Unreachable(e.to_string()));
                return false;
            }
        };
        let _ = tx.try_send(Msg::Stats(Box::new(stats)));
        let filter = RecentWorkflows {
            limit: 500,
            workflow_id: workflow.clone(),
            status: None,
        };
        if let Ok(runs) = c.call(|c| c.recent_workflows(&filter)) {
            let _ = tx.try_send(Msg::Runs(runs));
        }
        let instance = open.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(i) = instance {
            if let Ok(changes) = c.call(|c| c.timeline(&i)) {
                let _ = tx.try_send(Msg::Timeline(i, changes));
            }
        }
        true
    })
}

/// Follows one instance: the last `scrollback` stored lines, then live
/// ones, in batches; retries until it can attach.
pub fn follower(
    bus: BusConfig,
    api: ApiConfig,
    keys: Option<ClientKeys>,
    instance: String,
    scrollback: usize,
    tx: Sender<Msg>,
) -> std::io::Result<Worker> {
    Worker::spawn("cdktr-ui-follower", move |stop| {
        let send = |m: Msg| hand_over(&tx, m, &stop);
        while !stop.load(Relaxed) {
            let attached = LogFollower::builder(&bus, &api)
                .instance(instance.clone())
                .history(History::Last(scrollback))
                .timeout(Duration::from_secs(2))
                .curve(keys.clone())
                .connect();
            let mut f = match attached {
                Ok(f) => f,
                Err(e) => {
                    if !send(Msg::Follow(instance.clone(), Some(format!("cannot follow: {e}")))) {
                        return;
                    }
                    std::thread::sleep(POLL_EVERY);
                    continue;
                }
            };
            if !send(Msg::Follow(instance.clone(), None)) {
                return;
            }
            let mut batch = Vec::new();
            let mut since = Instant::now();
            while !stop.load(Relaxed) {
                match f.next_timeout(Duration::from_millis(10)) {
                    Ok(Some(Followed::Line(l))) => batch.push(l.message),
                    Ok(Some(Followed::Unreachable(why))) => {
                        let _ = send(Msg::Follow(
                            instance.clone(),
                            Some(format!("principal unreachable: {why}")),
                        ));
                    }
                    Ok(Some(Followed::Resumed)) => {
                        let _ = send(Msg::Follow(instance.clone(), None));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = send(Msg::Follow(instance.clone(), Some(e.to_string())));
                        break;
                    }
                }
                if !batch.is_empty() && (batch.len() >= BATCH_LINES || since.elapsed() >= BATCH_EVERY) {
                    if !send(Msg::Lines(instance.clone(), std::mem::take(&mut batch))) {
                        return;
                    }
                    since = Instant::now();
                }
            }
        }
    })
}
