use super::*;
use serde_json::json;

fn bytes(v: serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(&v).unwrap()
}

fn line() -> crate::LogMessage {
    crate::LogMessage {
        workflow_id: "w".into(),
        workflow_name: "W".into(),
        workflow_instance_id: "i".into(),
        task_name: "t".into(),
        task_instance_id: "ti".into(),
        timestamp_ms: 1,
        level: crate::Level::Warn,
        payload: "x".into(),
    }
}

#[test]
fn requests_round_trip_and_read_as_documented() {
    let all = [
        Request::Ping {},
        Request::QueryLogs {
            query: LogQuery::default(),
            layout: Layout::Maps,
        },
        Request::QueryLogs {
            query: LogQuery::default(),
            layout: Layout::Arrays,
        },
        Request::Snapshot {
            query: LogQuery {
                workflow_instance_id: Some("i".into()),
                ..LogQuery::default()
            },
        },
        Request::CountLogs {
            query: LogQuery {
                as_of: Some(7),
                stored_after: Some(3),
                ..LogQuery::default()
            },
        },
        Request::GetRecentWorkflowStatuses(RecentWorkflows::default()),
        Request::GetWorkflowTimeline {
            workflow_instance_id: "i".into(),
        },
        Request::WorkflowStatusUpdate {
            workflow_id: "w".into(),
            workflow_instance_id: "i".into(),
            status: RunStatus::Running,
            timestamp_ms: Some(5),
        },
        Request::TaskStatusUpdate {
            task_id: "t".into(),
            task_instance_id: "ti".into(),
            workflow_instance_id: "i".into(),
            status: RunStatus::Failed,
            timestamp_ms: None,
        },
        Request::Heartbeat {
            agent_id: "a".into(),
            running: vec!["i".into()],
        },
        Request::GetPublisherWatermark {
            publisher_id: "p".into(),
            flush: true,
        },
        Request::DeclareLost {
            publisher_id: "p".into(),
            first: 3,
            last: 9,
        },
        Request::Stats {},
        Request::Sql {
            sql: "SELECT 1".into(),
            max_rows: Some(5),
        },
    ];
    let ops: std::collections::BTreeSet<&str> = all.iter().map(Request::op).collect();
    assert_eq!(
        ops,
        Request::OPS.into_iter().collect(),
        "every op, each layout of QueryLogs"
    );
    for r in all {
        assert_eq!(Request::from_bytes(&r.to_bytes()), Ok(r.clone()));
        assert!(Request::OPS.contains(&r.op()));
    }
    // What docs/api.md shows a caller in another language writing.
    assert_eq!(Request::from_bytes(&bytes(json!({"op": "Ping"}))), Ok(Request::Ping {}));
    assert_eq!(
        Request::from_bytes(&bytes(
            json!({"op": "GetRecentWorkflowStatuses", "limit": 5, "status": "RUNNING"})
        )),
        Ok(Request::GetRecentWorkflowStatuses(RecentWorkflows {
            limit: 5,
            workflow_id: None,
            status: Some(RunStatus::Running)
        }))
    );
    let query_logs = |layout| Request::QueryLogs {
        query: LogQuery::default(),
        layout,
    };
    assert_eq!(
        Request::from_bytes(&bytes(json!({"op": "QueryLogs", "query": {}}))),
        Ok(query_logs(Layout::Maps))
    );
    assert_eq!(
        Request::from_bytes(&bytes(json!({"op": "QueryLogs", "query": {}, "layout": "arrays"}))),
        Ok(query_logs(Layout::Arrays))
    );
    assert_eq!(
        Request::from_bytes(&bytes(json!({"op": "QueryLogs", "query": {}, "layout": "maps"}))),
        Ok(query_logs(Layout::Maps))
    );
    // Asking for maps writes the request as it was before the field.
    assert_eq!(
        rmp_serde::from_slice::<serde_json::Value>(&query_logs(Layout::Maps).to_bytes()).unwrap(),
        json!({"op": "QueryLogs", "query": LogQuery::default()})
    );
    assert_eq!(
        Request::from_bytes(&bytes(json!({"op": "Heartbeat", "agent_id": "a"}))),
        Ok(Request::Heartbeat {
            agent_id: "a".into(),
            running: vec![]
        })
    );
}

