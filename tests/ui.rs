//! `cdktr-logs ui` end to end: the real binary in a pseudo-terminal, its
//! output read as a screen (vt100), keys typed into it.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdktr_log::testing::free_port;
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

/// `cdktr-logs ui ARGS` in a 110x30 pseudo-terminal, its output read into
/// a [`Term`]; `None` (with the reason printed) where there is no pty.
struct Ui {
    // Kept open so the terminal outlives the child.
    pair: portable_pty::PtyPair,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    term: Arc<Term>,
    keys: Box<dyn Write + Send>,
}

impl Ui {
    fn start(args: &[&str], api_port: u16, publishing_port: u16) -> Option<Ui> {
        let size = PtySize {
            rows: 30,
            cols: 110,
            pixel_width: 0,
            pixel_height: 0,
        };
        let pair = match native_pty_system().openpty(size) {
            Ok(p) => p,
            Err(e) => {
                println!("skipped: no pseudo-terminal on this machine ({e})");
                return None;
            }
        };
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_cdktr-logs"));
        cmd.arg("ui");
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        cmd.env("CDKTR_PRINCIPAL_PORT", api_port.to_string());
        cmd.env("CDKTR_LOGS_PUBLISHING_PORT", publishing_port.to_string());
        let child = pair.slave.spawn_command(cmd).unwrap();
        let term = Arc::new(Term {
            parser: Mutex::new(vt100::Parser::new(30.try_into().unwrap(), 110.try_into().unwrap(), 0)),
            raw: Mutex::new(Vec::new()),
        });
        let mut reader = pair.master.try_clone_reader().unwrap();
        let t = term.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.parser.lock().unwrap().process(&buf[..n]);
                t.raw.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let keys = pair.master.take_writer().unwrap();
        Some(Ui {
            pair,
            child,
            term,
            keys,
        })
    }

    fn press(&mut self, k: &str) {
        self.keys.write_all(k.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Waits for the program to exit; its status.
    fn exited(&mut self) -> portable_pty::ExitStatus {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "the UI did not quit:\n{}", self.term.screen());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = &self.pair;
    }
}

#[test]
fn the_ui_follows_a_running_run_jumps_to_an_error_and_restores_the_terminal() {
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
    let Some(mut ui) = Ui::start(
        &["-i", "etl-1"],
        principal.api_config().port,
        principal.bus().config().publishing_port,
    ) else {
        return;
    };
    let term = ui.term.clone();

    // The run opens, following: lines arrive while we watch.
    let s = term.wait_for("the run's lines", |s| s.contains("FOLLOW") && newest_row(s).is_some());
    let first = newest_row(&s).unwrap();
    term.wait_for("newer lines", |s| newest_row(s).is_some_and(|n| n > first + 20));
    assert!(
        term.parser.lock().unwrap().screen().alternate_screen(),
        "the UI draws on the alternate screen"
    );
    // e: the next ERROR line, and the follow pauses.
    ui.press("g");
    ui.press("e");
    let s = term.wait_for("an ERROR line at the top", |s| {
        s.contains("PAUSED")
            && s.lines()
                .any(|l| l.contains("ERROR") && l.trim_end().trim_end_matches('│').trim_end().ends_with("row 25"))
    });
    assert!(s.contains("etl-1"), "{s}");
    // q: back to the runs; q: quit.
    ui.press("q");
    term.wait_for("the runs screen", |s| s.contains("INSTANCE") && s.contains("RUNNING"));
    ui.press("q");
    let status = ui.exited();
    assert!(status.success(), "{status:?}");
    // The terminal is as it was: main screen, cursor shown, and cooked mode
    // (what is typed is echoed again).
    let restored = term.wait_for("the main screen", |_| {
        !term.parser.lock().unwrap().screen().alternate_screen()
    });
    assert!(!term.parser.lock().unwrap().screen().hide_cursor(), "{restored}");
    let before = term.raw.lock().unwrap().len();
    ui.press("echo-check\n");
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

#[test]
fn a_ui_started_before_its_principal_says_so_then_follows_once_it_is_up() {
    let (api_port, listening_port, publishing_port) = (free_port(), free_port(), free_port());
    let Some(mut ui) = Ui::start(&["-i", "etl-1"], api_port, publishing_port) else {
        return;
    };
    let term = ui.term.clone();
    term.wait_for("the unreachable banner", |s| s.contains("unreachable — retrying"));
    let principal = cdktr_principal::testing::local_principal()
        .api_port(api_port)
        .listening_port(listening_port)
        .publishing_port(publishing_port)
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let publisher = LogPublisher::connect(principal.bus().config()).unwrap();
    let s = term.wait_for("the line published once the principal is up", |s| {
        // Published again until the follower, retrying, is attached.
        let _ = publisher.publish(LogMessage {
            payload: "hello once up".into(),
            ..line(1)
        });
        s.contains("hello once up")
    });
    assert!(!s.contains("unreachable"), "{s}");
    ui.press("q");
    ui.press("q");
    assert!(ui.exited().success());
    publisher.shutdown().unwrap();
    principal.shutdown().unwrap();
}
