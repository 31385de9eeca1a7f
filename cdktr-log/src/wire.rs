//! The wire format, version 1 (specified in `docs/wire-format.md`).
//!
//! A message is two ZeroMQ frames: the topic, which is the workflow id
//! followed by one NUL byte (so that a SUB prefix filter on `id\0` matches
//! exactly that id), and the body, a MessagePack map keyed by field name.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message::{Level, LogMessage};

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

/// Borrowed view of a message's fields, so that callers holding the
/// workflow and task context elsewhere can encode without building a
/// [`LogMessage`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub workflow_id: &'a str,
    pub workflow_name: &'a str,
    pub workflow_instance_id: &'a str,
    pub task_name: &'a str,
    pub task_instance_id: &'a str,
    pub timestamp_ms: i64,
    pub level: Level,
    pub payload: &'a str,
}

impl<'a> From<&'a LogMessage> for Fields<'a> {
    fn from(m: &'a LogMessage) -> Self {
        Fields {
            workflow_id: &m.workflow_id,
            workflow_name: &m.workflow_name,
            workflow_instance_id: &m.workflow_instance_id,
            task_name: &m.task_name,
            task_instance_id: &m.task_instance_id,
            timestamp_ms: m.timestamp_ms,
            level: m.level,
            payload: &m.payload,
        }
    }
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

// Every field optional so that the version is checked before anything else
// and a missing field gets a precise error. Read by hand rather than
// derived: serde's derive reads a struct from an array, and a field name or
// a `&str` from `bin`, where the format says map and `str`.
#[derive(Default)]
struct BodyIn<'a> {
    v: Option<u64>,
    publisher_id: Option<&'a str>,
    seq: Option<u64>,
    workflow_id: Option<&'a str>,
    workflow_name: Option<&'a str>,
    workflow_instance_id: Option<&'a str>,
    task_name: Option<&'a str>,
    task_instance_id: Option<&'a str>,
    timestamp_ms: Option<i64>,
    level: Option<&'a str>,
    payload: Option<&'a str>,
    replays: Option<bool>,
}

/// A MessagePack `str`, borrowed; `bin` is refused.
struct Str<'a>(&'a str);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a MessagePack str")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Str<'de>, E> {
                Ok(Str(v))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for BodyIn<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BodyIn<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a MessagePack map with str keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<BodyIn<'de>, A::Error> {
                fn put<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
                    map: &mut A,
                    slot: &mut Option<T>,
                    key: &str,
                ) -> std::result::Result<(), A::Error> {
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = Some(map.next_value()?);
                    Ok(())
                }
                fn put_str<'de, A: serde::de::MapAccess<'de>>(
                    map: &mut A,
                    slot: &mut Option<&'de str>,
                    key: &str,
                ) -> std::result::Result<(), A::Error> {
                    let mut s: Option<Str<'de>> = None;
                    put(map, &mut s, key)?;
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = s.map(|s| s.0);
                    Ok(())
                }
                let mut b = BodyIn::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    match key {
                        "v" => put(&mut map, &mut b.v, key)?,
                        "seq" => put(&mut map, &mut b.seq, key)?,
                        "timestamp_ms" => put(&mut map, &mut b.timestamp_ms, key)?,
                        "replays" => put(&mut map, &mut b.replays, key)?,
                        "publisher_id" => put_str(&mut map, &mut b.publisher_id, key)?,
                        "workflow_id" => put_str(&mut map, &mut b.workflow_id, key)?,
                        "workflow_name" => put_str(&mut map, &mut b.workflow_name, key)?,
                        "workflow_instance_id" => put_str(&mut map, &mut b.workflow_instance_id, key)?,
                        "task_name" => put_str(&mut map, &mut b.task_name, key)?,
                        "task_instance_id" => put_str(&mut map, &mut b.task_instance_id, key)?,
                        "level" => put_str(&mut map, &mut b.level, key)?,
                        "payload" => put_str(&mut map, &mut b.payload, key)?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(b)
            }
        }
        d.deserialize_map(V)
    }
}

/// Writes the topic frame for `workflow_id` into `out` (cleared first).
pub fn write_topic(workflow_id: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(workflow_id.as_bytes());
    out.push(0);
}

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
    f: Fields<'_>,
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
    let env = decode_body(body, max_message_bytes)?;
    let id = env.message.workflow_id.as_bytes();
    if topic.len() != id.len() + 1 || topic[id.len()] != 0 || &topic[..id.len()] != id {
        return Err(Error::TopicMismatch);
    }
    Ok(env)
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
    let s = |v: Option<&str>, name: &'static str| v.map(str::to_owned).ok_or_else(|| missing(name));
    Ok(Envelope {
        publisher_id: s(b.publisher_id, "publisher_id")?,
        seq,
        replays: b.replays.unwrap_or(false),
        message: LogMessage {
            workflow_id: s(b.workflow_id, "workflow_id")?,
            workflow_name: s(b.workflow_name, "workflow_name")?,
            workflow_instance_id: s(b.workflow_instance_id, "workflow_instance_id")?,
            task_name: s(b.task_name, "task_name")?,
            task_instance_id: s(b.task_instance_id, "task_instance_id")?,
            timestamp_ms: b.timestamp_ms.ok_or_else(|| missing("timestamp_ms"))?,
            level,
            payload: s(b.payload, "payload")?,
        },
    })
}

