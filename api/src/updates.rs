//! `alerts.updated.<status>`: announcing status changes, and relaying the ones that could not
//! be announced when they were made.
//!
//! A change is committed first (with `notify_pending` set), then published; its PubAck clears
//! the mark. When NATS is down, or the api stops between the commit and the PubAck, the change
//! stays pending and [`relay_pending_updates`] publishes it later, so operators following
//! `alerts.>` hear of every change at least once. Each change has its own `Nats-Msg-Id`, so a
//! relay that overlaps a late PubAck is stored in the ALERTS stream once.

use std::time::Duration;

use chrono::Utc;
use common::bus::{self, Outgoing};
use common::domain::Alert;
use common::storage::{StatusChange, Storage};
use common::subjects;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How long a request waits for the PubAck of its change before leaving it to the relay.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the relay looks for pending changes.
const RELAY_EVERY: Duration = Duration::from_secs(2);
/// A change younger than this may still have its request publishing it; the relay leaves it
/// alone so that live subscribers do not hear of it twice.
const RELAY_AFTER: Duration = Duration::from_secs(10);
/// Changes relayed per round.
const RELAY_BATCH: i64 = 100;

/// What `alerts.updated.<status>` carries: the alert and the change.
#[derive(Debug, Serialize)]
struct AlertUpdated<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    change: &'a StatusChange,
}

/// Publishes `alerts.updated.<status>` for a committed change and, once the stream has it,
/// clears the change's pending mark. Returns whether it was published; when it was not, the
/// change stays pending for the relay and the reason is logged.
pub async fn announce(
    storage: &Storage,
    js: &async_nats::jetstream::Context,
    alert: &Alert,
    change: &StatusChange,
) -> bool {
    let subject = subjects::alert_updated_subject(change.to_status);
    let payload = AlertUpdated { alert, change };
    let message = match Outgoing::json(
        subject,
        format!("alert-{}-change-{}", alert.id, change.id),
        &payload,
    ) {
        Ok(message) => message,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode an alert update");
            return false;
        }
    };
    match tokio::time::timeout(PUBLISH_TIMEOUT, bus::publish_all(js, vec![message])).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, alert_id = alert.id, change_id = change.id,
                "alert update not published yet; the relay will retry");
            return false;
        }
        Err(_) => {
            tracing::warn!(
                alert_id = alert.id,
                change_id = change.id,
                "alert update publish timed out; the relay will retry"
            );
            return false;
        }
    }
    if let Err(err) = storage.mark_change_notified(change.id).await {
        // Published but still marked: the relay publishes it again under the same
        // Nats-Msg-Id, which the stream drops if it is within the duplicate window.
        tracing::warn!(error = %err, change_id = change.id, "cannot clear a published change's mark");
    }
    true
}

/// Publishes, every few seconds until `shutdown`, the status changes still pending (see the
/// module's notes), oldest first. A round stops at the first failure: NATS is still away.
pub async fn relay_pending_updates(state: AppState, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RELAY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while shutdown.run_until_cancelled(every.tick()).await.is_some() {
        let Ok(age) = chrono::Duration::from_std(RELAY_AFTER) else {
            return;
        };
        let pending = match state
            .storage
            .pending_change_notifications(Utc::now() - age, RELAY_BATCH)
            .await
        {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read pending alert updates");
                continue;
            }
        };
        let mut relayed = 0u64;
        for (alert, change) in &pending {
            if shutdown.is_cancelled() || !announce(&state.storage, &state.js, alert, change).await
            {
                break;
            }
            relayed += 1;
        }
        if relayed > 0 {
            metrics::counter!(common::ops::ALERT_UPDATES_RELAYED).increment(relayed);
            tracing::info!(relayed, "pending alert updates published");
        }
    }
}
