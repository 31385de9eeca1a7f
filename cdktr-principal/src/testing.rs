//! Helpers for this workspace's tests; enabled by the `testing` feature,
//! which only the tests turn on.

pub use cdktr_log::testing::{any_ports, free_port, spooled, workspace_binary, write_spool};

/// Flags that make a `cdktr-principal` child bind free ports; its banner
/// says which.
pub const ANY_PORT_FLAGS: [&str; 6] = ["--api-port", "0", "--listening-port", "0", "--publishing-port", "0"];

/// A principal builder binding free ports on 127.0.0.1 (the handle says
/// which).
pub fn local_principal() -> crate::PrincipalBuilder {
    crate::Principal::builder().bus(any_ports()).api(cdktr_log::ApiConfig {
        host: "127.0.0.1".into(),
        port: 0,
    })
}

/// A `cdktr-principal` child process on fixed ports (so that a restarted
/// one is where publishers look), killed if a test fails before stopping it.
#[derive(Debug)]
pub struct ChildPrincipal(pub std::process::Child);

impl ChildPrincipal {
    /// Starts one on `db` and the given ports, flushing every
    /// `flush_interval` (e.g. `"200ms"`), and waits for its banner.
    ///
    /// # Panics
    /// If it cannot start or does not print its banner.
    pub fn start(
        db: &std::path::Path,
        bus: &cdktr_log::BusConfig,
        api: &cdktr_log::ApiConfig,
        flush_interval: &str,
    ) -> ChildPrincipal {
        use std::io::BufRead;
        let mut child = std::process::Command::new(workspace_binary("cdktr-principal"))
            .arg("--db")
            .arg(db)
            .args(["--api-port", &api.port.to_string()])
            .args(["--listening-port", &bus.listening_port.to_string()])
            .args(["--publishing-port", &bus.publishing_port.to_string()])
            .args(["--flush-interval", flush_interval])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("cdktr-principal starts");
        let mut banner = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut banner)
            .expect("a banner");
        assert!(banner.contains("logs in on"), "{banner:?}");
        ChildPrincipal(child)
    }

    /// Sends `signal` (`"-KILL"`, `"-TERM"`) and waits for the exit; after
    /// SIGTERM the exit must be a success.
    ///
    /// # Panics
    /// If the signal cannot be sent, or SIGTERM ends it with a failure.
    pub fn kill(&mut self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal}");
        let status = self.0.wait().expect("wait");
        if signal == "-TERM" {
            assert!(status.success(), "{status:?}");
        }
    }
}

impl Drop for ChildPrincipal {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
