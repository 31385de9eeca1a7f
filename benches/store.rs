//! The store's costs, each next to its ceiling on the same machine.
//!
//! `cargo bench --bench store`
//!
//! - `ingest`: lines handed to a `Persister` (as the log manager does) until
//!   they are in DuckDB, in memory and in a file; the ceiling is the DuckDB
//!   Appender writing the same rows, row by row, in one transaction.
//! - `query`: QueryLogs on a 10,000,000-row file (one instance; one
//!   workflow's last hour; all ERROR lines; a payload substring).
//! - `status`: status queries on 1,000,000 status rows.
//!
//! The 10,000,000-row file is generated once (about a minute) and kept in
//! the target directory (`cdktr-bench/store-10m.db`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cdktr_logs::store::{LevelFilter, LogQuery, Persister, PersisterConfig, RecentWorkflows, Store};
use cdktr_logs::{Envelope, Level, LogMessage};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROWS: i64 = 10_000_000;
const INSTANCES: i64 = 10_000;
const WORKFLOWS: i64 = 100;
const T0: i64 = 1_795_000_000_000;
/// 250 ms between rows: 10M rows span about 29 days.
const STEP_MS: i64 = 250;
const STATUS_INSTANCES: i64 = 125_000;

fn line(i: usize) -> LogMessage {
    LogMessage {
        workflow_id: format!("wf-{}", i % 100),
        workflow_name: "Bench".into(),
        workflow_instance_id: format!("wf-{}-{}", i % 100, i / 1000),
        task_name: "load".into(),
        task_instance_id: format!("load-{}", i / 1000),
        timestamp_ms: T0 + i as i64,
        level: if i.is_multiple_of(100) {
            Level::Error
        } else {
            Level::Info
        },
        payload: format!("extracted {i} rows from orders; next batch starts at id 7,340,112 (1.23 s)"),
    }
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("cdktr-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ingest(c: &mut Criterion) {
    const N: usize = 200_000;
    let lines: Vec<LogMessage> = (0..N).map(line).collect();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10).throughput(Throughput::Elements(N as u64));
    for on_disk in [false, true] {
        let place = if on_disk { "file" } else { "memory" };
        g.bench_function(format!("persister, {place}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let store = if on_disk {
                        Store::open(dir.path().join("ingest.db")).unwrap()
                    } else {
                        Store::open_in_memory().unwrap()
                    };
                    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
                    let tx = persister.sender();
                    let start = Instant::now();
                    for (i, m) in lines.iter().enumerate() {
                        let env = Envelope {
                            publisher_id: "bench".into(),
                            seq: i as u64 + 1,
                            replays: true,
                            message: m.clone(),
                        };
                        tx.send(env).unwrap();
                    }
                    persister.flush_now(Duration::from_secs(600)).unwrap();
                    total += start.elapsed();
                    assert_eq!(persister.shutdown().unwrap().persisted, N as u64);
                }
                total
            })
        });
        g.bench_function(format!("ceiling: appender, {place}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("ceiling.db");
                    drop(Store::open(&path).unwrap());
                    let mut conn = if on_disk {
                        duckdb::Connection::open(&path).unwrap()
                    } else {
                        let conn = duckdb::Connection::open_in_memory().unwrap();
                        conn.execute_batch(
                            "CREATE TABLE logstore (workflow_id VARCHAR, workflow_name VARCHAR, \
                             workflow_instance_id VARCHAR, task_name VARCHAR, task_instance_id VARCHAR, \
                             timestamp_ms BIGINT, level VARCHAR, payload VARCHAR)",
                        )
                        .unwrap();
                        conn
                    };
                    let start = Instant::now();
                    let tx = conn.transaction().unwrap();
                    {
                        let mut app = tx.appender("logstore").unwrap();
                        for m in &lines {
                            app.append_row(duckdb::params![
                                m.workflow_id,
                                m.workflow_name,
                                m.workflow_instance_id,
                                m.task_name,
                                m.task_instance_id,
                                m.timestamp_ms,
                                m.level.as_str(),
                                m.payload,
                            ])
                            .unwrap();
                        }
                        app.flush().unwrap();
                    }
                    tx.commit().unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// The 10M-row file, made once.
fn big_store() -> Store {
    let path = bench_dir().join("store-10m.db");
    if let Ok(store) = Store::open(&path) {
        let all = LogQuery {
            start_ms: Some(0),
            ..LogQuery::default()
        };
        if store.count_logs(&all).unwrap_or(0) == ROWS as u64 {
            return store;
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("db.wal"));
    eprintln!("generating {ROWS} rows in {} (once)", path.display());
    drop(Store::open(&path).unwrap());
    let conn = duckdb::Connection::open(&path).unwrap();
    // Instances run one after another, 1,000 lines each; 1 line in 100 is
    // an ERROR; 1 in 1,000 mentions a timeout.
    conn.execute_batch(&format!(
        "INSERT INTO logstore SELECT \
             'wf-' || ((i // 1000) % {WORKFLOWS}), 'Bench workflow', \
             'wf-' || ((i // 1000) % {WORKFLOWS}) || '-inst-' || (i // 1000), \
             'task-' || (i % 7), 'task-' || (i % 7) || '-' || (i // 1000), \
             {T0} + i * {STEP_MS}, \
             CASE WHEN i % 100 = 0 THEN 'ERROR' WHEN i % 10 = 0 THEN 'WARN' ELSE 'INFO' END, \
             CASE WHEN i % 1000 = 500 THEN 'request timeout after 30 s on batch ' || i \
                  ELSE 'processed batch ' || i || ' with ' || (i % 977) || ' rows in ' || (i % 89) || ' ms' END \
         FROM range({ROWS}) t(i)"
    ))
    .unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO workflow_run_status SELECT 'wf-' || (i % {WORKFLOWS}), 'st-' || i, s.status::run_status, {T0} + i * 1000 + s.n \
         FROM range({STATUS_INSTANCES}) t(i), (VALUES (0, 'PENDING'), (1, 'RUNNING'), (2, 'COMPLETED')) s(n, status); \
         INSERT INTO task_run_status SELECT 'task-' || j, 'st-' || i || '-' || j, 'st-' || i, s.status::run_status, {T0} + i * 1000 + 10 * j + s.n \
         FROM range({STATUS_INSTANCES}) t(i), range(2) u(j), (VALUES (0, 'RUNNING'), (1, 'COMPLETED')) s(n, status); \
         CHECKPOINT;"
    ))
    .unwrap();
    drop(conn);
    Store::open(&path).unwrap()
}

fn query(c: &mut Criterion) {
    let store = big_store();
    let last_ms = T0 + (ROWS - 1) * STEP_MS;
    let everything = |q: LogQuery| LogQuery { start_ms: Some(0), ..q };
    let cases = [
        (
            "one instance (1,000 lines)",
            everything(LogQuery {
                workflow_instance_id: Some(format!("wf-{}-inst-{}", (INSTANCES / 2) % WORKFLOWS, INSTANCES / 2)),
                ..LogQuery::default()
            }),
            1000,
        ),
        (
            "one workflow, last hour",
            LogQuery {
                start_ms: Some(last_ms - 3_600_000),
                workflow_id: Some("wf-90".into()),
                ..LogQuery::default()
            },
            0,
        ),
        (
            "all ERROR lines (first 1,000)",
            everything(LogQuery {
                levels: Some(LevelFilter::AtLeast(Level::Error)),
                ..LogQuery::default()
            }),
            1000,
        ),
        (
            "payload substring (first 1,000)",
            everything(LogQuery {
                payload_contains: Some("timeout".into()),
                ..LogQuery::default()
            }),
            1000,
        ),
    ];
    let mut g = c.benchmark_group("query 10M rows");
    g.sample_size(20);
    for (name, q, expect) in cases {
        let n = store.query_logs(&q).unwrap().len();
        assert!(n > 0 && (expect == 0 || n == expect), "{name}: {n} rows");
        g.bench_function(name, |b| b.iter(|| store.query_logs(black_box(&q)).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("status 1M rows");
    let instance = format!("st-{}", STATUS_INSTANCES / 2);
    assert_eq!(store.timeline(&instance).unwrap().len(), 7);
    g.bench_function("timeline of one instance", |b| {
        b.iter(|| store.timeline(black_box(&instance)).unwrap())
    });
    g.bench_function("latest status of one instance", |b| {
        b.iter(|| store.latest_workflow_status(black_box(&instance)).unwrap())
    });
    g.bench_function("20 most recent instances", |b| {
        b.iter(|| store.recent_workflows(black_box(&RecentWorkflows::default())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, ingest, query);
criterion_main!(benches);
