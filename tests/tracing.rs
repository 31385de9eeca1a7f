//! The `tracing` layer into a real principal: many threads, acknowledged
//! delivery, every event stored once and in order; and `log` records
//! through `tracing-log`.

use std::time::Duration;

use cdktr_log::query::LogQuery;
use cdktr_log::{ApiClient, Level, LogPublisher, TaskContext};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(60);

fn principal() -> cdktr_principal::Principal {
    cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .flush_interval(Duration::from_millis(200))
        .start()
        .unwrap()
}

/// Every stored line of `instance`, oldest first.
fn stored(api: &mut ApiClient, instance: &str) -> Vec<cdktr_log::LogMessage> {
    let query = LogQuery {
        workflow_instance_id: Some(instance.into()),
        start_ms: Some(i64::MIN),
        limit: Some(10_000),
        ..LogQuery::default()
    };
    let mut lines = Vec::new();
    for page in api.pages(query) {
        lines.extend(page.unwrap().lines);
    }
    lines
}

#[test]
fn eight_threads_of_ten_thousand_events_are_each_stored_once_in_order() {
    let p = principal();
    let spool = tempfile::tempdir().unwrap();
    let publisher = LogPublisher::builder(p.bus().config())
        .acknowledged_by(&p.api_config())
        .spool_dir(spool.path())
        .start()
        .unwrap();
    let (layer, guard) = cdktr_log::tracing::layer(publisher).build();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    const THREADS: usize = 8;
    const EVENTS: usize = 10_000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let dispatch = dispatch.clone();
            s.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let run = tracing::info_span!(
                        "workflow",
                        workflow_id = "load",
                        workflow_name = "Load",
                        workflow_instance_id = format!("load-{t}")
                    );
                    let _run = run.enter();
                    let task = tracing::info_span!("task", task_name = "work", task_instance_id = t);
                    let _task = task.enter();
                    for i in 0..EVENTS {
                        tracing::info!(thread = t, i, "event");
                    }
                });
            });
        }
    });
    let report = guard.shutdown().unwrap();
    assert_eq!(report.layer.published, (THREADS * EVENTS) as u64);
    assert_eq!(report.publisher.dropped, 0);
    assert_eq!(report.publisher.acknowledged, (THREADS * EVENTS) as u64, "{report:?}");
    let mut api = ApiClient::connect(&p.api_config()).unwrap().with_timeout(WAIT);
    for t in 0..THREADS {
        let lines = stored(&mut api, &format!("load-{t}"));
        let payloads: Vec<String> = lines.iter().map(|l| l.payload.clone()).collect();
        let want: Vec<String> = (0..EVENTS).map(|i| format!("event thread={t} i={i}")).collect();
        assert_eq!(payloads.len(), EVENTS, "thread {t}: each event once");
        assert_eq!(payloads, want, "thread {t}: in the order logged");
        assert!(lines
            .iter()
            .all(|l| l.task_instance_id == t.to_string() && l.level == Level::Info));
    }
    p.shutdown().unwrap();
}

#[test]
fn log_records_reach_the_bus_through_tracing_log() {
    let p = principal();
    let publisher = LogPublisher::connect(p.bus().config()).unwrap();
    let (layer, guard) = cdktr_log::tracing::layer(publisher)
        .default_context(TaskContext {
            workflow_id: "legacy".into(),
            workflow_name: "Legacy".into(),
            workflow_instance_id: "legacy-1".into(),
            task_name: "main".into(),
            task_instance_id: "main-1".into(),
        })
        .build();
    tracing_log::LogTracer::init().unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        log::warn!("disk at {}%", 91);
        log::error!(target: "legacy::db", "connection refused");
    });
    let report = guard.shutdown().unwrap();
    assert_eq!(report.layer.published, 2);
    let mut api = ApiClient::connect(&p.api_config()).unwrap().with_timeout(WAIT);
    let end = std::time::Instant::now() + WAIT;
    let lines = loop {
        let lines = stored(&mut api, "legacy-1");
        if lines.len() == 2 || std::time::Instant::now() > end {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let got: Vec<(Level, &str)> = lines.iter().map(|l| (l.level, l.payload.as_str())).collect();
    assert_eq!(
        got,
        [(Level::Warn, "disk at 91%"), (Level::Error, "connection refused")]
    );
    p.shutdown().unwrap();
}
