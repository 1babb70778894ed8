//! Notifications that reach people, on the backend under test: a real webhook receiver (a
//! Python process on a loopback port, verifying each signature with the Standard Webhooks
//! reference library) gets each alert once, after retries; one that never accepts ends in
//! `deadletter.notify`, with every attempt and its back-off in the delivery log.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use chrono::Utc;
use common::domain::{RouteSpec, Severity, new_secret};
use common::storage::{AttemptOutcome, DeliveryAttempt, Storage};
use common::subjects;
use serde_json::{Value, json};
use testkit::eventually;
use threatmon_tests::receivers::Receiver;
use threatmon_tests::{PATIENCE, Pipeline};

async fn webhook_route(storage: &Storage, name: &str, url: &str, secret: &str) -> i64 {
    let body = json!({"name": name, "kind": "webhook", "url": url, "secret": secret,
        "min_severity": "HIGH"});
    let spec = RouteSpec::parse(body.as_object().unwrap(), None).unwrap();
    storage.create_route(&spec, Utc::now()).await.unwrap().id
}

/// Settings that retry quickly: a first back-off of 200 ms, private targets allowed.
fn quick(retry_for_secs: &str) -> Vec<&str> {
    vec![
        "--notify-allow-private-targets",
        "true",
        "--notify-backoff-first-ms",
        "200",
        "--notify-retry-for-secs",
        retry_for_secs,
    ]
}

async fn one_alert(pipeline: &Pipeline) -> i64 {
    let event = json!({"sourceName": "fw-edge-01", "eventType": "port_scan",
        "severity": "CRITICAL", "description": "ports probed"});
    pipeline.publish_event(&event, Some("notify-test-1")).await;
    pipeline.wait_for_alerts(1).await;
    let alerts = pipeline
        .storage
        .list_alerts(
            &Default::default(),
            common::storage::AlertOrdering::NewestFirst,
            1,
            0,
        )
        .await
        .unwrap();
    alerts[0].id
}

async fn attempts(storage: &Storage, alert: i64) -> Vec<DeliveryAttempt> {
    storage.alert_attempts(alert, 100, 0).await.unwrap()
}

#[tokio::test]
async fn a_webhook_that_fails_three_times_gets_the_alert_once_on_the_fourth_signed() {
    let pipeline = Pipeline::start().await;
    let secret = new_secret().unwrap();
    let receiver = Receiver::webhook(&secret, &["--fail-first", "3"]).await;
    webhook_route(&pipeline.storage, "soc", &receiver.url(), &secret).await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&quick("600")));
    let alert = one_alert(&pipeline).await;

    let log = eventually(PATIENCE, "the fourth attempt delivered", || {
        let storage = pipeline.storage.clone();
        async move {
            let log = attempts(&storage, alert).await;
            log.iter()
                .any(|a| a.outcome == AttemptOutcome::Delivered)
                .then_some(log)
        }
    })
    .await;
    let outcomes: Vec<AttemptOutcome> = log.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Retrying,
            AttemptOutcome::Retrying,
            AttemptOutcome::Retrying,
            AttemptOutcome::Delivered
        ],
        "{log:#?}"
    );
    for (i, attempt) in log.iter().enumerate() {
        assert_eq!(attempt.attempt, i as i64 + 1);
        assert_eq!(
            attempt.webhook_id, log[0].webhook_id,
            "one webhook-id for every attempt"
        );
        assert_eq!(attempt.status_code, Some(if i < 3 { 500 } else { 200 }));
        assert_eq!(attempt.trigger, "created");
        if i < 3 {
            let next = attempt.next_attempt_at.expect("a retry time");
            assert!(
                next > attempt.started_at,
                "the back-off is after the attempt"
            );
            assert!(
                log[i + 1].started_at >= next,
                "attempt {} began before its back-off ended",
                i + 2
            );
        }
    }

    let requests = receiver.received();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    let accepted: Vec<&Value> = requests.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(accepted.len(), 1, "received once: {requests:#?}");
    for request in &requests {
        assert_eq!(
            request["verified"], true,
            "the Standard Webhooks library verifies the signature: {request}"
        );
        assert_eq!(request["webhook_id"], log[0].webhook_id.as_str());
    }
    let body = &accepted[0]["body"];
    assert_eq!(body["type"], "alert.created");
    assert_eq!(body["alert"]["id"], alert);
    assert_eq!(body["alert"]["sourceName"], "fw-edge-01");

    // Nothing more comes: the delivery is done.
    pipeline
        .wait_consumer_drained(subjects::ALERTS_STREAM, subjects::NOTIFIER_CONSUMER)
        .await;
    assert_eq!(attempts(&pipeline.storage, alert).await.len(), 4);
    alerter.stop().await;
    ingestor.stop().await;
}

