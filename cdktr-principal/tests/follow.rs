//! Backfill + follow against a real principal: a follower attaching while
//! publishers write shows every stored line from its first on, in each
//! publisher's order, none missing, none twice; also across a principal
//! killed and restarted during the follow.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdktr_log::follower::{Followed, FollowedLine, History, LogFollower};
use cdktr_log::{ApiConfig, BusConfig, Level, LogMessage, LogPublisher};
use cdktr_principal::testing::{free_port, local_principal, ChildPrincipal};
use cdktr_store::{Location, LogQuery, Origin, Store};

const WAIT: Duration = Duration::from_secs(120);

fn line(instance: usize, publisher: usize, i: usize) -> LogMessage {
    LogMessage {
        workflow_id: "follow".into(),
        workflow_name: "Follow".into(),
        workflow_instance_id: format!("run-{instance}"),
        task_name: format!("task-{publisher}"),
        task_instance_id: format!("task-{publisher}-{instance}"),
        // Out of order by up to 40 ms, as when several threads of a task
        // share one publisher: history order (by time) is not the order
        // of the stream.
        timestamp_ms: cdktr_log::message::now_ms() - (i as i64 * 7919 % 41),
        level: if i % 100 == 99 { Level::Error } else { Level::Info },
        payload: format!("{publisher}:{i}"),
    }
}

/// Publishers writing to instance `current` until told to stop; each
/// returns how many lines it published.
struct Writers {
    current: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn writers(bus: &BusConfig, api: &ApiConfig, spool: &Path, n: usize) -> Writers {
    let current = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));
    let threads = (0..n)
        .map(|k| {
            let publisher = LogPublisher::builder(bus)
                .acknowledged_by(api)
                .spool_dir(spool)
                .stall_timeout(Duration::from_millis(500))
                .shutdown_timeout(WAIT)
                .start()
                .unwrap();
            let (current, stop, published) = (current.clone(), stop.clone(), published.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Relaxed) {
                    publisher.publish(line(current.load(Relaxed), k, i)).unwrap();
                    published.fetch_add(1, Relaxed);
                    i += 1;
                    if i % 16 == 0 {
                        // About 8,000 lines a second each at most.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                publisher.wait_persisted(WAIT).unwrap();
                publisher.shutdown().unwrap();
            })
        })
        .collect();
    Writers {
        current,
        stop,
        published,
        threads,
    }
}

