//! The protocol as the documents state it: every type the tables of
//! `docs/api.md` and `docs/wire-format.md` give, and a wrong one for each,
//! sent as raw MessagePack from plain ZeroMQ sockets (as a client in another
//! language would) to a real principal.

use std::time::{Duration, Instant};

use cdktr_log::api::{ErrorKind, Response};
use cdktr_log::ApiClient;
use rmp::encode;

const WAIT: Duration = Duration::from_secs(30);

/// A MessagePack value built by hand, so that `bin`, integer keys and
/// other things serde would never write can be sent.
#[derive(Clone, Debug)]
enum V {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
    Text(String),
    Bin(&'static [u8]),
    Array(Vec<V>),
    Map(Vec<(V, V)>),
}

fn write(v: &V, out: &mut Vec<u8>) {
    match v {
        V::Nil => encode::write_nil(out).unwrap(),
        V::Bool(b) => encode::write_bool(out, *b).unwrap(),
        V::Int(i) => {
            encode::write_sint(out, *i).unwrap();
        }
        V::Float(f) => encode::write_f64(out, *f).unwrap(),
        V::Str(s) => encode::write_str(out, s).unwrap(),
        V::Text(s) => encode::write_str(out, s).unwrap(),
        V::Bin(b) => encode::write_bin(out, b).unwrap(),
        V::Array(items) => {
            encode::write_array_len(out, items.len() as u32).unwrap();
            items.iter().for_each(|i| write(i, out));
        }
        V::Map(entries) => {
            encode::write_map_len(out, entries.len() as u32).unwrap();
            for (k, v) in entries {
                write(k, out);
                write(v, out);
            }
        }
    }
}

fn bytes(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

fn map(entries: &[(&'static str, V)]) -> V {
    V::Map(entries.iter().map(|(k, v)| (V::Str(k), v.clone())).collect())
}

/// `base` with `key` set to `value` (added if absent).
fn with(base: &V, key: &'static str, value: V) -> V {
    let V::Map(entries) = base else { unreachable!() };
    let mut entries = entries.clone();
    match entries.iter_mut().find(|(k, _)| matches!(k, V::Str(s) if *s == key)) {
        Some(e) => e.1 = value,
        None => entries.push((V::Str(key), value)),
    }
    V::Map(entries)
}

struct Api {
    socket: zmq::Socket,
    _ctx: zmq::Context,
}

impl Api {
    fn connect(endpoint: &str) -> Api {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::REQ).unwrap();
        socket.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(endpoint).unwrap();
        Api { socket, _ctx: ctx }
    }

    fn call(&self, raw: &[u8]) -> Response {
        self.socket.send(raw, 0).unwrap();
        let reply = self.socket.recv_bytes(0).expect("every request gets a reply");
        Response::from_bytes(&reply).unwrap()
    }
}

#[track_caller]
fn accepted(api: &Api, request: &V) {
    let reply = api.call(&bytes(request));
    assert!(!matches!(reply, Response::Error { .. }), "{request:?} -> {reply:?}");
}

#[track_caller]
fn refused(api: &Api, raw: &[u8], kind: ErrorKind, says: &str) {
    match api.call(raw) {
        Response::Error { kind: k, message } => {
            assert_eq!(k, kind, "{message}");
            assert!(message.contains(says), "{message:?} should say {says:?}");
        }
        other => panic!("{raw:02x?} was accepted: {other:?}"),
    }
}

#[test]
fn api_requests_are_accepted_exactly_as_docs_api_md_types_them() {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let api = Api::connect(principal.api_endpoint());

    // The request map itself and its "op": malformed.
    let ping = map(&[("op", V::Str("Ping"))]);
    accepted(&api, &ping);
    refused(
        &api,
        &bytes(&V::Array(vec![V::Str("Ping")])),
        ErrorKind::Malformed,
        "found an array",
    );
    refused(
        &api,
        &bytes(&map(&[("op", V::Bin(b"Ping"))])),
        ErrorKind::Malformed,
        "\"op\" is bin",
    );
    refused(
        &api,
        &bytes(&V::Map(vec![(V::Bin(b"op"), V::Str("Ping"))])),
        ErrorKind::Malformed,
        "not a string",
    );
    let mut trailing = bytes(&ping);
    trailing.push(0xc0);
    refused(&api, &trailing, ErrorKind::Malformed, "1 byte(s) after the map");
    refused(&api, &bytes(&map(&[])), ErrorKind::Malformed, "no \"op\"");
    refused(
        &api,
        &bytes(&map(&[("op", V::Str("Drop"))])),
        ErrorKind::UnknownOp,
        "Drop",
    );
    // An integer key: said in words, not serde's field indexes.
    let int_key = V::Map(vec![(V::Str("op"), V::Str("Ping")), (V::Int(1), V::Int(2))]);
    refused(
        &api,
        &bytes(&int_key),
        ErrorKind::Malformed,
        "a key is an integer, not a string",
    );

    // Each operation's fields: the documented type, then wrong ones.
    let timeline = map(&[
        ("op", V::Str("GetWorkflowTimeline")),
        ("workflow_instance_id", V::Str("i")),
    ]);
    accepted(&api, &timeline);
    for wrong in [V::Bin(b"i"), V::Int(1), V::Nil, V::Array(vec![V::Str("i")])] {
        let r = with(&timeline, "workflow_instance_id", wrong.clone());
        refused(&api, &bytes(&r), ErrorKind::Invalid, "GetWorkflowTimeline");
    }

    let wf = map(&[
        ("op", V::Str("WorkflowStatusUpdate")),
        ("workflow_id", V::Str("w")),
        ("workflow_instance_id", V::Str("w-1")),
        ("status", V::Str("RUNNING")),
    ]);
    accepted(&api, &wf);
    accepted(&api, &with(&wf, "timestamp_ms", V::Int(1_795_768_200_123)));
    accepted(&api, &with(&wf, "timestamp_ms", V::Nil));
    for (key, wrong) in [
        ("workflow_id", V::Bin(b"w")),
        ("workflow_instance_id", V::Int(7)),
        ("status", V::Str("running")),
        ("status", V::Str("DONE")),
        ("status", V::Bin(b"RUNNING")),
        ("timestamp_ms", V::Str("1795768200123")),
        ("timestamp_ms", V::Float(1.5)),
        ("extra", V::Int(1)),
    ] {
        refused(
            &api,
            &bytes(&with(&wf, key, wrong)),
            ErrorKind::Invalid,
            "WorkflowStatusUpdate",
        );
    }

    let task = map(&[
        ("op", V::Str("TaskStatusUpdate")),
        ("task_id", V::Str("t")),
        ("task_instance_id", V::Str("t-1")),
        ("workflow_instance_id", V::Str("w-1")),
        ("status", V::Str("COMPLETED")),
    ]);
    accepted(&api, &task);
    for key in ["task_id", "task_instance_id", "workflow_instance_id"] {
        refused(&api, &bytes(&with(&task, key, V::Bin(b"x"))), ErrorKind::Invalid, key);
    }

    let beat = map(&[("op", V::Str("Heartbeat")), ("agent_id", V::Str("a"))]);
    accepted(&api, &beat);
    accepted(
        &api,
        &with(&beat, "running", V::Array(vec![V::Str("w-1"), V::Str("w-2")])),
    );
    refused(
        &api,
        &bytes(&with(&beat, "running", V::Str("w-1"))),
        ErrorKind::Invalid,
        "Heartbeat",
    );
    refused(
        &api,
        &bytes(&with(&beat, "running", V::Array(vec![V::Bin(b"w-1")]))),
        ErrorKind::Invalid,
        "an item of `running` is bin",
    );
    refused(
        &api,
        &bytes(&with(&beat, "agent_id", V::Bin(b"a"))),
        ErrorKind::Invalid,
        "`agent_id` is bin",
    );

    let mark = map(&[("op", V::Str("GetPublisherWatermark")), ("publisher_id", V::Str("p"))]);
    accepted(&api, &mark);
    accepted(&api, &with(&mark, "flush", V::Bool(true)));
    refused(
        &api,
        &bytes(&with(&mark, "flush", V::Int(1))),
        ErrorKind::Invalid,
        "GetPublisherWatermark",
    );

    let recent = map(&[("op", V::Str("GetRecentWorkflowStatuses"))]);
    accepted(&api, &recent);
    accepted(
        &api,
        &with(&with(&recent, "limit", V::Int(5)), "status", V::Str("RUNNING")),
    );
    accepted(&api, &with(&recent, "workflow_id", V::Str("w")));
    refused(
        &api,
        &bytes(&with(&recent, "limit", V::Int(-1))),
        ErrorKind::Invalid,
        "GetRecentWorkflowStatuses",
    );
    refused(
        &api,
        &bytes(&with(&recent, "workflow_id", V::Bin(b"w"))),
        ErrorKind::Invalid,
        "`workflow_id` is bin",
    );

    // LogQuery: every key of its table, as documented and wrong.
    let query = |q: V| map(&[("op", V::Str("QueryLogs")), ("query", q)]);
    let full = map(&[
        ("start_ms", V::Int(0)),
        ("end_ms", V::Int(i64::MAX)),
        ("workflow_id", V::Str("w")),
        ("workflow_instance_id", V::Str("w-1")),
        ("task_name", V::Str("t")),
        ("task_instance_id", V::Str("t-1")),
        ("payload_contains", V::Str("x")),
        ("limit", V::Int(10)),
        ("order", V::Str("newest_first")),
        ("after", map(&[("timestamp_ms", V::Int(5)), ("row", V::Int(1))])),
    ]);
    accepted(&api, &query(map(&[])));
    accepted(&api, &query(full.clone()));
    accepted(&api, &query(map(&[("levels", map(&[("at_least", V::Str("WARN"))]))])));
    accepted(
        &api,
        &query(map(&[(
            "levels",
            map(&[("any_of", V::Array(vec![V::Str("INFO"), V::Str("ERROR")]))]),
        )])),
    );
    accepted(&api, &map(&[("op", V::Str("CountLogs")), ("query", full.clone())]));
    // A query read by position would pass serde; the documents say map.
    refused(
        &api,
        &bytes(&query(V::Array(vec![V::Int(0), V::Int(1)]))),
        ErrorKind::Invalid,
        "`query` is an array",
    );
    for (key, wrong, says) in [
        ("workflow_id", V::Bin(b"w"), "`query.workflow_id` is bin"),
        ("payload_contains", V::Bin(b"x"), "`query.payload_contains` is bin"),
        ("limit", V::Int(0), "limit must be at least 1"),
        ("limit", V::Str("10"), "QueryLogs"),
        ("order", V::Str("NEWEST"), "QueryLogs"),
        (
            "after",
            V::Array(vec![V::Int(5), V::Int(1)]),
            "`query.after` is an array",
        ),
        ("levels", V::Str("WARN"), "QueryLogs"),
        ("start_ms", V::Float(0.5), "QueryLogs"),
        ("workflow", V::Str("w"), "QueryLogs"),
    ] {
        refused(&api, &bytes(&query(with(&full, key, wrong))), ErrorKind::Invalid, says);
    }
    refused(
        &api,
        &bytes(&query(map(&[(
            "levels",
            map(&[("any_of", V::Array(vec![V::Bin(b"INFO")]))]),
        )]))),
        ErrorKind::Invalid,
        "an item of `query.levels.any_of` is bin",
    );
    // Too deep to be any request.
    let mut deep = V::Int(1);
    for _ in 0..9 {
        deep = map(&[("x", deep)]);
    }
    refused(&api, &bytes(&query(deep)), ErrorKind::Invalid, "nested deeper than 8");

    // Sql: one str statement, an optional row cap; a write is forbidden.
    let sql = map(&[("op", V::Str("Sql")), ("sql", V::Str("SELECT 42 AS answer"))]);
    accepted(&api, &sql);
    accepted(&api, &with(&sql, "max_rows", V::Int(5)));
    accepted(&api, &with(&sql, "max_rows", V::Nil));
    for (key, wrong) in [
        ("sql", V::Bin(b"SELECT 1")),
        ("sql", V::Int(1)),
        ("sql", V::Nil),
        ("max_rows", V::Str("5")),
        ("max_rows", V::Int(-1)),
        ("params", V::Array(vec![])),
    ] {
        refused(&api, &bytes(&with(&sql, key, wrong)), ErrorKind::Invalid, "Sql");
    }
    refused(
        &api,
        &bytes(&with(&sql, "sql", V::Str("DROP TABLE logstore"))),
        ErrorKind::Forbidden,
        "DROP is not read-only",
    );

    // Still serving, and every refusal was counted.
    let mut client = ApiClient::connect(&principal.api_config()).unwrap().with_timeout(WAIT);
    assert!(client.ping().is_ok());
    assert!(client.stats().unwrap().request_errors >= 40);
    principal.shutdown().unwrap();
}

/// A log message body with every field of the table in
/// `docs/wire-format.md`, as documented.
fn body(seq: i64) -> V {
    map(&[
        ("v", V::Int(1)),
        ("publisher_id", V::Str("conformance")),
        ("seq", V::Int(seq)),
        ("workflow_id", V::Str("etl")),
        ("workflow_name", V::Str("Nightly ETL")),
        ("workflow_instance_id", V::Str("etl-1")),
        ("task_name", V::Str("extract")),
        ("task_instance_id", V::Str("extract-1")),
        ("timestamp_ms", V::Int(1_795_768_200_123)),
        ("level", V::Str("INFO")),
        ("payload", V::Text(format!("line {seq}"))),
    ])
}

#[test]
fn bus_messages_are_accepted_exactly_as_docs_wire_format_md_types_them() {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&principal.bus().config().listening_endpoint()).unwrap();
    let send = |frames: &[&[u8]]| push.send_multipart(frames, 0).unwrap();

    // Good: as documented, with an unknown key of any type, with bytes
    // after the map, with `replays`, with another spelling of a level.
    let mut good = 0;
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    for extra in [
        None,
        Some(("future", V::Bin(b"\x00\x01"))),
        Some(("future", map(&[("nested", V::Array(vec![V::Nil]))]))),
        Some(("level", V::Str("warning"))),
        Some(("replays", V::Bool(false))),
    ] {
        let mut b = body(next());
        if let Some((k, v)) = extra {
            b = with(&b, k, v);
        }
        send(&[b"etl\0", &bytes(&b)]);
        good += 1;
    }
    let mut trailing = bytes(&body(next()));
    trailing.extend_from_slice(&[0xc0, 0x01]);
    send(&[b"etl\0", &trailing]);
    good += 1;

    // Bad: each string field as bin, each field with a wrong type, a bin
    // key, an array body, a wrong topic, a wrong frame count.
    let mut bad = 0;
    let mut refuse = |frames: &[&[u8]]| {
        send(frames);
        bad += 1;
    };
    for key in [
        "publisher_id",
        "workflow_id",
        "workflow_name",
        "workflow_instance_id",
        "task_name",
        "task_instance_id",
        "level",
        "payload",
    ] {
        let b = with(&body(100), key, V::Bin(b"etl"));
        refuse(&[b"etl\0", &bytes(&b)]);
    }
    for (key, wrong) in [
        ("v", V::Str("1")),
        ("v", V::Int(2)),
        ("seq", V::Int(0)),
        ("seq", V::Int(-1)),
        ("seq", V::Str("5")),
        ("timestamp_ms", V::Float(1.0)),
        ("timestamp_ms", V::Str("now")),
        ("level", V::Str("LOUD")),
        ("level", V::Int(3)),
        ("replays", V::Int(1)),
        ("payload", V::Nil),
    ] {
        let b = with(&body(100), key, wrong);
        refuse(&[b"etl\0", &bytes(&b)]);
    }
    let V::Map(mut entries) = body(100) else { unreachable!() };
    entries[0].0 = V::Bin(b"v");
    refuse(&[b"etl\0", &bytes(&V::Map(entries))]);
    let V::Map(entries) = body(100) else { unreachable!() };
    refuse(&[
        b"etl\0",
        &bytes(&V::Array(entries.into_iter().map(|(_, v)| v).collect())),
    ]);
    refuse(&[b"etl", &bytes(&body(100))]);
    refuse(&[b"other\0", &bytes(&body(100))]);
    refuse(&[&bytes(&body(100))]);
    refuse(&[b"etl\0", &bytes(&body(100)), b"extra"]);

    // The size limit: a body of exactly max_message_bytes is accepted, one
    // byte more is not.
    let max = cdktr_log::wire::DEFAULT_MAX_MESSAGE_BYTES;
    let sized = |seq: i64, len: usize| {
        let base = bytes(&with(&body(seq), "payload", V::Text(String::new()))).len();
        // str32 header of 5 bytes replaces the 1-byte empty fixstr.
        let payload = "x".repeat(len - base - 4);
        let b = bytes(&with(&body(seq), "payload", V::Text(payload)));
        assert_eq!(b.len(), len);
        b
    };
    send(&[b"etl\0", &sized(next(), max)]);
    good += 1;
    refuse(&[b"etl\0", &sized(next(), max + 1)]);

    let mut api = ApiClient::connect(&principal.api_config()).unwrap().with_timeout(WAIT);
    let end = Instant::now() + WAIT;
    loop {
        let s = api.stats().unwrap();
        if s.received == good + bad {
            assert_eq!(s.rejected, bad, "{s:?}");
            break;
        }
        assert!(
            Instant::now() < end,
            "only {} of {} messages arrived",
            s.received,
            good + bad
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let everything = cdktr_store::LogQuery {
        start_ms: Some(i64::MIN),
        ..Default::default()
    };
    let stored = principal.query_logs(&everything).unwrap();
    assert_eq!(stored.len() as u64, good);
    assert!(stored.iter().all(|l| l.workflow_id == "etl"));
    principal.shutdown().unwrap();
}
