use super::*;
use std::time::Duration;

fn p(seq: u64, n: usize) -> Pending {
    Pending {
        seq,
        frames: vec![seq as u8; n],
        split: 1,
    }
}

fn segment_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().ends_with(".seg"))
        .count()
}

fn read_all(s: &mut Spool) -> Vec<u64> {
    std::iter::from_fn(|| s.read().unwrap()).map(|p| p.seq).collect()
}

#[test]
fn lines_past_memory_are_read_back_in_order_and_acknowledged_segments_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), "pub/1 ✓").unwrap().unwrap();
    assert!(
        Spool::open(dir.path(), "pub/1 ✓").unwrap().is_none(),
        "held by the first"
    );
    let big = (SEGMENT_BYTES / 2) as usize;
    // 1-2 also in memory, 3-5 only here: three segments' worth.
    for seq in 1..=5 {
        s.append(&p(seq, big), seq <= 2).unwrap();
    }
    s.flush().unwrap();
    assert!(s.segments.len() >= 3);
    assert!(s.is_behind());
    assert_eq!(s.read().unwrap().unwrap().seq, 3);
    s.append(&p(6, 10), false).unwrap();
    assert_eq!(read_all(&mut s), [4, 5, 6]);
    assert!(!s.is_behind(), "caught up");
    s.release(4).unwrap();
    assert!(segment_files(dir.path()) < 3, "segments up to 4 deleted");
    s.release(6).unwrap();
    assert!(s.is_empty());
    assert_eq!(s.bytes(), 0);
    assert_eq!(segment_files(dir.path()), 0);
    s.remove().unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
}

#[test]
fn a_dead_owners_lines_are_all_read_again_by_each_adopter_and_a_torn_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), "a").unwrap().unwrap();
    // Held in memory by their owner, written all the same.
    for seq in 1..=4 {
        s.append(&p(seq, 100), true).unwrap();
    }
    s.flush().unwrap();
    s.append(&p(5, 100), true).unwrap(); // never written: the owner dies first
    drop(s);
    let last = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[9, 0, 0])
        .unwrap();
    let size = fs::metadata(&last).unwrap().len();
    for _ in 0..2 {
        assert_eq!(Spool::orphans(dir.path()), ["a"]);
        let mut s = Spool::open(dir.path(), "a").unwrap().unwrap();
        assert!(Spool::orphans(dir.path()).is_empty(), "owned again");
        assert_eq!(read_all(&mut s), [1, 2, 3, 4]);
        // An adopter that dies before the acknowledgements rewrote nothing.
        drop(s);
        assert_eq!(fs::metadata(&last).unwrap().len(), size);
    }
    let mut s = Spool::open(dir.path(), "a").unwrap().unwrap();
    assert_eq!(read_all(&mut s), [1, 2, 3, 4]);
    s.release(4).unwrap();
    s.remove().unwrap();
    assert!(Spool::orphans(dir.path()).is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unacknowledged_segments_stay_however_far_reading_went() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), "b").unwrap().unwrap();
    let big = (SEGMENT_BYTES / 2) as usize;
    for seq in 1..=4 {
        s.append(&p(seq, big), false).unwrap();
    }
    assert_eq!(read_all(&mut s), [1, 2, 3, 4]);
    s.release(1).unwrap();
    let left = segment_files(dir.path());
    assert!(left >= 1);
    drop(s);
    let mut s = Spool::open(dir.path(), "b").unwrap().unwrap();
    let seqs = read_all(&mut s);
    assert!(seqs.ends_with(&[2, 3, 4]), "{seqs:?}");
}

#[test]
fn lines_not_yet_written_are_counted_past_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), "c").unwrap().unwrap();
    s.append(&p(1, 10), true).unwrap();
    s.flush().unwrap();
    assert_eq!(s.unwritten_after(0), 0, "written");
    for seq in 2..=5 {
        s.append(&p(seq, 10), true).unwrap();
    }
    assert_eq!(s.unwritten_after(0), 4);
    assert_eq!(s.unwritten_after(3), 2);
    s.flush().unwrap();
    assert_eq!(s.unwritten_after(0), 0);
}

#[test]
fn a_lock_busy_for_a_moment_is_not_taken_for_a_live_owner() {
    let dir = tempfile::tempdir().unwrap();
    // What a scan for orphans does to every lock file: open and lock it.
    let probe = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(format!("{}.lock", hex("fresh"))))
        .unwrap();
    probe.try_lock().unwrap();
    std::thread::scope(|s| {
        let opener = s.spawn(|| Spool::open(dir.path(), "fresh").unwrap());
        // Released long before HELD_FOR_GOOD, and after the opener's first try.
        std::thread::sleep(Duration::from_millis(50));
        drop(probe);
        assert!(
            opener.join().unwrap().is_some(),
            "a momentary probe was taken for a live publisher"
        );
    });
}

#[test]
fn publishers_opening_spools_while_others_scan_for_orphans_all_get_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let scanning = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while scanning.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(Spool::orphans(dir.path()).is_empty(), "a live spool adopted");
                }
            });
        }
        let openers: Vec<_> = (0..16)
            .map(|t| {
                let dir = dir.path();
                s.spawn(move || {
                    (0..20)
                        .map(|i| {
                            let id = format!("pub-{t}-{i}");
                            let spool = Spool::open(dir, &id).unwrap();
                            assert!(spool.is_some(), "{id}: its own new spool refused");
                            // The lock it holds is the file a later
                            // publisher would look at.
                            assert!(
                                dir.join(format!("{}.lock", hex(&id))).exists(),
                                "{id}: lock file removed"
                            );
                            spool
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // The scanners stop whatever the openers found, then it is told.
        let results: Vec<_> = openers.into_iter().map(|o| o.join()).collect();
        scanning.store(false, std::sync::atomic::Ordering::Relaxed);
        let held: Vec<_> = results.into_iter().flat_map(|r| r.unwrap()).collect();
        assert_eq!(held.len(), 320);
    });
}
