#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The storage queries behind the API: users, revoked tokens, filtered and paginated lists of
//! events and alerts, and alert status changes, on the backend under test (SQLite by default;
//! Postgres with `THREATMON_TEST_BACKEND=postgres`).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use common::domain::{Alert, AlertStatus, Event, EventIn, Role, Severity, User};
use common::storage::{
    AlertFilter, AlertOrdering, EventFilter, EventRecord, NewUser, Storage, StorageError,
    UserChanges,
};
use serde_json::json;
use testkit::TestDb;

const SEEDED: i64 = 60;
const SOURCES: [&str; 3] = ["ids-core", "fw-edge", "edr"];
const TYPES: [&str; 5] = ["brute_force", "port_scan", "malware", "phishing", "dos"];
const ORDERINGS: [AlertOrdering; 8] = [
    AlertOrdering::NewestFirst,
    AlertOrdering::OldestFirst,
    AlertOrdering::SeverityAscending,
    AlertOrdering::SeverityDescending,
    AlertOrdering::LastSeenAscending,
    AlertOrdering::LastSeenDescending,
    AlertOrdering::CountAscending,
    AlertOrdering::CountDescending,
];

/// A fixed instant (whole seconds, so that it survives microsecond storage unchanged).
fn base() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

/// `minutes` after [`base`].
fn at(minutes: i64) -> DateTime<Utc> {
    base() + Duration::minutes(minutes)
}

/// The minute the `i`th seeded row is stamped with: a permutation of 0..60, so that time
/// order differs from id order and a time filter cannot pass by filtering on ids.
fn minute_of(i: i64) -> i64 {
    (i * 7) % SEEDED
}

async fn open(db: &TestDb) -> Storage {
    Storage::connect_and_migrate(db.url()).await.unwrap()
}

fn new_user(username: &str, role: Role) -> NewUser {
    NewUser {
        username: username.to_owned(),
        email: format!("{username}@example.test"),
        password_hash: format!("$argon2id$v=19$hash-of-{username}"),
        role,
        is_active: true,
    }
}

fn record(i: i64) -> EventRecord {
    let i_usize = usize::try_from(i).unwrap();
    let event = EventIn::from_value(json!({
        "sourceName": SOURCES[i_usize % SOURCES.len()],
        "eventType": TYPES[i_usize % TYPES.len()],
        "severity": Severity::ALL[i_usize % Severity::ALL.len()].as_str(),
        "description": format!("seeded event {i}"),
    }))
    .unwrap();
    EventRecord {
        uid: format!("ev-{i:02}"),
        event,
        created_at: at(minute_of(i)),
    }
}

/// Stores [`SEEDED`] events: severities cycle over 4, sources over 3, types over 5, and
/// stored times are scrambled minutes 0..60. Returns them as stored, oldest id first.
async fn seed_events(storage: &Storage) -> Vec<Event> {
    let records: Vec<EventRecord> = (0..SEEDED).map(record).collect();
    let stored = storage
        .store_events(&records, Severity::Critical)
        .await
        .unwrap();
    assert_eq!(stored.newly_stored, SEEDED as u64);
    let mut events = Vec::new();
    for record in &records {
        events.push(storage.event_by_uid(&record.uid).await.unwrap().unwrap());
    }
    events
}

/// Seeds events, one alert per event (raised at the event's scrambled minute), and statuses:
/// the `i`th alert stays OPEN when `i % 3 == 0`, is ACKNOWLEDGED when 1, RESOLVED when 2.
/// Returns the analyst who changed them and the alerts as stored.
async fn seed_alerts(storage: &Storage) -> (User, Vec<Alert>) {
    let analyst = storage
        .create_user(&new_user("analyst", Role::Analyst), base())
        .await
        .unwrap();
    let events = seed_events(storage).await;
    let mut alerts = Vec::new();
    for (i, event) in (0..).zip(&events) {
        let created = storage
            .create_alerts(std::slice::from_ref(event), at(minute_of(i)))
            .await
            .unwrap();
        assert_eq!(created.newly_created, 1);
        let alert = created.alerts[0].clone();
        let status = match i % 3 {
            0 => None,
            1 => Some(AlertStatus::Acknowledged),
            _ => Some(AlertStatus::Resolved),
        };
        let alert = match status {
            None => alert,
            Some(status) => {
                storage
                    .change_alert_status(alert.id, status, analyst.id, None, at(100))
                    .await
                    .unwrap()
                    .unwrap()
                    .alert
            }
        };
        alerts.push(alert);
    }
    (analyst, alerts)
}

fn event_matches(event: &Event, filter: &EventFilter) -> bool {
    filter.severity.is_none_or(|s| event.severity == s)
        && filter
            .source_name
            .as_ref()
            .is_none_or(|s| &event.source_name == s)
        && filter
            .event_type
            .as_ref()
            .is_none_or(|t| &event.event_type == t)
        && filter.created_from.is_none_or(|t| event.created_at >= t)
        && filter.created_to.is_none_or(|t| event.created_at <= t)
}

