//! The schema: its tables and columns, migrations, and files that cannot be used.

use super::*;

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
            "publisher_key",
            "seq",
            "line_id"
        ]
    );
    let identity: Vec<(String, String)> = columns("logstore").split_off(8);
    assert_eq!(
        identity,
        [
            ("publisher_key".to_string(), "UINTEGER".to_string()),
            ("seq".to_string(), "UBIGINT".to_string()),
            ("line_id".to_string(), "UBIGINT".to_string())
        ]
    );
    assert_eq!(
        names("archive_file"),
        [
            "file_no",
            "path",
            "day",
            "line_count",
            "bytes",
            "min_timestamp_ms",
            "max_timestamp_ms",
            "min_line_id",
            "max_line_id",
            "archived_at_ms"
        ]
    );
    assert_eq!(names("archive_deleted"), ["file_no", "reason", "deleted_at_ms"]);
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
    assert_eq!(names("publisher"), ["publisher_key", "publisher_id"]);
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
        "DROP TABLE publisher_gap; DROP TABLE instance_block; DELETE FROM cdktr_schema_version WHERE version > 1;
         DROP TABLE publisher; DROP TABLE archive_file; DROP TABLE archive_deleted;
         ALTER TABLE logstore DROP COLUMN line_id;
         ALTER TABLE logstore DROP COLUMN publisher_key; ALTER TABLE logstore DROP COLUMN seq;
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

/// The file's path reaches DuckDB inside SQL (an `ATTACH`): quotes and
/// SQL in a name are only a name.
#[test]
fn a_path_with_quotes_and_sql_in_its_name_opens_that_file_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("it's'; DROP TABLE logstore; --.db");
    let store = Store::open(&path).unwrap();
    persist(&store, PersisterConfig::default(), &[message(1)]);
    drop(store);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["it's'; DROP TABLE logstore; --.db"]);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.query_logs(&all_of(LogQuery::default())).unwrap().len(), 1);
}

/// `docs/schema.md` names the catalog a file is attached as; every handle
/// uses it, a clone as much as the first.
#[test]
fn a_file_store_is_the_catalog_cdktr_on_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("named.db")).unwrap();
    for handle in [&store, &store.try_clone().unwrap()] {
        let rows = handle.sql("SELECT current_database()", 1, 1 << 10).unwrap().rows;
        assert!(
            matches!(&rows[0][0], cdktr_store::SqlValue::Text(name) if name == "cdktr"),
            "{rows:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_path_that_is_not_utf8_is_a_typed_error_naming_it() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(std::ffi::OsStr::from_bytes(b"logs-\xff.db"));
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(&err, Error::Open { path: p, .. } if p == &path), "{err}");
    assert!(err.to_string().contains("UTF-8"), "{err}");
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
            "schema::a_database_locked_by_another_process_is_a_typed_error",
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
fn the_checkpoint_threshold_takes_a_size_reaches_duckdb_and_refuses_anything_else() {
    let store = Store::open_in_memory().unwrap();
    store.set_checkpoint_threshold("256MB").unwrap();
    let rows = store
        .sql("SELECT current_setting('checkpoint_threshold')", 1, 1 << 10)
        .unwrap();
    let shown = format!("{:?}", rows.rows);
    assert!(shown.contains("256") || shown.contains("244"), "{shown}");
    for bad in ["", "big", "16", "16MB'; DROP TABLE logstore; --", "-5MB"] {
        assert!(
            matches!(store.set_checkpoint_threshold(bad), Err(Error::InvalidQuery(_))),
            "{bad:?} accepted"
        );
    }
}
