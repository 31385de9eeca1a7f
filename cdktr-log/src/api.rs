//! The principal's request/reply API: the protocol and a client.
//!
//! One request, one reply, each a single MessagePack map (`docs/api.md`
//! specifies the bytes for callers in other languages). Requests name their
//! operation in `"op"`, replies their kind in `"reply"`. A request the
//! principal cannot serve gets a [`Response::Error`], never silence.
//!
//! ```no_run
//! use cdktr_log::api::ApiClient;
//! use cdktr_log::config::ApiConfig;
//! use cdktr_log::query::LogQuery;
//!
//! let mut client = ApiClient::connect(&ApiConfig::from_env()?)?;
//! let page = client.query_logs(&LogQuery { workflow_id: Some("etl".into()), ..LogQuery::default() })?;
//! for line in &page.lines {
//!     println!("{}", line.display());
//! }
//! # Ok::<(), cdktr_log::Error>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ApiConfig;
use crate::error::{Error, Result};
use crate::query::{LogPage, LogQuery};
use crate::status::{RecentWorkflows, RunStatus, StatusChange, WorkflowRun};
use crate::wire::Watermark;

/// The protocol version a principal reports in [`Response::Pong`].
pub const API_VERSION: u32 = 1;
/// Largest request the principal reads; a larger one closes the connection.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most log lines in one [`Response::Logs`] page, whatever the query's
/// limit.
pub const MAX_PAGE_LINES: usize = 10_000;
/// A page stops adding lines once it holds this many bytes of text (it
/// always holds at least one line).
pub const MAX_PAGE_BYTES: usize = 8 << 20;
/// How long [`ApiClient`] waits for a reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the principal. On the wire: a map whose `"op"` is the
/// variant's name, with the variant's fields beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Request {
    /// Is the principal there? Replies [`Response::Pong`].
    Ping {},
    /// One page of stored logs; replies [`Response::Logs`]. The query's
    /// `limit` is the page size (at most [`MAX_PAGE_LINES`]); pass the
    /// reply's `next` as the query's `after` for the following page.
    QueryLogs {
        /// The query.
        query: LogQuery,
    },
    /// How many stored lines a query matches (its limit, order and `after`
    /// aside); replies [`Response::Count`].
    CountLogs {
        /// The query.
        query: LogQuery,
    },
    /// The most recently active workflow instances; replies
    /// [`Response::Workflows`]. The filter's fields sit beside `"op"`.
    GetRecentWorkflowStatuses(RecentWorkflows),
    /// Every status change of one instance and its tasks; replies
    /// [`Response::Timeline`].
    GetWorkflowTimeline {
        /// The instance.
        workflow_instance_id: String,
    },
    /// An agent records a workflow instance's status; replies
    /// [`Response::Accepted`] once it is in the database.
    WorkflowStatusUpdate {
        /// The workflow definition.
        workflow_id: String,
        /// The instance.
        workflow_instance_id: String,
        /// The new status.
        status: RunStatus,
        /// When it changed (ms since the epoch); the principal's clock if
        /// absent.
        #[serde(default)]
        timestamp_ms: Option<i64>,
    },
    /// An agent records a task instance's status; replies
    /// [`Response::Accepted`] once it is in the database.
    TaskStatusUpdate {
        /// The task's id in the workflow definition.
        task_id: String,
        /// The task instance.
        task_instance_id: String,
        /// The workflow instance it belongs to.
        workflow_instance_id: String,
        /// The new status.
        status: RunStatus,
        /// When it changed (ms since the epoch); the principal's clock if
        /// absent.
        #[serde(default)]
        timestamp_ms: Option<i64>,
    },
    /// An agent is alive and running these workflow instances; replies
    /// [`Response::Accepted`]. An agent silent for the heartbeat timeout
    /// has each instance still unfinished marked CRASHED.
    Heartbeat {
        /// The agent, unique among live agents.
        agent_id: String,
        /// The workflow instance ids it is running.
        #[serde(default)]
        running: Vec<String>,
    },
    /// The highest sequence number of a publisher that is safely in the
    /// database; replies [`Response::Watermark`].
    GetPublisherWatermark {
        /// The publisher.
        publisher_id: String,
        /// Write what is pending now rather than at the next flush
        /// interval: the publisher is waiting on it (shutting down, or at
        /// its memory cap). Default false.
        #[serde(default)]
        flush: bool,
    },
    /// Every counter of the principal; replies [`Response::Stats`].
    Stats {},
}