/// Whether `value` is one of `allowed`, or `allowed` is empty (no filter).
fn any_of<T: PartialEq>(allowed: &[T], value: &T) -> bool {
    allowed.is_empty() || allowed.contains(value)
}

fn alert_matches(alert: &Alert, filter: &AlertFilter) -> bool {
    any_of(&filter.status, &alert.status)
        && any_of(&filter.severity, &alert.severity)
        && any_of(&filter.event_type, &alert.event_type)
        && any_of(&filter.source_name, &alert.source_name)
        && filter.created_from.is_none_or(|t| alert.created_at >= t)
        && filter.created_to.is_none_or(|t| alert.created_at <= t)
}

/// The events matching `filter`, newest (highest id) first: what `list_events` must return.
fn expected_events(all: &[Event], filter: &EventFilter) -> Vec<Event> {
    let mut events: Vec<Event> = all
        .iter()
        .filter(|e| event_matches(e, filter))
        .cloned()
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.id));
    events
}

/// The alerts matching `filter` in `ordering`: what `list_alerts` must return.
fn expected_alerts(all: &[Alert], filter: &AlertFilter, ordering: AlertOrdering) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = all
        .iter()
        .filter(|a| alert_matches(a, filter))
        .cloned()
        .collect();
    alerts.sort_by(|a, b| match ordering {
        AlertOrdering::NewestFirst => b.id.cmp(&a.id),
        AlertOrdering::OldestFirst => a.id.cmp(&b.id),
        AlertOrdering::SeverityAscending => a.severity.cmp(&b.severity).then(b.id.cmp(&a.id)),
        AlertOrdering::SeverityDescending => b.severity.cmp(&a.severity).then(b.id.cmp(&a.id)),
        AlertOrdering::LastSeenAscending => {
            a.last_seen_at.cmp(&b.last_seen_at).then(b.id.cmp(&a.id))
        }
        AlertOrdering::LastSeenDescending => {
            b.last_seen_at.cmp(&a.last_seen_at).then(b.id.cmp(&a.id))
        }
        AlertOrdering::CountAscending => a.count.cmp(&b.count).then(b.id.cmp(&a.id)),
        AlertOrdering::CountDescending => b.count.cmp(&a.count).then(b.id.cmp(&a.id)),
    });
    alerts
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<i64> {
    items.iter().map(id).collect()
}

// ----------------------------------------------------------------------------------------
// Users

#[tokio::test]
async fn users_are_created_and_found_by_id_and_exact_username_with_their_hash() {
    let db = TestDb::new().await;
    let storage = open(&db).await;

    let admin = storage
        .create_user(&new_user("alice", Role::Admin), at(1))
        .await
        .unwrap();

    assert!(admin.id > 0);
    assert_eq!(admin.username, "alice");
    assert_eq!(admin.email, "alice@example.test");
    assert_eq!(admin.role, Role::Admin);
    assert!(admin.is_active);
    assert_eq!((admin.created_at, admin.updated_at), (at(1), at(1)));
    assert_eq!(
        storage.user_by_id(admin.id).await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(storage.user_by_id(admin.id + 1000).await.unwrap(), None);

    let (found, hash) = storage
        .user_with_password_hash("alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, admin);
    assert_eq!(hash, "$argon2id$v=19$hash-of-alice");
    assert_eq!(
        storage.user_with_password_hash("ALICE").await.unwrap(),
        None,
        "usernames match case-sensitively"
    );
    assert_eq!(storage.user_with_password_hash("ali").await.unwrap(), None);
    assert_eq!(
        storage.user_with_password_hash("ali%").await.unwrap(),
        None,
        "exact match, not a pattern"
    );

    let inactive = storage
        .create_user(
            &NewUser {
                is_active: false,
                email: String::new(),
                ..new_user("bob", Role::Analyst)
            },
            at(2),
        )
        .await
        .unwrap();
    assert!(!inactive.is_active);
    assert_eq!(inactive.email, "");
    assert_eq!(inactive.role, Role::Analyst);
    let (found, _) = storage
        .user_with_password_hash("bob")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found, inactive,
        "inactive users are found; the caller refuses them"
    );
}

#[tokio::test]
async fn a_taken_username_is_a_duplicate_and_changes_nothing() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let first = storage
        .create_user(&new_user("alice", Role::Admin), at(1))
        .await
        .unwrap();

    let err = storage
        .create_user(
            &NewUser {
                email: "other@example.test".into(),
                ..new_user("alice", Role::Analyst)
            },
            at(2),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(err, StorageError::Duplicate("username")),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "already exists: username");
    assert!(!err.is_transient());
    assert_eq!(storage.count_users().await.unwrap(), 1);
    assert_eq!(storage.user_by_id(first.id).await.unwrap(), Some(first));
    // Another case is another username.
    let upper = storage
        .create_user(&new_user("Alice", Role::Analyst), at(3))
        .await
        .unwrap();
    assert_eq!(upper.username, "Alice");
    assert_eq!(storage.count_users().await.unwrap(), 2);
}

