//! [`ApiClient`]: a REQ socket speaking the protocol of [`super`].

use std::time::Duration;

use super::{Layout, PrincipalStats, Request, Response, DEFAULT_TIMEOUT, MAX_PAGE_LINES};
use crate::config::ApiConfig;
use crate::error::{Error, Result};
use crate::query::{Cursor, LogPage, LogQuery, PageLine, Snapshot};
use crate::status::{RecentWorkflows, RunStatus, StatusChange, WorkflowRun};
use crate::wire::Watermark;

/// A connection to the principal's API. Each call waits at most the
/// timeout; a principal that is down is an [`Error::Timeout`], never a hang,
/// and the client stays usable for the next call.
#[must_use = "a client does nothing until it is called"]
pub struct ApiClient {
    socket: zmq::Socket,
    endpoint: String,
    timeout: Duration,
    // The socket must be dropped before its context.
    _context: zmq::Context,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Connects to `config`'s endpoint (lazily: nothing is sent yet) with
    /// [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Connect`] for a malformed host; [`Error::Zmq`].
    pub fn connect(config: &ApiConfig) -> Result<ApiClient> {
        ApiClient::connect_with(config, None)
    }

    /// As [`connect`](Self::connect), with CURVE when `keys` are given.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`Error::CurveUnavailable`].
    pub fn connect_with(config: &ApiConfig, keys: Option<&crate::curve::ClientKeys>) -> Result<ApiClient> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).map_err(Error::zmq("create the API socket"))?;
        if let Some(keys) = keys {
            keys.apply(&socket)?;
        }
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

    /// As [`with_timeout`](Self::with_timeout), for a client in use.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a request and waits for its reply, whatever it is (an error
    /// reply is returned as [`Response::Error`]).
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Reply`] for undecodable bytes;
    /// [`Error::Zmq`].
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        Response::from_bytes(&self.exchange(request)?)
    }

    /// Sends a request and waits for its reply's bytes.
    fn exchange(&mut self, request: &Request) -> Result<zmq::Message> {
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
        // Read where ZeroMQ received it: a page is ~250 KB, and a copy of
        // it was a fresh allocation, its pages faulted in, per call.
        let mut reply = zmq::Message::new();
        match self.socket.recv(&mut reply, 0) {
            Ok(()) => Ok(reply),
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
                let name = other.name();
                pick(other).ok_or_else(|| Error::Reply(format!("{} answered with {name}", request.op())))
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

    /// Pins the stored history for paging while lines arrive (see
    /// [`Request::Snapshot`]).
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn snapshot(&mut self, query: &LogQuery) -> Result<Snapshot> {
        let request = Request::Snapshot { query: query.clone() };
        self.expect(&request, |r| match r {
            Response::Snapshot(s) => Some(s),
            _ => None,
        })
    }

    /// One page of stored logs (see [`Request::QueryLogs`]).
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] for an invalid query.
    pub fn query_logs(&mut self, query: &LogQuery) -> Result<LogPage> {
        let request = Request::QueryLogs {
            query: query.clone(),
            layout: Layout::Arrays,
        };
        self.expect(&request, |r| match r {
            Response::Logs(page) => Some(page),
            _ => None,
        })
    }

    /// One page of stored logs, read where it arrived: `read` gets its
    /// lines borrowed from the reply's bytes, and its `next` cursor. For a
    /// client that prints, filters or forwards lines, this spares the
    /// [`LogPage`]'s seven strings per line: half a client's time for a
    /// page (`docs/performance.md`, session 14).
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn read_logs<R>(
        &mut self,
        query: &LogQuery,
        read: impl FnOnce(&[PageLine<'_>], Option<Cursor>) -> R,
    ) -> Result<R> {
        let reply = self.exchange(&Request::QueryLogs {
            query: query.clone(),
            layout: Layout::Arrays,
        })?;
        super::logs::with_page(&reply, read)
    }

    /// One page of stored logs, kept in the reply it arrived in: its lines
    /// are lent from the reply's bytes, as [`read_logs`](Self::read_logs)
    /// lends them, but the page can be kept and sent to another thread
    /// (no string copied per line, as a [`LogPage`] copies seven).
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn reply_page(&mut self, query: &LogQuery) -> Result<super::ReplyPage> {
        let reply = self.exchange(&Request::QueryLogs {
            query: query.clone(),
            layout: Layout::Arrays,
        })?;
        super::ReplyPage::new(reply)
    }

    /// Runs one read-only SQL statement (see [`Request::Sql`]).
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] with
    /// [`ErrorKind::Forbidden`](crate::ErrorKind::Forbidden) for a statement
    /// that is not read-only, `Invalid` for one DuckDB cannot parse.
    pub fn sql(&mut self, sql: &str, max_rows: Option<u64>) -> Result<crate::sql::SqlRows> {
        let request = Request::Sql {
            sql: sql.to_owned(),
            max_rows,
        };
        self.expect(&request, |r| match r {
            Response::Rows(rows) => Some(rows),
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

    /// Every page of `query`, following each page's `next` cursor; the
    /// query's `limit` is the page size.
    pub fn pages(&mut self, query: LogQuery) -> Pages<'_> {
        Pages {
            client: self,
            query,
            remaining: None,
            done: false,
        }
    }

    /// Records a workflow instance's status (`timestamp_ms`: when it
    /// changed; the principal's clock if `None`) and waits until it is in
    /// the database.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] for a refused update.
    pub fn record_workflow_status(
        &mut self,
        workflow_id: &str,
        workflow_instance_id: &str,
        status: RunStatus,
        timestamp_ms: Option<i64>,
    ) -> Result<()> {
        self.accepted(&Request::WorkflowStatusUpdate {
            workflow_id: workflow_id.into(),
            workflow_instance_id: workflow_instance_id.into(),
            status,
            timestamp_ms,
        })
    }

    /// Records a task instance's status and waits until it is in the
    /// database.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`] for a refused update.
    pub fn record_task_status(
        &mut self,
        task_id: &str,
        task_instance_id: &str,
        workflow_instance_id: &str,
        status: RunStatus,
        timestamp_ms: Option<i64>,
    ) -> Result<()> {
        self.accepted(&Request::TaskStatusUpdate {
            task_id: task_id.into(),
            task_instance_id: task_instance_id.into(),
            workflow_instance_id: workflow_instance_id.into(),
            status,
            timestamp_ms,
        })
    }

    /// Tells the principal that agent `agent_id` is alive and running these
    /// workflow instances.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn heartbeat(&mut self, agent_id: &str, running: &[String]) -> Result<()> {
        self.accepted(&Request::Heartbeat {
            agent_id: agent_id.into(),
            running: running.to_vec(),
        })
    }

    fn accepted(&mut self, update: &Request) -> Result<()> {
        self.expect(update, |r| matches!(r, Response::Accepted).then_some(()))
    }

    /// Tells the principal that lines `first..=last` of `publisher_id` will
    /// never come, so that it takes the lines after them. It does so only
    /// when it has everything before `first`; asking again is harmless.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::Api`].
    pub fn declare_lost(&mut self, publisher_id: &str, first: u64, last: u64) -> Result<()> {
        self.accepted(&Request::DeclareLost {
            publisher_id: publisher_id.into(),
            first,
            last,
        })
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

/// The pages of one query, from [`ApiClient::pages`]. Ends after the last
/// page, after the first error, or once [`max_lines`](Self::max_lines)
/// lines have come.
#[derive(Debug)]
pub struct Pages<'a> {
    client: &'a mut ApiClient,
    query: LogQuery,
    remaining: Option<usize>,
    done: bool,
}

impl Pages<'_> {
    /// Stops after `n` lines in all, asking for no more than that.
    pub fn max_lines(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<LogPage>;

    fn next(&mut self) -> Option<Result<LogPage>> {
        if self.done || self.remaining == Some(0) {
            return None;
        }
        if let Some(n) = self.remaining {
            let page = self.query.limit.unwrap_or(MAX_PAGE_LINES).min(MAX_PAGE_LINES);
            self.query.limit = Some(page.min(n));
        }
        let page = match self.client.query_logs(&self.query) {
            Ok(page) => page,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if let Some(n) = self.remaining.as_mut() {
            *n = n.saturating_sub(page.lines.len());
        }
        match &page.next {
            Some(next) => self.query.after = Some(*next),
            None => self.done = true,
        }
        Some(Ok(page))
    }
}
