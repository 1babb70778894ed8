//! Changing an alert (its status, close reason and owner), its history, and the
//! notifications of its changes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::QueryBuilder;

use super::{
    ALERT_COLUMNS, AlertRow, SELECT_ALERT, STATUS_CHANGE_COLUMNS, StatusChange, StatusChangeRow,
    StatusUpdate,
};
use crate::domain::{Alert, AlertStatus, CloseReason, to_micros};
use crate::storage::counts::{AlertCountDelta, CountShards, creation_hour};
use crate::storage::sql::{Value, in_list_chunks, push_tuple};
use crate::storage::{Storage, StorageError, fixed_shape_chunks, in_write_transaction, on_pool};

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

/// What [`Storage::update_alerts`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkUpdate {
    /// Each alert changed, as it is now, with its recorded change, in id order.
    pub changed: Vec<(Alert, StatusChange)>,
    /// Each alert left as it was, with why, in id order.
    pub skipped: Vec<(i64, String)>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Transition { from, to } => {
                write!(f, "Cannot change status from {from} to {to}.")
            }
            Refusal::CloseReasonWithoutResolving => {
                f.write_str("A close reason is given only when resolving (status RESOLVED).")
            }
        }
    }
}

/// A value or SQL `NULL` (in an `INSERT`'s `VALUES`, which takes the column's type).
fn nullable<T: Into<Value>>(value: Option<T>) -> Value {
    value.map_or(Value::Null, Into::into)
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

/// What an alert becomes under a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Planned {
    status: AlertStatus,
    close_reason: Option<CloseReason>,
    assignee: Option<i64>,
}

