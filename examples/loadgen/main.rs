//! Load generator: publishers against a running principal, at a rate or
//! flat out, and what came of it.
//!
//! ```text
//! cargo run --release -p cdktr-principal -- --db /tmp/load.db &
//! cargo run --release --example loadgen -- --publishers 4 --duration 10s
//! cargo run --release --example loadgen -- --rate 10000 --duration 10s --json
//! cargo run --release --example loadgen -- --publishers 4,64 --rounds 5 --messages 3000000 --no-subscriber
//! ```
//!
//! It reports messages sent, messages stored (counted in the database
//! through the API's CountLogs, not assumed), the sustained rate (stored
//! lines over the time from the first publish to the last line persisted),
//! end-to-end latency percentiles (publish to a live subscriber, measured
//! in this process), and the principal's peak RSS. Publishers use
//! acknowledged delivery unless `--best-effort`. The principal is found
//! through the usual variables (`CDKTR_PRINCIPAL_HOST`,
//! `CDKTR_PRINCIPAL_PORT`, `CDKTR_LOGS_LISTENING_PORT`,
//! `CDKTR_LOGS_PUBLISHING_PORT`), with CURVE when `CDKTR_CURVE_SECRET_KEY`
//! and `CDKTR_CURVE_SERVER_KEY` are set (an `admin` key: it publishes,
//! subscribes and reads the counters).
//!
//! With several publisher counts or `--rounds` above 1 it runs each count
//! once per round, the order turning each round (4, 64, 64, 4, ...) so
//! that neither count always meets the database or the machine in the
//! same state, and reports the median rate of each count and the median of
//! each round's ratio to the first count: runs minutes apart on a shared
//! machine differ by more than what is compared. Each run's counters are
//! its own, except the principal's peak RSS: its peak so far.

use std::time::Duration;

use cdktr_logs::bus::curve::ClientKeys;
use cdktr_logs::{ApiClient, ApiConfig, BusConfig};
use clap::{value_parser, Arg, ArgAction, Command};

mod run;
use run::{Report, Target};

fn cli() -> Command {
    Command::new("loadgen")
        .about("Publishes log lines to a running principal and reports what came of it")
        .arg(
            Arg::new("publishers")
                .long("publishers")
                .short('p')
                .value_parser(value_parser!(u64).range(1..=256))
                .value_delimiter(',')
                .action(ArgAction::Append)
                .default_value("4")
                .help("Publisher threads; several (4,64) runs each in turn and compares them"),
        )
        .arg(
            Arg::new("rounds")
                .long("rounds")
                .value_parser(value_parser!(u64).range(1..=100))
                .default_value("1")
                .help("Runs of each publisher count, alternated; reports the medians"),
        )
        .arg(
            Arg::new("rate")
                .long("rate")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("Lines per second in all; 0 for flat out"),
        )
        .arg(
            Arg::new("duration")
                .long("duration")
                .value_parser(parse_secs)
                .default_value("10s")
                .help("How long to publish (e.g. 500ms, 10s, 2m)"),
        )
        .arg(
            Arg::new("workflow")
                .long("workflow")
                .help("The workflow id (default loadgen-<ms>); publisher N writes instance <workflow>-N"),
        )
        .arg(
            Arg::new("instances")
                .long("instances")
                .value_parser(value_parser!(u64).range(1..=100_000))
                .default_value("1")
                .help("Instances each publisher writes, a line to each in turn (more than 1: <workflow>-N-K)"),
        )
        .arg(
            Arg::new("messages")
                .long("messages")
                .value_parser(value_parser!(u64).range(1..))
                .help("Stop after this many lines in all, instead of after --duration"),
        )
        .arg(
            Arg::new("payload-bytes")
                .long("payload-bytes")
                .value_parser(value_parser!(u64).range(16..=1_000_000))
                .default_value("100")
                .help("Payload size of each line"),
        )
        .arg(
            Arg::new("best-effort")
                .long("best-effort")
                .action(ArgAction::SetTrue)
                .help("Publish without acknowledged delivery"),
        )
        .arg(
            Arg::new("no-subscriber")
                .long("no-subscriber")
                .action(ArgAction::SetTrue)
                .help("Measure ingest only: no live subscriber, no latency"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the summary as one JSON object"),
        )
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected e.g. 500ms, 10s, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: expected e.g. 500ms, 10s, 2m")),
    }
}

