//! Backfill + follow: a run's stored history, then its live lines, with no
//! line missing and none shown twice, across principal restarts.
//!
//! How it works (`docs/api.md`, "Following"):
//! 1. subscribe, and wait until the principal applies the subscription (a
//!    marker): every line it republishes from then on reaches us;
//! 2. pin the stored history (`Snapshot`): the principal writes every line
//!    it received before, then names the newest row and, per publisher,
//!    the highest number among the stored lines that match;
//! 3. page the history up to that row (lines stored later are not in any
//!    page, however long paging takes);
//! 4. show a live line only if its number is past what the snapshot (and
//!    everything shown since) accounts for: a publisher's stored lines are
//!    always the first ones of its stream, so a live line numbered at or
//!    below the snapshot's mark was stored, and is in the history.
//!
//! When the principal stops answering, the follower says so, keeps asking,
//! and on its return (or a restart, seen as its uptime going back) does
//! steps 1-3 again for the lines stored since the last snapshot, dropping
//! those already shown.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::api::{ApiClient, PrincipalStats};
use crate::config::{ApiConfig, BusConfig};
use crate::curve::ClientKeys;
use crate::error::{Error, Result};
use crate::message::{now_ms, Level, LogMessage};

mod history;
use crate::query::Origin;
use crate::subscriber::LogSubscriber;

/// Which stored lines come before the live ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// None: lines from the moment of attaching on (`tail -f`).
    Live,
    /// The last N stored lines (`tail -n N -f`).
    Last(usize),
    /// Lines from this time on, in ms since the epoch (`--since`).
    Since(i64),
    /// Every stored line.
    All,
}

/// One thing a [`LogFollower`] has to say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Followed {
    /// A line, from the history or live.
    Line(Box<FollowedLine>),
    /// The principal does not answer (why); the follower keeps trying.
    Unreachable(String),
    /// The principal answers again; the lines it stored meanwhile come
    /// next, then live ones.
    Resumed,
}

/// A line as a follower shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedLine {
    /// The line.
    pub message: LogMessage,
    /// Its identity; `None` only for lines stored before the schema kept it.
    pub origin: Option<Origin>,
    /// Came live (rather than from the stored history).
    pub live: bool,
}

/// Configures a [`LogFollower`]; see [`LogFollower::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect`"]
pub struct FollowerBuilder {
    bus: BusConfig,
    api: ApiConfig,
    workflows: Vec<String>,
    instance: Option<String>,
    task: Option<String>,
    min_level: Option<Level>,
    history: History,
    timeout: Duration,
    curve: Option<ClientKeys>,
}

impl FollowerBuilder {
    /// Connects both the live stream and the API with CURVE, as a client
    /// with these keys (role `reader` or `admin`).
    pub fn curve(mut self, keys: Option<ClientKeys>) -> Self {
        self.curve = keys;
        self
    }

    /// Only this workflow; call once per workflow (default: all).
    pub fn workflow(mut self, workflow_id: impl Into<String>) -> Self {
        self.workflows.push(workflow_id.into());
        self
    }

    /// Only this workflow instance.
    pub fn instance(mut self, workflow_instance_id: impl Into<String>) -> Self {
        self.instance = Some(workflow_instance_id.into());
        self
    }

    /// Only this task name.
    pub fn task(mut self, task_name: impl Into<String>) -> Self {
        self.task = Some(task_name.into());
        self
    }

    /// Only lines at this level or more severe.
    pub fn min_level(mut self, level: Level) -> Self {
        self.min_level = Some(level);
        self
    }

    /// Which stored lines come first (default [`History::Live`]).
    pub fn history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// How long the principal may take to answer whether it is there,
    /// and to confirm a subscription (default 5 s). Reading the history
    /// may take longer, up to [`HISTORY_TIMEOUT`]: a busy principal answers
    /// queries more slowly than it answers "are you there".
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Subscribes, then reads the history; its lines are the first that
    /// [`LogFollower::next_timeout`] returns.
    ///
    /// # Errors
    /// [`Error::Connect`] for an endpoint ZeroMQ cannot parse;
    /// [`Error::Timeout`] if the principal does not answer; [`Error::Api`]
    /// if it refuses the history query; [`Error::Zmq`].
    pub fn connect(self) -> Result<LogFollower> {
        let mut sub = LogSubscriber::builder(&self.bus).receive_hwm(1_000_000);
        for w in &self.workflows {
            sub = sub.workflow(w.clone());
        }
        if let Some(keys) = &self.curve {
            sub = sub.curve(keys.clone());
        }
        let api = ApiClient::connect_with(&self.api, self.curve.as_ref())?.with_timeout(self.timeout);
        let mut follower = LogFollower {
            sub: sub.connect()?,
            api,
            config: self,
            seen: HashMap::new(),
            queue: VecDeque::new(),
            pinned: None,
            resume_from: now_ms(),
            down: None,
            stale: false,
            held: Vec::new(),
            disconnects: 0,
            uptime_ms: 0,
            checked: Instant::now(),
            stats: None,
        };
        follower.sync(true)?;
        Ok(follower)
    }
}

