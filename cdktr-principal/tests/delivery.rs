//! The delivery guarantee under faults: the principal killed and
//! restarted, down at the start, a database failing writes, a subscriber
//! that never reads. Each scenario ends by counting what the database holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cdktr_log::{ApiConfig, BusConfig, Level, LogMessage, LogPublisher, PublisherStats};
use cdktr_store::{LogQuery, Store};

use cdktr_principal::testing::{free_port, ChildPrincipal as Running, TestKeys};

const WAIT: Duration = Duration::from_secs(120);

/// Fixed ports, so that a restarted principal is where the publishers
/// look for it.
struct Ports {
    bus: BusConfig,
    api: ApiConfig,
}

fn ports() -> Ports {
    Ports {
        bus: BusConfig {
            host: "127.0.0.1".into(),
            listening_port: free_port(),
            publishing_port: free_port(),
        },
        api: ApiConfig {
            host: "127.0.0.1".into(),
            port: free_port(),
        },
    }
}

fn principal(db: &Path, p: &Ports) -> Running {
    Running::start(db, &p.bus, &p.api, "200ms")
}

fn kill(child: &mut Running, signal: &str) {
    child.kill(signal);
}

fn line(publisher: usize, i: usize) -> LogMessage {
    LogMessage {
        workflow_id: format!("wf{}", publisher % 2),
        workflow_name: "Delivery".into(),
        workflow_instance_id: format!("wf-{publisher}"),
        task_name: "t".into(),
        task_instance_id: format!("t-{publisher}"),
        timestamp_ms: cdktr_log::message::now_ms(),
        level: Level::Info,
        payload: format!("{publisher}:{i}"),
    }
}

fn acknowledged(p: &Ports, spool: &Path) -> cdktr_log::PublisherBuilder {
    LogPublisher::builder(&p.bus)
        .acknowledged_by(&p.api)
        .spool_dir(spool)
        .stall_timeout(Duration::from_millis(500))
        .shutdown_timeout(WAIT)
}

/// What the database holds, by payload: (rows, distinct payloads, missing
/// of those expected).
fn census(db: &Path, expected: &HashMap<usize, usize>) -> (usize, usize, usize) {
    let store = Store::open(db).unwrap();
    let rows = store
        .query_logs(&LogQuery {
            start_ms: Some(0),
            limit: Some(usize::MAX >> 1),
            ..LogQuery::default()
        })
        .unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *seen.entry(r.payload.clone()).or_default() += 1;
    }
    let missing = expected
        .iter()
        .flat_map(|(&p, &n)| (0..n).map(move |i| format!("{p}:{i}")))
        .filter(|k| !seen.contains_key(k))
        .count();
    (rows.len(), seen.len(), missing)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn report(scenario: &str, sent: usize, (rows, distinct, missing): (usize, usize, usize), stats: &[PublisherStats]) {
    let resent: u64 = stats.iter().map(|s| s.resent).sum();
    let spilled: u64 = stats.iter().map(|s| s.spilled).sum();
    eprintln!(
        "{scenario}: sent {sent}, stored {rows}, duplicates {}, lost {missing} (re-sent {resent}, spilled {spilled})",
        rows - distinct
    );
}

#[test]
fn a_principal_killed_twice_mid_stream_stores_every_line_exactly_once() {
    killed_twice(false);
}

#[test]
fn with_curve_a_principal_killed_twice_mid_stream_stores_every_line_exactly_once() {
    killed_twice(true);
}

