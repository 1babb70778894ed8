//! Notification routes through the API: Admins manage them, Analysts may not; a webhook's
//! secret is generated when omitted, shown once in the 201 and never again; invalid routes
//! and private targets are refused field by field; a route test sends for real and answers
//! with the attempt.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use axum::http::StatusCode;
use common::domain::Role;
use serde_json::{Value, json};
use support::TestApi;

#[tokio::test]
async fn admins_manage_routes_and_a_webhook_secret_is_shown_once() {
    let api = TestApi::start().await;
    let (_, admin) = api.user_with_token("route-admin", Role::Admin).await;
    let (_, analyst) = api.user_with_token("route-analyst", Role::Analyst).await;

    let made = api
        .call(
            "POST",
            "/api/notification-routes/",
            Some(&admin),
            Some(
                json!({"name": "soc", "kind": "webhook", "url": "https://hooks.example.com/t",
                "min_severity": "HIGH", "sources": ["fw-edge-01"]}),
            ),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let secret = made.json["secret"]
        .as_str()
        .expect("the secret, once")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(made.json["has_secret"], true);
    assert_eq!(
        made.json["on"],
        json!(["created", "severity_raised", "reopened"])
    );
    assert_eq!(
        made.json["repeat_every_secs"],
        Value::Null,
        "no reminders unless asked"
    );
    let id = made.json["id"].as_i64().unwrap();
    let path = format!("/api/notification-routes/{id}/");

    for (method, uri, body) in [
        ("GET", "/api/notification-routes/".to_owned(), None),
        ("GET", path.clone(), None),
        ("PATCH", path.clone(), Some(json!({"enabled": false}))),
        (
            "PATCH",
            path.clone(),
            Some(json!({"secret": secret.clone()})),
        ),
        (
            "PATCH",
            path.clone(),
            Some(json!({"repeat_every_secs": 3600})),
        ),
    ] {
        let resp = api.call(method, &uri, Some(&admin), body).await;
        assert_eq!(resp.status, StatusCode::OK, "{method} {uri}: {}", resp.text);
        assert!(
            !resp.text.contains(&secret),
            "{method} {uri} returned the secret"
        );
        assert!(
            !resp.text.contains("\"secret\""),
            "{method} {uri}: {}",
            resp.text
        );
    }
    let listed = api
        .call("GET", "/api/notification-routes/", Some(&admin), None)
        .await;
    assert_eq!(listed.json["count"], 1);
    assert_eq!(listed.json["results"][0]["enabled"], false);
    assert_eq!(listed.json["results"][0]["repeat_every_secs"], 3600);

    for (method, uri) in [("GET", "/api/notification-routes/"), ("GET", path.as_str())] {
        let resp = api.call(method, uri, Some(&analyst), None).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    let resp = api.call("DELETE", &path, Some(&analyst), None).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);

    let taken = api
        .call(
            "POST",
            "/api/notification-routes/",
            Some(&admin),
            Some(json!({"name": "soc", "kind": "slack", "url": "https://hooks.example.com/s"})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST);
    assert!(taken.json["name"].is_array(), "{}", taken.text);

    let deleted = api.call("DELETE", &path, Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api.call("GET", &path, Some(&admin), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_routes_and_private_targets_are_refused_field_by_field() {
    let api = TestApi::start().await;
    let (_, admin) = api.user_with_token("route-admin", Role::Admin).await;
    for (body, fields) in [
        (json!({}), &["name", "kind"][..]),
        (json!({"name": "x", "kind": "pager"}), &["kind"][..]),
        (json!({"name": "x", "kind": "webhook"}), &["url"][..]),
        (
            json!({"name": "x", "kind": "webhook", "url": "ftp://example.com"}),
            &["url"][..],
        ),
        (json!({"name": "x", "kind": "email"}), &["to"][..]),
        (
            json!({"name": "x", "kind": "email", "to": ["not an address"]}),
            &["to"][..],
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "https://e.com", "secret": "plain"}),
            &["secret"][..],
        ),
        (
            json!({"name": "x", "kind": "slack", "url": "https://e.com", "on": ["deleted"],
                "min_severity": "SEVERE", "repeat_every_secs": 1}),
            &["on", "min_severity", "repeat_every_secs"][..],
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/"}),
            &["url"][..],
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "http://169.254.169.254/"}),
            &["url"][..],
        ),
        (
            json!({"name": "x", "kind": "slack", "url": "http://localhost/"}),
            &["url"][..],
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "http://[::1]/"}),
            &["url"][..],
        ),
    ] {
        let resp = api
            .call(
                "POST",
                "/api/notification-routes/",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.text
        );
        for field in fields {
            assert!(
                resp.json[field].is_array(),
                "{body}: no {field} in {}",
                resp.text
            );
        }
    }
    let count = api
        .call("GET", "/api/notification-routes/", Some(&admin), None)
        .await;
    assert_eq!(count.json["count"], 0);
}

/// A tiny HTTP receiver on a thread: answers `status` once and hands back the request.
fn receive_once(status: u16) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        format!("{head}{}", String::from_utf8_lossy(&body))
    });
    (url, handle)
}

#[tokio::test]
async fn a_route_test_sends_for_real_and_answers_with_the_attempt() {
    let api = TestApi::start_with(&["--notify-allow-private-targets", "true"]).await;
    let (_, admin) = api.user_with_token("route-admin", Role::Admin).await;
    let (url, received) = receive_once(204);
    let made = api
        .call(
            "POST",
            "/api/notification-routes/",
            Some(&admin),
            Some(json!({"name": "test-me", "kind": "webhook", "url": url})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let secret = made.json["secret"].as_str().unwrap().to_owned();
    let id = made.json["id"].as_i64().unwrap();
    let tested = api
        .call(
            "POST",
            &format!("/api/notification-routes/{id}/test/"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
    assert_eq!(tested.json["outcome"], "delivered");
    assert_eq!(tested.json["status_code"], 204);
    assert_eq!(tested.json["trigger"], "test");
    assert_eq!(tested.json["route_name"], "test-me");
    let request = received.join().unwrap();
    assert!(request.contains("webhook-signature: v1,"), "{request}");
    assert!(request.contains("\"type\":\"alert.test\""), "{request}");
    assert!(!request.contains(&secret) && !tested.text.contains(&secret));
}
