//! The bus end to end over real ZeroMQ sockets on free loopback ports.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cdktr_log::{wire, BusConfig, Envelope, Level, LogManager, LogMessage, LogPublisher, LogSubscriber};
use crossbeam_channel::{bounded, Receiver};

const WAIT: Duration = Duration::from_secs(30);

fn any_ports() -> BusConfig {
    BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    }
}

use cdktr_log::testing::free_port;

fn start(config: &BusConfig, sink_capacity: usize) -> (LogManager, Receiver<Envelope>) {
    let (tx, rx) = bounded(sink_capacity);
    (LogManager::builder(config).sink(tx).start().unwrap(), rx)
}

/// As [`start`], but `None` when a port is taken.
fn try_start(config: &BusConfig, sink_capacity: usize) -> Option<(LogManager, Receiver<Envelope>)> {
    let (tx, rx) = bounded(sink_capacity);
    match LogManager::builder(config).sink(tx).start() {
        Ok(manager) => Some((manager, rx)),
        Err(cdktr_log::Error::Bind { endpoint, source }) => {
            println!("{endpoint} was taken ({source}); trying other ports");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Runs `scenario` on two ports chosen before anything listens on them.
/// Should something take one before the manager binds it (seen once in
/// about fifteen runs), the scenario returns `None` and runs again on new
/// ports.
fn on_free_ports(mut scenario: impl FnMut(BusConfig) -> Option<()>) {
    for _ in 0..5 {
        let config = BusConfig {
            host: "127.0.0.1".into(),
            listening_port: free_port(),
            publishing_port: free_port(),
        };
        if scenario(config).is_some() {
            return;
        }
    }
    panic!("no free ports in five tries");
}

fn msg(workflow_id: &str, payload: impl Into<String>) -> LogMessage {
    LogMessage {
        workflow_id: workflow_id.into(),
        workflow_name: format!("{workflow_id} name"),
        workflow_instance_id: format!("{workflow_id}-1"),
        task_name: "task".into(),
        task_instance_id: "task-1".into(),
        timestamp_ms: 1_700_000_000_000,
        level: Level::Info,
        payload: payload.into(),
    }
}

/// Polls `cond` until it holds or `WAIT` passes.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Takes `n` messages from a sink, failing the test if they do not come in time.
fn take(rx: &Receiver<Envelope>, n: usize) -> Vec<Envelope> {
    let end = Instant::now() + WAIT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match rx.recv_deadline(end) {
            Ok(e) => out.push(e),
            Err(_) => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    out
}

/// Publishes probes on `workflow_id` until `sub` receives one, so that the
/// subscription is known to be in place (ZeroMQ subscriptions are
/// asynchronous); then drops any probes still in flight behind a marker.
fn join(sub: &mut LogSubscriber, publisher: &LogPublisher, workflow_id: &str) {
    let end = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < end, "subscriber never joined");
        publisher.publish(msg(workflow_id, "probe")).unwrap();
        if sub.recv_timeout(Duration::from_millis(20)).unwrap().is_some() {
            break;
        }
    }
    publisher.publish(msg(workflow_id, "joined")).unwrap();
    loop {
        let e = sub.recv_timeout(WAIT).unwrap().expect("marker arrives");
        if e.message.payload == "joined" {
            return;
        }
    }
}

#[test]
fn every_field_round_trips_through_manager_to_subscriber_and_sink() {
    let (manager, sink) = start(&any_ports(), 100_000);
    let publisher = LogPublisher::builder(manager.config())
        .publisher_id("agent-7")
        .start()
        .unwrap();
    let mut sub = LogSubscriber::all(manager.config()).unwrap();
    join(&mut sub, &publisher, "probe");
    // The sink sees every probe and the marker, in order.
    let mut probes = 0;
    while sink.recv_timeout(WAIT).unwrap().message.payload != "joined" {
        probes += 1;
    }
    probes += 1;

    let empty = LogMessage {
        workflow_id: String::new(),
        workflow_name: String::new(),
        workflow_instance_id: String::new(),
        task_name: String::new(),
        task_instance_id: String::new(),
        timestamp_ms: 0,
        level: Level::Trace,
        payload: String::new(),
    };
    let unicode = LogMessage {
        workflow_id: "étl-数据".into(),
        workflow_name: "Ночной ETL 🚀".into(),
        workflow_instance_id: "inst\u{0}with nul".into(),
        task_name: "tâche\n2".into(),
        task_instance_id: "\u{1F600}".into(),
        timestamp_ms: -1,
        level: Level::Error,
        payload: "línea\r\n\t'\"; DROP TABLE logstore; --".into(),
    };
    let big = LogMessage {
        payload: "x".repeat(1 << 20),
        level: Level::Warn,
        timestamp_ms: i64::MAX,
        ..msg("big", "")
    };
    let sent = vec![
        empty,
        unicode,
        big,
        LogMessage {
            level: Level::Debug,
            ..msg("etl", "ok")
        },
    ];
    for m in &sent {
        publisher.publish(m.clone()).unwrap();
    }

    let via_sink = take(&sink, sent.len());
    let via_sub: Vec<_> = (0..sent.len())
        .map(|_| sub.recv_timeout(WAIT).unwrap().expect("live message"))
        .collect();
    for got in [via_sink, via_sub] {
        let messages: Vec<_> = got.iter().map(|e| e.message.clone()).collect();
        assert_eq!(messages, sent);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.publisher_id, "agent-7");
            assert_eq!(e.seq, (probes + 1 + i) as u64, "sequence numbers continue without gaps");
        }
    }
    let stats = publisher.shutdown().unwrap();
    assert_eq!(
        (stats.published, stats.sent, stats.dropped),
        ((probes + 4) as u64, (probes + 4) as u64, 0)
    );
    let m = manager.shutdown().unwrap();
    assert_eq!(
        (m.received, m.forwarded, m.rejected),
        ((probes + 4) as u64, (probes + 4) as u64, 0)
    );
}