/// The lifecycle's rules: what `change` makes of `current`, `None` when it changes nothing,
/// or why it may not. A close reason is kept while the alert stays resolved and cleared when
/// it is reopened; the version is not checked here.
fn plan_change(current: &Alert, change: &AlertChange) -> Result<Option<Planned>, Refusal> {
    let to = change.status.unwrap_or(current.status);
    if !current.status.may_become(to) {
        return Err(Refusal::Transition {
            from: current.status,
            to,
        });
    }
    if change.close_reason.is_some() && to != AlertStatus::Resolved {
        return Err(Refusal::CloseReasonWithoutResolving);
    }
    let close_reason = match (to, current.status) {
        (AlertStatus::Resolved, AlertStatus::Resolved) => {
            change.close_reason.or(current.close_reason)
        }
        (AlertStatus::Resolved, _) => change.close_reason,
        _ => None,
    };
    let planned = Planned {
        status: to,
        close_reason,
        assignee: change.assignee.unwrap_or(current.assignee),
    };
    let unchanged = Planned {
        status: current.status,
        close_reason: current.close_reason,
        assignee: current.assignee,
    };
    Ok((planned != unchanged).then_some(planned))
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
            AlertUpdate::Refused(refusal) => Err(StorageError::Refused(refusal.to_string())),
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
            let Planned {
                status: to,
                close_reason,
                assignee,
            } = match plan_change(&current, change) {
                Err(refusal) => return Ok(AlertUpdate::Refused(refusal)),
                Ok(None) => {
                    return Ok(AlertUpdate::Done(StatusUpdate {
                        alert: current,
                        change: None,
                    }));
                }
                Ok(Some(planned)) => planned,
            };
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
                moved.moved(
                    (current.status.as_str(), severity),
                    (to.as_str(), severity),
                    &current.event_type,
                    &current.source_name,
                    creation_hour(to_micros(current.created_at)),
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

    /// Applies one change to many alerts in one transaction (bulk actions): each alert the
    /// change applies to gets one history row, pending its `alerts.updated.<status>`
    /// notification; the others are skipped with the reason (no such alert, a move the
    /// lifecycle refuses, nothing to change). The version is not checked. Alerts are locked
    /// in id order, as every writer of several alerts does.
    pub async fn update_alerts(
        &self,
        ids: &[i64],
        change: &AlertChange,
        changed_by: i64,
        now: DateTime<Utc>,
    ) -> Result<BulkUpdate, StorageError> {
        self.retrying_while_busy(|| self.update_alerts_once(ids, change, changed_by, now))
            .await
    }

    async fn update_alerts_once(
        &self,
        ids: &[i64],
        change: &AlertChange,
        changed_by: i64,
        now: DateTime<Utc>,
    ) -> Result<BulkUpdate, StorageError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let now = to_micros(now);
        let lock_rows = matches!(self, Storage::Postgres(_));
        let select_prefix = format!("{SELECT_ALERT} WHERE id IN ");
        in_write_transaction!(self, |tx| {
            let mut current: HashMap<i64, Alert> = HashMap::with_capacity(ids.len());
            for mut query in in_list_chunks::<Db, _>(&select_prefix, &ids) {
                query.push(" ORDER BY id");
                if lock_rows {
                    query.push(" FOR UPDATE");
                }
                for row in query
                    .build_query_as::<AlertRow>()
                    .fetch_all(&mut *tx)
                    .await?
                {
                    let alert = Alert::try_from(row)?;
                    current.insert(alert.id, alert);
                }
            }
            let mut skipped = Vec::new();
            let mut planned: Vec<(&Alert, Planned)> = Vec::new();
            for id in &ids {
                let Some(alert) = current.get(id) else {
                    skipped.push((*id, "Not found.".to_owned()));
                    continue;
                };
                match plan_change(alert, change) {
                    Ok(Some(plan)) => planned.push((alert, plan)),
                    Ok(None) => skipped.push((*id, "Nothing to change.".to_owned())),
                    Err(refusal) => skipped.push((*id, refusal.to_string())),
                }
            }
            // One UPDATE per distinct outcome (there are few), so that every value is bound
            // with its type.
            let mut by_outcome: BTreeMap<Planned, Vec<i64>> = BTreeMap::new();
            for (alert, plan) in &planned {
                by_outcome.entry(*plan).or_default().push(alert.id);
            }
            for (plan, ids) in &by_outcome {
                for chunk in fixed_shape_chunks(ids) {
                    let mut query = QueryBuilder::<Db>::new("UPDATE alerts SET status = ");
                    query.push_bind(plan.status.as_str());
                    query.push(", close_reason = ");
                    query.push_bind(plan.close_reason.map(CloseReason::as_str));
                    query.push(", assignee = ");
                    query.push_bind(plan.assignee);
                    query.push(", version = version + 1, updated_at = ");
                    query.push_bind(now);
                    query.push(" WHERE id IN ");
                    push_tuple(&mut query, chunk.iter().map(|id| Value::Int(*id)));
                    query.build().execute(&mut *tx).await?;
                }
            }
            let mut changes: Vec<StatusChangeRow> = Vec::with_capacity(planned.len());
            for chunk in fixed_shape_chunks(&planned) {
                let mut query = QueryBuilder::<Db>::new(
                    "INSERT INTO alert_status_changes (alert_id, from_status, to_status, \
                     changed_by, note, changed_at, notify_pending, close_reason, from_assignee, \
                     to_assignee) VALUES ",
                );
                for (i, (alert, plan)) in chunk.iter().enumerate() {
                    if i > 0 {
                        query.push(", ");
                    }
                    let (from_assignee, to_assignee) = if plan.assignee == alert.assignee {
                        (None, None)
                    } else {
                        (alert.assignee, plan.assignee)
                    };
                    let resolved = plan.status == AlertStatus::Resolved;
                    push_tuple(
                        &mut query,
                        [
                            Value::Int(alert.id),
                            Value::from(alert.status.as_str()),
                            Value::from(plan.status.as_str()),
                            Value::Int(changed_by),
                            nullable(change.note.as_deref()),
                            Value::Int(now),
                            Value::Bool(true),
                            nullable(
                                plan.close_reason
                                    .filter(|_| resolved)
                                    .map(CloseReason::as_str),
                            ),
                            nullable(from_assignee),
                            nullable(to_assignee),
                        ],
                    );
                }
                query.push(format_args!(" RETURNING {STATUS_CHANGE_COLUMNS}"));
                changes.extend(
                    query
                        .build_query_as::<StatusChangeRow>()
                        .fetch_all(&mut *tx)
                        .await?,
                );
            }
            let mut moved = AlertCountDelta::default();
            for (alert, plan) in &planned {
                if plan.status != alert.status {
                    let severity = alert.severity.rank();
                    moved.moved(
                        (alert.status.as_str(), severity),
                        (plan.status.as_str(), severity),
                        &alert.event_type,
                        &alert.source_name,
                        creation_hour(to_micros(alert.created_at)),
                    );
                }
            }
            let shard = <Db as CountShards>::claim_count_shard(&mut tx).await?;
            for mut upsert in moved.upserts::<Db>(shard) {
                upsert.build().execute(&mut *tx).await?;
            }
            let changed_ids: Vec<i64> = planned.iter().map(|(alert, _)| alert.id).collect();
            let mut after: HashMap<i64, Alert> = HashMap::with_capacity(changed_ids.len());
            for mut query in in_list_chunks::<Db, _>(&select_prefix, &changed_ids) {
                for row in query
                    .build_query_as::<AlertRow>()
                    .fetch_all(&mut *tx)
                    .await?
                {
                    let alert = Alert::try_from(row)?;
                    after.insert(alert.id, alert);
                }
            }
            tx.commit().await?;
            let mut changed = Vec::with_capacity(changes.len());
            for row in changes {
                let change = StatusChange::try_from(row)?;
                if let Some(alert) = after.remove(&change.alert_id) {
                    changed.push((alert, change));
                }
            }
            Ok(BulkUpdate { changed, skipped })
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
