//! The archive and SQL through the real binaries: a principal killed at
//! each step of a move, Python reading the archive while it runs, and
//! `cdktr-logs sql` / `export`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use cdktr_log::query::LogQuery;
use cdktr_log::{Envelope, Line};
use cdktr_store::{Persister, PersisterConfig, Store};

use super::*;

const DAY: i64 = 86_400_000;

/// Lines written straight into `db` before a principal starts: `n` on a
/// day 20 days ago and `n` on a day 9 days ago (both past a 7-day hot
/// retention; only the first past a 12-day archive retention), from
/// publisher "seed", numbered 1..=2n.
fn seed(db: &Path, n: usize) -> Vec<LogMessage> {
    let today = cdktr_log::message::now_ms().div_euclid(DAY) * DAY;
    let lines: Vec<LogMessage> = (0..2 * n)
        .map(|i| {
            let day = if i < n { today - 20 * DAY } else { today - 9 * DAY };
            LogMessage {
                workflow_instance_id: format!("etl-{}", i % 13),
                timestamp_ms: day + 3_600_000 + (i as i64 * 7) % 3_600_000,
                payload: format!("seeded {i}"),
                ..line("etl-0", Level::ALL[i % 5], "")
            }
        })
        .collect();
    let store = Store::open(db).unwrap();
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    for (i, m) in lines.iter().enumerate() {
        tx.send(Line::from(Envelope {
            publisher_id: "seed".into(),
            seq: i as u64 + 1,
            replays: false,
            message: m.clone(),
        }))
        .unwrap();
    }
    persister.shutdown().unwrap();
    lines
}

/// Every stored line by identity, through the API, each counted.
fn identities(p: &Running) -> BTreeMap<(String, u64), usize> {
    let mut api = p.client();
    let query = LogQuery {
        start_ms: Some(i64::MIN),
        limit: Some(1000),
        ..LogQuery::default()
    };
    let mut seen = BTreeMap::new();
    for page in api.pages(query) {
        for o in page.unwrap().origins {
            let o = o.expect("every seeded line has an origin");
            *seen.entry((o.publisher_id, o.seq)).or_insert(0) += 1;
        }
    }
    seen
}

