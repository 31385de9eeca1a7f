//! The publisher's spool: a write-ahead log of encoded messages in segment
//! files, deleted once the principal has persisted them.
//!
//! Files for publisher `P` live in the spool directory as
//! `<hex(P)>.lock` (held locked while a publisher owns them) and
//! `<hex(P)>.<n>.seg`, read in order of `n`. A record is the sequence
//! number (u64 LE), the topic length (u32 LE), the frames' length (u32 LE)
//! and the topic and body bytes. A torn record at the end of a segment (the
//! process died while writing it) ends that segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An encoded message: topic and body in one allocation.
pub(crate) struct Pending {
    pub seq: u64,
    pub frames: Vec<u8>,
    pub split: usize,
}

impl Pending {
    pub fn new(seq: u64, topic: &[u8], body: &[u8]) -> Pending {
        let mut frames = Vec::with_capacity(topic.len() + body.len());
        frames.extend_from_slice(topic);
        frames.extend_from_slice(body);
        Pending {
            seq,
            frames,
            split: topic.len(),
        }
    }
}

/// Records larger than this are taken as corruption.
const MAX_RECORD: u32 = 64 << 20;
/// A new segment is started past this size, so that acknowledged segments
/// can be deleted while writing goes on.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Segment numbers start in the middle of the range, as earlier versions
/// wrote segments before the first one.
const FIRST_SEGMENT: u64 = 1 << 40;
/// Most bytes held for writing: past it they are written at once, and
/// while writes fail (a full disk) no more is taken (see [`Spool::append`]).
const MAX_UNWRITTEN: usize = 8 << 20;
/// The size of a record's header.
pub(crate) const HEADER: u64 = 16;

/// A publisher's write-ahead log: every line it accepts is appended (in
/// batches, one `write` per batch), lines past the memory cap are read back
/// from it, and a segment is deleted once the principal has persisted all
/// its lines. A killed publisher's spool so holds every line it had
/// accepted and the principal had not persisted, for the next publisher on
/// the directory to send. Nothing is ever rewritten: reading a spool again
/// is harmless.
pub(crate) struct Spool {
    dir: PathBuf,
    stem: String,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    writer: Option<Writer>,
    /// Records appended to the writer's segment and not yet written.
    unwritten: Vec<u8>,
    /// The number of the first of them.
    unwritten_first: Option<u64>,
    /// The first record not held in memory; `None` when memory holds
    /// everything after what was acknowledged.
    reader: Option<Reader>,
    /// Bytes in segment files and unwritten.
    bytes: u64,
    _lock: File,
}

struct Segment {
    n: u64,
    bytes: u64,
    /// The highest sequence number written to or read from it.
    last_seq: u64,
}

struct Writer {
    n: u64,
    file: File,
    /// Bytes in the file: record boundaries only.
    written: u64,
}

