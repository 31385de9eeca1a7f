//! `cdktr-logs`: the user's view of the logs, live and stored.
//!
//! ```text
//! cdktr-logs tail  [-w WORKFLOW]... [--level L] [-o text|json]
//! cdktr-logs query [-w WORKFLOW] [-i INSTANCE] [--task T] [--level L] [--since 1h|RFC3339]
//!                  [--until 1h|RFC3339] [--grep TEXT] [-n N] [-o text|json]
//! cdktr-logs status [--recent N] [-w WORKFLOW] [-i INSTANCE] [-o text|json]
//! cdktr-logs stats [-o text|json]
//! ```
//!
//! `tail` follows the live stream, like `kubectl logs -f`. `query` reads
//! stored lines oldest first, all of them or the last `-n`, like
//! `journalctl`. Levels and statuses are coloured on a terminal and plain
//! when piped; `-o json` writes one JSON object per line. The principal is
//! found through `CDKTR_PRINCIPAL_HOST`, `CDKTR_PRINCIPAL_PORT` and
//! `CDKTR_LOGS_PUBLISHING_PORT`; one that does not answer is an error after
//! `--timeout`, never a hang.

use std::io::{IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use cdktr_log::message::{escape_control, now_ms, rfc3339_ms};
use cdktr_log::query::{LevelFilter, LogQuery, Order};
use cdktr_log::{ApiClient, ApiConfig, BusConfig, Level, LogMessage, LogSubscriber, RecentWorkflows, RunStatus};
use cdktr_principal::parse_duration;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn output() -> Arg {
    Arg::new("output")
        .short('o')
        .long("output")
        .value_parser(["text", "json"])
        .default_value("text")
        .help("Output format: text, or one JSON object per line")
}

fn level() -> Arg {
    Arg::new("level")
        .long("level")
        .value_parser(|s: &str| s.parse::<Level>().map_err(|e| e.to_string()))
        .help("Only lines at this level or more severe")
}

fn cli() -> Command {
    let time = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name("WHEN")
            .value_parser(parse_time)
            .help(help)
    };
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
                .arg(level())
                .arg(output()),
        )
        .subcommand(
            Command::new("query")
                .about("Print stored log lines, oldest first")
                .arg(
                    Arg::new("workflow")
                        .short('w')
                        .long("workflow")
                        .help("Workflow id (exact)"),
                )
                .arg(
                    Arg::new("instance")
                        .short('i')
                        .long("instance")
                        .help("Workflow instance id (exact)"),
                )
                .arg(Arg::new("task").long("task").help("Task name (exact)"))
                .arg(level())
                .arg(time(
                    "since",
                    "From this time: 1h (ago) or RFC 3339 (default: the beginning)",
                ))
                .arg(time("until", "Before this time: 10m (ago) or RFC 3339"))
                .arg(
                    Arg::new("grep")
                        .long("grep")
                        .value_name("TEXT")
                        .help("Only lines whose payload contains TEXT (literal, case-sensitive)"),
                )
                .arg(
                    Arg::new("lines")
                        .short('n')
                        .long("lines")
                        .value_name("N")
                        .value_parser(value_parser!(u64).range(1..))
                        .help("Only the last N lines"),
                )
                .arg(output()),
        )
        .subcommand(
            Command::new("status")
                .about("Recent workflow instances, or one instance's timeline")
                .arg(
                    Arg::new("recent")
                        .long("recent")
                        .value_name("N")
                        .value_parser(value_parser!(u64).range(1..=10_000))
                        .default_value("20")
                        .help("How many instances"),
                )
                .arg(
                    Arg::new("workflow")
                        .short('w')
                        .long("workflow")
                        .help("Only this workflow's instances"),
                )
                .arg(
                    Arg::new("status")
                        .long("status")
                        .value_parser(|s: &str| s.parse::<RunStatus>().map_err(|e| e.to_string()))
                        .help("Only instances whose current status is this"),
                )
                .arg(
                    Arg::new("instance")
                        .short('i')
                        .long("instance")
                        .conflicts_with_all(["recent", "workflow", "status"])
                        .help("Show this instance's timeline instead"),
                )
                .arg(output()),
        )
        .subcommand(Command::new("stats").about("The principal's counters").arg(output()))
}

