//! The store against real DuckDB, in memory and on disk.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cdktr_log::{Envelope, Level, LogMessage};
use cdktr_store::{
    Error, LevelFilter, LogQuery, Order, Persister, PersisterConfig, RecentWorkflows, RunStatus, StatusChange, Store,
};

const T0: i64 = 1_795_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

fn message(i: usize) -> LogMessage {
    LogMessage {
        workflow_id: format!("wf{}", i % 3),
        workflow_name: format!("Workflow {}", i % 3),
        workflow_instance_id: format!("wf{}-{}", i % 3, i % 7),
        task_name: format!("task{}", i % 5),
        task_instance_id: format!("task{}-{}", i % 5, i % 11),
        timestamp_ms: T0 + (i as i64 * 7919) % 100_000,
        level: Level::ALL[i % 5],
        payload: format!("line {i} {}", ["alpha", "beta", "gamma", "delta"][i % 4]),
    }
}

fn env(publisher: &str, seq: u64, message: LogMessage) -> Envelope {
    Envelope {
        publisher_id: publisher.into(),
        seq,
        replays: false,
        message,
    }
}

fn all_of(q: LogQuery) -> LogQuery {
    LogQuery {
        start_ms: Some(i64::MIN),
        limit: Some(usize::MAX >> 1),
        ..q
    }
}

fn persist(store: &Store, config: PersisterConfig, messages: &[LogMessage]) -> cdktr_store::PersisterStats {
    let persister = Persister::start(store, config).unwrap();
    let tx = persister.sender();
    for (i, m) in messages.iter().enumerate() {
        tx.send(env("p", i as u64 + 1, m.clone())).unwrap();
    }
    persister.shutdown().unwrap()
}

#[test]
fn schema_has_exactly_the_specified_columns_and_a_version() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.schema_version().unwrap(), cdktr_store::SCHEMA_VERSION);
    let conn = duckdb::Connection::open_in_memory().unwrap();
    drop(conn);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/app.db");
    drop(Store::open(&path).unwrap());
    let conn = duckdb::Connection::open(&path).unwrap();
    let columns = |table: &str| -> Vec<(String, String)> {
        let mut s = conn
            .prepare("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position")
            .unwrap();
        s.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let names = |t: &str| columns(t).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        names("logstore"),
        [
            "workflow_id",
            "workflow_name",
            "workflow_instance_id",
            "task_name",
            "task_instance_id",
            "timestamp_ms",
            "level",
            "payload",
            "publisher_id",
            "seq"
        ]
    );
    let identity: Vec<(String, String)> = columns("logstore").split_off(8);
    assert_eq!(
        identity,
        [
            ("publisher_id".to_string(), "VARCHAR".to_string()),
            ("seq".to_string(), "UBIGINT".to_string())
        ]
    );
    assert_eq!(
        names("workflow_run_status"),
        ["workflow_id", "workflow_instance_id", "status", "timestamp_ms"]
    );
    assert_eq!(
        names("task_run_status"),
        [
            "task_id",
            "task_instance_id",
            "workflow_instance_id",
            "status",
            "timestamp_ms"
        ]
    );
    let status_type: String = conn
        .query_row("SELECT data_type FROM information_schema.columns WHERE table_name = 'task_run_status' AND column_name = 'status'", [], |r| r.get(0))
        .unwrap();
    assert!(
        status_type.contains("ENUM") || status_type == "run_status",
        "{status_type}"
    );
    let values: String = conn
        .query_row("SELECT enum_range(NULL::run_status)::VARCHAR", [], |r| r.get(0))
        .unwrap();
    assert_eq!(values, "[PENDING, RUNNING, WAITING, COMPLETED, FAILED, CRASHED]");
    assert_eq!(
        names("publisher_gap"),
        ["publisher_id", "first_seq", "last_seq", "timestamp_ms"]
    );
    drop(conn);
    // Opening again is idempotent.
    let again = Store::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), cdktr_store::SCHEMA_VERSION);
}

#[test]
fn a_file_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    drop(Store::open(&path).unwrap());
    let conn = duckdb::Connection::open(&path).unwrap();
    conn.execute_batch("INSERT INTO cdktr_schema_version VALUES (99, 0)")
        .unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(&path),
        Err(Error::SchemaTooNew {
            found: 99,
            supported: cdktr_store::SCHEMA_VERSION
        })
    ));
}

