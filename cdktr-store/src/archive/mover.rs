//! One pass of the archiver: move chunks of old lines to Parquet, then
//! delete whole days past the archive's retention.
//!
//! A move is crash-safe and exactly once. Its steps:
//! 1. write the chunk to `part-N.parquet.tmp` and sync it;
//! 2. in one transaction, record the file in `archive_file` and delete its
//!    lines from `logstore` (the count must match, or nothing changes);
//! 3. rename it to `part-N.parquet` and sync the folder.
//!
//! Killed before 2 commits, the lines are still in DuckDB and the `.tmp`
//! is removed at the next start; killed after, the file is in the
//! manifest and the next start finishes the rename. No reader sees a line
//! twice: the readers' view of the archive changes under a write lock held
//! across 2 and 3, and external readers never see a `.tmp`.

use std::path::Path;
use std::time::Duration;

use duckdb::params;

use super::manifest::{day_of, remove_if_empty, sync_dir, ArchivedFile, TMP_SUFFIX};
use super::{ArchiveConfig, Failpoint};
use crate::error::{Error, Result};
use crate::migrations::INSTANCE_BLOCK_LINES;
use crate::store::{chrono_now_ms, Store};

const DAY_MS: i64 = 86_400_000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Files written.
    pub files: u64,
    /// Lines moved out of DuckDB.
    pub lines: u64,
    /// Files deleted by the archive's retention.
    pub deleted_files: u64,
}

/// Runs one pass as of `now_ms`: moves every line stamped before
/// `now_ms - hot_retention` (in chunks of at most `chunk_lines`), then
/// deletes the days past `archive_retention`. `stop` is asked between
/// chunks.
///
/// # Errors
/// [`Error::Archive`] when a file cannot be written, synced or renamed;
/// [`Error::Db`]; [`Error::InvalidQuery`] when the store has no archive
/// open ([`Store::open_archive`]).
pub fn archive_pass(store: &Store, config: &ArchiveConfig, now_ms: i64, stop: &dyn Fn() -> bool) -> Result<PassReport> {
    // A connection of its own: a move holds its connection while it waits
    // for the readers' lock, and a reader on the same handle would hold
    // that lock while it waits for the connection.
    let store = &store.try_clone()?;
    let mut report = PassReport::default();
    if let Some(hot) = config.hot_retention {
        let cutoff = now_ms.saturating_sub(millis(hot));
        while !stop() {
            let started = std::time::Instant::now();
            match move_chunk(store, config, cutoff)? {
                Some(lines) => {
                    report.files += 1;
                    report.lines += lines;
                }
                None => break,
            }
            // Leave the cores to ingestion for a while: a move sorts and
            // compresses on every DuckDB thread.
            rest(started.elapsed() * config.rest_factor, stop);
        }
    }
    if let Some(keep) = config.archive_retention {
        report.deleted_files += expire(store, config, now_ms.saturating_sub(millis(keep)))?;
    }
    Ok(report)
}