#[test]
fn bad_requests_get_the_right_error_kind() {
    let kind = |b: &[u8]| match Request::from_bytes(b) {
        Err((kind, message)) => {
            assert!(!message.is_empty());
            kind
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(kind(b""), ErrorKind::Malformed);
    assert_eq!(kind(b"\xc1\xff\x00garbage"), ErrorKind::Malformed);
    assert_eq!(kind(&bytes(json!([1, 2, 3]))), ErrorKind::Malformed);
    assert_eq!(kind(&bytes(json!({"op": 7}))), ErrorKind::Malformed);
    assert_eq!(kind(&bytes(json!({"op": "DropTables"}))), ErrorKind::UnknownOp);
    assert_eq!(
        kind(&bytes(json!({"op": "GetWorkflowTimeline", "workflow_instance_id": 5}))),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(&bytes(
            json!({"op": "WorkflowStatusUpdate", "workflow_id": "w", "workflow_instance_id": "i", "status": "DONE"})
        )),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(&bytes(json!({"op": "QueryLogs", "query": {"workflow": "w"}}))),
        ErrorKind::Invalid
    );
    assert_eq!(kind(&bytes(json!({"op": "Ping", "extra": 1}))), ErrorKind::Invalid);
    // A layout is one of the two names, in lower case.
    for layout in [
        json!("columns"),
        json!("Arrays"),
        json!(1),
        json!(null),
        json!(["arrays"]),
    ] {
        assert_eq!(
            kind(&bytes(json!({"op": "QueryLogs", "query": {}, "layout": layout}))),
            ErrorKind::Invalid,
            "layout {layout}"
        );
    }
}

#[test]
fn requests_are_read_exactly_as_the_documents_type_them() {
    let refused = |b: &[u8]| Request::from_bytes(b).unwrap_err();
    let ping = bytes(json!({"op": "Ping"}));
    // An array is not read as a map, whatever serde would do.
    assert_eq!(refused(&bytes(json!(["Ping"]))).0, ErrorKind::Malformed);
    let q = bytes(json!({"op": "QueryLogs", "query": [null, null, "etl"]}));
    let (kind, message) = refused(&q);
    assert_eq!(kind, ErrorKind::Invalid);
    assert!(message.contains("`query` is an array"), "{message}");
    // `bin` is not a string.
    let mut bin_op = vec![0x81, 0xa2, b'o', b'p', 0xc4, 4];
    bin_op.extend_from_slice(b"Ping");
    assert_eq!(refused(&bin_op).0, ErrorKind::Malformed);
    let mut bin_field = vec![0x82, 0xa2, b'o', b'p', 0xb3];
    bin_field.extend_from_slice(b"GetWorkflowTimeline");
    bin_field.extend_from_slice(&[0xb4]);
    bin_field.extend_from_slice(b"workflow_instance_id");
    bin_field.extend_from_slice(&[0xc4, 1, b'i']);
    let (kind, message) = refused(&bin_field);
    assert_eq!(kind, ErrorKind::Invalid);
    assert!(message.contains("`workflow_instance_id` is bin"), "{message}");
    // Nothing after the map.
    let mut trailing = ping.clone();
    trailing.push(0x00);
    assert_eq!(refused(&trailing).0, ErrorKind::Malformed);
    // An integer key is explained, not serde's "field index".
    let int_key = [0x82, 0xa2, b'o', b'p', 0xa4, b'P', b'i', b'n', b'g', 0x01, 0x02];
    let (kind, message) = refused(&int_key);
    assert_eq!(kind, ErrorKind::Malformed);
    assert!(message.contains("a key is an integer"), "{message}");
    // A bad field before "op" is still reported as that field.
    // {"a": bin, "b": [1, [2, 3.5]], "c": fixext, "op": "QueryLogs"}: read past them to the op.
    let mut late_op = vec![
        0x84, 0xa1, b'a', 0xc4, 2, 0, 1, 0xa1, b'b', 0x92, 0x01, 0x92, 0x02, 0xca, 0, 0, 0, 0,
    ];
    late_op.extend_from_slice(&[0xa1, b'c', 0xd4, 1, 9, 0xa2, b'o', b'p', 0xa9]);
    late_op.extend_from_slice(b"QueryLogs");
    let (kind, message) = refused(&late_op);
    assert_eq!(kind, ErrorKind::Invalid, "{message}");
    assert!(message.starts_with("QueryLogs: `a` is bin"), "{message}");
    // A truncated request says so.
    assert_eq!(refused(&ping[..ping.len() - 1]).0, ErrorKind::Malformed);
    // The documented arrays are read.
    assert!(Request::from_bytes(&bytes(json!({"op": "Heartbeat", "agent_id": "a", "running": ["x"]}))).is_ok());
    let any_of = json!({"op": "CountLogs", "query": {"levels": {"any_of": ["INFO", "WARN"]}}});
    assert!(Request::from_bytes(&bytes(any_of)).is_ok());
}

#[test]
fn replies_round_trip() {
    let all = [
        Response::Pong {
            api: API_VERSION,
            version: "0.1.0".into(),
        },
        Response::Logs(LogPage::default()),
        Response::Logs(LogPage {
            lines: vec![line(), line()],
            origins: vec![
                Some(crate::query::Origin {
                    publisher_id: "p".into(),
                    seq: 9,
                }),
                None,
            ],
            next: None,
        }),
        Response::Snapshot(Snapshot {
            row: 41,
            persisted: [("p".to_string(), 9)].into_iter().collect(),
        }),
        Response::Count { count: 7 },
        Response::Workflows { runs: vec![] },
        Response::Timeline {
            changes: vec![StatusChange {
                task: Some(("t".into(), "ti".into())),
                status: RunStatus::Crashed,
                timestamp_ms: 3,
            }],
        },
        Response::Accepted,
        Response::Watermark {
            publisher_id: "p".into(),
            seq: u64::MAX,
            accepted: 3,
        },
        Response::Stats(PrincipalStats::default()),
        Response::error(ErrorKind::Busy, "later"),
    ];
    for r in all {
        assert_eq!(Response::from_bytes(&r.to_bytes()).unwrap(), r);
    }
    assert!(matches!(Response::from_bytes(b"\x01"), Err(Error::Reply(_))));
}

#[test]
fn a_logs_reply_reads_the_same_with_its_tag_first_or_last() {
    let expected = Response::Logs(LogPage {
        lines: vec![line()],
        origins: vec![Some(crate::query::Origin {
            publisher_id: "p".into(),
            seq: 9,
        })],
        next: Some(crate::query::Cursor {
            timestamp_ms: 1,
            row: 4,
        }),
    });
    let first = expected.to_bytes();
    // serde_json's map sorts its keys: "reply" comes last.
    let last = bytes(json!({
        "lines": [{"workflow_id": "w", "workflow_name": "W", "workflow_instance_id": "i", "task_name": "t",
                   "task_instance_id": "ti", "timestamp_ms": 1, "level": "WARN", "payload": "x"}],
        "origins": [{"publisher_id": "p", "seq": 9}],
        "next": {"timestamp_ms": 1, "row": 4},
        "reply": "Logs",
    }));
    assert!(logs::read(&first).is_some() && logs::read(&last).is_none());
    assert_eq!(Response::from_bytes(&first).unwrap(), expected);
    assert_eq!(Response::from_bytes(&last).unwrap(), expected);
    // A page without its lines is refused on both paths.
    let no_lines_first = b"\x82\xa5reply\xa4Logs\xa4next\xc0";
    assert!(logs::read(no_lines_first).is_some());
    assert!(matches!(Response::from_bytes(no_lines_first), Err(Error::Reply(_))));
    let no_lines_last = bytes(json!({"next": null, "reply": "Logs"}));
    assert!(matches!(Response::from_bytes(&no_lines_last), Err(Error::Reply(_))));
}

#[test]
fn a_reply_names_its_variant_as_the_wire_does() {
    for r in [
        Response::Accepted,
        Response::Logs(LogPage::default()),
        Response::Count { count: 1 },
    ] {
        let wire: serde_json::Value = rmp_serde::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(wire["reply"], r.name());
    }
}

/// Pages with every MessagePack size class a `Logs` reply can meet: str
/// 5/8/16/32, array 4/16/32, negative and 64-bit integers, nil origins and
/// cursor.
fn pages_of_every_size_class() -> Vec<LogPage> {
    let text = |n: usize| "é".repeat(n / 2) + &"x".repeat(n % 2);
    let mut lines = Vec::new();
    let mut origins = Vec::new();
    for i in 0..70_000usize {
        let long = match i {
            0 => 70_000,
            1 => 300,
            2 => 40,
            _ => i % 20,
        };
        lines.push(crate::LogMessage {
            workflow_id: text(long),
            workflow_name: "Nightly ETL".into(),
            workflow_instance_id: format!("etl-{i}"),
            task_name: text(i % 33),
            task_instance_id: String::new(),
            timestamp_ms: [i64::MIN, -1, 0, 127, 128, 65_536, i64::MAX][i % 7],
            level: crate::Level::ALL[i % 5],
            payload: text(long + 1),
        });
        origins.push((i % 3 != 0).then(|| crate::query::Origin {
            publisher_id: text(i % 40),
            seq: [1, 255, 65_536, u64::MAX][i % 4],
        }));
    }
    [
        (0, None),
        (
            1,
            Some(crate::query::Cursor {
                timestamp_ms: -5,
                row: 0,
            }),
        ),
        (15, None),
        (
            16,
            Some(crate::query::Cursor {
                timestamp_ms: i64::MAX,
                row: i64::MAX,
            }),
        ),
        (
            70_000,
            Some(crate::query::Cursor {
                timestamp_ms: 1,
                row: 70_000,
            }),
        ),
    ]
    .into_iter()
    .map(|(n, next)| LogPage {
        lines: lines[..n].to_vec(),
        origins: origins[..n].to_vec(),
        next,
    })
    .collect()
}

#[test]
fn a_logs_reply_written_from_borrowed_rows_is_the_derived_encoding_byte_for_byte() {
    for page in pages_of_every_size_class() {
        let (n, next) = (page.lines.len(), page.next);
        let derived = rmp_serde::to_vec_named(&Response::Logs(page.clone())).unwrap();
        let borrowed: Vec<PageLine<'_>> = page
            .lines
            .iter()
            .zip(&page.origins)
            .map(|(l, o)| PageLine::new(l, o.as_ref()))
            .collect();
        assert!(
            Response::logs_bytes(&borrowed, next, Layout::Maps) == derived,
            "{n} lines"
        );
        assert!(Response::Logs(page.clone()).to_bytes() == derived, "{n} lines");
        assert_eq!(Response::from_bytes(&derived).unwrap(), Response::Logs(page));
    }
}

/// The page `read_logs` hands out, owned again.
fn page_read_in_place(bytes: &[u8]) -> crate::Result<LogPage> {
    logs::with_page(bytes, |lines, next| LogPage {
        lines: lines.iter().map(|l| l.message.to_message()).collect(),
        origins: lines.iter().map(|l| l.to_origin()).collect(),
        next,
    })
}

#[test]
fn a_logs_reply_read_in_place_has_the_lines_origins_and_cursor_of_the_decoded_page() {
    for page in pages_of_every_size_class() {
        let bytes = Response::Logs(page.clone()).to_bytes();
        assert!(logs::read_in_place(&bytes).is_some(), "the in-place path");
        assert_eq!(page_read_in_place(&bytes).unwrap(), page, "{} lines", page.lines.len());
    }
}

#[test]
fn a_logs_reply_in_another_layout_is_read_in_place_as_the_decoder_reads_it() {
    // The tag last and no origins (a principal before schema version 3).
    let bytes = bytes(json!({"lines": [line(), line()], "next": {"timestamp_ms": 1, "row": 2}, "reply": "Logs"}));
    assert!(logs::read_in_place(&bytes).is_none());
    let Response::Logs(decoded) = Response::from_bytes(&bytes).unwrap() else {
        panic!("not a page")
    };
    let got = page_read_in_place(&bytes).unwrap();
    assert_eq!(got.lines, decoded.lines);
    assert_eq!(got.next, decoded.next);
    assert_eq!(got.origins, [None, None]);
}

#[test]
fn reading_a_page_in_place_from_an_error_or_another_reply_is_an_error() {
    let error = Response::error(ErrorKind::Invalid, "limit 0").to_bytes();
    assert!(matches!(
        page_read_in_place(&error),
        Err(crate::Error::Api {
            kind: ErrorKind::Invalid,
            ..
        })
    ));
    let pong = Response::Pong {
        api: API_VERSION,
        version: "x".into(),
    }
    .to_bytes();
    assert!(matches!(page_read_in_place(&pong), Err(crate::Error::Reply(_))));
    // A page whose line lacks a field is refused, as the decoder refuses it.
    let broken = bytes(json!({"reply": "Logs", "lines": [{"workflow_id": "w"}], "origins": [], "next": null}));
    assert!(Response::from_bytes(&broken).is_err());
    assert!(matches!(page_read_in_place(&broken), Err(crate::Error::Reply(_))));
}

/// `page` as docs/api.md shows a `Logs` reply in the arrays layout.
fn documented_arrays(page: &LogPage) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = page
        .lines
        .iter()
        .map(|l| {
            json!([
                l.workflow_id,
                l.workflow_name,
                l.workflow_instance_id,
                l.task_name,
                l.task_instance_id,
                l.timestamp_ms,
                l.level.as_str(),
                l.payload
            ])
        })
        .collect();
    let origins: Vec<serde_json::Value> = page
        .origins
        .iter()
        .map(|o| o.as_ref().map_or(json!(null), |o| json!([o.publisher_id, o.seq])))
        .collect();
    json!({"reply": "Logs", "lines": lines, "origins": origins, "next": page.next})
}

#[test]
fn a_logs_reply_in_arrays_is_the_documented_encoding_and_reads_back_as_the_page() {
    for page in pages_of_every_size_class() {
        let n = page.lines.len();
        let borrowed = page.lines_with_origins();
        let arrays = Response::logs_bytes(&borrowed, page.next, Layout::Arrays);
        let read: serde_json::Value = rmp_serde::from_slice(&arrays).unwrap();
        assert!(read == documented_arrays(&page), "{n} lines");
        assert_eq!(
            Response::from_bytes(&arrays).unwrap(),
            Response::Logs(page.clone()),
            "{n} lines"
        );
        assert!(logs::read_in_place(&arrays).is_some(), "the in-place path");
        assert_eq!(page_read_in_place(&arrays).unwrap(), page, "{n} lines");
    }
}

#[test]
fn a_logs_reply_in_arrays_of_the_wrong_length_or_types_is_refused_by_both_readers() {
    let page = LogPage {
        lines: vec![line()],
        origins: vec![Some(crate::query::Origin {
            publisher_id: "a".into(),
            seq: 3,
        })],
        next: None,
    };
    let good = bytes(documented_arrays(&page));
    assert_eq!(page_read_in_place(&good).unwrap(), page);
    let line = json!(["w", "W", "i", "t", "ti", 1, "WARN", "x"]);
    let reply = |lines: serde_json::Value, origins: serde_json::Value| {
        bytes(json!({"reply": "Logs", "lines": lines, "origins": origins, "next": null}))
    };
    let origin = json!([["a", 3]]);
    let bad = [
        (
            "seven fields",
            reply(json!([["w", "W", "i", "t", "ti", 1, "WARN"]]), origin.clone()),
        ),
        (
            "nine fields",
            reply(json!([["w", "W", "i", "t", "ti", 1, "WARN", "x", "y"]]), origin.clone()),
        ),
        (
            "a timestamp as text",
            reply(json!([["w", "W", "i", "t", "ti", "1", "WARN", "x"]]), origin.clone()),
        ),
        (
            "a level in lower case",
            reply(json!([["w", "W", "i", "t", "ti", 1, "warn", "x"]]), origin.clone()),
        ),
        (
            "a number for a name",
            reply(json!([[7, "W", "i", "t", "ti", 1, "WARN", "x"]]), origin.clone()),
        ),
        ("an origin of three", reply(json!([line.clone()]), json!([["a", 3, 4]]))),
        ("an origin of one", reply(json!([line.clone()]), json!([["a"]]))),
        ("a negative seq", reply(json!([line.clone()]), json!([["a", -3]]))),
    ];
    for (what, bytes) in bad {
        assert!(Response::from_bytes(&bytes).is_err(), "{what}: decoded");
        assert!(
            matches!(page_read_in_place(&bytes), Err(crate::Error::Reply(_))),
            "{what}: read in place"
        );
    }
}