#[test]
fn a_version_1_file_is_migrated_to_the_current_schema_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    drop(Store::open(&path).unwrap());
    // Make it a version 1 file, as the first release wrote it.
    let conn = duckdb::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE publisher_gap; DELETE FROM cdktr_schema_version WHERE version > 1;
         ALTER TABLE logstore DROP COLUMN publisher_id; ALTER TABLE logstore DROP COLUMN seq;
         INSERT INTO publisher_watermark VALUES ('old', 7, 0);
         INSERT INTO logstore VALUES ('w', 'W', 'i', 't', 'ti', 5, 'INFO', 'an old line');",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), cdktr_store::SCHEMA_VERSION);
    assert_eq!(store.publisher_watermark("old").unwrap(), 7, "rows kept");
    // An old line has no identity; a new one has its own.
    let new = LogMessage {
        timestamp_ms: 6,
        payload: "a new line".into(),
        ..message(0)
    };
    persist(&store, PersisterConfig::default(), &[new]);
    let page = store
        .query_page(
            &LogQuery {
                start_ms: Some(0),
                ..LogQuery::default()
            },
            usize::MAX,
        )
        .unwrap();
    let payloads: Vec<&str> = page.lines.iter().map(|l| l.payload.as_str()).collect();
    assert_eq!(payloads, ["an old line", "a new line"]);
    assert_eq!(
        page.origins,
        [
            None,
            Some(cdktr_store::Origin {
                publisher_id: "p".into(),
                seq: 1
            })
        ]
    );
    drop(store);
    let conn = duckdb::Connection::open(&path).unwrap();
    let gaps: i64 = conn
        .query_row("SELECT count(*) FROM publisher_gap", [], |r| r.get(0))
        .unwrap();
    assert_eq!(gaps, 0);
}

#[test]
fn unusable_paths_are_typed_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    assert!(matches!(&err, Error::Open { path, .. } if path == dir.path()), "{err}");
    assert!(err.to_string().contains("directory"), "{err}");

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 100_000]).unwrap();
    let err = Store::open(&junk).err().unwrap();
    assert!(matches!(&err, Error::Open { path, .. } if path == &junk), "{err}");

    let under_file = junk.join("x.db");
    assert!(Store::open(&under_file).is_err());
}

#[test]
fn a_database_locked_by_another_process_is_a_typed_error() {
    if let Ok(path) = std::env::var("CDKTR_TEST_HOLD_DB") {
        // Child side: hold the database open until stdin closes.
        let _store = Store::open(path).unwrap();
        println!("holding");
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_database_locked_by_another_process_is_a_typed_error",
            "--nocapture",
        ])
        .env("CDKTR_TEST_HOLD_DB", &path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("holding") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "child exited early"
        );
    }
    let err = Store::open(&path).expect_err("a locked file must not open");
    assert!(matches!(&err, Error::Open { path: p, .. } if p == &path), "{err}");
    assert!(err.to_string().to_lowercase().contains("lock"), "{err}");
    drop(child.stdin.take());
    child.wait().unwrap();
    // Once the other process is gone, the file opens.
    Store::open(&path).unwrap();
}

#[test]
fn messages_round_trip_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut specials = vec![
        LogMessage {
            payload: String::new(),
            ..message(0)
        },
        LogMessage {
            payload: "x".repeat(1 << 20),
            ..message(1)
        },
        LogMessage {
            payload: "日本語 🚀 'quoted' \"double\" \\ back".into(),
            workflow_name: "Ünïcødé".into(),
            ..message(2)
        },
    ];
    specials.extend((3..500).map(message));
    for store in [
        Store::open_in_memory().unwrap(),
        Store::open(dir.path().join("rt.db")).unwrap(),
    ] {
        let stats = persist(&store, PersisterConfig::default(), &specials);
        assert_eq!(stats.persisted, specials.len() as u64);
        let mut got = store.query_logs(&all_of(LogQuery::default())).unwrap();
        let mut want = specials.clone();
        want.sort_by_key(|m| m.timestamp_ms);
        got.sort_by(|a, b| (a.timestamp_ms, &a.payload).cmp(&(b.timestamp_ms, &b.payload)));
        want.sort_by(|a, b| (a.timestamp_ms, &a.payload).cmp(&(b.timestamp_ms, &b.payload)));
        assert_eq!(got, want);
    }
}

