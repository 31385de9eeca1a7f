//! The manager's thread: receives each message, republishes it, hands it
//! to the sinks, and closes every connection when a key is removed.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};

use super::connections::Connections;
use super::relisten::Relisten;
use super::streams::Streams;
use super::ManagerStats;
use crate::budget::ByteBudget;
use crate::curve::{Authorizer, ZapHandler};
use crate::error::Error;
use crate::inbox::Inbox;
use crate::stats::StatsCell;
use crate::wire::{self, Line};

/// A sink's channel, and the byte budget its receiver releases, if any.
pub(super) struct Sink {
    pub tx: Sender<Line>,
    pub budget: Option<Arc<ByteBudget>>,
}

/// The manager's thread: receives, republishes, hands to the sinks.
pub(super) struct Forwarder {
    pub _ctx: zmq::Context,
    pub pull: zmq::Socket,
    pub connections: Connections,
    pub publisher: zmq::Socket,
    /// The live port, to close its connections when a key is removed.
    pub live: Relisten,
    pub sinks: Vec<Sink>,
    pub max: usize,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<StatsCell<ManagerStats>>,
    pub stats: ManagerStats,
    pub last_reject_warning: Option<Instant>,
    pub streams: Streams,
    pub authorizer: Option<Authorizer>,
    /// The authorizer's removals when the sockets were last bound.
    pub removals_seen: u64,
    /// Dropped after the sockets (fields drop in order).
    pub _zap: Option<ZapHandler>,
}

/// Messages handled between two looks at the stop flag and counter updates.
const BATCH: usize = 4096;

