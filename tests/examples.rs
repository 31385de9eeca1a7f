//! Runs every example as a child process: an example that does not run is a
//! broken promise to the reader.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

/// Runs `command` (an example) to its end; its standard output, once it
/// has exited successfully.
fn succeeds(command: &mut Command) -> String {
    let out = command.output().expect("cargo test builds examples");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A principal in this process on free ports, with an in-memory database.
fn principal() -> cdktr_principal::Principal {
    cdktr_principal::Principal::builder()
        .bus(cdktr_logs::BusConfig {
            host: "127.0.0.1".into(),
            listening_port: 0,
            publishing_port: 0,
        })
        .api(cdktr_logs::ApiConfig {
            host: "127.0.0.1".into(),
            port: 0,
        })
        .database(cdktr_logs::store::Location::Memory)
        .flush_interval(std::time::Duration::from_millis(100))
        .start()
        .unwrap()
}

/// The load generator, pointed at `principal`.
fn loadgen(principal: &cdktr_principal::Principal) -> Command {
    let bus = principal.bus().config();
    let mut command = Command::new(example("loadgen"));
    command
        .env("CDKTR_LOGS_LISTENING_PORT", bus.listening_port.to_string())
        .env("CDKTR_LOGS_PUBLISHING_PORT", bus.publishing_port.to_string())
        .env("CDKTR_PRINCIPAL_PORT", principal.api_config().port.to_string());
    command
}

#[test]
fn pubsub_runs_and_reports_every_line() {
    let stdout = succeeds(&mut Command::new(example("pubsub")));
    assert_eq!(stdout.matches("live: ").count(), 3, "{stdout}");
    assert!(
        stdout.contains("WARN  etl/etl-20261127-1 extract/extract-1: row 7 has no id; skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 dropped") && stdout.contains("0 rejected"),
        "{stdout}"
    );
}

#[test]
fn loadgen_runs_against_a_principal_and_counts_what_is_stored() {
    let principal = principal();
    let stdout =
        succeeds(loadgen(&principal).args(["--publishers", "2", "--messages", "3000", "--rate", "20000", "--json"]));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(
        (v["sent"].as_u64(), v["stored"].as_u64()),
        (Some(3000), Some(3000)),
        "{v}"
    );
    assert!(v["latency_samples"].as_u64().unwrap() > 0, "{v}");
    assert!(v["principal_peak_rss_bytes"].as_u64().unwrap() > 0, "{v}");
    // The principal runs in this process: its CPU time is this process's.
    assert!(v["principal_cpu_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["lines_per_principal_core_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["payload_mb_per_s"].as_f64().unwrap() > 0.0, "{v}");
    principal.shutdown().unwrap();
}

#[test]
fn loadgen_with_two_publisher_counts_alternates_them_each_round_and_reports_medians() {
    let principal = principal();
    let stdout = succeeds(
        loadgen(&principal)
            .args(["--publishers", "1,3", "--rounds", "3", "--messages", "600"])
            .args(["--no-subscriber", "--json"]),
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let runs = v["runs"].as_array().expect("runs");
    // Round by round, the order turning: 1 3 | 3 1 | 1 3.
    let order: Vec<u64> = runs.iter().map(|r| r["publishers"].as_u64().unwrap()).collect();
    assert_eq!(order, [1, 3, 3, 1, 1, 3], "{v}");
    for r in runs {
        assert_eq!(
            (r["sent"].as_u64(), r["stored"].as_u64()),
            (Some(600), Some(600)),
            "{r}"
        );
    }
    let ids: std::collections::HashSet<_> = runs.iter().map(|r| r["workflow_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6, "each run writes its own workflow: {v}");
    let summary = v["summary"].as_array().expect("summary");
    let rates = |i: usize| -> Vec<f64> {
        let p = summary[i]["publishers"].as_u64().unwrap();
        runs.iter()
            .filter(|r| r["publishers"].as_u64() == Some(p))
            .map(|r| r["sustained_per_s"].as_f64().unwrap())
            .collect()
    };
    for (i, count) in summary.iter().enumerate() {
        let mut sorted = rates(i);
        sorted.sort_by(f64::total_cmp);
        assert_eq!(count["median_per_s"].as_f64(), Some(sorted[1]), "{v}");
    }
    assert_eq!(summary[0]["median_ratio_to_first"].as_f64(), Some(1.0), "{v}");
    // Each round's ratio is of the two runs of that round.
    let (first, second) = (rates(0), rates(1));
    let ratios: Vec<f64> = summary[1]["ratios_to_first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let expected: Vec<f64> = second.iter().zip(&first).map(|(b, a)| b / a).collect();
    // serde_json parses floats to within an ulp, not exactly.
    let same = |a: &f64, b: &f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(
        ratios.len() == 3 && ratios.iter().zip(&expected).all(|(a, b)| same(a, b)),
        "{ratios:?} {expected:?}"
    );
    principal.shutdown().unwrap();
}

#[test]
fn archive_moves_every_line_and_queries_return_the_same_after() {
    let stdout = succeeds(Command::new(example("archive")).args([
        "--lines",
        "20000",
        "--instances",
        "50",
        "--ingest",
        "5000",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["same_results"], true, "{v}");
    assert!(v["archive_files"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["archive_bytes_per_line"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn embed_orchestrator_logs_through_tracing_and_prints_its_timeline() {
    let stdout = succeeds(&mut Command::new(example("embed_orchestrator")));
    assert!(stdout.contains("17 events published, 17 stored, 0 dropped"), "{stdout}");
    for line in [
        "workflow   INFO  starting tasks=3",
        "transform  WARN  batch done with skips batch=2 rows_skipped=3 reason=\"malformed date\"",
        "load       COMPLETED",
        "workflow   COMPLETED",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }
}
