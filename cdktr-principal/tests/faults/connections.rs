//! Connections to the log port that the principal cannot keep: a flood of
//! idle ones under a low descriptor limit, and one that sends a frame over
//! the hard size limit. Both are counted and logged; the API keeps
//! answering and the process does not spin.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cdktr_log::{ApiClient, ApiConfig, BusConfig, LogPublisher};
use cdktr_principal::testing::free_port;

use crate::{collect_stderr, started, Killed};

fn principal(db: &Path, ports: &[u16; 3], nofile: Option<u64>) -> Killed {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdktr-principal"));
    command
        .arg("--db")
        .arg(db)
        .args(["--api-port", &ports[0].to_string()])
        .args(["--listening-port", &ports[1].to_string()])
        .args(["--publishing-port", &ports[2].to_string()])
        .args(["--flush-interval", "200ms"])
        .env("RUST_LOG", "info");
    if let Some(n) = nofile {
        // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
        unsafe {
            command.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    started(command.stderr(std::process::Stdio::piped()))
}

fn configs(ports: &[u16; 3]) -> (BusConfig, ApiConfig) {
    let host = "127.0.0.1".to_string();
    let bus = BusConfig {
        host: host.clone(),
        listening_port: ports[1],
        publishing_port: ports[2],
    };
    (bus, ApiConfig { host, port: ports[0] })
}

/// CPU time the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flood_of_idle_connections_leaves_the_api_answering_and_the_cpu_idle() {
    const LIMIT: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let mut child = principal(&dir.path().join("app.db"), &ports, Some(LIMIT));
    let log = collect_stderr(&mut child);
    let (bus, api_config) = configs(&ports);
    let log_port: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    // More idle connections than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..LIMIT + 150 {
        if let Ok(s) = TcpStream::connect_timeout(&log_port, Duration::from_millis(200)) {
            flood.push(s);
        }
    }
    let mut api = ApiClient::connect(&api_config)
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    api.stats().expect("the API answers under the flood");
    // The manager may still be taking the accepts the kernel queued; on a
    // busy machine some connects above timed out, so more are opened until
    // the descriptors run short.
    wait_until("the log port to stop listening", || {
        if let Ok(s) = TcpStream::connect_timeout(&log_port, Duration::from_millis(200)) {
            flood.push(s);
        }
        api.stats().is_ok_and(|s| s.listener_pauses >= 1)
    });
    let stats = api.stats().expect("the API answers under the flood");
    assert!(stats.connections < 100, "closed with the listener: {stats:?}");
    let before = cpu_ticks(child.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.0.id()) - before;
    // 100 ticks a second: under a third of one core, where EMFILE made
    // libzmq's listener spin at 96%.
    assert!(used < 66, "{used} ticks of CPU in 2 s while flooded");
    let text = log.lock().unwrap().clone();
    assert!(text.contains("the log port stops listening"), "{text}");
    eprintln!(
        "{} connections made, {} open, {} pauses; {used} CPU ticks in 2 s",
        flood.len(),
        stats.connections,
        stats.listener_pauses,
    );

    drop(flood);
    wait_until("log connections taken again", || {
        api.stats().is_ok_and(|s| !s.refusing_connections)
    });
    let publisher = LogPublisher::builder(&bus)
        .acknowledged_by(&api_config)
        .spool_dir(dir.path().join("spool"))
        .start()
        .unwrap();
    publisher.publish(crate::line(0)).unwrap();
    publisher.wait_persisted(Duration::from_secs(30)).unwrap();
    assert!(log.lock().unwrap().contains("taking log connections again"));
}

#[test]
fn a_frame_over_the_hard_limit_closes_its_connection_counted_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let mut child = principal(&dir.path().join("app.db"), &ports, None);
    let log = collect_stderr(&mut child);
    let (bus, api_config) = configs(&ports);
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&bus.listening_endpoint()).unwrap();
    let huge = vec![0x5a_u8; 2 * cdktr_log::wire::DEFAULT_MAX_MESSAGE_BYTES + 1];
    push.send("wf\0", zmq::SNDMORE).unwrap();
    push.send(huge, 0).unwrap();
    let mut api = ApiClient::connect(&api_config).unwrap();
    wait_until("the closed connection counted", || {
        api.stats().is_ok_and(|s| s.disconnects >= 1)
    });
    wait_until("the closed connection logged", || {
        log.lock().unwrap().contains("a log connection closed")
    });
    assert_eq!(
        api.stats().unwrap().rejected,
        0,
        "never read: the connection was dropped"
    );
}
