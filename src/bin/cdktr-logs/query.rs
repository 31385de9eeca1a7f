//! `cdktr-logs query`: stored lines, oldest first, all or the last N.

use cdktr_log::api::MAX_PAGE_LINES;
use cdktr_log::query::{LevelFilter, LogQuery, Order};
use cdktr_log::Level;
use clap::{value_parser, Arg, ArgMatches, Command};

use crate::output::Out;
use crate::{Principal, Result};

pub fn command() -> Command {
    filters(Command::new("query").about("Print stored log lines, oldest first"))
        .arg(
            Arg::new("lines")
                .short('n')
                .long("lines")
                .value_name("N")
                .value_parser(value_parser!(u64).range(1..))
                .help("Only the last N lines"),
        )
        .arg(crate::output())
}

/// The filters `query` and `export` share.
pub fn filters(command: Command) -> Command {
    let time = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name("WHEN")
            .value_parser(crate::parse_time)
            .help(help)
    };
    command
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
        .arg(crate::level())
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
}

/// The query the [`filters`] describe, oldest first, in full pages.
pub fn filtered(m: &ArgMatches) -> LogQuery {
    let text = |k: &str| m.get_one::<String>(k).cloned();
    LogQuery {
        start_ms: Some(m.get_one::<i64>("since").copied().unwrap_or(i64::MIN)),
        end_ms: m.get_one::<i64>("until").copied(),
        workflow_id: text("workflow"),
        workflow_instance_id: text("instance"),
        task_name: text("task"),
        task_instance_id: None,
        levels: m.get_one::<Level>("level").map(|&l| LevelFilter::AtLeast(l)),
        payload_contains: text("grep"),
        limit: Some(MAX_PAGE_LINES),
        order: Order::OldestFirst,
        ..LogQuery::default()
    }
}

pub fn run(m: &ArgMatches, p: &Principal, out: &mut Out) -> Result {
    let last_n = m
        .get_one::<u64>("lines")
        .map(|&n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut query = filtered(m);
    // The last N are the first N newest; everything is read in order.
    if last_n.is_some() {
        query.order = Order::NewestFirst;
    }
    let mut api = p.client()?;
    if let Some(n) = last_n {
        let mut lines = Vec::new();
        for page in api.pages(query).max_lines(n) {
            lines.extend(page?.lines);
        }
        lines.truncate(n);
        for line in lines.iter().rev() {
            if !out.log_line(line.into()) {
                return Ok(());
            }
        }
        return Ok(());
    }
    // Each page printed from the reply's bytes, no string copied.
    loop {
        let next = api.read_logs(&query, |lines, next| {
            let printed = lines.iter().all(|l| out.log_line(l.message));
            next.filter(|_| printed)
        })?;
        match next {
            Some(cursor) => query.after = Some(cursor),
            None => return Ok(()),
        }
    }
}