impl Forwarder {
    pub fn run(mut self) {
        let mut inbox = Inbox::new();
        loop {
            let stopping = self.stop.load(Relaxed);
            let mut n = 0;
            while n < BATCH && self.forward_one(&mut inbox) {
                n += 1;
            }
            self.connections.update(&self.pull, &mut self.stats);
            self.drop_removed_keys(&mut inbox);
            self.live.bind_again(&self.publisher);
            self.answer_marks();
            self.publish_stats();
            if stopping && n < BATCH {
                // Everything ZeroMQ had received before the stop is handled.
                break;
            }
            if n == 0 {
                let mut items = [
                    self.pull.as_poll_item(zmq::POLLIN),
                    self.connections.monitor().as_poll_item(zmq::POLLIN),
                    self.publisher.as_poll_item(zmq::POLLIN),
                ];
                if let Err(e) = zmq::poll(&mut items, 50) {
                    log::error!("log manager: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Once a key is removed from the authorized keys, closes every log
    /// and live connection. Clients reconnect and shake hands again, a
    /// removed key in vain; acknowledged publishers re-send what was in
    /// flight. What ZeroMQ has received is forwarded first: unbinding
    /// discards the queues of the connections it closes.
    fn drop_removed_keys(&mut self, inbox: &mut Inbox) {
        let Some(removals) = self.authorizer.as_ref().map(Authorizer::removals) else {
            return;
        };
        if removals == self.removals_seen {
            return;
        }
        self.removals_seen = removals;
        while self.forward_one(inbox) {}
        log::warn!("log manager: a key was removed; closing every log and live connection so that clients reconnect");
        self.connections.close_all(&self.pull);
        self.live.unbind(&self.publisher);
    }

    /// Receives and handles one message; false when none was waiting.
    fn forward_one(&mut self, inbox: &mut Inbox) -> bool {
        match inbox.recv(&self.pull) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                log::error!("log manager: receive failed: {e}");
                return false;
            }
        }
        self.stats.received += 1;
        match inbox.decode_line(self.max) {
            Ok(env) => {
                let (topic, body) = inbox.take();
                let fresh = self.streams.fresh(env.publisher_id(), env.seq, &mut self.stats);
                if fresh {
                    // PUB never blocks: a slow subscriber loses its own copy.
                    if self.publisher.send(topic, zmq::SNDMORE | zmq::DONTWAIT).is_ok() {
                        let _ = self.publisher.send(body, zmq::DONTWAIT);
                    }
                    self.stats.forwarded += 1;
                } else {
                    self.stats.replayed += 1;
                }
                self.deliver(env);
            }
            Err(e) => {
                self.stats.rejected += 1;
                self.warn_reject(&e);
            }
        }
        true
    }

    /// Reads the subscriptions that came in and answers each marker
    /// subscription with its marker (`docs/wire-format.md`, "Markers").
    /// Subscriptions are applied in the order each subscriber made them,
    /// so when the marker reaches it, its earlier subscriptions are in
    /// force; and every line forwarded before is already with the sinks.
    fn answer_marks(&mut self) {
        while let Ok(frame) = self.publisher.recv_bytes(zmq::DONTWAIT) {
            if let [1, topic @ ..] = frame.as_slice() {
                if topic.starts_with(wire::MARK_PREFIX) {
                    self.stats.marks += 1;
                    if self.publisher.send(topic, zmq::SNDMORE | zmq::DONTWAIT).is_ok() {
                        let _ = self.publisher.send(&[][..], zmq::DONTWAIT);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, env: Line) {
        let n = self.sinks.len();
        let mut env = Some(env);
        for i in 0..n {
            let item = if i + 1 == n {
                env.take().expect("moved once")
            } else {
                env.clone().expect("present")
            };
            let bytes = self.sinks[i].budget.as_ref().map(|_| item.memory_bytes());
            if let Some(n) = bytes {
                self.wait_for_budget(i, n);
            }
            match self.sinks[i].tx.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => self.wait_for_sink(i, item),
                Err(TrySendError::Disconnected(_)) => self.sink_gone(i, bytes),
            }
        }
    }

    /// Waits until the sink's queue has room for `n` more bytes: a full
    /// one holds the manager up as a full channel does.
    fn wait_for_budget(&mut self, i: usize, n: usize) {
        let budget = self.sinks[i].budget.clone().expect("a budgeted sink");
        if budget.acquire(n, Duration::ZERO) {
            return;
        }
        let start = Instant::now();
        while !budget.acquire(n, Duration::from_millis(100)) {
            // An empty channel holds none of those bytes (a receiver that
            // does not release them): go on rather than wait forever.
            if self.sinks[i].tx.is_empty() {
                budget.release(budget.used());
            }
            let mut live = self.stats;
            live.sink_blocked += start.elapsed();
            self.counters.publish(&live);
        }
        self.stats.sink_blocked += start.elapsed();
    }

    fn wait_for_sink(&mut self, i: usize, mut item: Line) {
        let start = Instant::now();
        loop {
            match self.sinks[i].tx.send_timeout(item, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(back)) => {
                    item = back;
                    // Keep the counters live while a sink holds us up.
                    let mut live = self.stats;
                    live.sink_blocked += start.elapsed();
                    self.counters.publish(&live);
                }
                Err(SendTimeoutError::Disconnected(back)) => {
                    let bytes = self.sinks[i].budget.as_ref().map(|_| back.memory_bytes());
                    self.sink_gone(i, bytes);
                    break;
                }
            }
        }
        self.stats.sink_blocked += start.elapsed();
    }

    fn sink_gone(&mut self, i: usize, bytes: Option<usize>) {
        if let (Some(budget), Some(n)) = (&self.sinks[i].budget, bytes) {
            budget.release(n);
        }
        self.stats.sink_lost += 1;
        if self.stats.sink_lost == 1 || self.stats.sink_lost.is_power_of_two() {
            log::error!(
                "log manager: a sink has gone; {} message(s) not delivered to it",
                self.stats.sink_lost
            );
        }
    }

    fn warn_reject(&mut self, e: &Error) {
        let now = Instant::now();
        if self
            .last_reject_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            self.last_reject_warning = Some(now);
            log::warn!(
                "log manager: rejected a malformed message ({} so far): {e}",
                self.stats.rejected
            );
        }
    }

    fn publish_stats(&self) {
        self.counters.publish(&self.stats);
    }
}
