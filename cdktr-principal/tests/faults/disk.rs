//! The database's disk filling up under load, on a real tmpfs (root
//! needed): writes pause, or DuckDB fails and the database is reopened;
//! either way every line is stored once when space returns, no restart.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdktr_principal::testing::{free_port, workspace_binary};
use cdktr_store::{LogQuery, Store};

use crate::{collect_stderr, started, Killed};

/// A tmpfs of a few MiB on a new directory, unmounted on drop; `None`, with
/// the reason printed, where the test may not mount one.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("skipped: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().to_str().unwrap()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }

    /// Fills the disk until `left` bytes are free.
    fn fill(&self, left: u64) -> std::path::PathBuf {
        let path = self.path().join("filler");
        let take = self.free().saturating_sub(left);
        std::fs::write(&path, vec![0u8; take as usize]).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A principal on `db` with the free space it keeps, its stderr collected.
fn principal_on(db: &Path, ports: &[u16; 3], min_free: &str) -> (Killed, std::sync::Arc<std::sync::Mutex<String>>) {
    let child = started(
        Command::new(env!("CARGO_BIN_EXE_cdktr-principal"))
            .arg("--db")
            .arg(db)
            .args(["--api-port", &ports[0].to_string()])
            .args(["--listening-port", &ports[1].to_string()])
            .args(["--publishing-port", &ports[2].to_string()])
            .args(["--flush-interval", "200ms", "--min-free-space", min_free])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped()),
    );
    let mut child = child;
    let log = collect_stderr(&mut child);
    (child, log)
}

