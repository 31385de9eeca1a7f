//! `cdktr-logs tail`: stored lines (the last N, or since a time), then the
//! live stream, with no line missing or twice between the two, and none
//! across a principal restart (the follower re-syncs).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use cdktr_log::follower::{Followed, History, LogFollower};
use cdktr_log::Level;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

use crate::output::Out;
use crate::{Principal, Result};

pub fn command() -> Command {
    Command::new("tail")
        .about("Follow the logs: the last N stored lines (or those since a time), then live ones")
        .arg(
            Arg::new("workflow")
                .short('w')
                .long("workflow")
                .action(ArgAction::Append)
                .help("Only this workflow id (exact); repeat for several"),
        )
        .arg(
            Arg::new("instance")
                .short('i')
                .long("instance")
                .help("Only this workflow instance id (exact)"),
        )
        .arg(Arg::new("task").long("task").help("Only this task name (exact)"))
        .arg(crate::level())
        .arg(
            Arg::new("lines")
                .short('n')
                .long("lines")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .conflicts_with("since")
                .help("First the last N stored lines (default 0: live lines only)"),
        )
        .arg(
            Arg::new("since")
                .long("since")
                .value_name("WHEN")
                .value_parser(crate::parse_time)
                .help("First the stored lines since then: 1h (ago) or RFC 3339"),
        )
        .arg(crate::output())
}

pub fn run(m: &ArgMatches, p: &Principal, out: &mut Out) -> Result {
    let config = &p.bus;
    // A SUB socket waits silently for a principal that is not there; check
    // once that something listens, so a wrong port is an error, not a hang.
    let addr = (config.host.as_str(), config.publishing_port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", config.host))?;
    TcpStream::connect_timeout(&addr, p.timeout)
        .map_err(|e| format!("no principal at {}: {e}", config.publishing_endpoint()))?;

    let history = match (m.get_one::<u64>("lines"), m.get_one::<i64>("since")) {
        (_, Some(&since)) => History::Since(since),
        (Some(&n), None) if n > 0 => History::Last(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => History::Live,
    };
    let mut builder = LogFollower::builder(config, &p.api)
        .history(history)
        .timeout(p.timeout)
        .curve(p.keys.clone());
    for w in m.get_many::<String>("workflow").into_iter().flatten() {
        builder = builder.workflow(w.clone());
    }
    if let Some(i) = m.get_one::<String>("instance") {
        builder = builder.instance(i.clone());
    }
    if let Some(t) = m.get_one::<String>("task") {
        builder = builder.task(t.clone());
    }
    if let Some(&l) = m.get_one::<Level>("level") {
        builder = builder.min_level(l);
    }
    let mut follower = builder.connect()?;
    loop {
        match follower.next_timeout(Duration::from_millis(200))? {
            Some(Followed::Line(line)) => {
                if !out.log_line((&line.message).into()) {
                    return Ok(());
                }
                continue;
            }
            Some(Followed::Unreachable(why)) => eprintln!("cdktr-logs: principal unreachable, retrying: {why}"),
            Some(Followed::Resumed) => eprintln!("cdktr-logs: principal back; lines stored meanwhile follow"),
            Some(_) | None => {}
        }
        // Written lines reach the reader once the stream goes quiet.
        if !out.flush() {
            return Ok(());
        }
    }
}
