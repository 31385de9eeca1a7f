//! Requests and replies as the documents write them; `replies` has the
//! replies, the `Logs` page among them.

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

mod replies;
