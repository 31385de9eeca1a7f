//! Every variable in the README's configuration table: a bad value stops
//! each binary that reads it, and each builder, with an error naming it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdktr_log::testing::workspace_binary;
use cdktr_principal::testing::ANY_PORT_FLAGS;

const PRINCIPAL: &str = "cdktr-principal";
const AGENT: &str = "cdktr-agent";
const CLI: &str = "cdktr-logs";

/// Each variable, bad values for it, and the binaries that read it.
const CASES: &[(&str, &[&str], &[&str])] = &[
    ("CDKTR_PRINCIPAL_HOST", &["", " "], &[PRINCIPAL, AGENT, CLI]),
    (
        "CDKTR_PRINCIPAL_PORT",
        &["abc", "70000", "0", "-1"],
        &[PRINCIPAL, AGENT, CLI],
    ),
    (
        "CDKTR_LOGS_LISTENING_PORT",
        &["abc", "70000", "0"],
        &[PRINCIPAL, AGENT, CLI],
    ),
    (
        "CDKTR_LOGS_PUBLISHING_PORT",
        &["abc", "70000", ""],
        &[PRINCIPAL, AGENT, CLI],
    ),
    ("CDKTR_LOG_FLUSH_INTERVAL_MS", &["abc", "0", "1.5", ""], &[PRINCIPAL]),
    ("CDKTR_DB_PATH", &["", "  "], &[PRINCIPAL]),
    ("CDKTR_DB_MEMORY_LIMIT", &["lots", "12", "1 parsec", ""], &[PRINCIPAL]),
    ("CDKTR_DB_THREADS", &["abc", "0", "-2", ""], &[PRINCIPAL]),
    (
        "CDKTR_DB_CHECKPOINT_THRESHOLD",
        &["big", "16", "1 parsec", ""],
        &[PRINCIPAL],
    ),
    ("CDKTR_QUERY_TIMEOUT_MS", &["abc", "0", "-1", ""], &[PRINCIPAL]),
    ("CDKTR_DB_MIN_FREE_SPACE", &["lots", "-1GB", "101%", ""], &[PRINCIPAL]),
    ("CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS", &["abc", "0", ""], &[PRINCIPAL]),
    ("CDKTR_HOT_RETENTION", &["abc", "-1", "", "7 parsecs"], &[PRINCIPAL]),
    ("CDKTR_ARCHIVE_RETENTION", &["abc", "-1d", ""], &[PRINCIPAL]),
    ("CDKTR_ARCHIVE_DIR", &["", " "], &[PRINCIPAL]),
    ("CDKTR_AGENT_ID", &["", " "], &[AGENT]),
    ("CDKTR_AGENT_HEARTBEAT_INTERVAL_MS", &["abc", "0", ""], &[AGENT]),
    ("CDKTR_SPOOL_DIR", &["", " "], &[AGENT]),
    ("CDKTR_AGENT_SHUTDOWN_TIMEOUT_MS", &["abc", "0", "-5"], &[AGENT]),
    // Alone, or naming a file that is not there.
    (
        "CDKTR_CURVE_SECRET_KEY",
        &["", "/nonexistent/cdktr.key"],
        &[PRINCIPAL, AGENT, CLI],
    ),
    (
        "CDKTR_CURVE_SERVER_KEY",
        &["", "/nonexistent/principal.pub"],
        &[AGENT, CLI],
    ),
    ("CDKTR_AUTHORIZED_KEYS_DIR", &["", "/nonexistent/keys"], &[PRINCIPAL]),
];

/// The variables the README's configuration table lists.
fn readme_variables() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap();
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|v| v.starts_with("CDKTR_"))
        .map(String::from)
        .collect()
}

#[test]
fn every_variable_in_the_readme_has_cases_here() {
    let here: BTreeSet<String> = CASES.iter().map(|(v, _, _)| v.to_string()).collect();
    assert_eq!(readme_variables(), here);
}

fn binary(name: &str) -> PathBuf {
    if name == CLI {
        PathBuf::from(env!("CARGO_BIN_EXE_cdktr-logs"))
    } else {
        workspace_binary(name)
    }
}

