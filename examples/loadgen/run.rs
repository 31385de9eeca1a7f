//! One run of the load generator: its publishers, the live subscriber,
//! and what the principal reports afterwards.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cdktr_logs::bus::curve::ClientKeys;
use cdktr_logs::{ApiClient, ApiConfig, BusConfig, Level, LogMessage, LogPublisher, LogQuery, LogSubscriber};

use crate::Plan;

/// How far ahead of its time a line may be published at a set rate.
const PACE: Duration = Duration::from_millis(1);

/// The principal a run publishes to.
pub struct Target {
    pub bus: BusConfig,
    pub api_config: ApiConfig,
    pub keys: Option<ClientKeys>,
    pub api: ApiClient,
}

/// What came of one run.
pub struct Report {
    pub workflow_id: String,
    pub publishers: usize,
    pub sent: u64,
    pub stored: u64,
    pub dropped: u64,
    pub seconds: f64,
    /// Stored lines per second, from the first publish to the last line
    /// persisted.
    pub sustained_per_s: f64,
    /// Publish-to-subscriber latency in microseconds, sorted.
    latencies_us: Vec<u32>,
    payload: usize,
    rate: u64,
    acknowledged: bool,
    curve: bool,
    principal_peak_rss_bytes: u64,
    principal_cpu_seconds: f64,
    principal_rss_per_connection_bytes: u64,
    store_waited_ms: u64,
    slowest_write_ms: u64,
}

type Error = Box<dyn std::error::Error>;

