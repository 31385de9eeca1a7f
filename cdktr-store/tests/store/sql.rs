//! Read-only SQL: what runs, what is refused (and changes nothing), caps.

use cdktr_store::archive::{archive_pass, ArchiveConfig};
use cdktr_store::{SqlValue, HISTORY_VIEW};

use super::*;

const DAY: i64 = 86_400_000;

/// A locked-down file store with 400 lines, half of them archived.
fn sealed(dir: &std::path::Path) -> Store {
    let store = Store::open(dir.join("app.db")).unwrap();
    store.open_archive(dir.join("archive")).unwrap();
    store.lock_down().unwrap();
    let lines: Vec<LogMessage> = (0..400)
        .map(|i| LogMessage {
            // Half ten days old, half now-ish.
            timestamp_ms: if i % 2 == 0 { T0 } else { T0 + 10 * DAY } + i as i64,
            ..message(i)
        })
        .collect();
    persist(&store, PersisterConfig::default(), &lines);
    let config = ArchiveConfig {
        hot_retention: Some(Duration::from_secs(7 * 86_400)),
        ..ArchiveConfig::default()
    };
    let moved = archive_pass(&store, &config, T0 + 10 * DAY, &|| false).unwrap();
    assert_eq!(moved.lines, 200);
    store
}

fn int(v: &SqlValue) -> i64 {
    match v {
        SqlValue::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn sql_reads_tables_and_the_history_view_with_names_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path());
    let r = store
        .sql(
            &format!(
                "SELECT level, count(*) AS n, min(timestamp_ms) AS first, epoch_ms(min(timestamp_ms)) AS at, \
                 1.5::DOUBLE AS x, true AS b, NULL AS nothing FROM {HISTORY_VIEW} GROUP BY level ORDER BY level"
            ),
            100,
            1 << 20,
        )
        .unwrap();
    let columns: Vec<(&str, &str)> = r
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("level", "VARCHAR"),
            ("n", "BIGINT"),
            ("first", "BIGINT"),
            ("at", "TIMESTAMP"),
            ("x", "DOUBLE"),
            ("b", "BOOLEAN"),
            ("nothing", "NULL")
        ]
    );
    assert_eq!(r.rows.len(), 5);
    assert_eq!(
        r.rows.iter().map(|row| int(&row[1])).sum::<i64>(),
        400,
        "hot and archived lines"
    );
    assert_eq!(r.rows[0][0], SqlValue::Text("DEBUG".into()));
    assert!(
        matches!(&r.rows[0][3], SqlValue::Text(t) if t.starts_with("2026-11-")),
        "{:?}",
        r.rows[0][3]
    );
    assert_eq!(r.rows[0][4], SqlValue::Float(1.5));
    assert_eq!(r.rows[0][5], SqlValue::Bool(true));
    assert_eq!(r.rows[0][6], SqlValue::Null);
    assert_eq!(r.truncated, None);
    // The archive's files can be read by path too.
    let file = dir.path().join("archive/logstore/**/*.parquet");
    let r = store
        .sql(
            &format!("SELECT count(*) FROM read_parquet('{}')", file.display()),
            10,
            1 << 20,
        )
        .unwrap();
    assert_eq!(int(&r.rows[0][0]), 200);
}