#[tokio::test]
async fn a_receiver_down_past_the_retry_window_is_dead_lettered_once_with_every_attempt_logged() {
    let pipeline = Pipeline::start().await;
    let secret = new_secret().unwrap();
    let receiver = Receiver::webhook(&secret, &["--fail-first", "1000000"]).await;
    let route = webhook_route(&pipeline.storage, "down", &receiver.url(), &secret).await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&quick("3")));
    let alert = one_alert(&pipeline).await;

    let log = eventually(PATIENCE, "the delivery to fail for good", || {
        let storage = pipeline.storage.clone();
        async move {
            let log = attempts(&storage, alert).await;
            log.iter()
                .any(|a| a.outcome == AttemptOutcome::Failed)
                .then_some(log)
        }
    })
    .await;
    assert!(log.len() >= 3, "several attempts in 3 s: {log:#?}");
    let (last, retried) = log.split_last().unwrap();
    assert_eq!(last.outcome, AttemptOutcome::Failed);
    assert_eq!(last.next_attempt_at, None);
    let mut waits = Vec::new();
    for (i, attempt) in retried.iter().enumerate() {
        assert_eq!(attempt.outcome, AttemptOutcome::Retrying, "{log:#?}");
        assert_eq!(attempt.status_code, Some(500));
        let next = attempt.next_attempt_at.expect("a retry time");
        waits.push(next - attempt.finished_at.unwrap());
        assert!(log[i + 1].started_at >= next);
    }
    assert!(
        waits.windows(2).all(|w| w[1] >= w[0]),
        "the back-off grows: {waits:?}"
    );
    assert_eq!(
        receiver.received().len(),
        log.len(),
        "every attempt reached it"
    );

    let dead = pipeline
        .wait_for_stream(subjects::DEADLETTER_STREAM, "deadletter.notify")
        .await;
    assert_eq!(dead.len(), 1);
    let headers = dead[0].headers.as_ref().expect("headers");
    let route_header = headers.get("Threatmon-Route").expect("the route").as_str();
    assert!(route_header.contains("down") && route_header.contains(&route.to_string()));
    let reason = headers
        .get("Threatmon-Reason")
        .expect("the reason")
        .as_str();
    assert!(reason.contains("500"), "{reason}");
    let body: Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(body["id"], alert, "the alert message is the body");
    for value in [
        route_header,
        reason,
        &String::from_utf8_lossy(&dead[0].payload),
    ] {
        assert!(!value.contains(&secret), "the secret leaked: {value}");
    }
    alerter.stop().await;
    ingestor.stop().await;
}

