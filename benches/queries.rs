//! QueryLogs through the principal's API next to the same statement run
//! straight on DuckDB: what the API adds to a query's own cost.
//!
//! `cargo bench --bench queries`
//!
//! The data is 10,000,000 lines over one day, written as real ingestion
//! writes them: 500 workflow instances run at once (each of 1,000 lines, so
//! an instance's lines are spread over 500,000 rows), 100 workflows, 8
//! publishers, 1 line in 100 an ERROR, 1 in 1,000 mentioning a timeout. It
//! is generated once (about a minute) into the target directory
//! (`cdktr-bench/interleaved-10m.db`).
//!
//! For each query, `sql` is what a user would type into DuckDB for the same
//! rows (same columns, order and limit; the result read as Arrow batches),
//! on a connection with the principal's memory limit; `api` is
//! `ApiClient::query_logs` against a principal on the same file: the
//! request, the freshness check, the query, the page's encoding and the
//! client's decoding; `store` is `Store::query_page`, the page with owned
//! lines an embedder gets; `server` is the principal's own work (the query,
//! its rows read in place with `Store::read_page`, the reply's bytes);
//! `decode` is the client reading the reply; `api, maps` is `api` with the
//! reply's lines as maps (a client that names no layout); `api, in place`
//! is `api` with the page read where it arrived (`ApiClient::read_logs`);
//! `api, kept` is `api` with the page kept in its reply
//! (`ApiClient::reply_page`).
//! The ratio
//! `api / sql` is the figure (`docs/performance.md`, "Queries at the cost
//! of their SQL").
//!
//! `CDKTR_BENCH_ALTERNATE=300 cargo bench --bench queries` measures the
//! same instead in 300 rounds that run each of them once, in turn (the
//! SQL on a copy of the file), and prints their medians: criterion times
//! one after the other, minutes apart, and this VM's speed moves by up to
//! 40% within the hour, so its ratios moved as much as what they measured.

use std::hint::black_box;
use std::path::PathBuf;

use cdktr_logs::api::{Layout, Request, Response, MAX_PAGE_BYTES};
use cdktr_logs::principal::Principal;
use cdktr_logs::store::{LevelFilter, Location, LogQuery};
use cdktr_logs::{ApiClient, ApiConfig, BusConfig, Level};
use criterion::{criterion_group, Criterion};

mod common;

const ROWS: i64 = 10_000_000;
/// Instances running at once.
const CONCURRENT: i64 = 500;
const LINES_PER_INSTANCE: i64 = 1_000;
const WORKFLOWS: i64 = 100;
const PUBLISHERS: i64 = 8;
const T0: i64 = 1_795_000_000_000;
/// One day in 10M lines: 8.64 ms apart.
const SPAN_MS: i64 = 86_400_000;
const MEMORY_LIMIT: &str = cdktr_logs::principal::DEFAULT_FILE_MEMORY_LIMIT;