impl Request {
    /// The operation's name, as in `"op"`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping {} => "Ping",
            Request::QueryLogs { .. } => "QueryLogs",
            Request::CountLogs { .. } => "CountLogs",
            Request::GetRecentWorkflowStatuses(_) => "GetRecentWorkflowStatuses",
            Request::GetWorkflowTimeline { .. } => "GetWorkflowTimeline",
            Request::WorkflowStatusUpdate { .. } => "WorkflowStatusUpdate",
            Request::TaskStatusUpdate { .. } => "TaskStatusUpdate",
            Request::Heartbeat { .. } => "Heartbeat",
            Request::GetPublisherWatermark { .. } => "GetPublisherWatermark",
            Request::Stats {} => "Stats",
        }
    }

    /// Every operation's name.
    pub const OPS: [&'static str; 10] = [
        "Ping",
        "QueryLogs",
        "CountLogs",
        "GetRecentWorkflowStatuses",
        "GetWorkflowTimeline",
        "WorkflowStatusUpdate",
        "TaskStatusUpdate",
        "Heartbeat",
        "GetPublisherWatermark",
        "Stats",
    ];

    /// The request as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a Request always serializes")
    }

    /// Reads a request, saying precisely what is wrong with a bad one: the
    /// error is the kind and message of the [`Response::Error`] to send back.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Request, (ErrorKind, String)> {
        #[derive(Deserialize)]
        struct Op {
            op: String,
        }
        let op = match rmp_serde::from_slice::<Op>(bytes) {
            Ok(o) => o.op,
            Err(e) => {
                return Err((
                    ErrorKind::Malformed,
                    format!("expected a MessagePack map with an \"op\" string: {e}"),
                ))
            }
        };
        if !Request::OPS.contains(&op.as_str()) {
            return Err((
                ErrorKind::UnknownOp,
                format!("unknown op {op:?}; known: {}", Request::OPS.join(", ")),
            ));
        }
        rmp_serde::from_slice(bytes).map_err(|e| (ErrorKind::Invalid, format!("{op}: {e}")))
    }
}

/// Why the principal refused a request. On the wire: the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not one MessagePack map with an `"op"` string.
    Malformed,
    /// An `"op"` this principal does not know.
    UnknownOp,
    /// A known op with missing, unknown or ill-typed fields, or a query
    /// that cannot be answered as stated.
    Invalid,
    /// Too many requests are waiting; retry later.
    Busy,
    /// The database failed; the request may succeed if retried.
    Database,
    /// The principal is shutting down.
    ShuttingDown,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::UnknownOp => "unknown_op",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Busy => "busy",
            ErrorKind::Database => "database",
            ErrorKind::ShuttingDown => "shutting_down",
        })
    }
}

/// Every counter of a principal, as [`Request::Stats`] returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrincipalStats {
    /// Log messages received from publishers.
    pub received: u64,
    /// Log messages republished to subscribers.
    pub forwarded: u64,
    /// Re-sent log messages given to the store but not republished.
    pub replayed: u64,
    /// Malformed log messages dropped.
    pub rejected: u64,
    /// Log lines written to the database.
    pub persisted: u64,
    /// Log lines received but not written yet.
    pub pending: u64,
    /// Re-sent log lines dropped because they were already taken.
    pub duplicates: u64,
    /// Lines of replaying publishers dropped after a gap, awaiting the
    /// re-send.
    pub gaps: u64,
    /// Lines shed while writes failed and the persister was full.
    pub shed: u64,
    /// Batch writes that failed (and were kept for retry).
    pub failed_flushes: u64,
    /// Batch writes that succeeded.
    pub batches: u64,
    /// Agents whose heartbeats are current.
    pub live_agents: u64,
    /// CRASHED rows written for silent agents' instances.
    pub crashed: u64,
    /// API requests served.
    pub requests: u64,
    /// API requests answered with an error.
    pub request_errors: u64,
    /// Milliseconds since the principal started.
    pub uptime_ms: u64,
    /// The principal's resident memory now, in bytes (0 where unknown).
    pub rss_bytes: u64,
    /// The most resident memory the principal has used, in bytes.
    pub peak_rss_bytes: u64,
}

