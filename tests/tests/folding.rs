//! Folding repeats into one alert (`ALERT_FOLD_KEY`), on the backend under test: each
//! escalated event is counted in exactly one alert, once, whatever is redelivered, killed or
//! run twice at once.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};

use chrono::{DateTime, Utc};
use common::domain::{Alert, AlertStatus, Event, EventIn, FoldKey, Severity};
use common::storage::{AlertFilter, AlertOrdering, EventRecord, Folding, Storage};
use serde_json::{Value, json};
use testkit::{TestDb, eventually, free_port};
use threatmon_tests::{PATIENCE, Pipeline, binary};

/// 10 sensors × 5 types.
const KEYS: usize = 50;

/// The `i`th event of a stream spread evenly over [`KEYS`] fold keys, HIGH or CRITICAL (so
/// every one is escalated).
fn keyed_event(i: usize) -> Value {
    let key = i % KEYS;
    json!({
        "sourceName": format!("sensor-{}", key % 10),
        "eventType": format!("type-{}", key / 10),
        "severity": if i.is_multiple_of(7) { "CRITICAL" } else { "HIGH" },
        "description": format!("repeat {i}"),
        "attributes": {"src_ip": format!("10.0.0.{}", i % 3)},
    })
}

fn record(uid: &str, body: Value, created_at: DateTime<Utc>) -> EventRecord {
    EventRecord {
        uid: uid.to_owned(),
        event: EventIn::from_value(body).unwrap(),
        created_at,
    }
}

/// Stores the events and returns them as the alerter receives them.
async fn stored(storage: &Storage, records: &[EventRecord]) -> Vec<Event> {
    let mut events = Vec::new();
    for chunk in records.chunks(1000) {
        events.extend(
            storage
                .store_events(chunk, Severity::Low)
                .await
                .unwrap()
                .to_escalate,
        );
    }
    events
}

fn folding(key: &str) -> Folding {
    Folding {
        key: key.parse::<FoldKey>().unwrap(),
        window_secs: 3600,
    }
}

async fn all_alerts(storage: &Storage) -> Vec<Alert> {
    storage
        .list_alerts(
            &AlertFilter::default(),
            AlertOrdering::OldestFirst,
            1_000_000,
            0,
        )
        .await
        .unwrap()
}

