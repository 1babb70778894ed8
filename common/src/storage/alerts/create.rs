//! Creating alerts: one per escalated event, however often its escalation arrives.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Sqlite};

use super::{AlertRow, CreatedAlerts, SELECT_ALERT};
use crate::domain::{Alert, AlertStatus, Event, to_micros};
use crate::storage::counts::{AlertCountDelta, CountShards};
use crate::storage::sql::in_list_chunks;
use crate::storage::{Storage, StorageError, fixed_shape_chunks, in_write_transaction, pg_chunks};

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
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alerts (event_id, source_name, event_type, severity, status, \
                 created_at, updated_at) ",
            );
            query.push_values(chunk, |mut row, event| {
                row.push_bind(event.id)
                    .push_bind(event.source_name.as_str())
                    .push_bind(event.event_type.as_str())
                    .push_bind(event.severity.rank())
                    .push_bind(AlertStatus::Open.as_str())
                    .push_bind(now)
                    .push_bind(now);
            });
            query.push(" ON CONFLICT (event_id) DO NOTHING RETURNING id, severity");
            inserted.extend(
                query
                    .build_query_as::<(i64, i16)>()
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(inserted)
    }

    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError> {
        for chunk in fixed_shape_chunks(alert_ids) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alert_status_changes (alert_id, to_status, changed_at) ",
            );
            query.push_values(chunk, |mut row, id| {
                row.push_bind(*id)
                    .push_bind(AlertStatus::Open.as_str())
                    .push_bind(now);
            });
            query.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError> {
        let mut rows = Vec::with_capacity(event_ids.len());
        let prefix = format!("{SELECT_ALERT} WHERE event_id IN ");
        for mut query in in_list_chunks::<Sqlite, _>(&prefix, event_ids) {
            rows.extend(
                query
                    .build_query_as::<AlertRow>()
                    .fetch_all(&mut *conn)
                    .await?,
            );
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
            let shard = <Db as CountShards>::claim_count_shard(&mut tx).await?;
            for mut upsert in added.upserts::<Db>(shard) {
                upsert.build().execute(&mut *tx).await?;
            }
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
}