/// Lines in the file's `logstore` plus lines in every Parquet file of the
/// archive (as DuckDB reads them with the principal stopped).
fn stored_copies(dir: &Path) -> (i64, i64, i64) {
    let conn = duckdb::Connection::open(dir.join("app.db")).unwrap();
    let hot: i64 = conn
        .query_row("SELECT count(*) FROM logstore", [], |r| r.get(0))
        .unwrap();
    let glob = dir.join("archive/logstore/*/*.parquet");
    let any = std::fs::read_dir(dir.join("archive/logstore"))
        .map(|d| d.count() > 0)
        .unwrap_or(false);
    let (archived, distinct) = if any {
        conn.query_row(
            &format!(
                "SELECT count(*), count(DISTINCT seq) FROM read_parquet('{}')",
                glob.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    } else {
        (0, 0)
    };
    (hot, archived, distinct)
}

fn files_named(dir: &Path, suffix: &str) -> usize {
    let Ok(days) = std::fs::read_dir(dir.join("archive/logstore")) else {
        return 0;
    };
    days.flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().ends_with(suffix))
        .count()
}

/// Waits for the archiver's first pass: no line past the 7-day hot
/// retention left in DuckDB.
fn wait_until_all_archived(p: &Running) {
    let end = Instant::now() + WAIT;
    let cutoff = cdktr_log::message::now_ms() - 7 * DAY;
    loop {
        let sql = format!("SELECT count(*) FROM logstore WHERE timestamp_ms < {cutoff}");
        let r = p.client().sql(&sql, None).unwrap();
        if r.rows[0][0] == cdktr_log::sql::SqlValue::Int(0) {
            return;
        }
        assert!(Instant::now() < end, "lines stay in DuckDB: {:?}", r.rows);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the principal until the failpoint aborts it.
fn run_until_abort(db: &Path, failpoint: &str, env: &[(&str, &str)]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdktr-principal"));
    cmd.arg("--db")
        .arg(db)
        .args(cdktr_principal::testing::ANY_PORT_FLAGS)
        .env("RUST_LOG", "off")
        .env("CDKTR_TEST_ARCHIVE_FAILPOINT", failpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the principal never reached failpoint {failpoint}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(libc_sigabrt()), "{failpoint}: {status:?}");
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn killed_at_each_archiving_step_every_line_is_stored_exactly_once() {
    let n = 1500;
    for (failpoint, retention) in [("written", None), ("committed", None), ("expired", Some("12d"))] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let lines = seed(&db, n);
        let mut env = vec![("CDKTR_HOT_RETENTION", "7d")];
        if let Some(r) = retention {
            env.push(("CDKTR_ARCHIVE_RETENTION", r));
        }
        run_until_abort(&db, failpoint, &env);
        // The kill left the step half done, as intended.
        match failpoint {
            "written" | "committed" => assert_eq!(files_named(dir.path(), ".tmp"), 1, "{failpoint}"),
            _ => assert!(files_named(dir.path(), ".parquet") > 0, "{failpoint}"),
        }

        let p = start(&db, &env);
        let seen = identities(&p);
        wait_until_all_archived(&p);
        let kept: Vec<u64> = match retention {
            // The older day is past the archive's retention: gone, whole.
            Some(_) => (n as u64 + 1..=2 * n as u64).collect(),
            None => (1..=2 * n as u64).collect(),
        };
        let want: BTreeMap<(String, u64), usize> = kept.iter().map(|&s| (("seed".to_string(), s), 1)).collect();
        assert_eq!(seen.len(), want.len(), "{failpoint}: lines by identity");
        assert_eq!(seen, want, "{failpoint}: each line exactly once");
        let count = p.client().count_logs(&LogQuery {
            start_ms: Some(i64::MIN),
            ..LogQuery::default()
        });
        assert_eq!(count.unwrap(), kept.len() as u64);
        p.stop();
        // On disk: nothing half done, each line in one place.
        assert_eq!(files_named(dir.path(), ".tmp"), 0, "{failpoint}");
        let (hot, archived, distinct) = stored_copies(dir.path());
        assert_eq!(hot, 0, "{failpoint}: every seeded line is past the hot retention");
        assert_eq!(
            (archived, distinct),
            (kept.len() as i64, kept.len() as i64),
            "{failpoint}"
        );
        drop(lines);
    }
}

#[test]
fn python_duckdb_reads_the_archive_while_the_principal_runs() {
    let probe = Command::new("python3").args(["-c", "import duckdb"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with the duckdb module is not installed (pip install duckdb)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    seed(&db, 2000);
    let p = start(&db, &[("CDKTR_HOT_RETENTION", "7d")]);
    let end = Instant::now() + WAIT;
    while p.client().count_logs(&LogQuery::default()).is_err() || files_named(dir.path(), ".parquet") == 0 {
        assert!(Instant::now() < end, "nothing archived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = LogQuery {
        start_ms: Some(i64::MIN),
        ..LogQuery::default()
    };
    // Wait until the first pass is over (every seeded line is archived).
    let script = format!(
        "import duckdb\n\
         print(duckdb.connect().execute(\"SELECT count(*), count(DISTINCT day) FROM read_parquet('{}/archive/logstore/**/*.parquet', hive_partitioning=true)\").fetchone())",
        dir.path().display()
    );
    let counted = |p: &Running| p.client().count_logs(&all).unwrap();
    loop {
        let out = Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        if text.trim() == format!("({}, 2)", counted(&p)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "Python counts {text:?}, CountLogs {}",
            counted(&p)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counted(&p), 4000);
    p.stop();
}

#[test]
fn cli_sql_prints_tables_json_and_csv_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    seed(&db, 100);
    let p = start(&db, &[("CDKTR_HOT_RETENTION", "7d")]);
    let sql = "SELECT level, count(*) AS n FROM log_history GROUP BY level ORDER BY level";
    let table = stdout_lines(&p.cli(&["sql", sql]));
    assert_eq!(table[0].split_whitespace().collect::<Vec<_>>(), ["level", "n"]);
    assert_eq!(table[1].split_whitespace().collect::<Vec<_>>(), ["DEBUG", "40"]);
    assert_eq!(table.last().unwrap(), "(5 rows)");
    let json = stdout_lines(&p.cli(&["sql", sql, "-o", "json"]));
    assert_eq!(json[0], r#"{"level":"DEBUG","n":40}"#);
    let csv = stdout_lines(&p.cli(&["sql", "SELECT 'a,b' AS x, NULL AS y, 2 AS z", "-o", "csv"]));
    assert_eq!(csv, ["x,y,z", "\"a,b\",,2"]);
    let truncated = p.cli(&["sql", "SELECT * FROM range(50)", "--max-rows", "10", "-o", "csv"]);
    assert_eq!(stdout_lines(&truncated).len(), 11);
    assert!(String::from_utf8_lossy(&truncated.stderr).contains("truncated"));
    let refused = p.cli(&["sql", "DELETE FROM logstore"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("forbidden") && why.contains("DELETE is not read-only"),
        "{why}"
    );
    assert_eq!(stored_count(&p), 200, "nothing deleted");
    p.stop();
}

fn stored_count(p: &Running) -> u64 {
    p.client()
        .count_logs(&LogQuery {
            start_ms: Some(i64::MIN),
            ..LogQuery::default()
        })
        .unwrap()
}

#[test]
fn cli_export_writes_hot_and_archived_lines_to_parquet_csv_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let seeded = seed(&db, 300);
    let p = start(&db, &[("CDKTR_HOT_RETENTION", "7d")]);
    let publisher = LogPublisher::connect(&p.bus).unwrap();
    for i in 0..50 {
        publisher
            .publish(line("etl-live", Level::Info, &format!("live, \"quoted\" {i}")))
            .unwrap();
    }
    publisher.flush(WAIT).unwrap();
    let total = 600 + 50;
    // Stored: a query writes lines the principal has held over 250 ms.
    let end = Instant::now() + WAIT;
    while stored_count(&p) < total as u64 {
        assert!(Instant::now() < end, "the live lines were never stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = tempfile::tempdir().unwrap();
    for name in ["all.parquet", "all.csv", "all.jsonl"] {
        let path = out.path().join(name);
        let run = p.cli(&["export", path.to_str().unwrap(), "--since", "30d"]);
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let said = String::from_utf8_lossy(&run.stderr);
        assert!(said.contains(&format!("exported {total} lines")), "{name}: {said}");
    }
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let (n, first): (i64, String) = conn
        .query_row(
            &format!(
                "SELECT count(*), first(payload) FROM read_parquet('{}')",
                out.path().join("all.parquet").display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, first.as_str()), (total, seeded[0].payload.as_str()));
    let csv = std::fs::read_to_string(out.path().join("all.csv")).unwrap();
    assert_eq!(csv.lines().count(), total as usize + 1);
    assert!(csv.contains("\"live, \"\"quoted\"\" 0\""), "CSV quoting");
    let jsonl = std::fs::read_to_string(out.path().join("all.jsonl")).unwrap();
    let parsed: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), total as usize);
    assert_eq!(parsed[0]["payload"], seeded[0].payload.as_str());
    // One instance, one level: the filters apply.
    let path = out.path().join("one.jsonl");
    let run = p.cli(&[
        "export",
        path.to_str().unwrap(),
        "--since",
        "30d",
        "-i",
        "etl-3",
        "--level",
        "ERROR",
    ]);
    assert!(run.status.success());
    let want = seeded
        .iter()
        .filter(|m| m.workflow_instance_id == "etl-3" && m.level == Level::Error)
        .count();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), want);
    // No partial file is left by a refused format.
    let bad = p.cli(&["export", out.path().join("x.txt").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(!out.path().join("x.txt").exists());
    p.stop();
}

#[test]
fn lines_published_while_a_day_is_archived_are_all_stored_once_beside_the_archived_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let n = 20_000;
    seed(&db, n);
    let p = start(&db, &[("CDKTR_HOT_RETENTION", "7d")]);
    // The first pass starts with the principal: publish meanwhile.
    let publisher = LogPublisher::builder(&p.bus)
        .acknowledged_by(&p.api)
        .spool_dir(dir.path().join("spool"))
        .start()
        .unwrap();
    let live = 5_000;
    for i in 0..live {
        publisher
            .publish(line("etl-live", Level::Info, &format!("live {i}")))
            .unwrap();
    }
    publisher.wait_persisted(WAIT).unwrap();
    let live_id = publisher.publisher_id().to_owned();
    wait_until_all_archived(&p);
    let seen = identities(&p);
    assert!(seen.values().all(|&c| c == 1), "a line read twice");
    let seeded = seen.keys().filter(|(id, _)| id == "seed").count();
    let published: Vec<u64> = seen.keys().filter(|(id, _)| *id == live_id).map(|(_, s)| *s).collect();
    assert_eq!(seeded, 2 * n);
    assert_eq!(published, (1..=live as u64).collect::<Vec<_>>());
    let stats = p.client().stats().unwrap();
    assert_eq!(stats.archived_lines, 2 * n as u64, "{stats:?}");
    assert!(stats.archive_files >= 2, "one file per day at least: {stats:?}");
    p.stop();
}

#[test]
fn a_statement_past_the_time_limit_is_stopped_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&dir.path().join("app.db"), &[("CDKTR_QUERY_TIMEOUT_MS", "300")]);
    let started = Instant::now();
    let slow = p
        .client()
        .sql("SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3", None);
    match slow {
        Err(cdktr_log::Error::Api { kind, message }) => {
            assert_eq!(kind, ErrorKind::TimedOut, "{message}");
        }
        other => panic!("not stopped: {other:?}"),
    }
    assert!(started.elapsed() < WAIT);
    let next = p.client().sql("SELECT 6 * 7 AS answer", None).unwrap();
    assert_eq!(next.rows, [[cdktr_log::sql::SqlValue::Int(42)]]);
    p.stop();
}

#[test]
fn tail_n_reads_the_last_lines_from_the_archive_then_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let seeded = seed(&db, 200);
    let p = start(&db, &[("CDKTR_HOT_RETENTION", "7d")]);
    wait_until_all_archived(&p);
    let mut tail = p
        .cli_command(&["tail", "-i", "etl-3", "-n", "5", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let payload = |l: String| -> String {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        v["payload"].as_str().unwrap().to_owned()
    };
    let mut want: Vec<&LogMessage> = seeded.iter().filter(|m| m.workflow_instance_id == "etl-3").collect();
    want.sort_by_key(|m| m.timestamp_ms);
    let last5: Vec<String> = want[want.len() - 5..].iter().map(|m| m.payload.clone()).collect();
    let got: Vec<String> = (0..5)
        .map(|_| payload(rx.recv_timeout(WAIT).expect("five archived lines")))
        .collect();
    assert_eq!(got, last5, "the last five lines of etl-3, all archived");
    // Then live lines, none repeated.
    let publisher = LogPublisher::connect(&p.bus).unwrap();
    let end = Instant::now() + WAIT;
    let live = loop {
        publisher.publish(line("etl-3", Level::Info, "live")).unwrap();
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            break payload(l);
        }
        assert!(Instant::now() < end, "no live line followed");
    };
    assert_eq!(live, "live");
    tail.kill().unwrap();
    tail.wait().unwrap();
    p.stop();
}
