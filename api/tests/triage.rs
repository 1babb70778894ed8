//! Triage through the API: the lifecycle's allowed and refused moves, close reasons,
//! optimistic concurrency (`version` → 409, `If-Match` → 412), owners.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::domain::Role;
use serde_json::{Value, json};
use support::{Resp, TestApi};

async fn patch(api: &TestApi, token: &str, id: i64, body: Value) -> Resp {
    api.call(
        "PATCH",
        &format!("/api/alerts/{id}/"),
        Some(token),
        Some(body),
    )
    .await
}

async fn patch_if_match(api: &TestApi, token: &str, id: i64, tag: &str, body: Value) -> Resp {
    let request = Request::builder()
        .method("PATCH")
        .uri(format!("/api/alerts/{id}/"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, tag)
        .body(Body::from(body.to_string()))
        .unwrap();
    api.send(request).await
}

async fn history(api: &TestApi, token: &str, id: i64) -> Vec<Value> {
    let resp = api
        .call(
            "GET",
            &format!("/api/alerts/{id}/history/"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    resp.json.as_array().unwrap().clone()
}

/// An alert brought to `status` through the API.
async fn alert_in(api: &TestApi, token: &str, uid: &str, status: &str) -> i64 {
    let id = api.stored_alert(uid).await.id;
    let path = match status {
        "OPEN" => &[][..],
        "ACKNOWLEDGED" => &["ACKNOWLEDGED"][..],
        "RESOLVED" => &["RESOLVED"][..],
        other => panic!("{other}"),
    };
    for step in path {
        let resp = patch(api, token, id, json!({"status": step})).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    }
    id
}

#[tokio::test]
async fn every_move_of_the_lifecycle_is_allowed_but_resolved_to_acknowledged() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let statuses = ["OPEN", "ACKNOWLEDGED", "RESOLVED"];
    for (i, from) in statuses.iter().enumerate() {
        for (j, to) in statuses.iter().enumerate() {
            let id = alert_in(&api, &token, &format!("move-{i}-{j}"), from).await;
            let before = history(&api, &token, id).await.len();
            let version = api
                .state
                .storage
                .alert_by_id(id)
                .await
                .unwrap()
                .unwrap()
                .version;
            let resp = patch(&api, &token, id, json!({"status": to})).await;
            let after = history(&api, &token, id).await;
            if (*from, *to) == ("RESOLVED", "ACKNOWLEDGED") {
                assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
                assert_eq!(
                    resp.json,
                    json!({"status": ["Cannot change status from RESOLVED to ACKNOWLEDGED."]})
                );
                assert_eq!(after.len(), before, "a refused move records nothing");
            } else if from == to {
                assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
                assert_eq!(after.len(), before, "{from} → {to} records nothing");
                assert_eq!(resp.json["version"], version, "and changes no version");
            } else {
                assert_eq!(resp.status, StatusCode::OK, "{from} → {to}: {}", resp.text);
                assert_eq!(resp.json["status"], *to);
                assert_eq!(resp.json["version"], version + 1);
                assert_eq!(after.len(), before + 1);
                let last = after.last().unwrap();
                assert_eq!(
                    (&last["from_status"], &last["to_status"]),
                    (&json!(from), &json!(to))
                );
                let kind = match *to {
                    "OPEN" => "reopened",
                    "ACKNOWLEDGED" => "acknowledged",
                    _ => "resolved",
                };
                assert_eq!(last["kind"], kind);
            }
            let stored = api.state.storage.alert_by_id(id).await.unwrap().unwrap();
            let expected = if resp.status == StatusCode::OK {
                to
            } else {
                from
            };
            assert_eq!(stored.status.as_str(), *expected);
        }
    }
}

#[tokio::test]
async fn a_close_reason_is_kept_while_resolved_shown_in_the_history_and_cleared_on_reopen() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let id = api.stored_alert("closing").await.id;

    let early = patch(
        &api,
        &token,
        id,
        json!({"status": "ACKNOWLEDGED", "close_reason": "benign"}),
    )
    .await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST, "{}", early.text);
    assert!(early.json["close_reason"].is_array(), "{}", early.text);
    let bogus = patch(
        &api,
        &token,
        id,
        json!({"status": "RESOLVED", "close_reason": "bored"}),
    )
    .await;
    assert_eq!(
        bogus.json,
        json!({"close_reason": ["\"bored\" is not a valid choice."]})
    );

    let resolved = patch(
        &api,
        &token,
        id,
        json!({"status": "RESOLVED", "close_reason": "false_positive", "note": "scanner test"}),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    assert_eq!(resolved.json["close_reason"], "false_positive");
    let rows = history(&api, &token, id).await;
    assert_eq!(rows.last().unwrap()["close_reason"], "false_positive");
    assert_eq!(rows.last().unwrap()["note"], "scanner test");

    // A resolved alert's reason may be corrected.
    let corrected = patch(&api, &token, id, json!({"close_reason": "benign"})).await;
    assert_eq!(corrected.json["close_reason"], "benign");
    assert_eq!(
        history(&api, &token, id).await.last().unwrap()["kind"],
        "updated"
    );

    let reopened = patch(&api, &token, id, json!({"status": "OPEN"})).await;
    assert_eq!(reopened.status, StatusCode::OK);
    assert_eq!(reopened.json["close_reason"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_changes_from_the_same_version_one_wins_and_the_other_gets_409() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let id = api.stored_alert("race").await.id;
    let get = api
        .call("GET", &format!("/api/alerts/{id}/"), Some(&token), None)
        .await;
    let version = get.json["version"].as_i64().unwrap();
    assert_eq!(get.headers[header::ETAG], format!("\"{version}\"").as_str());

    let (a, b) = tokio::join!(
        patch(
            &api,
            &token,
            id,
            json!({"status": "ACKNOWLEDGED", "version": version})
        ),
        patch(
            &api,
            &token,
            id,
            json!({"status": "RESOLVED", "version": version})
        ),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        a.text,
        b.text
    );
    let (winner, loser) = if a.status == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(winner.json["version"], version + 1);
    // The loser gets the alert as the winner left it.
    assert_eq!(loser.json["version"], version + 1);
    assert_eq!(loser.json["status"], winner.json["status"]);
    assert_eq!(
        history(&api, &token, id).await.len(),
        2,
        "one change recorded"
    );

    // Without a version, the last write wins, as in the original.
    let blind = patch(&api, &token, id, json!({"status": "OPEN"})).await;
    assert_eq!(blind.status, StatusCode::OK, "{}", blind.text);
    let stale = patch(
        &api,
        &token,
        id,
        json!({"status": "RESOLVED", "version": version}),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.json["status"], "OPEN");
    let bad = patch(&api, &token, id, json!({"version": "two"})).await;
    assert_eq!(
        bad.json,
        json!({"version": ["A valid integer is required."]})
    );
}

#[tokio::test]
async fn a_stale_if_match_gets_412_with_the_alert_and_a_current_one_applies() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let id = api.stored_alert("etag").await.id;
    let first = patch_if_match(&api, &token, id, "\"1\"", json!({"status": "ACKNOWLEDGED"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.headers[header::ETAG], "\"2\"");

    let stale = patch_if_match(&api, &token, id, "\"1\"", json!({"status": "RESOLVED"})).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.text
    );
    assert_eq!(stale.json["status"], "ACKNOWLEDGED");
    assert_eq!(stale.json["version"], 2);
    assert_eq!(stale.headers[header::ETAG], "\"2\"");
    assert_eq!(
        api.state
            .storage
            .alert_by_id(id)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "ACKNOWLEDGED"
    );

    let any = patch_if_match(&api, &token, id, "*", json!({"status": "RESOLVED"})).await;
    assert_eq!(any.status, StatusCode::OK, "{}", any.text);
    let listed = patch_if_match(&api, &token, id, "\"9\", \"3\"", json!({"status": "OPEN"})).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
}

#[tokio::test]
async fn an_alert_is_assigned_to_an_active_user_only_and_filtered_by_its_owner() {
    let api = TestApi::start().await;
    let (admin, token) = api.user_with_token("admin", Role::Admin).await;
    let analyst = api.create_user("analyst", Role::Analyst).await;
    let gone = api.create_user("gone", Role::Analyst).await;
    api.state
        .storage
        .update_user(
            gone.id,
            &common::storage::UserChanges {
                is_active: Some(false),
                ..Default::default()
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let mine = api.stored_alert("mine").await.id;
    let theirs = api.stored_alert("theirs").await.id;
    let nobody = api.stored_alert("nobody").await.id;

    for missing in [gone.id, 999_999] {
        let resp = patch(&api, &token, mine, json!({"assignee": missing})).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
        assert!(resp.json["assignee"].is_array(), "{}", resp.text);
    }
    let assigned = patch(&api, &token, mine, json!({"assignee": admin.id})).await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.text);
    assert_eq!(assigned.json["assignee"], admin.id);
    assert_eq!(assigned.json["status"], "OPEN");
    let row = history(&api, &token, mine).await.pop().unwrap();
    assert_eq!(row["kind"], "assigned");
    assert_eq!(
        (&row["from_assignee"], &row["to_assignee"]),
        (&Value::Null, &json!(admin.id))
    );
    patch(&api, &token, theirs, json!({"assignee": analyst.id})).await;

    let ids = |resp: &Resp| -> Vec<i64> {
        resp.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect()
    };
    let me = api
        .call("GET", "/api/alerts/?assignee=me", Some(&token), None)
        .await;
    assert_eq!(ids(&me), [mine]);
    assert_eq!(me.json["count"], 1);
    let none = api
        .call("GET", "/api/alerts/?assignee=none", Some(&token), None)
        .await;
    assert_eq!(ids(&none), [nobody]);
    let by_id = api
        .call(
            "GET",
            &format!("/api/alerts/?assignee={}", analyst.id),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(ids(&by_id), [theirs]);
    let bad = api
        .call("GET", "/api/alerts/?assignee=someone", Some(&token), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);

    let unassigned = patch(&api, &token, mine, json!({"assignee": null})).await;
    assert_eq!(unassigned.json["assignee"], Value::Null);
}
