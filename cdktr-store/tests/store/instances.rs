//! Queries for one instance read only the blocks of `logstore` that hold
//! its lines (`instance_block`): every line is still found.

use super::*;

/// Lines of 50 instances interleaved, and one instance with a line near
/// the start, one in the middle and one at the end.
fn interleaved(n: usize) -> Vec<LogMessage> {
    let rare = [3, n / 2, n - 1];
    (0..n)
        .map(|i| {
            let instance = match rare.contains(&i) {
                true => "rare".to_string(),
                false => format!("busy-{}", i % 50),
            };
            LogMessage {
                workflow_instance_id: instance,
                timestamp_ms: T0 + i as i64,
                payload: format!("line {i}"),
                ..message(i)
            }
        })
        .collect()
}

fn int(store: &Store, sql: &str) -> i64 {
    match store.sql(sql, 1, 1 << 10).unwrap().rows[0][0] {
        cdktr_store::SqlValue::Int(v) => v,
        ref other => panic!("{sql}: {other:?}"),
    }
}

/// Each instance's lines, counts and snapshot through the store's queries
/// are those of `data`.
fn assert_every_instance_found(store: &Store, data: &[LogMessage]) {
    for instance in ["busy-0", "busy-17", "busy-49", "rare", "absent"] {
        let want: Vec<&str> = data
            .iter()
            .filter(|m| m.workflow_instance_id == instance)
            .map(|m| m.payload.as_str())
            .collect();
        let q = all_of(LogQuery {
            workflow_instance_id: Some(instance.into()),
            ..LogQuery::default()
        });
        let got = store.query_logs(&q).unwrap();
        let got: Vec<&str> = got.iter().map(|m| m.payload.as_str()).collect();
        assert_eq!(got, want, "{instance}");
        assert_eq!(store.count_logs(&q).unwrap(), want.len() as u64, "{instance}");
        let newest = LogQuery {
            order: Order::NewestFirst,
            ..q.clone()
        };
        let page = store.query_page(&newest, usize::MAX).unwrap();
        let got: Vec<&str> = page.lines.iter().rev().map(|m| m.payload.as_str()).collect();
        assert_eq!(got, want, "{instance}, newest first");
        let last_seq = data
            .iter()
            .rposition(|m| m.workflow_instance_id == instance)
            .map(|i| i as u64 + 1);
        let snapshot = store.snapshot(&q, i64::MAX).unwrap();
        assert_eq!(snapshot.persisted.get("p").copied(), last_seq, "{instance}");
    }
}

#[test]
fn an_instance_query_finds_every_line_across_blocks_and_retried_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("blocks.db")).unwrap();
    // Three blocks of line numbers; batches of 7,000 lines (one per chunk
    // sent) end inside blocks, and some fail, before or after their
    // commit, and go again.
    let data = interleaved(2 * 20_480 + 9_000);
    let config = PersisterConfig {
        flush_interval: Duration::from_millis(20),
        ..PersisterConfig::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    persister.fail_next_writes(2);
    persister.fail_next_commits(2);
    let tx = persister.sender();
    for (n, chunk) in data.chunks(7_000).enumerate() {
        for (i, m) in chunk.iter().enumerate() {
            tx.send(env("p", (n * 7_000 + i) as u64 + 1, m.clone())).unwrap();
        }
        let sent = (n * 7_000 + chunk.len()) as u64;
        wait_for(&persister, "the chunk written", &|s| s.persisted == sent);
    }
    let stats = persister.shutdown().unwrap();
    assert_eq!(stats.persisted, data.len() as u64);
    assert_eq!(stats.failed_flushes, 4, "{stats:?}");
    assert!(stats.batches >= 8, "{stats:?}");
    assert_every_instance_found(&store, &data);
    // One row per instance per block, however many batches wrote it.
    let pairs = int(
        &store,
        "SELECT count(*) FROM (SELECT DISTINCT workflow_instance_id, line_id // 20480 FROM logstore)",
    );
    assert_eq!(pairs, 50 * 3 + 3);
    assert_eq!(int(&store, "SELECT count(*) FROM instance_block"), pairs);
}

#[test]
fn a_version_4_file_gets_its_instance_index_when_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    let data = interleaved(20_480 + 5_000);
    persist(&Store::open(&path).unwrap(), PersisterConfig::default(), &data);
    // Make it a version 4 file, as session 13's build wrote it.
    let conn = duckdb::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE instance_block; DELETE FROM cdktr_schema_version WHERE version > 4;")
        .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), cdktr_store::SCHEMA_VERSION);
    assert_eq!(int(&store, "SELECT count(*) FROM instance_block"), 50 * 2 + 2);
    assert_every_instance_found(&store, &data);
    // Lines stored after the migration are indexed as they come.
    let more: Vec<LogMessage> = interleaved(30_000).into_iter().skip(25_480).collect();
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    for (i, m) in more.iter().enumerate() {
        tx.send(env("p", (data.len() + i) as u64 + 1, m.clone())).unwrap();
    }
    persister.shutdown().unwrap();
    let all: Vec<LogMessage> = data.into_iter().chain(more).collect();
    assert_every_instance_found(&store, &all);
}

#[test]
fn lines_written_into_logstore_by_hand_are_indexed_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hand.db");
    let data = interleaved(5_000);
    persist(&Store::open(&path).unwrap(), PersisterConfig::default(), &data);
    // Copies of every line, numbered two and three blocks on, written as
    // an import tool would write them, with DuckDB alone.
    let conn = duckdb::Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO logstore SELECT workflow_id, workflow_name, 'hand-' || workflow_instance_id, task_name, \
         task_instance_id, timestamp_ms, level, payload, NULL, NULL, line_id + 2 * 20480 FROM logstore; \
         INSERT INTO logstore SELECT workflow_id, workflow_name, workflow_instance_id, task_name, \
         task_instance_id, timestamp_ms, level, payload, NULL, NULL, line_id + 20480 FROM logstore \
         WHERE workflow_instance_id LIKE 'hand-%';",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    let count = |instance: &str| {
        store
            .count_logs(&all_of(LogQuery {
                workflow_instance_id: Some(instance.into()),
                ..LogQuery::default()
            }))
            .unwrap()
    };
    let want = data.iter().filter(|m| m.workflow_instance_id == "busy-7").count() as u64;
    assert_eq!(count("busy-7"), want);
    assert_eq!(count("hand-busy-7"), 2 * want);
    assert_eq!(count("hand-rare"), 6);
    // One row per instance per block, numbered as the persister numbers
    // them (50 busy instances and "rare" in block 0; their copies in
    // blocks 2 and 3).
    assert_eq!(
        int(
            &store,
            "SELECT count(*) FROM (SELECT DISTINCT workflow_instance_id, line_id // 20480 FROM logstore)"
        ),
        int(&store, "SELECT count(*) FROM instance_block")
    );
    assert_eq!(int(&store, "SELECT count(*) FROM instance_block"), 3 * 51);
    // Opening again indexes nothing twice.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(int(&store, "SELECT count(*) FROM instance_block"), 3 * 51);
}
