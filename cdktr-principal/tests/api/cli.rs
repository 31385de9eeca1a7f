//! The CLI against a real principal: lines and statuses, a restart, bad arguments.

use super::*;

#[test]
fn lines_and_statuses_round_trip_through_the_cli_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let p = start(&db, &[]);

    // `tail` follows live: start it first, then publish.
    let mut tail = p
        .cli_command(&["tail", "-w", "etl", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let tail_out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(tail_out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let publisher = LogPublisher::connect(&p.bus).unwrap();
    let end = Instant::now() + WAIT;
    while rx.recv_timeout(Duration::from_millis(50)).is_err() {
        assert!(Instant::now() < end, "tail never received anything");
        publisher.publish(line("etl-0", Level::Debug, "probe")).unwrap();
    }
    let lines = [
        (Level::Info, "extracting"),
        (Level::Warn, "slow disk"),
        (Level::Error, "row 7 rejected"),
        (Level::Info, "done: 10 rows"),
    ];
    for (level, payload) in lines {
        publisher.publish(line("etl-1", level, payload)).unwrap();
    }
    publisher.flush(WAIT).unwrap();
    let mut live = Vec::new();
    while live.len() < lines.len() {
        let l = rx.recv_timeout(WAIT).expect("tail keeps printing");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["payload"] != "probe" {
            live.push(v["payload"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(live, lines.map(|(_, p)| p));
    tail.kill().unwrap();
    tail.wait().unwrap();

    // Queryable within the freshness bound (250 ms) although the flush
    // interval is 60 s: a query writes what has waited longer than that.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let all = json_payloads(&p.cli(&["query", "-i", "etl-1", "-o", "json"]));
        if all == lines.map(|(_, p)| p) {
            break;
        }
        let expected: Vec<String> = lines.iter().map(|(_, p)| p.to_string()).collect();
        assert!(expected.starts_with(&all), "a prefix at most: {all:?}");
        assert!(Instant::now() < end, "never queryable");
    }
    assert_eq!(
        json_payloads(&p.cli(&["query", "-w", "etl", "-n", "2", "-o", "json"])),
        ["row 7 rejected", "done: 10 rows"]
    );
    assert_eq!(
        json_payloads(&p.cli(&["query", "-i", "etl-1", "--level", "warn", "-o", "json"])),
        ["slow disk", "row 7 rejected"]
    );
    assert_eq!(
        json_payloads(&p.cli(&["query", "--grep", "rows", "--since", "1h", "-o", "json"])),
        ["done: 10 rows"]
    );
    assert!(json_payloads(&p.cli(&["query", "-i", "etl-1", "--until", "1h", "-o", "json"])).is_empty());
    let text = stdout_lines(&p.cli(&["query", "-i", "etl-1", "--task", "load"]));
    assert_eq!(text.len(), 4);
    assert!(text[2].contains("ERROR") && text[2].ends_with("etl/etl-1 load/etl-1-load: row 7 rejected"));
    assert!(!text[2].contains('\x1b'), "no colour when piped");

    // Status updates, as an agent sends them.
    let mut api = p.client();
    let t0 = 1_795_000_000_000;
    for r in [
        update("etl-1", RunStatus::Pending, t0),
        update("etl-1", RunStatus::Running, t0 + 10),
        task_update("etl-1", RunStatus::Running, t0 + 20),
        task_update("etl-1", RunStatus::Completed, t0 + 1_500),
        update("etl-1", RunStatus::Completed, t0 + 1_510),
        update("etl-2", RunStatus::Running, t0 + 2_000),
    ] {
        send(&mut api, &r).unwrap();
    }
    let timeline = api.timeline("etl-1").unwrap();
    let statuses: Vec<_> = timeline.iter().map(|c| (c.task.is_some(), c.status)).collect();
    assert_eq!(
        statuses,
        [
            (false, RunStatus::Pending),
            (false, RunStatus::Running),
            (true, RunStatus::Running),
            (true, RunStatus::Completed),
            (false, RunStatus::Completed)
        ]
    );
    let table = stdout_lines(&p.cli(&["status"]));
    assert!(
        table[0].starts_with("WORKFLOW") && table[0].contains("DURATION"),
        "{table:?}"
    );
    assert!(table[1].contains("etl-2") && table[1].contains("RUNNING"), "{table:?}");
    assert!(
        table[2].contains("etl-1") && table[2].contains("COMPLETED") && table[2].contains("1.510s"),
        "{table:?}"
    );
    let timeline_table = stdout_lines(&p.cli(&["status", "-i", "etl-1"]));
    assert_eq!(timeline_table.len(), 6, "{timeline_table:?}");
    assert!(timeline_table[3].contains("etl-1-load") && timeline_table[3].contains("RUNNING"));
    let recent_json = stdout_lines(&p.cli(&["status", "--recent", "1", "-o", "json"]));
    assert_eq!(recent_json.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&recent_json[0]).unwrap();
    assert_eq!(
        (v["workflow_instance_id"].as_str(), v["status"].as_str()),
        (Some("etl-2"), Some("RUNNING"))
    );

    let stats: serde_json::Value = serde_json::from_str(&stdout_lines(&p.cli(&["stats", "-o", "json"]))[0]).unwrap();
    assert!(stats["received"].as_u64().unwrap() >= 5, "{stats}");
    assert_eq!(
        stats["persisted"], stats["received"],
        "queries flushed everything: {stats}"
    );
    assert!(stdout_lines(&p.cli(&["stats"]))
        .iter()
        .any(|l| l.starts_with("persisted:")));

    // SIGTERM, then a restart on the same file: every line and status is there.
    drop(publisher);
    let summary = p.stop();
    assert!(summary.contains(" received, "), "{summary}");
    let p = start(&db, &[]);
    assert_eq!(
        json_payloads(&p.cli(&["query", "-i", "etl-1", "-o", "json"])),
        lines.map(|(_, p)| p)
    );
    assert_eq!(p.client().timeline("etl-1").unwrap(), timeline);
    p.stop();
}

#[test]
fn the_cli_fails_fast_on_an_unreachable_principal_and_explains_bad_arguments() {
    // Held, so nothing else takes the port: it accepts TCP but never
    // speaks ZeroMQ, like a hung principal.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = silent.local_addr().unwrap().port();
    for args in [
        &["query", "--timeout", "500ms"][..],
        &["status", "--timeout", "500ms"],
        &["status", "-i", "x", "--timeout", "500ms"],
        &["stats", "--timeout", "500ms"],
    ] {
        let started = Instant::now();
        let out = Command::new(cdktr_principal::testing::workspace_binary("cdktr-logs"))
            .args(args)
            .env("CDKTR_PRINCIPAL_PORT", free.to_string())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no answer from the principal") && err.contains(&free.to_string()),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(started.elapsed() < WAIT, "{args:?} hung");
    }
    for (args, says) in [
        (&["query", "--since", "yesterday"][..], "neither a duration"),
        (&["query", "-n", "0"], "--lines"),
        (&["query", "--level", "loud"], "unknown log level"),
        (&["status", "--status", "done"], "unknown status"),
        (&["status", "-i", "x", "--recent", "3"], "cannot be used with"),
        (&["query", "--timeout", "5"], "needs a unit"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = Command::new(cdktr_principal::testing::workspace_binary("cdktr-logs"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
