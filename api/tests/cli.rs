//! The `api` binary at a shell: bad settings stop it with one line naming the setting, and
//! `api create-user` adds a user who can then log in.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use serde_json::json;
use support::TestApi;
use testkit::{NatsServer, TestDb};

fn api_command(db: &TestDb, nats: &NatsServer) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats.url())
        .env("NATS_CONNECT_TIMEOUT_SECS", "1")
        .env("API_ADDR", "127.0.0.1:0")
        // Run where no .env file is, so only what the test sets counts.
        .current_dir(std::env::temp_dir());
    command
}

#[tokio::test]
async fn a_missing_or_short_secret_key_stops_the_api_with_one_line_naming_it() {
    let db = TestDb::new().await;
    let nats = NatsServer::start();

    let output = api_command(&db, &nats).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("SECRET_KEY"), "{stderr}");

    let output = api_command(&db, &nats)
        .env("SECRET_KEY", "too-short")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("SECRET_KEY") && stderr.contains("at least 32 bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the secret is never printed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_from_a_shell_makes_a_user_who_can_log_in() {
    let api = TestApi::start().await;
    let mut child = api_command(&api.db, &api.nats)
        .args([
            "create-user",
            "--username",
            "shelly",
            "--email",
            "s@example.com",
            "--role",
            "analyst",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"shelly-secret-pw\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("created user shelly"));

    let (access, _) = api.login("shelly").await;
    let resp = api.call("GET", "/api/alerts/", Some(&access), None).await;
    assert_eq!(resp.status, StatusCode::OK);

    let mut weak = api_command(&api.db, &api.nats)
        .args(["create-user", "--username", "weak", "--role", "ADMIN"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    weak.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let output = weak.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("too short"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_username_and_password_create_the_first_admin_once() {
    let api = TestApi::start_with(&[
        "--admin-username",
        "root",
        "--admin-password",
        "root-secret-pw",
    ])
    .await;
    let body = json!({"username": "root", "password": "root-secret-pw"});
    let resp = api
        .call("POST", "/api/auth/login/", None, Some(body.clone()))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let access = resp.json["access"].as_str().unwrap();
    let resp = api.call("GET", "/api/users/", Some(access), None).await;
    assert_eq!(resp.json["count"], 1);
    assert_eq!(resp.json["results"][0]["role"], "ADMIN");
    assert!(resp.json["results"][0].get("password").is_none());
    assert!(!resp.text.contains("argon2"), "no hash is ever returned");

    // A second start with the same settings finds the admin and creates nothing.
    let again = api::build_state(support::settings(
        &api.nats,
        &api.db,
        &[
            "--admin-username",
            "root",
            "--admin-password",
            "another-password",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(again.storage.count_users().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_quick_start_admin_is_allowed_only_locally_and_only_when_asked() {
    let nats = NatsServer::start();
    let db = TestDb::new().await;
    let weak = ["--admin-username", "Admin", "--admin-password", "Admin"];
    let err = api::build_state(support::settings(&nats, &db, &weak))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("ADMIN_PASSWORD"), "{err}");

    let mut public = weak.to_vec();
    public.extend(["--local-quickstart", "--api-addr", "0.0.0.0:0"]);
    let err = api::build_state(support::settings(&nats, &db, &public))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");

    let mut local = weak.to_vec();
    local.push("--local-quickstart");
    let state = api::build_state(support::settings(&nats, &db, &local))
        .await
        .unwrap();
    let (user, _) = state
        .storage
        .user_with_password_hash("Admin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.role, common::domain::Role::Admin);
}
