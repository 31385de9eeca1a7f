//! [`Line`]: a received message as the principal holds it until it is
//! written, its seven strings in one allocation.

use crate::message::{Level, LogMessage};

use super::Envelope;
use crate::message::MessageRef;

/// A received message, compact: what the log manager hands its sinks.
///
/// An [`Envelope`] holds seven separately allocated strings, ~700 bytes
/// for a 100-byte line; a `Line` holds them in one buffer, ~260 bytes, and
/// costs one allocation and one free instead of seven. The store holds a
/// few hundred thousand of them while it writes a batch, so both count.
///
/// ```
/// use cdktr_log::{Envelope, Level, Line, LogMessage};
///
/// let message = LogMessage {
///     workflow_id: "etl".into(),
///     workflow_name: "Nightly ETL".into(),
///     workflow_instance_id: "etl-1".into(),
///     task_name: "extract".into(),
///     task_instance_id: "extract-1".into(),
///     timestamp_ms: 1_764_000_000_000,
///     level: Level::Info,
///     payload: "10 rows".into(),
/// };
/// let env = Envelope { publisher_id: "agent-1".into(), seq: 7, replays: false, message };
/// let line = Line::from(&env);
/// assert_eq!(line.publisher_id(), "agent-1");
/// assert_eq!(line.payload(), "10 rows");
/// assert_eq!(line.to_envelope(), env);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Line {
    /// `publisher_id`, then the message's six strings, in the order of
    /// the accessors below.
    text: Box<str>,
    /// Where each of the seven strings ends in `text`.
    ends: [u32; 7],
    /// See [`Envelope::seq`].
    pub seq: u64,
    /// See [`LogMessage::timestamp_ms`].
    pub timestamp_ms: i64,
    /// See [`LogMessage::level`].
    pub level: Level,
    /// See [`Envelope::replays`].
    pub replays: bool,
}

impl Line {
    /// Builds a line from its fields; `None` when its strings hold more
    /// than 4 GiB together (no message the manager accepts does).
    pub(crate) fn new(publisher_id: &str, seq: u64, replays: bool, f: MessageRef<'_>) -> Option<Line> {
        let parts = [
            publisher_id,
            f.workflow_id,
            f.workflow_name,
            f.workflow_instance_id,
            f.task_name,
            f.task_instance_id,
            f.payload,
        ];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        u32::try_from(total).ok()?;
        let mut text = String::with_capacity(total);
        let mut ends = [0u32; 7];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = text.len() as u32;
        }
        Some(Line {
            text: text.into_boxed_str(),
            ends,
            seq,
            timestamp_ms: f.timestamp_ms,
            level: f.level,
            replays,
        })
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// See [`Envelope::publisher_id`].
    pub fn publisher_id(&self) -> &str {
        self.part(0)
    }

    /// See [`LogMessage::workflow_id`].
    pub fn workflow_id(&self) -> &str {
        self.part(1)
    }

    /// See [`LogMessage::workflow_name`].
    pub fn workflow_name(&self) -> &str {
        self.part(2)
    }

    /// See [`LogMessage::workflow_instance_id`].
    pub fn workflow_instance_id(&self) -> &str {
        self.part(3)
    }

    /// See [`LogMessage::task_name`].
    pub fn task_name(&self) -> &str {
        self.part(4)
    }

    /// See [`LogMessage::task_instance_id`].
    pub fn task_instance_id(&self) -> &str {
        self.part(5)
    }

    /// See [`LogMessage::payload`].
    pub fn payload(&self) -> &str {
        self.part(6)
    }

    /// What the line holds in memory, roughly (its strings' buffer, the
    /// struct, the allocator's overhead): how it counts in byte budgets.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Line>() + self.text.len() + 16
    }

    /// The message, as owned strings.
    pub fn to_message(&self) -> LogMessage {
        MessageRef {
            workflow_id: self.workflow_id(),
            workflow_name: self.workflow_name(),
            workflow_instance_id: self.workflow_instance_id(),
            task_name: self.task_name(),
            task_instance_id: self.task_instance_id(),
            timestamp_ms: self.timestamp_ms,
            level: self.level,
            payload: self.payload(),
        }
        .to_message()
    }

    /// The line as an [`Envelope`], as owned strings.
    pub fn to_envelope(&self) -> Envelope {
        Envelope {
            publisher_id: self.publisher_id().to_owned(),
            seq: self.seq,
            replays: self.replays,
            message: self.to_message(),
        }
    }
}

impl From<&Envelope> for Line {
    /// # Panics
    /// If the envelope's strings hold more than 4 GiB together.
    fn from(e: &Envelope) -> Line {
        Line::new(&e.publisher_id, e.seq, e.replays, (&e.message).into()).expect("a line of at most 4 GiB")
    }
}

impl From<Envelope> for Line {
    /// # Panics
    /// As `From<&Envelope>`.
    fn from(e: Envelope) -> Line {
        Line::from(&e)
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("publisher_id", &self.publisher_id())
            .field("seq", &self.seq)
            .field("replays", &self.replays)
            .field("workflow_id", &self.workflow_id())
            .field("workflow_name", &self.workflow_name())
            .field("workflow_instance_id", &self.workflow_instance_id())
            .field("task_name", &self.task_name())
            .field("task_instance_id", &self.task_instance_id())
            .field("timestamp_ms", &self.timestamp_ms)
            .field("level", &self.level)
            .field("payload", &self.payload())
            .finish()
    }
}
