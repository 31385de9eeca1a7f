//! The wire format, version 1 (specified in `docs/wire-format.md`).
//!
//! A message is two ZeroMQ frames: the topic, which is the workflow id
//! followed by one NUL byte (so that a SUB prefix filter on `id\0` matches
//! exactly that id), and the body, a MessagePack map keyed by field name.

use serde::{Deserialize, Serialize};

use body::BodyIn;

use crate::error::{Error, Result};
use crate::message::{Level, LogMessage, MessageRef};

mod body;
mod line;

pub use line::Line;

/// The format version this crate writes and reads.
pub const VERSION: u64 = 1;

/// Default largest body accepted, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A decoded message with the envelope that lets a receiver detect gaps and
/// duplicates: per publisher, `seq` starts at 1 and grows by one per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Names the publisher; unique per publisher instance.
    pub publisher_id: String,
    /// Position of this message in its publisher's stream, from 1.
    pub seq: u64,
    /// The publisher re-sends everything the principal has not accepted
    /// (`docs/delivery.md`), so a receiver may drop a message that follows
    /// a gap and wait for the re-send, keeping the stream contiguous.
    pub replays: bool,
    /// The log line.
    pub message: LogMessage,
}

/// How far a publisher's stream has come at the principal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Highest sequence number in the database: everything up to it is
    /// stored (for a replaying publisher, with no gap).
    pub persisted: u64,
    /// Highest sequence number received and kept, written or not. For a
    /// replaying publisher the stream up to it has no gap.
    pub accepted: u64,
}

#[derive(Serialize)]
struct BodyOut<'a> {
    v: u64,
    publisher_id: &'a str,
    seq: u64,
    workflow_id: &'a str,
    workflow_name: &'a str,
    workflow_instance_id: &'a str,
    task_name: &'a str,
    task_instance_id: &'a str,
    timestamp_ms: i64,
    level: &'static str,
    payload: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replays: bool,
}

/// Writes the topic frame for `workflow_id` into `out` (cleared first).
pub fn write_topic(workflow_id: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(workflow_id.as_bytes());
    out.push(0);
}

/// Subscriptions that start with these bytes ask for a marker: the
/// manager answers each with one message whose topic is the subscription
/// and whose body frame is empty (no log line has an empty body). When a
/// subscriber receives it, everything it subscribed to before is in force
/// (`docs/wire-format.md`, "Markers").
pub const MARK_PREFIX: &[u8] = b"\0cdktr-mark\0";

/// The topic frame for `workflow_id`: also the SUB filter that matches
/// exactly that workflow.
pub fn topic(workflow_id: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(workflow_id.len() + 1);
    write_topic(workflow_id, &mut t);
    t
}

/// Encodes `message` as the two frames of the wire format, into `topic` and
/// `body` (both cleared first, so buffers can be reused).
pub fn encode(publisher_id: &str, seq: u64, message: &LogMessage, topic: &mut Vec<u8>, body: &mut Vec<u8>) {
    encode_fields(publisher_id, seq, false, message.into(), topic, body)
}

pub(crate) fn encode_fields(
    publisher_id: &str,
    seq: u64,
    replays: bool,
    f: MessageRef<'_>,
    topic: &mut Vec<u8>,
    body: &mut Vec<u8>,
) {
    write_topic(f.workflow_id, topic);
    body.clear();
    let out = BodyOut {
        v: VERSION,
        publisher_id,
        seq,
        workflow_id: f.workflow_id,
        workflow_name: f.workflow_name,
        workflow_instance_id: f.workflow_instance_id,
        task_name: f.task_name,
        task_instance_id: f.task_instance_id,
        timestamp_ms: f.timestamp_ms,
        level: f.level.as_str(),
        payload: f.payload,
        replays,
    };
    rmp_serde::encode::write_named(body, &out).expect("writing MessagePack to a Vec cannot fail");
}

/// Decodes a message from its frames.
///
/// # Errors
/// [`Error::Frames`] unless there are exactly two frames; otherwise as
/// [`decode_body`], plus [`Error::TopicMismatch`] when the topic frame is not
/// the body's workflow id followed by NUL.
pub fn decode(frames: &[&[u8]], max_message_bytes: usize) -> Result<Envelope> {
    let [topic, body] = frames else {
        return Err(Error::Frames(frames.len()));
    };
    decode_pair(topic, body, max_message_bytes)
}

