//! The cost of a `tracing` event on the caller's thread: through the cdktr
//! layer (into a ZeroMQ PULL socket on loopback that discards, standing for
//! a principal on another machine: the two cores are shared by the caller
//! and the publisher's thread only), next to tracing-appender's
//! `non_blocking` writer into a file with the fmt layer; and of a disabled
//! event, with the layer and with no layer at all.
//!
//! `cargo bench --bench tracing`

use std::time::Duration;

use cdktr_log::testing::any_ports;
use cdktr_log::LogPublisher;
use criterion::{criterion_group, criterion_main, Criterion};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// One event with three fields, inside a workflow span.
fn event() {
    tracing::info!(rows = 10u64, table = "orders", ok = true, "loaded");
}

fn in_workflow(f: impl FnOnce()) {
    let span = tracing::info_span!("workflow", workflow_id = "etl", workflow_instance_id = "etl-1");
    span.in_scope(f);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracing event");
    g.measurement_time(Duration::from_secs(5));

    // The layer into a PULL socket a thread drains.
    let context = zmq::Context::new();
    let pull = context.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = pull.get_last_endpoint().unwrap().unwrap();
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let drain = std::thread::spawn(move || while pull.recv_bytes(0).is_ok_and(|b| !b.is_empty()) {});
    let bus = cdktr_log::BusConfig {
        listening_port: port,
        ..any_ports()
    };
    let publisher = LogPublisher::connect(&bus).unwrap();
    let (layer, guard) = cdktr_log::tracing::layer(publisher).build();
    let cdktr = tracing_subscriber::registry().with(LevelFilter::INFO).with(layer);
    tracing::subscriber::with_default(cdktr, || {
        in_workflow(|| {
            g.bench_function("enabled, 3 fields: cdktr layer", |b| b.iter(event));
            g.bench_function("disabled (DEBUG under INFO): cdktr layer", |b| {
                b.iter(|| tracing::debug!(rows = 10u64, table = "orders", ok = true, "loaded"))
            });
        });
    });
    let report = guard.shutdown().unwrap();
    eprintln!("cdktr layer: {report:?}");

    // tracing-appender's non_blocking writer into a file, fmt layer.
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("events.log")).unwrap();
    let (writer, appender_guard) = tracing_appender::non_blocking(file);
    let appender = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false));
    tracing::subscriber::with_default(appender, || {
        in_workflow(|| {
            g.bench_function("enabled, 3 fields: tracing-appender non_blocking file", |b| {
                b.iter(event)
            });
        })
    });
    drop(appender_guard);

    // No layer at all.
    let bare = tracing_subscriber::registry().with(LevelFilter::INFO);
    tracing::subscriber::with_default(bare, || {
        in_workflow(|| {
            g.bench_function("disabled (DEBUG under INFO): no layer", |b| {
                b.iter(|| tracing::debug!(rows = 10u64, table = "orders", ok = true, "loaded"))
            });
        })
    });
    g.finish();
    let stop = context.socket(zmq::PUSH).unwrap();
    stop.connect(&endpoint).unwrap();
    stop.send(Vec::<u8>::new(), 0).unwrap();
    let _ = drain.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