/// A reply from the principal. On the wire: a map whose `"reply"` is the
/// variant's name, with the variant's fields beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply")]
pub enum Response {
    /// To [`Request::Ping`].
    Pong {
        /// [`API_VERSION`] of the principal.
        api: u32,
        /// The principal's crate version.
        version: String,
    },
    /// To [`Request::QueryLogs`]: `lines` and `next` beside `"reply"`.
    Logs(LogPage),
    /// To [`Request::CountLogs`].
    Count {
        /// Lines matched.
        count: u64,
    },
    /// To [`Request::GetRecentWorkflowStatuses`], newest first.
    Workflows {
        /// The instances.
        runs: Vec<WorkflowRun>,
    },
    /// To [`Request::GetWorkflowTimeline`], in time order.
    Timeline {
        /// The changes; empty for an unknown instance.
        changes: Vec<StatusChange>,
    },
    /// To a status update or heartbeat: recorded.
    Accepted,
    /// To [`Request::GetPublisherWatermark`].
    Watermark {
        /// The publisher asked about.
        publisher_id: String,
        /// Its highest persisted sequence number; 0 when none is.
        seq: u64,
        /// Its highest sequence number received and kept, persisted or not.
        #[serde(default)]
        accepted: u64,
    },
    /// To [`Request::Stats`].
    Stats(PrincipalStats),
    /// The request was refused.
    Error {
        /// Why, as a machine-readable kind.
        kind: ErrorKind,
        /// Why, for people.
        message: String,
    },
}

impl Response {
    /// An error reply.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }

    /// The reply as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a Response always serializes")
    }

    /// Reads a reply.
    ///
    /// # Errors
    /// [`Error::Reply`] for bytes that are not a reply.
    pub fn from_bytes(bytes: &[u8]) -> Result<Response> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::Reply(e.to_string()))
    }
}

/// A connection to the principal's API. Each call waits at most the
/// timeout; a principal that is down is an [`Error::Timeout`], never a hang,
/// and the client stays usable for the next call.
pub struct ApiClient {
    socket: zmq::Socket,
    endpoint: String,
    timeout: Duration,
    // The socket must be dropped before its context.
    _context: zmq::Context,
}

