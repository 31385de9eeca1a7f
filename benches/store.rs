//! The store's costs, each next to its ceiling on the same machine.
//!
//! `cargo bench --bench store`
//!
//! - `ingest`: lines handed to a `Persister` (as the log manager does) until
//!   they are in DuckDB, in memory and in a file; the ceilings are DuckDB's
//!   Appender writing the same rows (all of `logstore`'s columns) in one
//!   transaction, row by row and as Arrow record batches; and the same rows
//!   in transactions of one batch each, with DuckDB's default row groups and
//!   with the store's.
//! - `query`: QueryLogs on a 10,000,000-row file (one instance; one
//!   workflow's last hour; all ERROR lines; a payload substring).
//! - `status`: status queries on 1,000,000 status rows.
//!
//! The 10,000,000-row file is generated once (about a minute) and kept in
//! the target directory (`cdktr-bench/store-10m.db`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cdktr_logs::store::{LevelFilter, LogQuery, Persister, PersisterConfig, RecentWorkflows, Store, ROW_GROUP_SIZE};
use cdktr_logs::{Envelope, Level, Line, LogMessage};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;

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

fn ingest(c: &mut Criterion) {
    const N: usize = 200_000;
    let lines: Vec<LogMessage> = (0..N).map(line).collect();
    // As the log manager hands them over.
    let received: Vec<Line> = lines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Line::from(Envelope {
                publisher_id: "bench".into(),
                seq: i as u64 + 1,
                replays: true,
                message: m.clone(),
            })
        })
        .collect();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10).throughput(Throughput::Elements(N as u64));
    for (on_disk, threads) in [(false, None), (true, None), (true, Some(1))] {
        let place = if on_disk { "file" } else { "memory" };
        let name = match threads {
            None => format!("persister, {place}"),
            Some(n) => format!("persister, {place}, {n} thread"),
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let store = if on_disk {
                        Store::open(dir.path().join("ingest.db")).unwrap()
                    } else {
                        Store::open_in_memory().unwrap()
                    };
                    if let Some(n) = threads {
                        store.set_threads(n).unwrap();
                    }
                    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
                    let tx = persister.sender();
                    let start = Instant::now();
                    for line in &received {
                        tx.send(line.clone()).unwrap();
                    }
                    persister.flush_now(Duration::from_secs(600)).unwrap();
                    total += start.elapsed();
                    assert_eq!(persister.shutdown().unwrap().persisted, N as u64);
                }
                total
            })
        });
        if threads.is_some() {
            continue;
        }
        for arrow in [false, true] {
            let how = if arrow { "arrow batches" } else { "row by row" };
            g.bench_function(format!("ceiling: appender, {how}, {place}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().unwrap();
                        let mut conn = ceiling_connection(on_disk, &dir);
                        let start = Instant::now();
                        let tx = conn.transaction().unwrap();
                        {
                            let mut app = tx.appender("logstore").unwrap();
                            if arrow {
                                // A vector (2,048 rows) per call: faster than
                                // one batch of every row (548k against 621k
                                // rows/s on a file, session 10).
                                for chunk in lines.chunks(2048) {
                                    app.append_record_batch(record_batch(chunk)).unwrap();
                                }
                            } else {
                                for (i, m) in lines.iter().enumerate() {
                                    app.append_row(duckdb::params![
                                        m.workflow_id,
                                        m.workflow_name,
                                        m.workflow_instance_id,
                                        m.task_name,
                                        m.task_instance_id,
                                        m.timestamp_ms,
                                        m.level.as_str(),
                                        m.payload,
                                        1u32,
                                        i as u64 + 1,
                                        i as u64,
                                    ])
                                    .unwrap();
                                }
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
    }
    // What the store's row groups are for: transactions of one batch
    // each, on a file opened as DuckDB opens it by default (122,880-row
    // groups: each batch goes through the write-ahead log) and attached as
    // the store attaches it (each batch is whole row groups).
    // And with one DuckDB thread, the principal's default on 2 cores
    // (`default_db_threads`): with a worker thread, the writing thread
    // spins while the worker runs the write.
    let batch = PersisterConfig::default().batch_size;
    for (row_groups, threads) in [
        (None, None),
        (Some(ROW_GROUP_SIZE), None),
        (Some(ROW_GROUP_SIZE), Some(1)),
    ] {
        let mut how = match row_groups {
            None => "default row groups".to_string(),
            Some(n) => format!("row groups of {n}"),
        };
        if let Some(n) = threads {
            how.push_str(&format!(", {n} thread"));
        }
        g.bench_function(format!("{batch}-row transactions, {how}, file"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("batches.db");
                    drop(Store::open(&path).unwrap());
                    let mut conn = match row_groups {
                        None => duckdb::Connection::open(&path).unwrap(),
                        Some(n) => {
                            let conn = duckdb::Connection::open_in_memory().unwrap();
                            let path = path.display();
                            conn.execute_batch(&format!("ATTACH '{path}' AS c (ROW_GROUP_SIZE {n}); USE c;"))
                                .unwrap();
                            conn
                        }
                    };
                    if let Some(n) = threads {
                        conn.execute_batch(&format!("SET threads = {n}")).unwrap();
                    }
                    let start = Instant::now();
                    for batch in lines.chunks(batch) {
                        let tx = conn.transaction().unwrap();
                        {
                            let mut app = tx.appender("logstore").unwrap();
                            for chunk in batch.chunks(2048) {
                                app.append_record_batch(record_batch(chunk)).unwrap();
                            }
                            app.flush().unwrap();
                        }
                        tx.commit().unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// A bare DuckDB connection to a `logstore` table as the store makes it.
fn ceiling_connection(on_disk: bool, dir: &tempfile::TempDir) -> duckdb::Connection {
    if on_disk {
        let path = dir.path().join("ceiling.db");
        drop(Store::open(&path).unwrap());
        return duckdb::Connection::open(&path).unwrap();
    }
    let conn = duckdb::Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE logstore (workflow_id VARCHAR NOT NULL, workflow_name VARCHAR NOT NULL, \
         workflow_instance_id VARCHAR NOT NULL, task_name VARCHAR NOT NULL, task_instance_id VARCHAR NOT NULL, \
         timestamp_ms BIGINT NOT NULL, level VARCHAR NOT NULL, payload VARCHAR NOT NULL, \
         publisher_key UINTEGER, seq UBIGINT, line_id UBIGINT)",
    )
    .unwrap();
    conn
}

/// The lines as Arrow columns in the table's order, as the persister
/// appends them.
fn record_batch(lines: &[LogMessage]) -> duckdb::arrow::array::RecordBatch {
    use duckdb::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
    use std::sync::Arc;
    let text = |f: fn(&LogMessage) -> &str| Arc::new(StringArray::from_iter_values(lines.iter().map(f))) as ArrayRef;
    let n = lines.len() as u64;
    RecordBatch::try_from_iter([
        ("workflow_id", text(|m| &m.workflow_id)),
        ("workflow_name", text(|m| &m.workflow_name)),
        ("workflow_instance_id", text(|m| &m.workflow_instance_id)),
        ("task_name", text(|m| &m.task_name)),
        ("task_instance_id", text(|m| &m.task_instance_id)),
        (
            "timestamp_ms",
            Arc::new(Int64Array::from_iter_values(lines.iter().map(|m| m.timestamp_ms))) as ArrayRef,
        ),
        ("level", text(|m| m.level.as_str())),
        ("payload", text(|m| &m.payload)),
        (
            "publisher_key",
            Arc::new(UInt32Array::from_iter_values((0..n).map(|_| 1))) as ArrayRef,
        ),
        ("seq", Arc::new(UInt64Array::from_iter_values(1..=n)) as ArrayRef),
        ("line_id", Arc::new(UInt64Array::from_iter_values(0..n)) as ArrayRef),
    ])
    .unwrap()
}

/// The 10M-row file, made once.
fn big_store() -> Store {
    // Instances run one after another, 1,000 lines each; 1 line in 100 is
    // an ERROR; 1 in 1,000 mentions a timeout.
    let lines = format!(
        "INSERT INTO logstore SELECT \
             'wf-' || ((i // 1000) % {WORKFLOWS}), 'Bench workflow', \
             'wf-' || ((i // 1000) % {WORKFLOWS}) || '-inst-' || (i // 1000), \
             'task-' || (i % 7), 'task-' || (i % 7) || '-' || (i // 1000), \
             {T0} + i * {STEP_MS}, \
             CASE WHEN i % 100 = 0 THEN 'ERROR' WHEN i % 10 = 0 THEN 'WARN' ELSE 'INFO' END, \
             CASE WHEN i % 1000 = 500 THEN 'request timeout after 30 s on batch ' || i \
                  ELSE 'processed batch ' || i || ' with ' || (i % 977) || ' rows in ' || (i % 89) || ' ms' END, \
             NULL, NULL, i::UBIGINT \
         FROM range({ROWS}) t(i)"
    );
    let statuses = format!("INSERT INTO workflow_run_status SELECT 'wf-' || (i % {WORKFLOWS}), 'st-' || i, s.status::run_status, {T0} + i * 1000 + s.n \
         FROM range({STATUS_INSTANCES}) t(i), (VALUES (0, 'PENDING'), (1, 'RUNNING'), (2, 'COMPLETED')) s(n, status); \
         INSERT INTO task_run_status SELECT 'task-' || j, 'st-' || i || '-' || j, 'st-' || i, s.status::run_status, {T0} + i * 1000 + 10 * j + s.n \
         FROM range({STATUS_INSTANCES}) t(i), range(2) u(j), (VALUES (0, 'RUNNING'), (1, 'COMPLETED')) s(n, status); \
         CHECKPOINT;");
    Store::open(common::generated_file(
        "store-10m.db",
        ROWS as u64,
        &format!("{lines}; {statuses}"),
    ))
    .unwrap()
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
