//! The API server: one ROUTER socket, read and answered by one thread,
//! with queries handed to a pool so that a slow query never delays an
//! agent's status update or heartbeat.
//!
//! The API thread answers the quick requests itself (ping, status updates,
//! heartbeats, watermarks, stats) and sweeps for silent agents. Queries go
//! to the query pool ([`crate::queries`]); their replies come back over an
//! inproc socket that the API thread polls alongside the ROUTER.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdktr_log::api::{ErrorKind, PrincipalStats, Request, Response, API_VERSION, MAX_REQUEST_BYTES};
use cdktr_log::curve::{Authorizer, Endpoint, ZapHandler};
use cdktr_log::{ApiConfig, LogManager};
use cdktr_store::{Persister, Store};

use crate::liveness::Liveness;
use crate::queries::{Job, Pool, PoolParts};

mod stats;
use crate::security::permits;
use crate::{Error, Result};
use stats::snapshot;
pub(crate) use stats::Counters;

/// How often the API thread looks at its stop flag and for silent agents.
const TICK: Duration = Duration::from_millis(50);
const REPLIES: &str = "inproc://cdktr-api-replies";

/// What the server needs from the rest of the principal.
pub(crate) struct Parts {
    pub api: ApiConfig,
    pub store: Store,
    pub manager: Arc<LogManager>,
    pub persister: Arc<Persister>,
    pub heartbeat_timeout: Duration,
    pub query_workers: usize,
    pub query_timeout: Duration,
    #[cfg(feature = "testing")]
    pub query_delay: Duration,
    pub authorizer: Option<Authorizer>,
}

