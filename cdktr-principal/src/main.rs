//! `cdktr-principal`: runs the log bus, the log store and the API until
//! SIGINT or SIGTERM, then shuts down without losing an accepted line.

use std::process::ExitCode;
use std::time::Duration;

use cdktr_log::{ApiConfig, BusConfig};
use cdktr_principal::{
    default_db_path, heartbeat_timeout_from_env, location_from, parse_duration, Principal, ENV_DB_PATH,
};
use cdktr_store::{Location, PersisterConfig};
use clap::{value_parser, Arg, Command};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn cli() -> Command {
    let port = |name: &'static str, env: &str, default: u16| {
        Arg::new(name)
            .long(name)
            .value_name("PORT")
            .value_parser(value_parser!(u16))
            .help(format!("Overrides {env} (default {default}; 0 for any free port)"))
    };
    Command::new("cdktr-principal")
        .about("The cdktr principal: receives, fans out, stores and serves workflow logs")
        .after_help(
            "Flags override the environment: CDKTR_DB_PATH, CDKTR_PRINCIPAL_HOST, CDKTR_PRINCIPAL_PORT,\n\
             CDKTR_LOGS_LISTENING_PORT, CDKTR_LOGS_PUBLISHING_PORT, CDKTR_LOG_FLUSH_INTERVAL_MS,\n\
             CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS. SIGINT or SIGTERM stops it without losing a line.",
        )
        .arg(
            Arg::new("db")
                .long("db")
                .value_name("PATH")
                .help("Database file, or :memory: (default $HOME/.cdktr/app.db)"),
        )
        .arg(
            Arg::new("host")
                .long("host")
                .value_name("HOST")
                .help("Address to bind (default 127.0.0.1)"),
        )
        .arg(port("api-port", "CDKTR_PRINCIPAL_PORT", 5561))
        .arg(port("listening-port", "CDKTR_LOGS_LISTENING_PORT", 5562))
        .arg(port("publishing-port", "CDKTR_LOGS_PUBLISHING_PORT", 5563))
        .arg(
            Arg::new("flush-interval")
                .long("flush-interval")
                .value_name("DURATION")
                .value_parser(parse_duration)
                .help("Longest a line waits to be written, e.g. 500ms, 30s (default 30s)"),
        )
        .arg(
            Arg::new("heartbeat-timeout")
                .long("heartbeat-timeout")
                .value_name("DURATION")
                .value_parser(parse_duration)
                .help("Silence after which an agent's running workflows are CRASHED (default 30s)"),
        )
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

fn run(args: &clap::ArgMatches) -> Result<(), Box<dyn std::error::Error>> {
    let database = args
        .get_one::<String>("db")
        .cloned()
        .or_else(|| std::env::var(ENV_DB_PATH).ok())
        .map_or_else(|| Location::File(default_db_path()), |db| location_from(&db));
    let mut bus = BusConfig::from_env()?;
    let mut api = ApiConfig::from_env()?;
    let mut persister = PersisterConfig::from_env()?;
    let mut heartbeat_timeout = heartbeat_timeout_from_env()?;
    if let Some(host) = args.get_one::<String>("host") {
        bus.host.clone_from(host);
        api.host.clone_from(host);
    }
    if let Some(&p) = args.get_one::<u16>("api-port") {
        api.port = p;
    }
    if let Some(&p) = args.get_one::<u16>("listening-port") {
        bus.listening_port = p;
    }
    if let Some(&p) = args.get_one::<u16>("publishing-port") {
        bus.publishing_port = p;
    }
    if let Some(&d) = args.get_one::<Duration>("flush-interval") {
        persister.flush_interval = d;
    }
    if let Some(&d) = args.get_one::<Duration>("heartbeat-timeout") {
        heartbeat_timeout = d;
    }

    // Registered before anything starts, so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let mut builder = Principal::builder()
        .bus(bus)
        .api(api)
        .database(database.clone())
        .persister(persister)
        .heartbeat_timeout(heartbeat_timeout);
    if let Ok(limit) = std::env::var("CDKTR_DB_MEMORY_LIMIT") {
        builder = builder.db_memory_limit(limit);
    }
    if let Ok(n) = std::env::var("CDKTR_DB_THREADS") {
        let n = n
            .trim()
            .parse()
            .map_err(|_| format!("invalid CDKTR_DB_THREADS={n:?}: expected a number of threads"))?;
        builder = builder.db_threads(n);
    }
    let principal = builder.start()?;
    let db_name = match &database {
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
