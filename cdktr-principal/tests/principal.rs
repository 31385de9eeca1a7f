//! The `cdktr-principal` binary as a real child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdktr_log::{BusConfig, Level, LogMessage, LogPublisher, LogSubscriber};
use cdktr_store::{LogQuery, Store};

use cdktr_principal::testing::free_port;

fn principal(db: &std::path::Path, bus: &BusConfig) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-principal"));
    c.arg("--db")
        .arg(db)
        .args(["--api-port", "0"])
        .env("CDKTR_LOGS_LISTENING_PORT", bus.listening_port.to_string())
        .env("CDKTR_LOGS_PUBLISHING_PORT", bus.publishing_port.to_string())
        .env("CDKTR_LOG_FLUSH_INTERVAL_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for the banner line, so that the sockets are bound.
fn started(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("logs in on"), "unexpected banner {line:?}");
    out
}

fn terminate(child: &mut Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < end, "the principal did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn line(i: usize) -> LogMessage {
    LogMessage {
        workflow_id: "etl".into(),
        workflow_name: "ETL".into(),
        workflow_instance_id: "etl-1".into(),
        task_name: "t".into(),
        task_instance_id: "t-1".into(),
        timestamp_ms: cdktr_log::message::now_ms(),
        level: Level::Info,
        payload: format!("line {i}"),
    }
}

#[test]
fn sigterm_persists_every_accepted_line_and_a_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/app.db");
    let bus = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: free_port(),
        publishing_port: free_port(),
    };
    let mut child = principal(&db, &bus).spawn().unwrap();
    let mut out = started(&mut child);

    // A live watcher sees lines while the flush interval (60 s) holds them.
    let mut watcher = LogSubscriber::all(&bus).unwrap();
    let publisher = LogPublisher::connect(&bus).unwrap();
    let mut joined = false;
    for _ in 0..1000 {
        publisher
            .publish(LogMessage {
                payload: "probe".into(),
                ..line(0)
            })
            .unwrap();
        if watcher.recv_timeout(Duration::from_millis(10)).unwrap().is_some() {
            joined = true;
            break;
        }
    }
    assert!(joined);
    for i in 0..20_000 {
        publisher.publish(line(i)).unwrap();
    }
    let stats = publisher.shutdown().unwrap();
    assert_eq!(stats.dropped, 0);
    // Everything sent has reached the principal once the watcher has seen the last line.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let e = watcher.recv_timeout(Duration::from_secs(1)).unwrap();
        if e.is_some_and(|e| e.message.payload == "line 19999") {
            break;
        }
        assert!(Instant::now() < end, "the last line never arrived");
    }
    terminate(&mut child);
    assert!(wait_exit(&mut child).success());
    let mut rest = String::new();
    while out.read_line(&mut rest).unwrap() > 0 {}
    assert!(rest.contains(&format!("{} received", stats.published)), "{rest}");

    let store = Store::open(&db).unwrap();
    let q = LogQuery {
        payload_contains: Some("line ".into()),
        limit: Some(1_000_000),
        ..Default::default()
    };
    let rows = store.query_logs(&q).unwrap();
    assert_eq!(rows.len(), 20_000);
    drop(store);

    // A restart on the same file starts cleanly with the data in place.
    let mut again = principal(&db, &bus).spawn().unwrap();
    // Dropping its stdout too: a closed pipe must not spoil the shutdown.
    drop(started(&mut again));
    terminate(&mut again);
    assert!(wait_exit(&mut again).success());
    assert_eq!(Store::open(&db).unwrap().query_logs(&q).unwrap().len(), 20_000);
}

#[test]
fn a_port_in_use_or_a_bad_database_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bus = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: taken.local_addr().unwrap().port(),
        publishing_port: free_port(),
    };
    let out = principal(&dir.path().join("a.db"), &bus).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.trim().lines().count() == 1, "{err}");

    // The API port taken: the bus ports are free.
    let out = Command::new(env!("CARGO_BIN_EXE_cdktr-principal"))
        .args(["--db", ":memory:", "--listening-port", "0", "--publishing-port", "0"])
        .args(["--api-port", &taken.local_addr().unwrap().port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.trim().lines().count() == 1, "{err}");

    let bus = BusConfig {
        listening_port: free_port(),
        ..bus
    };
    let out = principal(dir.path(), &bus).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("directory") && err.trim().lines().count() == 1, "{err}");

    let out = principal(&dir.path().join("b.db"), &bus)
        .env("CDKTR_LOGS_PUBLISHING_PORT", "70000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CDKTR_LOGS_PUBLISHING_PORT"));

    for bad in ["abc", "0", "", "-5"] {
        let out = principal(&dir.path().join("c.db"), &bus)
            .env("CDKTR_LOG_FLUSH_INTERVAL_MS", bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("CDKTR_LOG_FLUSH_INTERVAL_MS"),
            "{bad:?}"
        );
    }
}

#[test]
fn a_query_flushes_pending_lines_so_they_are_visible_before_the_30_second_batch_timer() {
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .flush_interval(Duration::from_secs(30))
        .start()
        .unwrap();
    let publisher = LogPublisher::connect(principal.bus().config()).unwrap();
    let q = LogQuery {
        payload_contains: Some("fresh".into()),
        ..Default::default()
    };
    for round in 0..3 {
        let sent = Instant::now();
        publisher
            .publish(LogMessage {
                payload: format!("fresh {round}"),
                ..line(0)
            })
            .unwrap();
        loop {
            let rows = principal.query_logs(&q).unwrap();
            if rows.len() == round + 1 {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "line {round} became queryable only with the timer's batch, if at all"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The interval has not passed: the line was made queryable by the query itself.
        assert!(principal.persister().stats().batches as usize == round + 1);
    }
    publisher.shutdown().unwrap();
    let summary = principal.shutdown().unwrap();
    assert_eq!(summary.persisted, 3);
}

#[test]
fn the_principal_raises_its_open_file_limit_to_the_hard_limit() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;

    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let hard = limit.rlim_max;
    if hard <= 256 {
        println!("skipped: the hard limit on open files is {hard}, nothing to raise to");
        return;
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-principal"));
    c.args(["--db", ":memory:"])
        .args(cdktr_principal::testing::ANY_PORT_FLAGS)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let mut low = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            low.rlim_cur = 256;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("API on"), "{banner}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, [hard.to_string(), hard.to_string()], "{line}");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains(&format!("open file limit raised from 256 to {hard}")),
        "{err}"
    );
}