#[tokio::test]
async fn users_are_listed_by_id_in_pages_and_counted() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    assert_eq!(storage.count_users().await.unwrap(), 0);
    assert!(storage.list_users(10, 0).await.unwrap().is_empty());
    let mut created = Vec::new();
    for n in 0..7 {
        let role = if n % 2 == 0 {
            Role::Analyst
        } else {
            Role::Admin
        };
        created.push(
            storage
                .create_user(&new_user(&format!("user{n}"), role), at(n))
                .await
                .unwrap(),
        );
    }

    assert_eq!(storage.count_users().await.unwrap(), 7);
    assert_eq!(storage.list_users(100, 0).await.unwrap(), created);
    let mut paged = Vec::new();
    for page in 0..3 {
        let users = storage.list_users(3, page * 3).await.unwrap();
        assert_eq!(users.len(), if page < 2 { 3 } else { 1 });
        paged.extend(users);
    }
    assert_eq!(paged, created, "pages by id ascending, no overlap, no gap");
    assert!(storage.list_users(3, 7).await.unwrap().is_empty());
    assert!(storage.list_users(0, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn updating_a_user_changes_only_the_given_fields_and_stamps_the_time() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let user = storage
        .create_user(&new_user("carol", Role::Analyst), at(1))
        .await
        .unwrap();
    let other = storage
        .create_user(&new_user("dave", Role::Analyst), at(1))
        .await
        .unwrap();

    // Promote.
    let promoted = storage
        .update_user(
            user.id,
            &UserChanges {
                role: Some(Role::Admin),
                ..UserChanges::default()
            },
            at(2),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        promoted,
        User {
            role: Role::Admin,
            updated_at: at(2),
            ..user.clone()
        }
    );

    // Deactivate.
    let deactivated = storage
        .update_user(
            user.id,
            &UserChanges {
                is_active: Some(false),
                ..UserChanges::default()
            },
            at(3),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        deactivated,
        User {
            is_active: false,
            updated_at: at(3),
            ..promoted.clone()
        }
    );

    // New password and email.
    let changed = storage
        .update_user(
            user.id,
            &UserChanges {
                password_hash: Some("$argon2id$new".into()),
                email: Some("carol@new.test".into()),
                ..UserChanges::default()
            },
            at(4),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changed,
        User {
            email: "carol@new.test".into(),
            updated_at: at(4),
            ..deactivated.clone()
        }
    );
    let (_, hash) = storage
        .user_with_password_hash("carol")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hash, "$argon2id$new");
    assert_eq!(
        storage.user_by_id(user.id).await.unwrap(),
        Some(changed.clone())
    );

    // Reactivate and demote together; no changes at all still stamps the time.
    let both = storage
        .update_user(
            user.id,
            &UserChanges {
                is_active: Some(true),
                role: Some(Role::Analyst),
                ..UserChanges::default()
            },
            at(5),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(both.is_active);
    assert_eq!(both.role, Role::Analyst);
    let touched = storage
        .update_user(user.id, &UserChanges::default(), at(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched,
        User {
            updated_at: at(6),
            ..both
        }
    );
    assert_eq!(touched.created_at, at(1));

    assert_eq!(
        storage.user_by_id(other.id).await.unwrap(),
        Some(other),
        "other users are untouched"
    );
    assert_eq!(
        storage
            .update_user(user.id + 1000, &UserChanges::default(), at(7))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_user_serializes_without_any_password_and_secrets_stay_out_of_debug_output() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let new = new_user("erin", Role::Admin);
    let user = storage.create_user(&new, at(1)).await.unwrap();

    let value = serde_json::to_value(&user).unwrap();

    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "email",
            "id",
            "is_active",
            "role",
            "updated_at",
            "username"
        ]
    );
    assert_eq!(value["role"], "ADMIN");
    let text = value.to_string();
    assert!(!text.contains("password"), "{text}");
    assert!(!text.contains(&new.password_hash), "{text}");
    assert!(!format!("{new:?}").contains(&new.password_hash));
    let changes = UserChanges {
        password_hash: Some(new.password_hash.clone()),
        ..UserChanges::default()
    };
    assert!(!format!("{changes:?}").contains(&new.password_hash));
}

// ----------------------------------------------------------------------------------------
// Revoked tokens

#[tokio::test]
async fn revoked_tokens_are_remembered_until_purged_after_they_expire() {
    let db = TestDb::new().await;
    let storage = open(&db).await;

    storage.revoke_token("jti-old", at(10)).await.unwrap();
    storage.revoke_token("jti-old", at(10)).await.unwrap();
    storage.revoke_token("jti-edge", at(20)).await.unwrap();
    storage.revoke_token("jti-new", at(30)).await.unwrap();

    for jti in ["jti-old", "jti-edge", "jti-new"] {
        assert!(storage.is_token_revoked(jti).await.unwrap(), "{jti}");
    }
    assert!(!storage.is_token_revoked("jti-other").await.unwrap());
    assert!(!storage.is_token_revoked("JTI-OLD").await.unwrap());

    assert_eq!(storage.purge_revoked_tokens(at(5)).await.unwrap(), 0);
    assert_eq!(
        storage.purge_revoked_tokens(at(20)).await.unwrap(),
        2,
        "expired ones, including one expiring exactly now"
    );
    assert!(!storage.is_token_revoked("jti-old").await.unwrap());
    assert!(!storage.is_token_revoked("jti-edge").await.unwrap());
    assert!(storage.is_token_revoked("jti-new").await.unwrap());
    assert_eq!(storage.purge_revoked_tokens(at(20)).await.unwrap(), 0);

    // Revoking again after a purge works too.
    storage.revoke_token("jti-old", at(40)).await.unwrap();
    assert!(storage.is_token_revoked("jti-old").await.unwrap());
}

// ----------------------------------------------------------------------------------------
// Events: filters and pages

#[tokio::test]
async fn event_filters_match_alone_and_combined_and_counts_agree_with_lists() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let all = seed_events(&storage).await;

    let mut cases: Vec<(EventFilter, i64)> = vec![(EventFilter::default(), SEEDED)];
    for severity in Severity::ALL {
        let filter = EventFilter {
            severity: Some(severity),
            ..EventFilter::default()
        };
        cases.push((filter, 15));
    }
    for source in SOURCES {
        let filter = EventFilter {
            source_name: Some(source.into()),
            ..EventFilter::default()
        };
        cases.push((filter, 20));
    }
    for event_type in TYPES {
        let filter = EventFilter {
            event_type: Some(event_type.into()),
            ..EventFilter::default()
        };
        cases.push((filter, 12));
    }
    cases.extend([
        (
            EventFilter {
                created_from: Some(at(30)),
                ..EventFilter::default()
            },
            30,
        ),
        (
            EventFilter {
                created_to: Some(at(29)),
                ..EventFilter::default()
            },
            30,
        ),
        (
            EventFilter {
                created_from: Some(at(10)),
                created_to: Some(at(10)),
                ..EventFilter::default()
            },
            1,
        ),
        (
            EventFilter {
                created_from: Some(at(10) + Duration::microseconds(1)),
                created_to: Some(at(11) - Duration::microseconds(1)),
                ..EventFilter::default()
            },
            0,
        ),
        (
            // i ≡ 2 (mod 4) and i ≡ 0 (mod 3): i ∈ {6, 18, 30, 42, 54}.
            EventFilter {
                severity: Some(Severity::High),
                source_name: Some("ids-core".into()),
                ..EventFilter::default()
            },
            5,
        ),
        (
            // … and i ≡ 1 (mod 5): i = 6.
            EventFilter {
                severity: Some(Severity::High),
                source_name: Some("ids-core".into()),
                event_type: Some("port_scan".into()),
                ..EventFilter::default()
            },
            1,
        ),
        (
            // i = 6, 18, 30, 42, 54 are stamped minutes 42, 6, 30, 54, 18: three in [30, 54].
            EventFilter {
                severity: Some(Severity::High),
                source_name: Some("ids-core".into()),
                created_from: Some(at(30)),
                created_to: Some(at(54)),
                ..EventFilter::default()
            },
            3,
        ),
        (
            EventFilter {
                source_name: Some("IDS-CORE".into()),
                ..EventFilter::default()
            },
            0,
        ),
        (
            EventFilter {
                source_name: Some("ids-core' OR '1'='1".into()),
                event_type: Some("%".into()),
                ..EventFilter::default()
            },
            0,
        ),
    ]);

    for (filter, count) in &cases {
        let expected = expected_events(&all, filter);
        assert_eq!(expected.len() as i64, *count, "seed model for {filter:?}");
        let listed = storage.list_events(filter, 1000, 0).await.unwrap();
        assert_eq!(listed, expected, "{filter:?}");
        assert_eq!(
            storage.count_events_matching(filter).await.unwrap(),
            *count,
            "{filter:?}"
        );
    }
    assert_eq!(
        storage
            .count_events_matching(&EventFilter::default())
            .await
            .unwrap(),
        storage.count_events().await.unwrap()
    );
}

