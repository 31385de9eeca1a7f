//! Back-pressure and bounds: slow readers and sinks, an absent principal, byte budgets.

use super::*;

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
        assert_eq!(e.payload(), i.to_string());
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
fn a_sink_bounded_in_bytes_never_holds_more_than_its_budget() {
    use cdktr_log::budget::ByteBudget;
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
    let line = rx.recv().unwrap().memory_bytes();
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
        budget.release(env.memory_bytes());
        got += 1;
    }
    assert_eq!(manager.shutdown().unwrap().received, 200);
}
