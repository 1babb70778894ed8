//! Every storage query on the backend under test (SQLite by default; Postgres with
//! `THREATMON_TEST_BACKEND=postgres`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use common::domain::{Alert, AlertStatus, EventIn, Role, Severity};
use common::storage::{AlertFilter, EventFilter, EventRecord, NewUser, Storage, StorageError};
use serde_json::json;
use testkit::TestDb;

/// Sensors and types the records below are spread over, so that the counts per type and per
/// sensor are tested with more than one of each.
const SOURCES: [&str; 3] = ["ids-core", "fw-edge", "vpn-gw"];
const TYPES: [&str; 2] = ["brute_force", "port_scan"];

/// A sensor and a type picked by the uid, always the same for one uid.
fn source_and_type(uid: &str) -> (&'static str, &'static str) {
    let sum: usize = uid.bytes().map(usize::from).sum();
    (SOURCES[sum % SOURCES.len()], TYPES[(sum / 3) % TYPES.len()])
}

fn record(uid: &str, severity: Severity) -> EventRecord {
    let (source, event_type) = source_and_type(uid);
    let event = EventIn::from_value(json!({
        "sourceName": source, "eventType": event_type, "severity": severity.as_str(),
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

/// The losers of a race to migrate a new SQLite file fail with "database is locked", with
/// "UNIQUE constraint failed: _sqlx_migrations.version", or (migration 4's ALTER TABLE) with
/// "duplicate column name": each must retry and start, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_migrators_on_new_databases_all_start_round_after_round() {
    for round in 0..8 {
        let db = TestDb::new().await;
        let migrators: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url().to_owned();
                tokio::spawn(async move { Storage::connect_and_migrate(&url).await })
            })
            .collect();
        for migrator in migrators {
            let storage = migrator
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert_eq!(storage.count_events().await.unwrap(), 0);
            storage.close().await;
        }
    }
}

#[tokio::test]
async fn a_migration_that_cannot_apply_is_reported_at_once_with_its_cause() {
    let db = TestDb::new().await;
    let storage = Storage::connect(db.url()).await.unwrap();
    // A table of ours, made by something else: the first migration's indexes name columns
    // it lacks. Retrying cannot help, so waiting (the old 50 retries took ~19 s) would only
    // hide the cause.
    let sql = "CREATE TABLE events (id INTEGER PRIMARY KEY, note TEXT)";
    match &storage {
        Storage::Sqlite(pool, ..) => sqlx::query(sql).execute(pool).await.map(drop),
        Storage::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .unwrap();
    let started = std::time::Instant::now();
    let err = storage.migrate().await.unwrap_err();
    let elapsed = started.elapsed();
    let message = common::telemetry::error_chain(&err);
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "took {elapsed:?} to report {message}"
    );
    assert!(matches!(err, StorageError::Migrate(_)), "{err:?}");
    // SQLite: "no such column: severity"; Postgres: column "severity" does not exist.
    assert!(message.contains("severity"), "{message}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported_at_once_with_its_cause() {
    if testkit::Backend::from_env() != testkit::Backend::Sqlite {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let url = format!("sqlite://{}", path.display());
    let started = std::time::Instant::now();
    let err = Storage::connect_and_migrate(&url).await.unwrap_err();
    let elapsed = started.elapsed();
    let message = common::telemetry::error_chain(&err);
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "took {elapsed:?} to report {message}"
    );
    assert!(message.contains("not a database"), "{message}");
}

// ----------------------------------------------------------------------------------------
// Counts: `count_events*` and `count_alerts*` answer a filter on severity (events) or status
// and severity (alerts) from the count tables, which must always equal COUNT(*).

/// An event without `occurred_at` and `attributes` (both stored as NULL).
fn bare_record(uid: &str, severity: Severity) -> EventRecord {
    let (source, event_type) = source_and_type(uid);
    let event = EventIn::from_value(json!({
        "sourceName": source, "eventType": event_type, "severity": severity.as_str(),
        "description": format!("bare event {uid}"),
    }))
    .unwrap();
    EventRecord {
        uid: uid.to_owned(),
        event,
        created_at: Utc::now(),
    }
}

/// Before every stored row: a filter from then on matches every row, but is one the count
/// tables cannot answer, so the storage counts it with COUNT(*).
fn dawn() -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(0, 0)
}

/// Asserts that every count the count table answers equals COUNT(*) of the same rows (and
/// the rows listed), and returns the total.
async fn assert_event_counts_exact(storage: &Storage, context: &str) -> i64 {
    let mut filters = Vec::new();
    for severity in Severity::ALL.map(Some).into_iter().chain([None]) {
        filters.push(EventFilter {
            severity,
            ..EventFilter::default()
        });
        for event_type in TYPES.into_iter().chain(["no-such-type"]) {
            filters.push(EventFilter {
                severity,
                event_type: Some(event_type.to_owned()),
                ..EventFilter::default()
            });
        }
        for source in SOURCES.into_iter().chain(["no-such-sensor"]) {
            filters.push(EventFilter {
                severity,
                source_name: Some(source.to_owned()),
                ..EventFilter::default()
            });
        }
    }
    for filter in filters {
        let counted = storage.count_events_matching(&filter).await.unwrap();
        let scanned = EventFilter {
            created_from: dawn(),
            ..filter.clone()
        };
        let scanned = storage.count_events_matching(&scanned).await.unwrap();
        let listed = storage
            .list_events(&filter, i64::MAX, 0)
            .await
            .unwrap()
            .len();
        assert_eq!(counted, scanned, "{context}: {filter:?}");
        assert_eq!(counted, listed as i64, "{context}: {filter:?}");
    }
    let total = storage.count_events().await.unwrap();
    assert_eq!(
        total,
        storage
            .count_events_matching(&EventFilter::default())
            .await
            .unwrap(),
        "{context}"
    );
    total
}

/// The same for alerts: every status, every severity, every pair, and none; each alone and
/// with each type or each sensor.
async fn assert_alert_counts_exact(storage: &Storage, context: &str) -> i64 {
    let mut filters = Vec::new();
    // Every status and severity alone, none, and (several values) the unresolved ones and
    // the two highest.
    let unresolved = vec![AlertStatus::Open, AlertStatus::Acknowledged];
    let statuses = AlertStatus::ALL
        .map(|s| vec![s])
        .into_iter()
        .chain([vec![], unresolved]);
    for status in statuses {
        let severities = Severity::ALL
            .map(|s| vec![s])
            .into_iter()
            .chain([vec![], vec![Severity::High, Severity::Critical]]);
        for severity in severities {
            filters.push(AlertFilter {
                status: status.clone(),
                severity: severity.clone(),
                ..AlertFilter::default()
            });
            for event_type in TYPES.into_iter().chain(["no-such-type"]) {
                filters.push(AlertFilter {
                    status: status.clone(),
                    severity: severity.clone(),
                    event_type: vec![event_type.to_owned()],
                    ..AlertFilter::default()
                });
            }
            for source in SOURCES.into_iter().chain(["no-such-sensor"]) {
                filters.push(AlertFilter {
                    status: status.clone(),
                    severity: severity.clone(),
                    source_name: vec![source.to_owned()],
                    ..AlertFilter::default()
                });
            }
        }
    }
    for filter in filters {
        let counted = storage.count_alerts_matching(&filter).await.unwrap();
        let scanned = AlertFilter {
            created_from: dawn(),
            ..filter.clone()
        };
        let scanned = storage.count_alerts_matching(&scanned).await.unwrap();
        let listed = storage
            .list_alerts(&filter, Default::default(), i64::MAX, 0)
            .await
            .unwrap()
            .len();
        assert_eq!(counted, scanned, "{context}: {filter:?}");
        assert_eq!(counted, listed as i64, "{context}: {filter:?}");
    }
    let total = storage.count_alerts().await.unwrap();
    assert_eq!(
        total,
        storage
            .count_alerts_matching(&AlertFilter::default())
            .await
            .unwrap(),
        "{context}"
    );
    total
}

async fn count_of(storage: &Storage, severity: Severity) -> i64 {
    let filter = EventFilter {
        severity: Some(severity),
        ..EventFilter::default()
    };
    storage.count_events_matching(&filter).await.unwrap()
}

#[tokio::test]
async fn event_counts_grow_by_the_events_stored_only() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    assert_eq!(assert_event_counts_exact(&storage, "empty").await, 0);

    // Repeats within the batch, one with another severity: the first with a key is stored.
    let batch = vec![
        record("a", Severity::Low),
        bare_record("b", Severity::High),
        record("a", Severity::Critical),
        record("c", Severity::Critical),
        bare_record("b", Severity::High),
    ];
    let first = storage.store_events(&batch, Severity::High).await.unwrap();
    assert_eq!(first.newly_stored, 3);
    assert_eq!(assert_event_counts_exact(&storage, "first").await, 3);
    assert_eq!(count_of(&storage, Severity::Low).await, 1);
    assert_eq!(count_of(&storage, Severity::Critical).await, 1);
    assert_eq!(
        storage.event_by_uid("a").await.unwrap().unwrap().severity,
        Severity::Low
    );

    // A redelivery counts nothing, even claiming other severities for stored keys.
    let again = storage.store_events(&batch, Severity::High).await.unwrap();
    assert_eq!(again.newly_stored, 0);
    let redelivered = vec![
        record("c", Severity::Low),
        record("d", Severity::Medium),
        record("a", Severity::High),
    ];
    let partly = storage
        .store_events(&redelivered, Severity::High)
        .await
        .unwrap();
    assert_eq!(partly.newly_stored, 1);
    assert_eq!(assert_event_counts_exact(&storage, "redelivered").await, 4);
    assert_eq!(count_of(&storage, Severity::Low).await, 1);
    assert_eq!(count_of(&storage, Severity::Medium).await, 1);
    assert_eq!(count_of(&storage, Severity::High).await, 1);
    assert_eq!(count_of(&storage, Severity::Critical).await, 1);

    // More than one SQLite chunk (500 rows), with repeats across chunks and stored keys.
    let big: Vec<EventRecord> = (0..1_300)
        .map(|i| {
            let severity = Severity::ALL[(i * 7 + i / 3) % 4];
            record(&format!("big-{}", i % 1_000), severity)
        })
        .chain([record("a", Severity::Critical)])
        .collect();
    let stored = storage.store_events(&big, Severity::High).await.unwrap();
    assert_eq!(stored.newly_stored, 1_000);
    assert_eq!(assert_event_counts_exact(&storage, "big").await, 1_004);
    let mut expected_high = 0;
    for i in 0..1_000 {
        if Severity::ALL[(i * 7 + i / 3) % 4] >= Severity::High {
            expected_high += 1;
        }
    }
    // Every stored event of the batch at or above HIGH, each once: the thousand new, and
    // "a", which is LOW as stored, not.
    assert_eq!(stored.to_escalate.len(), expected_high);
    let escalated: HashSet<&str> = stored.to_escalate.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(escalated.len(), expected_high);
    assert!(!escalated.contains("a"));
}

