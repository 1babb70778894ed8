//! The pipeline end to end: sensor message → stored event → escalation → alert → notification.
//! Each test has its own nats-server and database (set `THREATMON_TEST_BACKEND=postgres`
//! to run them on Postgres).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;

use bytes::Bytes;
use common::bus::REASON_HEADER;
use common::domain::Severity;
use common::storage::{AlertFilter, AlertOrdering};
use common::subjects;
use serde_json::json;
use threatmon_tests::{Pipeline, count_at_least, event, mixed_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_events_are_stored_and_exactly_the_high_and_critical_ones_alerted_once() {
    // Arrange
    let pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    let events = mixed_events("mixed", 1000);
    let escalated = count_at_least(&events, Severity::High);
    assert_eq!(escalated, 500);

    // Act
    pipeline.publish_events(&events).await;

    // Assert
    pipeline.wait_for_events(1000).await;
    pipeline.wait_for_alerts(escalated).await;
    pipeline.wait_drained().await;

    let alerts = pipeline
        .storage
        .list_alerts(&AlertFilter::default(), AlertOrdering::default(), 10_000, 0)
        .await
        .unwrap();
    assert_eq!(alerts.len() as i64, escalated);
    let mut alerted_events = HashSet::new();
    for alert in &alerts {
        assert!(alert.severity >= Severity::High, "{alert:?}");
        assert!(
            alerted_events.insert(alert.event_id),
            "two alerts for one event"
        );
        let event = pipeline
            .storage
            .event_by_id(alert.event_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.severity, alert.severity);
        assert_eq!(event.event_type, alert.event_type);
        let history = pipeline.storage.status_history(alert.id).await.unwrap();
        assert_eq!(history.len(), 1, "creation is recorded");
        assert_eq!(history[0].from_status, None);
    }
    let notified = pipeline.created_notifications().await;
    assert_eq!(
        notified.len() as i64,
        escalated,
        "one notification per alert"
    );
    for alert in &alerts {
        assert_eq!(
            notified.get(&alert.id),
            Some(&1),
            "alert {} notified once",
            alert.id
        );
    }
    // Every stored event kept what the sensor sent.
    let sample = pipeline
        .storage
        .event_by_uid("mixed-7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sample.description, "event number 7");
    assert_eq!(sample.attributes.unwrap()["n"], 7);

    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_sent_twice_is_stored_once_and_alerted_once() {
    let pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();

    // Twice with the same Nats-Msg-Id: JetStream drops the repeat.
    let by_header = event(1, Severity::High);
    pipeline
        .publish_event(&by_header, Some("sensor-key-1"))
        .await;
    pipeline
        .publish_event(&by_header, Some("sensor-key-1"))
        .await;

    // Twice with the same uid in the body and no header: JetStream stores both, so the
    // ingestor must recognise the repeat, in one batch and across batches.
    let mut by_body = event(2, Severity::Critical);
    by_body["uid"] = json!("body-uid-2");
    pipeline.publish_event(&by_body, None).await;
    pipeline.publish_event(&by_body, None).await;
    pipeline.wait_drained().await;
    pipeline.publish_event(&by_body, None).await;
    pipeline.wait_drained().await;

    assert_eq!(pipeline.storage.count_events().await.unwrap(), 2);
    assert_eq!(pipeline.storage.count_alerts().await.unwrap(), 2);
    let stored = pipeline
        .storage
        .event_by_uid("body-uid-2")
        .await
        .unwrap()
        .unwrap();
    let alert = pipeline
        .storage
        .alert_by_event_id(stored.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alert.severity, Severity::Critical);
    assert!(
        pipeline
            .storage
            .event_by_uid("sensor-key-1")
            .await
            .unwrap()
            .is_some()
    );
    let notified = pipeline.created_notifications().await;
    assert_eq!(notified.len(), 2);
    assert!(notified.values().all(|&n| n == 1), "{notified:?}");

    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_lettered_with_a_reason_and_later_events_are_stored() {
    let pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::High);

    let oversized = json!({
        "sourceName": "fw", "eventType": "x", "severity": "LOW",
        "description": "a".repeat(64 * 1024 + 1),
    });
    let bad: Vec<(&str, Bytes, &str)> = vec![
        (
            "events.fw",
            Bytes::from_static(b"this is not json{"),
            "not JSON",
        ),
        (
            "events.fw",
            Bytes::from(json!({"eventType": "x", "severity": "LOW"}).to_string()),
            r#""sourceName":["This field is required."]"#,
        ),
        (
            "events.fw",
            Bytes::from(
                json!({"sourceName": "fw", "eventType": "x", "severity": "SEVERE"}).to_string(),
            ),
            r#""severity":["\"SEVERE\" is not a valid choice."]"#,
        ),
        (
            "events.fw",
            Bytes::from(oversized.to_string()),
            "Ensure this field has no more than 65536 bytes",
        ),
        (
            "events.fw",
            Bytes::from_static(b"[1,2,3]"),
            "Expected a dictionary",
        ),
    ];
    for (subject, body, _) in &bad {
        pipeline.publish(subject, body.clone(), None).await;
    }
    let good = mixed_events("after-bad", 10);
    pipeline.publish_events(&good).await;

    pipeline.wait_for_events(10).await;
    pipeline
        .wait_consumer_drained(subjects::EVENTS_STREAM, subjects::INGESTOR_CONSUMER)
        .await;
    let letters = pipeline
        .read_stream(subjects::DEADLETTER_STREAM, "deadletter.ingest")
        .await;
    assert_eq!(letters.len(), bad.len(), "one dead letter per bad message");
    for ((_, body, expected_reason), letter) in bad.iter().zip(&letters) {
        let headers = letter.headers.as_ref().expect("dead letter has headers");
        let reason = headers.get(REASON_HEADER).expect("reason header").as_str();
        assert!(
            reason.contains(expected_reason),
            "reason {reason:?} should mention {expected_reason:?}"
        );
        assert_eq!(&letter.payload, body, "the original message is kept");
        assert_eq!(
            headers.get("Threatmon-Original-Subject").unwrap().as_str(),
            "events.fw"
        );
    }
    assert!(ingestor.is_running(), "bad input never stops the worker");
    ingestor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_min_severity_critical_alerts_only_critical_events() {
    let pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::Critical);
    let alerter = pipeline.start_alerter();
    let events = mixed_events("crit", 200);

    pipeline.publish_events(&events).await;

    pipeline.wait_for_events(200).await;
    pipeline.wait_drained().await;
    let alerts = pipeline
        .storage
        .list_alerts(&AlertFilter::default(), AlertOrdering::default(), 1000, 0)
        .await
        .unwrap();
    assert_eq!(
        alerts.len() as i64,
        count_at_least(&events, Severity::Critical)
    );
    assert!(alerts.iter().all(|a| a.severity == Severity::Critical));
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_the_alerter_cannot_use_are_dead_lettered_and_good_ones_still_alerted() {
    let pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();

    pipeline
        .publish(
            "escalations.high",
            Bytes::from_static(b"{\"id\": \"x\"}"),
            Some("junk"),
        )
        .await;
    let ghost = json!({
        "id": 999_999, "uid": "ghost", "sourceName": "fw", "eventType": "x", "severity": "HIGH",
        "description": "", "created_at": "2026-11-28T12:00:00Z",
    });
    pipeline
        .publish(
            "escalations.high",
            Bytes::from(ghost.to_string()),
            Some("ghost"),
        )
        .await;
    pipeline
        .publish_event(&event(3, Severity::High), Some("real"))
        .await;

    pipeline.wait_for_alerts(1).await;
    pipeline.wait_drained().await;
    let letters = pipeline
        .read_stream(subjects::DEADLETTER_STREAM, "deadletter.alert")
        .await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| {
            l.headers
                .as_ref()
                .unwrap()
                .get(REASON_HEADER)
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("not an escalated event"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("the database refused the alert"),
        "{reasons:?}"
    );
    ingestor.stop().await;
    alerter.stop().await;
}
