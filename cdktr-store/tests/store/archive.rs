//! The archive in-process: moves by day, one history across the boundary,
//! retention by whole days, and what a restart does with a move cut short.

use std::cell::Cell;
use std::path::Path;

use cdktr_store::archive::{archive_pass, ArchiveConfig};
use cdktr_store::Origin;

use super::*;

const DAY: i64 = 86_400_000;
/// "Now" for these tests: ten days after `T0`.
const NOW: i64 = T0 + 10 * DAY;

/// `n` lines spread over three days from `T0`, instances interleaved.
fn old_lines(n: usize) -> Vec<LogMessage> {
    (0..n)
        .map(|i| LogMessage {
            timestamp_ms: T0 + (i as i64 * 3 * DAY) / n as i64,
            ..message(i)
        })
        .collect()
}

/// `n` lines stamped within the last hour of `NOW`.
fn recent_lines(n: usize) -> Vec<LogMessage> {
    (0..n)
        .map(|i| LogMessage {
            timestamp_ms: NOW - 3_600_000 + i as i64,
            payload: format!("recent {i}"),
            ..message(i)
        })
        .collect()
}

fn week() -> ArchiveConfig {
    ArchiveConfig {
        hot_retention: Some(Duration::from_secs(7 * 86_400)),
        chunk_lines: 700,
        row_group_lines: 256,
        ..ArchiveConfig::default()
    }
}

fn open(dir: &Path) -> Store {
    let store = Store::open(dir.join("app.db")).unwrap();
    store.open_archive(dir.join("archive")).unwrap();
    store.lock_down().unwrap();
    store
}

/// Every line `q` matches, page by page of `page` lines, with origins.
fn history(store: &Store, q: &LogQuery, page: usize) -> Vec<(LogMessage, Option<Origin>)> {
    let mut q = LogQuery {
        start_ms: Some(i64::MIN),
        limit: Some(page),
        ..q.clone()
    };
    let mut all = Vec::new();
    loop {
        let p = store.query_page(&q, usize::MAX).unwrap();
        all.extend(p.lines.into_iter().zip(p.origins));
        match p.next {
            Some(next) => q.after = Some(next),
            None => return all,
        }
    }
}

