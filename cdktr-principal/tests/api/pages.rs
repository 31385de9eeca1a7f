//! Pages of stored logs through a principal: read owned (`query_logs`)
//! and in place (`read_logs`), the same lines either way.

use cdktr_log::query::{LevelFilter, LogPage, LogQuery, Order};
use cdktr_log::{Envelope, Line};
use cdktr_store::{Persister, PersisterConfig, Store};

use super::*;

/// A principal on a file holding [`stored`]'s lines, and its directory.
fn principal_with_history() -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    stored(&db);
    let p = start(&db, &[]);
    (dir, p)
}

/// 2,500 lines of 13 instances from two publishers, stored in `db`.
fn stored(db: &Path) {
    let store = Store::open(db).unwrap();
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    for i in 0..2_500usize {
        let message = LogMessage {
            workflow_instance_id: format!("etl-{}", i % 13),
            timestamp_ms: 1_795_000_000_000 + i as i64,
            payload: format!("stored {i} é 🚀"),
            ..line("etl-0", Level::ALL[i % 5], "")
        };
        tx.send(Line::from(Envelope {
            publisher_id: format!("agent-{}", i % 2),
            seq: i as u64 / 2 + 1,
            replays: false,
            message,
        }))
        .unwrap();
    }
    persister.shutdown().unwrap();
}

#[test]
fn a_page_read_in_place_or_kept_in_its_reply_has_the_lines_origins_and_cursor_of_the_owned_page() {
    let (_dir, p) = principal_with_history();
    let mut api = p.client();
    let all = LogQuery {
        start_ms: Some(0),
        ..LogQuery::default()
    };
    for q in [
        all.clone(),
        LogQuery {
            workflow_instance_id: Some("etl-3".into()),
            order: Order::NewestFirst,
            ..all.clone()
        },
        LogQuery {
            levels: Some(LevelFilter::AtLeast(Level::Warn)),
            limit: Some(7),
            ..all.clone()
        },
    ] {
        let owned = api.query_logs(&q).unwrap();
        assert!(!owned.lines.is_empty() && owned.origins.iter().all(Option::is_some));
        let read = api
            .read_logs(&q, |lines, next| LogPage::from_lines(lines.iter().copied(), next))
            .unwrap();
        assert_eq!(read, owned, "{q:?}");
        let kept = api.reply_page(&q).unwrap();
        assert_eq!(kept.to_page(), owned, "{q:?}");
    }
    let invalid = LogQuery { limit: Some(0), ..all };
    let errors = [
        api.read_logs(&invalid, |lines, _| lines.len()).unwrap_err(),
        api.reply_page(&invalid).unwrap_err(),
    ];
    for err in errors {
        assert!(
            matches!(
                err,
                cdktr_log::Error::Api {
                    kind: ErrorKind::Invalid,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn cli_query_prints_every_page_of_a_long_history_in_order() {
    let (_dir, p) = principal_with_history();
    let want: Vec<String> = (0..2_500).map(|i| format!("stored {i} é 🚀")).collect();
    assert_eq!(
        json_payloads(&p.cli(&["query", "--since", "3000d", "-o", "json"])),
        want
    );
    let text = stdout_lines(&p.cli(&["query", "--since", "3000d", "-i", "etl-3"]));
    assert_eq!(text.len(), want.iter().skip(3).step_by(13).count());
    assert!(text.iter().all(|l| l.contains(" etl/etl-3 ")), "{:?}", &text[..3]);
}

#[test]
fn a_page_asked_for_as_arrays_holds_what_the_same_page_as_maps_holds_in_fewer_bytes() {
    let (_dir, p) = principal_with_history();
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    req.connect(&p.api.endpoint()).unwrap();
    // As a caller in another language writes the request (docs/api.md).
    let ask = |layout: Option<&str>| -> Vec<u8> {
        let mut request = serde_json::json!({"op": "QueryLogs", "query": {"start_ms": 0, "limit": 500}});
        if let Some(layout) = layout {
            request["layout"] = layout.into();
        }
        req.send(rmp_serde::to_vec_named(&request).unwrap(), 0).unwrap();
        req.recv_bytes(0).expect("a reply")
    };
    let (default, maps, arrays) = (ask(None), ask(Some("maps")), ask(Some("arrays")));
    assert!(default == maps, "no layout is the maps layout");
    let as_json = |b: &[u8]| rmp_serde::from_slice::<serde_json::Value>(b).unwrap();
    let (m, a) = (as_json(&maps), as_json(&arrays));
    assert!(
        m["lines"][0].is_object() && m["origins"][0].is_object(),
        "{}",
        m["lines"][0]
    );
    assert_eq!(a["lines"][0].as_array().map(Vec::len), Some(8), "{}", a["lines"][0]);
    assert_eq!(a["origins"][0].as_array().map(Vec::len), Some(2), "{}", a["origins"][0]);
    let page = |b: &[u8]| match Response::from_bytes(b).unwrap() {
        Response::Logs(page) => page,
        other => panic!("{other:?}"),
    };
    let (from_maps, from_arrays) = (page(&maps), page(&arrays));
    assert_eq!(from_maps.lines.len(), 500);
    assert_eq!(from_arrays, from_maps);
    assert!(
        arrays.len() * 10 < maps.len() * 7,
        "arrays {} bytes, maps {} bytes",
        arrays.len(),
        maps.len()
    );
    // The Rust client asks for arrays and reads the same page.
    let q = LogQuery {
        start_ms: Some(0),
        limit: Some(500),
        ..LogQuery::default()
    };
    assert_eq!(p.client().query_logs(&q).unwrap(), from_maps);
}
