//! Changing an alert (its status, close reason and owner), its history, and the
//! notifications of its changes.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{
    ALERT_COLUMNS, AlertRow, SELECT_ALERT, STATUS_CHANGE_COLUMNS, StatusChange, StatusChangeRow,
    StatusUpdate,
};
use crate::domain::{Alert, AlertStatus, CloseReason, to_micros};
use crate::storage::counts::{AlertCountDelta, CountShards};
use crate::storage::sql::in_list_chunks;
use crate::storage::{Storage, StorageError, in_write_transaction, on_pool};

/// A change an admin asks of an alert: what is `None` stays as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertChange {
    /// The status to move to.
    pub status: Option<AlertStatus>,
    /// Why it is resolved: only with `status` RESOLVED, or on a resolved alert.
    pub close_reason: Option<CloseReason>,
    /// The new owner (`Some(None)` unassigns). The caller checks that the user may own it.
    pub assignee: Option<Option<i64>>,
    /// Why, kept with the change in the history.
    pub note: Option<String>,
    /// Refuse the change unless the alert's `version` is this.
    pub expected_version: Option<i64>,
}

impl AlertChange {
    /// Only a status change, with an optional note.
    pub fn status(to: AlertStatus, note: Option<&str>) -> Self {
        AlertChange {
            status: Some(to),
            note: note.map(str::to_owned),
            ..AlertChange::default()
        }
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The lifecycle does not allow this move (RESOLVED → ACKNOWLEDGED).
    Transition {
        /// The alert's status.
        from: AlertStatus,
        /// The status asked for.
        to: AlertStatus,
    },
    /// A close reason for an alert that is not being resolved.
    CloseReasonWithoutResolving,
}

/// What [`Storage::update_alert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertUpdate {
    /// Applied (or nothing to apply: `change` is `None` then).
    Done(StatusUpdate),
    /// No such alert.
    NotFound,
    /// Its version is not the one expected; the alert as it is.
    Stale(Alert),
    /// Not allowed; nothing changed.
    Refused(Refusal),
}

