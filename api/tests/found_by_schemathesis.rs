//! What schemathesis found the api doing wrong, each kept fixed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use common::domain::Role;
use serde_json::json;
use support::TestApi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_with_a_line_break_is_a_field_error_not_a_dropped_connection() {
    let api = TestApi::start().await;
    let (_, admin) = api.user_with_token("admin", Role::Admin).await;
    let event =
        |uid: &str| json!({"sourceName": "fw", "eventType": "scan", "severity": "LOW", "uid": uid});

    // It becomes the Nats-Msg-Id header, which async-nats refuses by panicking.
    for uid in ["a\nb", "a\r\nb", "\r"] {
        let one = api
            .call("POST", "/api/events/", Some(&admin), Some(event(uid)))
            .await;
        assert_eq!(one.status, StatusCode::BAD_REQUEST, "{uid:?}: {}", one.text);
        assert!(one.json["uid"].is_array(), "{}", one.text);

        let batch = json!([event("fine"), event(uid)]);
        let many = api
            .call("POST", "/api/events/", Some(&admin), Some(batch))
            .await;
        assert_eq!(many.status, StatusCode::BAD_REQUEST, "{}", many.text);
        assert_eq!(many.json[0], json!({}));
        assert!(many.json[1]["uid"].is_array(), "{}", many.text);
    }
    // Nothing was published, and the api still answers.
    let ok = api
        .call("POST", "/api/events/", Some(&admin), Some(event("fine")))
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_severity_beside_a_good_event_severity_is_a_400() {
    let api = TestApi::start().await;
    let (_, analyst) = api.user_with_token("ana", Role::Analyst).await;
    let resp = api
        .call(
            "GET",
            "/api/alerts/?event__severity=HIGH&severity=BOGUS",
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert!(resp.json["severity"].is_array(), "{}", resp.text);
    // Both good: event__severity wins, as before.
    let both = api
        .call(
            "GET",
            "/api/alerts/?event__severity=HIGH&severity=LOW",
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.text);
}
