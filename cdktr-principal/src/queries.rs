//! The query pool: queries run on worker threads, each with its own DuckDB
//! connection, in two lanes, so that the short requests an operator waits
//! on (recent runs, a run's timeline, one instance's line count) never
//! queue behind long log queries. Every query has a time limit (DuckDB's
//! interrupt), and a request that would wait longer than a client's usual
//! timeout is answered `busy` at once rather than left to time out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdktr_log::api::{ErrorKind, Request, Response, MAX_PAGE_BYTES, MAX_PAGE_LINES};
use cdktr_log::sql::{MAX_SQL_BYTES, MAX_SQL_ROWS};
use cdktr_store::{PageLine, Persister, Store};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::server::{spawn, Counters};
use crate::Result;

/// Env var: the time limit of one query, in ms (default 30000).
pub const ENV_QUERY_TIMEOUT_MS: &str = "CDKTR_QUERY_TIMEOUT_MS";
/// The time limit of one query unless configured.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Queries waiting in a lane before new ones are answered `busy`.
const QUEUE: usize = 64;
/// A request expected to wait longer than this is answered `busy`: the
/// CLI's default timeout is 5 s.
const BUSY_AFTER: Duration = Duration::from_secs(4);
/// A log query sees every line the persister has held longer than this:
/// it writes them first. Younger lines wait for the next batch, so that a
/// stream of queries does not make a stream of tiny batches.
const FRESHNESS: Duration = Duration::from_millis(250);
/// The longest the watchdog sleeps (it wakes at the earliest deadline, or
/// when a query starts), so that it sees the server stop.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// The short lane's workers.
const SHORT_WORKERS: usize = 1;

/// A request on its way to a query worker, with the routing frames its
/// reply needs.
pub(crate) struct Job {
    pub envelope: Vec<Vec<u8>>,
    pub request: Request,
}

/// Which workers a query goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Bounded by one workflow instance or a row limit: answered in
    /// milliseconds.
    Short,
    /// Log queries and counts over any range.
    Long,
}

impl Lane {
    fn of(request: &Request) -> Lane {
        match request {
            Request::GetRecentWorkflowStatuses(_) | Request::GetWorkflowTimeline { .. } => Lane::Short,
            Request::CountLogs { query } if query.workflow_instance_id.is_some() => Lane::Short,
            _ => Lane::Long,
        }
    }
}

/// What the pool needs from the principal.
pub(crate) struct PoolParts<'a> {
    pub store: &'a Store,
    pub persister: Arc<Persister>,
    pub counters: Arc<Counters>,
    pub context: &'a zmq::Context,
    pub replies: &'static str,
    pub long_workers: usize,
    pub time_limit: Duration,
    pub stop: Arc<AtomicBool>,
    #[cfg(feature = "testing")]
    pub delay: Duration,
}

/// The lanes' queues; dropping the pool lets the workers finish what is
/// queued and stop.
pub(crate) struct Pool {
    short: Queue,
    long: Queue,
}

struct Queue {
    lane: Lane,
    tx: Sender<Job>,
    workers: usize,
    load: Arc<Load>,
}

/// How busy a lane is: queries running, and how long one takes (a moving
/// average, in µs).
#[derive(Default)]
struct Load {
    running: AtomicUsize,
    average_us: AtomicU64,
}

impl Load {
    fn record(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.average_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 4 + us) / 5 };
        self.average_us.store(new, Relaxed);
    }
}