/// What each run publishes.
pub struct Plan {
    rate: u64,
    duration: Duration,
    messages: Option<u64>,
    payload: usize,
    instances: usize,
    acknowledged: bool,
    no_subscriber: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let m = cli().get_matches();
    let counts: Vec<usize> = m.get_many::<u64>("publishers").unwrap().map(|&p| p as usize).collect();
    let rounds = *m.get_one::<u64>("rounds").unwrap() as usize;
    let plan = Plan {
        rate: *m.get_one::<u64>("rate").unwrap(),
        duration: *m.get_one::<Duration>("duration").unwrap(),
        messages: m.get_one::<u64>("messages").copied(),
        payload: *m.get_one::<u64>("payload-bytes").unwrap() as usize,
        instances: *m.get_one::<u64>("instances").unwrap() as usize,
        acknowledged: !m.get_flag("best-effort"),
        no_subscriber: m.get_flag("no-subscriber"),
    };
    let json = m.get_flag("json");
    let api_config = ApiConfig::from_env()?;
    let keys = ClientKeys::from_env()?;
    let api = ApiClient::connect_with(&api_config, keys.as_ref())?;
    let mut to = Target {
        bus: BusConfig::from_env()?,
        api_config,
        keys,
        api,
    };
    to.api
        .ping()
        .map_err(|e| format!("no principal at {}: {e}", to.api_config.endpoint()))?;
    let workflow_id = m
        .get_one::<String>("workflow")
        .cloned()
        .unwrap_or_else(|| format!("loadgen-{}", cdktr_logs::bus::message::now_ms()));

    if counts.len() == 1 && rounds == 1 {
        let report = run::run(&plan, counts[0], &mut to, workflow_id)?;
        match json {
            true => println!("{}", report.json()),
            false => println!("{}", report.text()),
        }
        return report.check();
    }
    // In the order they ran: (round, index into counts, report).
    let mut runs: Vec<(usize, usize, Report)> = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..counts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let id = format!("{workflow_id}-r{round}-p{}", counts[i]);
            let report = run::run(&plan, counts[i], &mut to, id)?;
            if !json {
                println!("round {}: {}", round + 1, report.text());
            }
            report.check()?;
            runs.push((round, i, report));
        }
    }
    let summary = summarize(&counts, rounds, &runs);
    match json {
        true => {
            let runs: Vec<_> = runs.iter().map(|(_, _, r)| r.json()).collect();
            println!(
                "{}",
                serde_json::json!({"rounds": rounds, "runs": runs, "summary": summary.json})
            );
        }
        false => println!("{}", summary.text),
    }
    Ok(())
}

struct Summary {
    json: serde_json::Value,
    text: String,
}

/// Each count's median rate, and the median over rounds of its rate over
/// the first count's in the same round.
fn summarize(counts: &[usize], rounds: usize, runs: &[(usize, usize, Report)]) -> Summary {
    let rate = |round: usize, i: usize| {
        runs.iter()
            .find(|(r, k, _)| (*r, *k) == (round, i))
            .map(|(_, _, report)| report.sustained_per_s)
            .expect("every count runs each round")
    };
    let mut json = Vec::new();
    let mut text = Vec::new();
    for (i, &n) in counts.iter().enumerate() {
        let rates: Vec<f64> = (0..rounds).map(|r| rate(r, i)).collect();
        let ratios: Vec<f64> = (0..rounds).map(|r| rate(r, i) / rate(r, 0)).collect();
        let (rate, ratio) = (median(&rates), median(&ratios));
        json.push(serde_json::json!({
            "publishers": n, "median_per_s": rate, "per_s": rates,
            "median_ratio_to_first": ratio, "ratios_to_first": ratios,
        }));
        let list = |v: &[f64], f: &dyn Fn(f64) -> String| v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(", ");
        let mut line = format!(
            "{n} publishers: median {rate:.0} lines/s ({})",
            list(&rates, &|x| format!("{x:.0}"))
        );
        if i > 0 {
            line += &format!(
                "; {:.0}% of {} publishers (rounds: {})",
                ratio * 100.0,
                counts[0],
                list(&ratios, &|x| format!("{:.0}%", x * 100.0))
            );
        }
        text.push(line);
    }
    Summary {
        json: serde_json::Value::Array(json),
        text: text.join("\n"),
    }
}

/// The median (the mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n % 2 {
        1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