#[tokio::test]
async fn event_pages_are_newest_first_without_overlap_or_gap() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let all = seed_events(&storage).await;

    for filter in [
        EventFilter::default(),
        EventFilter {
            source_name: Some("fw-edge".into()),
            created_from: Some(at(5)),
            ..EventFilter::default()
        },
    ] {
        let expected = expected_events(&all, &filter);
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let page = storage.list_events(&filter, 7, offset).await.unwrap();
            assert!(page.len() <= 7);
            if page.is_empty() {
                break;
            }
            offset += page.len() as i64;
            paged.extend(page);
        }
        assert_eq!(
            ids(&paged, |e| e.id),
            ids(&expected, |e| e.id),
            "{filter:?}"
        );
        let unique: HashSet<i64> = paged.iter().map(|e| e.id).collect();
        assert_eq!(unique.len(), paged.len());
    }

    let first = storage
        .list_events(&EventFilter::default(), 10, 0)
        .await
        .unwrap();
    let second = storage
        .list_events(&EventFilter::default(), 10, 10)
        .await
        .unwrap();
    let newest_first = expected_events(&all, &EventFilter::default());
    assert_eq!(first, newest_first[..10]);
    assert_eq!(second, newest_first[10..20]);
    assert!(first.last().unwrap().id > second.first().unwrap().id);
    assert!(
        storage
            .list_events(&EventFilter::default(), 10, SEEDED)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .list_events(&EventFilter::default(), 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        storage
            .list_events(&EventFilter::default(), 10, 55)
            .await
            .unwrap()
            .len(),
        5
    );
}