/// The running server; [`stop`](Self::stop) answers what it has taken and
/// joins every thread.
pub(crate) struct Server {
    endpoint: String,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Server {
    pub fn start(parts: Parts) -> Result<Server> {
        let zmq_err = |op: &'static str| move |source| Error::ApiSocket { op, source };
        let context = zmq::Context::new();
        // Serving before the socket binds: libzmq lets every client in
        // while no handler answers.
        let zap = parts.authorizer.as_ref().map(|a| a.serve(&context)).transpose()?;
        let router = context.socket(zmq::ROUTER).map_err(zmq_err("create the API socket"))?;
        if let Some(auth) = &parts.authorizer {
            auth.apply(&router, Endpoint::Api)?;
        }
        router
            .set_maxmsgsize(MAX_REQUEST_BYTES as i64)
            .and_then(|()| router.set_linger(0))
            // A client that went away must not stall the thread.
            .and_then(|()| router.set_router_mandatory(false))
            .and_then(|()| router.set_sndtimeo(0))
            .map_err(zmq_err("configure the API socket"))?;
        let wanted = parts.api.endpoint();
        router.bind(&wanted).map_err(|source| Error::ApiBind {
            endpoint: wanted.clone(),
            source,
        })?;
        let endpoint = router
            .get_last_endpoint()
            .map_err(zmq_err("read the API endpoint"))?
            .unwrap_or(wanted);
        let replies = context.socket(zmq::PULL).map_err(zmq_err("create the reply socket"))?;
        // Each server has its own context, so the inproc name is private.
        replies.bind(REPLIES).map_err(zmq_err("bind the reply socket"))?;

        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        if let Some(auth) = &parts.authorizer {
            let _ = counters.authorizer.set(auth.clone());
        }
        let started = Instant::now();
        let mut threads = Vec::new();
        let pool = Pool::start(
            PoolParts {
                store: &parts.store,
                persister: parts.persister.clone(),
                counters: counters.clone(),
                context: &context,
                replies: REPLIES,
                long_workers: parts.query_workers,
                time_limit: parts.query_timeout,
                stop: stop.clone(),
                #[cfg(feature = "testing")]
                delay: parts.query_delay,
            },
            &mut threads,
        )?;
        let orphans = parts.store.unfinished_workflows()?;
        let api = ApiThread {
            router,
            replies,
            pool: Some(pool),
            store: parts.store,
            manager: parts.manager,
            persister: parts.persister,
            liveness: Liveness::new(parts.heartbeat_timeout, orphans, started),
            stop: stop.clone(),
            counters: counters.clone(),
            started,
            authorizer: parts.authorizer,
            _zap: zap,
            _context: context,
        };
        threads.push(spawn("cdktr-api", move || api.run())?);
        Ok(Server {
            endpoint,
            stop,
            counters,
            threads,
            started,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every counter of the principal.
    pub fn stats(&self, manager: &LogManager, persister: &Persister, store: &Store) -> PrincipalStats {
        snapshot(manager, persister, store, &self.counters, self.started)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| Error::Spawn {
            name: name.into(),
            source,
        })
}

struct ApiThread {
    router: zmq::Socket,
    replies: zmq::Socket,
    pool: Option<Pool>,
    store: Store,
    manager: Arc<LogManager>,
    persister: Arc<Persister>,
    liveness: Liveness,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    started: Instant,
    authorizer: Option<Authorizer>,
    /// Dropped after the router (fields drop in order).
    _zap: Option<ZapHandler>,
    _context: zmq::Context,
}

impl ApiThread {
    fn run(mut self) {
        let mut next_sweep = Instant::now();
        while !self.stop.load(Relaxed) {
            let mut items = [
                self.router.as_poll_item(zmq::POLLIN),
                self.replies.as_poll_item(zmq::POLLIN),
            ];
            if let Err(e) = zmq::poll(&mut items, TICK.as_millis() as i64) {
                log::error!("api: poll failed: {e}");
                std::thread::sleep(TICK);
            }
            // Replies first: they free the clients that waited longest.
            while self.forward_reply() {}
            // A bounded number per round, so that replies keep flowing.
            for _ in 0..256 {
                match self.recv() {
                    Some((frames, user)) => self.handle(frames, user),
                    None => break,
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.liveness.sweep(&self.store, now, cdktr_log::message::now_ms());
                self.publish_liveness();
                next_sweep = now + Duration::from_millis(100);
            }
        }
        // Answer the queries already taken before the workers go.
        self.pool = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.replies.poll(zmq::POLLIN, 100) {
                Ok(n) if n > 0 => while self.forward_reply() {},
                // Only the server and this thread hold the counters once
                // every worker has finished.
                _ if Arc::strong_count(&self.counters) <= 2 => break,
                _ => {}
            }
        }
    }

    fn publish_liveness(&self) {
        let c = &self.counters;
        c.crashed.store(self.liveness.crashed, Relaxed);
        c.live_agents.store(self.liveness.live_agents() as u64, Relaxed);
    }

    /// Hands one worker's reply to its client, frame by frame as ZeroMQ
    /// holds them (a page is not copied); false when none was waiting.
    fn forward_reply(&self) -> bool {
        let (mut flags, mut sending) = (zmq::DONTWAIT, true);
        loop {
            let mut frame = zmq::Message::new();
            if self.replies.recv(&mut frame, flags).is_err() {
                // Only the first frame can be missing: a message's frames
                // arrive together.
                return false;
            }
            flags = 0;
            let more = frame.get_more();
            if sending {
                let send = self
                    .router
                    .send(frame, zmq::DONTWAIT | if more { zmq::SNDMORE } else { 0 });
                if let Err(e) = send {
                    // The client went away or stopped reading: its loss
                    // alone; the rest of its frames are read and dropped.
                    log::debug!("api: reply not sent: {e}");
                    sending = false;
                }
            }
            if !more {
                return true;
            }
        }
    }

    fn send(&self, frames: Vec<Vec<u8>>) {
        if let Err(e) = self.router.send_multipart(frames, zmq::DONTWAIT) {
            // The client went away or stopped reading: its loss alone.
            log::debug!("api: reply not sent: {e}");
        }
    }

    fn reply(&self, mut envelope: Vec<Vec<u8>>, response: &Response) {
        self.counters.count(matches!(response, Response::Error { .. }));
        envelope.push(response.to_bytes());
        self.send(envelope);
    }

    /// A request's frames and, with CURVE, the `User-Id` the ZAP handler
    /// gave its connection (the key's name).
    fn recv(&self) -> Option<(Vec<Vec<u8>>, Option<String>)> {
        if self.authorizer.is_none() {
            return self.router.recv_multipart(zmq::DONTWAIT).ok().map(|f| (f, None));
        }
        let (mut frames, mut user) = (Vec::new(), None);
        loop {
            let mut msg = zmq::Message::new();
            let flags = if frames.is_empty() { zmq::DONTWAIT } else { 0 };
            self.router.recv(&mut msg, flags).ok()?;
            if user.is_none() {
                user = msg.gets("User-Id").map(str::to_owned);
            }
            let more = msg.get_more();
            frames.push(msg.to_vec());
            if !more {
                return Some((frames, user));
            }
        }
    }

    /// `None` when the caller may make `request`; else the refusal.
    fn refusal(&self, user: Option<&str>, request: &Request) -> Option<Response> {
        let auth = self.authorizer.as_ref()?;
        let user = user.unwrap_or("");
        let why = match auth.role_of(user) {
            Some(role) if permits(role, request) => return None,
            Some(role) => format!("role {} may not {}", role.as_str(), request.op()),
            None => format!("key {user:?} is no longer authorized"),
        };
        auth.refuse(user, &why);
        Some(Response::error(ErrorKind::Forbidden, why))
    }

    fn handle(&mut self, mut frames: Vec<Vec<u8>>, user: Option<String>) {
        // [identity, routing..., empty, body]: REQ (and DEALER emulating it)
        // put an empty frame before the body; everything before it is
        // echoed back so that the reply finds its way.
        let Some(delimiter) = frames.iter().skip(1).position(Vec::is_empty).map(|i| i + 1) else {
            let envelope = vec![frames.swap_remove(0), Vec::new()];
            let message = "expected an empty delimiter frame then one body frame (use a REQ socket)";
            return self.reply(envelope, &Response::error(ErrorKind::Malformed, message));
        };
        let body: Vec<Vec<u8>> = frames.split_off(delimiter + 1);
        let envelope = frames;
        if body.len() != 1 {
            let message = format!("expected one body frame, got {}", body.len());
            return self.reply(envelope, &Response::error(ErrorKind::Malformed, message));
        }
        let request = match Request::from_bytes(&body[0]) {
            Ok(r) => r,
            Err((kind, message)) => return self.reply(envelope, &Response::Error { kind, message }),
        };
        if let Some(refused) = self.refusal(user.as_deref(), &request) {
            return self.reply(envelope, &refused);
        }
        let response = match request {
            Request::QueryLogs { .. }
            | Request::Snapshot { .. }
            | Request::CountLogs { .. }
            | Request::Sql { .. }
            | Request::GetRecentWorkflowStatuses(_)
            | Request::GetWorkflowTimeline { .. } => {
                return self.dispatch(Job { envelope, request });
            }
            Request::Ping {} => Response::Pong {
                api: API_VERSION,
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::Stats {} => {
                self.publish_liveness();
                Response::Stats(snapshot(
                    &self.manager,
                    &self.persister,
                    &self.store,
                    &self.counters,
                    self.started,
                ))
            }
            Request::GetPublisherWatermark { publisher_id, flush } => {
                let w = self.persister.watermark(&publisher_id);
                if flush && w.accepted > w.persisted {
                    self.persister.flush_soon();
                }
                Response::Watermark {
                    publisher_id,
                    seq: w.persisted,
                    accepted: w.accepted,
                }
            }
            Request::DeclareLost {
                publisher_id,
                first,
                last,
            } => {
                if first == 0 || last < first {
                    let message = format!("DeclareLost: need 1 <= first <= last, got {first}..={last}");
                    Response::error(ErrorKind::Invalid, message)
                } else {
                    self.persister.declare_lost(publisher_id, first, last);
                    Response::Accepted
                }
            }
            Request::Heartbeat { agent_id, running } => {
                self.counters.heartbeats.fetch_add(1, Relaxed);
                self.liveness.heartbeat(agent_id, running, Instant::now());
                Response::Accepted
            }
            Request::WorkflowStatusUpdate {
                workflow_id,
                workflow_instance_id,
                status,
                timestamp_ms,
            } => self.written(self.store.record_workflow_status(
                &workflow_id,
                &workflow_instance_id,
                status,
                timestamp_ms.unwrap_or_else(cdktr_log::message::now_ms),
            )),
            Request::TaskStatusUpdate {
                task_id,
                task_instance_id,
                workflow_instance_id,
                status,
                timestamp_ms,
            } => self.written(self.store.record_task_status(
                &task_id,
                &task_instance_id,
                &workflow_instance_id,
                status,
                timestamp_ms.unwrap_or_else(cdktr_log::message::now_ms),
            )),
        };
        self.reply(envelope, &response);
    }

    /// The reply to a status update. A refused one is retried by its
    /// sender; a database DuckDB invalidated is opened again first, so that
    /// the retry can succeed.
    fn written(&self, result: cdktr_store::Result<()>) -> Response {
        match result {
            Ok(()) => Response::Accepted,
            Err(e) => {
                if let Err(why) = self.store.recover() {
                    log::error!("principal: the database is invalidated and cannot be reopened yet: {why}");
                }
                Response::error(ErrorKind::Database, e.to_string())
            }
        }
    }

    fn dispatch(&self, job: Job) {
        let Some(pool) = &self.pool else {
            return;
        };
        pool.dispatch(job, |envelope, response| self.reply(envelope, &response));
    }
}
