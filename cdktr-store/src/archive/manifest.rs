//! The manifest (`archive_file`, `archive_deleted`): which Parquet files
//! hold archived lines, read at start and reconciled with the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use duckdb::Connection;

use crate::error::{Error, Result};

/// Archived lines live under this folder of the archive directory.
pub(crate) const TABLE_DIR: &str = "logstore";
/// A file being written, not yet in the manifest, ends so: no reader's
/// `*.parquet` glob matches it.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// One file of the archive, as the manifest has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Its number, unique in the manifest.
    pub file_no: u64,
    /// Its path under the archive directory,
    /// `logstore/day=YYYY-MM-DD/part-NNNNNNNN.parquet`.
    pub path: String,
    /// The day (UTC) of its lines, `YYYY-MM-DD`.
    pub day: String,
    /// Lines in it.
    pub line_count: u64,
    /// Its size.
    pub bytes: u64,
    /// The oldest line's timestamp.
    pub min_timestamp_ms: i64,
    /// The newest line's timestamp.
    pub max_timestamp_ms: i64,
    /// The lowest line number in it.
    pub min_line_id: u64,
    /// The highest line number in it.
    pub max_line_id: u64,
}

impl ArchivedFile {
    /// The path of a file numbered `file_no` holding lines of `day`.
    pub(crate) fn path_for(day: &str, file_no: u64) -> String {
        format!("{TABLE_DIR}/day={day}/part-{file_no:08}.parquet")
    }
}

/// What the readers of one database see of its archive.
#[derive(Debug, Default)]
pub(crate) struct ArchiveState {
    /// Where the archive is; `None` until [`crate::Store::open_archive`].
    pub dir: Option<PathBuf>,
    /// The files holding archived lines, by number.
    pub files: BTreeMap<u64, ArchivedFile>,
    /// Bumped whenever `files` changes.
    pub generation: u64,
}

impl ArchiveState {
    /// Files and lines, as [`crate::Store::archive_totals`] reports them.
    pub fn totals(&self) -> (u64, u64) {
        (self.files.len() as u64, self.files.values().map(|f| f.line_count).sum())
    }

    /// The absolute paths of the files that may hold lines stamped in
    /// `[start, end)`.
    pub fn paths_for(&self, start: i64, end: Option<i64>) -> Vec<PathBuf> {
        let Some(dir) = &self.dir else { return Vec::new() };
        self.files
            .values()
            .filter(|f| f.max_timestamp_ms >= start && end.is_none_or(|e| f.min_timestamp_ms < e))
            .map(|f| dir.join(&f.path))
            .collect()
    }
}

/// The manifest as stored: every file ever recorded, and which were
/// deleted since.
pub(crate) struct Manifest {
    pub files: BTreeMap<u64, ArchivedFile>,
    pub deleted: BTreeSet<u64>,
}

impl Manifest {
    pub fn load(conn: &Connection) -> Result<Manifest> {
        let read = || Error::db("reading the archive manifest");
        let mut stmt = conn
            .prepare(
                "SELECT file_no, path, day::VARCHAR, line_count, bytes, min_timestamp_ms, max_timestamp_ms, \
                 min_line_id, max_line_id FROM archive_file",
            )
            .map_err(read())?;
        let files = stmt
            .query_map([], |r| {
                Ok(ArchivedFile {
                    file_no: r.get(0)?,
                    path: r.get(1)?,
                    day: r.get(2)?,
                    line_count: r.get(3)?,
                    bytes: r.get(4)?,
                    min_timestamp_ms: r.get(5)?,
                    max_timestamp_ms: r.get(6)?,
                    min_line_id: r.get(7)?,
                    max_line_id: r.get(8)?,
                })
            })
            .map_err(read())?
            .map(|f| f.map(|f| (f.file_no, f)))
            .collect::<duckdb::Result<BTreeMap<_, _>>>()
            .map_err(read())?;
        let mut stmt = conn.prepare("SELECT file_no FROM archive_deleted").map_err(read())?;
        let deleted = stmt
            .query_map([], |r| r.get::<_, u64>(0))
            .map_err(read())?
            .collect::<duckdb::Result<BTreeSet<_>>>()
            .map_err(read())?;
        Ok(Manifest { files, deleted })
    }