/// Runs `name` with one variable set; returns (exit code, stderr). A
/// binary that does not stop within a minute has taken the value: fail.
fn run(name: &str, var: &str, value: &str, home: &std::path::Path) -> (Option<i32>, String) {
    let mut c = Command::new(binary(name));
    match name {
        // Free ports if the value were taken; --db wins over CDKTR_DB_PATH.
        PRINCIPAL if var == "CDKTR_DB_PATH" => c.args(ANY_PORT_FLAGS),
        PRINCIPAL => c.args(["--db", ":memory:"]).args(ANY_PORT_FLAGS),
        AGENT => c.args(["run", "--workflow-id", "w", "--", "true"]),
        _ => c.args(["stats", "--timeout", "1s"]),
    };
    // Nothing else set: defaults only, and no file outside the test's home.
    for (k, _) in std::env::vars() {
        if k.starts_with("CDKTR_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .env("HOME", home)
        .env(var, value)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} with {var}={value:?} kept running: the value was taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_value_stops_each_binary_with_the_variable_named() {
    let home = tempfile::tempdir().unwrap();
    for &(var, bad, binaries) in CASES {
        for &name in binaries {
            for &value in bad {
                let (code, err) = run(name, var, value, home.path());
                assert!(
                    matches!(code, Some(1 | 2)),
                    "{name} {var}={value:?}: exit {code:?}, {err}"
                );
                assert!(err.contains(var), "{name} {var}={value:?}: {err}");
                assert_eq!(err.trim().lines().count(), 1, "{name} {var}={value:?}: {err}");
            }
        }
    }
}

#[test]
fn a_bad_value_stops_each_builder_with_the_variable_named() {
    for &(var, bad, binaries) in CASES {
        for &value in bad {
            let get = |k: &str| (k == var).then(|| value.to_string());
            let mut errors = Vec::new();
            if binaries.contains(&PRINCIPAL) {
                errors.push(
                    cdktr_principal::PrincipalBuilder::from_lookup(get)
                        .unwrap_err()
                        .to_string(),
                );
            }
            if binaries.contains(&AGENT) {
                errors.push(cdktr_agent::AgentConfig::from_lookup(get).unwrap_err().to_string());
            }
            if binaries.contains(&CLI) {
                let api = cdktr_log::ApiConfig::from_lookup(get).err();
                let bus = cdktr_log::BusConfig::from_lookup(get).err();
                let keys = cdktr_log::curve::ClientKeys::from_lookup(&get).err();
                let refused = api.or(bus).or(keys);
                errors.push(refused.expect("the CLI's configuration refuses it").to_string());
            }
            for e in errors {
                assert!(e.contains(var), "{var}={value:?}: {e}");
            }
        }
    }
}

#[test]
fn help_shows_each_flags_variable_and_a_flag_wins_over_its_variable() {
    for (name, vars) in [
        (
            PRINCIPAL,
            &[
                "CDKTR_DB_PATH",
                "CDKTR_PRINCIPAL_HOST",
                "CDKTR_PRINCIPAL_PORT",
                "CDKTR_LOGS_LISTENING_PORT",
                "CDKTR_LOGS_PUBLISHING_PORT",
                "CDKTR_LOG_FLUSH_INTERVAL_MS",
                "CDKTR_DB_MIN_FREE_SPACE",
                "CDKTR_QUERY_TIMEOUT_MS",
                "CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS",
                "CDKTR_HOT_RETENTION",
                "CDKTR_ARCHIVE_RETENTION",
                "CDKTR_ARCHIVE_DIR",
            ][..],
        ),
        (
            CLI,
            &[
                "CDKTR_PRINCIPAL_HOST",
                "CDKTR_PRINCIPAL_PORT",
                "CDKTR_LOGS_PUBLISHING_PORT",
            ],
        ),
    ] {
        let out = Command::new(binary(name)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for var in vars {
            assert!(help.contains(&format!("[env: {var}")), "{name} --help: {var}\n{help}");
        }
    }
    // The CLI: the variable points at nothing, the flag at the principal.
    let principal = cdktr_principal::testing::local_principal()
        .database(cdktr_store::Location::Memory)
        .start()
        .unwrap();
    let port = principal.api_config().port.to_string();
    let nowhere = cdktr_log::testing::free_port().to_string();
    let stats = |args: &[&str]| {
        Command::new(binary(CLI))
            .args(["stats", "-o", "json", "--timeout", "2s"])
            .args(args)
            .env("CDKTR_PRINCIPAL_PORT", &nowhere)
            .output()
            .unwrap()
    };
    let out = stats(&["--api-port", &port]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"uptime_ms\""));
    let out = stats(&[]);
    assert!(!out.status.success(), "the variable's port has no principal");
    let out = stats(&["--api-port", "abc"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--api-port"), "{err}");
    principal.shutdown().unwrap();
}