#[test]
fn statements_that_write_or_reach_outside_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path());
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path().display().to_string();
    let a = dir.path().join("archive").display().to_string();
    std::fs::write(outside.path().join("secret.csv"), "a,b\n1,2\n").unwrap();
    let hostile = [
        "INSERT INTO logstore SELECT * FROM logstore".to_string(),
        "update logstore set payload = 'x'".into(),
        "DELETE FROM logstore".into(),
        "CREATE TABLE t (x INT)".into(),
        "create temp table t as select 1".into(),
        "DROP TABLE logstore".into(),
        "ALTER TABLE logstore ADD COLUMN x INT".into(),
        "TRUNCATE logstore".into(),
        format!("ATTACH '{o}/evil.db' AS evil"),
        "DETACH memory".into(),
        format!("COPY logstore TO '{o}/out.csv'"),
        format!("COPY (SELECT 1 AS x) TO '{a}/logstore/planted.parquet'"),
        format!("COPY logstore FROM '{o}/secret.csv'"),
        format!("EXPORT DATABASE '{o}/dump'"),
        "INSTALL httpfs".into(),
        "LOAD httpfs".into(),
        "SET memory_limit = '1GB'".into(),
        "RESET threads".into(),
        "PRAGMA enable_profiling".into(),
        "CHECKPOINT".into(),
        "VACUUM".into(),
        "CALL pragma_version()".into(),
        "SELECT * FROM read_csv('/etc/passwd')".into(),
        "SELECT * FROM read_text('/etc/passwd')".into(),
        "SELECT * FROM read_blob('/etc/hostname')".into(),
        "SELECT * FROM glob('/etc/*')".into(),
        "SELECT * FROM '/etc/passwd'".into(),
        format!("SELECT * FROM read_csv('{o}/secret.csv')"),
        format!("SELECT * FROM read_parquet('{o}/*.parquet')"),
        "SELECT * FROM sniff_csv('/etc/passwd')".into(),
        "/* harmless */ iNsErT -- sneaky\n INTO logstore SELECT * FROM logstore".into(),
        "WITH x AS (SELECT 1) INSERT INTO logstore SELECT * FROM logstore".into(),
        "SELECT 1; DROP TABLE logstore".into(),
        "SELECT 1; SELECT 2".into(),
        "BEGIN TRANSACTION".into(),
    ];
    let count = |store: &Store| store.count_logs(&all_of(LogQuery::default())).unwrap();
    let before = count(&store);
    let tables = "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables";
    let tables_before = store.sql(tables, 1, 1 << 20).unwrap().rows;
    for sql in &hostile {
        match store.sql(sql, 100, 1 << 20) {
            Err(Error::Forbidden(why)) => assert!(!why.is_empty()),
            other => panic!("{sql:?} was not refused: {other:?}"),
        }
    }
    assert_eq!(count(&store), before);
    assert_eq!(store.sql(tables, 1, 1 << 20).unwrap().rows, tables_before);
    let left: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["secret.csv"], "nothing written outside");
    assert!(!dir.path().join("archive/logstore/planted.parquet").exists());
    // Refusals name the statement.
    let Err(Error::Forbidden(why)) = store.sql("/* c */ DeLeTe FROM logstore", 1, 1) else {
        panic!("not refused")
    };
    assert!(why.starts_with("DELETE is not read-only"), "{why}");
    let Err(Error::Forbidden(why)) = store.sql("SELECT 1; SELECT 2", 1, 1) else {
        panic!("not refused")
    };
    assert!(why.contains("2 statements"), "{why}");
}

#[test]
fn malformed_statements_are_invalid_queries_not_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path());
    for sql in ["SELEC 1", "SELECT * FROM no_such_table", "", "-- only a comment"] {
        match store.sql(sql, 10, 1 << 20) {
            Err(Error::InvalidQuery(_)) => {}
            other => panic!("{sql:?}: {other:?}"),
        }
    }
}

#[test]
fn row_and_byte_caps_cut_the_result_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path());
    let r = store.sql("SELECT * FROM range(100000)", 1000, 1 << 30).unwrap();
    assert_eq!(r.rows.len(), 1000);
    assert!(
        r.truncated.as_deref().is_some_and(|t| t.contains("1000 rows")),
        "{:?}",
        r.truncated
    );
    let r = store
        .sql("SELECT repeat('x', 1000) FROM range(100000)", 1_000_000, 100_000)
        .unwrap();
    assert!(r.rows.len() < 200 && !r.rows.is_empty(), "{}", r.rows.len());
    assert!(
        r.truncated.as_deref().is_some_and(|t| t.contains("bytes")),
        "{:?}",
        r.truncated
    );
    let r = store.sql("SELECT * FROM range(10)", 10, 1 << 20).unwrap();
    assert_eq!(
        (r.rows.len(), r.truncated),
        (10, None),
        "exactly the cap is not truncated"
    );
}
