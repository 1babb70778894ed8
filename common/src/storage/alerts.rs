//! Alerts: exactly one per escalated event, with every status change recorded.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use sqlx::{AssertSqlSafe, PgConnection, Postgres, Sqlite};

use super::filter::{Clauses, Param, bind_params};
use super::{
    CountShards, Storage, StorageError, add_counts, anonymous_placeholders, fixed_shape_chunks,
    in_write_transaction, on_pool, pg_chunks, row_placeholders,
};
use crate::domain::{Alert, AlertStatus, Event, Severity, from_micros, to_micros};

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
    /// The counts table that can answer a count of this filter, if any: `alert_counts` when
    /// nothing but the status and the severity are given, `alert_counts_by_type` or
    /// `alert_counts_by_source` when the type or the sensor is given as well (not both), none
    /// when a time is given.
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
        if created_from.is_some() || created_to.is_some() {
            return None;
        }
        match (event_type, source_name) {
            (None, None) => Some("alert_counts"),
            (Some(_), None) => Some("alert_counts_by_type"),
            (None, Some(_)) => Some("alert_counts_by_source"),
            (Some(_), Some(_)) => None,
        }
    }

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

fn anonymous_rows_sql(prefix: &str, rows: usize, columns: usize, suffix: &str) -> String {
    let mut sql = String::from(prefix);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        anonymous_placeholders(&mut sql, columns);
    }
    sql.push_str(suffix);
    sql
}

/// Postgres creates a batch's alerts, and records their creation, with one statement each of
/// one text, whatever the batch size (so that each stays a cached prepared statement).
const INSERT_ALERTS_UNNEST: &str = "INSERT INTO alerts (event_id, source_name, event_type, \
     severity, status, created_at, updated_at) \
     SELECT event_id, source_name, event_type, severity, $5, $6, $6 \
     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::smallint[]) \
     AS batch (event_id, source_name, event_type, severity) \
     ON CONFLICT (event_id) DO NOTHING RETURNING id, severity";
const RECORD_CREATIONS_UNNEST: &str = "INSERT INTO alert_status_changes (alert_id, to_status, \
     changed_at) SELECT alert_id, $2, $3 FROM UNNEST($1::bigint[]) AS batch (alert_id)";

/// The statements of [`Storage::create_alerts`] whose fastest form differs by engine.
trait AlertStatements: sqlx::Database {
    /// Inserts an `OPEN` alert for each event (distinct) that has none; returns `(id,
    /// severity)` of each alert inserted.
    async fn insert_alerts(
        conn: &mut Self::Connection,
        events: &[&Event],
        now: i64,
    ) -> Result<Vec<(i64, i16)>, StorageError>;

    /// Records the creation (to `OPEN`, by the pipeline) of each of these alerts.
    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError>;

    /// The alerts of these events.
    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError>;
}