/// Publishes `plan` from `publishers` threads under `workflow_id` and
/// counts what the principal stored of it.
pub fn run(plan: &Plan, publishers: usize, to: &mut Target, workflow_id: String) -> Result<Report, Error> {
    // The live subscriber, for end-to-end latency.
    let t0 = Instant::now();
    let stop_sub = Arc::new(AtomicBool::new(false));
    let (subscriber, probes) = if plan.no_subscriber {
        (None, 0)
    } else {
        let (s, p) = subscribe(&to.bus, to.keys.as_ref(), &workflow_id, t0, stop_sub.clone())?;
        (Some(s), p)
    };

    let sent = Arc::new(AtomicU64::new(0));
    let before = to.api.stats()?;
    // Every publisher connects, then all start together: the principal's
    // memory in between is what the connections cost.
    let connected = Arc::new(Barrier::new(publishers + 1));
    let go = Arc::new(Barrier::new(publishers + 1));
    let threads: Vec<_> = (0..publishers)
        .map(|p| {
            let (bus, api_config, workflow_id, sent, keys) = (
                to.bus.clone(),
                to.api_config.clone(),
                workflow_id.clone(),
                sent.clone(),
                to.keys.clone(),
            );
            let (connected, go) = (connected.clone(), go.clone());
            let per_publisher_rate = plan.rate as f64 / publishers as f64;
            let quota = plan
                .messages
                .map(|n| n / publishers as u64 + u64::from((p as u64) < n % publishers as u64));
            let (payload, acknowledged, duration) = (plan.payload, plan.acknowledged, plan.duration);
            let instances = plan.instances;
            std::thread::spawn(
                move || -> Result<(cdktr_logs::bus::PublisherStats, Instant), cdktr_logs::bus::Error> {
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
                    let persisted = Instant::now();
                    Ok((publisher.shutdown()?, persisted))
                },
            )
        })
        .collect();
    connected.wait();
    let rss_connected = connections_settled(&mut to.api, before.connections + publishers as u64)?;
    let start = Instant::now();
    go.wait();

    let progress = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64);
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if progress && last.0.elapsed() >= Duration::from_secs(1) {
            let (n, s) = (
                sent.load(Relaxed),
                to.api.stats().map(|s| s.persisted - before.persisted).unwrap_or(0),
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
    let (mut dropped, mut last_persisted) = (0, start);
    for t in threads {
        let (stats, persisted) = t.join().expect("publisher thread")?;
        dropped += stats.dropped;
        last_persisted = last_persisted.max(persisted);
    }
    // To the last line persisted, not to when this thread noticed.
    let took = last_persisted - start;
    // Let the last lines reach the subscriber.
    std::thread::sleep(Duration::from_millis(200));
    stop_sub.store(true, Relaxed);
    let mut latencies = subscriber
        .map(|s| s.join().expect("subscriber thread"))
        .unwrap_or_default();
    latencies.sort_unstable();

    let sent = sent.load(Relaxed);
    let stored = to.api.count_logs(&LogQuery {
        start_ms: Some(0),
        workflow_id: Some(workflow_id.clone()),
        ..LogQuery::default()
    })? - probes;
    let stats = to.api.stats()?;
    let cpu_s = stats.cpu_ms.saturating_sub(before.cpu_ms) as f64 / 1000.0;
    Ok(Report {
        sustained_per_s: stored as f64 / took.as_secs_f64(),
        workflow_id,
        publishers,
        sent,
        stored,
        dropped,
        seconds: took.as_secs_f64(),
        latencies_us: latencies,
        payload: plan.payload,
        rate: plan.rate,
        acknowledged: plan.acknowledged,
        curve: to.keys.is_some(),
        principal_peak_rss_bytes: stats.peak_rss_bytes,
        principal_cpu_seconds: cpu_s,
        principal_rss_per_connection_bytes: rss_connected.saturating_sub(before.rss_bytes) / publishers as u64,
        store_waited_ms: stats.store_waited_ms.saturating_sub(before.store_waited_ms),
        slowest_write_ms: stats.slowest_write_ms,
    })
}

impl Report {
    /// The latency percentile `p` in ms; NaN without samples.
    fn latency_ms(&self, p: f64) -> f64 {
        let l = &self.latencies_us;
        if l.is_empty() {
            return f64::NAN;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i] as f64 / 1000.0
    }

    fn payload_mb_per_s(&self) -> f64 {
        self.sustained_per_s * self.payload as f64 / 1e6
    }

    pub fn json(&self) -> serde_json::Value {
        let cpu_s = self.principal_cpu_seconds;
        serde_json::json!({
            "workflow_id": self.workflow_id, "publishers": self.publishers, "target_rate": self.rate,
            "acknowledged": self.acknowledged, "payload_bytes": self.payload, "curve": self.curve,
            "sent": self.sent, "stored": self.stored, "dropped": self.dropped, "seconds": self.seconds,
            "sustained_per_s": self.sustained_per_s, "latency_samples": self.latencies_us.len(),
            "latency_ms": {"p50": self.latency_ms(0.50), "p90": self.latency_ms(0.90),
                           "p99": self.latency_ms(0.99), "p999": self.latency_ms(0.999),
                           "max": self.latencies_us.last().map_or(f64::NAN, |&l| l as f64 / 1000.0)},
            "payload_mb_per_s": self.payload_mb_per_s(),
            "principal_peak_rss_bytes": self.principal_peak_rss_bytes,
            "principal_cpu_seconds": cpu_s,
            "principal_cores_used": cpu_s / self.seconds,
            "lines_per_principal_core_s": if cpu_s > 0.0 { self.stored as f64 / cpu_s } else { f64::NAN },
            "principal_rss_per_connection_bytes": self.principal_rss_per_connection_bytes,
            "store_waited_ms": self.store_waited_ms,
            "slowest_write_ms": self.slowest_write_ms,
        })
    }

    pub fn text(&self) -> String {
        let cpu_s = self.principal_cpu_seconds;
        format!(
            "{} publishers{}: sent {}, stored {}, dropped {}, {:.0} msgs/s sustained over {:.2}s; \
             {:.1} MB/s of payload; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({} samples); \
             principal: peak RSS {} MiB, {:.2} cores, {:.0} lines/s per core, {} KiB per connection",
            self.publishers,
            if self.acknowledged {
                " (acknowledged)"
            } else {
                " (best effort)"
            },
            self.sent,
            self.stored,
            self.dropped,
            self.sustained_per_s,
            self.seconds,
            self.payload_mb_per_s(),
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.latencies_us.len(),
            self.principal_peak_rss_bytes >> 20,
            cpu_s / self.seconds,
            self.stored as f64 / cpu_s,
            self.principal_rss_per_connection_bytes >> 10
        )
    }

    /// Fails unless every line sent is in the database.
    pub fn check(&self) -> Result<(), Error> {
        if self.stored != self.sent {
            return Err(format!(
                "{} of {} lines are not in the database ({})",
                self.sent.saturating_sub(self.stored),
                self.sent,
                self.workflow_id
            )
            .into());
        }
        Ok(())
    }
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
