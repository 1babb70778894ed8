//! Alerts: exactly one per escalated event, with every status change recorded. Creating
//! them is in [`create`], changing their status and notifying the changes in [`status`];
//! here are their types and reads.

mod create;
mod status;

use chrono::{DateTime, Utc};
use serde::Serialize;

use sqlx::AssertSqlSafe;

use super::listing::{CountTables, ListFilter, shared_conditions};
use super::sql::{Condition, condition};
use super::{Storage, StorageError, on_pool};
use crate::domain::{Alert, AlertStatus, Severity, from_micros};

const STATUS_CHANGE_COLUMNS: &str =
    "id, alert_id, from_status, to_status, changed_by, note, changed_at";
const SELECT_ALERT: &str = "SELECT id, event_id, source_name, event_type, severity, status, \
                            created_at, updated_at FROM alerts";

/// What creating alerts for a batch of escalated events did.
#[derive(Debug, Clone, Default)]
pub struct CreatedAlerts {
    /// The alert of every event in the batch, whether made now or by an earlier delivery.
    pub alerts: Vec<Alert>,
    /// How many were made now.
    pub newly_created: u64,
}

/// One recorded status change of an alert. Creation is the first, from no status to `OPEN`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StatusChange {
    /// Database id.
    pub id: i64,
    /// The alert that changed.
    pub alert_id: i64,
    /// The status before; `None` for the creation.
    pub from_status: Option<AlertStatus>,
    /// The status after.
    pub to_status: AlertStatus,
    /// The user who changed it; `None` for the pipeline.
    pub changed_by: Option<i64>,
    /// Why, in the user's words.
    pub note: Option<String>,
    /// When (UTC).
    pub changed_at: DateTime<Utc>,
}

/// Which alerts a list or count covers; every given field must match (`AND`), and the
/// default matches every alert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Exactly this status.
    pub status: Option<AlertStatus>,
    /// Exactly this severity.
    pub severity: Option<Severity>,
    /// Exactly this event type (case-sensitive).
    pub event_type: Option<String>,
    /// Exactly this sensor (case-sensitive).
    pub source_name: Option<String>,
    /// Raised at or after this time (inclusive).
    pub created_from: Option<DateTime<Utc>>,
    /// Raised at or before this time (inclusive).
    pub created_to: Option<DateTime<Utc>>,
}

const ALERT_COUNT_TABLES: CountTables = CountTables {
    all: "alert_counts",
    by_type: "alert_counts_by_type",
    by_source: "alert_counts_by_source",
};

impl ListFilter for AlertFilter {
    const SELECT: &'static str = SELECT_ALERT;
    const TABLE: &'static str = "alerts";

    fn conditions(&self) -> Vec<Condition> {
        condition("status", "=", self.status.map(|s| s.as_str()))
            .into_iter()
            .chain(shared_conditions(
                self.severity,
                self.source_name.as_deref(),
                self.event_type.as_deref(),
                self.created_from,
                self.created_to,
            ))
            .collect()
    }

    /// `alert_counts` when nothing but the status and the severity are given,
    /// `alert_counts_by_type` or `alert_counts_by_source` when the type or the sensor is given
    /// as well (not both), none when a time is given.
    fn count_table(&self) -> Option<&'static str> {
        // Destructured so that a new field must be considered here.
        let AlertFilter {
            status: _,
            severity: _,
            event_type,
            source_name,
            created_from,
            created_to,
        } = self;
        ALERT_COUNT_TABLES.answering(
            event_type.is_some(),
            source_name.is_some(),
            created_from.is_some() || created_to.is_some(),
        )
    }
}

/// The order of an alert list. Ids grow with creation time, so "newest" is the highest id.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertOrdering {
    /// Newest first.
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
    /// Least severe first; newest first within a severity.
    SeverityAscending,
    /// Most severe first; newest first within a severity.
    SeverityDescending,
}

impl AlertOrdering {
    fn sql(self) -> &'static str {
        match self {
            AlertOrdering::NewestFirst => "ORDER BY id DESC",
            AlertOrdering::OldestFirst => "ORDER BY id ASC",
            AlertOrdering::SeverityAscending => "ORDER BY severity ASC, id DESC",
            AlertOrdering::SeverityDescending => "ORDER BY severity DESC, id DESC",
        }
    }
}

/// What [`Storage::change_alert_status`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusUpdate {
    /// The alert after the change.
    pub alert: Alert,
    /// The change recorded; `None` when the alert already had the status asked for, in which
    /// case nothing was changed or recorded.
    pub change: Option<StatusChange>,
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: i64,
    event_id: i64,
    source_name: String,
    event_type: String,
    severity: i16,
    status: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<AlertRow> for Alert {
    type Error = StorageError;

    fn try_from(row: AlertRow) -> Result<Self, Self::Error> {
        let severity = Severity::from_rank(row.severity).ok_or_else(|| {
            StorageError::Corrupt(format!("alert {}: severity {}", row.id, row.severity))
        })?;
        let status = row.status.parse().map_err(|_| {
            StorageError::Corrupt(format!("alert {}: status {}", row.id, row.status))
        })?;
        Ok(Alert {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            severity,
            source_name: row.source_name,
            status,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct StatusChangeRow {
    id: i64,
    alert_id: i64,
    from_status: Option<String>,
    to_status: String,
    changed_by: Option<i64>,
    note: Option<String>,
    changed_at: i64,
}

impl TryFrom<StatusChangeRow> for StatusChange {
    type Error = StorageError;

    fn try_from(row: StatusChangeRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StorageError::Corrupt(format!("status change {}: {what}", row.id));
        let from_status = match &row.from_status {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| corrupt("from_status"))?),
        };
        let to_status = row.to_status.parse().map_err(|_| corrupt("to_status"))?;
        Ok(StatusChange {
            id: row.id,
            alert_id: row.alert_id,
            from_status,
            to_status,
            changed_by: row.changed_by,
            note: row.note,
            changed_at: from_micros(row.changed_at),
        })
    }
}

impl Storage {
    /// One alert by id.
    pub async fn alert_by_id(&self, id: i64) -> Result<Option<Alert>, StorageError> {
        let sql = format!("{SELECT_ALERT} WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Alert::try_from).transpose()
    }

    /// The alert raised for an event, if any.
    pub async fn alert_by_event_id(&self, event_id: i64) -> Result<Option<Alert>, StorageError> {
        let sql = format!("{SELECT_ALERT} WHERE event_id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(sql))
                .bind(event_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Alert::try_from).transpose()
    }

    /// How many alerts exist (from `alert_counts`: no scan).
    pub async fn count_alerts(&self) -> Result<i64, StorageError> {
        self.count_alerts_matching(&AlertFilter::default()).await
    }

    /// How many alerts match `filter`. A filter on the status, the severity, and the type or
    /// the sensor (not both) is answered from a counts table (a few rows); any other counts
    /// the matching rows.
    pub async fn count_alerts_matching(&self, filter: &AlertFilter) -> Result<i64, StorageError> {
        self.count_matching(filter).await
    }

    /// The alerts matching `filter` in `ordering`, `limit` of them after skipping `offset`
    /// (a negative `limit` or `offset` counts as 0, on both engines).
    pub async fn list_alerts(
        &self,
        filter: &AlertFilter,
        ordering: AlertOrdering,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Alert>, StorageError> {
        let rows: Vec<AlertRow> = self
            .list_matching(filter, ordering.sql(), limit, offset)
            .await?;
        rows.into_iter().map(Alert::try_from).collect()
    }
}