/// Sleeps for `d`, or until `stop` says so.
fn rest(d: Duration, stop: &dyn Fn() -> bool) {
    let end = std::time::Instant::now() + d;
    while !stop() {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Moves the oldest chunk of lines stamped before `cutoff`; the number of
/// lines moved, or `None` when there are none.
fn move_chunk(store: &Store, config: &ArchiveConfig, cutoff: i64) -> Result<Option<u64>> {
    let dir = store.archive_dir()?;
    let op = "choosing lines to archive";
    let oldest: Option<i64> = store
        .conn()
        .query_row(
            "SELECT min(timestamp_ms) FROM logstore WHERE timestamp_ms < ?",
            [cutoff],
            |r| r.get(0),
        )
        .map_err(Error::db(op))?;
    let Some(oldest) = oldest else { return Ok(None) };
    // One file holds one day's lines, at most a chunk of them: the lines
    // of that day before the cutoff, up to the chunk's last line number.
    let day_start = oldest.div_euclid(DAY_MS) * DAY_MS;
    let day_end = (day_start + DAY_MS).min(cutoff);
    let day = day_of(day_start);
    let chunk = config.chunk_lines.max(1) as u64;
    let last_line: Option<u64> = store
        .conn()
        .query_row(
            "SELECT max(line_id) FROM (SELECT line_id FROM logstore \
             WHERE timestamp_ms >= ? AND timestamp_ms < ? ORDER BY line_id LIMIT ?)",
            params![day_start, day_end, chunk],
            |r| r.get(0),
        )
        .map_err(Error::db(op))?;
    let Some(last_line) = last_line else { return Ok(None) };
    let chunk_filter = format!("timestamp_ms >= {day_start} AND timestamp_ms < {day_end} AND line_id <= {last_line}");
    let (lines, min_ts, max_ts, min_line): (u64, i64, i64, u64) = store
        .conn()
        .query_row(
            &format!(
                "SELECT count(*), min(timestamp_ms), max(timestamp_ms), min(line_id) FROM logstore WHERE {chunk_filter}"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(Error::db(op))?;
    let file_no = store.next_archive_file_no();
    let rel = ArchivedFile::path_for(&day, file_no);
    let final_path = dir.join(&rel);
    let tmp_path = dir.join(format!("{rel}{TMP_SUFFIX}"));
    let day_dir = final_path.parent().unwrap_or(&dir).to_path_buf();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Archive { path, source }
    };
    std::fs::create_dir_all(&day_dir).map_err(io(&day_dir))?;

    // 1. Write and sync. Sorted so that one workflow's, and within it one
    // instance's, lines sit together: row-group statistics then skip the
    // rest.
    let copy = format!(
        "COPY (SELECT l.workflow_id, l.workflow_name, l.workflow_instance_id, l.task_name, l.task_instance_id, \
                      l.timestamp_ms, l.level, l.payload, p.publisher_id, l.publisher_key, l.seq, l.line_id \
               FROM logstore l LEFT JOIN publisher p ON p.publisher_key = l.publisher_key \
               WHERE {chunk_filter} \
               ORDER BY l.workflow_id, l.workflow_instance_id, l.timestamp_ms, l.line_id) \
         TO {} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {})",
        sql_string(&tmp_path),
        config.row_group_lines.max(1),
    );
    let written = store
        .conn()
        .execute(&copy, [])
        .map_err(Error::db("writing an archive file"));
    let written = match written {
        Ok(n) => n as u64,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    let bytes = std::fs::File::open(&tmp_path)
        .and_then(|f| {
            f.sync_all()?;
            f.metadata()
        })
        .map_err(io(&tmp_path))?
        .len();
    if written != lines {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(Error::InvalidQuery(format!(
            "archive: wrote {written} lines for a chunk of {lines}; nothing moved"
        )));
    }
    config.failpoint(Failpoint::Written);

    // 2. Record and delete in one transaction, committed under the
    // readers' write lock; 3. rename before the lock is let go.
    let file = ArchivedFile {
        file_no,
        path: rel,
        day,
        line_count: lines,
        bytes,
        min_timestamp_ms: min_ts,
        max_timestamp_ms: max_ts,
        min_line_id: min_line,
        max_line_id: last_line,
    };
    let mut conn = store.conn();
    let tx = conn.transaction().map_err(Error::db("starting an archive move"))?;
    let recorded = tx.execute(
        "INSERT INTO archive_file VALUES (?, ?, ?::DATE, ?, ?, ?, ?, ?, ?, ?)",
        params![
            file.file_no,
            file.path,
            file.day,
            file.line_count,
            file.bytes,
            file.min_timestamp_ms,
            file.max_timestamp_ms,
            file.min_line_id,
            file.max_line_id,
            chrono_now_ms()
        ],
    );
    // The index keeps only blocks that still hold a line in `logstore`:
    // it is read for the hot lines alone, and stays their size.
    let unindex = format!(
        "DELETE FROM instance_block WHERE block < (SELECT min(line_id) FROM logstore) // {INSTANCE_BLOCK_LINES}"
    );
    let deleted = recorded
        .and_then(|_| tx.execute(&format!("DELETE FROM logstore WHERE {chunk_filter}"), []))
        .and_then(|n| tx.execute(&unindex, []).map(|_| n));
    match deleted {
        Ok(n) if n as u64 == lines => {}
        other => {
            let _ = tx.rollback();
            let _ = std::fs::remove_file(&tmp_path);
            return Err(match other {
                Err(e) => Error::Db {
                    op: "recording an archive file",
                    source: e,
                },
                Ok(n) => Error::InvalidQuery(format!(
                    "archive: {n} lines to delete for a file of {lines}; nothing moved"
                )),
            });
        }
    }
    let mut state = store.archive_write();
    tx.commit().map_err(|e| {
        let _ = std::fs::remove_file(&tmp_path);
        Error::Db {
            op: "committing an archive move",
            source: e,
        }
    })?;
    config.failpoint(Failpoint::Committed);
    // The lines are the file's now: if the rename fails, readers read the
    // synced `.tmp` until the next start renames it; the pass fails
    // (counted, logged) rather than leave the lines unread.
    let mut file = file;
    let renamed = std::fs::rename(&tmp_path, &final_path)
        .map_err(io(&tmp_path))
        .and_then(|()| sync_dir(&day_dir));
    if renamed.is_err() && !final_path.exists() {
        file.path.push_str(TMP_SUFFIX);
    }
    state.files.insert(file.file_no, file);
    store.archive_changed(&mut state);
    renamed?;
    drop(state);
    drop(conn);
    log::debug!("archive: moved {lines} lines to {}", final_path.display());
    Ok(Some(lines))
}

/// Deletes the files of every day that ended before `cutoff`: recorded in
/// `archive_deleted` first, then removed.
fn expire(store: &Store, config: &ArchiveConfig, cutoff: i64) -> Result<u64> {
    let dir = store.archive_dir()?;
    // A day goes when its last millisecond is older than the cutoff.
    let last_day = cutoff.div_euclid(DAY_MS) * DAY_MS;
    let mut state = store.archive_write();
    let old: Vec<ArchivedFile> = state
        .files
        .values()
        .filter(|f| f.min_timestamp_ms.div_euclid(DAY_MS) * DAY_MS + DAY_MS <= last_day)
        .cloned()
        .collect();
    if old.is_empty() {
        return Ok(0);
    }
    {
        let mut conn = store.conn();
        let tx = conn
            .transaction()
            .map_err(Error::db("recording expired archive files"))?;
        let now = chrono_now_ms();
        for f in &old {
            tx.execute(
                "INSERT INTO archive_deleted VALUES (?, 'archive retention', ?)",
                params![f.file_no, now],
            )
            .map_err(Error::db("recording expired archive files"))?;
        }
        tx.commit().map_err(Error::db("recording expired archive files"))?;
    }
    config.failpoint(Failpoint::Expired);
    for f in &old {
        state.files.remove(&f.file_no);
        let path = dir.join(&f.path);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Archive { path, source }),
        }
        if let Some(day_dir) = path.parent() {
            remove_if_empty(day_dir);
        }
    }
    store.archive_changed(&mut state);
    log::info!("archive: deleted {} file(s) past the archive retention", old.len());
    Ok(old.len() as u64)
}

/// A path as a SQL string literal.
pub(crate) fn sql_string(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}