fn killed_twice(curve: bool) {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let (db, spool) = (dir.path().join("app.db"), dir.path().join("spool"));
    let keys = curve.then(|| TestKeys::write(&dir.path().join("keys")));
    let p = ports();
    let start = || match &keys {
        Some(keys) => Running::start_with(&db, &p.bus, &p.api, "200ms", &keys.principal_vars()),
        None => principal(&db, &p),
    };
    let mut child = start();
    let published = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut ids = Vec::new();
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|k| {
            let mut builder = acknowledged(&p, &spool);
            if let Some(keys) = &keys {
                builder = builder.curve(keys.client("agent"));
            }
            let publisher = builder.start().unwrap();
            ids.push(publisher.publisher_id().to_owned());
            let published = published.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    publisher.publish(line(k, i)).unwrap();
                    published.fetch_add(1, Ordering::Relaxed);
                    if i % 64 == 0 {
                        // About 60k lines a second in all: the kills land mid-stream.
                        std::thread::sleep(Duration::from_millis(4));
                    }
                }
                publisher.wait_persisted(WAIT).unwrap();
                publisher.shutdown().unwrap()
            })
        })
        .collect();
    for at in [PUBLISHERS * EACH / 4, PUBLISHERS * EACH * 3 / 5] {
        wait_for("publishing", || published.load(Ordering::Relaxed) >= at);
        kill(&mut child, "-KILL");
        child = start();
    }
    let stats: Vec<PublisherStats> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    kill(&mut child, "-TERM");
    for s in &stats {
        assert_eq!((s.published, s.dropped, s.left_in_spool), (EACH as u64, 0, 0), "{s:?}");
        assert_eq!(s.acknowledged, EACH as u64, "{s:?}");
    }
    let expected: HashMap<usize, usize> = (0..PUBLISHERS).map(|k| (k, EACH)).collect();
    let census = census(&db, &expected);
    report("killed twice", PUBLISHERS * EACH, census, &stats);
    assert_eq!(census, (PUBLISHERS * EACH, PUBLISHERS * EACH, 0));
    // By publisher id and sequence number: line i of a publisher was its
    // seq i + 1, every payload is there once, and each stream's mark is
    // its last seq.
    let store = Store::open(&db).unwrap();
    for id in &ids {
        assert_eq!(store.publisher_watermark(id).unwrap(), EACH as u64, "{id}");
    }
    assert!(spool_files(&spool).is_empty(), "{:?}", spool_files(&spool));
}

#[test]
fn a_principal_down_at_the_start_and_mid_stream_loses_nothing_and_the_spool_is_cleaned_up() {
    const CAP: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (db, spool) = (dir.path().join("app.db"), dir.path().join("spool"));
    let p = ports();
    let publisher = acknowledged(&p, &spool).buffer_bytes(CAP).start().unwrap();
    let mut sent = 0;
    let mut peak = 0;
    let mut publish_for = |d: Duration, sent: &mut usize| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            for _ in 0..100 {
                publisher.publish(line(0, *sent)).unwrap();
                *sent += 1;
            }
            peak = peak.max(publisher.stats().buffered_bytes);
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Down for the first 10 s: about 100,000 lines, ten times the memory cap.
    publish_for(Duration::from_secs(10), &mut sent);
    wait_for("the spill", || publisher.stats().spilled > 0);
    assert!(spool_files(&spool)
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "seg")));
    let mut child = principal(&db, &p);
    publish_for(Duration::from_secs(2), &mut sent);
    kill(&mut child, "-KILL");
    publish_for(Duration::from_secs(3), &mut sent);
    let child = principal(&db, &p);
    publish_for(Duration::from_secs(1), &mut sent);
    publisher.wait_persisted(WAIT).unwrap();
    let stats = publisher.shutdown().unwrap();
    let mut child = child;
    kill(&mut child, "-TERM");
    assert!(peak <= CAP as u64, "memory {peak} over the cap {CAP}");
    assert!(
        stats.spilled > 0 && stats.dropped == 0 && stats.left_in_spool == 0 && stats.spooled_bytes == 0,
        "{stats:?}"
    );
    assert!(spool_files(&spool).is_empty(), "left behind: {:?}", spool_files(&spool));
    let census = census(&db, &HashMap::from([(0, sent)]));
    report("down at start and mid-stream", sent, census, &[stats]);
    assert_eq!(census, (sent, sent, 0));
}

