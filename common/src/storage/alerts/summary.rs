//! `GET /api/alerts/summary/`: alerts per status × severity and the busiest sensors and types,
//! all time and for the last 24 hours, answered from the counts tables (a few hundred rows at
//! most), never from the alerts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::domain::{AlertStatus, Severity, to_micros};
use crate::storage::counts::creation_hour;
use crate::storage::{Storage, StorageError, on_pool};

/// How many sensors and types the top lists name.
const TOP: i64 = 10;

/// Alerts per status, then per severity (every status and severity, zeros included).
pub type StatusCounts = BTreeMap<AlertStatus, BTreeMap<Severity, i64>>;

/// A sensor and how many unresolved alerts it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SourceCount {
    /// The sensor.
    #[serde(rename = "sourceName")]
    pub source_name: String,
    /// Its OPEN and ACKNOWLEDGED alerts.
    pub count: i64,
}

/// An event type and how many unresolved alerts it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TypeCount {
    /// The event type.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// Its OPEN and ACKNOWLEDGED alerts.
    pub count: i64,
}

/// The counts of some alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SummaryCounts {
    /// Alerts per status and severity: `{"OPEN": {"LOW": 0, "MEDIUM": 0, "HIGH": 3,
    /// "CRITICAL": 1}, "ACKNOWLEDGED": {…}, "RESOLVED": {…}}`.
    #[schema(value_type = Object)]
    pub by_status: StatusCounts,
    /// The ten sensors with the most unresolved (OPEN or ACKNOWLEDGED) alerts, most first.
    pub top_sources: Vec<SourceCount>,
    /// The ten event types with the most unresolved alerts, most first.
    pub top_event_types: Vec<TypeCount>,
}

/// Every alert's counts, and those of the alerts created in the last 24 hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AlertSummary {
    /// Every alert.
    #[serde(flatten)]
    pub all: SummaryCounts,
    /// The alerts created in the current hour and the 23 before it.
    pub last_24h: SummaryCounts,
}

/// The tables one [`SummaryCounts`] is read from, and the condition on their rows.
struct Sources {
    by_status: &'static str,
    by_source: &'static str,
    by_type: &'static str,
    /// `WHERE …` (with `$1` the first hour counted) or empty.
    condition: &'static str,
}

const ALL_TIME: Sources = Sources {
    by_status: "alert_counts",
    by_source: "alert_counts_by_source",
    by_type: "alert_counts_by_type",
    condition: "",
};

const LAST_24H: Sources = Sources {
    by_status: "alert_counts_by_hour",
    by_source: "alert_counts_by_hour_source",
    by_type: "alert_counts_by_hour_type",
    condition: "hour >= $1",
};

/// Which part of a summary a row of [`summary_sql`] fills.
const PART_STATUS: i16 = 0;
const PART_SOURCE: i16 = 1;
const PART_TYPE: i16 = 2;

/// The three reads of one [`SummaryCounts`] (`period` tags its rows), as `UNION ALL` parts
/// of one statement: rows `(period, part, key, severity, total)`, where `key` is the status,
/// the sensor or the type.
fn summary_parts(period: i16, sources: &Sources) -> [String; 3] {
    let (where_all, and_unresolved) = if sources.condition.is_empty() {
        (String::new(), "WHERE status <> 'RESOLVED'".to_owned())
    } else {
        (
            format!("WHERE {}", sources.condition),
            format!("WHERE {} AND status <> 'RESOLVED'", sources.condition),
        )
    };
    let by_status = format!(
        "SELECT CAST({period} AS SMALLINT) AS period, CAST({PART_STATUS} AS SMALLINT) AS part, \
         status AS key, CAST(severity AS SMALLINT) AS severity, \
         CAST(SUM(n) AS BIGINT) AS total FROM {} {where_all} GROUP BY status, severity",
        sources.by_status
    );
    // A top list is a subquery: its ORDER BY and LIMIT apply to it alone.
    let top = |part: i16, table: &str, column: &str| {
        format!(
            "SELECT * FROM (SELECT CAST({period} AS SMALLINT) AS period, \
             CAST({part} AS SMALLINT) AS part, {column} AS key, CAST(0 AS SMALLINT) AS severity, \
             CAST(SUM(n) AS BIGINT) AS total FROM {table} {and_unresolved} GROUP BY {column} \
             HAVING SUM(n) > 0 ORDER BY total DESC, {column} LIMIT {TOP}) AS top_{period}_{part}"
        )
    };
    [
        by_status,
        top(PART_SOURCE, sources.by_source, "source_name"),
        top(PART_TYPE, sources.by_type, "event_type"),
    ]
}

/// The whole summary as one statement (`$1` the first hour of the last 24): one round trip
/// to the database instead of six, each of which costs two thread switches on a small
/// machine. Ordered so that each top list comes most first.
fn summary_sql() -> String {
    let parts: Vec<String> = [(0, &ALL_TIME), (1, &LAST_24H)]
        .into_iter()
        .flat_map(|(period, sources)| summary_parts(period, sources))
        .collect();
    format!(
        "{} ORDER BY period, part, total DESC, key",
        parts.join(" UNION ALL ")
    )
}

impl Storage {
    /// The summary of every alert and of those created in the last 24 hours before `now`.
    pub async fn alert_summary(&self, now: DateTime<Utc>) -> Result<AlertSummary, StorageError> {
        let first_hour = creation_hour(to_micros(now)) - 23;
        let sql = summary_sql();
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, (i16, i16, String, i16, i64)>(AssertSqlSafe(sql))
                .bind(first_hour)
                .fetch_all(pool)
                .await?
        });
        let mut periods = [SummaryCounts::empty(), SummaryCounts::empty()];
        for (period, part, key, severity, total) in rows {
            let Some(counts) = usize::try_from(period)
                .ok()
                .and_then(|p| periods.get_mut(p))
            else {
                continue;
            };
            match part {
                PART_STATUS => {
                    let status: AlertStatus = key.parse().map_err(|_| {
                        StorageError::Corrupt(format!("alert counts: status {key}"))
                    })?;
                    let severity = Severity::from_rank(severity).ok_or_else(|| {
                        StorageError::Corrupt(format!("alert counts: severity {severity}"))
                    })?;
                    if let Some(by_severity) = counts.by_status.get_mut(&status) {
                        by_severity.insert(severity, total);
                    }
                }
                PART_SOURCE => counts.top_sources.push(SourceCount {
                    source_name: key,
                    count: total,
                }),
                _ => counts.top_event_types.push(TypeCount {
                    event_type: key,
                    count: total,
                }),
            }
        }
        let [all, last_24h] = periods;
        Ok(AlertSummary { all, last_24h })
    }
}

impl SummaryCounts {
    /// Zero for every status and severity, no sensors, no types.
    fn empty() -> SummaryCounts {
        SummaryCounts {
            by_status: AlertStatus::ALL
                .into_iter()
                .map(|status| (status, Severity::ALL.into_iter().map(|s| (s, 0)).collect()))
                .collect(),
            top_sources: Vec::new(),
            top_event_types: Vec::new(),
        }
    }
}