/// Asserts that every event of `expected` is counted in exactly one alert, once: the alerts'
/// counts add up, their event lists partition the events, and the counts tables agree with
/// the rows.
async fn assert_counted_once(storage: &Storage, expected: &HashSet<i64>, alerts: usize) {
    let stored = all_alerts(storage).await;
    assert_eq!(stored.len(), alerts, "alerts: {stored:#?}");
    let total: i64 = stored.iter().map(|a| a.count).sum();
    assert_eq!(total, expected.len() as i64, "the alerts' counts add up");
    let mut seen = HashSet::new();
    for alert in &stored {
        let events = storage.alert_events(alert.id, 1_000_000, 0).await.unwrap();
        assert_eq!(
            events.len() as i64,
            alert.count,
            "alert {} lists its count",
            alert.id
        );
        assert!(events.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        // Its first event is the one that opened it (not the oldest, when deliveries came
        // out of order); its last is the newest.
        assert!(events.iter().any(|e| e.id == alert.event_id));
        assert_eq!(events.first().map(|e| e.id), Some(alert.last_event_id));
        assert_eq!(
            events.iter().map(|e| e.created_at).max(),
            Some(alert.last_seen_at)
        );
        assert_eq!(
            events.iter().map(|e| e.created_at).min(),
            Some(alert.first_seen_at)
        );
        for event in events {
            assert!(seen.insert(event.id), "event {} counted twice", event.id);
            assert_eq!(event.source_name, alert.source_name);
            assert_eq!(event.event_type, alert.event_type);
        }
    }
    assert_eq!(&seen, expected, "every event is counted");
    assert_counts_tables_match_rows(storage).await;
}

/// The counts tables answer what counting the rows answers, for every status × severity.
async fn assert_counts_tables_match_rows(storage: &Storage) {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    for status in AlertStatus::ALL {
        for severity in Severity::ALL {
            let table = AlertFilter {
                status: vec![status],
                severity: vec![severity],
                ..AlertFilter::default()
            };
            // A time filter makes the count walk the rows.
            let rows = AlertFilter {
                created_from: Some(epoch),
                ..table.clone()
            };
            assert_eq!(
                storage.count_alerts_matching(&table).await.unwrap(),
                storage.count_alerts_matching(&rows).await.unwrap(),
                "{status} {severity}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_folding_every_event_twice_count_each_once_in_fifty_alerts() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let now = Utc::now();
    let records: Vec<EventRecord> = (0..10_000)
        .map(|i| record(&format!("e{i}"), keyed_event(i), now))
        .collect();
    let events = stored(&storage, &records).await;
    assert_eq!(events.len(), 10_000);

    // Each writer folds every event, in batches of its own size and order, at the same time
    // as the other: every event is delivered twice, often at once.
    let forward = events.clone();
    let mut backward = events.clone();
    backward.reverse();
    let mut writers = Vec::new();
    for (batch, events) in [(250, forward), (333, backward)] {
        let storage = storage.clone();
        writers.push(tokio::spawn(async move {
            let mut created = 0;
            for chunk in events.chunks(batch) {
                let done = storage
                    .fold_alerts(chunk, &folding("sourceName,eventType"), Utc::now())
                    .await
                    .unwrap();
                created += done.newly_created;
            }
            created
        }));
    }
    let mut created = 0;
    for writer in writers {
        created += writer.await.unwrap();
    }
    assert_eq!(created, KEYS as u64, "one alert made per key");
    let ids: HashSet<i64> = events.iter().map(|e| e.id).collect();
    assert_counted_once(&storage, &ids, KEYS).await;
    let alerts = all_alerts(&storage).await;
    assert!(alerts.iter().all(|a| a.count == 200));
    assert!(alerts.iter().all(|a| a.severity == Severity::Critical));
    assert!(alerts.iter().all(|a| a.status == AlertStatus::Open));
    let first = &alerts[0];
    assert_eq!(first.fold_key.len(), 2);
    assert_eq!(first.fold_key["sourceName"], json!(first.source_name));
    assert_eq!(first.fold_key["eventType"], json!(first.event_type));
}

#[tokio::test]
async fn a_key_with_an_attribute_splits_alerts_by_its_value_and_none_folds_nothing() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let now = Utc::now();
    // One sensor and type; three source addresses.
    let records: Vec<EventRecord> = (0..30)
        .map(|i| record(&format!("e{i}"), keyed_event(i * KEYS), now))
        .collect();
    let events = stored(&storage, &records).await;

    let split = storage
        .fold_alerts(
            &events[..15],
            &folding("sourceName,eventType,attributes.src_ip"),
            now,
        )
        .await
        .unwrap();
    assert_eq!(split.newly_created, 3);
    let alerts = all_alerts(&storage).await;
    let ips: HashSet<Value> = alerts
        .iter()
        .map(|a| a.fold_key["attributes.src_ip"].clone())
        .collect();
    assert_eq!(
        ips,
        HashSet::from([json!("10.0.0.0"), json!("10.0.0.1"), json!("10.0.0.2")])
    );
    assert!(alerts.iter().all(|a| a.count == 5));

    let each = storage.create_alerts(&events[15..], now).await.unwrap();
    assert_eq!(
        each.newly_created, 15,
        "ALERT_FOLD_KEY=none: one alert per event"
    );
    let ids: HashSet<i64> = events.iter().map(|e| e.id).collect();
    assert_counted_once(&storage, &ids, 18).await;
    let single = all_alerts(&storage).await;
    assert!(
        single[3..]
            .iter()
            .all(|a| a.count == 1 && a.fold_key.is_empty())
    );
}

#[tokio::test]
async fn a_higher_severity_raises_the_alert_and_reopens_it_if_acknowledged() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let admin = admin(&storage).await;
    let now = Utc::now();
    let body = |severity: &str| json!({"sourceName": "ids-core", "eventType": "brute_force", "severity": severity});
    let events = stored(
        &storage,
        &[
            record("a", body("HIGH"), now),
            record("b", body("HIGH"), now),
            record("c", body("CRITICAL"), now),
        ],
    )
    .await;
    let key = folding("sourceName,eventType");
    let made = storage.fold_alerts(&events[..1], &key, now).await.unwrap();
    let alert = made.alerts[0].clone();
    storage
        .change_alert_status(alert.id, AlertStatus::Acknowledged, admin.id, None, now)
        .await
        .unwrap();

    // A repeat of the same severity is counted and changes nothing else.
    let same = storage.fold_alerts(&events[1..2], &key, now).await.unwrap();
    assert_eq!((same.newly_created, same.folded), (0, 1));
    assert!(same.updates.is_empty() && same.alerts.is_empty());
    let after = storage.alert_by_id(alert.id).await.unwrap().unwrap();
    assert_eq!(after.status, AlertStatus::Acknowledged);
    assert_eq!(after.count, 2);
    assert_eq!(after.version, 2, "a count bump is not a change of version");

    let raised = storage.fold_alerts(&events[2..], &key, now).await.unwrap();
    assert_eq!(raised.updates.len(), 1);
    let (alert_now, change) = &raised.updates[0];
    assert_eq!(alert_now.severity, Severity::Critical);
    assert_eq!(alert_now.status, AlertStatus::Open);
    assert_eq!(alert_now.count, 3);
    assert_eq!(alert_now.version, 3);
    assert_eq!(alert_now.last_event_id, events[2].id);
    assert_eq!(change.changed_by, None);
    assert_eq!(change.from_status, Some(AlertStatus::Acknowledged));
    assert_eq!(change.to_status, AlertStatus::Open);
    assert_eq!(change.from_severity, Some(Severity::High));
    assert_eq!(change.to_severity, Some(Severity::Critical));
    let reason = change.reason.as_deref().unwrap();
    assert!(
        reason.contains("raised the severity") && reason.contains("reopening"),
        "{reason}"
    );
    let history = storage.status_history(alert.id).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2], *change);
    // Its announcement is pending until published.
    let pending = storage
        .pending_change_notifications(Utc::now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    assert!(pending.iter().any(|(_, c)| c.id == change.id));
    assert_counts_tables_match_rows(&storage).await;

    // Redelivering everything changes nothing.
    let again = storage.fold_alerts(&events, &key, now).await.unwrap();
    assert_eq!((again.newly_created, again.folded), (0, 0));
    assert!(again.updates.is_empty());
    assert_eq!(
        again.alerts.len(),
        1,
        "the alert its first event opened is announced again"
    );
    assert_eq!(
        storage.alert_by_id(alert.id).await.unwrap().unwrap().count,
        3
    );
}

#[tokio::test]
async fn a_resolved_or_quiet_alert_absorbs_nothing_and_the_next_event_opens_a_new_one() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let admin = admin(&storage).await;
    let start = Utc::now() - chrono::Duration::hours(5);
    let at = |minutes: i64| start + chrono::Duration::minutes(minutes);
    let body = json!({"sourceName": "fw-edge", "eventType": "port_scan", "severity": "HIGH"});
    let events = stored(
        &storage,
        &[
            record("a", body.clone(), at(0)),
            record("b", body.clone(), at(30)),
            // 90 minutes after the last: past the hour's window.
            record("c", body.clone(), at(120)),
            record("d", body.clone(), at(121)),
        ],
    )
    .await;
    let key = folding("sourceName,eventType");
    // Two at once: the window splits the batch too.
    let made = storage
        .fold_alerts(&events[..3], &key, at(200))
        .await
        .unwrap();
    assert_eq!(made.newly_created, 2);
    let alerts = all_alerts(&storage).await;
    assert_eq!(
        alerts.iter().map(|a| a.count).collect::<Vec<_>>(),
        [2, 1],
        "{alerts:#?}"
    );
    assert_eq!(alerts[0].first_seen_at, events[0].created_at);
    assert_eq!(alerts[0].last_seen_at, events[1].created_at);
    let current = &alerts[1];
    storage
        .change_alert_status(current.id, AlertStatus::Resolved, admin.id, None, at(200))
        .await
        .unwrap();
    let next = storage
        .fold_alerts(&events[3..], &key, at(201))
        .await
        .unwrap();
    assert_eq!(
        next.newly_created, 1,
        "a resolved alert never absorbs an event"
    );
    let ids: HashSet<i64> = events.iter().map(|e| e.id).collect();
    assert_counted_once(&storage, &ids, 3).await;
}