/// The file, made once.
fn make_file() -> PathBuf {
    // Row i belongs to instance slot i % CONCURRENT of generation
    // i / (CONCURRENT * LINES_PER_INSTANCE).
    let generation = CONCURRENT * LINES_PER_INSTANCE;
    let sql = format!(
        "INSERT INTO publisher SELECT k, 'agent-' || k FROM range(1, {PUBLISHERS} + 1) t(k);
         INSERT INTO logstore SELECT
             'wf-' || (inst % {WORKFLOWS}), 'Bench workflow',
             'wf-' || (inst % {WORKFLOWS}) || '-inst-' || inst,
             'task-' || (line % 7), 'task-' || (line % 7) || '-' || inst,
             {T0} + i * {SPAN_MS} // {ROWS},
             CASE WHEN i % 100 = 0 THEN 'ERROR' WHEN i % 10 = 0 THEN 'WARN' ELSE 'INFO' END,
             CASE WHEN i % 1000 = 500 THEN 'request timeout after 30 s on batch ' || i
                  ELSE 'processed batch ' || i || ' with ' || (i % 977) || ' rows in ' || (i % 89) || ' ms' END,
             (i % {PUBLISHERS} + 1)::UINTEGER, (i // {PUBLISHERS} + 1)::UBIGINT, i::UBIGINT
         FROM (SELECT i, (i // {generation}) * {CONCURRENT} + i % {CONCURRENT} AS inst,
                      (i % {generation}) // {CONCURRENT} AS line
               FROM range({ROWS}) t(i));
         CHECKPOINT;"
    );
    common::generated_file("interleaved-10m.db", ROWS as u64, &sql)
}

const COLUMNS: &str =
    "workflow_id, workflow_name, workflow_instance_id, task_name, task_instance_id, timestamp_ms, level, payload";

/// Each case: its name, the query, and the statement a user would write.
fn cases() -> Vec<(&'static str, LogQuery, String)> {
    let everything = |q: LogQuery| LogQuery { start_ms: Some(0), ..q };
    // An instance of the middle generation, in a middle slot.
    let inst = ROWS / (CONCURRENT * LINES_PER_INSTANCE) / 2 * CONCURRENT + CONCURRENT / 2;
    let instance = format!("wf-{}-inst-{inst}", inst % WORKFLOWS);
    let last_hour = T0 + SPAN_MS - 3_600_000;
    let sql = |filter: &str| {
        format!("SELECT {COLUMNS} FROM logstore WHERE {filter} ORDER BY timestamp_ms, line_id LIMIT 1000")
    };
    vec![
        (
            "one instance",
            everything(LogQuery {
                workflow_instance_id: Some(instance.clone()),
                ..LogQuery::default()
            }),
            sql(&format!("workflow_instance_id = '{instance}'")),
        ),
        (
            "one workflow, last hour",
            LogQuery {
                start_ms: Some(last_hour),
                workflow_id: Some("wf-42".into()),
                ..LogQuery::default()
            },
            sql(&format!("timestamp_ms >= {last_hour} AND workflow_id = 'wf-42'")),
        ),
        (
            "errors",
            everything(LogQuery {
                levels: Some(LevelFilter::AtLeast(Level::Error)),
                ..LogQuery::default()
            }),
            sql("level = 'ERROR'"),
        ),
        (
            "substring",
            everything(LogQuery {
                payload_contains: Some("timeout".into()),
                ..LogQuery::default()
            }),
            sql("contains(payload, 'timeout')"),
        ),
    ]
}

fn api_vs_sql(c: &mut Criterion) {
    let path = make_file();
    let mut g = c.benchmark_group("api vs sql, 10M interleaved rows");
    g.sample_size(20);
    // Each case's figures back to back, so that a machine whose speed
    // drifts (a shared VM) moves them together. One database instance on
    // the file at a time: DuckDB does not share a file between instances
    // of one process.
    for (name, q, sql) in &cases() {
        {
            let conn = duckdb::Connection::open(&path).unwrap();
            conn.execute_batch(&format!("SET memory_limit = '{MEMORY_LIMIT}'"))
                .unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            let rows: usize = stmt.query_arrow([]).unwrap().map(|b| b.num_rows()).sum();
            assert_eq!(rows, 1000, "{name}: {sql}");
            g.bench_function(format!("{name}: sql"), |b| {
                b.iter(|| {
                    let batches: Vec<_> = stmt.query_arrow([]).unwrap().collect();
                    black_box(batches)
                })
            });
        }
        let principal = start_principal(&path);
        // The store's own query, without the API around it.
        let store = principal.store();
        let limited = LogQuery {
            limit: Some(1000),
            ..q.clone()
        };
        let page = store.query_page(&limited, MAX_PAGE_BYTES).unwrap();
        assert_eq!(page.lines.len(), 1000, "{name}");
        g.bench_function(format!("{name}: store"), |b| {
            b.iter(|| black_box(store.query_page(black_box(&limited), MAX_PAGE_BYTES).unwrap()))
        });
        // The principal's own work for the page: the query, its rows read
        // in place, the reply's bytes.
        g.bench_function(format!("{name}: server"), |b| {
            b.iter(|| {
                let page = store.read_page(black_box(&limited), MAX_PAGE_BYTES).unwrap();
                let lines: Vec<_> = page.lines().collect();
                black_box(Response::logs_bytes(&lines, page.next(), Layout::Arrays))
            })
        });
        // The client's part: reading the reply (as `ApiClient` asks for it).
        let reply = Response::logs_bytes(&page.lines_with_origins(), page.next, Layout::Arrays);
        g.bench_function(format!("{name}: decode"), |b| {
            b.iter(|| black_box(Response::from_bytes(black_box(&reply)).unwrap()))
        });
        let mut client = ApiClient::connect(&principal.api_config()).unwrap();
        assert_eq!(client.query_logs(q).unwrap().lines.len(), 1000, "{name}");
        g.bench_function(format!("{name}: api"), |b| {
            b.iter(|| black_box(client.query_logs(black_box(q)).unwrap()))
        });
        // The reply's lines as maps, as a client that does not name a
        // layout gets them (session 14's only layout).
        let maps = Request::QueryLogs {
            query: q.clone(),
            layout: Layout::Maps,
        };
        g.bench_function(format!("{name}: api, maps"), |b| {
            b.iter(|| black_box(client.call(black_box(&maps)).unwrap()))
        });
        // The same, the page read where it arrived.
        g.bench_function(format!("{name}: api, in place"), |b| {
            b.iter(|| {
                client
                    .read_logs(black_box(q), |lines, next| black_box((lines.len(), next)))
                    .unwrap()
            })
        });
        // The same, the page kept in its reply.
        g.bench_function(format!("{name}: api, kept"), |b| {
            b.iter(|| black_box(client.reply_page(black_box(q)).unwrap()))
        });
        drop(client);
        principal.shutdown().unwrap();
    }
    g.finish();
}

fn start_principal(path: &std::path::Path) -> Principal {
    let host = "127.0.0.1".to_string();
    Principal::builder()
        .bus(BusConfig {
            host: host.clone(),
            listening_port: 0,
            publishing_port: 0,
        })
        .api(ApiConfig { host, port: 0 })
        .database(Location::File(path.to_path_buf()))
        .db_memory_limit(MEMORY_LIMIT)
        .hot_retention(None)
        .start()
        .unwrap()
}

/// Each case's SQL, server and API times (owned, in place, as maps, kept),
/// one of each per round (the order turning each round), and the medians'
/// ratios to the SQL.
fn alternated(rounds: usize) {
    let path = make_file();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let conn = duckdb::Connection::open(&copy).unwrap();
    conn.execute_batch(&format!("SET memory_limit = '{MEMORY_LIMIT}'"))
        .unwrap();
    let principal = start_principal(&path);
    let store = principal.store();
    let mut client = ApiClient::connect(&principal.api_config()).unwrap();
    println!("{rounds} rounds, medians in ms (ratio to sql)");
    println!("| query | sql | server | api | api, in place | api, maps | api, kept |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, q, sql) in &cases() {
        let limited = LogQuery {
            limit: Some(1000),
            ..q.clone()
        };
        let maps = Request::QueryLogs {
            query: q.clone(),
            layout: Layout::Maps,
        };
        let mut stmt = conn.prepare(sql).unwrap();
        let mut times: [Vec<f64>; 6] = Default::default();
        for round in 0..rounds {
            for k in 0..6 {
                let which = (round + k) % 6;
                let start = std::time::Instant::now();
                match which {
                    0 => drop(black_box(stmt.query_arrow([]).unwrap().collect::<Vec<_>>())),
                    1 => {
                        let page = store.read_page(&limited, MAX_PAGE_BYTES).unwrap();
                        let lines: Vec<_> = page.lines().collect();
                        black_box(Response::logs_bytes(&lines, page.next(), Layout::Arrays));
                    }
                    2 => drop(black_box(client.query_logs(q).unwrap())),
                    3 => drop(black_box(client.read_logs(q, |l, next| (l.len(), next)).unwrap())),
                    4 => drop(black_box(client.call(&maps).unwrap())),
                    _ => drop(black_box(client.reply_page(q).unwrap())),
                }
                times[which].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let medians: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        let cell = |m: f64| format!("{m:.2} ({:.2}×)", m / medians[0]);
        let cells: Vec<String> = medians[1..].iter().map(|&m| cell(m)).collect();
        println!("| {name} | {:.2} | {} |", medians[0], cells.join(" | "));
    }
    drop(client);
    principal.shutdown().unwrap();
}

criterion_group!(benches, api_vs_sql);

fn main() {
    match std::env::var("CDKTR_BENCH_ALTERNATE").map(|r| r.parse::<usize>()) {
        Ok(Ok(rounds)) if rounds > 0 => alternated(rounds),
        Ok(_) => panic!("CDKTR_BENCH_ALTERNATE is a number of rounds"),
        Err(_) => benches(),
    }
}
