//! The publisher's background thread: takes lines off the channel, gives
//! each its sequence number, encodes it once, and hands it to the delivery
//! mode, which sends and keeps it as that mode requires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::acknowledged::Acknowledged;
use super::best_effort::BestEffort;
use super::socket::{PushSocket, SEND_HWM};
use super::{Command, PublisherStats};
use crate::message::MessageRef;
use crate::stats::StatsCell;
use crate::wire;

/// Commands taken from the channel between two attempts to send.
const BATCH: usize = 1024;

/// How lines are delivered (`docs/delivery.md`); each step of the worker
/// has one path per mode.
pub(super) enum Delivery {
    /// Kept in memory only while the socket has no room.
    BestEffort(BestEffort),
    /// Kept until the principal reports them persisted.
    Acknowledged(Box<Acknowledged>),
}

/// What both modes share: numbering, encoding, counting, waiters.
pub(super) struct Core {
    pub publisher_id: Arc<str>,
    pub stats: PublisherStats,
    /// The last sequence number given out.
    pub seq: u64,
    pub highest_sent: u64,
    /// Waiters, each until every seq up to its own is sent (false) or
    /// persisted (true).
    pub flushes: Vec<(u64, bool, Sender<()>)>,
    /// Re-sends a dead publisher's spool, then stops.
    pub orphan: bool,
    /// Shutdown has begun.
    pub stopping: bool,
    topic: Vec<u8>,
    body: Vec<u8>,
    max_body: usize,
    last_drop_warning: Option<Instant>,
}

pub(super) struct Worker {
    rx: Receiver<Command>,
    socket: PushSocket,
    delivery: Delivery,
    core: Core,
    shared: Arc<StatsCell<PublisherStats>>,
}

impl Core {
    pub fn new(publisher_id: Arc<str>, max_body: usize, orphan: bool) -> Core {
        Core {
            publisher_id,
            stats: PublisherStats::default(),
            seq: 0,
            highest_sent: 0,
            flushes: Vec::new(),
            orphan,
            stopping: false,
            topic: Vec::with_capacity(64),
            body: Vec::with_capacity(512),
            max_body,
            last_drop_warning: None,
        }
    }

    /// The topic and body of the message just encoded.
    pub fn frames(&self) -> (&[u8], &[u8]) {
        (&self.topic, &self.body)
    }

    pub fn drop_one(&mut self, why: &str) {
        self.stats.dropped += 1;
        self.warn_drop(why);
    }

    pub fn warn_drop(&mut self, why: &str) {
        let now = Instant::now();
        if self
            .last_drop_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            self.last_drop_warning = Some(now);
            log::warn!(
                "log publisher {}: {why}, {} message(s) dropped so far",
                self.publisher_id,
                self.stats.dropped
            );
        }
    }

    /// Whether anyone waits for the principal to write.
    pub fn awaits_persisted(&self) -> bool {
        self.flushes.iter().any(|(_, persisted, _)| *persisted)
    }
}

impl Delivery {
    fn replays(&self) -> bool {
        matches!(self, Delivery::Acknowledged(_))
    }

    /// Nothing left to send or to see acknowledged.
    fn is_empty(&self) -> bool {
        match self {
            Delivery::BestEffort(b) => b.is_empty(),
            Delivery::Acknowledged(a) => a.is_empty(),
        }
    }

    fn has_unsent(&self) -> bool {
        match self {
            Delivery::BestEffort(b) => !b.is_empty(),
            Delivery::Acknowledged(a) => a.has_unsent(),
        }
    }
}

impl Worker {
    pub fn new(
        rx: Receiver<Command>,
        socket: PushSocket,
        delivery: Delivery,
        core: Core,
        shared: Arc<StatsCell<PublisherStats>>,
    ) -> Worker {
        Worker {
            rx,
            socket,
            delivery,
            core,
            shared,
        }
    }

