//! Full-text search of alerts (`q=`) on the backend under test: whole words of the sensor, the
//! event type and the first event's description, any case, combined with every other filter
//! and ordering; no input is query syntax.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use chrono::Utc;
use common::domain::{AlertStatus, EventIn, Severity};
use common::storage::{AlertFilter, AlertOrdering, EventRecord, Storage, search_words};
use serde_json::json;
use testkit::TestDb;

async fn search(storage: &Storage, q: &str, mut filter: AlertFilter) -> Vec<String> {
    filter.search = Some(search_words(q));
    let count = storage.count_alerts_matching(&filter).await.unwrap();
    let alerts = storage
        .list_alerts(&filter, AlertOrdering::OldestFirst, 100, 0)
        .await
        .unwrap();
    assert_eq!(
        count,
        alerts.len() as i64,
        "{q}: the count agrees with the list"
    );
    let mut uids = Vec::new();
    for alert in alerts {
        let event = storage.event_by_id(alert.event_id).await.unwrap().unwrap();
        uids.push(event.uid);
    }
    uids
}

#[tokio::test]
async fn a_search_finds_whole_words_of_sensor_type_and_description_with_any_filter() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let events = [
        (
            "a",
            "fw-edge-01",
            "port_scan",
            "HIGH",
            "1,024 ports probed from 203.0.113.9",
        ),
        (
            "b",
            "ids-core",
            "brute_force",
            "CRITICAL",
            "SSH Brute-Force against root\0admin",
        ),
        (
            "c",
            "ids-core",
            "port_scan",
            "HIGH",
            "Probe of Ports on the DMZ",
        ),
        (
            "d",
            "waf eu",
            "sql_injection",
            "CRITICAL",
            "'; DROP TABLE alerts; -- \"quoted\" OR *",
        ),
        (
            "e",
            "vpn-gw",
            "login",
            "HIGH",
            "login from mail.example.com (203.0.113.9), user root@corp.io at the café",
        ),
    ];
    let records: Vec<EventRecord> = events
        .iter()
        .map(|(uid, source, kind, severity, description)| EventRecord {
            uid: (*uid).to_owned(),
            event: EventIn::from_value(json!({"sourceName": source, "eventType": kind,
                "severity": severity, "description": description}))
            .unwrap(),
            created_at: Utc::now(),
        })
        .collect();
    let stored = storage
        .store_events(&records, Severity::High)
        .await
        .unwrap();
    storage
        .create_alerts(&stored.to_escalate, Utc::now())
        .await
        .unwrap();
    let any = AlertFilter::default;

    assert_eq!(search(&storage, "probed", any()).await, ["a"]);
    assert_eq!(
        search(&storage, "PORTS", any()).await,
        ["a", "c"],
        "any case"
    );
    assert_eq!(
        search(&storage, "ports probe", any()).await,
        ["c"],
        "every word"
    );
    assert_eq!(
        search(&storage, "prob", any()).await,
        Vec::<String>::new(),
        "whole words"
    );
    assert_eq!(
        search(&storage, "scan", any()).await,
        ["a", "c"],
        "port_scan is two words"
    );
    assert_eq!(
        search(&storage, "ids-core", any()).await,
        ["b", "c"],
        "the sensor"
    );
    assert_eq!(
        search(&storage, "brute_force", any()).await,
        ["b"],
        "the type"
    );
    assert_eq!(search(&storage, "admin", any()).await, ["b"], "past a NUL");
    // Hosts, addresses and accents alike on both engines.
    assert_eq!(search(&storage, "example", any()).await, ["e"]);
    assert_eq!(search(&storage, "203.0.113.9", any()).await, ["a", "e"]);
    assert_eq!(search(&storage, "root@corp.io", any()).await, ["e"]);
    assert_eq!(search(&storage, "CAFÉ", any()).await, ["e"]);
    assert_eq!(
        search(&storage, "cafe", any()).await,
        Vec::<String>::new(),
        "accents count"
    );
    // What would be syntax is only words, or nothing.
    assert_eq!(search(&storage, "'; DROP TABLE", any()).await, ["d"]);
    assert_eq!(search(&storage, "\"quoted\" OR *", any()).await, ["d"]);
    assert_eq!(
        search(&storage, "* ( ) \" :", any()).await,
        Vec::<String>::new()
    );
    assert_eq!(
        search(&storage, "NEAR(ports", any()).await,
        Vec::<String>::new()
    );

    let critical = AlertFilter {
        severity: vec![Severity::Critical],
        ..AlertFilter::default()
    };
    assert_eq!(search(&storage, "ids core", critical).await, ["b"]);
    let resolved = AlertFilter {
        status: vec![AlertStatus::Resolved],
        ..AlertFilter::default()
    };
    assert_eq!(
        search(&storage, "ports", resolved).await,
        Vec::<String>::new()
    );
    let mut filter = AlertFilter {
        search: Some(search_words("ports")),
        ..AlertFilter::default()
    };
    filter.source_name = vec!["ids-core".into()];
    let newest = storage
        .list_alerts(&filter, AlertOrdering::SeverityDescending, 10, 0)
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);

    // On SQLite a search in id order is paged by the search index itself (alone, or with the
    // other filters checked on each match), and a search alone is counted from it, as of the
    // alerts it counted before. Any other ordering takes the general path: the oracle, which
    // must give the same alerts and count.
    let scan = AlertFilter {
        search: Some(search_words("scan")),
        ..AlertFilter::default()
    };
    let filters = [
        scan.clone(),
        AlertFilter {
            status: AlertStatus::ALL.to_vec(),
            ..scan.clone()
        },
        AlertFilter {
            source_name: vec!["ids-core".into()],
            ..scan.clone()
        },
    ];
    check_search_paths(&storage, &filters, 2).await;

    // New alerts, some of them matching: counted on top of what was counted before.
    let more: Vec<EventRecord> = (0..30)
        .map(|i| EventRecord {
            uid: format!("more-{i}"),
            event: EventIn::from_value(
                json!({"sourceName": if i % 2 == 0 { "ids-core" } else { "fw-edge-01" },
                "eventType": if i % 3 == 0 { "port_scan" } else { "login" },
                "severity": "HIGH", "description": "later"}),
            )
            .unwrap(),
            created_at: Utc::now(),
        })
        .collect();
    let stored = storage.store_events(&more, Severity::High).await.unwrap();
    storage
        .create_alerts(&stored.to_escalate, Utc::now())
        .await
        .unwrap();
    check_search_paths(&storage, &filters, 12).await;
}

/// Checks that each of `filters` (each with a search) gives, in id order, the alerts and the
/// count that the general path (another ordering, sorted here) gives; the first has at least
/// `at_least` matches.
async fn check_search_paths(storage: &Storage, filters: &[AlertFilter], at_least: i64) {
    for (i, filter) in filters.iter().enumerate() {
        let mut expected: Vec<i64> = storage
            .list_alerts(filter, AlertOrdering::SeverityDescending, 1000, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        expected.sort_unstable();
        let count = storage.count_alerts_matching(filter).await.unwrap();
        assert_eq!(count, expected.len() as i64, "{filter:?}");
        if i == 0 {
            assert!(count >= at_least, "{count} alerts match {filter:?}");
        }
        for ordering in [AlertOrdering::OldestFirst, AlertOrdering::NewestFirst] {
            if ordering == AlertOrdering::NewestFirst {
                expected.reverse();
            }
            for offset in 0..=count {
                let page: Vec<i64> = storage
                    .list_alerts(filter, ordering, 1, offset)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| a.id)
                    .collect();
                let want: Vec<i64> = expected.get(offset as usize).into_iter().copied().collect();
                assert_eq!(page, want, "{filter:?}, {ordering:?}, offset {offset}");
            }
        }
    }
}