#[test]
fn subscriptions_match_workflow_ids_exactly() {
    let (manager, _sink) = start(&any_ports(), 1_000_000);
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    let mut etl = LogSubscriber::builder(manager.config())
        .workflow("etl")
        .connect()
        .unwrap();
    let mut two = LogSubscriber::builder(manager.config())
        .workflow("etl")
        .workflow("load")
        .connect()
        .unwrap();
    let mut all = LogSubscriber::all(manager.config()).unwrap();
    let mut nul = LogSubscriber::builder(manager.config())
        .workflow("a")
        .connect()
        .unwrap();
    join(&mut etl, &publisher, "etl");
    join(&mut two, &publisher, "load");
    join(&mut all, &publisher, "zzz");
    join(&mut nul, &publisher, "a");

    let ids = ["etl", "etl_daily", "et", "load", "loader", "a\u{0}b", "", "ETL"];
    for round in 0..50 {
        for id in ids {
            publisher.publish(msg(id, format!("{id}#{round}"))).unwrap();
        }
    }
    publisher.publish(msg("etl", "end")).unwrap();
    publisher.publish(msg("load", "end")).unwrap();
    publisher.publish(msg("a", "end")).unwrap();

    let drain = |s: &mut LogSubscriber, ends: usize| {
        let mut got: HashMap<String, usize> = HashMap::new();
        let mut seen_end = 0;
        while seen_end < ends {
            let e = s.recv_timeout(WAIT).unwrap().expect("stream continues");
            if e.message.payload == "end" {
                seen_end += 1;
            } else if e.message.payload.contains('#') {
                *got.entry(e.message.workflow_id).or_default() += 1;
            }
        }
        got
    };
    assert_eq!(drain(&mut etl, 1), HashMap::from([("etl".to_string(), 50)]));
    assert_eq!(
        drain(&mut two, 2),
        HashMap::from([("etl".to_string(), 50), ("load".to_string(), 50)])
    );
    let every = drain(&mut all, 3);
    assert_eq!(every.len(), ids.len());
    assert!(every.values().all(|&n| n == 50), "{every:?}");
    // `a\0b` shares the ZeroMQ prefix `a\0`, and is still filtered out.
    assert_eq!(drain(&mut nul, 1), HashMap::new());
}

