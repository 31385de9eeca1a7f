//! What the benches share: a DuckDB file of generated lines, made once and
//! kept in the target directory.

use std::path::PathBuf;

use cdktr_logs::store::{LogQuery, SqlValue, Store, ROW_GROUP_SIZE};

/// `cdktr-bench/<name>` in the target directory; the file is made by
/// `generate` (SQL on a bare connection to a new store's file, attached
/// with the store's row groups, as the principal writes them) unless it is
/// already there with `rows` lines in such row groups.
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
        let largest_row_group = "SELECT max(count) FROM pragma_storage_info('logstore') WHERE column_name = 'line_id'";
        let laid_out = match store.sql(largest_row_group, 1, 1 << 10).map(|r| r.rows) {
            Ok(rows) => matches!(rows[0][0], SqlValue::Int(n) if n <= ROW_GROUP_SIZE as i64),
            Err(_) => false,
        };
        if laid_out && store.count_logs(&all).unwrap_or(0) == rows {
            return path;
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("db.wal"));
    eprintln!("generating {rows} rows in {} (once)", path.display());
    drop(Store::open(&path).unwrap());
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let attach = format!(
        "ATTACH '{}' AS bench (ROW_GROUP_SIZE {ROW_GROUP_SIZE}); USE bench;",
        path.display()
    );
    conn.execute_batch(&attach).unwrap();
    conn.execute_batch(generate).unwrap();
    // The store indexes the lines by instance when it opens the file.
    drop(conn);
    drop(Store::open(&path).unwrap());
    path
}
