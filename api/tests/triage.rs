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

    let weak = patch_if_match(&api, &token, id, "W/\"2\"", json!({"status": "RESOLVED"})).await;
    assert_eq!(
        weak.status,
        StatusCode::PRECONDITION_FAILED,
        "a weak tag never matches"
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

#[tokio::test]
async fn notes_are_added_by_admins_read_by_analysts_oldest_first_and_in_the_history() {
    let api = TestApi::start().await;
    let (admin, token) = api.user_with_token("admin", Role::Admin).await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let id = api.stored_alert("noted").await.id;
    let path = format!("/api/alerts/{id}/notes/");

    let first = api
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"text": "  called the owner  "})),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["text"], "called the owner");
    assert_eq!(first.json["author"], admin.id);
    assert_eq!(first.json["alert_id"], id);
    let second = api
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"text": "x".repeat(10_000)})),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    for bad in [
        json!({"text": ""}),
        json!({"text": "x".repeat(10_001)}),
        json!({}),
    ] {
        let resp = api.call("POST", &path, Some(&token), Some(bad)).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
        assert!(resp.json["text"].is_array(), "{}", resp.text);
    }
    let refused = api
        .call("POST", &path, Some(&analyst), Some(json!({"text": "mine"})))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let missing = api
        .call(
            "POST",
            "/api/alerts/999999/notes/",
            Some(&token),
            Some(json!({"text": "a"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let listed = api.call("GET", &path, Some(&analyst), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let notes = listed.json.as_array().unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["id"], first.json["id"]);
    let rows = history(&api, &analyst, id).await;
    assert_eq!(rows.len(), 3, "created and two notes");
    assert_eq!(rows[1]["kind"], "note");
    assert_eq!(rows[1]["note_id"], first.json["id"]);
    assert_eq!(rows[1]["note"], "called the owner");
    assert_eq!(rows[1]["changed_by"], admin.id);
    let alert = api.state.storage.alert_by_id(id).await.unwrap().unwrap();
    assert_eq!(alert.version, 1, "a note is not a change of the alert");
}

#[tokio::test]
async fn a_bulk_action_by_ids_changes_what_it_may_and_says_why_it_skipped_the_rest() {
    let api = TestApi::start().await;
    let (admin, token) = api.user_with_token("admin", Role::Admin).await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let open = alert_in(&api, &token, "b-open", "OPEN").await;
    let acked = alert_in(&api, &token, "b-acked", "ACKNOWLEDGED").await;
    let resolved = alert_in(&api, &token, "b-resolved", "RESOLVED").await;
    let ids = json!([open, acked, resolved, 999_999]);

    let dry = api
        .call(
            "POST",
            "/api/alerts/bulk/",
            Some(&token),
            Some(json!({"ids": ids, "action": "acknowledge", "dry_run": true})),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert_eq!(dry.json["matched"], 4);
    assert_eq!(
        history(&api, &token, open).await.len(),
        1,
        "a dry run changes nothing"
    );

    let done = api
        .call(
            "POST",
            "/api/alerts/bulk/",
            Some(&token),
            Some(json!({"ids": ids, "action": "acknowledge", "note": "triage"})),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.json["matched"], 4);
    assert_eq!(done.json["changed"], 1);
    let skipped: Vec<(i64, String)> = done.json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_i64().unwrap(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (acked, "Nothing to change.".to_owned()),
            (
                resolved,
                "Cannot change status from RESOLVED to ACKNOWLEDGED.".to_owned()
            ),
            (999_999, "Not found.".to_owned()),
        ]
    );
    let row = history(&api, &token, open).await.pop().unwrap();
    assert_eq!(
        (row["to_status"].as_str(), row["note"].as_str()),
        (Some("ACKNOWLEDGED"), Some("triage"))
    );

    let assigned = api
        .call(
            "POST",
            "/api/alerts/bulk/",
            Some(&token),
            Some(json!({"ids": [open, acked], "action": "assign", "assignee": admin.id})),
        )
        .await;
    assert_eq!(assigned.json["changed"], 2, "{}", assigned.text);
    let resolved_now = api
        .call(
            "POST",
            "/api/alerts/bulk/",
            Some(&token),
            Some(json!({"ids": [open], "action": "resolve", "close_reason": "duplicate"})),
        )
        .await;
    assert_eq!(resolved_now.json["changed"], 1, "{}", resolved_now.text);
    let alert = api.state.storage.alert_by_id(open).await.unwrap().unwrap();
    assert_eq!(alert.close_reason.map(|r| r.as_str()), Some("duplicate"));
    assert_eq!(alert.assignee, Some(admin.id));

    for (body, field) in [
        (json!({"action": "acknowledge"}), "non_field_errors"),
        (
            json!({"ids": [1], "filter": {}, "action": "acknowledge"}),
            "non_field_errors",
        ),
        (json!({"ids": [1], "action": "explode"}), "action"),
        (json!({"ids": ["one"], "action": "reopen"}), "ids"),
        (json!({"ids": [1], "action": "assign"}), "assignee"),
        (
            json!({"ids": [1], "action": "assign", "assignee": null, "close_reason": "other"}),
            "close_reason",
        ),
        (
            json!({"filter": {"stauts": "OPEN"}, "action": "reopen"}),
            "filter",
        ),
        (
            json!({"filter": {"status": "SHUT"}, "action": "reopen"}),
            "filter.status",
        ),
        (
            json!({"ids": (1..=10_001).collect::<Vec<i64>>(), "action": "reopen"}),
            "ids",
        ),
    ] {
        let resp = api
            .call(
                "POST",
                "/api/alerts/bulk/",
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.text
        );
        assert!(resp.json[field].is_array(), "{body}: {}", resp.text);
    }
    let forbidden = api
        .call(
            "POST",
            "/api/alerts/bulk/",
            Some(&analyst),
            Some(json!({"ids": [open], "action": "reopen"})),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

/// How many messages the ALERTS stream holds on `subject`.
async fn messages_on(api: &TestApi, subject: &str) -> u64 {
    use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
    let stream = api
        .state
        .js
        .get_stream(common::subjects::ALERTS_STREAM)
        .await
        .unwrap();
    let mut consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    consumer.info().await.unwrap().num_pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_resolve_by_filter_changes_ten_thousand_alerts_at_once_and_refuses_more() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let storage = &api.state.storage;
    let now = chrono::Utc::now();
    let records: Vec<common::storage::EventRecord> = (0..10_001)
        .map(|i| common::storage::EventRecord {
            uid: format!("bulk-{i}"),
            event: common::domain::EventIn::from_value(json!({
                "sourceName": if i < 10_000 { "fw-bulk" } else { "elsewhere" },
                "eventType": "port_scan", "severity": "HIGH",
            }))
            .unwrap(),
            created_at: now,
        })
        .collect();
    for chunk in records.chunks(1000) {
        let stored = storage
            .store_events(chunk, common::domain::Severity::High)
            .await
            .unwrap();
        storage
            .create_alerts(&stored.to_escalate, now)
            .await
            .unwrap();
    }
    assert_eq!(storage.count_alerts().await.unwrap(), 10_001);
    let bulk = |body: Value| {
        let api = &api;
        let token = token.clone();
        async move {
            api.call("POST", "/api/alerts/bulk/", Some(&token), Some(body))
                .await
        }
    };

    let too_many = bulk(json!({"filter": {"status": "OPEN"}, "action": "resolve"})).await;
    assert_eq!(
        too_many.status,
        StatusCode::BAD_REQUEST,
        "{}",
        too_many.text
    );
    let message = too_many.json["filter"][0].as_str().unwrap();
    assert!(
        message.contains("10001") && message.contains("10000"),
        "{message}"
    );
    let preview =
        bulk(json!({"filter": {"status": "OPEN"}, "action": "resolve", "dry_run": true})).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert_eq!(preview.json["matched"], 10_001);
    assert_eq!(preview.json["first_ids"].as_array().unwrap().len(), 20);
    let open = common::storage::AlertFilter {
        status: vec![common::domain::AlertStatus::Open],
        ..Default::default()
    };
    assert_eq!(
        storage.count_alerts_matching(&open).await.unwrap(),
        10_001,
        "nothing changed"
    );

    let done = bulk(
        json!({"filter": {"status": "OPEN", "sourceName": "fw-bulk"},
                            "action": "resolve", "close_reason": "benign"}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.json["matched"], 10_000);
    assert_eq!(done.json["changed"], 10_000);
    assert_eq!(done.json["skipped"], json!([]));
    assert_eq!(storage.count_alerts_matching(&open).await.unwrap(), 1);
    let resolved = common::storage::AlertFilter {
        status: vec![common::domain::AlertStatus::Resolved],
        source_name: vec!["fw-bulk".into()],
        ..Default::default()
    };
    assert_eq!(
        storage.count_alerts_matching(&resolved).await.unwrap(),
        10_000
    );
    // One history row each, all of one transaction (one time), each announced once.
    let alerts = storage
        .list_alerts(
            &resolved,
            common::storage::AlertOrdering::NewestFirst,
            20_000,
            0,
        )
        .await
        .unwrap();
    let mut times = std::collections::HashSet::new();
    for alert in alerts.iter().step_by(97) {
        let rows = storage.status_history(alert.id).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].close_reason.map(|r| r.as_str()), Some("benign"));
        times.insert(rows[1].changed_at);
    }
    assert_eq!(
        times.len(),
        1,
        "every change has the transaction's one time"
    );
    assert_eq!(messages_on(&api, "alerts.updated.resolved").await, 10_000);
}

#[tokio::test]
async fn the_summary_counts_alerts_per_status_and_severity_and_names_the_busiest_sensors() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let resolved = alert_in(&api, &token, "s-1", "RESOLVED").await;
    alert_in(&api, &token, "s-2", "ACKNOWLEDGED").await;
    alert_in(&api, &token, "s-3", "OPEN").await;
    assert!(resolved > 0);

    let resp = api
        .call("GET", "/api/alerts/summary/", Some(&analyst), None)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let zeros = json!({"LOW": 0, "MEDIUM": 0, "HIGH": 0, "CRITICAL": 0});
    let one_high = json!({"LOW": 0, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 0});
    let by_status = json!({"OPEN": one_high, "ACKNOWLEDGED": one_high, "RESOLVED": one_high});
    assert_eq!(resp.json["by_status"], by_status);
    assert_eq!(
        resp.json["top_sources"],
        json!([{"sourceName": "fw", "count": 2}])
    );
    assert_eq!(
        resp.json["top_event_types"],
        json!([{"eventType": "port_scan", "count": 2}])
    );
    assert_eq!(
        resp.json["last_24h"]["by_status"], by_status,
        "all were made just now"
    );
    assert_ne!(resp.json["by_status"]["OPEN"], zeros);
    let anonymous = api.call("GET", "/api/alerts/summary/", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn list_filters_take_several_values_and_the_new_orderings() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let open = alert_in(&api, &token, "m-open", "OPEN").await;
    let acked = alert_in(&api, &token, "m-acked", "ACKNOWLEDGED").await;
    alert_in(&api, &token, "m-resolved", "RESOLVED").await;
    let list = |query: &'static str| {
        let api = &api;
        let token = token.clone();
        async move {
            api.call("GET", &format!("/api/alerts/?{query}"), Some(&token), None)
                .await
        }
    };
    let unresolved = list("status=OPEN,ACKNOWLEDGED").await;
    assert_eq!(unresolved.status, StatusCode::OK, "{}", unresolved.text);
    assert_eq!(unresolved.json["count"], 2);
    let ids: Vec<i64> = unresolved.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [acked, open]);
    assert_eq!(
        list("severity=HIGH,CRITICAL&sourceName=fw,other")
            .await
            .json["count"],
        3
    );
    assert_eq!(list("event__severity=LOW,MEDIUM").await.json["count"], 0);
    assert_eq!(
        list("eventType=port_scan,nothing&status=RESOLVED")
            .await
            .json["count"],
        1
    );
    assert_eq!(
        list("q=PORT+scan&status=OPEN,RESOLVED").await.json["count"],
        2
    );
    assert_eq!(list("q=%22%3B+*+OR").await.json["count"], 0, "only words");
    let many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let too_many = api
        .call(
            "GET",
            &format!("/api/alerts/?sourceName={}", many.join(",")),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        too_many.status,
        StatusCode::BAD_REQUEST,
        "{}",
        too_many.text
    );
    assert!(too_many.json["sourceName"].is_array());
    let words: Vec<String> = (0..33).map(|i| format!("w{i}")).collect();
    let long = api
        .call(
            "GET",
            &format!("/api/alerts/?q={}", words.join("+")),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST, "{}", long.text);
    assert!(long.json["q"].is_array());
    let bad = list("status=OPEN,SHUT").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json["status"].is_array(), "{}", bad.text);
    for ordering in ["last_seen_at", "-last_seen_at", "count", "-count"] {
        let resp = api
            .call(
                "GET",
                &format!("/api/alerts/?ordering={ordering}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{ordering}: {}", resp.text);
        assert_eq!(resp.json["count"], 3);
    }
}
