//! The bus's costs, each next to its ceiling on the same machine.
//!
//! `cargo bench --bench bus`
//!
//! - `wire`: encode and decode of a typical message.
//! - `pipeline`: `LogPublisher` -> `LogManager` -> `LogSubscriber`, 100,000
//!   lines, next to raw libzmq PUSH -> PULL -> PUB -> SUB with the same
//!   frames through one forwarding thread, and raw PUSH -> PULL.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cdktr_logs::bus::wire;
use cdktr_logs::{BusConfig, Level, LogManager, LogMessage, LogPublisher, LogSubscriber};
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

const N: usize = 100_000;

fn any_ports() -> BusConfig {
    BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    }
}

/// Publisher -> manager -> subscriber: the time until the subscriber has
/// every line.
fn ours() -> Duration {
    let manager = LogManager::builder(&any_ports())
        .subscriber_hwm(N as i32 * 2)
        .start()
        .unwrap();
    let mut sub = LogSubscriber::builder(manager.config())
        .receive_hwm(N as i32 * 2)
        .connect()
        .unwrap();
    let publisher = LogPublisher::connect(manager.config()).unwrap();
    // Until the subscription is in place.
    while sub.recv_timeout(Duration::from_millis(20)).unwrap().is_none() {
        publisher.publish(typical()).unwrap();
    }
    while sub.recv_timeout(Duration::from_millis(100)).unwrap().is_some() {}
    let m = typical();
    let start = Instant::now();
    for _ in 0..N {
        publisher.publish(m.clone()).unwrap();
    }
    for _ in 0..N {
        sub.recv_timeout(Duration::from_secs(30)).unwrap().expect("every line");
    }
    start.elapsed()
}

/// The same frames through raw libzmq: PUSH -> PULL -> PUB -> SUB, one
/// thread forwarding.
fn raw_forwarded() -> Duration {
    let (ctx, pull, push, topic, body) = push_pull();
    let publisher = ctx.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(N as i32 * 2).unwrap();
    publisher.bind("tcp://127.0.0.1:*").unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(N as i32 * 2).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&publisher.get_last_endpoint().unwrap().unwrap()).unwrap();
    // Until the subscription is in place.
    loop {
        publisher.send(&topic[..], zmq::SNDMORE).unwrap();
        publisher.send(&body[..], 0).unwrap();
        if sub.poll(zmq::POLLIN, 20).unwrap() > 0 {
            while sub.recv_bytes(zmq::DONTWAIT).is_ok() {}
            break;
        }
    }
    let forwarder = std::thread::spawn(move || {
        let mut m = zmq::Message::new();
        for _ in 0..N * 2 {
            pull.recv(&mut m, 0).unwrap();
            let more = m.get_more();
            publisher.send(&m[..], if more { zmq::SNDMORE } else { 0 }).unwrap();
        }
    });
    let start = Instant::now();
    let pusher = push_all(push, topic, body);
    let mut m = zmq::Message::new();
    (0..N * 2).for_each(|_| sub.recv(&mut m, 0).unwrap());
    let took = start.elapsed();
    drop(pusher.join().unwrap());
    forwarder.join().unwrap();
    took
}

/// A connected PUSH -> PULL pair, and the frames of a typical message.
fn push_pull() -> (zmq::Context, zmq::Socket, zmq::Socket, Vec<u8>, Vec<u8>) {
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&pull.get_last_endpoint().unwrap().unwrap()).unwrap();
    let (mut topic, mut body) = (Vec::new(), Vec::new());
    wire::encode("p", 1, &typical(), &mut topic, &mut body);
    (ctx, pull, push, topic, body)
}

/// Pushes N messages from a thread of its own.
fn push_all(push: zmq::Socket, topic: Vec<u8>, body: Vec<u8>) -> std::thread::JoinHandle<zmq::Socket> {
    std::thread::spawn(move || {
        for _ in 0..N {
            push.send(&topic[..], zmq::SNDMORE).unwrap();
            push.send(&body[..], 0).unwrap();
        }
        push
    })
}

fn raw_push_pull() -> Duration {
    let (_ctx, pull, push, topic, body) = push_pull();
    let start = Instant::now();
    let pusher = push_all(push, topic, body);
    let mut m = zmq::Message::new();
    (0..N * 2).for_each(|_| pull.recv(&mut m, 0).unwrap());
    let took = start.elapsed();
    drop(pusher.join().unwrap());
    took
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).throughput(Throughput::Elements(N as u64));
    g.bench_function("publisher -> manager -> subscriber", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| ours()).sum())
    });
    g.bench_function("ceiling: raw PUSH -> PULL -> PUB -> SUB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw_forwarded()).sum())
    });
    g.bench_function("ceiling: raw PUSH -> PULL", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw_push_pull()).sum())
    });
    g.finish();
}

criterion_group!(benches, codec, pipeline);
criterion_main!(benches);