#[tokio::test]
async fn an_alert_left_open_is_reminded_of_at_the_routes_interval_until_acknowledged() {
    let pipeline = Pipeline::start().await;
    let secret = new_secret().unwrap();
    let receiver = Receiver::webhook(&secret, &[]).await;
    let body = json!({"name": "remind", "kind": "webhook", "url": receiver.url(),
        "secret": secret, "min_severity": "HIGH"});
    let mut spec = RouteSpec::parse(body.as_object().unwrap(), None).unwrap();
    // The api takes 60 s at least; the delivery honours what is stored.
    let every = 2;
    spec.repeat_every_secs = Some(every);
    let route = pipeline
        .storage
        .create_route(&spec, Utc::now())
        .await
        .unwrap();
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&quick("600")));
    let alert = one_alert(&pipeline).await;

    // The alert message, then two reminders.
    let deliveries = eventually(PATIENCE, "two reminders delivered", || {
        let storage = pipeline.storage.clone();
        async move {
            let deliveries = storage.alert_deliveries(alert).await.unwrap();
            let delivered = deliveries.iter().filter(|d| d.state == "delivered").count();
            (delivered >= 3).then_some(deliveries)
        }
    })
    .await;
    let keys: Vec<&str> = deliveries[..3]
        .iter()
        .map(|d| d.message_key.as_str())
        .collect();
    let reminder = |n: i64| format!("alert-{alert}-reminder-{n}");
    assert_eq!(
        keys,
        [format!("alert-{alert}-created"), reminder(1), reminder(2)]
    );
    for pair in deliveries.windows(2) {
        let gap = pair[1].created_at - pair[0].created_at;
        assert!(
            gap >= chrono::Duration::seconds(every as i64),
            "a reminder came {gap} after the last message, sooner than every {every} s"
        );
    }
    let requests = receiver.received();
    let types: Vec<&str> = requests
        .iter()
        .take(3)
        .map(|r| r["body"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["alert.created", "alert.reminder", "alert.reminder"]);
    for request in requests.iter().take(3) {
        assert_eq!(request["verified"], true, "{request}");
        assert_eq!(request["body"]["alert"]["id"], alert);
        assert_eq!(request["body"]["alert"]["status"], "OPEN");
    }
    let ids: std::collections::HashSet<&str> = requests
        .iter()
        .map(|r| r["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        requests.len(),
        "each reminder is its own message"
    );

    // Acknowledged: the wait is dropped when it next falls due, so no reminder can follow
    // (nothing else makes one).
    let admin = pipeline
        .storage
        .create_user(
            &common::storage::NewUser {
                username: "admin".into(),
                email: String::new(),
                password_hash: "not-a-real-hash".into(),
                role: common::domain::Role::Admin,
                is_active: true,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    pipeline
        .storage
        .change_alert_status(
            alert,
            common::domain::AlertStatus::Acknowledged,
            admin.id,
            None,
            Utc::now(),
        )
        .await
        .unwrap();
    eventually(PATIENCE, "the reminders to stop", || {
        let storage = pipeline.storage.clone();
        async move { (storage.count_reminders().await.unwrap() == 0).then_some(()) }
    })
    .await;
    let made = pipeline.storage.alert_deliveries(alert).await.unwrap();
    assert!(made.iter().all(|d| d.route_id == route.id));
    let after_ack = made
        .iter()
        .filter(|d| d.message_key.contains("-reminder-"))
        .count();
    assert!(
        after_ack <= 3,
        "at most one reminder raced the acknowledgement: {made:#?}"
    );
    alerter.stop().await;
    ingestor.stop().await;
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_and_a_404_fails_at_once() {
    let pipeline = Pipeline::start().await;
    let secret = new_secret().unwrap();
    // The back-off alone would retry after 200 ms; the receiver asks for 2 s.
    let busy = Receiver::webhook(
        &secret,
        &[
            "--fail-first",
            "1",
            "--fail-status",
            "429",
            "--retry-after",
            "2",
        ],
    )
    .await;
    let gone = Receiver::webhook(&secret, &["--fail-first", "1000", "--fail-status", "404"]).await;
    let busy_route = webhook_route(&pipeline.storage, "busy", &busy.url(), &secret).await;
    let gone_route = webhook_route(&pipeline.storage, "gone", &gone.url(), &secret).await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&quick("600")));
    let alert = one_alert(&pipeline).await;

    let log = eventually(PATIENCE, "one delivered, one failed", || {
        let storage = pipeline.storage.clone();
        async move {
            let log = attempts(&storage, alert).await;
            let done = |outcome| log.iter().any(|a| a.outcome == outcome);
            (done(AttemptOutcome::Delivered) && done(AttemptOutcome::Failed)).then_some(log)
        }
    })
    .await;
    let of = |route: i64| -> Vec<&DeliveryAttempt> {
        log.iter().filter(|a| a.route_id == route).collect()
    };
    let busy_log = of(busy_route);
    assert_eq!(busy_log.len(), 2, "{busy_log:#?}");
    assert_eq!(busy_log[0].outcome, AttemptOutcome::Retrying);
    assert_eq!(busy_log[0].status_code, Some(429));
    // Asked for when the answer came: after the attempt began.
    let asked = busy_log[0].started_at + chrono::Duration::seconds(2);
    assert!(
        busy_log[0].next_attempt_at.unwrap() >= asked,
        "the retry honours Retry-After: {busy_log:#?}"
    );
    assert!(busy_log[1].started_at >= asked, "{busy_log:#?}");
    assert_eq!(busy_log[1].outcome, AttemptOutcome::Delivered);

    let gone_log = of(gone_route);
    assert_eq!(gone_log.len(), 1, "a 404 is not retried: {gone_log:#?}");
    assert_eq!(gone_log[0].outcome, AttemptOutcome::Failed);
    assert_eq!(gone_log[0].status_code, Some(404));
    assert_eq!(gone.received().len(), 1);
    let dead = pipeline
        .wait_for_stream(subjects::DEADLETTER_STREAM, "deadletter.notify")
        .await;
    assert_eq!(dead.len(), 1);
    alerter.stop().await;
    ingestor.stop().await;
}
