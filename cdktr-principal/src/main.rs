//! `cdktr-principal`: runs the log bus and the log store until SIGINT or
//! SIGTERM, then shuts down without losing an accepted line.

use std::process::ExitCode;

use cdktr_log::BusConfig;
use cdktr_principal::{default_db_path, location_from, Principal, ENV_DB_PATH};
use cdktr_store::{Location, PersisterConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
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

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut db = std::env::var(ENV_DB_PATH).ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--db" => db = Some(args.next().ok_or("--db needs a path (or :memory:)")?),
            "-h" | "--help" => {
                println!("usage: cdktr-principal [--db PATH|:memory:]\n\nConfiguration: see README.md.");
                return Ok(());
            }
            other => return Err(format!("unexpected argument {other:?} (try --help)").into()),
        }
    }
    let database = db
        .as_deref()
        .map_or_else(|| Location::File(default_db_path()), location_from);

    // Registered before anything starts, so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let principal = Principal::builder()
        .bus(BusConfig::from_env()?)
        .database(database.clone())
        .persister(PersisterConfig::from_env()?)
        .start()?;
    let db_name = match &database {
        Location::Memory => ":memory:".to_string(),
        Location::File(p) => p.display().to_string(),
    };
    say(format_args!(
        "cdktr-principal: logs in on {}, out on {}, database {db_name}",
        principal.bus().listening_endpoint(),
        principal.bus().publishing_endpoint()
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
