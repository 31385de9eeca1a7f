//! Lines flowing: every field, exact subscriptions, many publishers, restarts, task loggers.

use super::*;

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
    while sink.recv_timeout(WAIT).unwrap().payload() != "joined" {
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
        if let Some(i) = e.payload().strip_prefix("after ") {
            after.push(i.parse::<usize>().unwrap());
        }
    }
    assert_eq!(after, (0..1000).collect::<Vec<_>>());
    assert_eq!(publisher.shutdown().unwrap().dropped, 0);
    second.shutdown().unwrap();
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
