//! The layer against a real manager on loopback: context from spans,
//! payloads, what is skipped, and what the guard reports.

use std::time::Duration;

use crossbeam_channel::Receiver;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::testing::any_ports;
use crate::LogMessage;
use crate::{Line, LogManager};

const WAIT: Duration = Duration::from_secs(30);

/// A manager whose sink the test reads, and a layer publishing to it;
/// runs `f` with the layer as the thread's subscriber, then shuts the
/// publisher down (within its bound) and returns the lines that arrived
/// (every one the publisher did not drop) and the report.
fn run(build: impl FnOnce(LayerBuilder) -> LayerBuilder, f: impl FnOnce()) -> (Vec<LogMessage>, LayerReport) {
    run_with(|p| p, build, f)
}

/// As [`run`], with the publisher built as `publisher` says.
fn run_with(
    publisher: impl FnOnce(crate::PublisherBuilder) -> crate::PublisherBuilder,
    build: impl FnOnce(LayerBuilder) -> LayerBuilder,
    f: impl FnOnce(),
) -> (Vec<LogMessage>, LayerReport) {
    let (sink, rx) = crossbeam_channel::unbounded();
    let manager = LogManager::builder(&any_ports()).sink(sink).start().unwrap();
    let publisher = publisher(LogPublisher::builder(manager.config())).start().unwrap();
    let (layer, guard) = build(super::layer(publisher)).build();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    let started = std::time::Instant::now();
    let report = guard.shutdown().unwrap();
    assert!(started.elapsed() < WAIT, "shutdown is bounded");
    let lines = take(&rx, (report.layer.published - report.publisher.dropped) as usize);
    manager.shutdown().unwrap();
    (lines, report)
}

fn take(rx: &Receiver<Line>, n: usize) -> Vec<LogMessage> {
    (0..n)
        .map(|_| {
            rx.recv_timeout(WAIT)
                .expect("every published line arrives")
                .to_message()
        })
        .collect()
}

fn ctx(line: &LogMessage) -> [&str; 5] {
    [
        &line.workflow_id,
        &line.workflow_name,
        &line.workflow_instance_id,
        &line.task_name,
        &line.task_instance_id,
    ]
}

#[test]
fn events_carry_the_innermost_context_and_fields_recorded_later() {
    let (lines, report) = run(
        |b| b,
        || {
            let run = tracing::info_span!(
                "workflow",
                workflow_id = "etl",
                workflow_name = "Nightly ETL",
                workflow_instance_id = "etl-1",
                task_name = tracing::field::Empty,
            );
            let _run = run.enter();
            tracing::info!("in the run");
            {
                let task = tracing::info_span!("task", task_name = "extract", task_instance_id = "extract-1");
                let _task = task.enter();
                tracing::warn!("in the task");
                {
                    let inner = tracing::info_span!("retry", task_instance_id = "extract-1-retry");
                    let _inner = inner.enter();
                    tracing::error!("innermost wins");
                }
            }
            run.record("task_name", "recorded-later");
            tracing::debug!("after record");
            tracing::info!(workflow_instance_id = "etl-override", "the event's own field wins");
        },
    );
    assert_eq!(report.layer.published, 5);
    let got: Vec<([&str; 5], Level, &str)> = lines.iter().map(|l| (ctx(l), l.level, l.payload.as_str())).collect();
    assert_eq!(
        got,
        [
            (["etl", "Nightly ETL", "etl-1", "", ""], Level::Info, "in the run"),
            (
                ["etl", "Nightly ETL", "etl-1", "extract", "extract-1"],
                Level::Warn,
                "in the task"
            ),
            (
                ["etl", "Nightly ETL", "etl-1", "extract", "extract-1-retry"],
                Level::Error,
                "innermost wins"
            ),
            (
                ["etl", "Nightly ETL", "etl-1", "recorded-later", ""],
                Level::Debug,
                "after record"
            ),
            (
                ["etl", "Nightly ETL", "etl-override", "recorded-later", ""],
                Level::Info,
                "the event's own field wins"
            ),
        ]
    );
}