impl ApiClient {
    /// Connects to `config`'s endpoint (lazily: nothing is sent yet) with
    /// [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Connect`] for a malformed host; [`Error::Zmq`].
    pub fn connect(config: &ApiConfig) -> Result<ApiClient> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).map_err(Error::zmq("create the API socket"))?;
        // A timed-out request must not wedge the REQ state machine: relaxed
        // lets the next request go out, correlate drops the late reply.
        socket
            .set_req_relaxed(true)
            .map_err(Error::zmq("configure the API socket"))?;
        socket
            .set_req_correlate(true)
            .map_err(Error::zmq("configure the API socket"))?;
        socket.set_linger(0).map_err(Error::zmq("configure the API socket"))?;
        let endpoint = config.endpoint();
        socket.connect(&endpoint).map_err(|source| Error::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        Ok(ApiClient {
            socket,
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            _context: context,
        })
    }

    /// How long each call waits for its reply.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    /// Sends a request and waits for its reply, whatever it is (an error
    /// reply is returned as [`Response::Error`]).
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Reply`] for undecodable bytes;
    /// [`Error::Zmq`].
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        let timeout_ms = self.timeout.as_millis().min(i32::MAX as u128) as i32;
        self.socket
            .set_sndtimeo(timeout_ms)
            .and_then(|()| self.socket.set_rcvtimeo(timeout_ms))
            .map_err(Error::zmq("configure the API socket"))?;
        let timeout = || Error::Timeout {
            endpoint: self.endpoint.clone(),
            after: self.timeout,
        };
        match self.socket.send(request.to_bytes(), 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Err(timeout()),
            Err(e) => {
                return Err(Error::Zmq {
                    op: "send a request",
                    source: e,
                })
            }
        }
        match self.socket.recv_bytes(0) {
            Ok(bytes) => Response::from_bytes(&bytes),
            Err(zmq::Error::EAGAIN) => Err(timeout()),
            Err(e) => Err(Error::Zmq {
                op: "receive a reply",
                source: e,
            }),
        }
    }

    fn expect<T>(&mut self, request: &Request, pick: impl FnOnce(Response) -> Option<T>) -> Result<T> {
        match self.call(request)? {
            Response::Error { kind, message } => Err(Error::Api { kind, message }),
            other => {
                let name = format!("{other:?}");
                pick(other).ok_or_else(|| Error::Reply(format!("{} answered with {name:.60}", request.op())))
            }
        }
    }

    /// The principal's API version and crate version.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] for an error reply.
    pub fn ping(&mut self) -> Result<(u32, String)> {
        self.expect(&Request::Ping {}, |r| match r {
            Response::Pong { api, version } => Some((api, version)),
            _ => None,
        })
    }

    /// One page of stored logs (see [`Request::QueryLogs`]).
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] for an invalid query.
    pub fn query_logs(&mut self, query: &LogQuery) -> Result<LogPage> {
        let request = Request::QueryLogs { query: query.clone() };
        self.expect(&request, |r| match r {
            Response::Logs(page) => Some(page),
            _ => None,
        })
    }

    /// How many stored lines `query` matches.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] for an invalid query.
    pub fn count_logs(&mut self, query: &LogQuery) -> Result<u64> {
        let request = Request::CountLogs { query: query.clone() };
        self.expect(&request, |r| match r {
            Response::Count { count } => Some(count),
            _ => None,
        })
    }

    /// The most recently active workflow instances.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn recent_workflows(&mut self, filter: &RecentWorkflows) -> Result<Vec<WorkflowRun>> {
        self.expect(&Request::GetRecentWorkflowStatuses(filter.clone()), |r| match r {
            Response::Workflows { runs } => Some(runs),
            _ => None,
        })
    }

    /// One instance's status changes, its tasks' included.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn timeline(&mut self, workflow_instance_id: &str) -> Result<Vec<StatusChange>> {
        let request = Request::GetWorkflowTimeline {
            workflow_instance_id: workflow_instance_id.into(),
        };
        self.expect(&request, |r| match r {
            Response::Timeline { changes } => Some(changes),
            _ => None,
        })
    }

    /// Sends a status update or heartbeat and waits until it is recorded.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn send(&mut self, update: &Request) -> Result<()> {
        self.expect(update, |r| matches!(r, Response::Accepted).then_some(()))
    }

    /// How far a publisher's stream has come (zeros for one never seen).
    /// With `flush`, the principal also writes what it holds of it now.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn watermark(&mut self, publisher_id: &str) -> Result<Watermark> {
        self.watermark_flushing(publisher_id, false)
    }

    /// As [`watermark`](Self::watermark), asking the principal to write
    /// what it holds of this publisher now when `flush` is set.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn watermark_flushing(&mut self, publisher_id: &str, flush: bool) -> Result<Watermark> {
        let request = Request::GetPublisherWatermark {
            publisher_id: publisher_id.into(),
            flush,
        };
        self.expect(&request, |r| match r {
            Response::Watermark { seq, accepted, .. } => Some(Watermark {
                persisted: seq,
                accepted,
            }),
            _ => None,
        })
    }

    /// Every counter of the principal.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn stats(&mut self) -> Result<PrincipalStats> {
        self.expect(&Request::Stats {}, |r| match r {
            Response::Stats(s) => Some(s),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec_named(&v).unwrap()
    }

    #[test]
    fn requests_round_trip_and_read_as_documented() {
        let all = [
            Request::Ping {},
            Request::QueryLogs {
                query: LogQuery::default(),
            },
            Request::CountLogs {
                query: LogQuery::default(),
            },
            Request::GetRecentWorkflowStatuses(RecentWorkflows::default()),
            Request::GetWorkflowTimeline {
                workflow_instance_id: "i".into(),
            },
            Request::WorkflowStatusUpdate {
                workflow_id: "w".into(),
                workflow_instance_id: "i".into(),
                status: RunStatus::Running,
                timestamp_ms: Some(5),
            },
            Request::TaskStatusUpdate {
                task_id: "t".into(),
                task_instance_id: "ti".into(),
                workflow_instance_id: "i".into(),
                status: RunStatus::Failed,
                timestamp_ms: None,
            },
            Request::Heartbeat {
                agent_id: "a".into(),
                running: vec!["i".into()],
            },
            Request::GetPublisherWatermark {
                publisher_id: "p".into(),
                flush: true,
            },
            Request::Stats {},
        ];
        assert_eq!(all.len(), Request::OPS.len());
        for r in all {
            assert_eq!(Request::from_bytes(&r.to_bytes()), Ok(r.clone()));
            assert!(Request::OPS.contains(&r.op()));
        }
        // What docs/api.md shows a caller in another language writing.
        assert_eq!(Request::from_bytes(&bytes(json!({"op": "Ping"}))), Ok(Request::Ping {}));
        assert_eq!(
            Request::from_bytes(&bytes(
                json!({"op": "GetRecentWorkflowStatuses", "limit": 5, "status": "RUNNING"})
            )),
            Ok(Request::GetRecentWorkflowStatuses(RecentWorkflows {
                limit: 5,
                workflow_id: None,
                status: Some(RunStatus::Running)
            }))
        );
        assert_eq!(
            Request::from_bytes(&bytes(json!({"op": "Heartbeat", "agent_id": "a"}))),
            Ok(Request::Heartbeat {
                agent_id: "a".into(),
                running: vec![]
            })
        );
    }

    #[test]
    fn bad_requests_get_the_right_error_kind() {
        let kind = |b: &[u8]| match Request::from_bytes(b) {
            Err((kind, message)) => {
                assert!(!message.is_empty());
                kind
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(b""), ErrorKind::Malformed);
        assert_eq!(kind(b"\xc1\xff\x00garbage"), ErrorKind::Malformed);
        assert_eq!(kind(&bytes(json!([1, 2, 3]))), ErrorKind::Malformed);
        assert_eq!(kind(&bytes(json!({"op": 7}))), ErrorKind::Malformed);
        assert_eq!(kind(&bytes(json!({"op": "DropTables"}))), ErrorKind::UnknownOp);
        assert_eq!(
            kind(&bytes(json!({"op": "GetWorkflowTimeline", "workflow_instance_id": 5}))),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(&bytes(
                json!({"op": "WorkflowStatusUpdate", "workflow_id": "w", "workflow_instance_id": "i", "status": "DONE"})
            )),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(&bytes(json!({"op": "QueryLogs", "query": {"workflow": "w"}}))),
            ErrorKind::Invalid
        );
        assert_eq!(kind(&bytes(json!({"op": "Ping", "extra": 1}))), ErrorKind::Invalid);
    }

    #[test]
    fn replies_round_trip() {
        let all = [
            Response::Pong {
                api: API_VERSION,
                version: "0.1.0".into(),
            },
            Response::Logs(LogPage::default()),
            Response::Count { count: 7 },
            Response::Workflows { runs: vec![] },
            Response::Timeline {
                changes: vec![StatusChange {
                    task: Some(("t".into(), "ti".into())),
                    status: RunStatus::Crashed,
                    timestamp_ms: 3,
                }],
            },
            Response::Accepted,
            Response::Watermark {
                publisher_id: "p".into(),
                seq: u64::MAX,
                accepted: 3,
            },
            Response::Stats(PrincipalStats::default()),
            Response::error(ErrorKind::Busy, "later"),
        ];
        for r in all {
            assert_eq!(Response::from_bytes(&r.to_bytes()).unwrap(), r);
        }
        assert!(matches!(Response::from_bytes(b"\x01"), Err(Error::Reply(_))));
    }
}