/// `1h` (that long ago) or an RFC 3339 time, as ms since the epoch.
fn parse_time(s: &str) -> std::result::Result<i64, String> {
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

fn main() -> ExitCode {
    let m = cli().get_matches();
    let timeout = m
        .get_one::<Duration>("timeout")
        .copied()
        .unwrap_or(cdktr_log::api::DEFAULT_TIMEOUT);
    let result = match m.subcommand() {
        Some(("tail", m)) => tail(m, timeout),
        Some(("query", m)) => query(m, timeout),
        Some(("status", m)) => status(m, timeout),
        Some(("stats", m)) => stats(m, timeout),
        _ => Err("unknown subcommand (try --help)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdktr-logs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn json(m: &ArgMatches) -> bool {
    m.get_one::<String>("output").is_some_and(|o| o == "json")
}

fn client(timeout: Duration) -> Result<ApiClient> {
    Ok(ApiClient::connect(&ApiConfig::from_env()?)?.with_timeout(timeout))
}

/// Writes one line; false once the reader has gone (`| head`), which ends
/// the command successfully.
fn emit(out: &mut impl Write, line: std::fmt::Arguments<'_>) -> bool {
    writeln!(out, "{line}").is_ok()
}

fn tail(m: &ArgMatches, timeout: Duration) -> Result {
    let config = BusConfig::from_env()?;
    // A SUB socket waits silently for a principal that is not there; check
    // once that something listens, so a wrong port is an error, not a hang.
    let addr = (config.host.as_str(), config.publishing_port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", config.host))?;
    TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("no principal at {}: {e}", config.publishing_endpoint()))?;

    let mut builder = LogSubscriber::builder(&config);
    for w in m.get_many::<String>("workflow").into_iter().flatten() {
        builder = builder.workflow(w.clone());
    }
    let mut sub = builder.connect()?;
    let min = m.get_one::<Level>("level").copied();
    let (json, color) = (json(m), std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    for env in sub.iter() {
        let line = env?.message;
        if min.is_some_and(|min| line.level < min) {
            continue;
        }
        if !write_line(&mut out, &line, json, color) || out.flush().is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn write_line(out: &mut impl Write, m: &LogMessage, json: bool, color: bool) -> bool {
    if json {
        return emit(out, format_args!("{}", m.to_json()));
    }
    if !color {
        return emit(out, format_args!("{}", m.display()));
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
            emit(out, format_args!("{time} \x1b[{code}m{level}\x1b[0m{rest}"))
        }
        None => emit(out, format_args!("{line}")),
    }
}

fn query(m: &ArgMatches, timeout: Duration) -> Result {
    let text = |k: &str| m.get_one::<String>(k).cloned();
    let last_n = m.get_one::<u64>("lines").map(|&n| n as usize);
    let page_size = cdktr_log::api::MAX_PAGE_LINES;
    let mut q = LogQuery {
        start_ms: Some(m.get_one::<i64>("since").copied().unwrap_or(i64::MIN)),
        end_ms: m.get_one::<i64>("until").copied(),
        workflow_id: text("workflow"),
        workflow_instance_id: text("instance"),
        task_name: text("task"),
        task_instance_id: None,
        levels: m.get_one::<Level>("level").map(|&l| LevelFilter::AtLeast(l)),
        payload_contains: text("grep"),
        limit: Some(last_n.map_or(page_size, |n| n.min(page_size))),
        // The last N are the first N newest; everything is read in order.
        order: if last_n.is_some() {
            Order::NewestFirst
        } else {
            Order::OldestFirst
        },
        after: None,
    };
    let mut api = client(timeout)?;
    let (json, color) = (json(m), std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    if let Some(n) = last_n {
        let mut lines = Vec::new();
        loop {
            let page = api.query_logs(&q)?;
            lines.extend(page.lines);
            match page.next {
                Some(next) if lines.len() < n => {
                    q.after = Some(next);
                    q.limit = Some((n - lines.len()).min(page_size));
                }
                _ => break,
            }
        }
        lines.truncate(n);
        for line in lines.iter().rev() {
            if !write_line(&mut out, line, json, color) {
                return Ok(());
            }
        }
        return Ok(());
    }
    loop {
        let page = api.query_logs(&q)?;
        for line in &page.lines {
            if !write_line(&mut out, line, json, color) {
                return Ok(());
            }
        }
        match page.next {
            Some(next) => q.after = Some(next),
            None => return Ok(()),
        }
    }
}

fn paint(status: RunStatus, color: bool) -> String {
    if !color {
        return status.to_string();
    }
    let code = match status {
        RunStatus::Completed => "32",
        RunStatus::Running => "36",
        RunStatus::Pending | RunStatus::Waiting => "33",
        RunStatus::Failed | RunStatus::Crashed => "1;31",
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// A table with columns padded to their widest cell. Colour codes in a cell
/// do not count towards its width.
fn table(out: &mut impl Write, rows: &[Vec<String>]) -> bool {
    let visible = |s: &str| {
        let mut n = 0;
        let mut in_escape = false;
        for c in s.chars() {
            match c {
                '\x1b' => in_escape = true,
                'm' if in_escape => in_escape = false,
                _ if in_escape => {}
                _ => n += 1,
            }
        }
        n
    };
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| visible(s))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[c] - visible(cell) + 2));
            }
        }
        if !emit(out, format_args!("{line}")) {
            return false;
        }
    }
    true
}

fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{}.{:03}s", s, ms.max(0) % 1000),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn status(m: &ArgMatches, timeout: Duration) -> Result {
    let mut api = client(timeout)?;
    let (json, color) = (json(m), std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    let esc = |s: &str| escape_control(s).into_owned();
    if let Some(instance) = m.get_one::<String>("instance") {
        let changes = api.timeline(instance)?;
        if changes.is_empty() {
            return Err(format!("no status recorded for instance {:?}", esc(instance)).into());
        }
        if json {
            for c in &changes {
                let (task_id, task_instance_id) = c.task.clone().unzip();
                let v = serde_json::json!({
                    "timestamp_ms": c.timestamp_ms, "task_id": task_id,
                    "task_instance_id": task_instance_id, "status": c.status,
                });
                if !emit(&mut out, format_args!("{v}")) {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let mut rows = vec![vec![
            "TIME".into(),
            "TASK".into(),
            "TASK INSTANCE".into(),
            "STATUS".into(),
        ]];
        for c in &changes {
            let (task, task_instance) = c
                .task
                .as_ref()
                .map_or(("(workflow)".into(), "-".into()), |(t, i)| (esc(t), esc(i)));
            rows.push(vec![
                rfc3339_ms(c.timestamp_ms),
                task,
                task_instance,
                paint(c.status, color),
            ]);
        }
        table(&mut out, &rows);
        return Ok(());
    }
    let filter = RecentWorkflows {
        limit: m.get_one::<u64>("recent").map_or(20, |&n| n as usize),
        workflow_id: m.get_one::<String>("workflow").cloned(),
        status: m.get_one::<RunStatus>("status").copied(),
    };
    let runs = api.recent_workflows(&filter)?;
    if json {
        for r in &runs {
            if !emit(&mut out, format_args!("{}", serde_json::to_string(r)?)) {
                return Ok(());
            }
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "WORKFLOW".into(),
        "INSTANCE".into(),
        "STATUS".into(),
        "STARTED".into(),
        "UPDATED".into(),
        "DURATION".into(),
    ]];
    for r in &runs {
        rows.push(vec![
            esc(&r.workflow_id),
            esc(&r.workflow_instance_id),
            paint(r.status, color),
            rfc3339_ms(r.first_ms),
            rfc3339_ms(r.last_ms),
            duration(r.last_ms - r.first_ms),
        ]);
    }
    if runs.is_empty() {
        emit(&mut out, format_args!("no workflow instances recorded"));
    } else {
        table(&mut out, &rows);
    }
    Ok(())
}

fn stats(m: &ArgMatches, timeout: Duration) -> Result {
    let s = client(timeout)?.stats()?;
    let mut out = std::io::stdout().lock();
    if json(m) {
        emit(&mut out, format_args!("{}", serde_json::to_string(&s)?));
        return Ok(());
    }
    let v = serde_json::to_value(s)?;
    let rows: Vec<Vec<String>> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| vec![format!("{k}:"), v.to_string()])
        .collect();
    table(&mut out, &rows);
    Ok(())
}
