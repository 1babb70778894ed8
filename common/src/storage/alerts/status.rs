//! Changing an alert's status, its history, and the notifications of its changes.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{
    AlertRow, SELECT_ALERT, STATUS_CHANGE_COLUMNS, StatusChange, StatusChangeRow, StatusUpdate,
};
use crate::domain::{Alert, AlertStatus, to_micros};
use crate::storage::counts::{AlertCountDelta, CountShards};
use crate::storage::sql::in_list_chunks;
use crate::storage::{Storage, StorageError, in_write_transaction, on_pool};

impl Storage {
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
                sqlx::query::<Db>(
                    "UPDATE alerts SET status = $1, updated_at = $2, version = version + 1 \
                     WHERE id = $3",
                )
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
                let shard = <Db as CountShards>::claim_count_shard(&mut tx).await?;
                for mut upsert in moved.upserts::<Db>(shard) {
                    upsert.build().execute(&mut *tx).await?;
                }
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
            for mut query in in_list_chunks::<Db, _>(
                "UPDATE alert_status_changes SET notify_pending = FALSE \
                 WHERE notify_pending AND id IN ",
                change_ids,
            ) {
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
