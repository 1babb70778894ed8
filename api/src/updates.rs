//! `alerts.updated.<status>`: announcing status changes, and relaying the ones that could not
//! be announced when they were made.
//!
//! A change is committed first (with `notify_pending` set), then published; its PubAck clears
//! the mark. When NATS is down, or the api stops between the commit and the PubAck, the change
//! stays pending and [`relay_pending_updates`] publishes it later, so operators following
//! `alerts.>` hear of every change at least once. Each change has its own `Nats-Msg-Id`, so a
//! relay that overlaps a late PubAck is stored in the ALERTS stream once.
//!
//! A request does not wait for the mark to be cleared: it hands the announced change to
//! [`PublishedChanges`], and the relay clears every handed-over mark in one transaction. On
//! SQLite each PATCH otherwise paid two durable commits on the one write connection, and 16
//! concurrent PATCHes queued behind each other's second commit. A mark left set by a stop in
//! between only makes the relay publish the change again, under the same `Nats-Msg-Id`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::bus;
use common::domain::Alert;
use common::storage::{StatusChange, Storage};
use tokio::sync::Notify;
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

/// Changes whose `alerts.updated.*` the stream has acknowledged and whose pending mark is
/// still set: handed over by [`announce`], cleared together by [`relay_pending_updates`].
#[derive(Debug, Clone, Default)]
pub struct PublishedChanges(Arc<(Mutex<Vec<i64>>, Notify)>);

impl PublishedChanges {
    /// Hands over a change whose announcement the stream has.
    fn push(&self, change_id: i64) {
        let (ids, added) = &*self.0;
        ids.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change_id);
        added.notify_one();
    }

    /// Waits until a change has been handed over (at once if one was since the last take).
    async fn added(&self) {
        self.0.1.notified().await;
    }

    /// Every change handed over so far.
    fn take(&self) -> Vec<i64> {
        std::mem::take(&mut *self.0.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Clears the pending marks of every change handed over so far, in one transaction.
    async fn clear(&self, storage: &Storage) {
        let ids = self.take();
        if ids.is_empty() {
            return;
        }
        if let Err(err) = storage.mark_changes_notified(&ids).await {
            // Published but still marked: the relay publishes them again under the same
            // Nats-Msg-Id, which the stream drops if it is within the duplicate window.
            tracing::warn!(error = %err, changes = ids.len(), "cannot clear published changes' marks");
        }
    }
}

/// Publishes `alerts.updated.<status>` for a committed change and, once the stream has it,
/// hands the change to `published` to have its pending mark cleared. Returns whether it was
/// published; when it was not, the change stays pending for the relay and the reason is
/// logged.
pub async fn announce(
    js: &async_nats::jetstream::Context,
    published: &PublishedChanges,
    alert: &Alert,
    change: &StatusChange,
) -> bool {
    let message = match bus::alert_updated_message(alert, change) {
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
    published.push(change.id);
    true
}

/// [`announce`] for many changes (a bulk action), all in flight at once; what fails to be
/// published stays pending for the relay.
pub async fn announce_all(
    js: &async_nats::jetstream::Context,
    published: &PublishedChanges,
    changes: &[(Alert, StatusChange)],
) {
    let mut messages = Vec::with_capacity(changes.len());
    for (alert, change) in changes {
        match bus::alert_updated_message(alert, change) {
            Ok(message) => messages.push(message),
            Err(err) => tracing::error!(error = %err, "cannot encode an alert update"),
        }
    }
    let timeout = PUBLISH_TIMEOUT * 4;
    match tokio::time::timeout(timeout, bus::publish_all(js, messages)).await {
        Ok(Ok(_)) => {
            for (_, change) in changes {
                published.push(change.id);
            }
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, changes = changes.len(),
                "bulk alert updates not all published yet; the relay will retry");
        }
        Err(_) => {
            tracing::warn!(
                changes = changes.len(),
                "bulk alert updates publish timed out; the relay will retry"
            );
        }
    }
}

/// Until `shutdown`: clears the marks of announced changes as they are handed over, and
/// publishes, every few seconds, the status changes still pending (see the module's notes),
/// oldest first. A round stops at the first failure: NATS is still away.
pub async fn relay_pending_updates(state: AppState, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RELAY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = state.published.added() => {
                state.published.clear(&state.storage).await;
                continue;
            }
            _ = every.tick() => {}
        }
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
            if shutdown.is_cancelled()
                || !announce(&state.js, &state.published, alert, change).await
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
    // What was handed over before the stop is cleared too.
    state.published.clear(&state.storage).await;
}