    /// The files not deleted.
    pub fn live(&self) -> impl Iterator<Item = &ArchivedFile> {
        self.files.values().filter(|f| !self.deleted.contains(&f.file_no))
    }
}

/// What `reconcile` found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Files recorded in the manifest whose rename a stop interrupted:
    /// renamed now.
    pub renamed: usize,
    /// Half-done files not in the manifest (their lines are still in
    /// DuckDB): removed.
    pub removed_unrecorded: usize,
    /// Files recorded as deleted that were still there: removed.
    pub removed_deleted: usize,
    /// Files the manifest lists that are missing: their lines cannot be
    /// read (logged as errors).
    pub missing: Vec<String>,
    /// `.parquet` files in the archive that the manifest does not know:
    /// left alone and not read.
    pub unknown: Vec<String>,
}

/// Brings the directory in line with the manifest after a stop at any
/// step of a move or a deletion: the manifest is the truth.
pub(crate) fn reconcile(dir: &Path, manifest: &Manifest) -> Result<Reconciled> {
    let mut done = Reconciled::default();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Archive { path, source }
    };
    let table = dir.join(TABLE_DIR);
    let known: BTreeMap<&str, u64> = manifest.files.values().map(|f| (f.path.as_str(), f.file_no)).collect();
    let days = match std::fs::read_dir(&table) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(io(&table)(e)),
    };
    for day in days {
        let day = day.map_err(io(&table))?;
        if !day.file_type().map_err(io(&day.path()))?.is_dir() {
            continue;
        }
        let day_name = day.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(day.path()).map_err(io(&day.path()))? {
            let file = file.map_err(io(&day.path()))?;
            let name = file.file_name().to_string_lossy().into_owned();
            let rel = format!("{TABLE_DIR}/{day_name}/{name}");
            if let Some(final_rel) = rel.strip_suffix(TMP_SUFFIX) {
                let live = known.get(final_rel).is_some_and(|n| !manifest.deleted.contains(n));
                if live && !dir.join(final_rel).exists() {
                    std::fs::rename(file.path(), dir.join(final_rel)).map_err(io(&file.path()))?;
                    sync_dir(&day.path())?;
                    done.renamed += 1;
                } else {
                    std::fs::remove_file(file.path()).map_err(io(&file.path()))?;
                    done.removed_unrecorded += 1;
                }
            } else if name.ends_with(".parquet") {
                match known.get(rel.as_str()) {
                    Some(n) if manifest.deleted.contains(n) => {
                        std::fs::remove_file(file.path()).map_err(io(&file.path()))?;
                        done.removed_deleted += 1;
                    }
                    Some(_) => {}
                    None => done.unknown.push(rel),
                }
            }
        }
        remove_if_empty(&day.path());
    }
    for f in manifest.live() {
        if !dir.join(&f.path).exists() {
            done.missing.push(f.path.clone());
        }
    }
    Ok(done)
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Archive {
            path: dir.to_path_buf(),
            source,
        })
}

/// Removes a day's folder once its last file is gone.
pub(crate) fn remove_if_empty(dir: &Path) {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The UTC day of a time, `YYYY-MM-DD`.
pub(crate) fn day_of(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        // Beyond chrono's range (±262,000 years): no day a log line has.
        None => format!("out-of-range-{}", ms.div_euclid(86_400_000)),
    }
}

#[cfg(test)]
mod tests {
    use super::day_of;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_400_000 - 1), "1970-01-01");
        assert_eq!(day_of(-1), "1969-12-31");
        // 2026-11-27T23:59:59.999Z and the next millisecond.
        assert_eq!(day_of(1_795_823_999_999), "2026-11-27");
        assert_eq!(day_of(1_795_824_000_000), "2026-11-28");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
    }
}
