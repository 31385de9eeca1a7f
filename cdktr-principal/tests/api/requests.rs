//! Requests the server must survive: garbage, unknown ops, wrong types, a slow query.

use super::*;

#[test]
fn garbage_unknown_ops_and_wrong_types_get_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&dir.path().join("app.db"), &[]);
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    req.connect(&p.api.endpoint()).unwrap();
    let ask = |body: &[u8]| -> Response {
        req.send(body, 0).unwrap();
        Response::from_bytes(&req.recv_bytes(0).expect("a reply, not silence")).unwrap()
    };
    let kind = |r: Response| match r {
        Response::Error { kind, .. } => kind,
        other => panic!("expected an error, got {other:?}"),
    };
    let mp = |v: serde_json::Value| rmp_serde::to_vec_named(&v).unwrap();
    // Deterministic "random" bytes.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in [0usize, 1, 7, 64, 4096] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(kind(ask(&junk)), ErrorKind::Malformed, "{len} random bytes");
    }
    assert_eq!(
        kind(ask(&mp(serde_json::json!({"op": "Shutdown"})))),
        ErrorKind::UnknownOp
    );
    assert_eq!(
        kind(ask(&mp(serde_json::json!({"op": ["Ping"]})))),
        ErrorKind::Malformed
    );
    for wrong in [
        serde_json::json!({"op": "GetWorkflowTimeline", "workflow_instance_id": 12}),
        serde_json::json!({"op": "GetWorkflowTimeline"}),
        serde_json::json!({"op": "QueryLogs", "query": {"limit": "ten"}}),
        serde_json::json!({"op": "QueryLogs", "query": {"limit": 0}}),
        serde_json::json!({"op": "QueryLogs", "query": {"start_ms": 10, "end_ms": 5}}),
        serde_json::json!({"op": "QueryLogs", "query": {"workflow": "etl"}}),
        serde_json::json!({"op": "GetRecentWorkflowStatuses", "limit": 0}),
        serde_json::json!({"op": "WorkflowStatusUpdate", "workflow_id": "w", "workflow_instance_id": "i", "status": "DONE"}),
        serde_json::json!({"op": "Heartbeat", "agent_id": "a", "running": "etl-1"}),
    ] {
        assert_eq!(kind(ask(&mp(wrong.clone()))), ErrorKind::Invalid, "{wrong}");
    }
    // Hostile strings are data.
    let evil = "'; DROP TABLE logstore; --\n\u{0}\u{1b}[31m";
    assert_eq!(ask(&update(evil, RunStatus::Running, 5).to_bytes()), Response::Accepted);
    let mut client = p.client();
    assert_eq!(client.timeline(evil).unwrap().len(), 1);

    // A DEALER that skips the REQ envelope, and multi-frame bodies.
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    dealer.connect(&p.api.endpoint()).unwrap();
    dealer.send(Request::Ping {}.to_bytes(), 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(reply[0], b"");
    assert_eq!(kind(Response::from_bytes(&reply[1]).unwrap()), ErrorKind::Malformed);
    dealer
        .send_multipart([b"".to_vec(), b"a".to_vec(), b"b".to_vec()], 0)
        .unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(
        kind(Response::from_bytes(reply.last().unwrap()).unwrap()),
        ErrorKind::Malformed
    );

    // Raw TCP junk, not ZMTP at all, and a peer that connects and vanishes.
    for _ in 0..3 {
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", p.api.port)).unwrap();
        let _ = raw.write_all(b"GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\x7f");
        drop(raw);
    }
    // A request larger than the limit closes that connection only.
    let big = ctx.socket(zmq::REQ).unwrap();
    big.connect(&p.api.endpoint()).unwrap();
    big.send(vec![0x90u8; cdktr_log::api::MAX_REQUEST_BYTES + 1], 0)
        .unwrap();

    // Still serving, and it counted the errors.
    assert_eq!(client.ping().unwrap().0, cdktr_log::api::API_VERSION);
    let stats = client.stats().unwrap();
    assert_eq!(stats.request_errors, 18, "{stats:?}");
    p.stop();
}

#[test]
fn a_slow_query_does_not_hold_up_status_updates() {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .query_workers(2)
        .query_delay(Duration::from_secs(3))
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    // Two slow queries occupy both workers.
    let slow: Vec<zmq::Socket> = (0..2)
        .map(|_| {
            let s = ctx.socket(zmq::REQ).unwrap();
            s.connect(principal.api_endpoint()).unwrap();
            s.send(
                Request::QueryLogs {
                    query: Default::default(),
                    layout: Default::default(),
                }
                .to_bytes(),
                0,
            )
            .unwrap();
            s
        })
        .collect();
    let mut api = ApiClient::connect(&principal.api_config()).unwrap().with_timeout(WAIT);
    for i in 0..20 {
        send(&mut api, &update(&format!("i{i}"), RunStatus::Running, i)).unwrap();
        send(
            &mut api,
            &Request::Heartbeat {
                agent_id: "a".into(),
                running: vec![format!("i{i}")],
            },
        )
        .unwrap();
    }
    // Every update was recorded while both queries were still running.
    for s in &slow {
        assert_eq!(s.poll(zmq::POLLIN, 0).unwrap(), 0, "the query finished first");
    }
    assert_eq!(
        principal.store().recent_workflows(&Default::default()).unwrap().len(),
        20
    );
    for s in &slow {
        s.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
        let r = Response::from_bytes(&s.recv_bytes(0).unwrap()).unwrap();
        assert!(matches!(r, Response::Logs(_)), "{r:?}");
    }
    principal.shutdown().unwrap();
}

/// DuckDB's `threads` setting as the principal's store reports it.
fn duckdb_threads(principal: &cdktr_principal::Principal) -> String {
    let rows = principal
        .store()
        .sql("SELECT current_setting('threads')", 1, 1 << 10)
        .unwrap()
        .rows;
    rows[0][0].to_text()
}

#[test]
fn duckdb_gets_one_thread_fewer_than_the_cores_unless_told_otherwise() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected = cores.saturating_sub(1).max(1);
    assert_eq!(cdktr_principal::default_db_threads() as usize, expected);
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    assert_eq!(duckdb_threads(&principal), expected.to_string());
    principal.shutdown().unwrap();
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .db_threads(3)
        .start()
        .unwrap();
    assert_eq!(duckdb_threads(&principal), "3");
    principal.shutdown().unwrap();
}
