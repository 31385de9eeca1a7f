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
        Self::start_with(db, bus, api, flush_interval, &[])
    }

    /// As [`start`](Self::start), with these variables set.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(
        db: &std::path::Path,
        bus: &cdktr_log::BusConfig,
        api: &cdktr_log::ApiConfig,
        flush_interval: &str,
        vars: &[(&str, &std::path::Path)],
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
            .envs(vars.iter().copied())
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

/// CURVE keys for a test, written under one directory: the principal's
/// pair and its authorized keys directory allowing `agent` (publisher),
/// `reader` and `admin`; each client's pair as files and as keys.
#[derive(Debug)]
pub struct TestKeys {
    /// The principal's `principal.key`.
    pub principal_secret: std::path::PathBuf,
    /// The principal's `principal.pub`, for clients.
    pub principal_public: std::path::PathBuf,
    /// The authorized keys directory.
    pub authorized: std::path::PathBuf,
    /// Each client's name, `.key` file and keys.
    pub clients: Vec<(String, std::path::PathBuf, cdktr_log::curve::ClientKeys)>,
}

impl TestKeys {
    /// Writes them all under `dir`.
    ///
    /// # Panics
    /// If a key cannot be made or written.
    pub fn write(dir: &std::path::Path) -> TestKeys {
        use cdktr_log::curve::{ClientKeys, KeyPair, Role};
        let (own, authorized) = (dir.join("own"), dir.join("authorized"));
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&authorized).unwrap();
        let principal = KeyPair::generate().unwrap();
        let (principal_secret, principal_public) = principal.write(&own, "principal", None).unwrap();
        let clients = [
            ("agent", Role::Publisher),
            ("reader", Role::Reader),
            ("admin", Role::Admin),
        ]
        .into_iter()
        .map(|(name, role)| {
            let pair = KeyPair::generate().unwrap();
            let (secret, public) = pair.write(&own, name, Some(role)).unwrap();
            std::fs::copy(&public, authorized.join(format!("{name}.pub"))).unwrap();
            let keys = ClientKeys {
                pair,
                server: principal.public,
            };
            (name.to_owned(), secret, keys)
        })
        .collect();
        TestKeys {
            principal_secret,
            principal_public,
            authorized,
            clients,
        }
    }

    /// The variables that give the principal CURVE.
    pub fn principal_vars(&self) -> [(&'static str, &std::path::Path); 2] {
        [
            (cdktr_log::curve::ENV_CURVE_SECRET_KEY, self.principal_secret.as_path()),
            (cdktr_log::curve::ENV_AUTHORIZED_KEYS_DIR, self.authorized.as_path()),
        ]
    }

    /// The variables that give client `name` CURVE.
    ///
    /// # Panics
    /// For a name that is not one of the clients.
    pub fn client_vars(&self, name: &str) -> [(&'static str, &std::path::Path); 2] {
        let (_, secret, _) = self.clients.iter().find(|c| c.0 == name).expect("a known client");
        [
            (cdktr_log::curve::ENV_CURVE_SECRET_KEY, secret.as_path()),
            (cdktr_log::curve::ENV_CURVE_SERVER_KEY, self.principal_public.as_path()),
        ]
    }

    /// Client `name`'s keys.
    ///
    /// # Panics
    /// For a name that is not one of the clients.
    pub fn client(&self, name: &str) -> cdktr_log::curve::ClientKeys {
        self.clients
            .iter()
            .find(|c| c.0 == name)
            .expect("a known client")
            .2
            .clone()
    }

    /// The principal's authorizer.
    ///
    /// # Panics
    /// If the keys cannot be read back.
    pub fn authorizer(&self) -> cdktr_log::curve::Authorizer {
        let pair = cdktr_log::curve::KeyPair::read(&self.principal_secret).unwrap();
        cdktr_log::curve::Authorizer::new(pair, &self.authorized).unwrap()
    }
}