impl Writers {
    fn finish(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// A small random number generator: the seed is printed, so a failure can
/// be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("FOLLOW_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| cdktr_log::message::now_ms() as u64);
        eprintln!("FOLLOW_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Reads lines until `until` returns true or the wait runs out.
fn read(f: &mut LogFollower, shown: &mut Vec<FollowedLine>, mut until: impl FnMut(&[FollowedLine]) -> bool) {
    let end = Instant::now() + WAIT;
    while !until(shown) {
        assert!(Instant::now() < end, "timed out following; {} lines shown", shown.len());
        if let Some(Followed::Line(l)) = f.next_timeout(Duration::from_millis(50)).unwrap() {
            shown.push(*l);
        }
    }
}

/// A stored line as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stored {
    seq: u64,
    payload: String,
    timestamp_ms: i64,
}

/// Each publisher's stored lines of `instance`, in its order.
fn stored(store: &Store, instance: &str) -> BTreeMap<String, Vec<Stored>> {
    let q = LogQuery {
        start_ms: Some(0),
        workflow_instance_id: Some(instance.into()),
        limit: Some(usize::MAX >> 1),
        ..LogQuery::default()
    };
    let page = store.query_page(&q, usize::MAX).unwrap();
    let mut by: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for (m, o) in page.lines.into_iter().zip(page.origins) {
        let o = o.expect("a line stored now has its identity");
        by.entry(o.publisher_id).or_default().push(Stored {
            seq: o.seq,
            payload: m.payload,
            timestamp_ms: m.timestamp_ms,
        });
    }
    for v in by.values_mut() {
        v.sort();
    }
    by
}

/// What the history should have been.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Every stored line, from the first.
    Everything,
    /// The newest lines by time: a line left out is no newer than the
    /// oldest line the history showed.
    Newest,
}

/// Checks what a follower showed against what was stored: each line at
/// most once; for each publisher, every stored line up to the last one
/// shown, except (with [`Expect::Newest`]) lines older than the history's
/// window; the first history in time order; live lines in each
/// publisher's order.
fn check_exact(label: &str, shown: &[FollowedLine], stored: &BTreeMap<String, Vec<Stored>>, expect: Expect) {
    let first_live = shown.iter().position(|l| l.live).unwrap_or(shown.len());
    let history = &shown[..first_live];
    if let Some(at) = history
        .windows(2)
        .position(|w| w[0].message.timestamp_ms > w[1].message.timestamp_ms)
    {
        panic!("{label}: history out of time order at {at}");
    }
    let window_start = history.iter().map(|l| l.message.timestamp_ms).min().unwrap_or(i64::MAX);
    let mut by: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut live_last: HashMap<String, u64> = HashMap::new();
    for l in shown {
        let o: &Origin = l.origin.as_ref().expect("every line shown has its identity");
        if l.live {
            let last = live_last.entry(o.publisher_id.clone()).or_default();
            assert!(
                o.seq > *last,
                "{label}: {} live out of order ({} after {last})",
                o.publisher_id,
                o.seq
            );
            *last = o.seq;
        }
        by.entry(o.publisher_id.clone())
            .or_default()
            .push((o.seq, l.message.payload.clone()));
    }
    for (publisher, got) in &mut by {
        let n = got.len();
        got.sort();
        got.dedup();
        assert_eq!(
            got.len(),
            n,
            "{label}: {publisher} has {} lines shown twice",
            n - got.len()
        );
        let all = stored
            .get(publisher)
            .unwrap_or_else(|| panic!("{label}: {publisher} stored nothing"));
        let last = got.last().unwrap().0;
        let mut shown_iter = got.iter().peekable();
        for s in all.iter().take_while(|s| s.seq <= last) {
            if shown_iter.peek().is_some_and(|(seq, _)| *seq == s.seq) {
                let (_, payload) = shown_iter.next().unwrap();
                assert_eq!(*payload, s.payload, "{label}: {publisher} line {} differs", s.seq);
                continue;
            }
            let excused = expect == Expect::Newest && s.timestamp_ms <= window_start;
            assert!(
                excused,
                "{label}: {publisher} line {} ({:?}, at {}) was stored but not shown (history from {window_start})",
                s.seq, s.payload, s.timestamp_ms
            );
        }
        assert!(
            shown_iter.next().is_none(),
            "{label}: {publisher} showed a line that is not stored"
        );
    }
}

#[test]
fn a_follower_attaching_mid_stream_shows_each_stored_line_once_in_order() {
    const ATTACHES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let principal = local_principal()
        .database(Location::File(dir.path().join("app.db")))
        .flush_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    let (bus, api) = (principal.bus().config().clone(), principal.api_config());
    let w = writers(&bus, &api, &dir.path().join("spool"), 2);
    let mut rng = Rng::new();
    let mut runs = Vec::new();
    for k in 0..ATTACHES {
        w.current.store(k, Relaxed);
        let (started, at) = (w.published.load(Relaxed), Instant::now());
        // Attach at a random moment of the run: 10-400 ms into it.
        std::thread::sleep(Duration::from_millis(10 + rng.below(390)));
        let history = match k % 3 {
            0 | 1 => History::All,
            _ => History::Last(300),
        };
        let mut f = LogFollower::builder(&bus, &api)
            .instance(format!("run-{k}"))
            .history(history)
            .connect()
            .unwrap();
        let mut shown = Vec::new();
        // Until the live stream has given 500 lines.
        read(&mut f, &mut shown, |s| s.iter().filter(|l| l.live).count() >= 500);
        let during = w.published.load(Relaxed) - started;
        let rate = during as f64 / at.elapsed().as_secs_f64();
        runs.push((k, history, shown, during, rate));
    }
    w.finish();
    principal.persister().flush_now(WAIT).unwrap();
    let mut total = 0;
    for (k, history, shown, during, rate) in &runs {
        let stored = stored(principal.store(), &format!("run-{k}"));
        let label = format!("attach {k} ({history:?})");
        let backfilled = shown.iter().filter(|l| !l.live).count();
        eprintln!(
            "{label}: {backfilled} from history, {} live; {during} published meanwhile ({rate:.0} lines/s)",
            shown.len() - backfilled
        );
        let first_live = shown.iter().position(|l| l.live).unwrap();
        assert!(
            shown[first_live..].iter().all(|l| l.live),
            "{label}: a history line after a live one"
        );
        // The last N: all of them when N were stored, else every line
        // stored (an attach early in the run).
        let expect = match history {
            History::Last(n) if backfilled == *n => Expect::Newest,
            History::Last(n) => {
                assert!(backfilled < *n, "{label}: {backfilled} lines for the last {n}");
                Expect::Everything
            }
            _ => Expect::Everything,
        };
        check_exact(&label, shown, &stored, expect);
        total += shown.len();
    }
    eprintln!("{total} lines shown over {ATTACHES} attaches");
    principal.shutdown().unwrap();
}

#[test]
fn a_follow_across_a_principal_killed_and_restarted_misses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let bus = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: free_port(),
        publishing_port: free_port(),
    };
    let api = ApiConfig {
        host: "127.0.0.1".into(),
        port: free_port(),
    };
    let mut child = ChildPrincipal::start(&db, &bus, &api, "100ms");
    let w = writers(&bus, &api, &dir.path().join("spool"), 2);
    std::thread::sleep(Duration::from_millis(200));
    let mut f = LogFollower::builder(&bus, &api)
        .instance("run-0")
        .history(History::All)
        .timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let mut shown = Vec::new();
    read(&mut f, &mut shown, |s| s.iter().filter(|l| l.live).count() >= 2_000);
    let before = shown.len();
    // SIGKILL: lines in flight are lost to the live stream; the
    // publishers re-send them to the next principal.
    drop(child);
    let mut events = Vec::new();
    let down_until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < down_until {
        match f.next_timeout(Duration::from_millis(50)).unwrap() {
            Some(Followed::Line(l)) => shown.push(*l),
            Some(other) => events.push(other),
            None => {}
        }
    }
    child = ChildPrincipal::start(&db, &bus, &api, "100ms");
    read(&mut f, &mut shown, |s| s.len() >= before + 4_000);
    w.finish();
    let everything = LogQuery {
        start_ms: Some(0),
        workflow_instance_id: Some("run-0".into()),
        ..LogQuery::default()
    };
    let published = cdktr_log::ApiClient::connect(&api)
        .unwrap()
        .count_logs(&everything)
        .unwrap() as usize;
    // Every line stored comes: the follower keeps up.
    let end = Instant::now() + WAIT;
    loop {
        match f.next_timeout(Duration::from_millis(100)).unwrap() {
            Some(Followed::Line(l)) => shown.push(*l),
            Some(other) => events.push(other),
            None if shown.len() >= published || Instant::now() > end => break,
            None => {}
        }
    }
    drop(child);
    let store = Store::open(&db).unwrap();
    let stored = stored(&store, "run-0");
    let total: usize = stored.values().map(Vec::len).sum();
    eprintln!(
        "restart: {} shown ({before} before the kill), {total} stored, events {events:?}",
        shown.len()
    );
    assert!(
        events.iter().any(|e| matches!(e, Followed::Unreachable(_))),
        "the outage was reported: {events:?}"
    );
    check_exact("restart", &shown, &stored, Expect::Everything);
    assert_eq!(shown.len(), total, "every stored line shown once");
    let mut per: HashMap<&str, usize> = HashMap::new();
    for l in &shown {
        *per.entry(l.origin.as_ref().unwrap().publisher_id.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 2);
}
