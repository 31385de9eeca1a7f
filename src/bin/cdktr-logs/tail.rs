//! `cdktr-logs tail`: follow the live stream.

use std::net::{TcpStream, ToSocketAddrs};

use cdktr_log::{Level, LogSubscriber};
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::output::Out;
use crate::{Principal, Result};

pub fn command() -> Command {
    Command::new("tail")
        .about("Follow the live log stream")
        .arg(
            Arg::new("workflow")
                .short('w')
                .long("workflow")
                .action(ArgAction::Append)
                .help("Only this workflow id (exact); repeat for several"),
        )
        .arg(crate::level())
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

    let mut builder = LogSubscriber::builder(config);
    for w in m.get_many::<String>("workflow").into_iter().flatten() {
        builder = builder.workflow(w.clone());
    }
    let mut sub = builder.connect()?;
    let min = m.get_one::<Level>("level").copied();
    for env in sub.iter() {
        let line = env?.message;
        if min.is_some_and(|min| line.level < min) {
            continue;
        }
        if !out.log_line(&line) || !out.flush() {
            return Ok(());
        }
    }
    Ok(())
}