// ----------------------------------------------------------------------------------------
// Alerts: filters, orderings and pages

#[tokio::test]
async fn alert_filters_match_alone_and_combined_in_every_ordering() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let (_, all) = seed_alerts(&storage).await;
    assert_eq!(all.len() as i64, SEEDED);

    let mut cases: Vec<(AlertFilter, i64)> = vec![(AlertFilter::default(), SEEDED)];
    for status in AlertStatus::ALL {
        let filter = AlertFilter {
            status: vec![status],
            ..AlertFilter::default()
        };
        cases.push((filter, 20));
    }
    for severity in Severity::ALL {
        let filter = AlertFilter {
            severity: vec![severity],
            ..AlertFilter::default()
        };
        cases.push((filter, 15));
    }
    for source in SOURCES {
        let filter = AlertFilter {
            source_name: vec![source.into()],
            ..AlertFilter::default()
        };
        cases.push((filter, 20));
    }
    for event_type in TYPES {
        let filter = AlertFilter {
            event_type: vec![event_type.into()],
            ..AlertFilter::default()
        };
        cases.push((filter, 12));
    }
    // Several values: any of them.
    cases.extend([
        (
            AlertFilter {
                status: vec![AlertStatus::Open, AlertStatus::Acknowledged],
                ..AlertFilter::default()
            },
            40,
        ),
        (
            AlertFilter {
                severity: vec![Severity::High, Severity::Critical],
                source_name: vec![SOURCES[0].into(), SOURCES[1].into()],
                ..AlertFilter::default()
            },
            expected_alerts(
                &all,
                &AlertFilter {
                    severity: vec![Severity::High, Severity::Critical],
                    source_name: vec![SOURCES[0].into(), SOURCES[1].into()],
                    ..AlertFilter::default()
                },
                AlertOrdering::NewestFirst,
            )
            .len() as i64,
        ),
    ]);
    cases.extend([
        (
            AlertFilter {
                created_from: Some(at(45)),
                ..AlertFilter::default()
            },
            15,
        ),
        (
            AlertFilter {
                created_to: Some(at(14)),
                ..AlertFilter::default()
            },
            15,
        ),
        (
            AlertFilter {
                created_from: Some(at(20)),
                created_to: Some(at(20)),
                ..AlertFilter::default()
            },
            1,
        ),
        (
            // i ∈ {6, 18, 30, 42, 54}, all i % 3 == 0: all still OPEN.
            AlertFilter {
                status: vec![AlertStatus::Open],
                severity: vec![Severity::High],
                source_name: vec!["ids-core".into()],
                ..AlertFilter::default()
            },
            5,
        ),
        (
            AlertFilter {
                status: vec![AlertStatus::Resolved],
                severity: vec![Severity::High],
                source_name: vec!["ids-core".into()],
                ..AlertFilter::default()
            },
            0,
        ),
        (
            // i ≡ 1 (mod 3), i ≡ 3 (mod 4): i ∈ {7, 19, 31, 43, 55}; then i ≡ 0 (mod 5): 55.
            AlertFilter {
                status: vec![AlertStatus::Acknowledged],
                severity: vec![Severity::Critical],
                event_type: vec!["brute_force".into()],
                ..AlertFilter::default()
            },
            1,
        ),
        (
            // i ∈ {7, 19, 31, 43, 55} are stamped minutes 49, 13, 37, 1, 25.
            AlertFilter {
                status: vec![AlertStatus::Acknowledged],
                severity: vec![Severity::Critical],
                created_from: Some(at(13)),
                created_to: Some(at(37)),
                ..AlertFilter::default()
            },
            3,
        ),
        (
            AlertFilter {
                source_name: vec!["edr' OR 1=1 --".into()],
                ..AlertFilter::default()
            },
            0,
        ),
    ]);

    for (filter, count) in &cases {
        assert_eq!(
            storage.count_alerts_matching(filter).await.unwrap(),
            *count,
            "{filter:?}"
        );
        for ordering in ORDERINGS {
            let expected = expected_alerts(&all, filter, ordering);
            assert_eq!(expected.len() as i64, *count, "seed model for {filter:?}");
            let listed = storage
                .list_alerts(filter, ordering, 1000, 0)
                .await
                .unwrap();
            assert_eq!(listed, expected, "{filter:?} {ordering:?}");
        }
    }
    assert_eq!(
        storage
            .count_alerts_matching(&AlertFilter::default())
            .await
            .unwrap(),
        storage.count_alerts().await.unwrap()
    );
}