#[test]
fn a_database_failing_writes_loses_nothing_and_tail_keeps_receiving() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::File(db.clone()))
        .persister(cdktr_store::PersisterConfig {
            flush_interval: Duration::from_millis(100),
            max_pending: 2_000,
            ..Default::default()
        })
        .start()
        .unwrap();
    let p = Ports {
        bus: principal.bus().config().clone(),
        api: principal.api_config(),
    };
    let mut tail = Command::new(cdktr_principal::testing::workspace_binary("cdktr-logs"))
        .args(["tail", "-o", "json"])
        .env("CDKTR_LOGS_PUBLISHING_PORT", p.bus.publishing_port.to_string())
        .env("CDKTR_PRINCIPAL_PORT", p.api.port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if tx.send(v["payload"].as_str().unwrap().to_owned()).is_err() {
                break;
            }
        }
    });
    let publisher = acknowledged(&p, &dir.path().join("spool")).start().unwrap();
    // The tail is subscribed once a probe comes through.
    let mut probes = 0;
    loop {
        publisher.publish(line(9, probes)).unwrap();
        probes += 1;
        if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
        assert!(probes < 2_000, "tail never subscribed");
    }
    publisher.wait_persisted(WAIT).unwrap();
    while rx.try_recv().is_ok() {}

    principal.persister().fail_next_writes(u32::MAX);
    for i in 0..N {
        publisher.publish(line(0, i)).unwrap();
    }
    // Every line reaches the tail while nothing can be written.
    let mut live = Vec::new();
    while live.len() < N {
        live.push(rx.recv_timeout(WAIT).expect("tail stopped receiving"));
    }
    let during = principal.stats();
    assert!(during.failed_flushes >= 3, "{during:?}");
    assert!(
        during.persisted <= probes as u64,
        "written during the failure: {during:?}"
    );
    let shed = principal.persister().stats().shed + principal.persister().stats().gaps;
    assert!(shed > 0, "the test did not push past max_pending");
    principal.persister().fail_next_writes(0);
    publisher.wait_persisted(WAIT).unwrap();
    let stats = publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
    tail.kill().unwrap();
    tail.wait().unwrap();
    live.sort();
    live.dedup();
    assert_eq!(live.len(), N, "the tail saw each line once");
    let census = census(&db, &HashMap::from([(0, N), (9, probes)]));
    report("database failing writes", N + probes, census, &[stats]);
    assert_eq!(census, (N + probes, N + probes, 0));
}

#[test]
fn a_subscriber_that_never_reads_does_not_hold_up_ingestion() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .flush_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    let p = Ports {
        bus: principal.bus().config().clone(),
        api: principal.api_config(),
    };
    let ctx = zmq::Context::new();
    let stuck = ctx.socket(zmq::SUB).unwrap();
    stuck.set_rcvhwm(10).unwrap();
    stuck.set_subscribe(b"").unwrap();
    stuck.connect(&p.bus.publishing_endpoint()).unwrap();
    let publisher = acknowledged(&p, &dir.path().join("spool")).start().unwrap();
    let start = Instant::now();
    for i in 0..N {
        publisher.publish(line(0, i)).unwrap();
    }
    // A PUB socket that waited for this subscriber would stall the manager,
    // and with it the persister: this would time out.
    publisher.wait_persisted(WAIT).unwrap();
    let took = start.elapsed();
    let stats = principal.stats();
    assert_eq!(stats.persisted, N as u64, "{stats:?}");
    assert_eq!(stats.forwarded, N as u64, "the PUB socket took every line: {stats:?}");
    assert_eq!(principal.bus().stats().sink_lost, 0);
    eprintln!("stuck subscriber: {N} lines persisted in {took:?}");
    drop(stuck);
    publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
}