#[test]
fn eight_concurrent_publishers_arrive_complete_and_in_order() {
    const PUBLISHERS: usize = 8;
    const EACH: usize = 10_000;
    let (manager, sink) = start(&any_ports(), 1024);
    let config = manager.config().clone();
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let config = config.clone();
            std::thread::spawn(move || {
                let publisher = LogPublisher::builder(&config)
                    .publisher_id(format!("p{p}"))
                    .start()
                    .unwrap();
                for i in 0..EACH {
                    publisher
                        .publish(msg(&format!("wf{}", p % 3), format!("{p}:{i}")))
                        .unwrap();
                }
                publisher.shutdown().unwrap()
            })
        })
        .collect();
    let got = take(&sink, PUBLISHERS * EACH);
    for t in threads {
        let stats = t.join().unwrap();
        assert_eq!((stats.published, stats.dropped), (EACH as u64, 0));
    }
    let mut next: HashMap<String, u64> = HashMap::new();
    for e in got {
        let n = next.entry(e.publisher_id.clone()).or_insert(1);
        assert_eq!(e.seq, *n, "publisher {} out of order", e.publisher_id);
        let (p, i) = e.message.payload.split_once(':').unwrap();
        assert_eq!(format!("p{p}"), e.publisher_id);
        assert_eq!(i.parse::<u64>().unwrap() + 1, e.seq);
        *n += 1;
    }
    assert_eq!(next.len(), PUBLISHERS);
    assert!(next.values().all(|&n| n == EACH as u64 + 1));
    assert!(sink.try_recv().is_err(), "no extra messages");
    let stats = manager.shutdown().unwrap();
    assert_eq!(stats.forwarded, (PUBLISHERS * EACH) as u64);
}

#[test]
fn messages_published_before_the_manager_starts_arrive() {
    on_free_ports(|config| {
        let publisher = LogPublisher::connect(&config).unwrap();
        for i in 0..500 {
            publisher.publish(msg("early", i.to_string())).unwrap();
        }
        let (manager, sink) = try_start(&config, 10_000)?;
        let got = take(&sink, 500);
        assert!(got.iter().enumerate().all(|(i, e)| e.message.payload == i.to_string()));
        publisher.flush(WAIT).unwrap();
        drop(manager);
        Some(())
    });
}

#[test]
fn the_publisher_reconnects_after_a_manager_restart() {
    let (first, sink) = start(&any_ports(), 100_000);
    let config = first.config().clone();
    let publisher = LogPublisher::connect(&config).unwrap();
    for i in 0..1000 {
        publisher.publish(msg("wf", format!("before {i}"))).unwrap();
    }
    take(&sink, 1000);
    first.shutdown().unwrap();
    // Published while no manager is up: kept by the publisher, not required.
    for i in 0..100 {
        publisher.publish(msg("wf", format!("between {i}"))).unwrap();
    }

    let (second, sink) = start(&config, 100_000);
    for i in 0..1000 {
        publisher.publish(msg("wf", format!("after {i}"))).unwrap();
    }
    let mut after = Vec::new();
    let end = Instant::now() + WAIT;
    while after.len() < 1000 {
        let e = sink
            .recv_deadline(end)
            .expect("messages published after the restart arrive");
        if let Some(i) = e.message.payload.strip_prefix("after ") {
            after.push(i.parse::<usize>().unwrap());
        }
    }
    assert_eq!(after, (0..1000).collect::<Vec<_>>());
    assert_eq!(publisher.shutdown().unwrap().dropped, 0);
    second.shutdown().unwrap();
}