#[test]
fn events_outside_any_workflow_are_skipped_or_given_the_default_context_and_counted() {
    let (lines, report) = run(|b| b, || tracing::info!("nowhere"));
    assert!(lines.is_empty());
    assert_eq!((report.layer.skipped, report.layer.published), (1, 0));

    let default = TaskContext {
        workflow_id: "orchestrator".into(),
        workflow_name: "Orchestrator".into(),
        workflow_instance_id: "orchestrator-1".into(),
        task_name: "main".into(),
        task_instance_id: "main-1".into(),
    };
    let (lines, report) = run(
        |b| b.default_context(default.clone()),
        || {
            tracing::info!("nowhere");
            let span = tracing::info_span!("w", workflow_id = "etl");
            let _in = span.enter();
            tracing::info!("half a context");
        },
    );
    assert_eq!(report.layer.defaulted, 1);
    assert_eq!(
        ctx(&lines[0]),
        ["orchestrator", "Orchestrator", "orchestrator-1", "main", "main-1"]
    );
    // Inside a workflow, the default fills only what the spans lack.
    assert_eq!(
        ctx(&lines[1]),
        ["etl", "Orchestrator", "orchestrator-1", "main", "main-1"]
    );
}

#[derive(Debug)]
#[allow(dead_code)]
struct Rows {
    kept: u32,
    note: &'static str,
}

#[test]
fn fields_are_written_like_logfmt_after_the_message() {
    let (lines, _) = run(
        |b| b.with_target(true),
        || {
            let span = tracing::info_span!("w", workflow_id = "etl");
            let _in = span.enter();
            tracing::info!(
                count = 42,
                ratio = 0.5,
                ok = true,
                negative = -7,
                name = "two words",
                quote = "say \"hi\"",
                multi = "line\nbreak",
                plain = "x",
                rows = ?Rows { kept: 3, note: "n" },
                "loaded {} files", 3
            );
            tracing::info!(only = 1);
        },
    );
    assert_eq!(
        lines[0].payload,
        "loaded 3 files target=cdktr_log::tracing::tests count=42 ratio=0.5 ok=true negative=-7 \
         name=\"two words\" quote=\"say \\\"hi\\\"\" multi=\"line\\nbreak\" plain=x \
         rows=\"Rows { kept: 3, note: \\\"n\\\" }\""
    );
    assert_eq!(lines[1].payload, "target=cdktr_log::tracing::tests only=1");
}

#[test]
fn an_oversize_payload_is_counted_not_published_and_never_panics() {
    let (lines, report) = run_with(
        |p| p.max_message_bytes(512),
        |b| b,
        || {
            let span = tracing::info_span!("w", workflow_id = "etl");
            let _in = span.enter();
            tracing::info!("{}", "x".repeat(1000));
            tracing::info!("small");
        },
    );
    assert_eq!((report.layer.oversize, report.layer.published), (1, 1));
    assert!(report.lost_any());
    assert_eq!(lines[0].payload, "small");
}

#[test]
fn the_guard_delivers_what_is_queued_and_reports_drops() {
    // Delivered: every queued line reaches the manager before shutdown returns.
    let (lines, report) = run(
        |b| b,
        || {
            let span = tracing::info_span!("w", workflow_id = "etl");
            let _in = span.enter();
            for i in 0..2000 {
                tracing::info!(i, "line");
            }
        },
    );
    assert_eq!(lines.len(), 2000);
    assert_eq!(report.publisher.dropped, 0);
    assert!(!report.lost_any());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l.payload, format!("line i={i}"));
    }

    // Lines the publisher drops (here: a payload under its limit whose
    // encoded message is over it) are in the report, exactly.
    let (lines, report) = run_with(
        |p| p.max_message_bytes(200),
        |b| b,
        || {
            let span = tracing::info_span!("w", workflow_id = "etl");
            let _in = span.enter();
            for i in 0..15 {
                let payload = if i % 3 == 0 {
                    "small".to_string()
                } else {
                    "y".repeat(190)
                };
                tracing::info!("{payload}");
            }
        },
    );
    assert_eq!(report.layer.published, 15);
    assert_eq!(report.publisher.dropped, 10, "{report:?}");
    assert_eq!(lines.iter().filter(|l| l.payload == "small").count(), 5);
}