async fn admin(storage: &Storage) -> common::domain::User {
    let user = common::storage::NewUser {
        username: "admin".into(),
        email: String::new(),
        password_hash: "not-a-real-hash".into(),
        role: common::domain::Role::Admin,
        is_active: true,
    };
    storage.create_user(&user, Utc::now()).await.unwrap()
}

#[tokio::test]
async fn alerters_folding_by_different_keys_never_count_an_event_twice() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let now = Utc::now();
    let records: Vec<EventRecord> = (0..40)
        .map(|i| record(&format!("e{i}"), keyed_event(i), now))
        .collect();
    let events = stored(&storage, &records).await;
    // As during a rolling change of ALERT_FOLD_KEY: the same escalations reach alerters
    // with either setting, in either order.
    let each = storage.create_alerts(&events[..20], now).await.unwrap();
    assert_eq!(each.newly_created, 20);
    let folded = storage
        .fold_alerts(&events, &folding("sourceName,eventType"), now)
        .await
        .unwrap();
    assert_eq!(
        folded.newly_created + folded.folded,
        20,
        "only the 20 not counted yet"
    );
    let again = storage.create_alerts(&events, now).await.unwrap();
    assert_eq!(
        again.newly_created, 0,
        "none made for events counted by a fold"
    );
    let ids: HashSet<i64> = events.iter().map(|e| e.id).collect();
    let alerts = all_alerts(&storage).await.len();
    assert_counted_once(&storage, &ids, alerts).await;
}