/// The reference: filter, order and limit in plain Rust.
fn brute_force(data: &[LogMessage], q: &LogQuery) -> Vec<LogMessage> {
    let start = q.start_ms.unwrap();
    let mut rows: Vec<&LogMessage> = data
        .iter()
        .filter(|m| m.timestamp_ms >= start && q.end_ms.is_none_or(|e| m.timestamp_ms < e))
        .filter(|m| q.workflow_id.as_ref().is_none_or(|v| &m.workflow_id == v))
        .filter(|m| {
            q.workflow_instance_id
                .as_ref()
                .is_none_or(|v| &m.workflow_instance_id == v)
        })
        .filter(|m| q.task_name.as_ref().is_none_or(|v| &m.task_name == v))
        .filter(|m| q.task_instance_id.as_ref().is_none_or(|v| &m.task_instance_id == v))
        .filter(|m| match &q.levels {
            None => true,
            Some(LevelFilter::AtLeast(l)) => m.level >= *l,
            Some(LevelFilter::AnyOf(set)) => set.contains(&m.level),
        })
        .filter(|m| {
            q.payload_contains
                .as_ref()
                .is_none_or(|v| m.payload.contains(v.as_str()))
        })
        .collect();
    rows.sort_by_key(|m| m.timestamp_ms); // stable: insertion order breaks ties
    if q.order == Order::NewestFirst {
        rows.reverse();
    }
    rows.into_iter().take(q.limit.unwrap()).cloned().collect()
}

#[test]
fn every_filter_alone_and_combined_matches_a_brute_force_filter() {
    let data: Vec<LogMessage> = (0..5000).map(message).collect();
    let store = Store::open_in_memory().unwrap();
    // Small batches so that the data spans many appends.
    persist(
        &store,
        PersisterConfig {
            batch_size: 700,
            ..Default::default()
        },
        &data,
    );

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut checked = 0;
    for round in 0..400u64 {
        // Each filter on its own for the first rounds, then random mixes.
        let pick = |bit: u64, r: &mut dyn FnMut(u64) -> u64| {
            if round < 64 {
                round & (1 << bit) != 0 && round.count_ones() == 1
            } else {
                r(2) == 0
            }
        };
        let mut q = LogQuery {
            start_ms: Some(i64::MIN),
            limit: Some(usize::MAX >> 1),
            ..Default::default()
        };
        if pick(0, &mut rand) {
            q.start_ms = Some(T0 + rand(100_000) as i64);
        }
        if pick(1, &mut rand) {
            q.end_ms = Some(q.start_ms.unwrap().max(T0) + rand(100_000) as i64);
        }
        if pick(2, &mut rand) {
            q.workflow_id = Some(format!("wf{}", rand(4)));
        }
        if pick(3, &mut rand) {
            q.workflow_instance_id = Some(format!("wf{}-{}", rand(3), rand(8)));
        }
        if pick(4, &mut rand) {
            q.task_name = Some(format!("task{}", rand(6)));
        }
        if pick(5, &mut rand) {
            q.task_instance_id = Some(format!("task{}-{}", rand(5), rand(12)));
        }
        if pick(6, &mut rand) {
            q.levels = Some(if rand(2) == 0 {
                LevelFilter::AtLeast(Level::ALL[rand(5) as usize])
            } else {
                LevelFilter::AnyOf(
                    (0..5)
                        .filter(|_| rand(2) == 0)
                        .map(|i| Level::ALL[i])
                        .chain([Level::Warn])
                        .collect(),
                )
            });
        }
        if pick(7, &mut rand) {
            q.payload_contains = Some(["alpha", "line 1", "a", "ZZZ", "2 g"][rand(5) as usize].to_string());
        }
        if round % 3 == 0 {
            q.limit = Some(1 + rand(50) as usize);
        }
        if round % 2 == 1 {
            q.order = Order::NewestFirst;
        }
        let got = store.query_logs(&q).unwrap();
        let want = brute_force(&data, &q);
        assert_eq!(got, want, "query {q:?}");
        checked += got.len();
    }
    assert!(
        checked > 10_000,
        "the queries matched too little data to prove much: {checked}"
    );
}

