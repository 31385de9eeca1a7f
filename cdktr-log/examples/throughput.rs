//! End-to-end throughput of the bus on this machine, next to its ceiling.
//!
//! ```text
//! cargo run --release -p cdktr-log --example throughput -- [PUBLISHERS] [MESSAGES_EACH]
//! ```
//!
//! Measures, in one run on loopback:
//! - the ceiling: raw libzmq PUSH -> PULL of the same two frames, one
//!   pushing thread per publisher, nothing decoded;
//! - the bus: `LogPublisher`s -> `LogManager` -> an in-process sink that
//!   counts, every message decoded, republished on PUB and handed over;
//! - the same with acknowledged delivery (`docs/delivery.md`): publishers
//!   keep every line until acknowledged, polling a stand-in for the
//!   principal's API that acknowledges what the sink has counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdktr_log::api::{Request, Response};
use cdktr_log::{wire, ApiConfig, BusConfig, Level, LogManager, LogMessage, LogPublisher};

fn message(i: usize) -> LogMessage {
    LogMessage {
        workflow_id: "nightly-etl".into(),
        workflow_name: "Nightly ETL".into(),
        workflow_instance_id: "nightly-etl-20261127T083000-7f3a".into(),
        task_name: "extract-orders".into(),
        task_instance_id: "extract-orders-20261127T083001-19c2".into(),
        timestamp_ms: 1_795_768_200_123 + i as i64,
        level: Level::Info,
        payload: format!("extracted {i} rows from orders; next batch starts at id 7,340,112 (1.23 s)"),
    }
}

fn raw(publishers: usize, each: usize) -> Duration {
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = pull.get_last_endpoint().unwrap().unwrap();
    let (mut topic, mut body) = (Vec::new(), Vec::new());
    wire::encode("p", 1, &message(0), &mut topic, &mut body);
    let start = Instant::now();
    let pushers: Vec<_> = (0..publishers)
        .map(|_| {
            let (ctx, endpoint, topic, body) = (ctx.clone(), endpoint.clone(), topic.clone(), body.clone());
            std::thread::spawn(move || {
                let push = ctx.socket(zmq::PUSH).unwrap();
                push.connect(&endpoint).unwrap();
                for _ in 0..each {
                    push.send(&topic[..], zmq::SNDMORE).unwrap();
                    push.send(&body[..], 0).unwrap();
                }
                push.set_linger(-1).unwrap();
            })
        })
        .collect();
    let mut m = zmq::Message::new();
    for _ in 0..publishers * each * 2 {
        pull.recv(&mut m, 0).unwrap();
    }
    let elapsed = start.elapsed();
    pushers.into_iter().for_each(|p| p.join().unwrap());
    elapsed
}

type Marks = Arc<Mutex<HashMap<String, u64>>>;

/// Answers GetPublisherWatermark from `marks`, as a principal whose
/// database took every line at once would.
fn acknowledger(marks: Marks) -> ApiConfig {
    let ctx = zmq::Context::new();
    let rep = ctx.socket(zmq::REP).unwrap();
    rep.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = rep.get_last_endpoint().unwrap().unwrap();
    std::thread::spawn(move || {
        let _ctx = ctx;
        while let Ok(bytes) = rep.recv_bytes(0) {
            let reply = match Request::from_bytes(&bytes) {
                Ok(Request::GetPublisherWatermark { publisher_id, .. }) => {
                    let seq = marks.lock().unwrap().get(&publisher_id).copied().unwrap_or(0);
                    Response::Watermark {
                        publisher_id,
                        seq,
                        accepted: seq,
                    }
                }
                Ok(other) => Response::error(cdktr_log::api::ErrorKind::UnknownOp, other.op()),
                Err((kind, message)) => Response::Error { kind, message },
            };
            rep.send(reply.to_bytes(), 0).unwrap();
        }
    });
    ApiConfig {
        host: "127.0.0.1".into(),
        port: endpoint.rsplit(':').next().unwrap().parse().unwrap(),
    }
}

fn bus(publishers: usize, each: usize, acknowledged: bool) -> Duration {
    let (sink, rx) = crossbeam_channel::bounded(50_000);
    let config = BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    };
    let manager = LogManager::builder(&config).sink(sink).start().unwrap();
    let config = manager.config().clone();
    let marks: Marks = Arc::default();
    let api = acknowledged.then(|| acknowledger(marks.clone()));
    let spool = std::env::temp_dir().join(format!("cdktr-throughput-spool-{}", std::process::id()));
    let messages: Vec<LogMessage> = (0..each).map(message).collect();
    let start = Instant::now();
    let threads: Vec<_> = (0..publishers)
        .map(|_| {
            let (config, messages, api, spool) = (config.clone(), messages.clone(), api.clone(), spool.clone());
            std::thread::spawn(move || {
                let mut builder = LogPublisher::builder(&config).shutdown_timeout(Duration::from_secs(120));
                if let Some(api) = &api {
                    builder = builder.acknowledged_by(api).spool_dir(spool);
                }
                let publisher = builder.start().unwrap();
                for m in messages {
                    publisher.publish(m).unwrap();
                }
                publisher.shutdown().unwrap()
            })
        })
        .collect();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for n in 0..publishers * each {
        let Ok(env) = rx.recv_timeout(Duration::from_secs(30)) else {
            let stats: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            panic!(
                "stalled after {n} messages; manager {:?}; publishers {stats:?}",
                manager.stats()
            );
        };
        if acknowledged {
            match seen.get_mut(env.publisher_id()) {
                Some(mark) => *mark = (*mark).max(env.seq),
                None => {
                    seen.insert(env.publisher_id().to_owned(), env.seq);
                }
            }
            if n % 4096 == 0 {
                marks.lock().unwrap().extend(seen.iter().map(|(k, v)| (k.clone(), *v)));
            }
        }
    }
    let elapsed = start.elapsed();
    marks.lock().unwrap().extend(seen);
    for t in threads {
        assert_eq!(t.join().unwrap().dropped, 0);
    }
    let stats = manager.shutdown().unwrap();
    assert_eq!(stats.forwarded, (publishers * each) as u64);
    let _ = std::fs::remove_dir_all(&spool);
    elapsed
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("numbers"));
    let publishers = args.next().unwrap_or(4);
    let each = args.next().unwrap_or(250_000);
    let n = (publishers * each) as f64;
    let ceiling = raw(publishers, each);
    let ours = bus(publishers, each, false);
    let acked = bus(publishers, each, true);
    let rate = |d: Duration| n / d.as_secs_f64();
    println!(
        "{publishers} publishers x {each}: raw libzmq PUSH->PULL {:.0} msgs/s; bus publish->manager->sink {:.0} msgs/s ({:.0}% of raw); \
         acknowledged {:.0} msgs/s ({:.0}% of best effort)",
        rate(ceiling),
        rate(ours),
        100.0 * rate(ours) / rate(ceiling),
        rate(acked),
        100.0 * rate(acked) / rate(ours)
    );
}
