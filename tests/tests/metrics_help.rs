//! Every metrics family the three services expose follows Prometheus's conventions: `# HELP`
//! and `# TYPE` for each, counters named `_total`, base units. The compiled `ingestor`,
//! `alerter` and `api` run as separate processes (each with its own recorder, as deployed)
//! over a private nats-server and a fresh database; after some traffic through all of them,
//! each one's `/metrics` is scraped and checked, by `promtool check metrics` as well when
//! it is installed (Debian's `prometheus` package has it).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::ops;
use common::storage::Storage;
use serde_json::{Value, json};
use testkit::{NatsServer, TestDb, eventually, free_port};
use threatmon_tests::{binary, http};

const PATIENCE: Duration = Duration::from_secs(120);
const SECRET_KEY: &str = "metrics-secret-key-that-is-long-enough-for-hs256";
const ADMIN: (&str, &str) = ("metrics-admin", "metrics-admin-password");

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(port: u16, path: &str) {
    eventually(
        PATIENCE,
        &format!("127.0.0.1:{port}{path} to answer 200"),
        || async move {
            matches!(http(port, "GET", path, None, None).await, Ok((200, _))).then_some(())
        },
    )
    .await;
}

/// A family's samples in Prometheus text, summed over their labels.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(port: u16) -> String {
    let (status, text) = http(port, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

/// `promtool check metrics` on `text`, when promtool is installed: its complaints, if any.
fn promtool(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(if output.status.success() {
        String::new()
    } else {
        said
    })
}

/// Checks one service's scrape: clean exposition, every family one of [`ops::FAMILIES`]
/// with that family's help, and each family in `expected` present.
fn check(service: &str, text: &str, expected: &[&str]) {
    let problems = ops::exposition_problems(text);
    assert!(problems.is_empty(), "{service}: {problems:#?}\n{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        let family = ops::FAMILIES
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{service}: {name} is not one of ops::FAMILIES"));
        assert!(
            text.contains(&format!("# HELP {name} {}\n", family.help)),
            "{service}: {name} lacks its help text\n{text}"
        );
    }
    for name in expected {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{service}: no {name}\n{text}"
        );
    }
    if let Some(complaints) = promtool(text) {
        assert!(
            complaints.is_empty(),
            "{service}: promtool: {complaints}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_of_the_three_services_has_help_and_type() {
    let nats = NatsServer::start();
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let (ingestor_port, alerter_port, api_port) = (free_port(), free_port(), free_port());
    let spawn = |name: &str, metrics_port: Option<u16>| {
        let mut command = Command::new(binary(name));
        command
            .env("NATS_URL", nats.url())
            .env("DATABASE_URL", db.url())
            .env("SECRET_KEY", SECRET_KEY)
            .env("API_ADDR", format!("127.0.0.1:{api_port}"))
            .env("ADMIN_USERNAME", ADMIN.0)
            .env("ADMIN_PASSWORD", ADMIN.1)
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null());
        if let Some(port) = metrics_port {
            command.env("METRICS_ADDR", format!("127.0.0.1:{port}"));
        }
        Proc(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}")),
        )
    };
    let _ingestor = spawn("ingestor", Some(ingestor_port));
    let _alerter = spawn("alerter", Some(alerter_port));
    let _api = spawn("api", None);
    wait_ready(ingestor_port, "/readyz").await;
    wait_ready(alerter_port, "/readyz").await;
    wait_ready(api_port, "/readyz").await;

    // Traffic through every stage: events in over HTTP and NATS (one of them bad), an
    // alert made and acknowledged, pages read and missed.
    let login = json!({"username": ADMIN.0, "password": ADMIN.1}).to_string();
    let (status, text) = http(api_port, "POST", "/api/auth/login/", None, Some(&login))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let token = serde_json::from_str::<Value>(&text).unwrap()["access"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = json!([
        {"sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "HIGH"},
        {"sourceName": "fw-edge-01", "eventType": "login", "severity": "LOW"},
    ])
    .to_string();
    let (status, text) = http(
        api_port,
        "POST",
        "/api/events/",
        Some(&token),
        Some(&events),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{text}");
    let client = common::bus::connect(&nats.url(), "metrics-test", PATIENCE)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish("events.metrics-test", "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let storage = &storage;
    eventually(PATIENCE, "the alert to be made", || async move {
        (storage.count_alerts().await.ok()? == 1).then_some(())
    })
    .await;
    let (status, text) = http(api_port, "GET", "/api/alerts/", Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["results"][0]["id"]
        .as_i64()
        .unwrap();
    let patch = json!({"status": "ACKNOWLEDGED"}).to_string();
    let path = format!("/api/alerts/{id}/");
    let (status, text) = http(api_port, "PATCH", &path, Some(&token), Some(&patch))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, _) = http(api_port, "GET", "/api/alerts/0/", Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 404);

    // Counters move just after the commits; wait until they show all the work.
    let ingestor = eventually(PATIENCE, "the ingestor's counters", || async move {
        let text = scrape(ingestor_port).await;
        (total(&text, ops::EVENTS_STORED) == 2.0 && total(&text, ops::DEADLETTERS) == 1.0)
            .then_some(text)
    })
    .await;
    let alerter = eventually(PATIENCE, "the alerter's counters", || async move {
        let text = scrape(alerter_port).await;
        (total(&text, ops::ALERT_NOTIFICATIONS) >= 1.0).then_some(text)
    })
    .await;
    let api = scrape(api_port).await;

    check(
        "ingestor",
        &ingestor,
        &[
            ops::EVENTS_RECEIVED,
            ops::EVENTS_STORED,
            ops::EVENTS_ESCALATED,
            ops::DEADLETTERS,
            ops::BATCH_SIZE,
        ],
    );
    check(
        "alerter",
        &alerter,
        &[
            ops::ESCALATIONS_RECEIVED,
            ops::ALERTS_CREATED,
            ops::ALERT_NOTIFICATIONS,
            ops::BATCH_SIZE,
        ],
    );
    check("api", &api, &[ops::HTTP_REQUESTS, ops::HTTP_DURATION]);
}