    pub fn run(mut self) {
        let mut deadline = None;
        let mut disconnected = false;
        loop {
            // Block for work only when there is nothing to send or to see
            // acknowledged.
            if self.delivery.is_empty() && deadline.is_none() && !disconnected && !self.core.orphan {
                match self.rx.recv() {
                    Ok(cmd) => self.handle(cmd, &mut deadline),
                    Err(_) => disconnected = true,
                }
            }
            for _ in 0..BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd, &mut deadline),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            match &mut self.delivery {
                Delivery::BestEffort(b) => b.send(&mut self.core, &self.socket),
                Delivery::Acknowledged(a) => {
                    a.take_acks(&mut self.core);
                    if self.socket.lost_connection() {
                        a.connection_lost(&self.core);
                    }
                    a.refill(&mut self.core);
                    a.send(&mut self.core, &self.socket);
                }
            }
            self.answer_flushes();
            self.publish_stats();
            let empty = self.delivery.is_empty();
            let stopping = deadline.is_some() || disconnected || self.core.orphan;
            if stopping && (empty || deadline.is_some_and(|d| Instant::now() >= d)) {
                break;
            }
            if self.delivery.has_unsent() {
                // Wait for room in the socket, not longer than a tick so new
                // commands keep being taken off the channel.
                self.socket.wait_writable(10);
            } else if !empty {
                // Sent, awaiting acknowledgement: look again shortly.
                match self.rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(cmd) => self.handle(cmd, &mut deadline),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => disconnected = true,
                }
            }
        }
        self.finish(deadline);
    }

    fn handle(&mut self, cmd: Command, deadline: &mut Option<Instant>) {
        match cmd {
            Command::Publish(m) => self.accept((&m).into()),
            Command::Task {
                ctx,
                level,
                timestamp_ms,
                payload,
            } => self.accept(MessageRef {
                workflow_id: &ctx.workflow_id,
                workflow_name: &ctx.workflow_name,
                workflow_instance_id: &ctx.workflow_instance_id,
                task_name: &ctx.task_name,
                task_instance_id: &ctx.task_instance_id,
                timestamp_ms,
                level,
                payload: &payload,
            }),
            Command::Flush(done, persisted) => self.core.flushes.push((self.core.seq, persisted, done)),
            Command::Shutdown(d) => {
                *deadline = Some(d);
                self.core.stopping = true;
            }
        }
    }

    /// Numbers and encodes one line, then hands it to the mode.
    fn accept(&mut self, fields: MessageRef<'_>) {
        let core = &mut self.core;
        core.stats.published += 1;
        let seq = core.seq + 1;
        let replays = self.delivery.replays();
        wire::encode_fields(
            &core.publisher_id,
            seq,
            replays,
            fields,
            &mut core.topic,
            &mut core.body,
        );
        if core.body.len() > core.max_body {
            // The manager would reject it, or drop the connection with
            // everything in flight behind it.
            core.drop_one("message larger than max_message_bytes");
            return;
        }
        match &mut self.delivery {
            Delivery::BestEffort(b) => b.accept(core, &self.socket, seq),
            Delivery::Acknowledged(a) => a.accept(core, seq),
        }
    }

    fn answer_flushes(&mut self) {
        if self.core.flushes.is_empty() {
            return;
        }
        let (sent, persisted) = match &self.delivery {
            Delivery::BestEffort(b) => {
                let sent = b.sent_up_to(&self.core);
                (sent, sent)
            }
            Delivery::Acknowledged(_) => (self.core.highest_sent, self.core.stats.acknowledged),
        };
        self.core.flushes.retain(|(target, want_persisted, done)| {
            let ready = *target <= if *want_persisted { persisted } else { sent };
            if ready {
                let _ = done.send(());
            }
            !ready
        });
    }

    fn publish_stats(&mut self) {
        let (memory, spooled) = match &self.delivery {
            Delivery::BestEffort(b) => (b.memory(), 0),
            Delivery::Acknowledged(a) => (a.memory(), a.spooled_bytes()),
        };
        self.core.stats.buffered = memory.len() as u64;
        self.core.stats.buffered_bytes = memory.bytes() as u64;
        self.core.stats.spooled_bytes = spooled;
        self.shared.publish(&self.core.stats);
    }

    fn finish(mut self, deadline: Option<Instant>) {
        // Lines queued after shutdown began are not delivered; count them.
        while let Ok(cmd) = self.rx.try_recv() {
            if matches!(cmd, Command::Publish(_) | Command::Task { .. }) {
                self.core.stats.published += 1;
                self.core.stats.dropped += 1;
            }
        }
        // The spool's size as it is left.
        self.publish_stats();
        let best_effort = match self.delivery {
            Delivery::BestEffort(mut b) => {
                b.abandon(&mut self.core);
                true
            }
            // Stops polling for acknowledgements before the socket goes.
            Delivery::Acknowledged(a) => {
                a.finish(&mut self.core);
                false
            }
        };
        self.shared.publish(&self.core.stats);
        // Let ZeroMQ finish writing what it holds, up to the deadline.
        let linger = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
        let gave_up = self.socket.close(linger);
        // Acknowledged, anything lost here is re-sent from the spool.
        if best_effort && gave_up && self.core.stats.sent > 0 {
            // ZeroMQ gave up on whatever it still held; it cannot say how
            // much that was. Say so rather than stay silent.
            log::warn!(
                "log publisher {}: shutdown timed out with the principal not taking messages; \
                 up to {} message(s) queued in ZeroMQ may be lost",
                self.core.publisher_id,
                self.core.stats.sent.min(SEND_HWM as u64)
            );
        }
    }
}
