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

/// Every whole record in the spool segment files in `dir`, decoded, in
/// file order: what a killed publisher left for the next one to send.
#[cfg(feature = "sockets")]
pub fn spooled(dir: &std::path::Path) -> Vec<crate::Envelope> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let mut r = std::io::BufReader::new(file);
        while let Ok(Some(p)) = crate::publisher::spool::read_record(&mut r) {
            let (topic, body) = p.frames.split_at(p.split);
            out.push(crate::wire::decode(&[topic, body], usize::MAX).expect("a spooled message decodes"));
        }
    }
    out
}

/// Writes a spool for `publisher_id` in `dir` holding exactly `lines`
/// (sequence number and message), as a publisher that died would have left
/// it: holes in the numbering stand for lines it lost.
#[cfg(feature = "sockets")]
pub fn write_spool(dir: &std::path::Path, publisher_id: &str, lines: &[(u64, crate::LogMessage)]) {
    use crate::publisher::spool::{Pending, Spool};
    let mut spool = Spool::open(dir, publisher_id)
        .expect("spool opens")
        .expect("spool not held");
    let (mut topic, mut body) = (Vec::new(), Vec::new());
    for (seq, m) in lines {
        crate::wire::encode_fields(publisher_id, *seq, true, m.into(), &mut topic, &mut body);
        spool
            .append(&Pending::new(*seq, &topic, &body), true)
            .expect("appended");
    }
    spool.flush().expect("written");
}
