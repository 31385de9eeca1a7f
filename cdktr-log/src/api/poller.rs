//! Background calls to the principal that must never hold up the caller:
//! a client connected on first use, and a thread that polls with it.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::ApiClient;
use crate::config::ApiConfig;
use crate::error::{Error, Result};

/// An [`ApiClient`] made on first use, with a fixed timeout per call.
///
/// A thread holding one can start before the principal is reachable and
/// keeps its connection between calls.
#[derive(Debug)]
pub struct LazyClient {
    config: ApiConfig,
    timeout: Duration,
    client: Option<ApiClient>,
}

impl LazyClient {
    /// A client for `config` whose calls wait at most `timeout`.
    pub fn new(config: &ApiConfig, timeout: Duration) -> LazyClient {
        LazyClient {
            config: config.clone(),
            timeout,
            client: None,
        }
    }

    /// The client, connecting it first if need be.
    ///
    /// # Errors
    /// As [`ApiClient::connect`]; the next call tries again.
    pub fn get(&mut self) -> Result<&mut ApiClient> {
        if self.client.is_none() {
            self.client = Some(ApiClient::connect(&self.config)?.with_timeout(self.timeout));
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// The endpoint it connects to, for messages.
    pub fn endpoint(&self) -> String {
        self.config.endpoint()
    }
}

/// A thread that runs a closure with a [`LazyClient`] right away and then
/// every `interval`, until the handle is stopped or dropped.
#[derive(Debug)]
#[must_use = "dropping the poller stops it"]
pub struct Poller {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts the thread, named `name`.
    ///
    /// # Errors
    /// [`Error::Spawn`] if the thread cannot be started.
    pub fn start(
        name: &'static str,
        api: &ApiConfig,
        timeout: Duration,
        interval: Duration,
        mut each: impl FnMut(&mut LazyClient) + Send + 'static,
    ) -> Result<Poller> {
        let (stop, stopped) = bounded::<()>(0);
        let mut client = LazyClient::new(api, timeout);
        let thread = std::thread::Builder::new()
            .name(format!("cdktr-{name}"))
            .spawn(move || loop {
                each(&mut client);
                // The handle drops its sender to stop us: no waiting out the interval.
                if !matches!(stopped.recv_timeout(interval), Err(RecvTimeoutError::Timeout)) {
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
