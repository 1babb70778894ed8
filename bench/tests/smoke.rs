//! Smoke test of the whole benchmark with tiny figures: the `threatmon-bench` binary runs the
//! raw limits, the pipeline on SQLite (and on PostgreSQL when `TEST_POSTGRES_URL` names a
//! server), the scaling run, the folding and delivery comparisons and the api, with the debug
//! builds of the services, and must exit successfully with every correctness check passed.
//! It starts its own nats-server.
//!
//! The services are found beside the bench binary (`target/debug`); the test builds them
//! there first (`threatmon_tests::binary`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn a_tiny_benchmark_passes_every_check_on_both_backends() {
    let bench = Path::new(env!("CARGO_BIN_EXE_threatmon-bench"));
    let bin_dir = bench.parent().expect("the bench binary has a directory");
    for service in ["ingestor", "alerter", "api"] {
        // Builds every binary of the workspace once (cargo test builds only the bins of
        // packages with integration tests), beside the bench binary, where it looks for them.
        let built = threatmon_tests::binary(service);
        assert_eq!(
            built.parent(),
            Some(bin_dir),
            "{} is not beside the bench",
            built.display()
        );
    }
    let postgres = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "off".to_owned());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report_path = dir.path().join("BENCHMARKS.md");
    let started = Instant::now();
    let output = Command::new(bench)
        .args([
            "--events",
            "3000",
            "--runs",
            "1",
            "--raw-messages",
            "3000",
            "--api-seconds",
            "0.3",
            "--latency-seconds",
            "1",
            "--latency-warm-up-seconds",
            "0.5",
            "--postgres-url",
            &postgres,
            "--out",
        ])
        .arg(&report_path)
        // The report's commit line runs git; the working directory is the crate's.
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running threatmon-bench");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "threatmon-bench failed ({}):\n{stderr}",
        output.status
    );
    let report = std::fs::read_to_string(&report_path).expect("the report was written");
    assert!(
        report.contains("## Correctness checks"),
        "no correctness table:\n{report}"
    );
    assert!(!report.contains("FAILED"), "a check failed:\n{report}");
    assert!(
        report.contains("## Pipeline on SQLite") && report.contains("## Pipeline on PostgreSQL"),
        "a backend's pipeline section is missing:\n{report}"
    );
    assert!(
        report.contains("| SQLite | v4 | 1+1 |") && report.contains("| SQLite | v7 | 1+1 |"),
        "SQLite checks of both uid kinds are missing:\n{report}"
    );
    for row in [
        "| SQLite | v4 | 1+1, 1,000 keys, `none` |",
        "| SQLite | v4 | 1+1, 1,000 keys, folded |",
    ] {
        assert!(report.contains(row), "no folding checks `{row}`:\n{report}");
    }
    for row in [
        "| SQLite | v4 | 1+1, delivery off |",
        "| SQLite | v4 | 1+1, 2 webhook routes |",
    ] {
        assert!(
            report.contains(row),
            "no delivery comparison checks `{row}`:\n{report}"
        );
    }
    assert!(
        report.contains("GET /api/alerts/summary/") && report.contains("?q=ransomware"),
        "the summary and search scenarios are missing:\n{report}"
    );
    if postgres != "off" {
        for row in [
            "| PostgreSQL | v4 | 1+1 |",
            "| PostgreSQL | v7 | 1+1 |",
            "| PostgreSQL | v4 | 2+2 |",
            "| PostgreSQL | v4 | 1+1, 1,000 keys, folded |",
        ] {
            assert!(
                report.contains(row),
                "no PostgreSQL checks `{row}`:\n{report}"
            );
        }
    }
    eprintln!("smoke benchmark took {took:?}\n{stderr}");
}
