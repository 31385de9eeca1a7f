//! The wire format against its document: round trips, every malformation,
//! and bytes no decoder may panic on.

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
    fn any_message_round_trips_as_an_envelope_and_as_a_line(
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
        let line = decode_line(&t, &b, usize::MAX).unwrap();
        prop_assert_eq!(line.publisher_id(), ids[5].as_str());
        prop_assert_eq!(line.payload(), m.payload.as_str());
        prop_assert_eq!(&line.to_envelope(), &env);
        prop_assert_eq!(Line::from(&env), line);
        prop_assert_eq!(env.publisher_id, ids[5].clone());
        prop_assert_eq!(env.seq, seq);
        prop_assert_eq!(env.message, m);
    }

    /// The manager's decoder (into a [`Line`]) and the subscribers' (into an
    /// [`Envelope`]) take and refuse exactly the same frames.
    #[test]
    fn the_line_decoder_agrees_with_the_envelope_decoder_on_mutated_bodies(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        payload in ".{0,40}",
    ) {
        let (t, mut b) = frames(&msg(&payload), 3);
        for (i, byte) in flips {
            let i = i.index(b.len());
            b[i] = byte;
        }
        let b = &b[..cut.index(b.len() + 1)];
        let as_envelope = decode_pair(&t, b, 1 << 20).map_err(|e| e.to_string());
        let as_line = decode_line(&t, b, 1 << 20).map(|l| l.to_envelope()).map_err(|e| e.to_string());
        prop_assert_eq!(as_line, as_envelope);
    }
}

#[test]
fn a_line_costs_one_allocation_of_its_text_and_says_so() {
    let (t, b) = frames(&msg("ten bytes!"), 1);
    let line = decode_line(&t, &b, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
    let text =
        "p1".len() + "etl".len() + "Nightly ETL".len() + "etl-1".len() + "extract".len() + "extract-1".len() + 10;
    assert_eq!(line.memory_bytes(), std::mem::size_of::<Line>() + text + 16);
    assert!(std::mem::size_of::<Line>() <= 64, "{}", std::mem::size_of::<Line>());
}

#[test]
fn a_replaying_publishers_flag_survives_in_a_line_both_ways() {
    let mut t = Vec::new();
    let mut b = Vec::new();
    encode_fields("p1", 9, true, (&msg("again")).into(), &mut t, &mut b);
    let line = decode_line(&t, &b, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
    assert!(line.replays);
    assert_eq!(
        line.to_envelope(),
        decode_pair(&t, &b, DEFAULT_MAX_MESSAGE_BYTES).unwrap()
    );
    assert!(Line::from(&line.to_envelope()).replays);
}
