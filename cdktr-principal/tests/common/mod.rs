//! Helpers shared by the principal's test binaries.

/// A port that is free now and that the kernel will not hand out on its
/// own: ports from bind(0) and outgoing connections come from the
/// ephemeral range (32768 and up on Linux), so one of those could be taken
/// by another test's socket before this test binds it.
#[allow(dead_code)] // not every test binary needs a fixed port
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A principal builder binding free ports on 127.0.0.1 (the handle says
/// which).
#[allow(dead_code)] // not every test binary starts one in process
pub fn local_principal() -> cdktr_principal::PrincipalBuilder {
    cdktr_principal::Principal::builder()
        .bus(cdktr_log::BusConfig {
            host: "127.0.0.1".into(),
            listening_port: 0,
            publishing_port: 0,
        })
        .api(cdktr_log::ApiConfig {
            host: "127.0.0.1".into(),
            port: 0,
        })
}
