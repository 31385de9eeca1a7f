//! `cdktr-logs status` and `cdktr-logs stats`: workflow instances, one
//! instance's timeline, the principal's counters.

use cdktr_log::message::{escape_control, rfc3339_ms};
use cdktr_log::{RecentWorkflows, RunStatus};
use clap::{value_parser, Arg, ArgMatches, Command};

use crate::output::{Cell, Out};
use crate::{Principal, Result};

pub fn command() -> Command {
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
        .arg(crate::output())
}

fn esc(s: &str) -> String {
    escape_control(s).into_owned()
}

fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{}.{:03}s", s, ms.max(0) % 1000),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn header(names: &[&str]) -> Vec<Cell> {
    names.iter().map(|&n| Cell::plain(n)).collect()
}

pub fn run(m: &ArgMatches, p: &Principal, out: &mut Out) -> Result {
    let mut api = p.client()?;
    if let Some(instance) = m.get_one::<String>("instance") {
        let changes = api.timeline(instance)?;
        if changes.is_empty() {
            return Err(format!("no status recorded for instance {:?}", esc(instance)).into());
        }
        if out.json {
            for c in &changes {
                let (task_id, task_instance_id) = c.task.clone().unzip();
                let v = serde_json::json!({
                    "timestamp_ms": c.timestamp_ms, "task_id": task_id,
                    "task_instance_id": task_instance_id, "status": c.status,
                });
                if !out.line(format_args!("{v}")) {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let mut rows = vec![header(&["TIME", "TASK", "TASK INSTANCE", "STATUS"])];
        for c in &changes {
            let (task, task_instance) = c
                .task
                .as_ref()
                .map_or(("(workflow)".into(), "-".into()), |(t, i)| (esc(t), esc(i)));
            rows.push(vec![
                Cell::plain(rfc3339_ms(c.timestamp_ms)),
                Cell::plain(task),
                Cell::plain(task_instance),
                Cell::status(c.status),
            ]);
        }
        out.table(&rows);
        return Ok(());
    }
    let filter = RecentWorkflows {
        limit: m.get_one::<u64>("recent").map_or(20, |&n| n as usize),
        workflow_id: m.get_one::<String>("workflow").cloned(),
        status: m.get_one::<RunStatus>("status").copied(),
    };
    let runs = api.recent_workflows(&filter)?;
    if out.json {
        for r in &runs {
            if !out.line(format_args!("{}", serde_json::to_string(r)?)) {
                return Ok(());
            }
        }
        return Ok(());
    }
    if runs.is_empty() {
        out.line(format_args!("no workflow instances recorded"));
        return Ok(());
    }
    let mut rows = vec![header(&[
        "WORKFLOW", "INSTANCE", "STATUS", "STARTED", "UPDATED", "DURATION",
    ])];
    for r in &runs {
        rows.push(vec![
            Cell::plain(esc(&r.workflow_id)),
            Cell::plain(esc(&r.workflow_instance_id)),
            Cell::status(r.status),
            Cell::plain(rfc3339_ms(r.first_ms)),
            Cell::plain(rfc3339_ms(r.last_ms)),
            Cell::plain(duration(r.last_ms - r.first_ms)),
        ]);
    }
    out.table(&rows);
    Ok(())
}

pub fn stats(p: &Principal, out: &mut Out) -> Result {
    let s = p.client()?.stats()?;
    if out.json {
        out.line(format_args!("{}", serde_json::to_string(&s)?));
        return Ok(());
    }
    let v = serde_json::to_value(s)?;
    let rows: Vec<Vec<Cell>> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| vec![Cell::plain(format!("{k}:")), Cell::plain(v.to_string())])
        .collect();
    out.table(&rows);
    if s.space_low {
        out.line(format_args!(
            "warning: database writes paused: {} bytes free on its filesystem, under the space kept free \
             (CDKTR_DB_MIN_FREE_SPACE); publishers keep their lines until space returns",
            s.free_space_bytes
        ));
    }
    Ok(())
}
