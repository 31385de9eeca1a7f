//! The `cdktr-logs` binary as a real child process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cdktr_log::{BusConfig, Level, LogMessage, LogPublisher};

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

/// `cdktr-logs tail ARGS` against `principal`, its lines as they come.
fn tail(principal: &cdktr_principal::Principal, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = cli(principal.bus().config())
        .env("CDKTR_PRINCIPAL_PORT", principal.api_config().port.to_string())
        .arg("tail")
        .args(args)
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
    (child, rx)
}

/// Payloads printed (as JSON lines) up to and without the one named `end`.
fn payloads_until_end(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut shown = Vec::new();
    loop {
        let l = rx.recv_timeout(Duration::from_secs(30)).expect("tail keeps printing");
        let v: serde_json::Value = serde_json::from_str(&l).expect("one JSON object per line");
        let payload = v["payload"].as_str().unwrap().to_string();
        if payload == "end" {
            return shown;
        }
        shown.push(payload);
    }
}

fn started_principal() -> (cdktr_principal::Principal, LogPublisher, tempfile::TempDir) {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let publisher = LogPublisher::builder(principal.bus().config())
        .acknowledged_by(&principal.api_config())
        .spool_dir(spool.path())
        .start()
        .unwrap();
    (principal, publisher, spool)
}

#[test]
fn tail_follows_one_workflow_at_a_level_as_json() {
    let (principal, publisher, _spool) = started_principal();
    let (mut child, rx) = tail(&principal, &["-w", "etl", "--level", "warn", "-o", "json"]);
    // Probe until the follower is attached (it prints lines from then on).
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
    let shown: Vec<String> = payloads_until_end(&rx).into_iter().filter(|p| p != "probe").collect();
    assert_eq!(shown, ["shown warn", "shown error"]);
    child.kill().unwrap();
    child.wait().unwrap();
    publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
}

#[test]
fn tail_n_prints_the_last_stored_lines_of_one_task_then_follows() {
    let (principal, publisher, _spool) = started_principal();
    let at = |task: &str, i: usize| LogMessage {
        task_name: task.into(),
        timestamp_ms: 1_795_768_200_000 + i as i64,
        ..line("etl", Level::Info, &format!("{task} {i}"))
    };
    for i in 0..20 {
        publisher.publish(at("extract", i)).unwrap();
        publisher.publish(at("load", i)).unwrap();
    }
    publisher.wait_persisted(Duration::from_secs(60)).unwrap();
    let (mut child, rx) = tail(&principal, &["-i", "etl-1", "--task", "load", "-n", "3", "-o", "json"]);
    let first: Vec<String> = (0..3)
        .map(|_| {
            let l = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the stored lines come first");
            serde_json::from_str::<serde_json::Value>(&l).unwrap()["payload"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(first, ["load 17", "load 18", "load 19"]);
    // Then live lines, of that task only.
    for i in 20..23 {
        publisher.publish(at("extract", i)).unwrap();
        publisher.publish(at("load", i)).unwrap();
    }
    publisher
        .publish(LogMessage {
            task_name: "load".into(),
            ..line("etl", Level::Info, "end")
        })
        .unwrap();
    assert_eq!(payloads_until_end(&rx), ["load 20", "load 21", "load 22"]);
    child.kill().unwrap();
    child.wait().unwrap();
    // --since and -n together are refused.
    let out = cli(principal.bus().config())
        .args(["tail", "-n", "3", "--since", "1h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
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

#[test]
fn ui_without_a_terminal_is_one_clear_error() {
    let free = cdktr_log::testing::free_port();
    let bus = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: free,
        publishing_port: free,
    };
    let out = cli(&bus).arg("ui").stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a terminal") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'), "nothing drawn");
}
