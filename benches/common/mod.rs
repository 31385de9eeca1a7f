//! What the benches share: a DuckDB file of generated lines, made once and
//! kept in the target directory.

use std::path::PathBuf;

use cdktr_logs::store::{LogQuery, Store};

/// `cdktr-bench/<name>` in the target directory; the file is made by
/// `generate` (SQL on a bare connection to a new store's file) unless it is
/// already there with `rows` lines.
pub fn generated_file(name: &str, rows: u64, generate: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("cdktr-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if let Ok(store) = Store::open(&path) {
        let all = LogQuery {
            start_ms: Some(0),
            ..LogQuery::default()
        };
        if store.count_logs(&all).unwrap_or(0) == rows {
            return path;
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("db.wal"));
    eprintln!("generating {rows} rows in {} (once)", path.display());
    drop(Store::open(&path).unwrap());
    let conn = duckdb::Connection::open(&path).unwrap();
    conn.execute_batch(generate).unwrap();
    path
}
