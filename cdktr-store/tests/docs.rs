//! Every SQL example in docs/schema.md runs against a populated database,
//! through a plain DuckDB connection as an outside user would.

use cdktr_log::{Envelope, Level, Line, LogMessage};
use cdktr_store::{Persister, PersisterConfig, RunStatus, Store};

#[test]
fn the_schema_doc_examples_run() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```sql")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(
        blocks.len() >= 4,
        "expected the example queries, found {}",
        blocks.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let store = Store::open(&path).unwrap();
        let now = cdktr_log::message::now_ms();
        store
            .record_workflow_status("etl", "etl-20261127-1", RunStatus::Running, now - 5000)
            .unwrap();
        store
            .record_task_status("load", "load-1", "etl-20261127-1", RunStatus::Running, now - 4000)
            .unwrap();
        store
            .record_task_status("load", "load-1", "etl-20261127-1", RunStatus::Failed, now - 1000)
            .unwrap();
        store
            .record_workflow_status("etl", "etl-20261127-1", RunStatus::Failed, now - 900)
            .unwrap();
        let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
        for (i, level) in [Level::Info, Level::Error, Level::Error].into_iter().enumerate() {
            let message = LogMessage {
                workflow_id: "etl".into(),
                workflow_name: "Nightly ETL".into(),
                workflow_instance_id: "etl-20261127-1".into(),
                task_name: "load".into(),
                task_instance_id: "load-1".into(),
                timestamp_ms: now - 3000 + i as i64,
                level,
                payload: format!("line {i}"),
            };
            persister
                .sender()
                .send(Line::from(Envelope {
                    publisher_id: "p".into(),
                    seq: i as u64 + 1,
                    replays: false,
                    message,
                }))
                .unwrap();
        }
        persister.shutdown().unwrap();
    }
    let conn = duckdb::Connection::open(&path).unwrap();
    let mut counts = Vec::new();
    for sql in &blocks {
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
        let n = stmt
            .query([])
            .unwrap_or_else(|e| panic!("{e}\n{sql}"))
            .mapped(|_| Ok(()))
            .count();
        counts.push(n);
    }
    // failed tasks today, current statuses, durations, errors per workflow, one run's lines
    assert_eq!(counts[..5], [1, 1, 1, 1, 3], "rows per example query");
}