impl Pool {
    /// Starts both lanes' workers and the watchdog that interrupts queries
    /// past the time limit; their threads are pushed on `threads`.
    pub fn start(parts: PoolParts<'_>, threads: &mut Vec<JoinHandle<()>>) -> Result<Pool> {
        let watch = Arc::new(Watchdog::default());
        let mut queue = |lane: Lane, workers: usize| -> Result<Queue> {
            let (tx, rx) = bounded::<Job>(QUEUE);
            let load = Arc::new(Load::default());
            for i in 0..workers {
                let push = parts
                    .context
                    .socket(zmq::PUSH)
                    .map_err(api_socket("create a worker socket"))?;
                push.connect(parts.replies)
                    .map_err(api_socket("connect a worker socket"))?;
                let worker = Worker {
                    store: parts.store.try_clone()?,
                    persister: parts.persister.clone(),
                    jobs: rx.clone(),
                    replies: push,
                    counters: parts.counters.clone(),
                    load: load.clone(),
                    watch: watch.clone(),
                    time_limit: parts.time_limit,
                    #[cfg(feature = "testing")]
                    delay: parts.delay,
                };
                let name = format!("cdktr-api-{lane:?}-{i}").to_lowercase();
                threads.push(spawn(&name, move || worker.run())?);
            }
            Ok(Queue {
                lane,
                tx,
                workers,
                load,
            })
        };
        let pool = Pool {
            short: queue(Lane::Short, SHORT_WORKERS)?,
            long: queue(Lane::Long, parts.long_workers.max(1))?,
        };
        let stop = parts.stop.clone();
        threads.push(spawn("cdktr-api-watchdog", move || watch.run(&stop))?);
        Ok(pool)
    }

    /// Queues a query on its lane, or hands its envelope to `refuse` with
    /// the `busy` reply it gets: its lane's queue is full, or the queries
    /// ahead of it would keep it waiting past a client's usual timeout.
    pub fn dispatch(&self, job: Job, refuse: impl FnOnce(Vec<Vec<u8>>, Response)) {
        let q = match Lane::of(&job.request) {
            Lane::Short => &self.short,
            Lane::Long => &self.long,
        };
        let ahead = q.tx.len() + q.load.running.load(Relaxed);
        let wait = Duration::from_micros(q.load.average_us.load(Relaxed)) * (ahead / q.workers) as u32;
        if wait > BUSY_AFTER {
            let message = format!(
                "{ahead} {:?} queries ahead, about {:.1}s of work; retry later",
                q.lane,
                wait.as_secs_f64()
            )
            .to_lowercase();
            return refuse(job.envelope, Response::error(ErrorKind::Busy, message));
        }
        match q.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                let message = format!("{QUEUE} queries are waiting; retry later");
                refuse(job.envelope, Response::error(ErrorKind::Busy, message));
            }
            Err(TrySendError::Disconnected(job)) => {
                let message = "the query workers have stopped";
                refuse(job.envelope, Response::error(ErrorKind::ShuttingDown, message));
            }
        }
    }
}

fn api_socket(op: &'static str) -> impl FnOnce(zmq::Error) -> crate::Error {
    move |source| crate::Error::ApiSocket { op, source }
}

/// Interrupts queries at their deadline.
#[derive(Default)]
struct Watchdog {
    state: Mutex<Watched>,
    started: Condvar,
}

#[derive(Default)]
struct Watched {
    running: Vec<Running>,
    /// When the watchdog wakes next (`None` while it is not waiting).
    wakes_at: Option<Instant>,
}

struct Running {
    id: u64,
    deadline: Instant,
    handle: Arc<cdktr_store::InterruptHandle>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn run(&self, stop: &AtomicBool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !stop.load(Relaxed) {
            let now = Instant::now();
            state.running.retain(|r| {
                if now < r.deadline {
                    return true;
                }
                r.fired.store(true, Relaxed);
                r.handle.interrupt();
                false
            });
            let next = state.running.iter().map(|r| r.deadline).min();
            let wait = next.map_or(WATCH_EVERY, |d| d.saturating_duration_since(now).min(WATCH_EVERY));
            state.wakes_at = Some(now + wait);
            state = self
                .started
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.wakes_at = None;
        }
    }

    fn watch(&self, r: Running) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Woken only for a deadline before its next look: a thread woken
        // per query costs each query a context switch.
        let early = state.wakes_at.is_some_and(|at| r.deadline < at);
        state.running.push(r);
        if early {
            self.started.notify_one();
        }
    }

    fn done(&self, id: u64) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .retain(|r| r.id != id);
    }
}

