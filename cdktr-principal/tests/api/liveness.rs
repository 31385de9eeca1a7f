//! Crash detection: a silent agent's running instances.

use super::*;

#[test]
fn a_silent_agent_gets_exactly_one_crashed_row_per_running_instance() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let p = start(&db, &[("CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS", "300")]);
    let mut api = p.client();
    let t0 = cdktr_log::message::now_ms();
    for i in 1..=3 {
        send(&mut api, &update(&format!("run-{i}"), RunStatus::Running, t0)).unwrap();
    }
    send(&mut api, &task_update("run-1", RunStatus::Running, t0)).unwrap();
    send(&mut api, &update("run-3", RunStatus::Completed, t0 + 1)).unwrap();
    // Agent A runs 1 to 3 (3 has finished); agent B keeps beating.
    send(
        &mut api,
        &Request::Heartbeat {
            agent_id: "agent-a".into(),
            running: vec!["run-1".into(), "run-2".into(), "run-3".into()],
        },
    )
    .unwrap();
    send(&mut api, &update("run-4", RunStatus::Running, t0)).unwrap();
    let beat_b = Request::Heartbeat {
        agent_id: "agent-b".into(),
        running: vec!["run-4".into()],
    };
    let end = Instant::now() + WAIT;
    loop {
        send(&mut api, &beat_b).unwrap();
        let s = api.stats().unwrap();
        if s.crashed == 2 {
            break;
        }
        assert!(s.crashed < 2, "{s:?}");
        assert!(Instant::now() < end, "no CRASHED rows: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Many more sweeps (every 100 ms) happen while B keeps beating.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        send(&mut api, &beat_b).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // B keeps beating until this principal has stopped, however long the
    // checks below take: its run is to be orphaned by the restart, not
    // crashed by a sweep here while the test is busy.
    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let beater = {
        let (config, beating, beat) = (p.api.clone(), beating.clone(), beat_b.clone());
        std::thread::spawn(move || {
            let mut b = ApiClient::connect(&config)
                .unwrap()
                .with_timeout(Duration::from_millis(500));
            while beating.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = send(&mut b, &beat);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let crashed = |api: &mut ApiClient, i: &str| {
        api.timeline(i)
            .unwrap()
            .iter()
            .filter(|c| c.status == RunStatus::Crashed)
            .map(|c| c.task.is_some())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        crashed(&mut api, "run-1"),
        [false, true],
        "the workflow and its running task"
    );
    assert_eq!(crashed(&mut api, "run-2"), [false]);
    assert!(crashed(&mut api, "run-3").is_empty(), "finished runs are left alone");
    assert!(
        crashed(&mut api, "run-4").is_empty(),
        "a live agent's runs are left alone"
    );
    assert_eq!(api.stats().unwrap().crashed, 2);

    // After a restart, a RUNNING instance nobody claims is CRASHED once too.
    p.stop();
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    beater.join().unwrap();
    let p = start(&db, &[("CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS", "300")]);
    let mut api = p.client();
    let end = Instant::now() + WAIT;
    while api.stats().unwrap().crashed < 1 {
        assert!(Instant::now() < end, "the orphan was never marked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(crashed(&mut api, "run-4"), [false]);
    assert_eq!(crashed(&mut api, "run-1"), [false, true]);
    p.stop();
}
