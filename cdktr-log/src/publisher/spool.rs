//! The publisher's spill to disk: an append-only queue of encoded messages
//! in segment files, read back in order and deleted once read.
//!
//! Files for publisher `P` live in the spool directory as
//! `<hex(P)>.lock` (held locked while a publisher owns them) and
//! `<hex(P)>.<n>.seg`, read in order of `n`. A record is the sequence
//! number (u64 LE), the topic length (u32 LE), the frames' length (u32 LE)
//! and the topic and body bytes. A torn record at the end of a segment (the
//! process died while writing it) ends that segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

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
/// A new segment is started past this size, so that read segments can be
/// deleted while writing goes on.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Segment numbers start in the middle, so that messages still in memory
/// at shutdown can be written before the existing segments.
const FIRST_SEGMENT: u64 = 1 << 40;

pub(crate) struct Spool {
    dir: PathBuf,
    stem: String,
    /// Segment numbers, oldest first.
    segments: VecDeque<u64>,
    writer: Option<(u64, BufWriter<File>, u64)>,
    reader: Option<(u64, BufReader<File>)>,
    /// Bytes written and not yet read back.
    pub bytes: u64,
    /// Records written and not yet read back.
    pub records: u64,
    _lock: File,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
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
    /// whatever segments a previous owner left. `None` when another live
    /// publisher holds it.
    pub fn open(dir: &Path, publisher_id: &str) -> io::Result<Option<Spool>> {
        fs::create_dir_all(dir)?;
        let stem = hex(publisher_id);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{stem}.lock")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut segments = Vec::new();
        let (mut bytes, prefix) = (0, format!("{stem}."));
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
            bytes += entry.metadata()?.len();
            segments.push(n);
        }
        segments.sort_unstable();
        Ok(Some(Spool {
            dir: dir.to_owned(),
            stem,
            segments: segments.into(),
            writer: None,
            reader: None,
            bytes,
            // Unknown until read; non-zero so that the spool reads as not empty.
            records: u64::from(bytes > 0),
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

    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.bytes == 0
    }

    /// Appends a message.
    pub fn push(&mut self, p: &Pending) -> io::Result<()> {
        let full = self.writer.as_ref().is_none_or(|(_, _, len)| *len >= SEGMENT_BYTES);
        if full {
            let n = self.segments.back().map_or(FIRST_SEGMENT, |n| n + 1);
            let file = OpenOptions::new().create_new(true).append(true).open(self.path(n))?;
            self.segments.push_back(n);
            self.writer = Some((n, BufWriter::with_capacity(1 << 20, file), 0));
        }
        let (_, w, len) = self.writer.as_mut().expect("opened above");
        let size = write_record(w, p)?;
        *len += size;
        self.bytes += size;
        self.records += 1;
        Ok(())
    }

    /// Writes messages in a new segment before every existing one: what is
    /// still in memory when the publisher stops.
    pub fn push_front<'a>(&mut self, items: impl Iterator<Item = &'a Pending>) -> io::Result<()> {
        let n = self.segments.front().map_or(FIRST_SEGMENT, |n| n - 1);
        let mut w = BufWriter::new(File::create(self.path(n))?);
        for p in items {
            self.bytes += write_record(&mut w, p)?;
            self.records += 1;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        self.segments.push_front(n);
        Ok(())
    }

    /// Makes everything written visible to readers and to the next owner.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some((_, w, _)) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok(())
    }

    /// The oldest message not yet read back; read segments are deleted.
    pub fn pop(&mut self) -> io::Result<Option<Pending>> {
        loop {
            let Some(&n) = self.segments.front() else {
                self.bytes = 0;
                self.records = 0;
                return Ok(None);
            };
            if self.writer.as_ref().is_some_and(|(w, _, _)| *w == n) {
                self.flush()?;
            }
            if self.reader.as_ref().is_none_or(|(r, _)| *r != n) {
                self.reader = Some((n, BufReader::with_capacity(1 << 20, File::open(self.path(n))?)));
            }
            let (_, r) = self.reader.as_mut().expect("opened above");
            match read_record(r) {
                Ok(Some(p)) => {
                    let size = 16 + p.frames.len() as u64;
                    self.bytes = self.bytes.saturating_sub(size);
                    self.records = self.records.saturating_sub(1).max(u64::from(self.bytes > 0));
                    return Ok(Some(p));
                }
                Ok(None) => {}
                Err(e) => log::error!("spool {}: unreadable record, rest of segment skipped: {e}", self.stem),
            }
            // This segment is read to its end.
            self.reader = None;
            if self.writer.as_ref().is_some_and(|(w, _, _)| *w == n) {
                self.writer = None;
            }
            fs::remove_file(self.path(n))?;
            self.segments.pop_front();
        }
    }

    /// Deletes the lock file: called once the spool is empty and the owner
    /// stops, so that nothing is left behind.
    pub fn remove(self) -> io::Result<()> {
        if self.segments.is_empty() {
            fs::remove_file(self.dir.join(format!("{}.lock", self.stem)))?;
        }
        Ok(())
    }
}

fn write_record(w: &mut impl Write, p: &Pending) -> io::Result<u64> {
    w.write_all(&p.seq.to_le_bytes())?;
    w.write_all(&(p.split as u32).to_le_bytes())?;
    w.write_all(&(p.frames.len() as u32).to_le_bytes())?;
    w.write_all(&p.frames)?;
    Ok(16 + p.frames.len() as u64)
}

fn read_record(r: &mut impl Read) -> io::Result<Option<Pending>> {
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
mod tests {
    use super::*;

    fn p(seq: u64, n: usize) -> Pending {
        Pending {
            seq,
            frames: vec![seq as u8; n],
            split: 1,
        }
    }

    #[test]
    fn reads_back_in_order_across_segments_and_deletes_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), "pub/1 ✓").unwrap().unwrap();
        assert!(
            Spool::open(dir.path(), "pub/1 ✓").unwrap().is_none(),
            "held by the first"
        );
        // Three segments' worth.
        let big = (SEGMENT_BYTES / 2) as usize;
        for seq in 1..=5 {
            s.push(&p(seq, big)).unwrap();
        }
        assert!(s.segments.len() >= 3);
        assert_eq!(s.pop().unwrap().unwrap().seq, 1);
        s.push(&p(6, 10)).unwrap();
        let seqs: Vec<u64> = std::iter::from_fn(|| s.pop().unwrap()).map(|p| p.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5, 6]);
        assert!(s.is_empty());
        let segs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().ends_with(".seg"));
        assert_eq!(segs.count(), 0);
        s.remove().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
    }

    #[test]
    fn what_is_left_survives_its_owner_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), "a").unwrap().unwrap();
        for seq in 3..=4 {
            s.push(&p(seq, 100)).unwrap();
        }
        s.push_front([p(1, 5), p(2, 5)].iter()).unwrap();
        s.flush().unwrap();
        drop(s);
        // A torn record at the end of the last segment.
        let last = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .max()
            .unwrap();
        OpenOptions::new()
            .append(true)
            .open(last)
            .unwrap()
            .write_all(&[9, 0, 0])
            .unwrap();
        assert_eq!(Spool::orphans(dir.path()), ["a"]);
        let mut s = Spool::open(dir.path(), "a").unwrap().unwrap();
        assert!(Spool::orphans(dir.path()).is_empty(), "owned again");
        let seqs: Vec<u64> = std::iter::from_fn(|| s.pop().unwrap()).map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        s.remove().unwrap();
        assert!(Spool::orphans(dir.path()).is_empty());
    }
}
