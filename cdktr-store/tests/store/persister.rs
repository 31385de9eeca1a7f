//! The persister: batches, failed writes, declared losses, reopening, shutdown.

use super::*;

#[test]
fn failed_writes_are_retried_until_they_succeed_and_nothing_is_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("retry.db")).unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_millis(50),
        batch_size: 100,
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    persister.fail_next_writes(5);
    let tx = persister.sender();
    let data: Vec<LogMessage> = (0..3000).map(message).collect();
    for (i, m) in data.iter().enumerate() {
        tx.send(env("p", i as u64 + 1, m.clone())).unwrap();
    }
    let end = Instant::now() + WAIT;
    while persister.stats().persisted < data.len() as u64 {
        assert!(Instant::now() < end, "stuck at {:?}", persister.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = persister.shutdown().unwrap();
    assert_eq!(stats.failed_flushes, 5);
    assert_eq!(stats.persisted, 3000);
    let got = store.query_logs(&all_of(LogQuery::default())).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in &got {
        *counts.entry(m.payload.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3000);
    assert!(counts.values().all(|&c| c == 1));
}

#[test]
fn a_failing_database_keeps_taking_input_within_its_cap_and_a_replay_fills_the_gap() {
    let store = Store::open_in_memory().unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_millis(20),
        batch_size: 10,
        channel_capacity: 10,
        max_pending: 50,
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    persister.fail_next_writes(u32::MAX);
    let tx = persister.sender();
    let replaying = |seq: u64| replaying("r", seq, message(seq as usize));
    // The bus keeps flowing: every send is taken, none waits for the database.
    for seq in 1..=1000 {
        tx.send_timeout(replaying(seq), WAIT).unwrap();
    }
    let wait = |what: &str, done: &dyn Fn(PersisterStats) -> bool| wait_for(&persister, what, done);
    wait("the input is taken", &|s| s.pending + s.shed + s.gaps == 1000);
    let s = persister.stats();
    // Memory stays at the cap; the first message past it is shed, and the
    // ones after it wait for the re-send rather than leave a hole.
    assert_eq!((s.pending, s.shed, s.gaps, s.persisted), (50, 1, 949, 0), "{s:?}");
    wait("the accepted mark is shared", &|_| {
        persister.watermark("r").accepted == 50
    });
    assert_eq!(persister.watermark("r").persisted, 0);

    persister.fail_next_writes(0);
    wait("the held lines are written", &|s| s.persisted == 50);
    assert_eq!(persister.watermark("r").persisted, 50);
    // The publisher re-sends all it retained: what is stored is dropped.
    for seq in 1..=1000 {
        tx.send_timeout(replaying(seq), WAIT).unwrap();
    }
    let stats = persister.shutdown().unwrap();
    assert_eq!((stats.persisted, stats.duplicates), (1000, 50), "{stats:?}");
    let rows = store.query_logs(&all_of(LogQuery::default())).unwrap();
    let mut payloads: Vec<_> = rows.into_iter().map(|m| m.payload).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 1000, "each line exactly once");
}

#[test]
fn lines_declared_lost_let_the_stream_after_them_in_and_are_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gap.db");
    let store = Store::open(&path).unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    let tx = persister.sender();
    let replaying = |seq: u64| replaying("r", seq, message(seq as usize));
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let end = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < end, "{what}: {:?}", persister.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for seq in 1..=3 {
        tx.send(replaying(seq)).unwrap();
    }
    wait("1-3 taken", &|| persister.watermark("r").accepted == 3);
    // 4-6 will never come: 7-9 wait behind them.
    for seq in 7..=9 {
        tx.send(replaying(seq)).unwrap();
    }
    wait("7-9 refused", &|| persister.stats().gaps == 3);
    // A declaration that starts past what is taken changes nothing.
    persister.declare_lost("r".into(), 5, 6);
    persister.declare_lost("r".into(), 4, 6);
    persister.declare_lost("r".into(), 4, 6);
    wait("the declaration written", &|| persister.watermark("r").persisted == 6);
    for seq in 4..=9 {
        tx.send(replaying(seq)).unwrap();
    }
    wait("7-9 taken", &|| persister.watermark("r").persisted == 9);
    let stats = persister.shutdown().unwrap();
    assert_eq!(
        (stats.persisted, stats.declared_lost, stats.duplicates),
        (6, 3, 3),
        "{stats:?}"
    );
    let mut payloads: Vec<_> = store
        .query_logs(&all_of(LogQuery::default()))
        .unwrap()
        .into_iter()
        .map(|m| m.payload)
        .collect();
    payloads.sort();
    let expected: Vec<_> = [1, 2, 3, 7, 8, 9].map(|i| message(i).payload).to_vec();
    let mut expected = expected;
    expected.sort();
    assert_eq!(payloads, expected);
    drop(store);
    let conn = duckdb::Connection::open(&path).unwrap();
    let gaps: Vec<(String, u64, u64)> = conn
        .prepare("SELECT publisher_id, first_seq, last_seq FROM publisher_gap")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(gaps, [("r".to_string(), 4, 6)]);
}