struct Worker {
    store: Store,
    persister: Arc<Persister>,
    jobs: Receiver<Job>,
    replies: zmq::Socket,
    counters: Arc<Counters>,
    load: Arc<Load>,
    watch: Arc<Watchdog>,
    time_limit: Duration,
    #[cfg(feature = "testing")]
    delay: Duration,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Worker {
    fn run(self) {
        for Job { mut envelope, request } in self.jobs.iter() {
            self.load.running.fetch_add(1, Relaxed);
            let start = Instant::now();
            #[cfg(feature = "testing")]
            std::thread::sleep(self.delay);
            let reply = self.answer(request);
            self.load.record(start.elapsed());
            self.load.running.fetch_sub(1, Relaxed);
            self.counters.count(reply.error);
            envelope.push(reply.bytes);
            if let Err(e) = self.replies.send_multipart(envelope, 0) {
                log::error!("api: a query worker cannot hand back its reply: {e}");
            }
        }
    }

    /// Runs one query under the time limit.
    fn answer(&self, request: Request) -> Reply {
        if matches!(
            request,
            Request::QueryLogs { .. } | Request::CountLogs { .. } | Request::Sql { .. }
        ) {
            if let Err(e) = self.persister.flush_older_than(FRESHNESS, Duration::from_secs(10)) {
                log::warn!("query: pending lines could not be written first: {e}");
            }
        }
        let id = NEXT_ID.fetch_add(1, Relaxed);
        let fired = Arc::new(AtomicBool::new(false));
        self.watch.watch(Running {
            id,
            deadline: Instant::now() + self.time_limit,
            handle: self.store.interrupt_handle(),
            fired: fired.clone(),
        });
        let result = self.query(request);
        self.watch.done(id);
        // Interrupted, a query may also end early without an error (a
        // result cut short): past its deadline, it is an error either way.
        if fired.load(Relaxed) {
            let message = format!(
                "the query ran past the principal's time limit ({:?}); narrow it (a shorter range, more \
                 filters) or raise --query-timeout",
                self.time_limit
            );
            return Response::error(ErrorKind::TimedOut, message).into();
        }
        result.unwrap_or_else(|e| {
            Reply::from(match e {
                cdktr_store::Error::InvalidQuery(m) => Response::error(ErrorKind::Invalid, m),
                e @ cdktr_store::Error::Forbidden(_) => Response::error(ErrorKind::Forbidden, e.to_string()),
                other => Response::error(ErrorKind::Database, other.to_string()),
            })
        })
    }

    fn query(&self, request: Request) -> cdktr_store::Result<Reply> {
        Ok(Reply::from(match request {
            Request::QueryLogs { mut query, layout } => {
                let limit = query.limit.unwrap_or(cdktr_log::query::DEFAULT_LIMIT);
                query.limit = Some(limit.min(MAX_PAGE_LINES));
                // Written from DuckDB's columns: owning every string of a
                // page first cost more than encoding it (issue 15).
                let page = self.store.read_page(&query, MAX_PAGE_BYTES)?;
                let lines: Vec<PageLine<'_>> = page.lines().collect();
                return Ok(Reply {
                    bytes: Response::logs_bytes(&lines, page.next(), layout),
                    error: false,
                });
            }
            Request::Snapshot { query } => {
                // Pinning writes what the manager handed over; then the
                // marks are read like any query.
                let row = self.persister.pin(self.time_limit)?;
                Response::Snapshot(self.store.snapshot(&query, row)?)
            }
            Request::Sql { sql, max_rows } => {
                let rows = max_rows.map_or(MAX_SQL_ROWS, |n| (n as usize).min(MAX_SQL_ROWS));
                Response::Rows(self.store.sql(&sql, rows, MAX_SQL_BYTES)?)
            }
            Request::CountLogs { query } => Response::Count {
                count: self.store.count_logs(&query)?,
            },
            Request::GetRecentWorkflowStatuses(filter) => {
                let limit = filter.limit.min(MAX_PAGE_LINES);
                let filter = cdktr_store::RecentWorkflows { limit, ..filter };
                Response::Workflows {
                    runs: self.store.recent_workflows(&filter)?,
                }
            }
            Request::GetWorkflowTimeline { workflow_instance_id } => Response::Timeline {
                changes: self.store.timeline(&workflow_instance_id)?,
            },
            other => Response::error(ErrorKind::Invalid, format!("{} is not a query", other.op())),
        }))
    }
}

/// A query worker's answer, as sent: a page of logs is written straight
/// from the query's result, anything else from its [`Response`].
struct Reply {
    bytes: Vec<u8>,
    error: bool,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            error: matches!(response, Response::Error { .. }),
            bytes: response.to_bytes(),
        }
    }
}