#[test]
fn malformed_messages_are_counted_and_dropped_while_valid_ones_flow() {
    const MAX: usize = 64 << 10;
    let (tx, sink) = bounded(100_000);
    let manager = LogManager::builder(&any_ports())
        .max_message_bytes(MAX)
        .sink(tx)
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let raw = ctx.socket(zmq::PUSH).unwrap();
    raw.connect(manager.listening_endpoint()).unwrap();
    let mut live = LogSubscriber::all(manager.config()).unwrap();

    let valid = |seq: u64| {
        let (mut t, mut b) = (Vec::new(), Vec::new());
        wire::encode("raw", seq, &msg("wf", format!("valid {seq}")), &mut t, &mut b);
        vec![t, b]
    };
    let wrong_type = {
        let v = serde_json::json!({"v": 1, "publisher_id": "raw", "seq": 1, "workflow_id": "wf",
            "workflow_name": "n", "workflow_instance_id": "i", "task_name": "t", "task_instance_id": "ti",
            "timestamp_ms": "yesterday", "level": "INFO", "payload": "p"});
        vec![b"wf\0".to_vec(), rmp_serde::to_vec(&v).unwrap()]
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    let malformed: Vec<Vec<Vec<u8>>> = vec![
        vec![random(100)],
        vec![Vec::new()],
        vec![b"wf\0".to_vec()],
        vec![b"wf\0".to_vec(), random(200)],
        vec![b"wf\0".to_vec(), valid(1).pop().unwrap(), b"extra".to_vec()],
        (0..50).map(|i| vec![i as u8; 10]).collect(),
        vec![b"wf\0".to_vec(), vec![0x81; MAX + 1]],
        wrong_type,
        vec![b"other\0".to_vec(), valid(1).pop().unwrap()],
        vec![random(3), random(3), random(3)],
    ];
    let mut seq = 0;
    let mut bad = 0;
    for round in 0..20 {
        for m in &malformed {
            seq += 1;
            raw.send_multipart(valid(seq), 0).unwrap();
            raw.send_multipart(m.clone(), 0).unwrap();
            bad += 1;
        }
        raw.send_multipart(vec![random(round + 1)], 0).unwrap();
        bad += 1;
    }
    seq += 1;
    raw.send_multipart(valid(seq), 0).unwrap();

    let got = take(&sink, seq as usize);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1 && e.publisher_id == "raw"));
    assert!(
        wait_until(|| manager.stats().rejected == bad),
        "rejected {} of {bad}",
        manager.stats().rejected
    );
    let stats = manager.stats();
    assert_eq!(stats.received, seq + bad);
    assert_eq!(stats.forwarded, seq);

    // A frame past ZeroMQ's hard limit (twice the body limit) makes ZeroMQ
    // drop that peer; nobody else is affected and the manager carries on.
    let hostile = ctx.socket(zmq::PUSH).unwrap();
    hostile.connect(manager.listening_endpoint()).unwrap();
    hostile
        .send_multipart(vec![b"wf\0".to_vec(), vec![0u8; 2 * MAX + 1]], 0)
        .unwrap();
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    join(&mut live, &publisher, "after");
    assert!(live.rejected() == 0);
    assert_eq!(manager.shutdown().unwrap().rejected, bad);
}

#[test]
fn a_subscriber_that_never_reads_does_not_hold_up_the_sink() {
    let (tx, sink) = bounded(1_000_000);
    let manager = LogManager::builder(&any_ports())
        .subscriber_hwm(100)
        .sink(tx)
        .start()
        .unwrap();
    let stalled = LogSubscriber::builder(manager.config())
        .receive_hwm(100)
        .connect()
        .unwrap();
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    let payload = "y".repeat(1000);
    for _ in 0..50_000 {
        publisher.publish(msg("wf", payload.clone())).unwrap();
    }
    assert_eq!(take(&sink, 50_000).len(), 50_000);
    assert_eq!(stalled.rejected(), 0);
    publisher.shutdown().unwrap();
    assert_eq!(manager.shutdown().unwrap().forwarded, 50_000);
}

