//! Watchers' side of the bus: follow the live stream, all of it or some
//! workflows.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::config::BusConfig;
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
    _ctx: zmq::Context,
    workflows: HashSet<String>,
    max: usize,
    rejected: u64,
    inbox: Inbox,
}

/// Configures a [`LogSubscriber`]; see [`LogSubscriber::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect`"]
pub struct SubscriberBuilder {
    config: BusConfig,
    workflows: Vec<String>,
    rcv_hwm: i32,
    max_message_bytes: usize,
}

impl SubscriberBuilder {
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
    /// [`Error::Zmq`] if the socket cannot be made.
    pub fn connect(self) -> Result<LogSubscriber> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::SUB).map_err(Error::zmq("create a SUB socket"))?;
        socket.set_rcvhwm(self.rcv_hwm).map_err(Error::zmq("set RCVHWM"))?;
        socket.set_linger(0).map_err(Error::zmq("set LINGER"))?;
        let hard_limit = i64::try_from(self.max_message_bytes.saturating_mul(2)).unwrap_or(i64::MAX);
        socket
            .set_maxmsgsize(hard_limit)
            .map_err(Error::zmq("set MAXMSGSIZE"))?;
        let endpoint = self.config.publishing_endpoint();
        socket
            .connect(&endpoint)
            .map_err(|source| Error::Connect { endpoint, source })?;
        let mut sub = LogSubscriber {
            socket,
            _ctx: ctx,
            workflows: HashSet::new(),
            max: self.max_message_bytes,
            rejected: 0,
            inbox: Inbox::new(),
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

    /// Messages received that failed to decode (none, from a cdktr manager).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The next message, waiting at most `timeout`; `None` if none came.
    ///
    /// # Errors
    /// [`Error::Zmq`] if the socket fails.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Envelope>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(env) = self.try_recv()? {
                return Ok(Some(env));
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
        while self.inbox.recv(&self.socket).map_err(Error::zmq("receive"))? {
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
            .finish_non_exhaustive()
    }
}