/// An alerter process, killed with SIGKILL when dropped.
struct AlerterProcess(Child);

impl AlerterProcess {
    fn start(pipeline: &Pipeline) -> AlerterProcess {
        let child = Command::new(binary("alerter"))
            .env("NATS_URL", pipeline.nats.url())
            .env("DATABASE_URL", pipeline.db.url())
            .env("ACK_WAIT_SECS", "2")
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("ALERT_FOLD_KEY", "sourceName,eventType")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        AlerterProcess(child)
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AlerterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The alerts' counts added up.
async fn counted(storage: &Storage) -> i64 {
    all_alerts(storage).await.iter().map(|a| a.count).sum()
}

/// Runs 10,000 events over 50 keys through an ingestor and alerter processes; `disturb`
/// acts on the alerters while the events flow. Then checks the end state: 50 open alerts
/// whose counts add up to 10,000, each event counted once, each alert announced.
async fn fold_ten_thousand(alerters: usize, kills: usize) {
    let pipeline = Pipeline::start().await;
    let events: Vec<(Value, Option<String>)> = (0..10_000)
        .map(|i| (keyed_event(i), Some(format!("fold-{i}"))))
        .collect();
    let ingestor = pipeline.start_ingestor(Severity::High);
    let mut running: Vec<AlerterProcess> = (0..alerters)
        .map(|_| AlerterProcess::start(&pipeline))
        .collect();
    let publishing = {
        let js = pipeline.js.clone();
        let storage = pipeline.storage.clone();
        tokio::spawn(async move {
            for (n, window) in events.chunks(500).enumerate() {
                // A steady stream rather than one burst, so that kills land mid-stream: at
                // most 2,000 events ahead of the alerters.
                let ahead = (n as i64 * 500 - 2000).max(0);
                let storage = &storage;
                eventually(PATIENCE, "the alerters to catch up", || async move {
                    (counted(storage).await >= ahead).then_some(())
                })
                .await;
                let mut acks = Vec::new();
                for (body, id) in window {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", id.as_deref().unwrap());
                    let subject =
                        common::subjects::event_subject(body["sourceName"].as_str().unwrap());
                    acks.push(
                        js.publish_with_headers(subject, headers, body.to_string().into())
                            .await
                            .unwrap(),
                    );
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
        })
    };
    for round in 0..kills {
        let before = counted(&pipeline.storage).await;
        let storage = &pipeline.storage;
        eventually(
            PATIENCE,
            "folding progresses before the kill",
            || async move {
                let now = counted(storage).await;
                (now > before).then_some(())
            },
        )
        .await;
        let victim = running.remove(0);
        victim.kill();
        let at_kill = counted(&pipeline.storage).await;
        eprintln!("kill {round}: {at_kill} events counted when the alerter was killed");
        assert!(at_kill < 10_000, "the kill happened mid-stream");
        running.push(AlerterProcess::start(&pipeline));
    }
    publishing.await.unwrap();
    let storage = &pipeline.storage;
    eventually(PATIENCE, "10,000 events counted", || async move {
        let n = counted(storage).await;
        assert!(n <= 10_000, "{n} events counted");
        (n == 10_000).then_some(())
    })
    .await;
    pipeline.wait_drained().await;

    let ids: HashSet<i64> = pipeline
        .storage
        .list_events(&Default::default(), 100_000, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 10_000);
    assert_counted_once(&pipeline.storage, &ids, KEYS).await;
    let alerts = all_alerts(&pipeline.storage).await;
    assert!(alerts.iter().all(|a| a.status == AlertStatus::Open));
    let notified: HashMap<i64, usize> = pipeline.created_notifications().await;
    assert_eq!(
        notified.len(),
        KEYS,
        "one alerts.created per alert: {notified:?}"
    );
    for alert in &alerts {
        assert!(
            notified.contains_key(&alert.id),
            "alert {} never announced",
            alert.id
        );
    }
    drop(running);
    ingestor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_fifty_keys_make_fifty_alerts_with_the_alerter_killed_twice() {
    fold_ten_thousand(1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_fifty_keys_make_fifty_alerts_with_two_alerters_at_once() {
    fold_ten_thousand(2, 0).await;
}