struct Reader {
    n: u64,
    offset: u64,
    file: Option<BufReader<File>>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// How long a spool's lock may be busy before its holder counts as a live
/// publisher. Publishers starting at once in one spool directory each
/// look for orphans, briefly locking every lock file there, their
/// neighbours' included: taken as held for good, 2 of 3 runs of 64
/// publishers starting together failed ("a live publisher ... holds its
/// spool").
const HELD_FOR_GOOD: Duration = Duration::from_secs(2);

/// Whether the locked `file` is still the one at `path`.
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let held = file.metadata()?;
        match fs::metadata(path) {
            Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        Ok(true)
    }
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Spool {
    /// Takes the spool of `publisher_id` in `dir` (creating both), with
    /// whatever segments a previous owner left, all to be read. `None` when
    /// another live publisher holds it (checked for up to [`HELD_FOR_GOOD`]:
    /// a publisher looking for orphans holds each lock for a moment).
    pub fn open(dir: &Path, publisher_id: &str) -> io::Result<Option<Spool>> {
        fs::create_dir_all(dir)?;
        let stem = hex(publisher_id);
        let path = dir.join(format!("{stem}.lock"));
        let deadline = Instant::now() + HELD_FOR_GOOD;
        let lock = loop {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            match lock.try_lock() {
                // A scan for orphans removes lock files without segments:
                // one removed between our open and our lock guards nothing.
                Ok(()) if still_at(&lock, &path)? => break lock,
                Ok(()) => continue,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        };
        let mut segments = Vec::new();
        let prefix = format!("{stem}.");
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata()?.len();
            segments.push(Segment { n, bytes, last_seq: 0 });
        }
        segments.sort_unstable_by_key(|s| s.n);
        let reader = segments.first().map(|s| Reader {
            n: s.n,
            offset: 0,
            file: None,
        });
        Ok(Some(Spool {
            dir: dir.to_owned(),
            stem,
            bytes: segments.iter().map(|s| s.bytes).sum(),
            segments: segments.into(),
            writer: None,
            unwritten: Vec::new(),
            unwritten_first: None,
            reader,
            _lock: lock,
        }))
    }

    /// Publisher ids with spool files in `dir` and no live owner. Lock
    /// files with no segments and no owner are deleted on the way.
    pub fn orphans(dir: &Path) -> Vec<String> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        let mut ids = Vec::new();
        for name in &names {
            let Some(stem) = name.strip_suffix(".lock") else {
                continue;
            };
            let Some(id) = unhex(stem) else {
                continue;
            };
            let path = dir.join(name);
            let Ok(f) = File::open(&path) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue; // a live publisher owns it
            }
            let prefix = format!("{stem}.");
            if names.iter().any(|n| n.starts_with(&prefix) && n.ends_with(".seg")) {
                ids.push(id);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        ids.sort();
        ids
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{}.{n:020}.seg", self.stem))
    }

    /// No segment left: everything written was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes in the spool directory and waiting to be written.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Some records are only in the spool, not in memory.
    pub fn is_behind(&self) -> bool {
        self.reader.is_some()
    }

    /// Appends a record, to be written at the next [`flush`](Self::flush).
    /// `in_memory` says whether the caller also keeps it in memory; if not,
    /// it is read back by [`read`](Self::read).
    ///
    /// # Errors
    /// `StorageFull` when [`MAX_UNWRITTEN`] bytes wait and cannot be
    /// written: the record is not taken. A segment that
    /// cannot be created.
    pub fn append(&mut self, p: &Pending, in_memory: bool) -> io::Result<()> {
        if self.unwritten.len() >= MAX_UNWRITTEN && self.flush().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "spool writes failing and the unwritten buffer is full",
            ));
        }
        let full = self
            .writer
            .as_ref()
            .is_none_or(|w| w.written + self.unwritten.len() as u64 >= SEGMENT_BYTES);
        if full && self.flush().is_ok() {
            let n = self.segments.back().map_or(FIRST_SEGMENT, |s| s.n + 1);
            let file = OpenOptions::new().create_new(true).append(true).open(self.path(n))?;
            self.segments.push_back(Segment {
                n,
                bytes: 0,
                last_seq: 0,
            });
            self.writer = Some(Writer { n, file, written: 0 });
        }
        let Some(w) = self.writer.as_ref() else {
            return Err(io::Error::other("no spool segment open"));
        };
        if !in_memory && self.reader.is_none() {
            self.reader = Some(Reader {
                n: w.n,
                offset: w.written + self.unwritten.len() as u64,
                file: None,
            });
        }
        self.unwritten_first.get_or_insert(p.seq);
        let size = write_record(&mut self.unwritten, p);
        let seg = self.segments.back_mut().expect("the writer's segment");
        seg.bytes += size;
        seg.last_seq = p.seq;
        self.bytes += size;
        Ok(())
    }

    /// Writes what was appended: one `write`, into the OS page cache (it
    /// survives the process, not a power cut). A failed write is undone
    /// (the file keeps whole records only) and retried at the next call.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if self.unwritten.is_empty() {
            return Ok(());
        }
        match w.file.write_all(&self.unwritten) {
            Ok(()) => {
                w.written += self.unwritten.len() as u64;
                self.unwritten.clear();
                self.unwritten_first = None;
                Ok(())
            }
            Err(e) => {
                let _ = w.file.set_len(w.written);
                Err(e)
            }
        }
    }

    /// The next record not held in memory, oldest first; `None` once
    /// memory holds everything (or writes are failing and the rest is not
    /// written yet).
    pub fn read(&mut self) -> io::Result<Option<Pending>> {
        loop {
            let Some(r) = self.reader.as_ref() else {
                return Ok(None);
            };
            let (n, offset) = (r.n, r.offset);
            if let Some(w) = self.writer.as_ref().filter(|w| w.n == n) {
                if offset >= w.written && !self.unwritten.is_empty() && self.flush().is_err() {
                    return Ok(None);
                }
                let written = self.writer.as_ref().map_or(0, |w| w.written);
                if offset >= written {
                    self.reader = None; // caught up
                    return Ok(None);
                }
            }
            let path = self.path(n);
            let r = self.reader.as_mut().expect("checked above");
            if r.file.is_none() {
                let mut f = File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                r.file = Some(BufReader::with_capacity(1 << 20, f));
            }
            let result = read_record(r.file.as_mut().expect("opened above"));
            match result {
                Ok(Some(p)) => {
                    r.offset += HEADER + p.frames.len() as u64;
                    if let Some(seg) = self.segments.iter_mut().find(|s| s.n == n) {
                        seg.last_seq = seg.last_seq.max(p.seq);
                    }
                    return Ok(Some(p));
                }
                Ok(None) => {}
                Err(e) => log::error!("spool {}: unreadable record, rest of segment skipped: {e}", self.stem),
            }
            // The end of a segment: go on with the next one.
            let next = self.segments.iter().map(|s| s.n).find(|&s| s > n);
            self.reader = next.map(|n| Reader {
                n,
                offset: 0,
                file: None,
            });
        }
    }

    /// Deletes the segments whose lines are all acknowledged (and read).
    pub fn release(&mut self, acknowledged: u64) -> io::Result<()> {
        while let Some(front) = self.segments.front() {
            let unread = self.reader.as_ref().is_some_and(|r| r.n <= front.n);
            if unread || front.last_seq > acknowledged {
                break;
            }
            if self.writer.as_ref().is_some_and(|w| w.n == front.n) {
                self.writer = None;
                self.unwritten.clear();
                self.unwritten_first = None;
            }
            let (n, bytes) = (front.n, front.bytes);
            fs::remove_file(self.path(n))?;
            self.bytes = self.bytes.saturating_sub(bytes);
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Lines appended, numbered past `acknowledged`, and not written: what
    /// a publisher stopping now would lose.
    pub fn unwritten_after(&self, acknowledged: u64) -> u64 {
        let (Some(first), Some(seg)) = (self.unwritten_first, self.segments.back()) else {
            return 0;
        };
        seg.last_seq.saturating_sub(acknowledged.max(first.saturating_sub(1)))
    }

    /// Deletes the lock file once no segment is left, so that nothing is
    /// left behind.
    pub fn remove(self) -> io::Result<()> {
        if self.segments.is_empty() {
            fs::remove_file(self.dir.join(format!("{}.lock", self.stem)))?;
        }
        Ok(())
    }
}

fn write_record(out: &mut Vec<u8>, p: &Pending) -> u64 {
    out.extend_from_slice(&p.seq.to_le_bytes());
    out.extend_from_slice(&(p.split as u32).to_le_bytes());
    out.extend_from_slice(&(p.frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&p.frames);
    HEADER + p.frames.len() as u64
}

pub(crate) fn read_record(r: &mut impl Read) -> io::Result<Option<Pending>> {
    let mut head = [0u8; 16];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let split = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(head[12..].try_into().expect("4 bytes"));
    if len > MAX_RECORD || split > len || seq == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad record header"));
    }
    let mut frames = vec![0; len as usize];
    match r.read_exact(&mut frames) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(Pending {
        seq,
        frames,
        split: split as usize,
    }))
}

#[cfg(test)]
mod tests;