#[tokio::test]
async fn missing_occurred_at_and_attributes_are_stored_and_read_back_as_null() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let batch = vec![
        bare_record("bare-1", Severity::High),
        record("full", Severity::High),
        bare_record("bare-2", Severity::Low),
    ];

    let stored = storage.store_events(&batch, Severity::Low).await.unwrap();

    assert_eq!(stored.newly_stored, 3);
    for uid in ["bare-1", "bare-2"] {
        let event = storage.event_by_uid(uid).await.unwrap().unwrap();
        assert_eq!(event.occurred_at, None, "{uid}");
        assert_eq!(event.attributes, None, "{uid}");
        let escalated = stored.to_escalate.iter().find(|e| e.uid == uid).unwrap();
        assert_eq!(escalated, &event, "{uid}: as returned, as stored");
    }
    let full = storage.event_by_uid("full").await.unwrap().unwrap();
    assert_eq!(full.attributes.unwrap()["user"], "root");
    assert_eq!(
        full.occurred_at.unwrap().to_rfc3339(),
        "2026-11-28T12:00:00.123456+00:00"
    );
    // A redelivery reads them back from the database, NULLs included.
    let again = storage.store_events(&batch, Severity::Low).await.unwrap();
    let bare = again
        .to_escalate
        .iter()
        .find(|e| e.uid == "bare-1")
        .unwrap();
    assert_eq!((bare.occurred_at, &bare.attributes), (None, &None));
}