/// Follows stored and live log lines as one stream; see the module
/// documentation for how.
///
/// ```no_run
/// use std::time::Duration;
/// use cdktr_log::follower::{Followed, History, LogFollower};
/// use cdktr_log::{ApiConfig, BusConfig};
///
/// let mut f = LogFollower::builder(&BusConfig::from_env()?, &ApiConfig::from_env()?)
///     .instance("etl-20261127-1")
///     .history(History::Last(100))
///     .connect()?;
/// loop {
///     match f.next_timeout(Duration::from_secs(1))? {
///         Some(Followed::Line(l)) => println!("{}", l.message.display()),
///         Some(Followed::Unreachable(why)) => eprintln!("principal unreachable, retrying: {why}"),
///         _ => {}
///     }
/// }
/// # Ok::<(), cdktr_log::Error>(())
/// ```
#[must_use = "a follower receives nothing until it is read"]
pub struct LogFollower {
    sub: LogSubscriber,
    api: ApiClient,
    config: FollowerBuilder,
    /// Per publisher, the highest number shown or accounted for.
    seen: HashMap<String, u64>,
    queue: VecDeque<Followed>,
    /// The last snapshot's row.
    pinned: Option<i64>,
    /// Where a re-sync looks from when the history cannot be told by row.
    resume_from: i64,
    /// Since when the principal has not answered.
    down: Option<Instant>,
    /// Lines may have been missed (the connection dropped, the principal
    /// did not answer or restarted): a re-sync is due.
    stale: bool,
    /// Live lines received while stale, offered after the re-sync.
    held: Vec<(LogMessage, Origin)>,
    /// The subscriber's drop count when last looked at.
    disconnects: u64,
    uptime_ms: u64,
    checked: Instant,
    stats: Option<PrincipalStats>,
}

/// How often the principal is asked whether it is still there (and the
/// same one).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The longest wait for the snapshot and each page of history: beyond the
/// principal's default query time limit (30 s), which answers first.
pub const HISTORY_TIMEOUT: Duration = Duration::from_secs(40);

impl LogFollower {
    /// A builder following everything, live only, until told otherwise.
    pub fn builder(bus: &BusConfig, api: &ApiConfig) -> FollowerBuilder {
        FollowerBuilder {
            bus: bus.clone(),
            api: api.clone(),
            workflows: Vec::new(),
            instance: None,
            task: None,
            min_level: None,
            history: History::Live,
            timeout: crate::api::DEFAULT_TIMEOUT,
            curve: None,
        }
    }

    /// The next line or event, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Zmq`] if the live socket fails. An absent principal is not
    /// an error: it is [`Followed::Unreachable`], and the follower goes on.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Followed>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.queue.pop_front() {
                return Ok(Some(f));
            }
            if self.checked.elapsed() >= CHECK_EVERY {
                self.check();
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = deadline.min(self.checked + CHECK_EVERY) - now;
            let env = self.sub.recv_timeout(wait)?;
            if self.sub.disconnects() != self.disconnects {
                // Lines published while the connection was down are not
                // coming: from here on, hold what arrives, and re-sync now.
                self.disconnects = self.sub.disconnects();
                self.stale = true;
                self.checked = Instant::now() - CHECK_EVERY;
            }
            if let Some(env) = env {
                let origin = Origin {
                    publisher_id: env.publisher_id,
                    seq: env.seq,
                };
                if self.stale {
                    self.held.push((env.message, origin));
                } else {
                    self.offer(env.message, Some(origin), true);
                }
            }
        }
    }

    /// The principal's counters as of the last check (about every second).
    pub fn stats(&self) -> Option<&PrincipalStats> {
        self.stats.as_ref()
    }

    /// Whether the principal is answering, as of the last check.
    pub fn is_connected(&self) -> bool {
        self.down.is_none()
    }

    /// Asks the principal whether it is there; re-syncs after an outage
    /// or a restart.
    fn check(&mut self) {
        self.checked = Instant::now();
        let stats = match self.api.stats() {
            Ok(stats) => stats,
            Err(e) => return self.lost(e),
        };
        // A restart: lines published while it was down are not coming live.
        self.stale |= stats.uptime_ms < self.uptime_ms;
        self.uptime_ms = stats.uptime_ms;
        self.stats = Some(stats);
        if !self.stale {
            return;
        }
        let at = self.queue.len();
        if let Err(e) = self.sync(false) {
            return self.lost(e);
        }
        self.stale = false;
        if self.down.take().is_some() {
            self.queue.insert(at, Followed::Resumed);
        }
        for (message, origin) in std::mem::take(&mut self.held) {
            self.offer(message, Some(origin), true);
        }
    }

    fn lost(&mut self, e: Error) {
        self.stale = true;
        if self.down.is_none() {
            self.down = Some(Instant::now());
            self.queue.push_back(Followed::Unreachable(e.to_string()));
        }
    }

    /// Queues a live line unless it is filtered out or already shown.
    fn offer(&mut self, message: LogMessage, origin: Option<Origin>, live: bool) {
        let c = &self.config;
        if c.instance.as_ref().is_some_and(|i| *i != message.workflow_instance_id)
            || c.task.as_ref().is_some_and(|t| *t != message.task_name)
            || c.min_level.is_some_and(|l| message.level < l)
        {
            return;
        }
        if let Some(o) = &origin {
            match self.seen.get_mut(o.publisher_id.as_str()) {
                Some(s) if o.seq <= *s => return,
                Some(s) => *s = o.seq,
                None => {
                    self.seen.insert(o.publisher_id.clone(), o.seq);
                }
            }
        }
        self.queue
            .push_back(Followed::Line(Box::new(FollowedLine { message, origin, live })));
    }
}

impl std::fmt::Debug for LogFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFollower")
            .field("config", &self.config)
            .field("publishers", &self.seen.len())
            .field("connected", &self.down.is_none())
            .finish_non_exhaustive()
    }
}
