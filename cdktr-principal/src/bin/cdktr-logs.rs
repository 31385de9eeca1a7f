//! `cdktr-logs`: the user's view of the log bus.
//!
//! ```text
//! cdktr-logs tail [-w WORKFLOW]... [--level LEVEL] [-o text|json]
//! ```
//!
//! `tail` follows the live stream, like `kubectl logs -f`: every workflow,
//! or only those named with `-w` (exact ids), at or above `--level`. Levels
//! are coloured on a terminal and plain when piped; `-o json` writes one
//! JSON object per line.

use std::io::{IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use cdktr_log::{BusConfig, Level, LogMessage, LogSubscriber};
use clap::{Arg, ArgAction, Command};

fn cli() -> Command {
    Command::new("cdktr-logs")
        .about("Follow and query cdktr workflow logs")
        .subcommand_required(true)
        .subcommand(
            Command::new("tail")
                .about("Follow the live log stream")
                .arg(
                    Arg::new("workflow")
                        .short('w')
                        .long("workflow")
                        .action(ArgAction::Append)
                        .help("Only this workflow id (exact); repeat for several"),
                )
                .arg(
                    Arg::new("level")
                        .long("level")
                        .value_parser(|s: &str| s.parse::<Level>().map_err(|e| e.to_string()))
                        .help("Only lines at this level or more severe"),
                )
                .arg(
                    Arg::new("output")
                        .short('o')
                        .long("output")
                        .value_parser(["text", "json"])
                        .default_value("text")
                        .help("Output format"),
                ),
        )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let result = match matches.subcommand() {
        Some(("tail", m)) => tail(
            m.get_many::<String>("workflow")
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            m.get_one::<Level>("level").copied(),
            m.get_one::<String>("output").is_some_and(|o| o == "json"),
        ),
        _ => unreachable!("clap requires a known subcommand"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdktr-logs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tail(workflows: Vec<String>, min: Option<Level>, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let config = BusConfig::from_env()?;
    // A SUB socket waits silently for a principal that is not there; check
    // once that something listens, so a wrong port is an error, not a hang.
    let addr = (config.host.as_str(), config.publishing_port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", config.host))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("no principal at {}: {e}", config.publishing_endpoint()))?;

    let mut builder = LogSubscriber::builder(&config);
    for w in workflows {
        builder = builder.workflow(w);
    }
    let mut sub = builder.connect()?;
    let color = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for env in sub.iter() {
        let m = env?.message;
        if min.is_some_and(|min| m.level < min) {
            continue;
        }
        let written = if json {
            writeln!(out, "{}", m.to_json())
        } else {
            write_text(&mut out, &m, color)
        };
        if written.and_then(|()| out.flush()).is_err() {
            // The reader went away (`| head`): that is the end.
            return Ok(());
        }
    }
    Ok(())
}

fn write_text(out: &mut impl Write, m: &LogMessage, color: bool) -> std::io::Result<()> {
    if !color {
        return writeln!(out, "{}", m.display());
    }
    let code = match m.level {
        Level::Trace | Level::Debug => "2",
        Level::Info => "32",
        Level::Warn => "33",
        Level::Error => "1;31",
    };
    let line = m.display().to_string();
    // The level is the second field of the human format.
    match line.split_once(' ') {
        Some((time, rest)) => {
            let (level, rest) = rest.split_at(5.min(rest.len()));
            writeln!(out, "{time} \x1b[{code}m{level}\x1b[0m{rest}")
        }
        None => writeln!(out, "{line}"),
    }
}