fn hot_count(store: &Store) -> i64 {
    let rows = store.sql("SELECT count(*) FROM logstore", 10, 1 << 20).unwrap();
    match rows.rows[0][0] {
        cdktr_store::SqlValue::Int(n) => n,
        ref other => panic!("count is {other:?}"),
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(dir.join("archive/logstore")) else {
        return out;
    };
    for day in days {
        let day = day.unwrap();
        for f in std::fs::read_dir(day.path()).unwrap() {
            out.push(format!(
                "{}/{}",
                day.file_name().to_string_lossy(),
                f.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn old_lines_move_to_parquet_by_day_and_history_reads_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (old, recent) = (old_lines(3000), recent_lines(200));
    persist(
        &store,
        PersisterConfig::default(),
        &[old.clone(), recent.clone()].concat(),
    );
    let everything = LogQuery::default();
    let one_instance = LogQuery {
        workflow_instance_id: Some("wf1-3".into()),
        ..LogQuery::default()
    };
    let newest_errors = LogQuery {
        order: Order::NewestFirst,
        levels: Some(LevelFilter::AtLeast(Level::Warn)),
        ..LogQuery::default()
    };
    let queries = [everything.clone(), one_instance, newest_errors];
    let before: Vec<_> = queries.iter().map(|q| history(&store, q, 97)).collect();
    let counts: Vec<u64> = queries
        .iter()
        .map(|q| store.count_logs(&all_of(q.clone())).unwrap())
        .collect();

    let report = archive_pass(&store, &week(), NOW, &|| false).unwrap();
    assert_eq!(report.lines, old.len() as u64);
    assert_eq!(
        hot_count(&store),
        recent.len() as i64,
        "only recent lines stay in DuckDB"
    );
    let files = files_under(dir.path());
    assert!(
        files.iter().all(|f| f.ends_with(".parquet")),
        "no temporary file left: {files:?}"
    );
    let days: std::collections::BTreeSet<&str> = files.iter().map(|f| f.split('/').next().unwrap()).collect();
    let want_days: std::collections::BTreeSet<i64> = old.iter().map(|m| m.timestamp_ms.div_euclid(DAY)).collect();
    assert_eq!(days.len(), want_days.len(), "one folder per UTC day: {files:?}");
    assert!(days.iter().all(|d| d.starts_with("day=2026-11-")), "{days:?}");
    assert_eq!(report.files as usize, files.len());

    for (q, want) in queries.iter().zip(&before) {
        assert_eq!(&history(&store, q, 97), want, "{q:?}");
        assert_eq!(&history(&store, q, 10_000), want, "{q:?} in one page");
    }
    let after: Vec<u64> = queries
        .iter()
        .map(|q| store.count_logs(&all_of(q.clone())).unwrap())
        .collect();
    assert_eq!(after, counts);
    // A second pass has nothing to do.
    assert_eq!(archive_pass(&store, &week(), NOW, &|| false).unwrap().lines, 0);
}

#[test]
fn pages_never_skip_or_repeat_while_chunks_move_between_them() {
    let lines = [old_lines(2500), recent_lines(100)].concat();
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        persist(&store, PersisterConfig::default(), &lines);
        let q = LogQuery {
            order,
            ..LogQuery::default()
        };
        let want = history(&store, &q, 10_000);
        // Read in pages, moving one chunk before each page.
        let mut q = LogQuery {
            start_ms: Some(i64::MIN),
            limit: Some(150),
            ..q
        };
        let mut got = Vec::new();
        loop {
            let chunks = Cell::new(0);
            archive_pass(&store, &week(), NOW, &|| {
                chunks.set(chunks.get() + 1);
                chunks.get() > 1
            })
            .unwrap();
            let p = store.query_page(&q, usize::MAX).unwrap();
            got.extend(p.lines.into_iter().zip(p.origins));
            match p.next {
                Some(next) => q.after = Some(next),
                None => break,
            }
        }
        assert_eq!(got.len(), want.len(), "{order:?}");
        assert_eq!(got, want, "{order:?}");
        assert_eq!(hot_count(&store), 100, "every old line moved meanwhile");
    }
}

#[test]
fn line_numbers_continue_after_every_line_is_archived_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let old = old_lines(500);
    {
        let store = open(dir.path());
        persist(&store, PersisterConfig::default(), &old);
        archive_pass(&store, &week(), NOW, &|| false).unwrap();
        assert_eq!(hot_count(&store), 0);
    }
    let store = open(dir.path());
    // Same timestamps as old lines: only the line numbers order them.
    let again: Vec<LogMessage> = old
        .iter()
        .map(|m| LogMessage {
            payload: format!("again {}", m.payload),
            ..m.clone()
        })
        .collect();
    // From another publisher: "p" 1..=500 are already stored.
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    for (i, m) in again.into_iter().enumerate() {
        persister.sender().send(env("q", i as u64 + 1, m)).unwrap();
    }
    persister.shutdown().unwrap();
    let got = history(&store, &LogQuery::default(), 64);
    let files = store.archived_files();
    assert_eq!(files.iter().map(|f| f.line_count).sum::<u64>(), 500, "{files:?}");
    assert_eq!(hot_count(&store), 500);
    assert_eq!(got.len(), 1000);
    for pair in got.windows(2) {
        assert!(pair[0].0.timestamp_ms <= pair[1].0.timestamp_ms);
    }
    // At equal timestamps the archived (earlier stored) line comes first.
    for pair in got.chunks(2) {
        if pair.len() == 2 && pair[0].0.timestamp_ms == pair[1].0.timestamp_ms {
            assert!(pair[1].0.payload.starts_with("again "), "{pair:?}");
        }
    }
}

#[test]
fn archive_retention_deletes_only_whole_days_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    persist(&store, PersisterConfig::default(), &old_lines(900));
    archive_pass(&store, &week(), NOW, &|| false).unwrap();
    let per_day = |store: &Store| -> Vec<(String, u64)> {
        let mut days = std::collections::BTreeMap::new();
        for f in store.archived_files() {
            *days.entry(f.day).or_insert(0) += f.line_count;
        }
        days.into_iter().collect()
    };
    let days = per_day(&store);
    assert!(days.len() >= 3, "{days:?}");
    // Keep 8.5 days at NOW = T0 + 10 days: only days ending before
    // T0 + 1.5 days go, so the first day (and nothing of the second).
    let config = ArchiveConfig {
        archive_retention: Some(Duration::from_millis((8.5 * DAY as f64) as u64)),
        ..week()
    };
    let report = archive_pass(&store, &config, NOW, &|| false).unwrap();
    assert!(report.deleted_files >= 1);
    let left = per_day(&store);
    assert_eq!(left, days[1..].to_vec(), "exactly the oldest day is gone");
    let first_day = T0.div_euclid(DAY) * DAY + DAY;
    let remaining = store.count_logs(&all_of(LogQuery::default())).unwrap();
    let want = old_lines(900).iter().filter(|m| m.timestamp_ms >= first_day).count() as u64;
    assert_eq!(remaining, want);
    assert!(!files_under(dir.path())
        .iter()
        .any(|f| f.starts_with(&format!("day={}", days[0].0))));
    // Recorded in the manifest, and still so after a reopen.
    drop(store);
    let store = open(dir.path());
    assert_eq!(per_day(&store), left);
}

#[test]
fn a_restart_removes_unrecorded_temporary_files_and_leaves_unknown_files_unread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        persist(&store, PersisterConfig::default(), &old_lines(300));
        archive_pass(&store, &week(), NOW, &|| false).unwrap();
    }
    let day_dir = dir.path().join("archive/logstore/day=2026-11-19");
    std::fs::create_dir_all(&day_dir).unwrap();
    std::fs::write(day_dir.join("part-00009999.parquet.tmp"), b"half written").unwrap();
    std::fs::write(day_dir.join("stray.parquet"), b"not ours").unwrap();
    let store = Store::open(dir.path().join("app.db")).unwrap();
    let done = store.open_archive(dir.path().join("archive")).unwrap();
    assert_eq!(done.removed_unrecorded, 1);
    assert_eq!(done.unknown, ["logstore/day=2026-11-19/stray.parquet"]);
    assert!(!day_dir.join("part-00009999.parquet.tmp").exists());
    assert_eq!(store.count_logs(&all_of(LogQuery::default())).unwrap(), 300);
}

