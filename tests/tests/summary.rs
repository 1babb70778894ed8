//! `alert_summary` (`GET /api/alerts/summary/`) against counting the alerts themselves, after a
//! mixed workload, on the backend under test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use common::domain::{Alert, AlertStatus, CloseReason, EventIn, FoldKey, Role, Severity};
use common::storage::{
    AlertChange, AlertFilter, AlertOrdering, EventRecord, Folding, NewUser, Storage, SummaryCounts,
};
use serde_json::json;
use testkit::TestDb;

/// What the summary must say of `alerts`, counted one by one.
fn expected(alerts: &[&Alert]) -> SummaryCounts {
    let mut by_status: BTreeMap<AlertStatus, BTreeMap<Severity, i64>> = AlertStatus::ALL
        .into_iter()
        .map(|s| (s, Severity::ALL.into_iter().map(|v| (v, 0)).collect()))
        .collect();
    let mut sources: BTreeMap<String, i64> = BTreeMap::new();
    let mut types: BTreeMap<String, i64> = BTreeMap::new();
    for alert in alerts {
        *by_status
            .get_mut(&alert.status)
            .unwrap()
            .get_mut(&alert.severity)
            .unwrap() += 1;
        if alert.status != AlertStatus::Resolved {
            *sources.entry(alert.source_name.clone()).or_default() += 1;
            *types.entry(alert.event_type.clone()).or_default() += 1;
        }
    }
    let top = |counts: BTreeMap<String, i64>| {
        let mut counts: Vec<(String, i64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(10);
        counts
    };
    SummaryCounts {
        by_status,
        top_sources: top(sources)
            .into_iter()
            .map(|(source_name, count)| common::storage::SourceCount { source_name, count })
            .collect(),
        top_event_types: top(types)
            .into_iter()
            .map(|(event_type, count)| common::storage::TypeCount { event_type, count })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_equals_counting_the_alerts_after_a_mixed_workload() {
    let db = TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let admin = storage
        .create_user(
            &NewUser {
                username: "admin".into(),
                email: String::new(),
                password_hash: "not-a-real-hash".into(),
                role: Role::Admin,
                is_active: true,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let now = Utc::now();
    // Three days of alerts, an hour apart per batch: some inside the last 24 hours.
    let fold = Folding {
        key: "sourceName,eventType".parse::<FoldKey>().unwrap(),
        window_secs: 1800,
    };
    for batch in 0..72 {
        let at = now - Duration::hours(71 - batch);
        let records: Vec<EventRecord> = (0..40)
            .map(|i| {
                let n = batch * 40 + i;
                let severity = ["HIGH", "CRITICAL", "MEDIUM", "HIGH"][(n % 4) as usize];
                EventRecord {
                    uid: format!("e{n}"),
                    event: EventIn::from_value(json!({
                        "sourceName": format!("sensor-{}", n % 13),
                        "eventType": format!("type-{}", n % 7),
                        "severity": severity,
                    }))
                    .unwrap(),
                    created_at: at,
                }
            })
            .collect();
        let stored = storage
            .store_events(&records, Severity::Medium)
            .await
            .unwrap();
        // Every third batch one alert per event, the rest folded.
        if batch % 3 == 0 {
            storage
                .create_alerts(&stored.to_escalate, at)
                .await
                .unwrap();
        } else {
            storage
                .fold_alerts(&stored.to_escalate, &fold, at)
                .await
                .unwrap();
        }
    }
    let all = storage
        .list_alerts(
            &AlertFilter::default(),
            AlertOrdering::OldestFirst,
            1_000_000,
            0,
        )
        .await
        .unwrap();
    // Changes: one by one, and in bulk.
    for (i, alert) in all.iter().enumerate().step_by(5) {
        let change = match i % 3 {
            0 => AlertChange::status(AlertStatus::Acknowledged, None),
            1 => AlertChange {
                status: Some(AlertStatus::Resolved),
                close_reason: Some(CloseReason::Benign),
                ..AlertChange::default()
            },
            _ => AlertChange {
                assignee: Some(Some(admin.id)),
                ..AlertChange::default()
            },
        };
        storage
            .update_alert(alert.id, &change, admin.id, now)
            .await
            .unwrap();
    }
    let some: Vec<i64> = all.iter().skip(1).step_by(4).map(|a| a.id).collect();
    storage
        .update_alerts(
            &some,
            &AlertChange::status(AlertStatus::Resolved, None),
            admin.id,
            now,
        )
        .await
        .unwrap();
    let reopen: Vec<i64> = all.iter().skip(1).step_by(8).map(|a| a.id).collect();
    storage
        .update_alerts(
            &reopen,
            &AlertChange::status(AlertStatus::Open, None),
            admin.id,
            now,
        )
        .await
        .unwrap();

    let alerts = storage
        .list_alerts(
            &AlertFilter::default(),
            AlertOrdering::OldestFirst,
            1_000_000,
            0,
        )
        .await
        .unwrap();
    let statuses: std::collections::HashSet<AlertStatus> =
        alerts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses.len(),
        3,
        "the workload left alerts in every status"
    );
    let summary = storage.alert_summary(now).await.unwrap();
    let everything: Vec<&Alert> = alerts.iter().collect();
    assert_eq!(summary.all, expected(&everything));
    let first_hour = now.timestamp_micros().div_euclid(3_600_000_000) - 23;
    let recent: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.created_at.timestamp_micros().div_euclid(3_600_000_000) >= first_hour)
        .collect();
    assert!(!recent.is_empty() && recent.len() < alerts.len());
    assert_eq!(summary.last_24h, expected(&recent));
}
