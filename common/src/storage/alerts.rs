//! Alerts: exactly one per escalated event, with every status change recorded.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use sqlx::AssertSqlSafe;

use super::filter::{Clauses, Param, bind_params};
use super::{Storage, StorageError, on_pool, row_placeholders};
use crate::domain::{Alert, AlertStatus, Event, Severity, from_micros, to_micros};

const INSERT_CHUNK_ROWS: usize = 500;
const ALERT_COLUMNS: usize = 7;
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

impl AlertFilter {
    /// The filter as `WHERE` conditions with their bound values.
    fn conditions(&self) -> Clauses {
        let mut clauses = Clauses::conditions();
        clauses.push_some("status", "=", self.status, |s| {
            Param::Text(s.as_str().to_owned())
        });
        clauses.push_some("severity", "=", self.severity, |s| {
            Param::SmallInt(s.rank())
        });
        clauses.push_some("event_type", "=", self.event_type.clone(), Param::Text);
        clauses.push_some("source_name", "=", self.source_name.clone(), Param::Text);
        clauses.push_some("created_at", ">=", self.created_from, |t| {
            Param::Int(to_micros(t))
        });
        clauses.push_some("created_at", "<=", self.created_to, |t| {
            Param::Int(to_micros(t))
        });
        clauses
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
            AlertOrdering::NewestFirst => " ORDER BY id DESC",
            AlertOrdering::OldestFirst => " ORDER BY id ASC",
            AlertOrdering::SeverityAscending => " ORDER BY severity ASC, id DESC",
            AlertOrdering::SeverityDescending => " ORDER BY severity DESC, id DESC",
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

fn numbered_rows_sql(prefix: &str, rows: usize, columns: usize, suffix: &str) -> String {
    let mut sql = String::from(prefix);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        row_placeholders(&mut sql, row * columns + 1, columns);
    }
    sql.push_str(suffix);
    sql
}

impl Storage {
    /// Makes the alert of each escalated event, in one transaction, unless it exists: an event
    /// has exactly one alert however often its escalation arrives. Returns every event's
    /// alert, so that a redelivery can notify again what a crash may have left unnotified.
    pub async fn create_alerts(
        &self,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<CreatedAlerts, StorageError> {
        let mut seen = HashSet::new();
        let events: Vec<&Event> = events.iter().filter(|e| seen.insert(e.id)).collect();
        if events.is_empty() {
            return Ok(CreatedAlerts::default());
        }
        let now = to_micros(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut created_ids = Vec::new();
            for chunk in events.chunks(INSERT_CHUNK_ROWS) {
                let sql = numbered_rows_sql(
                    "INSERT INTO alerts (event_id, source_name, event_type, severity, status, \
                     created_at, updated_at) VALUES ",
                    chunk.len(),
                    ALERT_COLUMNS,
                    " ON CONFLICT (event_id) DO NOTHING RETURNING id",
                );
                let mut query = sqlx::query_scalar::<Db, i64>(AssertSqlSafe(sql));
                for event in chunk {
                    query = query
                        .bind(event.id)
                        .bind(event.source_name.as_str())
                        .bind(event.event_type.as_str())
                        .bind(event.severity.rank())
                        .bind(AlertStatus::Open.as_str())
                        .bind(now)
                        .bind(now);
                }
                created_ids.extend(query.fetch_all(&mut *tx).await?);
            }
            for chunk in created_ids.chunks(INSERT_CHUNK_ROWS) {
                let sql = numbered_rows_sql(
                    "INSERT INTO alert_status_changes (alert_id, to_status, changed_at) VALUES ",
                    chunk.len(),
                    3,
                    "",
                );
                let mut query = sqlx::query::<Db>(AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id).bind(AlertStatus::Open.as_str()).bind(now);
                }
                query.execute(&mut *tx).await?;
            }
            let mut alerts = Vec::with_capacity(events.len());
            for chunk in events.chunks(INSERT_CHUNK_ROWS) {
                let mut sql = format!("{SELECT_ALERT} WHERE event_id IN ");
                row_placeholders(&mut sql, 1, chunk.len());
                let mut query = sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(sql));
                for event in chunk {
                    query = query.bind(event.id);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    alerts.push(Alert::try_from(row)?);
                }
            }
            tx.commit().await?;
            Ok(CreatedAlerts {
                alerts,
                newly_created: created_ids.len() as u64,
            })
        })
    }

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

    /// How many alerts exist.
    pub async fn count_alerts(&self) -> Result<i64, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM alerts")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }

    /// How many alerts match `filter`.
    pub async fn count_alerts_matching(&self, filter: &AlertFilter) -> Result<i64, StorageError> {
        let clauses = filter.conditions();
        let sql = format!("SELECT COUNT(*) FROM alerts{}", clauses.sql("WHERE"));
        let count = on_pool!(self, |pool| {
            bind_params!(
                sqlx::query_scalar::<Db, i64>(AssertSqlSafe(sql)),
                clauses.params()
            )
            .fetch_one(pool)
            .await?
        });
        Ok(count)
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
        let mut clauses = filter.conditions();
        let where_sql = clauses.sql("WHERE");
        let limit = clauses.bind(Param::Int(limit.max(0)));
        let offset = clauses.bind(Param::Int(offset.max(0)));
        let sql = format!(
            "{SELECT_ALERT}{where_sql}{} LIMIT {limit} OFFSET {offset}",
            ordering.sql()
        );
        let rows = on_pool!(self, |pool| {
            bind_params!(
                sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(sql)),
                clauses.params()
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Alert::try_from).collect()
    }

    /// Sets an alert's status and records the change (who, when, why), in one transaction.
    /// Returns `None` when there is no such alert; a [`StatusUpdate`] without a change when
    /// the alert already had status `to` (nothing is recorded then).
    ///
    /// Safe under concurrent changes on both engines: the first statement is a no-op `UPDATE`
    /// of the row that returns its status, which takes SQLite's write lock (other writers wait
    /// on the busy timeout) or Postgres's row lock (other changers of this alert wait, then
    /// read the status as committed). So the recorded `from_status` is always the status the
    /// change replaced, and the history forms an unbroken chain.
    pub async fn change_alert_status(
        &self,
        id: i64,
        to: AlertStatus,
        changed_by: i64,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<StatusUpdate>, StorageError> {
        let now = to_micros(now);
        let record_sql = format!(
            "INSERT INTO alert_status_changes (alert_id, from_status, to_status, changed_by, \
             note, changed_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {STATUS_CHANGE_COLUMNS}"
        );
        let select_sql = format!("{SELECT_ALERT} WHERE id = $1");
        let (row, change) = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let current = sqlx::query_scalar::<Db, String>(
                "UPDATE alerts SET updated_at = updated_at WHERE id = $1 RETURNING status",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(current) = current else {
                // Nothing was written; dropping the transaction rolls it back.
                return Ok(None);
            };
            let change = if current == to.as_str() {
                None
            } else {
                sqlx::query::<Db>("UPDATE alerts SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(to.as_str())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let change = sqlx::query_as::<Db, StatusChangeRow>(AssertSqlSafe(record_sql))
                    .bind(id)
                    .bind(current.as_str())
                    .bind(to.as_str())
                    .bind(changed_by)
                    .bind(note)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                Some(change)
            };
            let row = sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(select_sql))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            (row, change)
        });
        Ok(Some(StatusUpdate {
            alert: Alert::try_from(row)?,
            change: change.map(StatusChange::try_from).transpose()?,
        }))
    }

    /// Every recorded status change of an alert, oldest first.
    pub async fn status_history(&self, alert_id: i64) -> Result<Vec<StatusChange>, StorageError> {
        let sql = format!(
            "SELECT {STATUS_CHANGE_COLUMNS} FROM alert_status_changes WHERE alert_id = $1 \
             ORDER BY id"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, StatusChangeRow>(AssertSqlSafe(sql))
                .bind(alert_id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(StatusChange::try_from).collect()
    }
}