#[test]
fn a_filling_disk_pauses_writes_with_a_warning_and_everything_is_stored_once_when_space_returns() {
    // Kept free: 8 MiB (writes pause before DuckDB sees ENOSPC); then 0,
    // DuckDB running into the full disk itself: with 3 MiB left a write
    // fails (retried); with 24 MiB left the WAL passed DuckDB's checkpoint
    // threshold and the checkpoint failed, which invalidates the database
    // (measured: reopened 1) until writes became whole row groups, which
    // skip the WAL (sessions 10 and 11): now a write fails there first
    // (reopened 0, 600,000 lines sent). Either way no restart, every line
    // once.
    // The disk holds every line sent once the filler goes: the persister
    // takes lines while a write runs, so the first failure shows later and
    // up to ~300,000 lines were sent before it; with their WAL and a
    // checkpoint's new blocks they did not always fit in 64 MiB. When the
    // persister held 250,000 lines (session 10) up to 530,000 were sent,
    // and a checkpoint with its temporary files did not fit in 128 MiB
    // (reopened 69 times, each checkpoint out of space).
    for (min_free, left) in [("8MiB", 20u64 << 20), ("0", 3 << 20), ("0", 24 << 20)] {
        let Some(disk) = SmallDisk::mount("256m") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let db = disk.path().join("app.db");
        let ports = [free_port(), free_port(), free_port()];
        let (principal, log) = principal_on(&db, &ports, min_free);
        let filler = disk.fill(left);
        let bus = cdktr_log::BusConfig {
            host: "127.0.0.1".into(),
            listening_port: ports[1],
            publishing_port: ports[2],
        };
        let api_config = cdktr_log::ApiConfig {
            host: "127.0.0.1".into(),
            port: ports[0],
        };
        let publisher = cdktr_log::LogPublisher::builder(&bus)
            .acknowledged_by(&api_config)
            .spool_dir(spool.path())
            .stall_timeout(Duration::from_millis(500))
            .start()
            .unwrap();
        let mut api = cdktr_log::ApiClient::connect(&api_config).unwrap();
        let line = |i: usize| disk_line(i as u64, 8);
        let mut sent = 0;
        let end = Instant::now() + Duration::from_secs(180);
        let hit = loop {
            for _ in 0..5_000 {
                publisher.publish(line(sent)).unwrap();
                sent += 1;
            }
            let s = api.stats().unwrap();
            if s.space_low || s.failed_flushes > 0 {
                break s;
            }
            assert!(Instant::now() < end, "{min_free}: the disk never filled: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // More lines while it is full: held by the publisher, none lost.
        for _ in 0..20_000 {
            publisher.publish(line(sent)).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
        let paused = api.stats().unwrap();
        if min_free != "0" {
            assert!(paused.space_low, "{paused:?}");
            assert_eq!(paused.failed_flushes, hit.failed_flushes, "no write tried while paused");
            let warnings = log.lock().unwrap().matches("writes paused").count();
            assert_eq!(warnings, 1, "one warning:\n{}", log.lock().unwrap());
            let cli = Command::new(workspace_binary("cdktr-logs"))
                .args(["stats", "--api-port", &ports[0].to_string()])
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&cli.stdout).contains("warning: database writes paused"));
        }
        let held = publisher.stats();
        assert!(held.acknowledged < sent as u64, "{held:?}");
        let start = Instant::now();
        std::fs::remove_file(filler).unwrap();
        if let Err(e) = publisher.wait_persisted(Duration::from_secs(120)) {
            let stats = api.stats();
            panic!("{min_free}: {e}; {stats:?}\n{}", log.lock().unwrap());
        }
        let recovery = start.elapsed();
        let after = api.stats().unwrap();
        assert!(!after.space_low, "{after:?}");
        publisher.shutdown().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &principal.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut principal = principal;
        assert!(principal.0.wait().unwrap().success(), "{}", log.lock().unwrap());
        let (rows, distinct) = stored(&db);
        eprintln!(
            "min free {min_free}: sent {sent}, stored {distinct}, duplicated {}, lost {}; failed writes {}, \
             reopened {}, shed {}; stored again {recovery:?} after space returned",
            rows - distinct,
            sent - distinct,
            after.failed_flushes,
            after.reopened,
            after.shed,
        );
        assert_eq!((rows, distinct), (sent, sent), "{min_free}: every line once");
    }
}

/// A checkpoint that runs out of space makes DuckDB invalidate the attached
/// file alone (not the in-memory database it is attached to); the persister
/// sees it, opens the file again once space returns, and every line is
/// stored once. Small batches go through the write-ahead log, and a 1 MB
/// checkpoint threshold makes a checkpoint fail before the log fills the
/// disk: with 2, 3 and 4 MiB left each run reopened once (1 MiB: a log
/// write failed first; 6 MiB: nothing failed). With a probe that reads no
/// table (`SELECT 1`) the invalidation went unseen and the lines were never
/// written.
#[test]
fn a_checkpoint_failing_on_a_full_disk_invalidates_the_file_and_the_persister_opens_it_again() {
    use cdktr_store::{MinFreeSpace, Persister, PersisterConfig};
    let Some(disk) = SmallDisk::mount("64m") else {
        return;
    };
    let db = disk.path().join("app.db");
    let store = Store::open(&db).unwrap();
    store.set_checkpoint_threshold("1MB").unwrap();
    let config = PersisterConfig {
        batch_size: 500,
        flush_interval: Duration::from_millis(50),
        min_free_space: MinFreeSpace::Bytes(0),
        ..PersisterConfig::default()
    };
    let persister = Persister::start(&store, config).unwrap();
    let filler = disk.fill(3 << 20);
    let tx = persister.sender();
    let line = |i: u64| {
        cdktr_log::Line::from(cdktr_log::Envelope {
            publisher_id: "disk".into(),
            seq: i + 1,
            replays: true,
            message: disk_line(i, 4),
        })
    };
    // Lines until a write fails, a batch at a time once the last is
    // written: paced by the writes, not by time, so a busy machine (other
    // tests beside this one) fills the disk after as many lines as an idle
    // one (the failure came after 5,500-17,500 written lines).
    let mut sent = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while persister.stats().failed_flushes == 0 {
        assert!(
            sent < 200_000 && Instant::now() < end,
            "no write failed: {:?}",
            persister.stats()
        );
        if persister.stats().pending == 0 {
            for _ in 0..500 {
                tx.send(line(sent)).unwrap();
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_file(filler).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while persister.stats().persisted < sent {
        assert!(Instant::now() < end, "not all written again: {:?}", persister.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = persister.shutdown().unwrap();
    assert!(after.reopened >= 1, "the file was never opened again: {after:?}");
    assert_eq!(after.shed, 0, "{after:?}");
    drop(store);
    assert_eq!(stored(&db), (sent as usize, sent as usize), "every line once");
}

/// Line `i` of a disk test: its payload names it (repeated `copies` times),
/// so that each stored line can be told apart.
fn disk_line(i: u64, copies: usize) -> cdktr_log::LogMessage {
    cdktr_log::LogMessage {
        workflow_id: "disk".into(),
        workflow_name: "disk".into(),
        workflow_instance_id: format!("disk-{}", i % 7),
        task_name: "t".into(),
        task_instance_id: "t-1".into(),
        timestamp_ms: cdktr_log::message::now_ms(),
        level: cdktr_log::Level::Info,
        payload: format!("{i:08} {:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(copies),
    }
}

/// The rows in `db`'s `logstore` and their distinct payloads (each line's
/// payload is unique in these tests).
fn stored(db: &Path) -> (usize, usize) {
    let rows = Store::open(db)
        .unwrap()
        .query_logs(&LogQuery {
            start_ms: Some(0),
            limit: Some(usize::MAX >> 1),
            ..LogQuery::default()
        })
        .unwrap();
    let distinct: std::collections::HashSet<_> = rows.iter().map(|r| &r.payload).collect();
    (rows.len(), distinct.len())
}
