//! Status history and crash detection.

use super::*;

#[test]
fn status_history_is_recorded_and_read_back() {
    let store = Store::open_in_memory().unwrap();
    use RunStatus::*;
    store.record_workflow_status("etl", "etl-1", Pending, 100).unwrap();
    store.record_workflow_status("etl", "etl-1", Running, 110).unwrap();
    store
        .record_task_status("extract", "extract-1", "etl-1", Running, 110)
        .unwrap();
    store
        .record_task_status("extract", "extract-1", "etl-1", Completed, 150)
        .unwrap();
    store
        .record_task_status("load", "load-1", "etl-1", Running, 150)
        .unwrap();
    store
        .record_task_status("load", "load-1", "etl-1", Failed, 190)
        .unwrap();
    store.record_workflow_status("etl", "etl-1", Failed, 190).unwrap();
    store.record_workflow_status("etl", "etl-2", Running, 200).unwrap();
    store
        .record_workflow_status("report", "report-1", Running, 120)
        .unwrap();
    store
        .record_workflow_status("report", "report-1", Completed, 300)
        .unwrap();
    // Same timestamp twice: the later record wins.
    store.record_workflow_status("x", "x-1", Running, 50).unwrap();
    store.record_workflow_status("x", "x-1", Crashed, 50).unwrap();

    assert_eq!(store.latest_workflow_status("etl-1").unwrap(), Some((Failed, 190)));
    assert_eq!(store.latest_workflow_status("x-1").unwrap(), Some((Crashed, 50)));
    assert_eq!(store.latest_workflow_status("nope").unwrap(), None);

    let t = |task: Option<(&str, &str)>, status, timestamp_ms| StatusChange {
        task: task.map(|(a, b)| (a.to_string(), b.to_string())),
        status,
        timestamp_ms,
    };
    assert_eq!(
        store.timeline("etl-1").unwrap(),
        vec![
            t(None, Pending, 100),
            t(None, Running, 110),
            t(Some(("extract", "extract-1")), Running, 110),
            t(Some(("extract", "extract-1")), Completed, 150),
            t(Some(("load", "load-1")), Running, 150),
            t(None, Failed, 190),
            t(Some(("load", "load-1")), Failed, 190),
        ]
    );

    let ids = |runs: Vec<cdktr_store::WorkflowRun>| {
        runs.into_iter()
            .map(|r| (r.workflow_instance_id, r.status))
            .collect::<Vec<_>>()
    };
    let recent = store
        .recent_workflows(&RecentWorkflows {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((recent[0].first_ms, recent[0].last_ms), (120, 300));
    assert_eq!(
        ids(recent),
        vec![
            ("report-1".into(), Completed),
            ("etl-2".into(), Running),
            ("etl-1".into(), Failed),
            ("x-1".into(), Crashed)
        ]
    );
    assert_eq!(
        ids(store
            .recent_workflows(&RecentWorkflows {
                limit: 2,
                ..Default::default()
            })
            .unwrap())
        .len(),
        2
    );
    assert_eq!(
        ids(store
            .recent_workflows(&RecentWorkflows {
                workflow_id: Some("etl".into()),
                ..Default::default()
            })
            .unwrap()),
        vec![("etl-2".into(), Running), ("etl-1".into(), Failed)]
    );
    assert_eq!(
        ids(store
            .recent_workflows(&RecentWorkflows {
                status: Some(Running),
                ..Default::default()
            })
            .unwrap()),
        vec![("etl-2".into(), Running)]
    );
    assert!(matches!(
        store.recent_workflows(&RecentWorkflows {
            limit: 0,
            ..Default::default()
        }),
        Err(Error::InvalidQuery(_))
    ));
    assert_eq!("crashed".parse::<RunStatus>().unwrap(), Crashed);
    assert!(matches!(
        "done".parse::<RunStatus>(),
        Err(cdktr_log::Error::UnknownStatus(_))
    ));
}

#[test]
fn crashed_rows_are_written_once_for_unfinished_runs_only() {
    let store = Store::open_in_memory().unwrap();
    store
        .record_workflow_status("etl", "etl-1", RunStatus::Running, 100)
        .unwrap();
    store
        .record_task_status("a", "a-1", "etl-1", RunStatus::Completed, 150)
        .unwrap();
    store
        .record_task_status("b", "b-1", "etl-1", RunStatus::Running, 160)
        .unwrap();
    store
        .record_workflow_status("etl", "etl-2", RunStatus::Completed, 100)
        .unwrap();
    store
        .record_workflow_status("etl", "etl-3", RunStatus::Waiting, 100)
        .unwrap();
    // An agent clock ahead of the principal's.
    store
        .record_workflow_status("etl", "etl-4", RunStatus::Running, 10_000)
        .unwrap();
    assert_eq!(store.unfinished_workflows().unwrap(), ["etl-1", "etl-3", "etl-4"]);

    assert!(store.mark_crashed("etl-1", 1_000).unwrap());
    assert!(!store.mark_crashed("etl-1", 2_000).unwrap(), "already crashed");
    assert!(!store.mark_crashed("etl-2", 1_000).unwrap(), "already completed");
    assert!(!store.mark_crashed("nope", 1_000).unwrap(), "unknown");
    assert!(store.mark_crashed("etl-4", 1_000).unwrap());
    assert_eq!(
        store.latest_workflow_status("etl-1").unwrap(),
        Some((RunStatus::Crashed, 1_000))
    );
    assert_eq!(
        store.latest_workflow_status("etl-4").unwrap(),
        Some((RunStatus::Crashed, 10_001))
    );
    let crashed: Vec<_> = store
        .timeline("etl-1")
        .unwrap()
        .into_iter()
        .filter(|c| c.status == RunStatus::Crashed)
        .collect();
    assert_eq!(
        crashed,
        [
            StatusChange {
                task: None,
                status: RunStatus::Crashed,
                timestamp_ms: 1_000
            },
            StatusChange {
                task: Some(("b".into(), "b-1".into())),
                status: RunStatus::Crashed,
                timestamp_ms: 1_000
            },
        ]
    );
    assert_eq!(store.unfinished_workflows().unwrap(), ["etl-3"]);
}
