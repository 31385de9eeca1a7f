//! A small orchestrator that logs with `tracing` and gets its lines onto
//! the cdktr bus with three lines in `main` (the layer, its guard, the
//! subscriber). It runs one workflow's tasks on threads inside `workflow`
//! and `task` spans, records their statuses, then reads its own lines and
//! statuses back and prints the run's timeline.
//!
//! ```text
//! cargo run --example embed_orchestrator                # a principal in-process, in memory
//! cargo run --example embed_orchestrator -- --connect   # a running principal (CDKTR_* variables)
//! ```

use std::time::Duration;

use cdktr_logs::api::ApiClient;
use cdktr_logs::{ApiConfig, BusConfig, LogPublisher, LogQuery, RunStatus};
use tracing_subscriber::layer::SubscriberExt;

const TASKS: [(&str, u64); 3] = [("extract", 3), ("transform", 2), ("load", 4)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connect = std::env::args().any(|a| a == "--connect");
    // The principal: a running one, or one in this process on `:memory:`.
    let (principal, bus, api) = if connect {
        (None, BusConfig::from_env()?, ApiConfig::from_env()?)
    } else {
        let p = cdktr_logs::principal::Principal::builder()
            .bus(BusConfig {
                host: "127.0.0.1".into(),
                listening_port: 0,
                publishing_port: 0,
            })
            .api(ApiConfig {
                host: "127.0.0.1".into(),
                port: 0,
            })
            .database(cdktr_logs::store::Location::Memory)
            .flush_interval(Duration::from_millis(200))
            .start()?;
        let (bus, api) = (p.bus().config().clone(), p.api_config());
        (Some(p), bus, api)
    };
    let spool = std::env::temp_dir().join(format!("embed-orchestrator-{}", std::process::id()));

    // The three lines: a layer on an acknowledged publisher, its guard,
    // and the subscriber.
    let publisher = LogPublisher::builder(&bus)
        .acknowledged_by(&api)
        .spool_dir(&spool)
        .start()?;
    let (layer, guard) = cdktr_logs::bus::tracing::layer(publisher).build();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;

    let instance = format!("etl-{}", cdktr_logs::bus::message::now_ms());
    let mut statuses = ApiClient::connect(&api)?.with_timeout(Duration::from_secs(10));
    statuses.record_workflow_status("etl", &instance, RunStatus::Running, None)?;
    let run = tracing::info_span!(
        "workflow",
        workflow_id = "etl",
        workflow_name = "Nightly ETL",
        workflow_instance_id = instance.as_str()
    );
    run.in_scope(|| tracing::info!(tasks = TASKS.len(), "starting"));
    let outcomes: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = TASKS
            .iter()
            .map(|&(name, batches)| {
                let (run, instance, api) = (run.clone(), instance.clone(), api.clone());
                s.spawn(move || run_task(&run, &api, &instance, name, batches))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a task thread")).collect()
    });
    let ok = outcomes.iter().all(|(_, ok)| *ok);
    run.in_scope(|| tracing::info!(ok, "finished"));
    let status = if ok { RunStatus::Completed } else { RunStatus::Failed };
    statuses.record_workflow_status("etl", &instance, status, None)?;

    // Everything logged is delivered and acknowledged before this returns.
    let report = guard.shutdown()?;
    println!(
        "{} events published, {} stored, {} dropped",
        report.layer.published, report.publisher.acknowledged, report.publisher.dropped
    );

    // The run's timeline: its statuses and its lines, in time order.
    let mut api_client = ApiClient::connect(&api)?.with_timeout(Duration::from_secs(10));
    let mut events: Vec<(i64, String)> = api_client
        .timeline(&instance)?
        .into_iter()
        .map(|c| {
            let who = c.task.map_or("workflow".to_string(), |(task, _)| task);
            (c.timestamp_ms, format!("{who:<10} {}", c.status))
        })
        .collect();
    let query = LogQuery {
        workflow_instance_id: Some(instance.clone()),
        start_ms: Some(i64::MIN),
        ..LogQuery::default()
    };
    for page in api_client.pages(query) {
        for l in page?.lines {
            let task = if l.task_name.is_empty() {
                "workflow"
            } else {
                l.task_name.as_str()
            };
            events.push((l.timestamp_ms, format!("{task:<10} {:<5} {}", l.level, l.payload)));
        }
    }
    events.sort_by_key(|e| e.0);
    let start = events.first().map_or(0, |e| e.0);
    println!("timeline of {instance}:");
    for (at, what) in &events {
        println!("  +{:>5} ms  {what}", at - start);
    }
    if let Some(p) = principal {
        p.shutdown()?;
    }
    let _ = std::fs::remove_dir_all(&spool);
    Ok(())
}

/// One task: its status around its work, its lines inside its span.
fn run_task(run: &tracing::Span, api: &ApiConfig, instance: &str, name: &str, batches: u64) -> (String, bool) {
    let task_instance = format!("{name}-{instance}");
    let mut client = ApiClient::connect(api)
        .expect("the API")
        .with_timeout(Duration::from_secs(10));
    let record = |client: &mut ApiClient, status| {
        if let Err(e) = client.record_task_status(name, &task_instance, instance, status, None) {
            tracing::error!(%e, "could not record the task's status");
        }
    };
    let span = tracing::info_span!(parent: run, "task", task_name = name, task_instance_id = task_instance.as_str());
    let _in_task = span.enter();
    record(&mut client, RunStatus::Running);
    tracing::info!(batches, "started");
    for batch in 1..=batches {
        std::thread::sleep(Duration::from_millis(20));
        if name == "transform" && batch == 2 {
            tracing::warn!(
                batch,
                rows_skipped = 3,
                reason = "malformed date",
                "batch done with skips"
            );
        } else {
            tracing::debug!(batch, "batch done");
        }
    }
    tracing::info!("done");
    record(&mut client, RunStatus::Completed);
    (name.to_owned(), true)
}