#[test]
fn after_a_reopen_every_handle_reads_and_writes_the_new_instance() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("reopen.db")).unwrap();
    store.set_threads(1).unwrap();
    let statuses = store.try_clone().unwrap();
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    for i in 0..100 {
        tx.send(env("p", i + 1, message(i as usize))).unwrap();
    }
    persister.flush_now(WAIT).unwrap();
    assert!(!store.is_invalidated());
    assert!(!store.recover().unwrap(), "a healthy database is left alone");
    store.reopen_now().unwrap();
    // The persister's and the other handle's connections move over: what
    // they write is what the new instance (and so the file) holds.
    for i in 100..200 {
        tx.send(env("p", i + 1, message(i as usize))).unwrap();
    }
    persister.flush_now(WAIT).unwrap();
    statuses
        .record_workflow_status("wf", "wf-1", RunStatus::Running, T0)
        .unwrap();
    assert_eq!(store.query_logs(&all_of(LogQuery::default())).unwrap().len(), 200);
    assert_eq!(store.publisher_watermark("p").unwrap(), 200);
    persister.shutdown().unwrap();
    drop((store, statuses));
    let store = Store::open(dir.path().join("reopen.db")).unwrap();
    assert_eq!(store.query_logs(&all_of(LogQuery::default())).unwrap().len(), 200);
    assert_eq!(store.timeline("wf-1").unwrap().len(), 1);
}

