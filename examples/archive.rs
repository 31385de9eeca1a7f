//! The archive's numbers: how fast lines move to Parquet, what that costs
//! ingestion meanwhile, bytes per line before and after, and one-instance
//! queries over archived lines (which must return exactly what they did
//! before the move).
//!
//! ```text
//! cargo run --release --example archive -- --lines 10000000 --instances 500
//! ```
//!
//! Everything runs in this process against a DuckDB file in a temporary
//! folder: a persister writes `--lines` lines of one day ten days ago
//! (instances interleaved, as real ingestion writes them), then one pass
//! of the archiver moves them while the persister takes `--ingest` new
//! lines, then the same number again with no archiving (the ceiling, same
//! run).

use std::time::{Duration, Instant};

use cdktr_logs::bus::message::now_ms;
use cdktr_logs::store::archive::{archive_pass, ArchiveConfig};
use cdktr_logs::store::{Persister, PersisterConfig, Store};
use cdktr_logs::{Envelope, Level, Line, LogMessage, LogQuery};
use clap::{value_parser, Arg, ArgAction, Command};

const DAY: i64 = 86_400_000;

fn cli() -> Command {
    Command::new("archive")
        .about("Measures the Parquet archive: move rate, ingest meanwhile, bytes per line, queries")
        .arg(
            Arg::new("lines")
                .long("lines")
                .value_parser(value_parser!(u64).range(1000..))
                .default_value("200000")
                .help("Old lines to write, then archive"),
        )
        .arg(
            Arg::new("instances")
                .long("instances")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("500")
                .help("Workflow instances the lines are spread over, interleaved"),
        )
        .arg(
            Arg::new("ingest")
                .long("ingest")
                .value_parser(value_parser!(u64).range(1000..))
                .help("New lines written while archiving, and again without (default: --lines / 2)"),
        )
        .arg(
            Arg::new("rest-factor")
                .long("rest-factor")
                .value_parser(value_parser!(u32))
                .help("ArchiveConfig::rest_factor (default: the default's)"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("One JSON object instead of a table"),
        )
}

/// Line `i`; live lines belong to other workflows than the old ones, so
/// that queries of old workflows and instances see only old lines.
fn line(i: u64, instances: u64, timestamp_ms: i64, live: bool) -> Line {
    let instance = i % instances;
    let run = if live { "live" } else { "run" };
    Line::from(Envelope {
        publisher_id: format!("agent-{}", i % 8),
        seq: i / 8 + 1,
        replays: false,
        message: LogMessage {
            workflow_id: format!("{run}-wf-{}", instance % 20),
            workflow_name: format!("Workflow {}", instance % 20),
            workflow_instance_id: format!("wf-{}-{run}-{instance}", instance % 20),
            task_name: format!("task-{}", i % 7),
            task_instance_id: format!("task-{}-{instance}", i % 7),
            timestamp_ms,
            level: Level::ALL[(i % 5) as usize],
            payload: format!("processed batch {i}: {} rows in {} ms, status ok", i % 9973, i % 331),
        },
    })
}

/// Writes `n` lines from `first` (numbering them per publisher from
/// there) stamped by `stamp`; lines per second.
fn ingest(store: &Store, first: u64, n: u64, instances: u64, live: bool, stamp: impl Fn(u64) -> i64) -> f64 {
    let persister = Persister::start(store, PersisterConfig::default()).expect("persister");
    let tx = persister.sender();
    let start = Instant::now();
    for i in first..first + n {
        tx.send(line(i, instances, stamp(i), live)).expect("persister running");
    }
    drop(tx);
    persister.shutdown().expect("every line written");
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let m = cli().get_matches();
    let lines = *m.get_one::<u64>("lines").unwrap();
    let instances = *m.get_one::<u64>("instances").unwrap();
    let more = m.get_one::<u64>("ingest").copied().unwrap_or(lines / 2);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("app.db");
    let now = now_ms();
    let old_day = now.div_euclid(DAY) * DAY - 10 * DAY;

    let store = Store::open(&db).expect("database");
    store.set_memory_limit("128MB").expect("memory limit");
    store.open_archive(dir.path().join("archive")).expect("archive");
    store.lock_down().expect("lock down");
    let write_rate = ingest(&store, 0, lines, instances, false, |i| {
        old_day + (i as i64 * (DAY - 1)) / lines as i64
    });
    drop(store);
    let hot_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);

    let store = Store::open(&db).expect("database");
    store.set_memory_limit("128MB").expect("memory limit");
    store.open_archive(dir.path().join("archive")).expect("archive");
    store.lock_down().expect("lock down");
    // One instance's lines, as `cdktr-logs query -i` reads them; and one
    // workflow's (whether a workflow level in the layout would pay).
    let instance = |k: u64| LogQuery {
        workflow_instance_id: Some(format!("wf-{}-run-{}", (k * 7 % instances) % 20, k * 7 % instances)),
        start_ms: Some(i64::MIN),
        limit: Some(1000),
        ..LogQuery::default()
    };
    let workflow = |k: u64| LogQuery {
        workflow_id: Some(format!("run-wf-{}", k % 20)),
        start_ms: Some(i64::MIN),
        limit: Some(1000),
        ..LogQuery::default()
    };
    let instances_probes: Vec<LogQuery> = (0..21).map(instance).collect();
    let workflow_probes: Vec<LogQuery> = (0..21).map(workflow).collect();
    let run_probes = |store: &Store, probes: &[LogQuery]| {
        let mut times = Vec::new();
        let mut pages = Vec::new();
        for q in probes {
            let t = Instant::now();
            let page = store.query_page(q, usize::MAX).expect("query");
            times.push(t.elapsed());
            pages.push(page);
        }
        (median(times), pages)
    };
    let (hot_query, before) = run_probes(&store, &instances_probes);
    let (hot_workflow, workflow_before) = run_probes(&store, &workflow_probes);

    // Archive the old day while new lines arrive.
    let defaults = ArchiveConfig::default();
    let config = ArchiveConfig {
        hot_retention: Some(Duration::from_secs(7 * 86_400)),
        rest_factor: m.get_one::<u32>("rest-factor").copied().unwrap_or(defaults.rest_factor),
        ..defaults
    };
    let archiver = store.try_clone().expect("a connection");
    let (moved, move_secs, during) = std::thread::scope(|s| {
        let mover = s.spawn(|| {
            let t = Instant::now();
            let r = archive_pass(&archiver, &config, now, &|| false).expect("archive pass");
            (r, t.elapsed().as_secs_f64())
        });
        let during = ingest(&store, lines, more, instances, true, |i| now + i as i64 % 1000);
        let (r, secs) = mover.join().expect("archiver");
        (r, secs, during)
    });
    let after_rate = ingest(&store, lines + more, more, instances, true, |i| now + i as i64 % 1000);
    let archive_bytes: u64 = store.archived_files().iter().map(|f| f.bytes).sum();
    let (archived_query, after) = run_probes(&store, &instances_probes);
    let (archived_workflow, workflow_after) = run_probes(&store, &workflow_probes);
    let same = before == after && workflow_before == workflow_after;

    let out = serde_json::json!({
        "lines": lines,
        "instances": instances,
        "write_lines_per_s": write_rate.round(),
        "archive_lines_per_s": (moved.lines as f64 / move_secs).round(),
        "archive_files": moved.files,
        "rest_factor": config.rest_factor,
        "ingest_while_archiving_lines_per_s": during.round(),
        "ingest_without_archiving_lines_per_s": after_rate.round(),
        "ingest_ratio": (during / after_rate * 1000.0).round() / 1000.0,
        "duckdb_bytes_per_line": (hot_bytes as f64 / lines as f64 * 10.0).round() / 10.0,
        "archive_bytes_per_line": (archive_bytes as f64 / moved.lines.max(1) as f64 * 10.0).round() / 10.0,
        "one_instance_query_hot_ms": hot_query.as_secs_f64() * 1000.0,
        "one_instance_query_archived_ms": archived_query.as_secs_f64() * 1000.0,
        "one_workflow_query_hot_ms": hot_workflow.as_secs_f64() * 1000.0,
        "one_workflow_query_archived_ms": archived_workflow.as_secs_f64() * 1000.0,
        "same_results": same,
    });
    if m.get_flag("json") {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().expect("an object") {
            println!("{k:<40} {v}");
        }
    }
    assert!(same, "a query returned something else after the move");
    assert_eq!(moved.lines, lines, "every old line moved: {moved:?}");
}
