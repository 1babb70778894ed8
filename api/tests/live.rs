//! The live alert stream (Server-Sent Events) and the metrics endpoint.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use common::domain::Role;
use http_body_util::BodyExt;
use serde_json::json;
use support::TestApi;
use tokio::sync::mpsc;

/// Opens the stream and forwards its text, chunk by chunk, to a channel.
async fn open_stream(
    api: &TestApi,
    token: &str,
    query: &str,
    last_id: Option<u64>,
) -> mpsc::UnboundedReceiver<String> {
    use tower::ServiceExt;
    let mut request = Request::builder()
        .uri(format!("/api/alerts/stream/{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = api::app(api.state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let mut body = response.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx
                    .send(String::from_utf8_lossy(&data).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Reads the stream until `needle` appears; returns everything read.
async fn read_until(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(needle) {
            seen.push_str(&rx.recv().await.expect("stream ended"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} never arrived; got {seen:?}"));
    seen
}

async fn publish(api: &TestApi, subject: &str, body: serde_json::Value) -> u64 {
    let ack = api
        .state
        .js
        .publish(subject.to_owned(), Bytes::from(body.to_string()))
        .await
        .unwrap()
        .await
        .unwrap();
    ack.sequence
}

fn alert(id: i64, severity: &str, status: &str) -> serde_json::Value {
    json!({"id": id, "event_id": id, "eventType": "port_scan", "severity": severity,
           "sourceName": "fw", "status": status,
           "created_at": "2026-11-28T12:00:00Z", "updated_at": "2026-11-28T12:00:00Z"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_relays_new_alerts_and_changes_filters_them_and_resumes_after_last_event_id() {
    let api = TestApi::start().await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;

    let mut all = open_stream(&api, &analyst, "", None).await;
    let mut critical = open_stream(&api, &analyst, "?severity=CRITICAL", None).await;
    let first = publish(&api, "alerts.created.high", alert(1, "HIGH", "OPEN")).await;
    let second = publish(
        &api,
        "alerts.created.critical",
        alert(2, "CRITICAL", "OPEN"),
    )
    .await;
    let mut update = alert(1, "HIGH", "ACKNOWLEDGED");
    update["change"] = json!({"from_status": "OPEN", "to_status": "ACKNOWLEDGED"});
    publish(&api, "alerts.updated.acknowledged", update).await;

    let seen = read_until(&mut all, "event: alert.updated").await;
    assert!(seen.contains(&format!("id: {first}\n")), "{seen}");
    assert!(seen.contains("event: alert.created"), "{seen}");
    assert!(seen.contains(r#""id":2"#), "{seen}");
    let seen = read_until(&mut critical, r#""id":2"#).await;
    assert!(
        !seen.contains(r#""id":1"#),
        "HIGH alerts are filtered out: {seen}"
    );
    assert!(seen.contains(&format!("id: {second}\n")));

    // A client that saw the first event and reconnects gets what came after it first.
    let mut resumed = open_stream(&api, &analyst, "", Some(first)).await;
    let seen = read_until(&mut resumed, "event: alert.updated").await;
    assert!(!seen.contains(&format!("id: {first}\n")), "{seen}");
    assert!(seen.contains(&format!("id: {second}\n")), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_a_user_and_valid_filters() {
    let api = TestApi::start().await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let resp = api.call("GET", "/api/alerts/stream/", None, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = api
        .call(
            "GET",
            "/api/alerts/stream/?severity=HUGE",
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.json["severity"].is_array(), "{}", resp.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_status_in_prometheus_text() {
    let api = TestApi::start().await;
    let (_, admin) = api.user_with_token("admin", Role::Admin).await;
    for _ in 0..3 {
        api.call("GET", "/api/alerts/", Some(&admin), None).await;
    }
    api.call("GET", "/api/alerts/999/", Some(&admin), None)
        .await;

    let resp = api.call("GET", "/metrics", None, None).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        resp.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text;
    let count = |route: &str, status: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("threatmon_http_requests_total{"))
            .filter(|l| {
                l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    // Other tests in this process may add to the same counters: at least ours are there.
    assert!(count("/api/alerts", "200") >= 3.0, "{text}");
    assert!(count("/api/alerts/{id}", "404") >= 1.0, "{text}");
    assert!(
        text.contains("threatmon_http_request_duration_seconds_bucket"),
        "{text}"
    );
}
