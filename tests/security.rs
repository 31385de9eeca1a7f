//! CURVE from the outside: the binaries built with it, keys made by
//! `cdktr-logs keygen`, an agent and the CLI against a principal that
//! allows some keys, and a principal that will not listen beyond loopback
//! in clear.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cdktr_log::testing::workspace_binary;
use cdktr_principal::testing::{local_principal, TestKeys};
use cdktr_principal::{Principal, Security};

fn cli(p: &Principal, vars: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-logs"));
    clean(&mut c);
    c.env("CDKTR_PRINCIPAL_PORT", p.api_config().port.to_string())
        .env("CDKTR_LOGS_LISTENING_PORT", p.bus().config().listening_port.to_string())
        .env(
            "CDKTR_LOGS_PUBLISHING_PORT",
            p.bus().config().publishing_port.to_string(),
        )
        .envs(vars.iter().copied());
    c
}

/// No CDKTR_ variable of the test's own environment reaches the child.
fn clean(c: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("CDKTR_") {
            c.env_remove(k);
        }
    }
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Keys under `dir`, and an in-memory principal that allows them.
fn secure_principal(dir: &Path) -> (TestKeys, Principal) {
    let keys = TestKeys::write(dir);
    let p = local_principal()
        .database(cdktr_store::Location::Memory)
        .security(Security::Curve(keys.authorizer()))
        .start()
        .unwrap();
    (keys, p)
}

#[test]
fn keygen_writes_a_private_secret_file_and_a_public_one_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cdktr-logs"));
        clean(&mut c);
        c.args(["keygen", "agent-1", "--role", "publisher", "--dir"])
            .arg(dir.path());
        run(c)
    };
    let first = keygen();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let (secret, public) = (dir.path().join("agent-1.key"), dir.path().join("agent-1.pub"));
    let pair = cdktr_log::curve::KeyPair::read(&secret).unwrap();
    let cert = cdktr_log::curve::Certificate::read(&public).unwrap();
    assert_eq!(cert.public, pair.public);
    assert_eq!(cert.role, Some(cdktr_log::curve::Role::Publisher));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = keygen();
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("agent-1.key"), "{}", text(&again.stderr));
    assert_eq!(
        cdktr_log::curve::KeyPair::read(&secret).unwrap().public,
        pair.public,
        "overwritten"
    );
}

#[test]
fn with_curve_an_agent_delivers_a_reader_queries_and_a_wrong_role_or_no_key_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, p) = secure_principal(dir.path());

    // The agent binary, with a publisher key: its line is stored.
    let mut agent = Command::new(workspace_binary("cdktr-agent"));
    clean(&mut agent);
    agent
        .env("CDKTR_PRINCIPAL_PORT", p.api_config().port.to_string())
        .env("CDKTR_LOGS_LISTENING_PORT", p.bus().config().listening_port.to_string())
        .env("CDKTR_SPOOL_DIR", dir.path().join("spool"))
        .envs(keys.client_vars("agent"))
        .args(["run", "--workflow-id", "wf-secure", "--", "echo", "over curve"]);
    let ran = run(agent);
    assert!(ran.status.success(), "{}", text(&ran.stderr));

    // A reader key reads it.
    let mut query = cli(&p, &keys.client_vars("reader"));
    query.args(["query", "-w", "wf-secure", "-o", "json", "--since", "1h"]);
    let read = run(query);
    assert!(read.status.success(), "{}", text(&read.stderr));
    assert!(text(&read.stdout).contains("over curve"), "{}", text(&read.stdout));

    // A publisher key may not query: refused, and said so.
    let mut query = cli(&p, &keys.client_vars("agent"));
    query.args(["query", "-w", "wf-secure", "--since", "1h"]);
    let refused = run(query);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(said.contains("forbidden") && said.contains("publisher"), "{said}");

    // No key at all: the handshake never completes, so no answer.
    let mut query = cli(&p, &[]);
    query.args(["query", "-w", "wf-secure", "--since", "1h", "--timeout", "1s"]);
    let plain = run(query);
    assert_eq!(plain.status.code(), Some(1));
    assert!(text(&plain.stderr).contains("no answer"), "{}", text(&plain.stderr));

    // A key the principal does not hold: refused at the handshake, counted.
    let before = p.stats().refused;
    let stranger = cdktr_log::curve::ClientKeys {
        pair: cdktr_log::curve::KeyPair::generate().unwrap(),
        server: keys.client("reader").server,
    };
    let mut client = cdktr_log::ApiClient::connect_with(&p.api_config(), Some(&stranger))
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(1));
    assert!(matches!(client.ping(), Err(cdktr_log::Error::Timeout { .. })));
    assert!(p.stats().refused > before, "the stranger's key was not refused");

    let stats = p.stats();
    assert!(stats.refused >= 1, "{stats:?}");
    assert!(stats.persisted >= 1, "{stats:?}");
    p.shutdown().unwrap();
}

#[test]
fn the_principal_will_not_bind_beyond_loopback_in_clear() {
    let mut c = Command::new(workspace_binary("cdktr-principal"));
    clean(&mut c);
    c.args(["--db", ":memory:", "--host", "0.0.0.0"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(said.contains("0.0.0.0") && said.contains("--insecure"), "{said}");
    // The library says the same.
    let refused = Principal::builder()
        .host("0.0.0.0")
        .database(cdktr_store::Location::Memory)
        .start();
    assert!(
        matches!(refused, Err(cdktr_principal::Error::Insecure { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_removed_key_is_refused_by_the_api_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, p) = secure_principal(dir.path());
    let mut reader = cdktr_log::ApiClient::connect_with(&p.api_config(), Some(&keys.client("reader"))).unwrap();
    assert!(reader.stats().is_ok());
    std::fs::remove_file(keys.authorized.join("reader.pub")).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        match reader.stats() {
            Err(cdktr_log::Error::Api { kind, message }) => break (kind, message),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            std::time::Instant::now() < end,
            "a removed key was still answered after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(refused.0, cdktr_log::ErrorKind::Forbidden);
    assert!(refused.1.contains("no longer authorized"), "{}", refused.1);
    assert!(p.stats().refused >= 1);
    p.shutdown().unwrap();
}
