//! schemathesis over every operation of `/api/schema/`, against the real server with an
//! admin's token, with every check (`--checks all`, but one argued below): any finding fails
//! the test, with schemathesis's report. The settings and their few, argued exceptions are in
//! `tests/schemathesis/schemathesis.toml`.
//!
//! schemathesis comes from the venv that `./scripts/tools` makes (scripts/test runs it and
//! sets `SCHEMATHESIS`); without it this test fails, saying how to get it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::domain::{EventIn, Role, Severity};
use common::storage::EventRecord;
use support::ServedApi;

/// Test cases per operation and phase: enough to reach every status, small enough that the
/// run stays near a minute on a busy CI machine.
const MAX_EXAMPLES: &str = "20";
/// The whole run may take this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(420);

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/threatmon/venv/bin/schemathesis"))
        })
        .expect("SCHEMATHESIS or HOME is set");
    assert!(
        path.is_file(),
        "schemathesis not found at {}: run ./scripts/tools (it makes the venv \
         ~/.cache/threatmon/venv with the pinned schemathesis), or set SCHEMATHESIS to its path",
        path.display()
    );
    path
}

/// A stored HIGH event and its alert, so the id routes have something to find.
async fn seed_alert(api: &ServedApi) {
    let event = EventIn::from_value(
        serde_json::json!({"sourceName": "fw", "eventType": "port_scan", "severity": "HIGH"}),
    )
    .unwrap();
    let record = EventRecord {
        uid: "schemathesis-seed".to_owned(),
        event,
        created_at: chrono::Utc::now(),
    };
    let stored = api
        .state
        .storage
        .store_events(&[record], Severity::High)
        .await
        .unwrap();
    api.state
        .storage
        .create_alerts(&stored.to_escalate, chrono::Utc::now())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_in_any_operation() {
    let executable = schemathesis();
    let api = ServedApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    seed_alert(&api).await;

    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemathesis/schemathesis.toml"
    );
    // Its working directory is a temporary one: schemathesis may leave files behind.
    let workdir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = tokio::process::Command::new(&executable)
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{}/api/schema/", api.base_url))
        .args(["--checks", "all"])
        // The api's one DELETE, DELETE /api/users/{id}/, deactivates: the user is kept for
        // the audit trail and stays readable (is_active false), as documented, so a user
        // "still there" after it is by design, not a use-after-free. (Only on the command
        // line: it overrides the config file's check settings, and the stateful phase, the
        // only one with this check, reads no per-operation ones.)
        .args(["--exclude-checks", "use_after_free"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", MAX_EXAMPLES])
        // No NUL characters: PostgreSQL text cannot hold them, so the api refuses them in
        // every field, which no JSON Schema keyword can say of nested values.
        .args(["--generation-allow-x00", "false"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .current_dir(workdir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|err| panic!("start {}: {err}", executable.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    println!("schemathesis took {:?}", started.elapsed());
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}",
        output.status
    );
    // Every operation was tested, none skipped for an unusable schema.
    let operations = api::routes::ROUTES.len();
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "not all {operations} operations were tested:\n{report}"
    );
    api.stop().await;
}
