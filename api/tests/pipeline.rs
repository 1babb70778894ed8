//! The api with the real pipeline behind it: an event posted over HTTP becomes an alert, and
//! a status change is recorded and published.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use axum::http::StatusCode;
use clap::Parser;
use common::domain::Role;
use futures::StreamExt;
use serde_json::{Value, json};
use support::TestApi;
use testkit::eventually;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(60);

fn worker_args(api: &TestApi, name: &str) -> Vec<String> {
    vec![
        name.to_owned(),
        "--nats-url".into(),
        api.nats.url(),
        "--database-url".into(),
        api.db.url().to_owned(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
    ]
}

async fn updates_on(js: &jetstream::Context, filter: &str, expected: usize) -> Vec<Value> {
    let stream = js
        .get_stream(common::subjects::ALERTS_STREAM)
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(expected + 1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(message) = batch.next().await {
        out.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_high_event_becomes_an_alert_whose_acknowledgement_is_recorded_and_published() {
    let api = TestApi::start().await;
    let (admin, token) = api.user_with_token("admin", Role::Admin).await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let shutdown = CancellationToken::new();
    let ingestor = tokio::spawn(ingestor::run(
        ingestor::Settings::try_parse_from(worker_args(&api, "ingestor")).unwrap(),
        shutdown.clone(),
    ));
    let alerter = tokio::spawn(alerter::run(
        alerter::Settings::try_parse_from(worker_args(&api, "alerter")).unwrap(),
        shutdown.clone(),
    ));

    let event = json!({"sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "HIGH",
                       "description": "1,024 ports probed from 203.0.113.9"});
    let resp = api
        .call("POST", "/api/events/", Some(&token), Some(event))
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
    let uid = resp.json["uid"].as_str().unwrap().to_owned();
    assert_eq!(resp.json["severity"], "HIGH");

    let alert = eventually(PATIENCE, "the alert to appear in GET /api/alerts/", || {
        let api = &api;
        let analyst = analyst.clone();
        async move {
            let resp = api.call("GET", "/api/alerts/", Some(&analyst), None).await;
            (resp.json["count"] == 1).then(|| resp.json["results"][0].clone())
        }
    })
    .await;
    assert_eq!(alert["status"], "OPEN");
    assert_eq!(alert["eventType"], "port_scan");
    let event_id = alert["event_id"].as_i64().unwrap();
    let stored = api
        .call(
            "GET",
            &format!("/api/events/{event_id}/"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(stored.json["uid"], uid.as_str());

    let alert_id = alert["id"].as_i64().unwrap();
    let resp = api
        .call(
            "PATCH",
            &format!("/api/alerts/{alert_id}/"),
            Some(&token),
            Some(json!({"status": "ACKNOWLEDGED", "note": "looking into it"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["status"], "ACKNOWLEDGED");

    let history = api
        .call(
            "GET",
            &format!("/api/alerts/{alert_id}/history/"),
            Some(&analyst),
            None,
        )
        .await;
    let changes = history.json.as_array().unwrap();
    assert_eq!(changes.len(), 2, "{}", history.text);
    assert_eq!(changes[1]["from_status"], "OPEN");
    assert_eq!(changes[1]["to_status"], "ACKNOWLEDGED");
    assert_eq!(changes[1]["changed_by"], admin.id);
    assert_eq!(changes[1]["note"], "looking into it");

    let updates = updates_on(&api.state.js, "alerts.updated.acknowledged", 1).await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0]["id"], alert_id);
    assert_eq!(updates[0]["status"], "ACKNOWLEDGED");
    assert_eq!(updates[0]["change"]["from_status"], "OPEN");
    let created = updates_on(&api.state.js, "alerts.created.high", 1).await;
    assert_eq!(created.len(), 1);

    // Posting the same event again with its uid stores nothing new.
    let again = json!({"sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "HIGH", "uid": uid});
    let resp = api
        .call("POST", "/api/events/", Some(&token), Some(again))
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED);
    let batch = json!([
        {"sourceName": "a", "eventType": "x", "severity": "LOW"},
        {"sourceName": "b", "eventType": "y", "severity": "CRITICAL"},
    ]);
    let resp = api
        .call("POST", "/api/events/", Some(&token), Some(batch))
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
    assert_eq!(resp.json.as_array().unwrap().len(), 2);
    eventually(PATIENCE, "three events stored", || {
        let api = &api;
        let token = token.clone();
        async move {
            let resp = api.call("GET", "/api/events/", Some(&token), None).await;
            (resp.json["count"] == 3).then_some(())
        }
    })
    .await;

    shutdown.cancel();
    ingestor.await.unwrap().unwrap();
    alerter.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_an_event_while_nats_is_down_is_a_clear_503() {
    let mut api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    assert_eq!(
        api.call("GET", "/readyz", None, None).await.status,
        StatusCode::OK
    );

    api.nats.stop();
    let state = &api.state;
    eventually(PATIENCE, "the api to notice NATS is gone", || async move {
        (state.nats.connection_state() != async_nats::connection::State::Connected).then_some(())
    })
    .await;
    let event = json!({"sourceName": "fw", "eventType": "x", "severity": "HIGH"});
    let resp = api
        .call("POST", "/api/events/", Some(&token), Some(event.clone()))
        .await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(
        resp.json["detail"],
        "The event bus is unavailable, try again later."
    );
    assert_eq!(
        api.call("GET", "/readyz", None, None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Reading still works: the database is up.
    assert_eq!(
        api.call("GET", "/api/alerts/", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );

    api.nats.restart();
    let api_ref = &api;
    let token_ref = &token;
    eventually(PATIENCE, "posting to work again", || {
        let event = event.clone();
        async move {
            let resp = api_ref
                .call("POST", "/api/events/", Some(token_ref), Some(event))
                .await;
            (resp.status == StatusCode::ACCEPTED).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_made_while_nats_is_down_is_published_once_nats_is_back() {
    let mut api = TestApi::start().await;
    let (admin, token) = api.user_with_token("admin", Role::Admin).await;
    let alert_id = api.stored_alert("outage-1").await.id;
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(api::updates::relay_pending_updates(
        api.state.clone(),
        relay_stop.clone(),
    ));

    api.nats.stop();
    let state = &api.state;
    eventually(PATIENCE, "the api to notice NATS is gone", || async move {
        (state.nats.connection_state() != async_nats::connection::State::Connected).then_some(())
    })
    .await;
    // The change is the operator's decision: it is recorded although it cannot be announced.
    let resp = api
        .call(
            "PATCH",
            &format!("/api/alerts/{alert_id}/"),
            Some(&token),
            Some(json!({"status": "ACKNOWLEDGED", "note": "during the outage"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["status"], "ACKNOWLEDGED");
    let history = api
        .call(
            "GET",
            &format!("/api/alerts/{alert_id}/history/"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        history.json.as_array().unwrap().len(),
        2,
        "{}",
        history.text
    );

    api.nats.restart();
    let storage = &api.state.storage;
    eventually(PATIENCE, "the relay to publish the change", || async move {
        let pending = storage
            .pending_change_notifications(chrono::Utc::now() + chrono::Duration::days(1), 10)
            .await
            .unwrap();
        pending.is_empty().then_some(())
    })
    .await;
    let updates = updates_on(&api.state.js, "alerts.updated.>", 2).await;
    assert_eq!(updates.len(), 1, "announced exactly once: {updates:?}");
    assert_eq!(updates[0]["id"], alert_id);
    assert_eq!(updates[0]["status"], "ACKNOWLEDGED");
    assert_eq!(updates[0]["change"]["to_status"], "ACKNOWLEDGED");
    assert_eq!(updates[0]["change"]["changed_by"], admin.id);
    assert_eq!(updates[0]["change"]["note"], "during the outage");

    relay_stop.cancel();
    relay.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_fold_into_one_alert_whose_events_are_listed_and_a_higher_severity_reopens_it() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let shutdown = CancellationToken::new();
    let ingestor = tokio::spawn(ingestor::run(
        ingestor::Settings::try_parse_from(worker_args(&api, "ingestor")).unwrap(),
        shutdown.clone(),
    ));
    // The default fold key: sourceName,eventType.
    let alerter = tokio::spawn(alerter::run(
        alerter::Settings::try_parse_from(worker_args(&api, "alerter")).unwrap(),
        shutdown.clone(),
    ));
    let post = |severity: &'static str| {
        let api = &api;
        let token = token.clone();
        async move {
            let event = json!({"sourceName": "ids-core", "eventType": "brute_force",
                               "severity": severity, "description": format!("{severity} try")});
            let resp = api
                .call("POST", "/api/events/", Some(&token), Some(event))
                .await;
            assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
        }
    };
    let alert_when = |what: &'static str, check: fn(&Value) -> bool| {
        let api = &api;
        let analyst = analyst.clone();
        eventually(PATIENCE, what, move || {
            let analyst = analyst.clone();
            async move {
                let resp = api.call("GET", "/api/alerts/", Some(&analyst), None).await;
                assert!(resp.json["count"].as_i64().unwrap() <= 1, "{}", resp.text);
                let alert = resp.json["results"][0].clone();
                check(&alert).then_some(alert)
            }
        })
    };

    post("HIGH").await;
    let alert = alert_when("the alert", |a| a["count"] == 1).await;
    let id = alert["id"].as_i64().unwrap();
    assert_eq!(
        alert["fold_key"],
        json!({"sourceName": "ids-core", "eventType": "brute_force"})
    );
    assert_eq!(alert["version"], 1);
    assert_eq!(alert["last_event_id"], alert["event_id"]);
    let resp = api
        .call(
            "PATCH",
            &format!("/api/alerts/{id}/"),
            Some(&token),
            Some(json!({"status": "ACKNOWLEDGED"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    post("HIGH").await;
    let repeat = alert_when("the repeat counted", |a| a["count"] == 2).await;
    assert_eq!(
        repeat["status"], "ACKNOWLEDGED",
        "a repeat of the same severity changes nothing"
    );
    assert_eq!(repeat["id"], id);
    post("CRITICAL").await;
    let raised = alert_when("the severity raised", |a| a["count"] == 3).await;
    assert_eq!(raised["severity"], "CRITICAL");
    assert_eq!(
        raised["status"], "OPEN",
        "a higher severity reopens an acknowledged alert"
    );
    assert_eq!(raised["version"], 3);

    let events = api
        .call(
            "GET",
            &format!("/api/alerts/{id}/events/?page_size=2"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.text);
    assert_eq!(events.json["count"], 3);
    let page = events.json["results"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["id"], raised["last_event_id"], "newest first");
    assert_eq!(page[0]["severity"], "CRITICAL");
    assert!(events.json["next"].as_str().unwrap().contains("page=2"));
    let last = api
        .call(
            "GET",
            &format!("/api/alerts/{id}/events/?page=2&page_size=2"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(last.json["results"][0]["id"], raised["event_id"]);
    let missing = api
        .call("GET", "/api/alerts/999999/events/", Some(&analyst), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let history = api
        .call(
            "GET",
            &format!("/api/alerts/{id}/history/"),
            Some(&analyst),
            None,
        )
        .await;
    let changes = history.json.as_array().unwrap();
    assert_eq!(
        changes.len(),
        3,
        "created, acknowledged, raised: {}",
        history.text
    );
    assert_eq!(changes[2]["changed_by"], Value::Null);
    assert_eq!(changes[2]["from_status"], "ACKNOWLEDGED");
    assert_eq!(changes[2]["to_status"], "OPEN");
    assert_eq!(changes[2]["from_severity"], "HIGH");
    assert_eq!(changes[2]["to_severity"], "CRITICAL");
    assert!(
        changes[2]["reason"]
            .as_str()
            .unwrap()
            .contains("raised the severity")
    );

    // Creation, the acknowledgement and the rise are announced; the plain repeat is not.
    let reopened = updates_on(&api.state.js, "alerts.updated.open", 1).await;
    assert_eq!(reopened.len(), 1, "{reopened:?}");
    assert_eq!(reopened[0]["id"], id);
    assert_eq!(reopened[0]["change"]["to_severity"], "CRITICAL");
    let everything = updates_on(&api.state.js, "alerts.>", 3).await;
    assert_eq!(everything.len(), 3, "{everything:?}");

    shutdown.cancel();
    ingestor.await.unwrap().unwrap();
    alerter.await.unwrap().unwrap();
}