impl Storage {
    /// Sets an alert's status and records the change (who, when, why): [`Storage::update_alert`]
    /// with a status only. Returns `None` when there is no such alert; a [`StatusUpdate`]
    /// without a change when the alert already had status `to` (nothing is recorded then). A
    /// move the lifecycle refuses (RESOLVED → ACKNOWLEDGED) is [`StorageError::Refused`].
    pub async fn change_alert_status(
        &self,
        id: i64,
        to: AlertStatus,
        changed_by: i64,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<StatusUpdate>, StorageError> {
        let change = AlertChange::status(to, note);
        match self.update_alert(id, &change, changed_by, now).await? {
            AlertUpdate::Done(update) => Ok(Some(update)),
            AlertUpdate::NotFound => Ok(None),
            AlertUpdate::Stale(_) => Err(StorageError::Refused("stale version".into())),
            AlertUpdate::Refused(refusal) => Err(StorageError::Refused(format!("{refusal:?}"))),
        }
    }

    /// Applies an admin's change to an alert (status, close reason, owner) and records it as
    /// one history row, pending its `alerts.updated.<status>` notification, in one
    /// transaction, which also moves the alert between the counts of its old and new status.
    /// Nothing that changes nothing is recorded. `version` goes up by one on a change.
    ///
    /// Safe under concurrent changes on both engines: the first statement is a no-op `UPDATE`
    /// of the row that returns it, which takes SQLite's write lock (other writers wait on the
    /// busy timeout) or Postgres's row lock (other changers of this alert, and the alerter
    /// folding into it, wait, then read it as committed). So the recorded `from_status` is
    /// always the status the change replaced, the history forms an unbroken chain, and of two
    /// changes expecting the same version one is refused.
    pub async fn update_alert(
        &self,
        id: i64,
        change: &AlertChange,
        changed_by: i64,
        now: DateTime<Utc>,
    ) -> Result<AlertUpdate, StorageError> {
        self.retrying_while_busy(|| self.update_alert_once(id, change, changed_by, now))
            .await
    }

    async fn update_alert_once(
        &self,
        id: i64,
        change: &AlertChange,
        changed_by: i64,
        now: DateTime<Utc>,
    ) -> Result<AlertUpdate, StorageError> {
        let now = to_micros(now);
        let lock_sql = format!(
            "UPDATE alerts SET updated_at = updated_at WHERE id = $1 RETURNING {ALERT_COLUMNS}"
        );
        let record_sql = format!(
            "INSERT INTO alert_status_changes (alert_id, from_status, to_status, changed_by, \
             note, changed_at, notify_pending, close_reason, from_assignee, to_assignee) \
             VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $8, $9) RETURNING {STATUS_CHANGE_COLUMNS}"
        );
        let select_sql = format!("{SELECT_ALERT} WHERE id = $1");
        in_write_transaction!(self, |tx| {
            let current = sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(lock_sql))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            // Returning early writes nothing; dropping the transaction rolls it back.
            let Some(current) = current else {
                return Ok(AlertUpdate::NotFound);
            };
            let current = Alert::try_from(current)?;
            if change
                .expected_version
                .is_some_and(|expected| expected != current.version)
            {
                return Ok(AlertUpdate::Stale(current));
            }
            let to = change.status.unwrap_or(current.status);
            if !current.status.may_become(to) {
                return Ok(AlertUpdate::Refused(Refusal::Transition {
                    from: current.status,
                    to,
                }));
            }
            if change.close_reason.is_some() && to != AlertStatus::Resolved {
                return Ok(AlertUpdate::Refused(Refusal::CloseReasonWithoutResolving));
            }
            let close_reason = match (to, current.status) {
                (AlertStatus::Resolved, AlertStatus::Resolved) => {
                    change.close_reason.or(current.close_reason)
                }
                (AlertStatus::Resolved, _) => change.close_reason,
                // Reopening (or never resolved) clears it.
                _ => None,
            };
            let assignee = change.assignee.unwrap_or(current.assignee);
            if to == current.status
                && close_reason == current.close_reason
                && assignee == current.assignee
            {
                return Ok(AlertUpdate::Done(StatusUpdate {
                    alert: current,
                    change: None,
                }));
            }
            sqlx::query::<Db>(
                "UPDATE alerts SET status = $1, close_reason = $2, assignee = $3, \
                 version = version + 1, updated_at = $4 WHERE id = $5",
            )
            .bind(to.as_str())
            .bind(close_reason.map(CloseReason::as_str))
            .bind(assignee)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let (from_assignee, to_assignee) = if assignee == current.assignee {
                (None, None)
            } else {
                (current.assignee, assignee)
            };
            let recorded = sqlx::query_as::<Db, StatusChangeRow>(AssertSqlSafe(record_sql))
                .bind(id)
                .bind(current.status.as_str())
                .bind(to.as_str())
                .bind(changed_by)
                .bind(change.note.as_deref())
                .bind(now)
                .bind(
                    close_reason
                        .filter(|_| to == AlertStatus::Resolved)
                        .map(CloseReason::as_str),
                )
                .bind(from_assignee)
                .bind(to_assignee)
                .fetch_one(&mut *tx)
                .await?;
            let row = sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(select_sql))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            // Last before the commit, so that the count rows stay locked briefly. This
            // transaction holds the alert's row lock, so `current` is as committed.
            if to != current.status {
                let severity = current.severity.rank();
                let mut moved = AlertCountDelta::default();
                moved.add(
                    current.status.as_str(),
                    severity,
                    &current.event_type,
                    &current.source_name,
                    -1,
                );
                moved.add(
                    to.as_str(),
                    severity,
                    &current.event_type,
                    &current.source_name,
                    1,
                );
                let shard = <Db as CountShards>::claim_count_shard(&mut tx).await?;
                for mut upsert in moved.upserts::<Db>(shard) {
                    upsert.build().execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(AlertUpdate::Done(StatusUpdate {
                alert: Alert::try_from(row)?,
                change: Some(StatusChange::try_from(recorded)?),
            }))
        })
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
