//! `cdktr-principal`: runs the log bus, the log store and the API until
//! SIGINT or SIGTERM, then shuts down without losing an accepted line.

use std::process::ExitCode;
use std::time::Duration;

use cdktr_log::config::{process_env, Setting, ENV_HOST, ENV_LISTENING_PORT, ENV_PRINCIPAL_PORT, ENV_PUBLISHING_PORT};
use cdktr_log::curve::{Authorizer, ENV_AUTHORIZED_KEYS_DIR, ENV_CURVE_SECRET_KEY};
use cdktr_principal::{PrincipalBuilder, Security, ENV_DB_PATH, ENV_HEARTBEAT_TIMEOUT_MS, ENV_QUERY_TIMEOUT_MS};
use cdktr_store::archive::{Retention, ENV_ARCHIVE_DIR, ENV_ARCHIVE_RETENTION, ENV_HOT_RETENTION};
use cdktr_store::persister::{MinFreeSpace, ENV_FLUSH_INTERVAL_MS, ENV_MIN_FREE_SPACE};
use cdktr_store::Location;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A flag that can also come from a variable. Clap shows the variable in
/// `--help` and lets the flag win; the variable itself is read, and
/// checked, by [`PrincipalBuilder::from_env`], as embedders read it.
fn setting(name: &'static str, var: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    Arg::new(name).long(name).env(var).value_name(value_name).help(help)
}

fn cli() -> Command {
    Command::new("cdktr-principal")
        .about("The cdktr principal: receives, fans out, stores and serves workflow logs")
        .after_help(
            "Also read from the environment: CDKTR_DB_MEMORY_LIMIT, CDKTR_DB_THREADS, CDKTR_DB_CHECKPOINT_THRESHOLD (README).\n\
             SIGINT or SIGTERM stops it without losing a line; it then exits 0.",
        )
        .arg(setting(
            "db",
            ENV_DB_PATH,
            "PATH",
            "Database file, or :memory: [default: $HOME/.cdktr/app.db]",
        ))
        .arg(setting(
            "host",
            ENV_HOST,
            "HOST",
            "Address to bind [default: 127.0.0.1]",
        ))
        .arg(setting(
            "api-port",
            ENV_PRINCIPAL_PORT,
            "PORT",
            "The API's port; 0 for any free port [default: 5561]",
        ))
        .arg(setting(
            "listening-port",
            ENV_LISTENING_PORT,
            "PORT",
            "Port agents push logs to; 0 for any free port [default: 5562]",
        ))
        .arg(setting(
            "publishing-port",
            ENV_PUBLISHING_PORT,
            "PORT",
            "Port of the live stream; 0 for any free port [default: 5563]",
        ))
        .arg(setting(
            "flush-interval",
            ENV_FLUSH_INTERVAL_MS,
            "DURATION",
            "Longest a line waits to be written, e.g. 500ms, 30s (the variable: milliseconds) [default: 30s]",
        ))
        .arg(setting(
            "query-timeout",
            ENV_QUERY_TIMEOUT_MS,
            "DURATION",
            "Longest one query runs before it is stopped (the variable: milliseconds) [default: 30s]",
        ))
        .arg(setting(
            "min-free-space",
            ENV_MIN_FREE_SPACE,
            "SIZE",
            "Free space kept on the database's filesystem; under it writes pause, e.g. 2GiB, 5%, 0 for never \
             [default: the smaller of 1GiB and 5%]",
        ))
        .arg(setting(
            "hot-retention",
            ENV_HOT_RETENTION,
            "DURATION",
            "Lines older than this move from DuckDB to the Parquet archive, e.g. 7d, 36h; 0 keeps every line in \
             DuckDB [default: 7d]",
        ))
        .arg(setting(
            "archive-retention",
            ENV_ARCHIVE_RETENTION,
            "DURATION",
            "Archived days older than this are deleted, e.g. 365d; 0 keeps them [default: keep for ever]",
        ))
        .arg(setting(
            "archive-dir",
            ENV_ARCHIVE_DIR,
            "PATH",
            "The Parquet archive's directory [default: archive/ beside the database file]",
        ))
        .arg(setting(
            "curve-secret-key",
            ENV_CURVE_SECRET_KEY,
            "PATH",
            "CURVE on every socket: the principal's secret key file (NAME.key, from `cdktr-logs keygen`); needs \
             --authorized-keys-dir",
        ))
        .arg(setting(
            "authorized-keys-dir",
            ENV_AUTHORIZED_KEYS_DIR,
            "DIR",
            "CURVE: the clients' public key files, each with a role (publisher, reader, admin); changes apply \
             within seconds",
        ))
        .arg(
            Arg::new("insecure")
                .long("insecure")
                .action(clap::ArgAction::SetTrue)
                .help("Bind an address other than loopback without CURVE keys: anyone who reaches it can write and read every log line"),
        )
        .arg(setting(
            "heartbeat-timeout",
            ENV_HEARTBEAT_TIMEOUT_MS,
            "DURATION",
            "Silence after which an agent's running workflows are CRASHED (the variable: milliseconds) \
             [default: 30s]",
        ))
}

