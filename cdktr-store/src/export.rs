//! Writing log lines to a Parquet file, a page at a time, in bounded
//! memory: pages go to a scratch DuckDB file beside the output (DuckDB
//! keeps at most `memory_limit` of it in memory), which is copied out at
//! the end and removed. The output appears under its name only when whole.
//!
//! ```
//! use cdktr_store::export::ParquetExport;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let out = dir.path().join("lines.parquet");
//! let export = ParquetExport::create(&out)?;
//! // export.append(&page.lines, &page.origins)? for every page…
//! assert_eq!(export.finish()?, 0);
//! assert!(out.exists());
//! # Ok::<(), cdktr_store::Error>(())
//! ```

use std::path::{Path, PathBuf};

use cdktr_log::query::Origin;
use cdktr_log::LogMessage;
use duckdb::{params, Connection};

use crate::archive::sql_string;
use crate::error::{Error, Result};

/// A Parquet file being written; dropped before
/// [`finish`](Self::finish), it leaves nothing behind.
#[derive(Debug)]
pub struct ParquetExport {
    conn: Option<Connection>,
    scratch: PathBuf,
    out: PathBuf,
    lines: u64,
}

impl ParquetExport {
    /// Starts an export to `out`.
    ///
    /// # Errors
    /// [`Error::Open`] when the scratch file beside `out` cannot be
    /// created (a missing or read-only folder); [`Error::Db`].
    pub fn create(out: impl AsRef<Path>) -> Result<ParquetExport> {
        let out = out.as_ref().to_path_buf();
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let scratch = out.with_file_name(format!(".{name}.{}.scratch.duckdb", std::process::id()));
        let config = duckdb::Config::default()
            .enable_autoload_extension(false)
            .and_then(|c| c.with("memory_limit", "64MB"))
            .and_then(|c| c.with("threads", "1"))
            .map_err(Error::db("configuring DuckDB"))?;
        let conn = Connection::open_with_flags(&scratch, config).map_err(|e| Error::Open {
            path: scratch.clone(),
            reason: e.to_string(),
        })?;
        let export = ParquetExport {
            conn: Some(conn),
            scratch,
            out,
            lines: 0,
        };
        export
            .conn()
            .execute_batch(
                "CREATE TABLE lines (
                     timestamp            TIMESTAMP_MS NOT NULL,
                     workflow_id          VARCHAR NOT NULL,
                     workflow_name        VARCHAR NOT NULL,
                     workflow_instance_id VARCHAR NOT NULL,
                     task_name            VARCHAR NOT NULL,
                     task_instance_id     VARCHAR NOT NULL,
                     level                VARCHAR NOT NULL,
                     payload              VARCHAR NOT NULL,
                     publisher_id         VARCHAR,
                     seq                  UBIGINT
                 )",
            )
            .map_err(Error::db("creating the export's scratch table"))?;
        Ok(export)
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("open until finish or drop")
    }

    /// Adds a page of lines, with their origins (`origins` may be shorter:
    /// the rest have none).
    ///
    /// # Errors
    /// [`Error::Db`] (a full disk, say).
    pub fn append(&mut self, lines: &[LogMessage], origins: &[Option<Origin>]) -> Result<()> {
        let op = "appending to the export";
        let conn = self.conn.as_ref().expect("open until finish or drop");
        let mut app = conn.appender("lines").map_err(Error::db(op))?;
        for (i, m) in lines.iter().enumerate() {
            let origin = origins.get(i).and_then(Option::as_ref);
            app.append_row(params![
                duckdb::types::Value::Timestamp(duckdb::types::TimeUnit::Millisecond, m.timestamp_ms),
                m.workflow_id,
                m.workflow_name,
                m.workflow_instance_id,
                m.task_name,
                m.task_instance_id,
                m.level.as_str(),
                m.payload,
                origin.map(|o| o.publisher_id.as_str()),
                origin.map(|o| o.seq),
            ])
            .map_err(Error::db(op))?;
        }
        app.flush().map_err(Error::db(op))?;
        drop(app);
        self.lines += lines.len() as u64;
        Ok(())
    }

    /// Writes the Parquet file (zstd, lines in the order appended) under a
    /// temporary name, renames it to the output, and removes the scratch
    /// file; returns the lines written.
    ///
    /// # Errors
    /// [`Error::Db`] when the file cannot be written; [`Error::Export`]
    /// when it cannot be renamed.
    pub fn finish(self) -> Result<u64> {
        let tmp = self.out.with_file_name(format!(
            ".{}.partial",
            self.out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let copy = format!("COPY lines TO {} (FORMAT parquet, COMPRESSION zstd)", sql_string(&tmp));
        if let Err(e) = self.conn().execute_batch(&copy) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Db {
                op: "writing the Parquet file",
                source: e,
            });
        }
        std::fs::rename(&tmp, &self.out).map_err(|source| Error::Export {
            path: self.out.clone(),
            source,
        })?;
        Ok(self.lines)
    }
}

impl Drop for ParquetExport {
    fn drop(&mut self) {
        drop(self.conn.take());
        let _ = std::fs::remove_file(&self.scratch);
        let _ = std::fs::remove_file(self.scratch.with_extension("duckdb.wal"));
    }
}
