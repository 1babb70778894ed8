//! `threatctl login`, `alerts`, `ack` and `resolve` against a real api, built in-process over
//! a private nats-server and a fresh database.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use api::settings::Settings;
use chrono::Utc;
use clap::Parser;
use common::domain::{AlertStatus, EventIn, Role, Severity};
use common::storage::{EventRecord, NewUser};
use serde_json::{Value, json};
use support::{Run, run, threatctl};
use testkit::{NatsServer, TestDb};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECRET_KEY: &str = "threatctl-test-secret-key-of-32-bytes-or-more";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

/// A running api with a user and an alert.
struct Api {
    url: String,
    state: api::State,
    alert_id: i64,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    _nats: NatsServer,
    _db: TestDb,
}

impl Api {
    async fn start() -> Api {
        let nats = NatsServer::start();
        let db = TestDb::new().await;
        let settings = Args::try_parse_from([
            "api",
            "--nats-url",
            &nats.url(),
            "--database-url",
            db.url(),
            "--secret-key",
            SECRET_KEY,
            "--api-addr",
            "127.0.0.1:0",
        ])
        .unwrap()
        .settings;
        let app = api::Application::build(settings).await.unwrap();
        let url = format!("http://{}", app.local_addr().unwrap());
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));

        for (username, role) in [("olivia", Role::Admin), ("andy", Role::Analyst)] {
            let password_hash = state.passwords.hash(&password_of(username)).await.unwrap();
            let user = NewUser {
                username: username.to_owned(),
                email: format!("{username}@example.com"),
                password_hash,
                role,
                is_active: true,
            };
            state.storage.create_user(&user, Utc::now()).await.unwrap();
        }

        let event = EventIn::from_value(json!({
            "sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "HIGH",
            "description": "1,024 ports probed from 203.0.113.9",
        }))
        .unwrap();
        let record = EventRecord {
            uid: "rest-test-1".to_owned(),
            event,
            created_at: Utc::now(),
        };
        let stored = state
            .storage
            .store_events(&[record], Severity::High)
            .await
            .unwrap();
        let created = state
            .storage
            .create_alerts(&stored.to_escalate, Utc::now())
            .await
            .unwrap();
        let alert_id = created.alerts[0].id;
        Api {
            url,
            state,
            alert_id,
            shutdown,
            server,
            _nats: nats,
            _db: db,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }

    async fn status(&self) -> AlertStatus {
        self.state
            .storage
            .alert_by_id(self.alert_id)
            .await
            .unwrap()
            .unwrap()
            .status
    }
}

fn password_of(username: &str) -> String {
    format!("{username}-secret-pw")
}

/// threatctl with the token file given through THREATCTL_TOKEN_FILE.
fn threatctl_with(home: &Path, token_file: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = threatctl(home);
    command.env("THREATCTL_TOKEN_FILE", token_file).args(args);
    command
}

async fn login(api: &Api, home: &Path, token_file: &Path, username: &str, password: &str) -> Run {
    let command = threatctl_with(
        home,
        token_file,
        &[
            "login",
            "--url",
            &api.url,
            "--username",
            username,
            "--password-stdin",
        ],
    );
    run(command, Some(&format!("{password}\n"))).await
}