fn missing(field: &str) -> Error {
    Error::Body(format!("missing field `{field}`"))
}

#[cfg(test)]
mod tests {
    /// What `docs/wire-format.md` says an unknown key may hold: arrays
    /// nested this deep (around a scalar).
    const DOCUMENTED_DEEPEST_ARRAYS: usize = 14;

    use super::*;
    use proptest::prelude::*;

    fn msg(payload: &str) -> LogMessage {
        LogMessage {
            workflow_id: "etl".into(),
            workflow_name: "Nightly ETL".into(),
            workflow_instance_id: "etl-1".into(),
            task_name: "extract".into(),
            task_instance_id: "extract-1".into(),
            timestamp_ms: 1_700_000_000_000,
            level: Level::Info,
            payload: payload.into(),
        }
    }

    fn frames(m: &LogMessage, seq: u64) -> (Vec<u8>, Vec<u8>) {
        let (mut t, mut b) = (Vec::new(), Vec::new());
        encode("p1", seq, m, &mut t, &mut b);
        (t, b)
    }

    #[test]
    fn round_trips_every_field() {
        let m = msg("héllo ✓ \0 nul");
        let (t, b) = frames(&m, 7);
        assert_eq!(t, b"etl\0");
        let env = decode(&[&t, &b], DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(
            env,
            Envelope {
                publisher_id: "p1".into(),
                seq: 7,
                replays: false,
                message: m
            }
        );
    }

    #[test]
    fn body_is_a_map_keyed_by_field_name() {
        let (_, b) = frames(&msg("x"), 1);
        let v: serde_json::Value = rmp_serde::from_slice(&b).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        for k in [
            "v",
            "publisher_id",
            "seq",
            "workflow_id",
            "workflow_name",
            "workflow_instance_id",
            "task_name",
            "task_instance_id",
            "timestamp_ms",
            "level",
            "payload",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        assert_eq!(v["level"], "INFO");
    }

    fn body_from_json(v: serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec(&v).unwrap()
    }

    fn good_json() -> serde_json::Value {
        serde_json::json!({
            "v": 1, "publisher_id": "p", "seq": 1, "workflow_id": "w", "workflow_name": "n",
            "workflow_instance_id": "i", "task_name": "t", "task_instance_id": "ti",
            "timestamp_ms": 5, "level": "warning", "payload": "x", "extra": {"nested": [1, 2]}
        })
    }

    #[test]
    fn a_foreign_encoder_with_other_key_order_and_extra_keys_decodes() {
        let env = decode(&[b"w\0", &body_from_json(good_json())], 1024).unwrap();
        assert_eq!(env.message.level, Level::Warn);
        assert_eq!(env.message.payload, "x");
    }

    #[test]
    fn each_kind_of_malformation_has_its_own_error() {
        let good = body_from_json(good_json());
        assert!(matches!(decode(&[], 1024), Err(Error::Frames(0))));
        assert!(matches!(decode(&[b"w\0"], 1024), Err(Error::Frames(1))));
        assert!(matches!(decode(&[b"w\0", &good, b""], 1024), Err(Error::Frames(3))));
        assert!(matches!(
            decode(&[b"w\0", &good], 10),
            Err(Error::Oversize { max: 10, .. })
        ));
        assert!(matches!(decode(&[b"w", &good], 1024), Err(Error::TopicMismatch)));
        assert!(matches!(decode(&[b"w\0x", &good], 1024), Err(Error::TopicMismatch)));
        assert!(matches!(decode(&[b"v\0", &good], 1024), Err(Error::TopicMismatch)));

        let with = |k: &str, v: serde_json::Value| {
            let mut j = good_json();
            j[k] = v;
            body_from_json(j)
        };
        let without = |k: &str| {
            let mut j = good_json();
            j.as_object_mut().unwrap().remove(k);
            body_from_json(j)
        };
        assert!(matches!(
            decode_body(&with("v", 2.into()), 1024),
            Err(Error::Version(2))
        ));
        assert!(matches!(
            decode_body(&with("seq", 0.into()), 1024),
            Err(Error::ZeroSequence)
        ));
        for k in [
            "v",
            "seq",
            "payload",
            "level",
            "timestamp_ms",
            "workflow_id",
            "publisher_id",
        ] {
            let e = decode_body(&without(k), 1024).unwrap_err();
            assert!(matches!(&e, Error::Body(s) if s.contains(k)), "{k}: {e}");
        }
        for (k, v) in [
            ("payload", serde_json::json!(5)),
            ("seq", serde_json::json!("one")),
            ("seq", serde_json::json!(-1)),
            ("timestamp_ms", serde_json::json!("now")),
            ("level", serde_json::json!("loud")),
            ("workflow_id", serde_json::json!(["a"])),
        ] {
            assert!(
                matches!(decode_body(&with(k, v.clone()), 1024), Err(Error::Body(_))),
                "{k}={v}"
            );
        }
        // An array is not a map, even with the right values in order.
        let arr = rmp_serde::to_vec(&(1, "p", 1, "w", "n", "i", "t", "ti", 5, "INFO", "x")).unwrap();
        assert!(matches!(decode_body(&arr, 1024), Err(Error::Body(_))));
        // Invalid UTF-8 in a string field.
        let mut bad = good.clone();
        let pos = bad.windows(1).rposition(|w| w == b"x").unwrap();
        bad[pos] = 0xff;
        assert!(matches!(decode_body(&bad, 1024), Err(Error::Body(_))));
        // Truncations of a good body are all errors, never panics.
        for n in 0..good.len() {
            assert!(decode_body(&good[..n], 1024).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn strings_and_keys_sent_as_bin_are_refused() {
        // Without the unknown key, whose value may hold anything.
        let mut j = good_json();
        j.as_object_mut().unwrap().remove("extra");
        let good = body_from_json(j);
        assert!(decode_body(&good, 1024).is_ok());
        // Each str of the body, in turn, turned into bin of the same bytes
        // (fixstr a0-bf -> c4 len): keys and values alike.
        let mut strs = 0;
        let mut i = 1;
        while i < good.len() {
            let m = good[i];
            let len = match m {
                0xa0..=0xbf => (m & 0x1f) as usize,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let mut bad = good[..i].to_vec();
            bad.extend_from_slice(&[0xc4, len as u8]);
            bad.extend_from_slice(&good[i + 1..]);
            assert!(
                matches!(decode_body(&bad, 1024), Err(Error::Body(_))),
                "bin at offset {i} accepted"
            );
            strs += 1;
            i += 1 + len;
        }
        // 11 keys and 8 string values.
        assert_eq!(strs, 19, "every key and string field was tried");
    }

    /// `{"x": [[...[nil]...]]}` with `arrays` levels of arrays.
    fn nested(arrays: usize) -> Vec<u8> {
        let mut j = good_json();
        let mut v = serde_json::Value::Null;
        for _ in 0..arrays {
            v = serde_json::json!([v]);
        }
        j["x"] = v;
        body_from_json(j)
    }

    #[test]
    fn unknown_keys_may_nest_exactly_as_deep_as_the_format_says() {
        let deepest = (0..40).take_while(|&n| decode_body(&nested(n), 1 << 20).is_ok()).last();
        assert_eq!(deepest, Some(DOCUMENTED_DEEPEST_ARRAYS));
        assert!(decode_body(&nested(DOCUMENTED_DEEPEST_ARRAYS + 1), 1 << 20).is_err());
    }

    #[test]
    fn deep_nesting_in_unknown_keys_is_refused_not_a_stack_overflow() {
        // {"x": [[[[...]]]]} nested 100,000 deep.
        let mut b = vec![0x81, 0xa1, b'x'];
        b.extend(std::iter::repeat_n(0x91, 100_000));
        b.push(0xc0);
        assert!(matches!(decode_body(&b, usize::MAX), Err(Error::Body(_))));
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        // A map claiming 2^32-1 entries, and a str claiming 2^32-1 bytes.
        assert!(decode_body(&[0xdf, 0xff, 0xff, 0xff, 0xff], 1024).is_err());
        assert!(decode_body(&[0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], 1024).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            topic in proptest::collection::vec(any::<u8>(), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = decode(&[&topic, &body], 1 << 20);
        }

        #[test]
        fn decoding_mutated_valid_bodies_never_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let (t, mut b) = frames(&msg("payload"), 3);
            for (i, byte) in flips {
                let i = i.index(b.len());
                b[i] = byte;
            }
            let n = cut.index(b.len() + 1);
            let _ = decode(&[&t, &b[..n]], 1 << 20);
        }

        #[test]
        fn any_message_round_trips(
            ids in proptest::collection::vec(".{0,20}", 6),
            ts in any::<i64>(),
            level in 0usize..5,
            payload in ".{0,200}",
            seq in 1u64..,
        ) {
            let m = LogMessage {
                workflow_id: ids[0].clone(),
                workflow_name: ids[1].clone(),
                workflow_instance_id: ids[2].clone(),
                task_name: ids[3].clone(),
                task_instance_id: ids[4].clone(),
                timestamp_ms: ts,
                level: Level::ALL[level],
                payload,
            };
            let (mut t, mut b) = (Vec::new(), Vec::new());
            encode(&ids[5], seq, &m, &mut t, &mut b);
            let env = decode(&[&t, &b], usize::MAX).unwrap();
            prop_assert_eq!(env.publisher_id, ids[5].clone());
            prop_assert_eq!(env.seq, seq);
            prop_assert_eq!(env.message, m);
        }
    }
}