pub(crate) fn decode_pair(topic: &[u8], body: &[u8], max_message_bytes: usize) -> Result<Envelope> {
    let b = parse(body, max_message_bytes)?;
    check_topic(topic, b.fields.workflow_id)?;
    Ok(b.envelope())
}

/// As [`decode`], into a [`Line`]: what the log manager hands its sinks.
pub(crate) fn decode_line(topic: &[u8], body: &[u8], max_message_bytes: usize) -> Result<Line> {
    let b = parse(body, max_message_bytes)?;
    check_topic(topic, b.fields.workflow_id)?;
    Line::new(b.publisher_id, b.seq, b.replays, b.fields).ok_or(Error::Oversize {
        len: body.len(),
        max: u32::MAX as usize,
    })
}

fn check_topic(topic: &[u8], workflow_id: &str) -> Result<()> {
    let id = workflow_id.as_bytes();
    if topic.len() != id.len() + 1 || topic[id.len()] != 0 || &topic[..id.len()] != id {
        return Err(Error::TopicMismatch);
    }
    Ok(())
}

/// Decodes a body frame. Never panics, whatever the bytes.
///
/// Keys may come in any order; unknown keys are ignored so that later minor
/// versions can add fields.
///
/// # Errors
/// [`Error::Oversize`] when the body exceeds `max_message_bytes`;
/// [`Error::Body`] when it is not a MessagePack map, a field is missing, has
/// the wrong type, is not UTF-8, or the level is unknown; [`Error::Version`]
/// for another format version; [`Error::ZeroSequence`] for `seq` 0.
pub fn decode_body(body: &[u8], max_message_bytes: usize) -> Result<Envelope> {
    parse(body, max_message_bytes).map(|b| b.envelope())
}

/// A body's fields, checked, borrowed from the frame.
struct Parsed<'a> {
    publisher_id: &'a str,
    seq: u64,
    replays: bool,
    fields: MessageRef<'a>,
}

impl Parsed<'_> {
    fn envelope(&self) -> Envelope {
        Envelope {
            publisher_id: self.publisher_id.to_owned(),
            seq: self.seq,
            replays: self.replays,
            message: self.fields.to_message(),
        }
    }
}

fn parse(body: &[u8], max_message_bytes: usize) -> Result<Parsed<'_>> {
    if body.len() > max_message_bytes {
        return Err(Error::Oversize {
            len: body.len(),
            max: max_message_bytes,
        });
    }
    // A struct also deserializes from an array; the format says map.
    match body.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => {}
        _ => return Err(Error::Body("not a MessagePack map".into())),
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    // Unknown keys may hold nested values; keep the recursion shallow.
    de.set_max_depth(16);
    let b = BodyIn::deserialize(&mut de).map_err(|e| Error::Body(e.to_string()))?;
    match b.v {
        Some(VERSION) => {}
        Some(v) => return Err(Error::Version(v)),
        None => return Err(missing("v")),
    }
    let seq = b.seq.ok_or_else(|| missing("seq"))?;
    if seq == 0 {
        return Err(Error::ZeroSequence);
    }
    let level = b.level.ok_or_else(|| missing("level"))?;
    let level: Level = level
        .parse()
        .map_err(|_| Error::Body(format!("unknown level {level:?}")))?;
    fn s<'a>(v: Option<&'a str>, name: &str) -> Result<&'a str> {
        v.ok_or_else(|| missing(name))
    }
    // Missing fields are named in this order.
    let publisher_id = s(b.publisher_id, "publisher_id")?;
    let workflow_id = s(b.workflow_id, "workflow_id")?;
    let workflow_name = s(b.workflow_name, "workflow_name")?;
    let workflow_instance_id = s(b.workflow_instance_id, "workflow_instance_id")?;
    let task_name = s(b.task_name, "task_name")?;
    let task_instance_id = s(b.task_instance_id, "task_instance_id")?;
    let timestamp_ms = b.timestamp_ms.ok_or_else(|| missing("timestamp_ms"))?;
    let payload = s(b.payload, "payload")?;
    Ok(Parsed {
        publisher_id,
        seq,
        replays: b.replays.unwrap_or(false),
        fields: MessageRef {
            workflow_id,
            workflow_name,
            workflow_instance_id,
            task_name,
            task_instance_id,
            timestamp_ms,
            level,
            payload,
        },
    })
}

fn missing(field: &str) -> Error {
    Error::Body(format!("missing field `{field}`"))
}

#[cfg(test)]
mod tests;
