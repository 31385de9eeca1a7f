//! The log port's connections, watched through a ZeroMQ socket monitor:
//! counted while open, counted and logged when they close (a frame over the
//! hard size limit closes its connection, and nothing else tells of it).
//!
//! When the process runs short of file descriptors the log port stops
//! listening, so that the API, the database and the live stream keep the
//! ones they need. libzmq gives no way to stop accepting but to unbind, and
//! unbinding closes the connections accepted through the listener: the
//! publishers reconnect when it listens again (acknowledged ones re-send
//! what was in flight). Without this, libzmq spins on `EMFILE` and the
//! principal stops answering altogether.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::relisten::Relisten;
use super::ManagerStats;
use crate::error::{Error, Result};

/// How often the notices are logged at most.
const NOTICE_EVERY: Duration = Duration::from_secs(5);
/// How often descriptors are counted again while new connections are
/// refused.
const RECHECK: Duration = Duration::from_millis(500);

static MONITORS: AtomicU64 = AtomicU64::new(0);

pub(super) struct Connections {
    monitor: zmq::Socket,
    /// Where the PULL socket listens, to bind again after a pause.
    listener: Relisten,
    /// The soft `RLIMIT_NOFILE`, where it can be read.
    limit: Option<u64>,
    /// Descriptors kept free for everything but log connections.
    reserve: u64,
    refusing_since: Option<Instant>,
    checked: Instant,
    noticed: Option<Instant>,
    /// The hard limit on a frame, for the notice.
    hard_limit: i64,
}

impl Connections {
    pub fn watch(ctx: &zmq::Context, pull: &zmq::Socket, endpoint: &str, hard_limit: i64) -> Result<Connections> {
        let inproc = format!("inproc://cdktr-manager-monitor-{}", MONITORS.fetch_add(1, Relaxed));
        let events = zmq::SocketEvent::ACCEPTED as i32
            | zmq::SocketEvent::DISCONNECTED as i32
            | zmq::SocketEvent::ACCEPT_FAILED as i32;
        pull.monitor(&inproc, events)
            .map_err(Error::zmq("monitor the PULL socket"))?;
        let monitor = ctx.socket(zmq::PAIR).map_err(Error::zmq("create the monitor socket"))?;
        monitor
            .connect(&inproc)
            .map_err(Error::zmq("connect the monitor socket"))?;
        let limit = descriptor_limit();
        Ok(Connections {
            monitor,
            listener: Relisten::new(endpoint, "log port"),
            limit,
            reserve: limit.map_or(0, |l| (l / 10).max(32)),
            refusing_since: None,
            checked: Instant::now(),
            noticed: None,
            hard_limit,
        })
    }

    /// Closes every connection (unless it is refusing them already);
    /// [`update`](Self::update) listens again.
    pub fn close_all(&mut self, pull: &zmq::Socket) {
        if self.refusing_since.is_none() {
            self.listener.unbind(pull);
        }
    }

    pub fn monitor(&self) -> &zmq::Socket {
        &self.monitor
    }

    /// Takes the monitor's events, and refuses or takes new connections
    /// again as descriptors run short or come back.
    pub fn update(&mut self, pull: &zmq::Socket, stats: &mut ManagerStats) {
        self.listener.bind_again(pull);
        let mut accepted = false;
        while let Ok(event) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(id) = event
                .first()
                .filter(|f| f.len() >= 2)
                .map(|f| u16::from_le_bytes([f[0], f[1]]))
            else {
                continue;
            };
            match zmq::SocketEvent::from_raw(id) {
                zmq::SocketEvent::ACCEPTED => {
                    stats.connections += 1;
                    accepted = true;
                }
                zmq::SocketEvent::DISCONNECTED => {
                    stats.connections = stats.connections.saturating_sub(1);
                    stats.disconnects += 1;
                    let hard_limit = self.hard_limit;
                    self.notice(format_args!(
                        "log manager: a log connection closed ({} so far): its publisher stopped, \
                         or sent a frame over {hard_limit} bytes",
                        stats.disconnects
                    ));
                }
                zmq::SocketEvent::ACCEPT_FAILED => {
                    stats.accept_failures += 1;
                    self.notice(format_args!(
                        "log manager: a log connection could not be accepted ({} so far): out of file descriptors?",
                        stats.accept_failures
                    ));
                }
                _ => {}
            }
        }
        let due = accepted || (self.refusing_since.is_some() && self.checked.elapsed() >= RECHECK);
        if due {
            self.check(pull, stats);
        }
    }

    fn check(&mut self, pull: &zmq::Socket, stats: &mut ManagerStats) {
        self.checked = Instant::now();
        let (Some(limit), Some(used)) = (self.limit, descriptors_in_use()) else {
            return;
        };
        match self.refusing_since {
            None if used + self.reserve >= limit => {
                if let Err(e) = pull.unbind(self.listener.endpoint()) {
                    log::error!(
                        "log manager: cannot stop listening on {}: {e}",
                        self.listener.endpoint()
                    );
                    return;
                }
                self.refusing_since = Some(Instant::now());
                stats.refusing_connections = true;
                stats.listener_pauses += 1;
                // Closed with the listener, without a monitor event each.
                let closed = std::mem::take(&mut stats.connections);
                log::warn!(
                    "log manager: {used} of {limit} file descriptors in use ({closed} log connections); the log \
                     port stops listening (its connections close; publishers reconnect) so that the API and the \
                     database keep theirs; raise the limit (ulimit -n)"
                );
            }
            Some(since) if used + 2 * self.reserve < limit && since.elapsed() >= RECHECK => {
                if let Err(e) = pull.bind(self.listener.endpoint()) {
                    log::error!("log manager: cannot listen again on {}: {e}", self.listener.endpoint());
                    return;
                }
                self.refusing_since = None;
                stats.refusing_connections = false;
                log::warn!(
                    "log manager: {used} of {limit} file descriptors in use; taking log connections again \
                     after {:?}",
                    since.elapsed()
                );
            }
            _ => {}
        }
    }

    fn notice(&mut self, message: std::fmt::Arguments<'_>) {
        if self.noticed.is_none_or(|t| t.elapsed() >= NOTICE_EVERY) {
            self.noticed = Some(Instant::now());
            log::info!("{message}");
        }
    }
}

/// The soft limit on open file descriptors.
fn descriptor_limit() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid out-pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0;
    (ok && l.rlim_cur != libc::RLIM_INFINITY).then_some(l.rlim_cur)
}

/// Open file descriptors of this process (Linux: `/proc/self/fd`).
fn descriptors_in_use() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64)
}
