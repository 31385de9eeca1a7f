//! Watchers' side of the bus: follow the live stream, all of it or some
//! workflows.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::config::BusConfig;
use crate::curve::ClientKeys;
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::wire::{self, Envelope, DEFAULT_MAX_MESSAGE_BYTES};

/// Receives the live log stream from the principal's publishing port.
///
/// Filtering is by exact workflow id: the topic frame is the id followed by
/// NUL, so ZeroMQ's prefix filter on `etl\0` never lets `etl_daily`
/// through, and the decoded id is checked again here. Subscribing to no
/// workflow receives everything.
///
/// Like every ZeroMQ SUB socket, a new subscription takes effect a moment
/// after it is made; messages published before that are not received.
/// [`wait_subscribed`](LogSubscriber::wait_subscribed) waits for that
/// moment.
///
/// ```no_run
/// use std::time::Duration;
/// use cdktr_log::{BusConfig, LogSubscriber};
///
/// let mut sub = LogSubscriber::builder(&BusConfig::from_env()?).workflow("etl").connect()?;
/// while let Some(env) = sub.recv_timeout(Duration::from_secs(1))? {
///     println!("{}", env.message.display());
/// }
/// # Ok::<(), cdktr_log::Error>(())
/// ```
#[must_use = "a subscriber receives nothing until it is read"]
pub struct LogSubscriber {
    socket: zmq::Socket,
    /// Hears the connection to the principal drop.
    monitor: zmq::Socket,
    disconnects: u64,
    _ctx: zmq::Context,
    workflows: HashSet<String>,
    max: usize,
    rejected: u64,
    inbox: Inbox,
    /// Lines received while waiting for a marker.
    early: VecDeque<Envelope>,
    /// The marker awaited, and whether it came.
    marker: Option<(Vec<u8>, bool)>,
    markers_asked: u64,
}

/// Configures a [`LogSubscriber`]; see [`LogSubscriber::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect`"]
pub struct SubscriberBuilder {
    config: BusConfig,
    workflows: Vec<String>,
    rcv_hwm: i32,
    max_message_bytes: usize,
    curve: Option<ClientKeys>,
}

impl SubscriberBuilder {
    /// Connects with CURVE, as a client with these keys (the key's role
    /// must be `reader` or `admin`).
    pub fn curve(mut self, keys: ClientKeys) -> Self {
        self.curve = Some(keys);
        self
    }

    /// Receive this workflow's logs; call once per workflow. Without any
    /// call, every workflow's logs are received.
    pub fn workflow(mut self, workflow_id: impl Into<String>) -> Self {
        self.workflows.push(workflow_id.into());
        self
    }

    /// Messages queued on this side before new ones are lost (default 100,000).
    pub fn receive_hwm(mut self, messages: i32) -> Self {
        self.rcv_hwm = messages;
        self
    }

    /// Connects and subscribes.
    ///
    /// # Errors
    /// [`Error::Connect`] for an endpoint ZeroMQ cannot parse or resolve;
    /// [`Error::Zmq`] if the socket cannot be made;
    /// [`Error::CurveUnavailable`].
    pub fn connect(self) -> Result<LogSubscriber> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::SUB).map_err(Error::zmq("create a SUB socket"))?;
        if let Some(keys) = &self.curve {
            keys.apply(&socket)?;
        }
        socket.set_rcvhwm(self.rcv_hwm).map_err(Error::zmq("set RCVHWM"))?;
        socket.set_linger(0).map_err(Error::zmq("set LINGER"))?;
        let hard_limit = i64::try_from(self.max_message_bytes.saturating_mul(2)).unwrap_or(i64::MAX);
        socket
            .set_maxmsgsize(hard_limit)
            .map_err(Error::zmq("set MAXMSGSIZE"))?;
        socket
            .monitor("inproc://monitor", zmq::SocketEvent::DISCONNECTED as i32)
            .map_err(Error::zmq("monitor the SUB socket"))?;
        let monitor = ctx.socket(zmq::PAIR).map_err(Error::zmq("create a monitor socket"))?;
        monitor
            .connect("inproc://monitor")
            .map_err(Error::zmq("connect the monitor socket"))?;
        let endpoint = self.config.publishing_endpoint();
        socket
            .connect(&endpoint)
            .map_err(|source| Error::Connect { endpoint, source })?;
        let mut sub = LogSubscriber {
            socket,
            monitor,
            disconnects: 0,
            _ctx: ctx,
            workflows: HashSet::new(),
            max: self.max_message_bytes,
            rejected: 0,
            inbox: Inbox::new(),
            early: VecDeque::new(),
            marker: None,
            markers_asked: 0,
        };
        if self.workflows.is_empty() {
            sub.socket.set_subscribe(b"").map_err(Error::zmq("subscribe"))?;
        }
        for w in &self.workflows {
            sub.subscribe(w)?;
        }
        Ok(sub)
    }
}

impl LogSubscriber {
    /// A builder connecting to `config`'s publishing endpoint.
    pub fn builder(config: &BusConfig) -> SubscriberBuilder {
        SubscriberBuilder {
            config: config.clone(),
            workflows: Vec::new(),
            rcv_hwm: 100_000,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            curve: None,
        }
    }

    /// Subscribes to everything.
    ///
    /// # Errors
    /// As [`SubscriberBuilder::connect`].
    pub fn all(config: &BusConfig) -> Result<LogSubscriber> {
        Self::builder(config).connect()
    }