fn token_file(home: &Path) -> PathBuf {
    home.join("tokens").join("token.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_list_acknowledge_and_resolve() {
    let api = Api::start().await;
    let home = tempfile::tempdir().unwrap();
    let tokens = token_file(home.path());
    let id = api.alert_id.to_string();

    let out = login(&api, home.path(), &tokens, "olivia", &password_of("olivia")).await;
    assert!(
        out.ok()
            .starts_with(&format!("logged in to {} as olivia", api.url)),
        "{out:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tokens).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&tokens).unwrap()).unwrap();
    assert_eq!(saved["url"], api.url.as_str());
    assert!(saved["access"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(saved["refresh"].as_str().is_some_and(|t| !t.is_empty()));

    let out = run(
        threatctl_with(home.path(), &tokens, &["alerts", "--json"]),
        None,
    )
    .await;
    let page: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(page["count"], 1);
    assert_eq!(page["results"][0]["id"], api.alert_id);
    assert_eq!(page["results"][0]["status"], "OPEN");
    assert_eq!(page["results"][0]["sourceName"], "fw-edge-01");

    let out = run(
        threatctl_with(home.path(), &tokens, &["alerts", "--status", "open"]),
        None,
    )
    .await;
    let table = out.ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("HIGH") && lines[1].contains("OPEN"),
        "{table}"
    );
    assert!(lines[1].ends_with("port_scan  fw-edge-01"), "{table}");
    assert_eq!(lines[2], "page 1 of 1 (count 1)");

    let out = run(
        threatctl_with(
            home.path(),
            &tokens,
            &["alerts", "--status", "RESOLVED", "--json"],
        ),
        None,
    )
    .await;
    let page: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(page["count"], 0);

    let out = run(
        threatctl_with(
            home.path(),
            &tokens,
            &["ack", &id, "--note", "looking into it"],
        ),
        None,
    )
    .await;
    assert!(
        out.ok().starts_with(&format!(
            "alert {id} is ACKNOWLEDGED (HIGH port_scan from fw-edge-01"
        )),
        "{out:?}"
    );
    assert_eq!(api.status().await, AlertStatus::Acknowledged);
    let history = api
        .state
        .storage
        .status_history(api.alert_id)
        .await
        .unwrap();
    assert_eq!(
        history.last().unwrap().note.as_deref(),
        Some("looking into it")
    );

    // An access token the api refuses is renewed once with the refresh token, and saved.
    let mut spoiled = saved.clone();
    spoiled["access"] = json!("not-a-valid-token");
    std::fs::write(&tokens, spoiled.to_string()).unwrap();
    let out = run(
        threatctl_with(home.path(), &tokens, &["resolve", &id, "--json"]),
        None,
    )
    .await;
    let alert: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(alert["status"], "RESOLVED");
    assert_eq!(api.status().await, AlertStatus::Resolved);
    let renewed: Value = serde_json::from_str(&std::fs::read_to_string(&tokens).unwrap()).unwrap();
    assert_ne!(renewed["access"], "not-a-valid-token");
    assert_eq!(renewed["refresh"], saved["refresh"]);

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_one_line_with_the_apis_words() {
    let api = Api::start().await;
    let home = tempfile::tempdir().unwrap();
    let tokens = token_file(home.path());

    let out = login(&api, home.path(), &tokens, "olivia", "wrong-password").await;
    let line = out.one_line_error();
    assert!(
        line.contains("No active account found with the given credentials"),
        "{line}"
    );
    assert!(line.contains("401"), "{line}");
    assert!(!tokens.exists(), "nothing saved");

    let out = run(threatctl_with(home.path(), &tokens, &["alerts"]), None).await;
    assert!(out.one_line_error().contains("threatctl login"), "{out:?}");

    login(&api, home.path(), &tokens, "andy", &password_of("andy"))
        .await
        .ok();
    let out = run(
        threatctl_with(home.path(), &tokens, &["ack", &api.alert_id.to_string()]),
        None,
    )
    .await;
    let line = out.one_line_error();
    assert!(line.contains("You do not have permission"), "{line}");
    assert_eq!(api.status().await, AlertStatus::Open);

    login(&api, home.path(), &tokens, "olivia", &password_of("olivia"))
        .await
        .ok();
    let out = run(
        threatctl_with(home.path(), &tokens, &["resolve", "999999"]),
        None,
    )
    .await;
    assert!(out.one_line_error().contains("Not found."), "{out:?}");

    let out = run(
        threatctl_with(home.path(), &tokens, &["alerts", "--page", "9"]),
        None,
    )
    .await;
    assert!(out.one_line_error().contains("Invalid page."), "{out:?}");

    // Nobody listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let command = threatctl_with(
        home.path(),
        &tokens,
        &[
            "login",
            "--url",
            &closed,
            "--username",
            "andy",
            "--password-stdin",
        ],
    );
    let out = run(command, Some("whatever\n")).await;
    let line = out.one_line_error();
    assert!(
        line.starts_with(&format!("threatctl: cannot reach the API at {closed}")),
        "{line}"
    );

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_assign_reopen_bulk_and_summary() {
    let api = Api::start().await;
    let home = tempfile::tempdir().unwrap();
    let tokens = token_file(home.path());
    let id = api.alert_id.to_string();
    login(&api, home.path(), &tokens, "olivia", &password_of("olivia")).await;
    let users = api.state.storage.list_users(10, 0).await.unwrap();
    let olivia = users.iter().find(|u| u.username == "olivia").unwrap();
    let cmd = |args: &[&str]| threatctl_with(home.path(), &tokens, args);

    let out = run(cmd(&["note", &id, "called the owner"]), None).await;
    assert!(
        out.ok().contains(&format!("added to alert {id}")),
        "{out:?}"
    );
    assert_eq!(
        api.state.storage.notes(api.alert_id).await.unwrap()[0].text,
        "called the owner"
    );

    let out = run(cmd(&["assign", &id, &olivia.id.to_string()]), None).await;
    assert_eq!(
        out.ok().trim(),
        format!("alert {id} is assigned to user {}", olivia.id)
    );
    let alert = api
        .state
        .storage
        .alert_by_id(api.alert_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alert.assignee, Some(olivia.id));

    let out = run(cmd(&["resolve", &id, "--reason", "benign"]), None).await;
    assert!(out.ok().contains("is RESOLVED"), "{out:?}");
    let alert = api
        .state
        .storage
        .alert_by_id(api.alert_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alert.close_reason.map(|r| r.as_str()), Some("benign"));
    let out = run(cmd(&["ack", &id]), None).await;
    assert!(
        out.one_line_error()
            .contains("Cannot change status from RESOLVED to ACKNOWLEDGED"),
        "{out:?}"
    );
    let out = run(cmd(&["reopen", &id]), None).await;
    assert!(out.ok().contains("is OPEN"), "{out:?}");

    // Not a terminal: a bulk action shows what it would do and needs --yes.
    let out = run(
        cmd(&["bulk", "acknowledge", "--filter", "status=OPEN"]),
        None,
    )
    .await;
    assert!(
        out.one_line_error()
            .contains("this would acknowledge 1 alerts: pass --yes"),
        "{out:?}"
    );
    assert_eq!(api.status().await, AlertStatus::Open);
    let out = run(
        cmd(&["bulk", "acknowledge", "--ids", &id, "--dry-run"]),
        None,
    )
    .await;
    assert_eq!(out.ok().trim(), "this would acknowledge 1 alerts");
    let out = run(
        cmd(&[
            "bulk",
            "acknowledge",
            "--filter",
            "status=OPEN",
            "--note",
            "triage",
            "--yes",
        ]),
        None,
    )
    .await;
    assert_eq!(
        out.ok().lines().next(),
        Some("1 of 1 alerts changed, 0 skipped")
    );
    assert_eq!(api.status().await, AlertStatus::Acknowledged);
    let out = run(cmd(&["bulk", "acknowledge", "--ids", &id, "--yes"]), None).await;
    assert!(
        out.ok()
            .contains(&format!("alert {id}: Nothing to change.")),
        "{out:?}"
    );

    let out = run(cmd(&["summary"]), None).await;
    let text = out.ok();
    assert!(
        text.contains("  ACKNOWLEDGED         0        0        1        0\n"),
        "{text}"
    );
    assert!(
        text.contains("top sensors (unresolved): fw-edge-01 1"),
        "{text}"
    );
    let out = run(cmd(&["summary", "--json"]), None).await;
    let summary: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(summary["by_status"]["ACKNOWLEDGED"]["HIGH"], 1);

    let out = run(cmd(&["alerts"]), None).await;
    let header = out.ok().lines().next().unwrap_or_default().to_owned();
    assert!(
        header.contains("LAST SEEN (UTC)") && header.contains("COUNT"),
        "{header}"
    );
    api.stop().await;
}
