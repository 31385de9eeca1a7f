//! `cdktr-logs ui` end to end: the real binary in a pseudo-terminal, its
//! output read as a screen (vt100), keys typed into it.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdktr_log::{Level, LogMessage, LogPublisher, RunStatus};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};

const WAIT: Duration = Duration::from_secs(60);

fn line(i: u64) -> LogMessage {
    LogMessage {
        workflow_id: "etl".into(),
        workflow_name: "ETL".into(),
        workflow_instance_id: "etl-1".into(),
        task_name: if i.is_multiple_of(2) { "extract" } else { "load" }.into(),
        task_instance_id: "t-1".into(),
        timestamp_ms: cdktr_log::message::now_ms(),
        level: if i % 50 == 25 { Level::Error } else { Level::Info },
        payload: format!("row {i}"),
    }
}

/// What the terminal shows, and everything the program wrote.
struct Term {
    parser: Mutex<vt100::Parser>,
    raw: Mutex<Vec<u8>>,
}

impl Term {
    fn screen(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < end, "waited for {what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The highest `row N` on the screen.
fn newest_row(s: &str) -> Option<u64> {
    s.split("row ")
        .skip(1)
        .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
}

#[test]
fn the_ui_follows_a_running_run_jumps_to_an_error_and_restores_the_terminal() {
    let pty = native_pty_system();
    let pair = match pty.openpty(PtySize {
        rows: 30,
        cols: 110,
        pixel_width: 0,
        pixel_height: 0,
    }) {
        Ok(p) => p,
        Err(e) => {
            println!("skipped: no pseudo-terminal on this machine ({e})");
            return;
        }
    };
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let mut api = cdktr_log::ApiClient::connect(&principal.api_config()).unwrap();
    api.record_workflow_status("etl", "etl-1", RunStatus::Running, None)
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let publisher = LogPublisher::builder(principal.bus().config())
        .acknowledged_by(&principal.api_config())
        .spool_dir(spool.path())
        .start()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Relaxed) {
                publisher.publish(line(i)).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            publisher.shutdown().unwrap();
        })
    };

    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_cdktr-logs"));
    cmd.args(["ui", "-i", "etl-1"]);
    cmd.env("TERM", "xterm-256color");
    cmd.env("CDKTR_PRINCIPAL_PORT", principal.api_config().port.to_string());
    cmd.env(
        "CDKTR_LOGS_PUBLISHING_PORT",
        principal.bus().config().publishing_port.to_string(),
    );
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    let term = Arc::new(Term {
        parser: Mutex::new(vt100::Parser::new(30.try_into().unwrap(), 110.try_into().unwrap(), 0)),
        raw: Mutex::new(Vec::new()),
    });
    let mut reader = pair.master.try_clone_reader().unwrap();
    {
        let term = term.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                term.parser.lock().unwrap().process(&buf[..n]);
                term.raw.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let mut keys = pair.master.take_writer().unwrap();
    let mut press = |k: &str| {
        keys.write_all(k.as_bytes()).unwrap();
        keys.flush().unwrap();
    };

    // The run opens, following: lines arrive while we watch.
    let s = term.wait_for("the run's lines", |s| s.contains("FOLLOW") && newest_row(s).is_some());
    let first = newest_row(&s).unwrap();
    term.wait_for("newer lines", |s| newest_row(s).is_some_and(|n| n > first + 20));
    assert!(
        term.parser.lock().unwrap().screen().alternate_screen(),
        "the UI draws on the alternate screen"
    );
    // e: the next ERROR line, and the follow pauses.
    press("g");
    press("e");
    let s = term.wait_for("an ERROR line at the top", |s| {
        s.contains("PAUSED")
            && s.lines()
                .any(|l| l.contains("ERROR") && l.trim_end().trim_end_matches('│').trim_end().ends_with("row 25"))
    });
    assert!(s.contains("etl-1"), "{s}");
    // q: back to the runs; q: quit.
    press("q");
    term.wait_for("the runs screen", |s| s.contains("INSTANCE") && s.contains("RUNNING"));
    press("q");
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the UI did not quit:\n{}", term.screen());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // The terminal is as it was: main screen, cursor shown, and cooked mode
    // (what is typed is echoed again).
    let restored = term.wait_for("the main screen", |_| {
        !term.parser.lock().unwrap().screen().alternate_screen()
    });
    assert!(!term.parser.lock().unwrap().screen().hide_cursor(), "{restored}");
    let before = term.raw.lock().unwrap().len();
    press("echo-check\n");
    let end = Instant::now() + WAIT;
    loop {
        let raw = term.raw.lock().unwrap();
        if String::from_utf8_lossy(&raw[before..]).contains("echo-check") {
            break;
        }
        drop(raw);
        assert!(Instant::now() < end, "the terminal was left in raw mode (no echo)");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    writer.join().unwrap();
    principal.shutdown().unwrap();
}
