//! Load generator: publishers against a running principal, at a rate or
//! flat out, and what came of it.
//!
//! ```text
//! cargo run --release -p cdktr-principal -- --db /tmp/load.db &
//! cargo run --release --example loadgen -- --publishers 4 --duration 10s
//! cargo run --release --example loadgen -- --rate 10000 --duration 10s --json
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

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cdktr_logs::bus::curve::ClientKeys;
use cdktr_logs::{ApiClient, ApiConfig, BusConfig, Level, LogMessage, LogPublisher, LogQuery, LogSubscriber};
use clap::{value_parser, Arg, ArgAction, Command};

fn cli() -> Command {
    Command::new("loadgen")
        .about("Publishes log lines to a running principal and reports what came of it")
        .arg(
            Arg::new("publishers")
                .long("publishers")
                .short('p')
                .value_parser(value_parser!(u64).range(1..=256))
                .default_value("4")
                .help("Publisher threads"),
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

/// How far ahead of its time a line may be published at a set rate.
const PACE: Duration = Duration::from_millis(1);

struct Plan {
    publishers: usize,
    rate: u64,
    duration: Duration,
    messages: Option<u64>,
    payload: usize,
    instances: usize,
    acknowledged: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let m = cli().get_matches();
    let plan = Plan {
        publishers: *m.get_one::<u64>("publishers").unwrap() as usize,
        rate: *m.get_one::<u64>("rate").unwrap(),
        duration: *m.get_one::<Duration>("duration").unwrap(),
        messages: m.get_one::<u64>("messages").copied(),
        payload: *m.get_one::<u64>("payload-bytes").unwrap() as usize,
        instances: *m.get_one::<u64>("instances").unwrap() as usize,
        acknowledged: !m.get_flag("best-effort"),
    };
    let bus = BusConfig::from_env()?;
    let api_config = ApiConfig::from_env()?;
    let keys = ClientKeys::from_env()?;
    let mut api = ApiClient::connect_with(&api_config, keys.as_ref())?;
    api.ping()
        .map_err(|e| format!("no principal at {}: {e}", api_config.endpoint()))?;
    let workflow_id = m
        .get_one::<String>("workflow")
        .cloned()
        .unwrap_or_else(|| format!("loadgen-{}", cdktr_logs::bus::message::now_ms()));

    // The live subscriber, for end-to-end latency.
    let t0 = Instant::now();
    let stop_sub = Arc::new(AtomicBool::new(false));
    let (subscriber, probes) = if m.get_flag("no-subscriber") {
        (None, 0)
    } else {
        let (s, p) = subscribe(&bus, keys.as_ref(), &workflow_id, t0, stop_sub.clone())?;
        (Some(s), p)
    };

    let sent = Arc::new(AtomicU64::new(0));
    let before = api.stats()?;
    // Every publisher connects, then all start together: the principal's
    // memory in between is what the connections cost.
    let connected = Arc::new(Barrier::new(plan.publishers + 1));
    let go = Arc::new(Barrier::new(plan.publishers + 1));
    let threads: Vec<_> = (0..plan.publishers)
        .map(|p| {
            let (bus, api_config, workflow_id, sent, keys) = (
                bus.clone(),
                api_config.clone(),
                workflow_id.clone(),
                sent.clone(),
                keys.clone(),
            );
            let (connected, go) = (connected.clone(), go.clone());
            let per_publisher_rate = plan.rate as f64 / plan.publishers as f64;
            let quota = plan
                .messages
                .map(|n| n / plan.publishers as u64 + u64::from((p as u64) < n % plan.publishers as u64));
            let (payload, acknowledged, duration) = (plan.payload, plan.acknowledged, plan.duration);
            let instances = plan.instances;
            std::thread::spawn(
                move || -> Result<cdktr_logs::bus::PublisherStats, cdktr_logs::bus::Error> {
                    let mut builder = LogPublisher::builder(&bus).shutdown_timeout(Duration::from_secs(600));
                    if let Some(keys) = keys {
                        builder = builder.curve(keys);
                    }
                    if acknowledged {
                        builder = builder
                            .acknowledged_by(&api_config)
                            .spool_dir(std::env::temp_dir().join("cdktr-loadgen-spool"));
                    }
                    // Past both barriers even when it fails, so no one waits for it.
                    let publisher = builder.start();
                    connected.wait();
                    go.wait();
                    let publisher = publisher?;
                    let template = line(&workflow_id, p, "lg", 0, 0);
                    let loggers: Vec<_> = (0..instances)
                        .map(|k| {
                            let instance = match instances {
                                1 => template.workflow_instance_id.clone(),
                                _ => format!("{}-{k}", template.workflow_instance_id),
                            };
                            publisher.task_logger(cdktr_logs::TaskContext {
                                workflow_id: template.workflow_id.clone(),
                                workflow_name: template.workflow_name.clone(),
                                task_instance_id: format!("{instance}-load"),
                                workflow_instance_id: instance,
                                task_name: template.task_name.clone(),
                            })
                        })
                        .collect();
                    let pad = "x".repeat(payload);
                    let deadline = Instant::now() + duration;
                    let begun = Instant::now();
                    let mut i = 0u64;
                    loop {
                        if quota.map_or(Instant::now() >= deadline, |q| i >= q) {
                            break;
                        }
                        if per_publisher_rate > 0.0 {
                            let due = begun + Duration::from_secs_f64(i as f64 / per_publisher_rate);
                            let now = Instant::now();
                            // Lines due within PACE go now: one sleep per
                            // PACE, not per line (at 100k lines/s a sleep
                            // per line took most of a core in system time).
                            if due > now + PACE {
                                std::thread::sleep(due - now);
                            }
                        }
                        let t = t0.elapsed().as_micros() as u64;
                        // As an agent writes: through a task logger, whose context is
                        // shared, not copied per line.
                        let mut text = String::with_capacity(payload);
                        let _ = write!(text, "lg {t} ");
                        text.push_str(&pad[..payload.saturating_sub(text.len()).min(pad.len())]);
                        loggers[i as usize % instances].log(Level::Info, text)?;
                        sent.fetch_add(1, Relaxed);
                        i += 1;
                    }
                    publisher.wait_persisted(Duration::from_secs(600))?;
                    publisher.shutdown()
                },
            )
        })
        .collect();
    connected.wait();
    let rss_connected = connections_settled(&mut api, before.connections + plan.publishers as u64)?;
    let start = Instant::now();
    go.wait();

    let progress = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64);
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if progress && last.0.elapsed() >= Duration::from_secs(1) {
            let (n, s) = (
                sent.load(Relaxed),
                api.stats().map(|s| s.persisted - before.persisted).unwrap_or(0),
            );
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprint!("\r  sent {n} ({rate:.0}/s), persisted {s}          ");
            let _ = std::io::stderr().flush();
            last = (Instant::now(), n);
        }
    }
    if progress {
        eprintln!();
    }
    let mut dropped = 0;
    for t in threads {
        let stats = t.join().expect("publisher thread")?;
        dropped += stats.dropped;
    }
    let took = start.elapsed();
    // Let the last lines reach the subscriber.
    std::thread::sleep(Duration::from_millis(200));
    stop_sub.store(true, Relaxed);
    let mut latencies = subscriber
        .map(|s| s.join().expect("subscriber thread"))
        .unwrap_or_default();
    latencies.sort_unstable();

    let sent = sent.load(Relaxed);
    let stored = api.count_logs(&LogQuery {
        start_ms: Some(0),
        workflow_id: Some(workflow_id.clone()),
        ..LogQuery::default()
    })? - probes;
    let stats = api.stats()?;
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let rate = stored as f64 / took.as_secs_f64();
    let payload_mb_s = rate * plan.payload as f64 / 1e6;
    let cpu_s = stats.cpu_ms.saturating_sub(before.cpu_ms) as f64 / 1000.0;
    let per_connection = rss_connected.saturating_sub(before.rss_bytes) / plan.publishers as u64;
    if m.get_flag("json") {
        let v = serde_json::json!({
            "workflow_id": workflow_id, "publishers": plan.publishers, "target_rate": plan.rate,
            "acknowledged": plan.acknowledged, "payload_bytes": plan.payload, "curve": keys.is_some(),
            "sent": sent, "stored": stored, "dropped": dropped, "seconds": took.as_secs_f64(),
            "sustained_per_s": rate, "latency_samples": latencies.len(),
            "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "p999": pct(0.999),
                           "max": latencies.last().map_or(f64::NAN, |&l| l as f64 / 1000.0)},
            "payload_mb_per_s": payload_mb_s,
            "principal_peak_rss_bytes": stats.peak_rss_bytes,
            "principal_cpu_seconds": cpu_s,
            "principal_cores_used": cpu_s / took.as_secs_f64(),
            "lines_per_principal_core_s": if cpu_s > 0.0 { stored as f64 / cpu_s } else { f64::NAN },
            "principal_rss_per_connection_bytes": per_connection,
            "store_waited_ms": stats.store_waited_ms.saturating_sub(before.store_waited_ms),
            "slowest_write_ms": stats.slowest_write_ms,
        });
        println!("{v}");
    } else {
        println!(
            "{} publishers{}: sent {sent}, stored {stored}, dropped {dropped}, {rate:.0} msgs/s sustained over {:.2}s; \
             {payload_mb_s:.1} MB/s of payload; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({} samples); \
             principal: peak RSS {} MiB, {:.2} cores, {:.0} lines/s per core, {} KiB per connection",
            plan.publishers,
            if plan.acknowledged { " (acknowledged)" } else { " (best effort)" },
            took.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            pct(0.999),
            latencies.len(),
            stats.peak_rss_bytes >> 20,
            cpu_s / took.as_secs_f64(),
            stored as f64 / cpu_s,
            per_connection >> 10
        );
    }
    if stored != sent {
        return Err(format!(
            "{} of {sent} lines are not in the database",
            sent.saturating_sub(stored)
        )
        .into());
    }
    Ok(())
}