/// The value of a [`setting`] when it was given as a flag.
fn flag<T>(m: &ArgMatches, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if m.value_source(name) != Some(ValueSource::CommandLine) {
        return Ok(None);
    }
    let raw = m.get_one::<String>(name).map_or("", String::as_str);
    parse(raw.trim())
        .map(Some)
        .map_err(|why| format!("invalid --{name} {raw:?}: {why}"))
}

fn port(s: &str) -> Result<u16, String> {
    s.parse().map_err(|_| "expected a port from 0 to 65535".into())
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("expected a duration such as 500ms or 30s: {e}"))
}

/// The environment, then the flags given on the command line.
fn builder(m: &ArgMatches) -> Result<PrincipalBuilder, Box<dyn std::error::Error>> {
    let mut b = PrincipalBuilder::from_env()?;
    if let Some(db) = flag(m, "db", |s| Location::parse_setting(s).map_err(String::from))? {
        b = b.database(db);
    }
    if let Some(host) = flag(m, "host", |s| Ok(s.to_owned()))? {
        b = b.host(host);
    }
    if let Some(p) = flag(m, "api-port", port)? {
        b = b.api_port(p);
    }
    if let Some(p) = flag(m, "listening-port", port)? {
        b = b.listening_port(p);
    }
    if let Some(p) = flag(m, "publishing-port", port)? {
        b = b.publishing_port(p);
    }
    if let Some(d) = flag(m, "flush-interval", duration)? {
        b = b.flush_interval(d);
    }
    if let Some(min) = flag(m, "min-free-space", |s| {
        MinFreeSpace::parse_setting(s).map_err(String::from)
    })? {
        b = b.min_free_space(min);
    }
    if let Some(d) = flag(m, "query-timeout", duration)? {
        b = b.query_timeout(d);
    }
    if let Some(d) = flag(m, "heartbeat-timeout", duration)? {
        b = b.heartbeat_timeout(d);
    }
    let retention = |s: &str| Retention::parse_setting(s).map(|r| r.0).map_err(String::from);
    if let Some(keep) = flag(m, "hot-retention", retention)? {
        b = b.hot_retention(keep);
    }
    if let Some(keep) = flag(m, "archive-retention", retention)? {
        b = b.archive_retention(keep);
    }
    if let Some(dir) = flag(m, "archive-dir", |s| Ok(std::path::PathBuf::from(s)))? {
        b = b.archive_dir(dir);
    }
    // The variables, each replaced by its flag when one is given.
    let given = |name: &str| {
        (m.value_source(name) == Some(ValueSource::CommandLine)).then(|| m.get_one::<String>(name).cloned())
    };
    let keys = |var: &str| match var {
        ENV_CURVE_SECRET_KEY => given("curve-secret-key").unwrap_or_else(|| process_env(var)),
        ENV_AUTHORIZED_KEYS_DIR => given("authorized-keys-dir").unwrap_or_else(|| process_env(var)),
        _ => None,
    };
    match (Authorizer::from_lookup(&keys)?, m.get_flag("insecure")) {
        (Some(_), true) => return Err("--insecure with CURVE keys: give one or the other".into()),
        (Some(auth), false) => b = b.security(Security::Curve(auth)),
        (None, true) => b = b.security(Security::Insecure),
        (None, false) => {}
    }
    Ok(b)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = cli().get_matches();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdktr-principal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a status line; a closed stdout must not stop a graceful shutdown.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Raises the soft limit on open files to the hard one: every agent and
/// subscriber connection is a descriptor, and the usual soft limit (1,024)
/// is reached by about a thousand idle connections (issue 12).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let soft = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        log::info!("open file limit raised from {soft} to {}", limit.rlim_max);
    } else {
        log::warn!(
            "open file limit stays at {soft} (hard {}): {}",
            limit.rlim_max,
            std::io::Error::last_os_error()
        );
    }
}

fn run(args: &ArgMatches) -> Result<(), Box<dyn std::error::Error>> {
    let builder = builder(args)?;
    raise_open_file_limit();
    // Registered before anything starts, so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let principal = builder.start()?;
    let db_name = match principal.database() {
        Location::Memory => ":memory:".to_string(),
        Location::File(p) => p.display().to_string(),
    };
    say(format_args!(
        "cdktr-principal: logs in on {}, out on {}, API on {}, database {db_name}",
        principal.bus().listening_endpoint(),
        principal.bus().publishing_endpoint(),
        principal.api_endpoint(),
    ));
    let signal = signals.forever().next();
    log::info!("signal {signal:?}: shutting down");
    let s = principal.shutdown()?;
    say(format_args!(
        "cdktr-principal: stopped; {} received, {} persisted, {} rejected, {} duplicates",
        s.received, s.persisted, s.rejected, s.duplicates
    ));
    Ok(())
}
