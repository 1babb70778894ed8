//! Every storage query on the backend under test (SQLite by default; Postgres with
//! `THREATMON_TEST_BACKEND=postgres`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use chrono::Utc;
use common::domain::{AlertStatus, EventIn, Severity};
use common::storage::{EventFilter, EventRecord, Storage, StorageError};
use serde_json::json;
use testkit::TestDb;

fn record(uid: &str, severity: Severity) -> EventRecord {
    let event = EventIn::from_value(json!({
        "sourceName": "ids-core", "eventType": "brute_force", "severity": severity.as_str(),
        "description": format!("event {uid}"), "occurred_at": "2026-11-28T12:00:00.123456Z",
        "attributes": {"user": "root", "attempts": 12},
    }))
    .unwrap();
    EventRecord {
        uid: uid.to_owned(),
        event,
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn storing_the_same_events_again_stores_nothing_new_but_escalates_them_again() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let batch = vec![
        record("a", Severity::Low),
        record("b", Severity::High),
        record("b", Severity::High),
        record("c", Severity::Critical),
    ];

    let first = storage.store_events(&batch, Severity::High).await.unwrap();
    let again = storage.store_events(&batch, Severity::High).await.unwrap();

    assert_eq!(
        first.newly_stored, 3,
        "a repeat within the batch is stored once"
    );
    assert_eq!(again.newly_stored, 0);
    assert_eq!(storage.count_events().await.unwrap(), 3);
    let uids = |events: &[common::Event]| {
        let mut v: Vec<(String, i64)> = events.iter().map(|e| (e.uid.clone(), e.id)).collect();
        v.sort();
        v
    };
    assert_eq!(uids(&first.to_escalate).len(), 2);
    assert_eq!(
        uids(&first.to_escalate),
        uids(&again.to_escalate),
        "same rows, same ids"
    );

    let stored = storage.event_by_uid("b").await.unwrap().unwrap();
    assert_eq!(
        stored,
        first
            .to_escalate
            .iter()
            .find(|e| e.uid == "b")
            .unwrap()
            .clone()
    );
    assert_eq!(stored.attributes.unwrap()["attempts"], 12);
    assert_eq!(
        stored.occurred_at.unwrap().to_rfc3339(),
        "2026-11-28T12:00:00.123456+00:00"
    );
    let newest = storage
        .list_events(&EventFilter::default(), 10, 0)
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(),
        ["c", "b", "a"],
        "newest first"
    );
}

#[tokio::test]
async fn an_event_gets_exactly_one_alert_and_its_creation_is_recorded() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let stored = storage
        .store_events(
            &[record("x", Severity::High), record("y", Severity::Critical)],
            Severity::High,
        )
        .await
        .unwrap();

    let first = storage
        .create_alerts(&stored.to_escalate, Utc::now())
        .await
        .unwrap();
    let again = storage
        .create_alerts(&stored.to_escalate, Utc::now())
        .await
        .unwrap();

    assert_eq!(first.newly_created, 2);
    assert_eq!(again.newly_created, 0);
    assert_eq!(storage.count_alerts().await.unwrap(), 2);
    let mut first_ids: Vec<i64> = first.alerts.iter().map(|a| a.id).collect();
    let mut again_ids: Vec<i64> = again.alerts.iter().map(|a| a.id).collect();
    first_ids.sort();
    again_ids.sort();
    assert_eq!(first_ids, again_ids, "a redelivery sees the same alerts");

    let alert = storage.alert_by_id(first_ids[0]).await.unwrap().unwrap();
    assert_eq!(alert.status, AlertStatus::Open);
    let event = storage.event_by_id(alert.event_id).await.unwrap().unwrap();
    assert_eq!(
        (alert.severity, &alert.event_type),
        (event.severity, &event.event_type)
    );
    let history = storage.status_history(alert.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].from_status, None);
    assert_eq!(history[0].to_status, AlertStatus::Open);
    assert_eq!(history[0].changed_by, None);
}

#[tokio::test]
async fn an_alert_for_an_event_the_database_does_not_hold_is_refused_not_retried() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let stored = storage
        .store_events(&[record("real", Severity::High)], Severity::High)
        .await
        .unwrap();
    let mut ghost = stored.to_escalate[0].clone();
    ghost.id += 1000;

    let err = storage
        .create_alerts(&[ghost], Utc::now())
        .await
        .unwrap_err();

    assert!(matches!(err, StorageError::Rejected(_)), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(storage.count_alerts().await.unwrap(), 0);
}

#[tokio::test]
async fn three_services_migrating_one_new_database_at_once_all_start() {
    let db = TestDb::new().await;
    let (a, b, c) = tokio::join!(
        Storage::connect_and_migrate(db.url()),
        Storage::connect_and_migrate(db.url()),
        Storage::connect_and_migrate(db.url()),
    );
    for storage in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert_eq!(storage.count_events().await.unwrap(), 0);
    }
}
