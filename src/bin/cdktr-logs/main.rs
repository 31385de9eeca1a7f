//! `cdktr-logs`: the user's view of the logs, live and stored.
//!
//! ```text
//! cdktr-logs query [-w WORKFLOW] [-i INSTANCE] [--task T] [--level L] [--since 1h|RFC3339]
//!                  [--until 1h|RFC3339] [--grep TEXT] [-n N] [-o text|json]
//! cdktr-logs status [--recent N] [-w WORKFLOW] [-i INSTANCE] [-o text|json]
//! cdktr-logs stats [-o text|json]
//! cdktr-logs tail  [-w WORKFLOW]... [-i INSTANCE] [--task T] [--level L] [-n N | --since WHEN]
//! cdktr-logs ui    [-i INSTANCE] [-w WORKFLOW] [--scrollback LINES]
//! cdktr-logs sql "SELECT …" [-o table|json|csv] [--max-rows N]
//! cdktr-logs export FILE [-w -i --task --level --since --until --grep] [--format parquet|csv|jsonl]
//! cdktr-logs keygen NAME [--dir DIR] [--role publisher|reader|admin]
//! ```
//!
//! `tail` follows the live stream, like `kubectl logs -f`. `query` reads
//! stored lines oldest first, all of them or the last `-n`, like
//! `journalctl`. Levels and statuses are coloured as `--color` says (by
//! default on a terminal, unless `NO_COLOR` is set); `-o json` writes one
//! JSON object per line. The principal is found through `--host`,
//! `--api-port` and `--publishing-port` or their variables; one that does
//! not answer is an error after `--timeout`, never a hang.
//!
//! A client: it builds without DuckDB
//! (`cargo install cdktr-logs --no-default-features --features cli`).

mod export;
mod keygen;
mod output;
mod query;
mod sql;
mod status;
mod tail;
mod ui;

use std::num::NonZeroU16;
use std::process::ExitCode;
use std::time::Duration;

use anstream::ColorChoice;
use cdktr_log::config::{process_env, ENV_HOST, ENV_PRINCIPAL_PORT, ENV_PUBLISHING_PORT};
use cdktr_log::curve::{ClientKeys, ENV_CURVE_SECRET_KEY, ENV_CURVE_SERVER_KEY};
use cdktr_log::message::now_ms;
use cdktr_log::{ApiClient, ApiConfig, BusConfig, Level};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

use crate::output::Out;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

pub(crate) fn output() -> Arg {
    Arg::new("output")
        .short('o')
        .long("output")
        .value_parser(["text", "json"])
        .default_value("text")
        .help("Output format: text, or one JSON object per line")
}

pub(crate) fn level() -> Arg {
    Arg::new("level")
        .long("level")
        .value_parser(|s: &str| s.parse::<Level>().map_err(|e| e.to_string()))
        .help("Only lines at this level or more severe")
}

/// A flag that can also come from a variable. Clap shows the variable in
/// `--help` and lets the flag win; the variable itself is read, and
/// checked, by [`ApiConfig::from_env`] and [`BusConfig::from_env`], as every
/// cdktr program reads it.
fn setting(name: &'static str, var: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .global(true)
        .env(var)
        .value_name(value_name)
        .help(help)
}

fn cli() -> Command {
    Command::new("cdktr-logs")
        .about("Follow and query cdktr workflow logs and statuses")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .global(true)
                .value_name("DURATION")
                .value_parser(parse_duration)
                .help("How long to wait for the principal (default 5s)"),
        )
        .arg(
            Arg::new("color")
                .long("color")
                .global(true)
                .value_name("WHEN")
                .value_parser(["auto", "always", "never"])
                .default_value("auto")
                .help("Colour levels and statuses: auto (on a terminal, unless NO_COLOR is set), always, never"),
        )
        .arg(setting(
            "host",
            ENV_HOST,
            "HOST",
            "The principal's host [default: 127.0.0.1]",
        ))
        .arg(setting(
            "api-port",
            ENV_PRINCIPAL_PORT,
            "PORT",
            "The principal's API port [default: 5561]",
        ))
        .arg(setting(
            "publishing-port",
            ENV_PUBLISHING_PORT,
            "PORT",
            "The port of the live stream (tail) [default: 5563]",
        ))
        .arg(setting(
            "curve-secret-key",
            ENV_CURVE_SECRET_KEY,
            "PATH",
            "CURVE: this client's secret key file (NAME.key); needs --curve-server-key",
        ))
        .arg(setting(
            "curve-server-key",
            ENV_CURVE_SERVER_KEY,
            "PATH",
            "CURVE: the principal's public key file (its NAME.pub)",
        ))
        .subcommand(tail::command())
        .subcommand(query::command())
        .subcommand(status::command())
        .subcommand(sql::command())
        .subcommand(export::command())
        .subcommand(ui::command())
        .subcommand(Command::new("stats").about("The principal's counters").arg(output()))
        .subcommand(keygen::command())
}

