//! Reminders of alerts that stay OPEN: a route's `repeat_every_secs` (Alertmanager's
//! `repeat_interval`). Recording a delivery for an OPEN alert on such a route (re)starts the
//! wait (`record_deliveries`); the alerter's dispatcher takes the due ones, decides, and
//! records each decision here, compare-and-set on what it read, so that two alerters (or a
//! new message arriving meanwhile) never make a reminder twice or lose a restarted wait.

use chrono::{DateTime, Utc};

use super::notifications::{NewDelivery, insert_delivery};
use super::{Storage, StorageError, in_write_transaction, on_pool};
use crate::domain::{Alert, to_micros};

/// (Re)starts a (route, alert)'s wait for its next reminder: binds route, alert, due time.
/// The count of reminders made is kept, so their keys never repeat.
pub(super) const SCHEDULE: &str = "INSERT INTO notification_reminders (route_id, alert_id, \
     next_at, sent) VALUES ($1, $2, $3, 0) \
     ON CONFLICT (route_id, alert_id) DO UPDATE SET next_at = excluded.next_at";

/// `every_secs` after `now_micros`.
pub(super) fn next_reminder_at(now_micros: i64, every_secs: u64) -> i64 {
    let every = i64::try_from(every_secs).unwrap_or(i64::MAX);
    now_micros.saturating_add(every.saturating_mul(1_000_000))
}

/// A reminder that is due, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct DueReminder {
    /// The route.
    pub route_id: i64,
    /// The alert, as it is now.
    pub alert: Alert,
    /// When it was due (µs), as read: the decision applies only if it is unchanged.
    pub next_at: i64,
    /// Reminders made for this route and alert so far.
    pub sent: i64,
}

impl DueReminder {
    /// The key of the reminder this would make: `alert-<id>-reminder-<n>`.
    pub fn message_key(&self) -> String {
        format!("alert-{}-reminder-{}", self.alert.id, self.sent + 1)
    }
}

/// What the dispatcher decided for a due reminder.
#[derive(Debug, Clone, PartialEq)]
pub enum ReminderDecision {
    /// Make `delivery` (keyed by [`DueReminder::message_key`]); the next is due
    /// `every_secs` later.
    Send {
        /// The reminder, as read.
        due: DueReminder,
        /// Its delivery.
        delivery: NewDelivery,
        /// The route's `repeat_every_secs`.
        every_secs: u64,
    },
    /// Stop reminding: the alert is no longer OPEN, or the route no longer repeats, matches
    /// it or exists. A later message about the alert on the route starts again.
    Drop(DueReminder),
}

#[derive(sqlx::FromRow)]
struct ReminderRow {
    route_id: i64,
    alert_id: i64,
    next_at: i64,
    sent: i64,
}

impl Storage {
    /// Up to `limit` reminders due at `now`, soonest first, each with its alert.
    pub async fn due_reminders(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueReminder>, StorageError> {
        let rows: Vec<ReminderRow> = on_pool!(self, |pool| {
            sqlx::query_as::<Db, ReminderRow>(
                "SELECT route_id, alert_id, next_at, sent FROM notification_reminders \
                 WHERE next_at <= $1 ORDER BY next_at LIMIT $2",
            )
            .bind(to_micros(now))
            .bind(limit.max(0))
            .fetch_all(pool)
            .await?
        });
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            // An alert is never deleted; were one missing, its row stays and is logged.
            match self.alert_by_id(row.alert_id).await? {
                Some(alert) => due.push(DueReminder {
                    route_id: row.route_id,
                    alert,
                    next_at: row.next_at,
                    sent: row.sent,
                }),
                None => tracing::warn!(alert = row.alert_id, "a reminder of a missing alert"),
            }
        }
        Ok(due)
    }

    /// Records `decisions` in one transaction, each only if its reminder is still as read.
    /// Returns how many reminders were made.
    pub async fn record_reminders(
        &self,
        decisions: &[ReminderDecision],
        now: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        if decisions.is_empty() {
            return Ok(0);
        }
        self.retrying_while_busy(|| self.record_reminders_once(decisions, now))
            .await
    }

    async fn record_reminders_once(
        &self,
        decisions: &[ReminderDecision],
        now: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        let now = to_micros(now);
        in_write_transaction!(self, |tx| {
            let mut made = 0;
            for decision in decisions {
                match decision {
                    ReminderDecision::Drop(due) => {
                        sqlx::query::<Db>(
                            "DELETE FROM notification_reminders WHERE route_id = $1 \
                             AND alert_id = $2 AND next_at = $3 AND sent = $4",
                        )
                        .bind(due.route_id)
                        .bind(due.alert.id)
                        .bind(due.next_at)
                        .bind(due.sent)
                        .execute(&mut *tx)
                        .await?;
                    }
                    ReminderDecision::Send {
                        due,
                        delivery,
                        every_secs,
                    } => {
                        let taken = sqlx::query::<Db>(
                            "UPDATE notification_reminders SET sent = sent + 1, next_at = $1 \
                             WHERE route_id = $2 AND alert_id = $3 AND next_at = $4 \
                             AND sent = $5",
                        )
                        .bind(next_reminder_at(now, *every_secs))
                        .bind(due.route_id)
                        .bind(due.alert.id)
                        .bind(due.next_at)
                        .bind(due.sent)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if taken == 0 {
                            continue;
                        }
                        made += insert_delivery!(tx, delivery, now);
                    }
                }
            }
            tx.commit().await?;
            Ok(made)
        })
    }

    /// How many (route, alert) pairs wait for a reminder.
    pub async fn count_reminders(&self) -> Result<i64, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM notification_reminders")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }
}