#[tokio::test]
async fn alert_orderings_sort_as_named_and_page_without_overlap_or_gap() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let (_, all) = seed_alerts(&storage).await;
    let everything = AlertFilter::default();

    let newest = storage
        .list_alerts(&everything, AlertOrdering::default(), 1000, 0)
        .await
        .unwrap();
    assert!(newest.windows(2).all(|w| w[0].id > w[1].id));
    let oldest = storage
        .list_alerts(&everything, AlertOrdering::OldestFirst, 1000, 0)
        .await
        .unwrap();
    assert!(oldest.windows(2).all(|w| w[0].id < w[1].id));
    let ascending = storage
        .list_alerts(&everything, AlertOrdering::SeverityAscending, 1000, 0)
        .await
        .unwrap();
    assert!(ascending.windows(2).all(|w| {
        w[0].severity < w[1].severity || (w[0].severity == w[1].severity && w[0].id > w[1].id)
    }));
    assert_eq!(ascending[0].severity, Severity::Low);
    let descending = storage
        .list_alerts(&everything, AlertOrdering::SeverityDescending, 1000, 0)
        .await
        .unwrap();
    assert!(descending.windows(2).all(|w| {
        w[0].severity > w[1].severity || (w[0].severity == w[1].severity && w[0].id > w[1].id)
    }));
    assert_eq!(descending[0].severity, Severity::Critical);

    let filtered = AlertFilter {
        status: vec![AlertStatus::Open],
        created_to: Some(at(50)),
        ..AlertFilter::default()
    };
    for filter in [everything, filtered] {
        for ordering in ORDERINGS {
            let expected = expected_alerts(&all, &filter, ordering);
            let mut paged = Vec::new();
            let mut offset = 0;
            loop {
                let page = storage
                    .list_alerts(&filter, ordering, 8, offset)
                    .await
                    .unwrap();
                assert!(page.len() <= 8);
                if page.is_empty() {
                    break;
                }
                offset += page.len() as i64;
                paged.extend(page);
            }
            assert_eq!(
                ids(&paged, |a| a.id),
                ids(&expected, |a| a.id),
                "{filter:?} {ordering:?}"
            );
            let unique: HashSet<i64> = paged.iter().map(|a| a.id).collect();
            assert_eq!(unique.len(), paged.len());
        }
    }
    assert!(
        storage
            .list_alerts(&AlertFilter::default(), AlertOrdering::default(), 5, SEEDED)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .list_alerts(&AlertFilter::default(), AlertOrdering::default(), 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

// ----------------------------------------------------------------------------------------
// Alert status changes

async fn one_alert(storage: &Storage, uid: &str, created: DateTime<Utc>) -> Alert {
    let stored = storage
        .store_events(
            &[EventRecord {
                uid: uid.to_owned(),
                ..record(3)
            }],
            Severity::High,
        )
        .await
        .unwrap();
    storage
        .create_alerts(&stored.to_escalate, created)
        .await
        .unwrap()
        .alerts
        .remove(0)
}

#[tokio::test]
async fn a_status_change_is_applied_and_recorded_with_who_when_and_why() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let alice = storage
        .create_user(&new_user("alice", Role::Analyst), at(0))
        .await
        .unwrap();
    let bob = storage
        .create_user(&new_user("bob", Role::Admin), at(0))
        .await
        .unwrap();
    let alert = one_alert(&storage, "a", at(1)).await;
    let untouched = one_alert(&storage, "b", at(1)).await;

    let acked = storage
        .change_alert_status(
            alert.id,
            AlertStatus::Acknowledged,
            alice.id,
            Some("looking"),
            at(2),
        )
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        acked.alert,
        Alert {
            status: AlertStatus::Acknowledged,
            updated_at: at(2),
            version: alert.version + 1,
            ..alert.clone()
        }
    );
    let change = acked.change.clone().unwrap();
    assert_eq!(change.alert_id, alert.id);
    assert_eq!(change.from_status, Some(AlertStatus::Open));
    assert_eq!(change.to_status, AlertStatus::Acknowledged);
    assert_eq!(change.changed_by, Some(alice.id));
    assert_eq!(change.note.as_deref(), Some("looking"));
    assert_eq!(change.changed_at, at(2));
    assert_eq!(
        storage.alert_by_id(alert.id).await.unwrap(),
        Some(acked.alert.clone())
    );

    let resolved = storage
        .change_alert_status(alert.id, AlertStatus::Resolved, bob.id, None, at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.alert.status, AlertStatus::Resolved);
    assert_eq!(resolved.alert.updated_at, at(3));
    assert_eq!(resolved.alert.created_at, at(1));

    let history = storage.status_history(alert.id).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1], change);
    assert_eq!(history[2], resolved.change.clone().unwrap());
    assert_eq!(
        history
            .iter()
            .map(|c| (c.from_status, c.to_status, c.changed_by, c.note.as_deref()))
            .collect::<Vec<_>>(),
        [
            (None, AlertStatus::Open, None, None),
            (
                Some(AlertStatus::Open),
                AlertStatus::Acknowledged,
                Some(alice.id),
                Some("looking")
            ),
            (
                Some(AlertStatus::Acknowledged),
                AlertStatus::Resolved,
                Some(bob.id),
                None
            ),
        ]
    );

    // Reopening is a change like any other.
    let reopened = storage
        .change_alert_status(alert.id, AlertStatus::Open, alice.id, Some("again"), at(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reopened.change.unwrap().from_status,
        Some(AlertStatus::Resolved)
    );
    assert_eq!(storage.status_history(alert.id).await.unwrap().len(), 4);

    assert_eq!(
        storage.alert_by_id(untouched.id).await.unwrap(),
        Some(untouched.clone()),
        "other alerts are untouched"
    );
    assert_eq!(storage.status_history(untouched.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn setting_the_status_an_alert_already_has_records_nothing() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let user = storage
        .create_user(&new_user("alice", Role::Analyst), at(0))
        .await
        .unwrap();
    let alert = one_alert(&storage, "a", at(1)).await;

    let same = storage
        .change_alert_status(alert.id, AlertStatus::Open, user.id, Some("noop"), at(2))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(same.change, None);
    assert_eq!(same.alert, alert, "not even updated_at moves");
    assert_eq!(
        storage.alert_by_id(alert.id).await.unwrap(),
        Some(alert.clone())
    );
    assert_eq!(storage.status_history(alert.id).await.unwrap().len(), 1);

    storage
        .change_alert_status(alert.id, AlertStatus::Resolved, user.id, None, at(3))
        .await
        .unwrap()
        .unwrap();
    let again = storage
        .change_alert_status(alert.id, AlertStatus::Resolved, user.id, None, at(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.change, None);
    assert_eq!(again.alert.updated_at, at(3));
    assert_eq!(storage.status_history(alert.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn changing_the_status_of_a_missing_alert_is_none_and_records_nothing() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let user = storage
        .create_user(&new_user("alice", Role::Analyst), at(0))
        .await
        .unwrap();
    let alert = one_alert(&storage, "a", at(1)).await;

    let missing = storage
        .change_alert_status(alert.id + 1000, AlertStatus::Resolved, user.id, None, at(2))
        .await
        .unwrap();

    assert_eq!(missing, None);
    assert!(
        storage
            .status_history(alert.id + 1000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(storage.alert_by_id(alert.id).await.unwrap(), Some(alert));
}

#[tokio::test]
async fn concurrent_status_changes_of_one_alert_both_apply_in_an_unbroken_chain() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let alice = storage
        .create_user(&new_user("alice", Role::Analyst), at(0))
        .await
        .unwrap();
    let bob = storage
        .create_user(&new_user("bob", Role::Analyst), at(0))
        .await
        .unwrap();

    // Several rounds, each on a fresh alert, to give a race a chance to show.
    for round in 0..8 {
        let alert = one_alert(&storage, &format!("race-{round}"), at(1)).await;
        // From ACKNOWLEDGED both moves are allowed in either order (from OPEN, RESOLVED first
        // would make ACKNOWLEDGED a refused move).
        storage
            .change_alert_status(alert.id, AlertStatus::Acknowledged, alice.id, None, at(1))
            .await
            .unwrap();

        let (ack, resolve) = tokio::join!(
            storage.change_alert_status(
                alert.id,
                AlertStatus::Open,
                alice.id,
                Some("reopen"),
                at(2)
            ),
            storage.change_alert_status(
                alert.id,
                AlertStatus::Resolved,
                bob.id,
                Some("resolve"),
                at(3)
            ),
        );

        let ack = ack.unwrap().unwrap().change.expect("OPEN recorded");
        let resolve = resolve.unwrap().unwrap().change.expect("RESOLVED recorded");
        let mut history = storage.status_history(alert.id).await.unwrap();
        assert_eq!(history.len(), 4, "round {round}: {history:#?}");
        assert_eq!(history[1].to_status, AlertStatus::Acknowledged);
        assert_eq!(history[0].to_status, AlertStatus::Open);
        for pair in history.windows(2) {
            assert_eq!(
                pair[1].from_status,
                Some(pair[0].to_status),
                "round {round}: {history:#?}"
            );
        }
        // The acknowledgement before the race is not one of the two.
        history.remove(1);
        let mut recorded = vec![history[1].clone(), history[2].clone()];
        recorded.sort_by_key(|c| c.id);
        let mut returned = vec![ack, resolve];
        returned.sort_by_key(|c| c.id);
        assert_eq!(recorded, returned, "round {round}");
        let last = &history[2];
        let stored = storage.alert_by_id(alert.id).await.unwrap().unwrap();
        assert_eq!(stored.status, last.to_status, "round {round}");
        assert_eq!(stored.updated_at, last.changed_at, "round {round}");
    }
}

#[tokio::test]
async fn status_changes_wait_for_their_notification_until_marked_and_creations_never_do() {
    let db = TestDb::new().await;
    let storage = open(&db).await;
    let bob = storage
        .create_user(&new_user("bob", Role::Admin), at(0))
        .await
        .unwrap();
    let first = one_alert(&storage, "a", at(1)).await;
    let second = one_alert(&storage, "b", at(1)).await;
    // Creations are announced by the alerter on its own terms: nothing pending yet.
    assert!(
        storage
            .pending_change_notifications(at(100), 100)
            .await
            .unwrap()
            .is_empty()
    );

    let change = |alert: &Alert, to, minute| {
        let storage = &storage;
        let id = alert.id;
        async move {
            storage
                .change_alert_status(id, to, bob.id, Some("why"), at(minute))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let acked = change(&first, AlertStatus::Acknowledged, 2).await;
    let other = change(&second, AlertStatus::Resolved, 3).await;
    let resolved = change(&first, AlertStatus::Resolved, 4).await;

    let pending = storage
        .pending_change_notifications(at(100), 100)
        .await
        .unwrap();
    let ids: Vec<i64> = pending.iter().map(|(_, c)| c.id).collect();
    let expected: Vec<i64> = [&acked, &other, &resolved]
        .iter()
        .map(|u| u.change.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, expected, "oldest first, every change");
    // Each comes with its alert as it is now, and the change as recorded.
    assert_eq!(pending[0].0, resolved.alert);
    assert_eq!(&pending[0].1, acked.change.as_ref().unwrap());
    assert_eq!(pending[1].0, other.alert);

    // Only changes made before the cut-off, and no more than the limit.
    let older = storage
        .pending_change_notifications(at(3), 100)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].1.id, expected[0]);
    let limited = storage
        .pending_change_notifications(at(100), 2)
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);

    storage.mark_change_notified(expected[1]).await.unwrap();
    // Marking twice, or a change that does not exist, changes nothing and is no error.
    storage.mark_change_notified(expected[1]).await.unwrap();
    storage.mark_change_notified(i64::MAX).await.unwrap();
    let left: Vec<i64> = storage
        .pending_change_notifications(at(100), 100)
        .await
        .unwrap()
        .iter()
        .map(|(_, c)| c.id)
        .collect();
    assert_eq!(left, [expected[0], expected[2]]);
    // The history itself is untouched by the marks.
    assert_eq!(storage.status_history(first.id).await.unwrap().len(), 3);
}

/// Services sharing a database take turns at setup (declaring the NATS streams): however
/// many start at once, one holds the lock at a time, each gets it, and a setup that is
/// abandoned half-way (its future dropped) hands it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sharing_a_database_run_their_setup_one_at_a_time() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let db = TestDb::new().await;
    open(&db).await;
    let inside = Arc::new(AtomicUsize::new(0));
    let most_inside = Arc::new(AtomicUsize::new(0));
    let mut services = Vec::new();
    for _ in 0..5 {
        // Each with its own pool, as separate processes would have.
        let storage = Storage::connect(db.url()).await.unwrap();
        let (inside, most_inside) = (inside.clone(), most_inside.clone());
        services.push(tokio::spawn(async move {
            storage
                .one_setup_at_a_time(async {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most_inside.fetch_max(now, Ordering::SeqCst);
                    // Hold the turn long enough for the others to try to take it.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
                .await
        }));
    }
    for service in services {
        service.await.unwrap().unwrap();
    }
    assert_eq!(most_inside.load(Ordering::SeqCst), 1, "one setup at a time");

    // A service that stops half-way through its setup does not keep the others waiting.
    let storage = Storage::connect(db.url()).await.unwrap();
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
    let stuck = tokio::spawn(async move {
        storage
            .one_setup_at_a_time(async {
                taken_tx.send(()).unwrap();
                std::future::pending::<()>().await
            })
            .await
    });
    taken_rx.await.unwrap();
    stuck.abort();
    let next = Storage::connect(db.url()).await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        next.one_setup_at_a_time(async {}),
    )
    .await
    .expect("the turn passed on after the first holder gave up")
    .unwrap();
}
