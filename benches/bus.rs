//! Wire-format costs: encode and decode of a typical message.
//!
//! `cargo bench --bench bus`

use std::hint::black_box;

use cdktr_logs::bus::wire;
use cdktr_logs::{Level, LogMessage};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn typical() -> LogMessage {
    LogMessage {
        workflow_id: "nightly-etl".into(),
        workflow_name: "Nightly ETL".into(),
        workflow_instance_id: "nightly-etl-20261127T083000-7f3a".into(),
        task_name: "extract-orders".into(),
        task_instance_id: "extract-orders-20261127T083001-19c2".into(),
        timestamp_ms: 1_795_768_200_123,
        level: Level::Info,
        payload: "extracted 10,000 rows from orders in 1.23 s (8,130 rows/s); next batch starts at id 7,340,112".into(),
    }
}

fn codec(c: &mut Criterion) {
    let m = typical();
    let (mut topic, mut body) = (Vec::new(), Vec::new());
    wire::encode("agent-1", 42, &m, &mut topic, &mut body);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("encode ({} byte body)", body.len()), |b| {
        let (mut t, mut bd) = (Vec::with_capacity(64), Vec::with_capacity(512));
        b.iter(|| wire::encode("agent-1", black_box(42), black_box(&m), &mut t, &mut bd))
    });
    g.bench_function("decode", |b| {
        b.iter(|| wire::decode(black_box(&[&topic, &body]), wire::DEFAULT_MAX_MESSAGE_BYTES).unwrap())
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
