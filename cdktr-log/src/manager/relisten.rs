//! Closing every connection of a bound endpoint, and listening again: how
//! a removed key's connections are dropped (unbinding closes the
//! connections accepted through the endpoint; clients reconnect and shake
//! hands again).

use std::time::{Duration, Instant};

/// A bound endpoint that can be unbound and bound again.
pub(super) struct Relisten {
    endpoint: String,
    /// What it is, for the log: "log port", "live port".
    what: &'static str,
    /// Unbound since then, waiting to be bound again.
    unbound: Option<Instant>,
}

impl Relisten {
    pub fn new(endpoint: &str, what: &'static str) -> Relisten {
        Relisten {
            endpoint: endpoint.to_owned(),
            what,
            unbound: None,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Closes every connection; [`bind_again`](Self::bind_again) listens
    /// again.
    pub fn unbind(&mut self, socket: &zmq::Socket) {
        if self.unbound.is_some() {
            return; // closed already
        }
        match socket.unbind(&self.endpoint) {
            Ok(()) => self.unbound = Some(Instant::now()),
            Err(e) => log::error!(
                "log manager: cannot close the {} {}'s connections: {e}",
                self.what,
                self.endpoint
            ),
        }
    }

    /// Binds again after [`unbind`](Self::unbind), when libzmq has let the
    /// port go (unbinding finishes on its I/O thread; until then the port
    /// is in use). Called from the manager's loop until it succeeds.
    pub fn bind_again(&mut self, socket: &zmq::Socket) {
        let Some(since) = self.unbound else {
            return;
        };
        match socket.bind(&self.endpoint) {
            Ok(()) => self.unbound = None,
            Err(e) if since.elapsed() > Duration::from_secs(5) => {
                log::error!(
                    "log manager: cannot bind the {} {} again ({e}); still trying",
                    self.what,
                    self.endpoint
                );
                self.unbound = Some(Instant::now());
            }
            Err(_) => {}
        }
    }
}