/// SQLite: multi-row `VALUES` and `IN` lists, in chunks.
impl AlertStatements for Sqlite {
    async fn insert_alerts(
        conn: &mut Self::Connection,
        events: &[&Event],
        now: i64,
    ) -> Result<Vec<(i64, i16)>, StorageError> {
        let mut inserted = Vec::with_capacity(events.len());
        for chunk in fixed_shape_chunks(events) {
            let sql = anonymous_rows_sql(
                "INSERT INTO alerts (event_id, source_name, event_type, severity, status, \
                 created_at, updated_at) VALUES ",
                chunk.len(),
                ALERT_COLUMNS,
                " ON CONFLICT (event_id) DO NOTHING RETURNING id, severity",
            );
            let mut query = sqlx::query_as::<Sqlite, (i64, i16)>(AssertSqlSafe(sql));
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
            inserted.extend(query.fetch_all(&mut *conn).await?);
        }
        Ok(inserted)
    }

    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError> {
        for chunk in fixed_shape_chunks(alert_ids) {
            let sql = anonymous_rows_sql(
                "INSERT INTO alert_status_changes (alert_id, to_status, changed_at) VALUES ",
                chunk.len(),
                3,
                "",
            );
            let mut query = sqlx::query::<Sqlite>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id).bind(AlertStatus::Open.as_str()).bind(now);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError> {
        let mut rows = Vec::with_capacity(event_ids.len());
        for chunk in fixed_shape_chunks(event_ids) {
            let mut sql = format!("{SELECT_ALERT} WHERE event_id IN ");
            anonymous_placeholders(&mut sql, chunk.len());
            let mut query = sqlx::query_as::<Sqlite, AlertRow>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            rows.extend(query.fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }
}

/// Postgres: one statement per batch, with one array per column.
impl AlertStatements for Postgres {
    async fn insert_alerts(
        conn: &mut Self::Connection,
        events: &[&Event],
        now: i64,
    ) -> Result<Vec<(i64, i16)>, StorageError> {
        let mut inserted = Vec::with_capacity(events.len());
        for chunk in pg_chunks(events, |e| e.source_name.len() + e.event_type.len() + 10) {
            inserted.extend(pg_insert_alert_chunk(conn, chunk, now).await?);
        }
        Ok(inserted)
    }

    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError> {
        sqlx::query::<Postgres>(RECORD_CREATIONS_UNNEST)
            .bind(alert_ids)
            .bind(AlertStatus::Open.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError> {
        let sql = format!("{SELECT_ALERT} WHERE event_id = ANY($1::bigint[])");
        let rows = sqlx::query_as::<Postgres, AlertRow>(AssertSqlSafe(sql))
            .bind(event_ids)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows)
    }
}

/// One `INSERT … SELECT FROM UNNEST` of alerts for `events` (Postgres).
async fn pg_insert_alert_chunk(
    conn: &mut PgConnection,
    events: &[&Event],
    now: i64,
) -> Result<Vec<(i64, i16)>, StorageError> {
    let n = events.len();
    let mut event_ids = Vec::with_capacity(n);
    let mut source_names = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut severities = Vec::with_capacity(n);
    for event in events {
        event_ids.push(event.id);
        source_names.push(event.source_name.as_str());
        event_types.push(event.event_type.as_str());
        severities.push(event.severity.rank());
    }
    let inserted = sqlx::query_as::<Postgres, (i64, i16)>(INSERT_ALERTS_UNNEST)
        .bind(event_ids)
        .bind(source_names)
        .bind(event_types)
        .bind(severities)
        .bind(AlertStatus::Open.as_str())
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    Ok(inserted)
}

/// What a transaction adds to (or moves between) the alert count tables, keys in order (see
/// `add_counts!`).
#[derive(Default)]
struct AlertCountDelta<'a> {
    by_status: BTreeMap<(&'a str, i16), i64>,
    by_type: BTreeMap<(&'a str, &'a str, i16), i64>,
    by_source: BTreeMap<(&'a str, &'a str, i16), i64>,
}

impl<'a> AlertCountDelta<'a> {
    /// Adds `n` (negative to take away) alerts with this status, severity, type and sensor.
    fn add(
        &mut self,
        status: &'a str,
        severity: i16,
        event_type: &'a str,
        source_name: &'a str,
        n: i64,
    ) {
        *self.by_status.entry((status, severity)).or_default() += n;
        *self
            .by_type
            .entry((event_type, status, severity))
            .or_default() += n;
        *self
            .by_source
            .entry((source_name, status, severity))
            .or_default() += n;
    }
}

/// Adds an [`AlertCountDelta`] to `alert_counts`, `alert_counts_by_type` and
/// `alert_counts_by_source`, in that order.
macro_rules! add_alert_counts {
    ($Db:ty, $tx:expr, $delta:expr) => {{
        let delta: &AlertCountDelta = $delta;
        let shard = <$Db as CountShards>::claim_count_shard(&mut $tx).await?;
        add_counts!(
            $Db,
            $tx,
            shard,
            "alert_counts",
            &["status", "severity"],
            &delta.by_status,
            |query, (status, severity)| query.bind(*status).bind(*severity)
        );
        add_counts!(
            $Db,
            $tx,
            shard,
            "alert_counts_by_type",
            &["event_type", "status", "severity"],
            &delta.by_type,
            |query, (event_type, status, severity)| query
                .bind(*event_type)
                .bind(*status)
                .bind(*severity)
        );
        add_counts!(
            $Db,
            $tx,
            shard,
            "alert_counts_by_source",
            &["source_name", "status", "severity"],
            &delta.by_source,
            |query, (source_name, status, severity)| query
                .bind(*source_name)
                .bind(*status)
                .bind(*severity)
        );
    }};
}

impl Storage {
    /// Makes the alert of each escalated event, in one transaction, unless it exists: an event
    /// has exactly one alert however often its escalation arrives. Returns every event's
    /// alert, so that a redelivery can notify again what a crash may have left unnotified.
    /// The counts of `alert_counts` grow by the alerts made, in the same transaction.
    pub async fn create_alerts(
        &self,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<CreatedAlerts, StorageError> {
        self.retrying_while_busy(|| self.create_alerts_once(events, now))
            .await
    }

    async fn create_alerts_once(
        &self,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<CreatedAlerts, StorageError> {
        let mut seen = HashSet::new();
        let events: Vec<&Event> = events.iter().filter(|e| seen.insert(e.id)).collect();
        if events.is_empty() {
            return Ok(CreatedAlerts::default());
        }
        let event_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        let now = to_micros(now);
        in_write_transaction!(self, |tx| {
            let created = <Db as AlertStatements>::insert_alerts(&mut tx, &events, now).await?;
            let created_ids: Vec<i64> = created.iter().map(|(id, _)| *id).collect();
            if !created_ids.is_empty() {
                <Db as AlertStatements>::record_creations(&mut tx, &created_ids, now).await?;
            }
            let rows = <Db as AlertStatements>::alerts_by_event_ids(&mut tx, &event_ids).await?;
            let created_set: HashSet<i64> = created_ids.iter().copied().collect();
            let mut added = AlertCountDelta::default();
            for row in rows.iter().filter(|row| created_set.contains(&row.id)) {
                let open = AlertStatus::Open.as_str();
                added.add(open, row.severity, &row.event_type, &row.source_name, 1);
            }
            // Last before the commit, so that the count rows stay locked briefly.
            add_alert_counts!(Db, tx, &added);
            let mut alerts = Vec::with_capacity(rows.len());
            for row in rows {
                alerts.push(Alert::try_from(row)?);
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

    /// How many alerts exist (from `alert_counts`: no scan).
    pub async fn count_alerts(&self) -> Result<i64, StorageError> {
        self.count_alerts_matching(&AlertFilter::default()).await
    }

    /// How many alerts match `filter`. A filter on the status, the severity, and the type or
    /// the sensor (not both) is answered from a counts table (a few rows); any other counts
    /// the matching rows.
    pub async fn count_alerts_matching(&self, filter: &AlertFilter) -> Result<i64, StorageError> {
        let clauses = filter.conditions();
        // SUM(BIGINT) is NUMERIC on Postgres: cast back to BIGINT.
        let sql = match filter.count_table() {
            Some(table) => format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM {table}{}",
                clauses.sql("WHERE")
            ),
            None => format!("SELECT COUNT(*) FROM alerts{}", clauses.sql("WHERE")),
        };
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

    /// Sets an alert's status and records the change (who, when, why), in one transaction,
    /// which also moves one from the alert's old (status, severity) count of `alert_counts` to
    /// the new. Returns `None` when there is no such alert; a [`StatusUpdate`] without a
    /// change when the alert already had status `to` (nothing is recorded then).
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
        self.retrying_while_busy(|| self.change_alert_status_once(id, to, changed_by, note, now))
            .await
    }

    async fn change_alert_status_once(
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
             note, changed_at, notify_pending) VALUES ($1, $2, $3, $4, $5, $6, TRUE) \
             RETURNING {STATUS_CHANGE_COLUMNS}"
        );
        let select_sql = format!("{SELECT_ALERT} WHERE id = $1");
        let (row, change) = in_write_transaction!(self, |tx| {
            let current = sqlx::query_as::<Db, (String, i16, String, String)>(
                "UPDATE alerts SET updated_at = updated_at WHERE id = $1 \
                 RETURNING status, severity, event_type, source_name",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((current, severity, event_type, source_name)) = current else {
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
            // Last before the commit, so that the count rows stay locked briefly. This
            // transaction holds the alert's row lock, so `current` is the committed status.
            if change.is_some() {
                let mut moved = AlertCountDelta::default();
                moved.add(current.as_str(), severity, &event_type, &source_name, -1);
                moved.add(to.as_str(), severity, &event_type, &source_name, 1);
                add_alert_counts!(Db, tx, &moved);
            }
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

    /// Status changes still waiting for their `alerts.updated.<status>` notification, made
    /// before `changed_before`, oldest first, at most `limit`, each with its alert as it is now.
    /// A change is pending from its commit until [`Storage::mark_change_notified`].
    pub async fn pending_change_notifications(
        &self,
        changed_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(Alert, StatusChange)>, StorageError> {
        let sql = format!(
            "SELECT {STATUS_CHANGE_COLUMNS} FROM alert_status_changes \
             WHERE notify_pending AND changed_at < $1 ORDER BY id LIMIT $2"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, StatusChangeRow>(AssertSqlSafe(sql))
                .bind(to_micros(changed_before))
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let change = StatusChange::try_from(row)?;
            // Alerts are never deleted, so a change always has its alert.
            if let Some(alert) = self.alert_by_id(change.alert_id).await? {
                pending.push((alert, change));
            }
        }
        Ok(pending)
    }

    /// Records that a status change's notification has been published (its PubAck is back).
    pub async fn mark_change_notified(&self, change_id: i64) -> Result<(), StorageError> {
        self.mark_changes_notified(&[change_id]).await
    }

    /// [`Storage::mark_change_notified`] for several changes, in one transaction.
    pub async fn mark_changes_notified(&self, change_ids: &[i64]) -> Result<(), StorageError> {
        if change_ids.is_empty() {
            return Ok(());
        }
        self.retrying_while_busy(|| self.mark_changes_notified_once(change_ids))
            .await
    }

    async fn mark_changes_notified_once(&self, change_ids: &[i64]) -> Result<(), StorageError> {
        in_write_transaction!(self, |tx| {
            for chunk in fixed_shape_chunks(change_ids) {
                let mut sql = String::from(
                    "UPDATE alert_status_changes SET notify_pending = FALSE \
                     WHERE notify_pending AND id IN ",
                );
                row_placeholders(&mut sql, 1, chunk.len());
                let mut query = sqlx::query::<Db>(AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