async fn analyst(storage: &Storage, name: &str) -> i64 {
    let user = NewUser {
        username: name.to_owned(),
        email: String::new(),
        password_hash: "$argon2id$v=19$test".to_owned(),
        role: Role::Analyst,
        is_active: true,
    };
    storage.create_user(&user, Utc::now()).await.unwrap().id
}

/// Stores `n` events of every severity in turn (uids `{prefix}-{i}`) and makes their alerts.
async fn alerts(storage: &Storage, prefix: &str, n: usize) -> Vec<Alert> {
    let records: Vec<EventRecord> = (0..n)
        .map(|i| record(&format!("{prefix}-{i}"), Severity::ALL[i % 4]))
        .collect();
    let stored = storage.store_events(&records, Severity::Low).await.unwrap();
    let created = storage
        .create_alerts(&stored.to_escalate, Utc::now())
        .await
        .unwrap();
    let mut alerts = created.alerts;
    alerts.sort_by_key(|a| a.id);
    alerts
}

#[tokio::test]
async fn alert_counts_follow_creations_and_status_changes_only() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let who = analyst(&storage, "alice").await;
    let records: Vec<EventRecord> = (0..12)
        .map(|i| record(&format!("e-{i}"), Severity::ALL[i % 4]))
        .collect();
    let stored = storage
        .store_events(&records, Severity::High)
        .await
        .unwrap();
    assert_eq!(stored.to_escalate.len(), 6);

    // Repeats within the list and a redelivery create nothing more.
    let mut twice = stored.to_escalate.clone();
    twice.extend(stored.to_escalate.iter().take(3).cloned());
    let first = storage.create_alerts(&twice, Utc::now()).await.unwrap();
    assert_eq!(first.newly_created, 6);
    assert_eq!(assert_alert_counts_exact(&storage, "created").await, 6);
    let again = storage.create_alerts(&twice, Utc::now()).await.unwrap();
    assert_eq!(again.newly_created, 0);
    assert_eq!(assert_alert_counts_exact(&storage, "redelivered").await, 6);
    let open = AlertFilter {
        status: vec![AlertStatus::Open],
        ..AlertFilter::default()
    };
    assert_eq!(storage.count_alerts_matching(&open).await.unwrap(), 6);

    let mut alerts = first.alerts.clone();
    alerts.sort_by_key(|a| a.id);
    let steps = [
        (0, AlertStatus::Acknowledged),
        (1, AlertStatus::Resolved),
        (0, AlertStatus::Acknowledged), // already: records nothing, moves nothing
        (0, AlertStatus::Resolved),
        (2, AlertStatus::Open), // already
        (1, AlertStatus::Open),
        (3, AlertStatus::Acknowledged),
    ];
    for (step, (index, to)) in steps.into_iter().enumerate() {
        let alert = &alerts[index];
        storage
            .change_alert_status(alert.id, to, who, None, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            assert_alert_counts_exact(&storage, &format!("step {step}")).await,
            6
        );
    }
    // No such alert: nothing moves.
    let missing = storage
        .change_alert_status(1_000_000, AlertStatus::Resolved, who, None, Utc::now())
        .await
        .unwrap();
    assert!(missing.is_none());
    assert_eq!(assert_alert_counts_exact(&storage, "missing").await, 6);
    let by_status = |status| AlertFilter {
        status: vec![status],
        ..AlertFilter::default()
    };
    assert_eq!(
        storage
            .count_alerts_matching(&by_status(AlertStatus::Open))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        storage
            .count_alerts_matching(&by_status(AlertStatus::Acknowledged))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        storage
            .count_alerts_matching(&by_status(AlertStatus::Resolved))
            .await
            .unwrap(),
        1
    );
    let critical_open = AlertFilter {
        status: vec![AlertStatus::Open],
        severity: vec![Severity::Critical],
        ..AlertFilter::default()
    };
    // Alerts 0 (RESOLVED) and 3 (ACKNOWLEDGED) are the only ones not OPEN.
    let expected = (0..alerts.len())
        .filter(|i| alerts[*i].severity == Severity::Critical && ![0, 3].contains(i))
        .count() as i64;
    assert_eq!(
        storage.count_alerts_matching(&critical_open).await.unwrap(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_status_changes_keep_alert_counts_exact() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let alice = analyst(&storage, "alice").await;
    let bob = analyst(&storage, "bob").await;
    let alerts = alerts(&storage, "race", 16).await;
    assert_eq!(alerts.len(), 16);

    // Each round changes every alert twice at once, to two different statuses (the same
    // alert: the second waits for the first), and half the alerts in one direction while
    // the other half go the opposite way (the same count rows, locked in one order).
    let rounds = [
        [AlertStatus::Acknowledged, AlertStatus::Resolved],
        [AlertStatus::Open, AlertStatus::Acknowledged],
        [AlertStatus::Resolved, AlertStatus::Open],
        [AlertStatus::Acknowledged, AlertStatus::Open],
    ];
    for (round, statuses) in rounds.into_iter().enumerate() {
        let mut tasks = Vec::new();
        for (i, alert) in alerts.iter().enumerate() {
            let [first, second] = if i % 2 == 0 {
                statuses
            } else {
                [statuses[1], statuses[0]]
            };
            for (to, who) in [(first, alice), (second, bob)] {
                let storage = storage.clone();
                let id = alert.id;
                tasks.push(tokio::spawn(async move {
                    storage
                        .change_alert_status(id, to, who, None, Utc::now())
                        .await
                }));
            }
        }
        for task in tasks {
            match task.await.unwrap() {
                Ok(update) => assert!(update.is_some()),
                // Whichever of the two changes runs second may find the alert RESOLVED, and
                // the lifecycle refuses RESOLVED → ACKNOWLEDGED.
                Err(StorageError::Refused(why)) => {
                    assert_eq!(why, "Cannot change status from RESOLVED to ACKNOWLEDGED.")
                }
                Err(err) => panic!("{err}"),
            }
        }
        let context = format!("round {round}");
        assert_eq!(assert_alert_counts_exact(&storage, &context).await, 16);
        // Every alert's history is an unbroken chain ending in its status.
        for alert in &alerts {
            let history = storage.status_history(alert.id).await.unwrap();
            for pair in history.windows(2) {
                assert_eq!(pair[1].from_status, Some(pair[0].to_status), "{context}");
            }
            let stored = storage.alert_by_id(alert.id).await.unwrap().unwrap();
            assert_eq!(Some(stored.status), history.last().map(|c| c.to_status));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_storing_overlapping_batches_at_once_keep_counts_exact() {
    let db = TestDb::new().await;
    let one = Storage::connect_and_migrate(db.url()).await.unwrap();
    let two = Storage::connect_and_migrate(db.url()).await.unwrap();

    let mut distinct = HashSet::new();
    for round in 0..6 {
        // Two ingestors with overlapping batches (a redelivery to the other one while the
        // first still works), in stream order; every severity in each.
        let batch = |from: usize, to: usize| -> Vec<EventRecord> {
            (from..to)
                .map(|i| record(&format!("r{round}-{i}"), Severity::ALL[(i / 3) % 4]))
                .collect()
        };
        let (a, b) = (batch(0, 300), batch(150, 450));
        distinct.extend(a.iter().chain(&b).map(|r| r.uid.clone()));
        let (one_task, two_task) = (one.clone(), two.clone());
        let first = tokio::spawn(async move { one_task.store_events(&a, Severity::High).await });
        let second = tokio::spawn(async move { two_task.store_events(&b, Severity::High).await });
        let (first, second) = (
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        );
        assert_eq!(
            first.newly_stored + second.newly_stored,
            450,
            "round {round}"
        );
        let context = format!("round {round}");
        assert_eq!(
            assert_event_counts_exact(&one, &context).await,
            distinct.len() as i64
        );

        // And two alerters making the alerts of overlapping escalations.
        let (mut x, mut y) = (first.to_escalate, second.to_escalate);
        x.sort_by_key(|e| e.id);
        y.sort_by_key(|e| e.id);
        let (one_task, two_task) = (one.clone(), two.clone());
        let first = tokio::spawn(async move { one_task.create_alerts(&x, Utc::now()).await });
        let second = tokio::spawn(async move { two_task.create_alerts(&y, Utc::now()).await });
        let (first, second) = (
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        );
        let escalated = (0..450)
            .filter(|i| Severity::ALL[(i / 3) % 4] >= Severity::High)
            .count();
        assert_eq!(
            first.newly_created + second.newly_created,
            escalated as u64,
            "round {round}: HIGH and CRITICAL, each once"
        );
        assert_eq!(
            assert_alert_counts_exact(&two, &context).await,
            (escalated * (round + 1)) as i64
        );
    }
}

/// Runs `$body` with `$pool` bound to the storage's pool, whichever the engine.
macro_rules! with_pool {
    ($storage:expr, |$pool:ident| $body:expr) => {
        match $storage {
            Storage::Sqlite($pool, ..) => $body,
            Storage::Postgres($pool) => $body,
        }
    };
}

#[tokio::test]
async fn rows_stored_before_the_count_tables_existed_are_counted_by_the_migration() {
    let db = TestDb::new().await;
    let storage = Storage::connect(db.url()).await.unwrap();
    let engine = match &storage {
        Storage::Sqlite(..) => "sqlite",
        Storage::Postgres(_) => "postgres",
    };
    let dir = format!(
        "{}/../common/migrations/{engine}",
        env!("CARGO_MANIFEST_DIR")
    );
    let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(&dir))
        .await
        .unwrap();
    assert!(
        migrator.iter().any(|m| m.version == 3) && migrator.iter().any(|m| m.version == 5),
        "the count tables come with migrations 3 and 5"
    );
    // The schema as it was before the count tables, and rows written by that version.
    with_pool!(&storage, |pool| {
        migrator.run_to(2, pool).await.unwrap();
        for i in 0..50_i64 {
            let severity = [1_i16, 1, 2, 3, 4, 4, 4][usize::try_from(i % 7).unwrap()];
            sqlx::query(
                "INSERT INTO events (uid, source_name, event_type, severity, description, \
                 created_at) VALUES ($1, $2, $3, $4, 'before', $5)",
            )
            .bind(format!("old-{i}"))
            .bind(SOURCES[usize::try_from(i % 3).unwrap()])
            .bind(TYPES[usize::try_from(i % 2).unwrap()])
            .bind(severity)
            .bind(1_000_000 + i)
            .execute(pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO alerts (event_id, source_name, event_type, severity, status, \
             created_at, updated_at) \
             SELECT id, source_name, event_type, severity, \
             CASE id % 3 WHEN 0 THEN 'OPEN' WHEN 1 THEN 'ACKNOWLEDGED' ELSE 'RESOLVED' END, \
             created_at, created_at FROM events WHERE severity >= 2",
        )
        .execute(pool)
        .await
        .unwrap();
    });

    storage.migrate().await.unwrap();

    assert_eq!(assert_event_counts_exact(&storage, "migrated").await, 50);
    assert_eq!(count_of(&storage, Severity::Critical).await, 21);
    let alerts = assert_alert_counts_exact(&storage, "migrated").await;
    assert_eq!(alerts, 50 - 15);
    // And they go on from there.
    let stored = storage
        .store_events(
            &[
                record("new-1", Severity::Critical),
                record("old-3", Severity::Low),
            ],
            Severity::High,
        )
        .await
        .unwrap();
    assert_eq!(stored.newly_stored, 1);
    assert_eq!(assert_event_counts_exact(&storage, "after").await, 51);
    assert_eq!(count_of(&storage, Severity::Critical).await, 22);
    storage
        .create_alerts(&stored.to_escalate, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        assert_alert_counts_exact(&storage, "after").await,
        alerts + 1
    );
}
