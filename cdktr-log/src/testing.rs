//! Helpers for this workspace's tests; enabled by the `testing` feature,
//! which only the tests turn on.

/// A port that is free now and that the kernel will not hand out on its
/// own: ports from bind(0) and outgoing connections come from the
/// ephemeral range (32768 and up on Linux), so one of those could be taken
/// by another test's socket before this test binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A bus configuration on 127.0.0.1 with both ports 0: the manager binds
/// free ones and its `config()` says which.
pub fn any_ports() -> crate::BusConfig {
    crate::BusConfig {
        host: "127.0.0.1".into(),
        listening_port: 0,
        publishing_port: 0,
    }
}

/// The path of one of this workspace's binaries (`cdktr-principal`,
/// `cdktr-agent`, `cdktr-logs`), for tests of another package than its
/// own, where Cargo gives no `CARGO_BIN_EXE_` variable. `cargo test
/// --workspace` builds every binary before any test runs; a test run of
/// one package alone may find it missing or stale.
///
/// # Panics
/// If the binary is not there, saying how to build it.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    // Test executables live in target/<profile>/deps/; binaries one up.
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a target directory");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}
