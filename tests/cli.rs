//! The `cdktr-logs` binary as a real child process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cdktr_log::{BusConfig, Level, LogManager, LogMessage, LogPublisher};

fn any_ports() -> BusConfig {
    BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    }
}

fn cli(bus: &BusConfig) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-logs"));
    c.env("CDKTR_LOGS_LISTENING_PORT", bus.listening_port.to_string())
        .env("CDKTR_LOGS_PUBLISHING_PORT", bus.publishing_port.to_string());
    c
}

fn line(workflow_id: &str, level: Level, payload: &str) -> LogMessage {
    LogMessage {
        workflow_id: workflow_id.into(),
        workflow_name: "W".into(),
        workflow_instance_id: format!("{workflow_id}-1"),
        task_name: "t".into(),
        task_instance_id: "t-1".into(),
        timestamp_ms: 1_795_768_200_123,
        level,
        payload: payload.into(),
    }
}

#[test]
fn tail_follows_one_workflow_at_a_level_as_json() {
    let manager = LogManager::builder(&any_ports()).start().unwrap();
    let mut child = cli(manager.config())
        .args(["tail", "-w", "etl", "--level", "warn", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    // Probe until the subscription is in place.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < end, "tail never received anything");
        publisher.publish(line("etl", Level::Error, "probe")).unwrap();
        if rx.recv_timeout(Duration::from_millis(20)).is_ok() {
            break;
        }
    }
    for (wf, level, payload) in [
        ("etl", Level::Info, "too low"),
        ("etl_daily", Level::Error, "other workflow"),
        ("etl", Level::Warn, "shown warn"),
        ("etl", Level::Error, "shown error"),
        ("etl", Level::Error, "end"),
    ] {
        publisher.publish(line(wf, level, payload)).unwrap();
    }
    let mut shown = Vec::new();
    loop {
        let l = rx.recv_timeout(Duration::from_secs(30)).expect("tail keeps printing");
        let v: serde_json::Value = serde_json::from_str(&l).expect("one JSON object per line");
        let payload = v["payload"].as_str().unwrap().to_string();
        if payload == "end" {
            break;
        }
        if payload != "probe" {
            shown.push((v["level"].as_str().unwrap().to_string(), payload));
        }
    }
    assert_eq!(
        shown,
        [
            ("WARN".into(), "shown warn".into()),
            ("ERROR".into(), "shown error".into())
        ]
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn tail_without_a_principal_fails_fast_with_one_line() {
    let free = cdktr_log::testing::free_port();
    let bus = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: free,
        publishing_port: free,
    };
    let out = cli(&bus).arg("tail").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no principal at") && err.trim().lines().count() == 1,
        "{err}"
    );

    let out = cli(&bus).args(["tail", "--level", "loud"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown log level"));
}

/// `s` without ANSI escape sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn colour_only_styles_and_follows_the_color_flag_and_no_color() {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let mut api = cdktr_log::ApiClient::connect(&principal.api_config()).unwrap();
    api.record_workflow_status("etl", "etl-1", cdktr_log::RunStatus::Failed, None)
        .unwrap();
    let publisher = LogPublisher::builder(principal.bus().config())
        .acknowledged_by(&principal.api_config())
        .spool_dir(tempfile::tempdir().unwrap().path())
        .start()
        .unwrap();
    for level in [Level::Warn, Level::Info, Level::Error] {
        publisher.publish(line("etl", level, "row 7")).unwrap();
    }
    publisher.wait_persisted(Duration::from_secs(60)).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-logs"));
        c.args(args)
            .env("CDKTR_PRINCIPAL_PORT", principal.api_config().port.to_string())
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for what in [&["query", "--since", "3000d"][..], &["status"]] {
        let always = run(&[what, &["--color", "always"]].concat(), &[]);
        let never = run(&[what, &["--color", "never"]].concat(), &[]);
        let piped = run(what, &[]);
        let no_color = run(what, &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]);
        assert!(always.contains('\x1b'), "{what:?}: {always:?}");
        for plain in [&never, &piped, &no_color] {
            assert!(!plain.contains('\x1b'), "{what:?}: {plain:?}");
        }
        // Colour changes nothing else: not the text, not the padding.
        assert_eq!(strip_ansi(&always), never, "{what:?}");
    }
    let always = run(&["query", "--since", "3000d", "--color", "always"], &[]);
    // The level is styled, its padding is not.
    assert!(always.contains("WARN\x1b[0m "), "{always:?}");
    assert!(always.contains("INFO\x1b[0m "), "{always:?}");
    publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
}