    /// Adds a workflow to those received. A subscriber that received
    /// everything keeps doing so.
    ///
    /// # Errors
    /// [`Error::Zmq`] if the socket refuses the subscription.
    pub fn subscribe(&mut self, workflow_id: &str) -> Result<()> {
        if self.workflows.insert(workflow_id.to_owned()) {
            self.socket
                .set_subscribe(&wire::topic(workflow_id))
                .map_err(Error::zmq("subscribe"))?;
        }
        Ok(())
    }

    /// Stops receiving a workflow added with [`subscribe`](Self::subscribe).
    ///
    /// # Errors
    /// [`Error::Zmq`] if the socket refuses.
    pub fn unsubscribe(&mut self, workflow_id: &str) -> Result<()> {
        if self.workflows.remove(workflow_id) {
            self.socket
                .set_unsubscribe(&wire::topic(workflow_id))
                .map_err(Error::zmq("unsubscribe"))?;
        }
        Ok(())
    }

    /// Waits until the principal applies this subscriber's subscriptions:
    /// from then on every line it republishes for them reaches this
    /// subscriber (its queue limit aside). Lines received meanwhile are
    /// kept for [`recv`](Self::recv). True once applied; false if `timeout`
    /// passed first.
    ///
    /// It asks the manager for a marker (`docs/wire-format.md`,
    /// "Markers"), again every 500 ms in case one was lost.
    ///
    /// # Errors
    /// [`Error::Zmq`] if the socket fails.
    pub fn wait_subscribed(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            self.markers_asked += 1;
            let mut topic = wire::MARK_PREFIX.to_vec();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let token = format!("{}-{nanos}-{}", std::process::id(), self.markers_asked);
            topic.extend_from_slice(token.as_bytes());
            self.socket.set_subscribe(&topic).map_err(Error::zmq("subscribe"))?;
            self.marker = Some((topic.clone(), false));
            let ask_again = (Instant::now() + Duration::from_millis(500)).min(deadline);
            let came = loop {
                match self.next_raw(ask_again)? {
                    Some(env) => self.early.push_back(env),
                    None if self.marker.as_ref().is_some_and(|m| m.1) => break true,
                    None if Instant::now() >= ask_again => break false,
                    None => {}
                }
            };
            self.marker = None;
            self.socket.set_unsubscribe(&topic).map_err(Error::zmq("unsubscribe"))?;
            if came {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Times the connection to the principal dropped (it stopped, or the
    /// network failed); the socket reconnects on its own, and lines
    /// published meanwhile are not received. Counted before any line
    /// received after the drop is returned.
    pub fn disconnects(&self) -> u64 {
        self.disconnects
    }

    /// Messages received that failed to decode (none, from a cdktr manager).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The next message, waiting at most `timeout`; `None` if none came.
    ///
    /// # Errors
    /// [`Error::Zmq`] if the socket fails.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Envelope>> {
        if let Some(env) = self.early.pop_front() {
            return Ok(Some(env));
        }
        let deadline = Instant::now() + timeout;
        self.next_raw(deadline)
    }

    /// The next line received before `deadline`; `None` at the deadline,
    /// or as soon as the awaited marker comes.
    fn next_raw(&mut self, deadline: Instant) -> Result<Option<Envelope>> {
        loop {
            if let Some(env) = self.try_recv()? {
                return Ok(Some(env));
            }
            if self.marker.as_ref().is_some_and(|m| m.1) {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Round up so that a sub-millisecond wait still waits.
            let ms = left.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64;
            self.socket.poll(zmq::POLLIN, ms).map_err(Error::zmq("poll"))?;
        }
    }

    /// The next message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Zmq`] if the socket fails.
    pub fn recv(&mut self) -> Result<Envelope> {
        loop {
            if let Some(env) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(env);
            }
        }
    }

    /// An endless iterator of messages, each waited for as by [`recv`](Self::recv).
    pub fn iter(&mut self) -> impl Iterator<Item = Result<Envelope>> + '_ {
        std::iter::repeat_with(move || self.recv())
    }

    /// A waiting message, or `None` without waiting.
    fn try_recv(&mut self) -> Result<Option<Envelope>> {
        loop {
            // Events first: a drop is seen before the lines after it.
            while let Ok(event) = self.monitor.recv_multipart(zmq::DONTWAIT) {
                if event.len() == 2 {
                    self.disconnects += 1;
                }
            }
            if !self.inbox.recv(&self.socket).map_err(Error::zmq("receive"))? {
                break;
            }
            if let Some(topic) = self.inbox.marker() {
                // Another subscriber's markers reach a subscriber of
                // everything: skipped.
                if let Some((awaited, came)) = self.marker.as_mut() {
                    if awaited.as_slice() == topic {
                        *came = true;
                        return Ok(None);
                    }
                }
                continue;
            }
            match self.inbox.decode(self.max) {
                Ok(env) if self.workflows.is_empty() || self.workflows.contains(&env.message.workflow_id) => {
                    return Ok(Some(env))
                }
                Ok(_) => {}
                Err(_) => self.rejected += 1,
            }
        }
        Ok(None)
    }
}

impl std::fmt::Debug for LogSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSubscriber")
            .field("workflows", &self.workflows)
            .field("rejected", &self.rejected)
            .field("disconnects", &self.disconnects)
            .finish_non_exhaustive()
    }
}
