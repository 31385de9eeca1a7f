//! Background calls to the principal that must never hold up the caller:
//! a client connected on first use, and a thread that polls with it.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::ApiClient;
use crate::config::ApiConfig;
use crate::curve::ClientKeys;
use crate::error::{Error, Result};

/// An [`ApiClient`] made on first use, with a fixed timeout per call, and
/// made anew after a call that got no answer.
///
/// A thread holding one can start before the principal is reachable and
/// keeps its connection between calls while they succeed.
#[derive(Debug)]
pub struct LazyClient {
    config: ApiConfig,
    timeout: Duration,
    keys: Option<ClientKeys>,
    client: Option<ApiClient>,
}

impl LazyClient {
    /// A client for `config` whose calls wait at most `timeout`.
    pub fn new(config: &ApiConfig, timeout: Duration) -> LazyClient {
        LazyClient {
            config: config.clone(),
            timeout,
            keys: None,
            client: None,
        }
    }

    /// Its calls wait at most `timeout` instead.
    pub fn timeout(mut self, timeout: Duration) -> LazyClient {
        self.timeout = timeout;
        self
    }

    /// Connects with CURVE when `keys` are given.
    pub fn curve(mut self, keys: Option<ClientKeys>) -> LazyClient {
        self.keys = keys;
        self
    }

    /// Runs `f` with the client, connecting it first if need be.
    ///
    /// After a failure that leaves the connection in doubt (no answer in
    /// time, a ZeroMQ error, a reply that cannot be read) the client is
    /// dropped, so that the next call starts on a fresh connection instead
    /// of queueing behind a dead one (TCP retransmission backoff can hold a
    /// reused connection for many seconds after the network returns). An
    /// error reply keeps it: the principal answered.
    ///
    /// # Errors
    /// As [`ApiClient::connect`], and whatever `f` returns.
    pub fn call<T>(&mut self, f: impl FnOnce(&mut ApiClient) -> Result<T>) -> Result<T> {
        if self.client.is_none() {
            let client = ApiClient::connect_with(&self.config, self.keys.as_ref())?;
            self.client = Some(client.with_timeout(self.timeout));
        }
        let result = f(self.client.as_mut().expect("connected above"));
        if matches!(result, Err(Error::Timeout { .. } | Error::Zmq { .. } | Error::Reply(_))) {
            self.client = None;
        }
        result
    }
}

/// How soon a [`Poller`] tries again after a call that was not answered.
pub const RETRY: Duration = Duration::from_millis(250);

/// A thread that runs a closure with a [`LazyClient`] right away and then
/// every `interval`, until the handle is stopped or dropped.
#[derive(Debug)]
#[must_use = "dropping the poller stops it"]
pub struct Poller {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts the thread, named `name`. `each` says whether its call was
    /// answered: after one that was not, the next comes after
    /// `RETRY` rather than the whole interval, so that a principal back
    /// from a restart or a network cut hears from this client at once.
    ///
    /// # Errors
    /// [`Error::Spawn`] if the thread cannot be started.
    pub fn start(
        name: &'static str,
        mut client: LazyClient,
        interval: Duration,
        mut each: impl FnMut(&mut LazyClient) -> bool + Send + 'static,
    ) -> Result<Poller> {
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(format!("cdktr-{name}"))
            .spawn(move || loop {
                let wait = if each(&mut client) {
                    interval
                } else {
                    interval.min(RETRY)
                };
                // The handle drops its sender to stop us: no waiting out the interval.
                if !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
                    break;
                }
            })
            .map_err(|source| Error::Spawn { name, source })?;
        Ok(Poller {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it to end.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Request, Response};

    /// A ROUTER standing in for the principal: returns the identity of the
    /// connection each request came on, answering it or not.
    struct Router {
        socket: zmq::Socket,
        _ctx: zmq::Context,
        config: ApiConfig,
    }

    impl Router {
        fn bind() -> Router {
            let ctx = zmq::Context::new();
            let socket = ctx.socket(zmq::ROUTER).unwrap();
            socket.set_rcvtimeo(30_000).unwrap();
            socket.bind("tcp://127.0.0.1:*").unwrap();
            let endpoint = socket.get_last_endpoint().unwrap().unwrap();
            let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
            let config = ApiConfig {
                host: "127.0.0.1".into(),
                port,
            };
            Router {
                socket,
                _ctx: ctx,
                config,
            }
        }

        fn take(&self, answer: bool) -> Vec<u8> {
            let frames = self.socket.recv_multipart(0).expect("a request");
            if answer {
                let reply = Response::Pong {
                    api: 1,
                    version: "test".into(),
                };
                let mut out: Vec<Vec<u8>> = frames[..frames.len() - 1].to_vec();
                out.push(reply.to_bytes());
                self.socket.send_multipart(out, 0).unwrap();
            }
            frames[0].clone()
        }
    }

    #[test]
    fn a_call_that_got_no_answer_is_retried_on_a_fresh_connection() {
        let router = Router::bind();
        let mut client = LazyClient::new(&router.config, Duration::from_millis(200));
        let ping = |c: &mut ApiClient| c.call(&Request::Ping {});
        // Answered: the connection is kept.
        let caller = std::thread::scope(|s| {
            let t = s.spawn(|| client.call(ping).map(|_| ()));
            let first = router.take(true);
            t.join().unwrap().unwrap();
            first
        });
        let again = std::thread::scope(|s| {
            let t = s.spawn(|| client.call(ping).map(|_| ()));
            let id = router.take(true);
            t.join().unwrap().unwrap();
            id
        });
        assert_eq!(again, caller, "a connection that answers is reused");
        // Not answered: a timeout, and the next call comes on a new connection.
        let silent = std::thread::scope(|s| {
            let t = s.spawn(|| client.call(ping).map(|_| ()));
            let id = router.take(false);
            assert!(matches!(t.join().unwrap(), Err(Error::Timeout { .. })));
            id
        });
        assert_eq!(silent, caller);
        let fresh = std::thread::scope(|s| {
            let t = s.spawn(|| client.call(ping).map(|_| ()));
            let id = router.take(true);
            t.join().unwrap().unwrap();
            id
        });
        assert_ne!(fresh, caller, "after a timeout the call must not reuse the connection");
    }

    /// A poller with an hour's interval whose runs report `answered`;
    /// each run sends on the channel.
    fn hourly(router: &Router, answered: bool) -> (Poller, crossbeam_channel::Receiver<()>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let each = move |_: &mut LazyClient| {
            let _ = tx.send(());
            answered
        };
        let client = LazyClient::new(&router.config, Duration::from_millis(100));
        let poller = Poller::start("test-poller", client, Duration::from_secs(3600), each).unwrap();
        (poller, rx)
    }

    #[test]
    fn a_poller_runs_at_once_and_stops_without_waiting_out_its_interval() {
        let router = Router::bind();
        let (poller, rx) = hourly(&router, true);
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the first run is immediate");
        // An hour's interval: stop must not wait it out.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            poller.stop();
            let _ = done_tx.send(());
        });
        done.recv_timeout(Duration::from_secs(30))
            .expect("stop returned at once");
        assert!(rx.try_recv().is_err(), "no second run within the hour's interval");
    }

    #[test]
    fn a_poller_whose_call_failed_tries_again_long_before_its_interval() {
        let router = Router::bind();
        let (_poller, rx) = hourly(&router, false);
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("a failed run is followed by another, not an hour later");
        }
    }
}