#[test]
fn a_slow_sink_gets_everything_through_back_pressure() {
    let (manager, sink) = start(&any_ports(), 8);
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    for i in 0..5_000 {
        publisher.publish(msg("wf", i.to_string())).unwrap();
    }
    for i in 0..5_000 {
        let e = sink.recv_timeout(WAIT).expect("every message reaches the slow sink");
        assert_eq!(e.message.payload, i.to_string());
        if i % 500 == 0 {
            // A sink that is busy for a while.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    publisher.shutdown().unwrap();
    let stats = manager.shutdown().unwrap();
    assert_eq!(stats.forwarded, 5_000);
    assert!(stats.sink_blocked > Duration::ZERO);
}

#[test]
fn an_unreachable_principal_fills_the_buffer_then_drops_are_counted_never_silent() {
    on_free_ports(|config| {
        let publisher = LogPublisher::builder(&config).buffer_bytes(200_000).start().unwrap();
        let payload = "z".repeat(1_000);
        const N: u64 = 20_000;
        for _ in 0..N {
            publisher.publish(msg("wf", payload.clone())).unwrap();
        }
        assert!(wait_until(|| publisher.stats().published == N));
        let s = publisher.stats();
        assert!(s.dropped > 0, "{s:?}");
        assert!(s.buffered_bytes <= 200_000, "{s:?}");
        assert_eq!(s.sent + s.buffered + s.dropped, N, "{s:?}");
        assert!(matches!(
            publisher.flush(Duration::from_millis(50)),
            Err(cdktr_log::Error::FlushTimeout(_))
        ));

        // When the principal appears, everything kept is delivered, in order.
        let (manager, sink) = try_start(&config, 1_000_000)?;
        publisher.flush(WAIT).unwrap();
        let kept = s.sent + s.buffered;
        let got = take(&sink, kept as usize);
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        let end = publisher.shutdown().unwrap();
        assert_eq!(end.sent + end.dropped, N);
        assert_eq!(end.sent, kept);
        drop(manager);
        Some(())
    });
}

#[test]
fn a_port_in_use_is_a_bind_error_naming_the_endpoint() {
    let (manager, _sink) = start(&any_ports(), 10);
    let taken = manager.config().clone();
    let err = LogManager::builder(&BusConfig {
        publishing_port: 0,
        ..taken.clone()
    })
    .start()
    .err()
    .unwrap();
    assert!(
        matches!(&err, cdktr_log::Error::Bind { endpoint, .. } if endpoint.ends_with(&taken.listening_port.to_string()))
    );
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn task_loggers_fill_in_the_context_and_fail_once_closed() {
    let (manager, sink) = start(&any_ports(), 1000);
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    let ctx = cdktr_log::TaskContext {
        workflow_id: "wf".into(),
        workflow_name: "Workflow".into(),
        workflow_instance_id: "wf-9".into(),
        task_name: "t".into(),
        task_instance_id: "t-3".into(),
    };
    let log = publisher.task_logger(ctx.clone());
    let before = cdktr_log::message::now_ms();
    log.trace("a").unwrap();
    log.debug("b").unwrap();
    log.info("c").unwrap();
    log.warn("d").unwrap();
    log.error("e").unwrap();
    let from_thread = log.clone();
    std::thread::spawn(move || from_thread.log_at(Level::Info, 42, "f").unwrap())
        .join()
        .unwrap();
    let got = take(&sink, 6);
    let levels: Vec<_> = got.iter().map(|e| e.message.level).collect();
    assert_eq!(
        levels,
        [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
            Level::Info
        ]
    );
    for e in &got {
        let m = &e.message;
        assert_eq!(
            (
                &*m.workflow_id,
                &*m.workflow_name,
                &*m.workflow_instance_id,
                &*m.task_name,
                &*m.task_instance_id
            ),
            ("wf", "Workflow", "wf-9", "t", "t-3")
        );
    }
    assert!(got[0].message.timestamp_ms >= before);
    assert_eq!(got[5].message.timestamp_ms, 42);
    publisher.shutdown().unwrap();
    assert!(matches!(log.info("late"), Err(cdktr_log::Error::Closed(_))));
    drop(manager);
}

#[test]
fn oversize_messages_are_refused_or_counted_never_sent() {
    let (manager, sink) = start(&any_ports(), 1000);
    let publisher = LogPublisher::builder(manager.config())
        .max_message_bytes(1000)
        .start()
        .unwrap();
    // The payload alone is over the limit: the caller hears about it.
    let err = publisher.publish(msg("wf", "x".repeat(1001))).unwrap_err();
    assert!(
        matches!(err, cdktr_log::Error::Oversize { len: 1001, max: 1000 }),
        "{err}"
    );
    let log = publisher.task_logger(cdktr_log::TaskContext::default());
    assert!(matches!(
        log.info("y".repeat(1001)),
        Err(cdktr_log::Error::Oversize { .. })
    ));
    // Under the limit, but not once encoded: dropped and counted, not sent.
    publisher.publish(msg("wf", "z".repeat(990))).unwrap();
    publisher.publish(msg("wf", "fits")).unwrap();
    let got = take(&sink, 1);
    assert_eq!(got[0].message.payload, "fits");
    assert_eq!(got[0].seq, 1, "a dropped message takes no sequence number: no hole");
    let stats = publisher.shutdown().unwrap();
    assert_eq!((stats.published, stats.sent, stats.dropped), (2, 1, 1));
    assert_eq!(manager.shutdown().unwrap().rejected, 0);
}

#[test]
fn two_live_publishers_sharing_an_id_are_noticed() {
    let config = any_ports();
    let (manager, rx) = start(&config, 100_000);
    let bus = manager.config().clone();
    let twins: Vec<LogPublisher> = (0..2)
        .map(|_| LogPublisher::builder(&bus).publisher_id("twin").start().unwrap())
        .collect();
    // Both number from 1: their lines interleave at the manager.
    for i in 0..2_000 {
        for p in &twins {
            p.publish(msg("wf", format!("{i}"))).unwrap();
        }
        if i % 10 == 0 {
            for p in &twins {
                p.flush(Duration::from_secs(10)).unwrap();
            }
        }
    }
    for p in twins {
        p.shutdown().unwrap();
    }
    assert!(
        wait_until(|| manager.stats().received == 4_000),
        "{:?}",
        manager.stats()
    );
    assert!(manager.stats().shared_ids >= 1, "{:?}", manager.stats());
    drop(rx);
}

#[test]
fn a_sink_bounded_in_bytes_never_holds_more_than_its_budget() {
    use cdktr_log::budget::{envelope_bytes, ByteBudget};
    let budget = std::sync::Arc::new(ByteBudget::new(64 << 10));
    let (tx, rx) = bounded(100_000);
    let manager = LogManager::builder(&any_ports())
        .sink_within(tx, budget.clone())
        .start()
        .unwrap();
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    for i in 0..200 {
        publisher
            .publish(msg("wf", format!("{i} {}", "x".repeat(4096))))
            .unwrap();
    }
    // Nobody reads: the manager waits once the budget is spent.
    assert!(wait_until(|| manager.stats().sink_blocked > Duration::ZERO));
    let line = envelope_bytes(&rx.recv().unwrap());
    budget.release(line);
    assert!(
        rx.len() < (64 << 10) / line + 1,
        "{} lines of {line} bytes held",
        rx.len()
    );
    assert!(budget.used() <= (64 << 10) + line);
    let mut got = 1;
    while got < 200 {
        let env = rx.recv_timeout(Duration::from_secs(10)).expect("the rest arrive");
        budget.release(envelope_bytes(&env));
        got += 1;
    }
    assert_eq!(manager.shutdown().unwrap().received, 200);
}