#[test]
fn a_batch_reaching_the_size_is_written_without_waiting_for_the_interval() {
    let store = Store::open_in_memory().unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_secs(3600),
        batch_size: 100,
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    let tx = persister.sender();
    for i in 0..250 {
        tx.send(env("p", i + 1, message(i as usize))).unwrap();
    }
    let end = Instant::now() + WAIT;
    while persister.stats().persisted < 200 {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = persister.stats();
    assert_eq!((s.persisted, s.batches), (200, 2));
    persister.flush_now(WAIT).unwrap();
    assert_eq!(persister.stats().persisted, 250);
    assert_eq!(store.query_logs(&all_of(LogQuery::default())).unwrap().len(), 250);
}

/// Lines that piled up while writes could not run go out in batches of
/// `batch_size`, numbered without a gap or a repeat across batches and
/// across the vectors each batch is appended in.
#[test]
fn lines_piled_up_during_failing_writes_go_out_in_full_batches_numbered_without_gaps() {
    let store = Store::open_in_memory().unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_millis(20),
        batch_size: 4096,
        max_pending: 20_000,
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    persister.fail_next_writes(u32::MAX);
    let tx = persister.sender();
    let n = 2 * 4096 + 250;
    for i in 0..n {
        tx.send(env("p", i + 1, message(i as usize))).unwrap();
    }
    let wait = |what: &str, done: &dyn Fn(PersisterStats) -> bool| wait_for(&persister, what, done);
    wait("every line held", &|s| s.pending == n && s.failed_flushes > 0);
    persister.fail_next_writes(0);
    wait("every line written", &|s| s.persisted == n);
    // Two full batches, then the 250 left.
    assert_eq!(persister.stats().batches, 3);
    let value = |sql: &str| match store.sql(sql, 1, 1 << 10).unwrap().rows[0][0] {
        cdktr_store::SqlValue::Int(v) => v,
        ref other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(value("SELECT count(DISTINCT line_id) FROM logstore"), n as i64);
    assert_eq!(value("SELECT max(line_id) - min(line_id) + 1 FROM logstore"), n as i64);
    assert_eq!(value("SELECT count(*) FROM logstore WHERE payload = 'line ' || (seq - 1) || ' ' || ['alpha', 'beta', 'gamma', 'delta'][((seq - 1) % 4 + 1)::BIGINT]"), n as i64);
    persister.shutdown().unwrap();
}

/// A write whose commit landed but was reported failed (as when the
/// checkpoint DuckDB runs inside a commit fails on a full disk) is not
/// written again: every line once, numbered without gaps, each publisher
/// once in `publisher`.
#[test]
fn a_write_that_committed_but_reported_a_failure_is_not_written_twice() {
    let store = Store::open_in_memory().unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_millis(20),
        batch_size: 100,
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    persister.fail_next_commits(2);
    let tx = persister.sender();
    let n = 250;
    for i in 0..n {
        tx.send(env(&format!("p{}", i % 3), i / 3 + 1, message(i as usize)))
            .unwrap();
    }
    wait_for(&persister, "every line written", &|s| s.persisted == n);
    assert_eq!(persister.stats().failed_flushes, 2);
    let value = |sql: &str| match store.sql(sql, 1, 1 << 10).unwrap().rows[0][0] {
        cdktr_store::SqlValue::Int(v) => v,
        ref other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(value("SELECT count(*) FROM logstore"), n as i64);
    assert_eq!(value("SELECT count(DISTINCT line_id) FROM logstore"), n as i64);
    assert_eq!(value("SELECT max(line_id) - min(line_id) + 1 FROM logstore"), n as i64);
    assert_eq!(value("SELECT count(*) FROM publisher"), 3);
    assert_eq!(value("SELECT count(DISTINCT publisher_id) FROM publisher"), 3);
    persister.shutdown().unwrap();
}

/// How many row groups `logstore` has, and the fewest and most rows in one.
fn row_groups(store: &Store) -> (i64, i64, i64) {
    let sql = "SELECT count(*), min(n), max(n) FROM \
               (SELECT row_group_id, max(start + count) - min(start) AS n FROM pragma_storage_info('logstore') \
                WHERE column_name = 'line_id' GROUP BY row_group_id)";
    let rows = store.sql(sql, 1, 1 << 10).unwrap().rows;
    let int = |v: &cdktr_store::SqlValue| match v {
        cdktr_store::SqlValue::Int(v) => *v,
        other => panic!("{other:?}"),
    };
    (int(&rows[0][0]), int(&rows[0][1]), int(&rows[0][2]))
}

/// A file database keeps row groups of `ROW_GROUP_SIZE` rows (DuckDB's own
/// default would hold all these lines in one), and a full batch is whole
/// row groups, before and after the file is opened again.
#[test]
fn a_file_store_writes_a_full_batch_as_whole_row_groups_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.db");
    let n = PersisterConfig::default().batch_size;
    assert_eq!(n % ROW_GROUP_SIZE, 0);
    for round in 1..=2 {
        let store = Store::open(&path).unwrap();
        let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
        let tx = persister.sender();
        for i in 0..n {
            tx.send(env(&format!("p{round}"), i as u64 + 1, message(i))).unwrap();
        }
        wait_for(&persister, "a batch written", &|s| s.persisted == n as u64);
        assert_eq!(persister.stats().batches, 1);
        let whole = (round * n / ROW_GROUP_SIZE) as i64;
        assert_eq!(
            row_groups(&store),
            (whole, ROW_GROUP_SIZE as i64, ROW_GROUP_SIZE as i64)
        );
        persister.shutdown().unwrap();
    }
}

/// A batch cut by bytes between one and two row groups is cut back to one
/// row group, so no short row group follows it.
#[test]
fn a_batch_cut_by_bytes_past_a_row_group_is_cut_at_a_whole_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("cut.db")).unwrap();
    let lines: Vec<Line> = (0..3 * ROW_GROUP_SIZE)
        .map(|i| env("p", i as u64 + 1, message(i)))
        .collect();
    let config = PersisterConfig {
        batch_size: 4 * ROW_GROUP_SIZE,
        batch_bytes: lines[..ROW_GROUP_SIZE * 3 / 2].iter().map(Line::memory_bytes).sum(),
        max_pending: 8 * ROW_GROUP_SIZE,
        max_pending_bytes: usize::MAX,
        channel_bytes: usize::MAX,
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    let tx = persister.sender();
    for line in lines {
        tx.send(line).unwrap();
    }
    wait_for(&persister, "two row groups written", &|s| {
        s.persisted >= 2 * ROW_GROUP_SIZE as u64
    });
    let s = persister.stats();
    assert_eq!((s.persisted, s.batches), (2 * ROW_GROUP_SIZE as u64, 2));
    assert_eq!(row_groups(&store), (2, ROW_GROUP_SIZE as i64, ROW_GROUP_SIZE as i64));
    persister.shutdown().unwrap();
}

#[test]
fn flush_older_than_writes_only_once_a_line_has_waited_that_long() {
    let store = Store::open_in_memory().unwrap();
    let config = PersisterConfig {
        flush_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    persister.sender().send(env("p", 1, message(0))).unwrap();
    let end = Instant::now() + WAIT;
    while persister.stats().pending < 1 {
        assert!(Instant::now() < end, "the line was never taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Younger than an hour: answered without a write.
    persister.flush_older_than(Duration::from_secs(3600), WAIT).unwrap();
    assert_eq!((persister.stats().persisted, persister.stats().batches), (0, 0));
    // Older than 50 ms, soon: written by the call, not by the hour's timer.
    while persister.stats().persisted < 1 {
        assert!(Instant::now() < end, "never written");
        persister.flush_older_than(Duration::from_millis(50), WAIT).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(persister.stats().batches, 1);
    assert_eq!(store.query_logs(&all_of(LogQuery::default())).unwrap().len(), 1);
}

#[test]
fn shutdown_mid_batch_writes_it_and_reopening_keeps_data_and_marks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.db");
    {
        let store = Store::open(&path).unwrap();
        let config = PersisterConfig {
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let persister = Persister::start(&store, config).unwrap();
        let tx = persister.sender();
        for i in 0..1234 {
            tx.send(env("agent-a", i + 1, message(i as usize))).unwrap();
        }
        tx.send(env("agent-b", 7, message(9999))).unwrap();
        let stats = persister.shutdown().unwrap();
        assert_eq!(stats.persisted, 1235);
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.query_logs(&all_of(LogQuery::default())).unwrap().len(), 1235);
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    // Re-sent after the restart: at or below each publisher's mark.
    tx.send(env("agent-a", 1234, message(1))).unwrap();
    tx.send(env("agent-a", 1, message(2))).unwrap();
    tx.send(env("agent-b", 7, message(3))).unwrap();
    // New.
    tx.send(env(
        "agent-a",
        1235,
        LogMessage {
            payload: "new a".into(),
            ..message(4)
        },
    ))
    .unwrap();
    tx.send(env(
        "agent-b",
        8,
        LogMessage {
            payload: "new b".into(),
            ..message(5)
        },
    ))
    .unwrap();
    tx.send(env(
        "agent-c",
        1,
        LogMessage {
            payload: "new c".into(),
            ..message(6)
        },
    ))
    .unwrap();
    let stats = persister.shutdown().unwrap();
    assert_eq!((stats.persisted, stats.duplicates), (3, 3));
    let all = store.query_logs(&all_of(LogQuery::default())).unwrap();
    assert_eq!(all.len(), 1238);
    assert_eq!(all.iter().filter(|m| m.payload.starts_with("new ")).count(), 3);
}

#[test]
fn a_million_rows_are_inserted_then_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("million.db")).unwrap();
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    const N: usize = 1_000_000;
    for i in 0..N {
        let m = LogMessage {
            workflow_id: "bulk".into(),
            workflow_name: "Bulk".into(),
            workflow_instance_id: format!("bulk-{}", i / 100_000),
            task_name: "t".into(),
            task_instance_id: format!("t-{}", i / 1000),
            timestamp_ms: T0 + i as i64,
            level: if i % 1000 == 0 { Level::Error } else { Level::Info },
            payload: format!("row {i}"),
        };
        tx.send(env("bulk", i as u64 + 1, m)).unwrap();
    }
    let stats = persister.shutdown().unwrap();
    assert_eq!(stats.persisted, N as u64);
    let errors = store
        .query_logs(&all_of(LogQuery {
            levels: Some(LevelFilter::AtLeast(Level::Error)),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(errors.len(), N / 1000);
    let one = store
        .query_logs(&all_of(LogQuery {
            workflow_instance_id: Some("bulk-7".into()),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(one.len(), 100_000);
    assert_eq!(one[0].payload, "row 700000");
    assert_eq!(one[99_999].payload, "row 799999");
}

#[test]
fn the_publisher_watermark_is_what_was_written() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.publisher_watermark("p").unwrap(), 0);
    persist(
        &store,
        PersisterConfig::default(),
        &[message(1), message(2), message(3)],
    );
    assert_eq!(store.publisher_watermark("p").unwrap(), 3);
    assert_eq!(store.publisher_watermark("q").unwrap(), 0);
}
