//! Embeds the whole bus in one program: a log manager, a publisher writing
//! a task's lines, a live subscriber, and an in-process sink.
//!
//! ```text
//! cargo run --example pubsub
//! ```
//!
//! It binds free ports on 127.0.0.1, so it can run anywhere, any number of
//! times at once.

use std::time::Duration;

use cdktr_logs::{BusConfig, LogManager, LogPublisher, LogSubscriber, TaskContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    };
    let (sink, persisted) = crossbeam_channel::bounded(10_000);
    let manager = LogManager::builder(&config).sink(sink).start()?;
    println!(
        "manager: agents push to {}, subscribers read {}",
        manager.listening_endpoint(),
        manager.publishing_endpoint()
    );

    let mut watcher = LogSubscriber::builder(manager.config()).workflow("etl").connect()?;
    let publisher = LogPublisher::connect(manager.config())?;
    let log = publisher.task_logger(TaskContext {
        workflow_id: "etl".into(),
        workflow_name: "Nightly ETL".into(),
        workflow_instance_id: "etl-20261127-1".into(),
        task_name: "extract".into(),
        task_instance_id: "extract-1".into(),
    });

    // A SUB socket joins asynchronously: say hello until the watcher hears it.
    let mut heard = None;
    for _ in 0..500 {
        log.debug("hello")?;
        if let Some(env) = watcher.recv_timeout(Duration::from_millis(10))? {
            heard = Some(env);
            break;
        }
    }
    println!(
        "watcher joined: {}",
        heard.ok_or("the watcher never joined")?.message.display()
    );

    log.info("extracting rows")?;
    log.warn("row 7 has no id; skipped")?;
    log.info("extracted 10 rows")?;
    let mut live = 0;
    while live < 3 {
        let env = watcher
            .recv_timeout(Duration::from_secs(10))?
            .ok_or("live line missing")?;
        if env.message.payload != "hello" {
            println!("live: {}", env.message.display());
            live += 1;
        }
    }

    let stats = publisher.shutdown()?;
    println!("publisher: {} published, {} dropped", stats.published, stats.dropped);
    let manager_stats = manager.shutdown()?;
    let stored: Vec<_> = persisted.try_iter().collect();
    println!(
        "manager: {} received, {} forwarded, {} rejected; the sink got {} (sequence {}..={})",
        manager_stats.received,
        manager_stats.forwarded,
        manager_stats.rejected,
        stored.len(),
        stored.first().map_or(0, |e| e.seq),
        stored.last().map_or(0, |e| e.seq),
    );
    Ok(())
}
