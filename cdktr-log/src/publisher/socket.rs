//! The PUSH socket to the log manager and, for acknowledged delivery, the
//! monitor that reports its lost connections.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::curve::ClientKeys;
use crate::error::{Error, Result};

/// Messages ZeroMQ queues per connection before `send` reports no room.
pub(super) const SEND_HWM: i32 = 10_000;

static MONITORS: AtomicU64 = AtomicU64::new(0);

pub(super) enum Sent {
    Yes,
    /// The socket has no room; nothing was sent, try again later.
    NoRoom,
    /// The topic went but the body did not: the message is lost.
    Lost,
}

pub(super) struct PushSocket {
    socket: zmq::Socket,
    /// Disconnect events of `socket` (acknowledged delivery).
    monitor: Option<zmq::Socket>,
    // Dropped last: sockets must close before their context.
    ctx: zmq::Context,
}

impl PushSocket {
    /// Connects to `endpoint`. `watch` adds the disconnect monitor and
    /// queues nothing for a connection that is not up: what a broken
    /// connection held is re-sent from the retention instead.
    pub fn connect(endpoint: String, send_hwm: i32, watch: bool, curve: Option<&ClientKeys>) -> Result<PushSocket> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::PUSH).map_err(Error::zmq("create a PUSH socket"))?;
        if let Some(keys) = curve {
            keys.apply(&socket)?;
        }
        socket.set_sndhwm(send_hwm).map_err(Error::zmq("set SNDHWM"))?;
        // No ZMTP heartbeats: their PINGs travel behind the data, so a
        // principal applying back-pressure answers late, the connection is
        // declared dead and whatever was in flight is lost (seen here: about
        // 1 run in 3 lost 500-7,000 of 1,000,000 messages). TCP keepalive
        // notices a dead host without that failure mode.
        socket.set_tcp_keepalive(1).map_err(Error::zmq("set TCP_KEEPALIVE"))?;
        socket
            .set_tcp_keepalive_idle(30)
            .map_err(Error::zmq("set TCP_KEEPALIVE_IDLE"))?;
        socket
            .set_reconnect_ivl_max(1_000)
            .map_err(Error::zmq("set RECONNECT_IVL_MAX"))?;
        let mut monitor = None;
        if watch {
            socket.set_immediate(true).map_err(Error::zmq("set IMMEDIATE"))?;
            let endpoint = format!("inproc://cdktr-publisher-monitor-{}", MONITORS.fetch_add(1, Relaxed));
            socket
                .monitor(&endpoint, zmq::SocketEvent::DISCONNECTED as i32)
                .map_err(Error::zmq("monitor the PUSH socket"))?;
            let m = ctx.socket(zmq::PAIR).map_err(Error::zmq("create the monitor socket"))?;
            m.connect(&endpoint).map_err(Error::zmq("connect the monitor socket"))?;
            monitor = Some(m);
        }
        socket
            .connect(&endpoint)
            .map_err(|source| Error::Connect { endpoint, source })?;
        Ok(PushSocket { socket, monitor, ctx })
    }

    /// Sends both frames without waiting.
    pub fn try_send(&self, topic: &[u8], body: &[u8]) -> Sent {
        match self.socket.send(topic, zmq::SNDMORE | zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Sent::NoRoom,
            Err(e) => {
                log::error!("log publisher: send failed, will retry: {e}");
                return Sent::NoRoom;
            }
        }
        // Once the first frame is in, ZeroMQ takes the rest; should it not, say so.
        match self.socket.send(body, 0) {
            Ok(()) => Sent::Yes,
            Err(e) => {
                log::error!("log publisher: body frame refused, message lost: {e}");
                Sent::Lost
            }
        }
    }

    /// Waits up to `ms` for room to send.
    pub fn wait_writable(&self, ms: i64) {
        let _ = self.socket.poll(zmq::POLLOUT, ms);
    }

    /// Whether a connection was lost since the last call (with a monitor).
    pub fn lost_connection(&self) -> bool {
        let Some(monitor) = &self.monitor else {
            return false;
        };
        let mut lost = false;
        while let Ok(event) = monitor.recv_multipart(zmq::DONTWAIT) {
            let id = event
                .first()
                .filter(|f| f.len() >= 2)
                .map(|f| u16::from_le_bytes([f[0], f[1]]));
            lost |= id == Some(zmq::SocketEvent::DISCONNECTED as u16);
        }
        lost
    }

    /// Closes the socket, letting ZeroMQ write what it holds for up to
    /// `linger`; true if it gave up on something when that ran out.
    pub fn close(self, linger: Duration) -> bool {
        let PushSocket { socket, monitor, ctx } = self;
        let _ = socket.set_linger(linger.as_millis().min(i32::MAX as u128) as i32);
        drop(monitor);
        drop(socket);
        let closing = Instant::now();
        drop(ctx);
        closing.elapsed() >= linger
    }
}