#[test]
fn the_instance_index_drops_blocks_left_without_hot_lines_and_archived_lines_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Three blocks of line numbers; the move empties the first two.
    let (old, recent) = (old_lines(45_000), recent_lines(300));
    persist(
        &store,
        PersisterConfig::default(),
        &[old.clone(), recent.clone()].concat(),
    );
    let one_instance = LogQuery {
        workflow_instance_id: Some("wf1-4".into()),
        ..LogQuery::default()
    };
    let before = history(&store, &one_instance, 1000);
    assert!(before.len() > 2000);
    let first_block = |store: &Store| {
        let rows = store
            .sql("SELECT min(block) FROM instance_block", 1, 1 << 10)
            .unwrap()
            .rows;
        rows[0][0].to_text()
    };
    assert_eq!(first_block(&store), "0");
    let config = ArchiveConfig {
        chunk_lines: 10_000,
        row_group_lines: 2048,
        ..week()
    };
    let report = archive_pass(&store, &config, NOW, &|| false).unwrap();
    assert_eq!(report.lines, old.len() as u64);
    // The hot lines are 45,000..45,300: all in block 2.
    assert_eq!(first_block(&store), "2");
    assert_eq!(history(&store, &one_instance, 1000), before);
    assert_eq!(
        store.count_logs(&all_of(one_instance.clone())).unwrap(),
        before.len() as u64
    );
    // Lines stored after the move are found with the archived ones.
    let more: Vec<LogMessage> = recent_lines(50)
        .into_iter()
        .map(|m| LogMessage {
            workflow_instance_id: "wf1-4".into(),
            payload: format!("later {}", m.payload),
            ..m
        })
        .collect();
    let persister = Persister::start(&store, PersisterConfig::default()).unwrap();
    let tx = persister.sender();
    for (i, m) in more.iter().enumerate() {
        tx.send(env("q", i as u64 + 1, m.clone())).unwrap();
    }
    persister.shutdown().unwrap();
    assert_eq!(
        store.count_logs(&all_of(one_instance)).unwrap(),
        (before.len() + more.len()) as u64
    );
}
