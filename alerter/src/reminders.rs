//! Reminders of alerts that stay OPEN (a route's `repeat_every_secs`): the dispatcher makes
//! the due ones into deliveries, which it then attempts like any other.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::domain::{AlertStatus, Trigger};
use common::notify::AlertNotice;
use common::storage::{DueReminder, NewDelivery, ReminderDecision, Route, Storage, StorageError};

/// How many due reminders one round of the dispatcher takes.
const REMINDERS_A_ROUND: i64 = 200;

/// Makes the reminders due at `now` into deliveries (or drops those no longer wanted).
/// Returns how many were made.
pub async fn make_due(storage: &Storage, now: DateTime<Utc>) -> Result<u64, StorageError> {
    let due = storage.due_reminders(now, REMINDERS_A_ROUND).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let routes: HashMap<i64, Route> = storage
        .enabled_routes()
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let decisions: Vec<ReminderDecision> =
        due.into_iter().map(|due| decide(due, &routes)).collect();
    storage.record_reminders(&decisions, now).await
}

/// A reminder is made while the alert is OPEN and its route (enabled) still repeats and
/// covers the alert as it is now.
fn decide(due: DueReminder, routes: &HashMap<i64, Route>) -> ReminderDecision {
    let alert = &due.alert;
    let every = routes.get(&due.route_id).and_then(|route| {
        let spec = &route.spec;
        let wanted = alert.status == AlertStatus::Open
            && spec.covers(alert.severity, &alert.source_name, &alert.event_type);
        spec.repeat_every_secs.filter(|_| wanted)
    });
    let (Some(every_secs), Ok(alert_json)) = (every, serde_json::to_value(alert)) else {
        return ReminderDecision::Drop(due);
    };
    let delivery = NewDelivery {
        route_id: due.route_id,
        alert_id: Some(alert.id),
        message_key: due.message_key(),
        trigger: Trigger::Reminder,
        payload: AlertNotice::reminder(alert_json).stored(),
        remind_every_secs: None,
    };
    ReminderDecision::Send {
        due,
        delivery,
        every_secs,
    }
}