/// A duration as people write it (`500ms`, `30s`, `15m`, `1h`, `2d`,
/// `1h 30m`).
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} needs a unit: ms, s, m, h or d"));
    }
    humantime::parse_duration(t).map_err(|e| format!("{s:?} is not a duration (e.g. 500ms, 30s, 15m, 1h, 2d): {e}"))
}

/// `1h` (that long ago) or an RFC 3339 time, as ms since the epoch.
pub(crate) fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.timestamp_millis());
    }
    match parse_duration(s) {
        Ok(ago) => Ok(now_ms().saturating_sub(ago.as_millis().min(i64::MAX as u128) as i64)),
        Err(_) => Err(format!(
            "{s:?} is neither a duration (30s, 15m, 1h, 2d) nor an RFC 3339 time (2026-11-27T08:00:00Z)"
        )),
    }
}

/// Where the principal is and how long to wait for it.
struct Principal {
    api: ApiConfig,
    bus: BusConfig,
    timeout: Duration,
    keys: Option<ClientKeys>,
}

impl Principal {
    /// The variables (checked as every cdktr program checks them), then
    /// the flags given on the command line.
    fn from(m: &ArgMatches) -> Result<Principal> {
        let (mut api, mut bus) = (ApiConfig::from_env()?, BusConfig::from_env()?);
        if let Some(host) = flag(m, "host", |h| Ok(h.to_owned()))? {
            bus.host.clone_from(&host);
            api.host = host;
        }
        if let Some(port) = flag(m, "api-port", port)? {
            api.port = port;
        }
        if let Some(port) = flag(m, "publishing-port", port)? {
            bus.publishing_port = port;
        }
        let timeout = m
            .get_one::<Duration>("timeout")
            .copied()
            .unwrap_or(cdktr_log::api::DEFAULT_TIMEOUT);
        // The variables, each replaced by its flag when one is given.
        let given = |name: &str| {
            (m.value_source(name) == Some(ValueSource::CommandLine)).then(|| m.get_one::<String>(name).cloned())
        };
        let keys = |var: &str| match var {
            ENV_CURVE_SECRET_KEY => given("curve-secret-key").unwrap_or_else(|| process_env(var)),
            ENV_CURVE_SERVER_KEY => given("curve-server-key").unwrap_or_else(|| process_env(var)),
            _ => None,
        };
        let keys = ClientKeys::from_lookup(&keys)?;
        Ok(Principal {
            api,
            bus,
            timeout,
            keys,
        })
    }

    fn client(&self) -> Result<ApiClient> {
        Ok(ApiClient::connect_with(&self.api, self.keys.as_ref())?.with_timeout(self.timeout))
    }
}

fn port(s: &str) -> std::result::Result<u16, String> {
    s.trim()
        .parse::<NonZeroU16>()
        .map(NonZeroU16::get)
        .map_err(|_| "expected a port from 1 to 65535".into())
}

/// The value of a [`setting`] when it was given as a flag.
fn flag<T>(
    m: &ArgMatches,
    name: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    if m.value_source(name) != Some(ValueSource::CommandLine) {
        return Ok(None);
    }
    let raw = m.get_one::<String>(name).map_or("", String::as_str);
    match parse(raw) {
        Ok(v) => Ok(Some(v)),
        Err(why) => Err(format!("invalid --{name} {raw:?}: {why}").into()),
    }
}

fn main() -> ExitCode {
    let m = cli().get_matches();
    let color = match m.get_one::<String>("color").map(String::as_str) {
        Some("always") => ColorChoice::Always,
        Some("never") => ColorChoice::Never,
        _ => ColorChoice::Auto,
    };
    if let Some(("keygen", sub)) = m.subcommand() {
        return match keygen::run(sub) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cdktr-logs: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = Principal::from(&m).and_then(|p| {
        let (name, sub) = m.subcommand().ok_or("a subcommand is needed (try --help)")?;
        let json = sub
            .try_get_one::<String>("output")
            .ok()
            .flatten()
            .is_some_and(|o| o == "json");
        let mut out = Out::new(color, json);
        match name {
            "tail" => tail::run(sub, &p, &mut out),
            "query" => query::run(sub, &p, &mut out),
            "status" => status::run(sub, &p, &mut out),
            "sql" => sql::run(sub, &p, &mut out),
            "export" => export::run(sub, &p),
            "stats" => status::stats(&p, &mut out),
            "ui" => ui::run(sub, &p),
            _ => Err("unknown subcommand (try --help)".into()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdktr-logs: {e}");
            ExitCode::FAILURE
        }
    }
}