#[test]
fn lines_left_unacknowledged_at_shutdown_are_sent_by_the_next_publisher_on_the_spool() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let (db, spool) = (dir.path().join("app.db"), dir.path().join("spool"));
    let p = ports();
    // No principal: the first publisher can only keep its lines.
    let first = acknowledged(&p, &spool)
        .buffer_bytes(64 << 10)
        .shutdown_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let first_id = first.publisher_id().to_owned();
    for i in 0..N {
        first.publish(line(0, i)).unwrap();
    }
    first.flush(Duration::ZERO).ok();
    let stats = first.shutdown().unwrap();
    assert_eq!((stats.dropped, stats.sent), (0, 0), "{stats:?}");
    assert!(stats.left_in_spool > 0 && stats.spilled > 0, "{stats:?}");
    // What is left is counted in bytes too: the segments on disk hold it.
    let on_disk: u64 = spool_files(&spool)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "seg"))
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(
        stats.spooled_bytes > 0 && stats.spooled_bytes <= on_disk,
        "{stats:?}, {on_disk} on disk"
    );
    assert!(!spool_files(&spool).is_empty());

    let mut child = principal(&db, &p);
    let second = acknowledged(&p, &spool).start().unwrap();
    second.publish(line(1, 0)).unwrap();
    second.wait_persisted(WAIT).unwrap();
    // The first publisher's stream arrives under its own id, on its own.
    let end = Instant::now() + WAIT;
    loop {
        let mark = cdktr_log::ApiClient::connect(&p.api)
            .unwrap()
            .watermark(&first_id)
            .unwrap();
        if mark.persisted == N as u64 {
            break;
        }
        assert!(Instant::now() < end, "the left lines never arrived: {mark:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    second.shutdown().unwrap();
    kill(&mut child, "-TERM");
    let census = census(&db, &HashMap::from([(0, N), (1, 1)]));
    report("left in the spool", N + 1, census, &[stats]);
    assert_eq!(census, (N + 1, N + 1, 0));
    assert!(spool_files(&spool).is_empty(), "left behind: {:?}", spool_files(&spool));
}

#[test]
fn lines_missing_from_an_adopted_spool_are_declared_lost_and_the_rest_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spool) = (dir.path().join("app.db"), dir.path().join("spool"));
    let p = ports();
    // A dead publisher's spool with holes: 1-2 and 6-8 are nowhere.
    let kept = [3, 4, 5, 9, 10];
    let lines: Vec<_> = kept.iter().map(|&s| (s, line(0, s as usize))).collect();
    cdktr_principal::testing::write_spool(&spool, "dead", &lines);
    let mut child = principal(&db, &p);
    let adopter = acknowledged(&p, &spool).start().unwrap();
    assert!(adopter.wait_adopted(WAIT), "the adopted spool was never delivered");
    let mut api = cdktr_log::ApiClient::connect(&p.api).unwrap();
    assert_eq!(api.watermark("dead").unwrap().persisted, 10);
    assert_eq!(api.stats().unwrap().declared_lost, 5);
    adopter.shutdown().unwrap();
    kill(&mut child, "-TERM");
    let expected = HashMap::from([(0, 11)]);
    let (rows, distinct, missing) = census(&db, &expected);
    assert_eq!((rows, distinct, missing), (5, 5, 6), "3-5 and 9-10 stored once");
    let conn = duckdb::Connection::open(&db).unwrap();
    let gaps: Vec<(u64, u64)> = conn
        .prepare("SELECT first_seq, last_seq FROM publisher_gap WHERE publisher_id = 'dead' ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(gaps, [(1, 2), (6, 8)]);
    assert!(spool_files(&spool).is_empty(), "left behind: {:?}", spool_files(&spool));
}

#[test]
fn a_waiting_publisher_is_acknowledged_without_waiting_for_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .flush_interval(Duration::from_secs(3600))
        .start()
        .unwrap();
    let p = Ports {
        bus: principal.bus().config().clone(),
        api: principal.api_config(),
    };
    let publisher = acknowledged(&p, &dir.path().join("spool")).start().unwrap();
    for i in 0..10 {
        publisher.publish(line(0, i)).unwrap();
    }
    // A burst far below the batch size, and an hour's flush interval: only
    // the publisher's request makes the principal write now.
    publisher.wait_persisted(Duration::from_secs(60)).unwrap();
    assert_eq!(principal.persister().stats().persisted, 10);
    publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
}
