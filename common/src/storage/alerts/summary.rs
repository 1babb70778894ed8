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

impl Storage {
    /// The summary of every alert and of those created in the last 24 hours before `now`.
    pub async fn alert_summary(&self, now: DateTime<Utc>) -> Result<AlertSummary, StorageError> {
        let first_hour = creation_hour(to_micros(now)) - 23;
        Ok(AlertSummary {
            all: self.summary_counts(&ALL_TIME, first_hour).await?,
            last_24h: self.summary_counts(&LAST_24H, first_hour).await?,
        })
    }

    async fn summary_counts(
        &self,
        sources: &Sources,
        first_hour: i64,
    ) -> Result<SummaryCounts, StorageError> {
        let (where_all, and_unresolved) = if sources.condition.is_empty() {
            (String::new(), "WHERE status <> 'RESOLVED'".to_owned())
        } else {
            (
                format!("WHERE {}", sources.condition),
                format!("WHERE {} AND status <> 'RESOLVED'", sources.condition),
            )
        };
        let by_status_sql = format!(
            "SELECT status, severity, CAST(SUM(n) AS BIGINT) FROM {} {where_all} \
             GROUP BY status, severity",
            sources.by_status
        );
        let top = |table: &str, column: &str| {
            format!(
                "SELECT {column}, CAST(SUM(n) AS BIGINT) AS total FROM {table} {and_unresolved} \
                 GROUP BY {column} HAVING SUM(n) > 0 ORDER BY total DESC, {column} LIMIT {TOP}"
            )
        };
        let sources_sql = top(sources.by_source, "source_name");
        let types_sql = top(sources.by_type, "event_type");
        let (rows, top_sources, top_types) = on_pool!(self, |pool| {
            // One connection for the three reads, not one from the pool for each.
            let mut connection = pool.acquire().await?;
            let rows = sqlx::query_as::<Db, (String, i16, i64)>(AssertSqlSafe(by_status_sql))
                .bind(first_hour)
                .fetch_all(&mut *connection)
                .await?;
            let top_sources = sqlx::query_as::<Db, (String, i64)>(AssertSqlSafe(sources_sql))
                .bind(first_hour)
                .fetch_all(&mut *connection)
                .await?;
            let top_types = sqlx::query_as::<Db, (String, i64)>(AssertSqlSafe(types_sql))
                .bind(first_hour)
                .fetch_all(&mut *connection)
                .await?;
            (rows, top_sources, top_types)
        });
        let mut by_status: StatusCounts = AlertStatus::ALL
            .into_iter()
            .map(|status| (status, Severity::ALL.into_iter().map(|s| (s, 0)).collect()))
            .collect();
        for (status, severity, n) in rows {
            let status: AlertStatus = status
                .parse()
                .map_err(|_| StorageError::Corrupt(format!("alert counts: status {status}")))?;
            let severity = Severity::from_rank(severity).ok_or_else(|| {
                StorageError::Corrupt(format!("alert counts: severity {severity}"))
            })?;
            if let Some(counts) = by_status.get_mut(&status) {
                counts.insert(severity, n);
            }
        }
        Ok(SummaryCounts {
            by_status,
            top_sources: top_sources
                .into_iter()
                .map(|(source_name, count)| SourceCount { source_name, count })
                .collect(),
            top_event_types: top_types
                .into_iter()
                .map(|(event_type, count)| TypeCount { event_type, count })
                .collect(),
        })
    }
}