#[test]
fn hostile_strings_in_every_filter_are_plain_data() {
    let hostile = [
        "'",
        "''",
        "\"",
        "'; DROP TABLE logstore; --",
        "%",
        "_",
        "\\",
        "a\0b",
        "🚀💥",
        "\u{202e}rtl",
    ];
    let big = "Q".repeat(100_000);
    let mut data: Vec<LogMessage> = (0..200).map(message).collect();
    for (i, h) in hostile.iter().copied().chain([big.as_str()]).enumerate() {
        data.push(LogMessage {
            workflow_id: h.into(),
            workflow_name: h.into(),
            workflow_instance_id: h.into(),
            task_name: h.into(),
            task_instance_id: h.into(),
            payload: format!("before {h} after"),
            timestamp_ms: T0 + i as i64,
            level: Level::Error,
        });
    }
    let store = Store::open_in_memory().unwrap();
    persist(&store, PersisterConfig::default(), &data);
    for h in hostile.iter().copied().chain([big.as_str()]) {
        let queries = [
            LogQuery {
                workflow_id: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                workflow_instance_id: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                task_name: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                task_instance_id: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                payload_contains: Some(h.into()),
                ..Default::default()
            },
        ];
        for q in queries {
            let q = all_of(q);
            assert_eq!(
                store.query_logs(&q).unwrap(),
                brute_force(&data, &q),
                "{:?}",
                &h[..h.len().min(20)]
            );
        }
    }
    assert_eq!(
        store.query_logs(&all_of(LogQuery::default())).unwrap().len(),
        data.len(),
        "the table survives"
    );
}

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
    let replaying = |seq: u64| Envelope {
        replays: true,
        ..env("r", seq, message(seq as usize))
    };
    // The bus keeps flowing: every send is taken, none waits for the database.
    for seq in 1..=1000 {
        tx.send_timeout(replaying(seq), WAIT).unwrap();
    }
    let wait = |what: &str, done: &dyn Fn(cdktr_store::PersisterStats) -> bool| {
        let end = Instant::now() + WAIT;
        while !done(persister.stats()) {
            assert!(Instant::now() < end, "{what}: {:?}", persister.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
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
    let replaying = |seq: u64| Envelope {
        replays: true,
        ..env("r", seq, message(seq as usize))
    };
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
fn status_history_is_recorded_and_read_back() {
    let store = Store::open_in_memory().unwrap();
    use RunStatus::*;
    store.record_workflow_status("etl", "etl-1", Pending, 100).unwrap();
    store.record_workflow_status("etl", "etl-1", Running, 110).unwrap();
    store
        .record_task_status("extract", "extract-1", "etl-1", Running, 110)
        .unwrap();
    store
        .record_task_status("extract", "extract-1", "etl-1", Completed, 150)
        .unwrap();
    store
        .record_task_status("load", "load-1", "etl-1", Running, 150)
        .unwrap();
    store
        .record_task_status("load", "load-1", "etl-1", Failed, 190)
        .unwrap();
    store.record_workflow_status("etl", "etl-1", Failed, 190).unwrap();
    store.record_workflow_status("etl", "etl-2", Running, 200).unwrap();
    store
        .record_workflow_status("report", "report-1", Running, 120)
        .unwrap();
    store
        .record_workflow_status("report", "report-1", Completed, 300)
        .unwrap();
    // Same timestamp twice: the later record wins.
    store.record_workflow_status("x", "x-1", Running, 50).unwrap();
    store.record_workflow_status("x", "x-1", Crashed, 50).unwrap();

    assert_eq!(store.latest_workflow_status("etl-1").unwrap(), Some((Failed, 190)));
    assert_eq!(store.latest_workflow_status("x-1").unwrap(), Some((Crashed, 50)));
    assert_eq!(store.latest_workflow_status("nope").unwrap(), None);

    let t = |task: Option<(&str, &str)>, status, timestamp_ms| StatusChange {
        task: task.map(|(a, b)| (a.to_string(), b.to_string())),
        status,
        timestamp_ms,
    };
    assert_eq!(
        store.timeline("etl-1").unwrap(),
        vec![
            t(None, Pending, 100),
            t(None, Running, 110),
            t(Some(("extract", "extract-1")), Running, 110),
            t(Some(("extract", "extract-1")), Completed, 150),
            t(Some(("load", "load-1")), Running, 150),
            t(None, Failed, 190),
            t(Some(("load", "load-1")), Failed, 190),
        ]
    );

    let ids = |runs: Vec<cdktr_store::WorkflowRun>| {
        runs.into_iter()
            .map(|r| (r.workflow_instance_id, r.status))
            .collect::<Vec<_>>()
    };
    let recent = store
        .recent_workflows(&RecentWorkflows {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((recent[0].first_ms, recent[0].last_ms), (120, 300));
    assert_eq!(
        ids(recent),
        vec![
            ("report-1".into(), Completed),
            ("etl-2".into(), Running),
            ("etl-1".into(), Failed),
            ("x-1".into(), Crashed)
        ]
    );
    assert_eq!(
        ids(store
            .recent_workflows(&RecentWorkflows {
                limit: 2,
                ..Default::default()
            })
            .unwrap())
        .len(),
        2
    );
    assert_eq!(
        ids(store
            .recent_workflows(&RecentWorkflows {
                workflow_id: Some("etl".into()),
                ..Default::default()
            })
            .unwrap()),
        vec![("etl-2".into(), Running), ("etl-1".into(), Failed)]
    );
    assert_eq!(
        ids(store
            .recent_workflows(&RecentWorkflows {
                status: Some(Running),
                ..Default::default()
            })
            .unwrap()),
        vec![("etl-2".into(), Running)]
    );
    assert!(matches!(
        store.recent_workflows(&RecentWorkflows {
            limit: 0,
            ..Default::default()
        }),
        Err(Error::InvalidQuery(_))
    ));
    assert_eq!("crashed".parse::<RunStatus>().unwrap(), Crashed);
    assert!(matches!(
        "done".parse::<RunStatus>(),
        Err(cdktr_log::Error::UnknownStatus(_))
    ));
}

#[test]
fn pages_walk_every_row_once_in_both_orders_and_respect_the_byte_cap() {
    let store = Store::open_in_memory().unwrap();
    // Many rows share a timestamp, so the cursor must break ties.
    let data: Vec<LogMessage> = (0..600)
        .map(|i| LogMessage {
            timestamp_ms: T0 + (i as i64 / 10),
            payload: format!("{i:05}"),
            ..message(i)
        })
        .collect();
    persist(&store, PersisterConfig::default(), &data);
    for (order, page_size, max_bytes) in [
        (Order::OldestFirst, 250, usize::MAX),
        (Order::NewestFirst, 23, usize::MAX),
        (Order::OldestFirst, 1000, 2_000),
    ] {
        let mut q = all_of(LogQuery {
            order,
            ..LogQuery::default()
        });
        q.limit = Some(page_size);
        let (mut seen, mut pages) = (Vec::new(), 0);
        loop {
            let page = store.query_page(&q, max_bytes).unwrap();
            pages += 1;
            assert!(page.lines.len() <= page_size);
            seen.extend(page.lines.into_iter().map(|m| m.payload));
            match page.next {
                Some(c) => q.after = Some(c),
                None => break,
            }
            assert!(pages < 1_000, "pagination does not end");
        }
        let mut expected: Vec<String> = (0..600).map(|i| format!("{i:05}")).collect();
        if order == Order::NewestFirst {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order:?} pages of {page_size}, cap {max_bytes}");
        if max_bytes == 2_000 {
            // Each row carries about 40 bytes of text: ~50 rows a page, not 1000.
            assert!(pages > 8, "{pages} pages: the byte cap did not apply");
        }
    }
    // A cap smaller than any line still makes progress: one line a page.
    let mut q = all_of(LogQuery::default());
    for i in 0..3 {
        let page = store.query_page(&q, 1).unwrap();
        assert_eq!(page.lines.len(), 1);
        assert_eq!(page.lines[0].payload, format!("{i:05}"));
        q.after = page.next;
    }
    // A filtered query pages too, and its last page says there is no more.
    let q = LogQuery {
        workflow_id: Some("wf1".into()),
        limit: Some(10_000),
        ..all_of(LogQuery::default())
    };
    let page = store.query_page(&q, usize::MAX).unwrap();
    assert_eq!(page.lines.len(), data.iter().filter(|m| m.workflow_id == "wf1").count());
    assert_eq!(page.next, None);
}

#[test]
fn crashed_rows_are_written_once_for_unfinished_runs_only() {
    let store = Store::open_in_memory().unwrap();
    store
        .record_workflow_status("etl", "etl-1", RunStatus::Running, 100)
        .unwrap();
    store
        .record_task_status("a", "a-1", "etl-1", RunStatus::Completed, 150)
        .unwrap();
    store
        .record_task_status("b", "b-1", "etl-1", RunStatus::Running, 160)
        .unwrap();
    store
        .record_workflow_status("etl", "etl-2", RunStatus::Completed, 100)
        .unwrap();
    store
        .record_workflow_status("etl", "etl-3", RunStatus::Waiting, 100)
        .unwrap();
    // An agent clock ahead of the principal's.
    store
        .record_workflow_status("etl", "etl-4", RunStatus::Running, 10_000)
        .unwrap();
    assert_eq!(store.unfinished_workflows().unwrap(), ["etl-1", "etl-3", "etl-4"]);

    assert!(store.mark_crashed("etl-1", 1_000).unwrap());
    assert!(!store.mark_crashed("etl-1", 2_000).unwrap(), "already crashed");
    assert!(!store.mark_crashed("etl-2", 1_000).unwrap(), "already completed");
    assert!(!store.mark_crashed("nope", 1_000).unwrap(), "unknown");
    assert!(store.mark_crashed("etl-4", 1_000).unwrap());
    assert_eq!(
        store.latest_workflow_status("etl-1").unwrap(),
        Some((RunStatus::Crashed, 1_000))
    );
    assert_eq!(
        store.latest_workflow_status("etl-4").unwrap(),
        Some((RunStatus::Crashed, 10_001))
    );
    let crashed: Vec<_> = store
        .timeline("etl-1")
        .unwrap()
        .into_iter()
        .filter(|c| c.status == RunStatus::Crashed)
        .collect();
    assert_eq!(
        crashed,
        [
            StatusChange {
                task: None,
                status: RunStatus::Crashed,
                timestamp_ms: 1_000
            },
            StatusChange {
                task: Some(("b".into(), "b-1".into())),
                status: RunStatus::Crashed,
                timestamp_ms: 1_000
            },
        ]
    );
    assert_eq!(store.unfinished_workflows().unwrap(), ["etl-3"]);
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

#[test]
fn memory_limit_and_threads_take_sizes_and_refuse_anything_else() {
    let store = Store::open_in_memory().unwrap();
    for ok in ["128MB", "1GiB", " 512 KB", "1.5GB"] {
        store.set_memory_limit(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    for bad in ["", "lots", "128", "1MB'; DROP TABLE logstore; --", "-5MB"] {
        assert!(
            matches!(store.set_memory_limit(bad), Err(Error::InvalidQuery(_))),
            "{bad:?} accepted"
        );
    }
    store.set_threads(1).unwrap();
    assert_eq!(store.schema_version().unwrap(), cdktr_store::SCHEMA_VERSION);
}

#[test]
fn small_pages_of_a_snapshot_newest_first_are_answered() {
    // DuckDB 1.2 fails ORDER BY ... LIMIT <= 50 with a rowid filter unless
    // late materialization is off (an internal error, not an empty page).
    let store = Store::open_in_memory().unwrap();
    let lines: Vec<LogMessage> = (0..40)
        .map(|i| LogMessage {
            workflow_instance_id: "run".into(),
            task_name: if i % 2 == 0 { "load" } else { "extract" }.into(),
            timestamp_ms: T0 + i as i64,
            payload: format!("{i}"),
            ..message(i)
        })
        .collect();
    persist(&store, PersisterConfig::default(), &lines);
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let q = LogQuery {
            start_ms: Some(i64::MIN),
            workflow_instance_id: Some("run".into()),
            task_name: Some("load".into()),
            limit: Some(3),
            order,
            as_of: Some(39),
            ..LogQuery::default()
        };
        let page = store.query_page(&q, 8 << 20).unwrap();
        let payloads: Vec<&str> = page.lines.iter().map(|l| l.payload.as_str()).collect();
        let want = match order {
            Order::NewestFirst => ["38", "36", "34"],
            Order::OldestFirst => ["0", "2", "4"],
        };
        assert_eq!(payloads, want, "{order:?}");
        // Lines stored after the snapshot are not in it; those after it are.
        let later = store
            .query_page(
                &LogQuery {
                    as_of: Some(9),
                    stored_after: Some(3),
                    limit: Some(50),
                    ..q
                },
                8 << 20,
            )
            .unwrap();
        let mut rows: Vec<String> = later.lines.into_iter().map(|l| l.payload).collect();
        rows.sort_by_key(|p| p.parse::<u32>().unwrap());
        assert_eq!(rows, ["4", "6", "8"], "{order:?}");
    }
}
