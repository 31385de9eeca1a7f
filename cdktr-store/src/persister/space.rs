//! Watching the free space on the database's filesystem, so that the
//! persister stops writing before DuckDB hits a full disk (where a failed
//! checkpoint invalidates the database).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdktr_log::config::Setting;

/// How often free space is looked at.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Env var: the free space below which writes pause
/// ([`MinFreeSpace`]).
pub const ENV_MIN_FREE_SPACE: &str = "CDKTR_DB_MIN_FREE_SPACE";

/// Free space the database's filesystem must keep for writes to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinFreeSpace {
    /// The smaller of 1 GiB and 5% of the filesystem (the default).
    #[default]
    Auto,
    /// At least this many bytes; `0` never pauses.
    Bytes(u64),
    /// At least this share of the filesystem, in whole percent.
    Percent(u8),
}

impl MinFreeSpace {
    /// The threshold in bytes on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFreeSpace::Auto => (1 << 30).min(total / 20),
            MinFreeSpace::Bytes(b) => b,
            MinFreeSpace::Percent(p) => total / 100 * u64::from(p),
        }
    }
}

/// `0`, a size (`512MB`, `1GiB`, `1000000`: bytes without a unit) or a
/// share in whole percent (`5%`).
impl Setting for MinFreeSpace {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        const WHAT: &str = "expected a size such as 512MB or 1GiB, a share such as 5%, or 0";
        if let Some(p) = raw.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(MinFreeSpace::Percent(p)),
                _ => Err(WHAT),
            };
        }
        let digits = raw
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(raw.len());
        let (n, unit) = raw.split_at(digits);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(WHAT),
        };
        match n.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(MinFreeSpace::Bytes((v * scale as f64) as u64)),
            _ => Err(WHAT),
        }
    }
}

/// Free and total bytes of the filesystem holding `path`.
fn statvfs(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = s.f_frsize as u64;
    Ok((s.f_bavail as u64 * block, s.f_blocks as u64 * block))
}

/// Whether writes are paused for want of space, looked at once a second.
pub(super) struct Space {
    dir: Option<PathBuf>,
    min: MinFreeSpace,
    checked: Option<Instant>,
    /// Writes paused: free space under the threshold.
    pub low: bool,
    pub free: u64,
    total: u64,
}

impl Space {
    /// `db` is the database file; `None` (in memory) is never watched.
    pub fn new(db: Option<&Path>, min: MinFreeSpace) -> Space {
        let dir = db.map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        });
        Space {
            dir,
            min,
            checked: None,
            low: false,
            free: 0,
            total: 0,
        }
    }

    /// True when there is room to write `bytes` and keep the minimum free
    /// (reading the free space at most once a second; a write since has
    /// used some of it, which the minimum is there to absorb).
    pub fn room(&mut self, bytes: u64) -> bool {
        let Some(dir) = &self.dir else {
            return true;
        };
        if self.min == MinFreeSpace::Bytes(0) {
            return true;
        }
        if self.checked.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
            match statvfs(dir) {
                Ok((free, total)) => {
                    self.checked = Some(Instant::now());
                    self.free = free;
                    self.total = total;
                }
                Err(e) => {
                    log::debug!("persister: cannot read free space of {}: {e}", dir.display());
                    return !self.low;
                }
            }
        }
        let free = self.free;
        let min = self.min.bytes(self.total);
        let low = free < min.saturating_add(bytes);
        if low && !self.low {
            log::warn!(
                "persister: {free} bytes free on the database's filesystem ({}), under the {min} kept free \
                 plus the next write's {bytes}; writes paused until space returns (publishers keep their lines)",
                dir.display()
            );
        } else if !low && self.low {
            log::warn!("persister: {free} bytes free again on {}; writes resume", dir.display());
        }
        self.low = low;
        !low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_shares_and_zero_parse_and_anything_else_is_refused() {
        let p = MinFreeSpace::parse_setting;
        assert_eq!(p("0"), Ok(MinFreeSpace::Bytes(0)));
        assert_eq!(p("1GiB"), Ok(MinFreeSpace::Bytes(1 << 30)));
        assert_eq!(p("512 MB"), Ok(MinFreeSpace::Bytes(512_000_000)));
        assert_eq!(p("1000"), Ok(MinFreeSpace::Bytes(1000)));
        assert_eq!(p("5%"), Ok(MinFreeSpace::Percent(5)));
        for bad in ["", "lots", "-1GB", "5%%", "101%", "2.5%", "1 PB", "NaN", "inf"] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(MinFreeSpace::Auto.bytes(100 << 30), 1 << 30);
        assert_eq!(MinFreeSpace::Auto.bytes(1 << 30), (1 << 30) / 20);
    }

    #[test]
    fn a_write_larger_than_the_free_space_above_the_minimum_pauses_and_a_smaller_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let mut space = Space::new(Some(&db), MinFreeSpace::Bytes(1));
        assert!(space.room(0), "a test machine has a byte free: {}", space.free);
        let free = space.free;
        assert!(!space.room(free), "{free} bytes cannot be written keeping 1 free");
        assert!(space.low);
        assert!(space.room(free - 1));
        assert!(!space.low);
        // Nothing kept free: never paused, whatever the write.
        let mut unwatched = Space::new(Some(&db), MinFreeSpace::Bytes(0));
        assert!(unwatched.room(u64::MAX));
    }
}