/// Waits (at most 10 s) until the principal counts `n` connections to its
/// log port, then returns its resident memory.
fn connections_settled(api: &mut ApiClient, n: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = api.stats()?;
        if s.connections >= n || Instant::now() >= end {
            return Ok(s.rss_bytes);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Latencies = std::thread::JoinHandle<Vec<u32>>;

/// A live subscriber recording publish-to-receive latency, in us; returns
/// it once it receives, and the probe lines it took.
fn subscribe(
    bus: &BusConfig,
    keys: Option<&ClientKeys>,
    workflow_id: &str,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Result<(Latencies, u64), Box<dyn std::error::Error>> {
    let (mut sub, mut probe) = (LogSubscriber::builder(bus), LogPublisher::builder(bus));
    if let Some(keys) = keys {
        (sub, probe) = (sub.curve(keys.clone()), probe.curve(keys.clone()));
    }
    let mut sub = sub.workflow(workflow_id.to_owned()).connect()?;
    let probe = probe.start()?;
    let probe_line = |i| line(workflow_id, 0, "probe", i, 0);
    let mut probes = 0u64;
    while sub.recv_timeout(Duration::from_millis(50))?.is_none() {
        probe.publish(probe_line(probes))?;
        probes += 1;
        if probes > 200 {
            return Err("the subscriber never received a probe".into());
        }
    }
    probe.publish(probe_line(probes))?;
    probes += 1;
    probe.shutdown()?;
    let subscriber = {
        std::thread::spawn(move || {
            let mut latencies_us: Vec<u32> = Vec::new();
            while !stop.load(Relaxed) {
                let Ok(Some(env)) = sub.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let now = t0.elapsed().as_micros() as u64;
                if let Some(sent) = env
                    .message
                    .payload
                    .split(' ')
                    .nth(1)
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    if env.message.payload.starts_with("lg ") {
                        latencies_us.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                    }
                }
            }
            latencies_us
        })
    };

    Ok((subscriber, probes))
}

fn line(workflow_id: &str, publisher: usize, kind: &str, t_us: u64, payload: usize) -> LogMessage {
    let mut text = format!("{kind} {t_us} ");
    let pad = payload.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    LogMessage {
        workflow_id: workflow_id.into(),
        workflow_name: "Load generator".into(),
        workflow_instance_id: format!("{workflow_id}-{publisher}"),
        task_name: "load".into(),
        task_instance_id: format!("{workflow_id}-{publisher}-load"),
        timestamp_ms: cdktr_logs::bus::message::now_ms(),
        level: Level::Info,
        payload: text,
    }
}
