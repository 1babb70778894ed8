//! Notification delivery, in the alerter process but apart from alert creation: a slow or
//! dead receiver never delays an alert.
//!
//! Two loops:
//! - **intake** reads the ALERTS stream on its own durable consumer (`notifier`), records one
//!   delivery per matching route for each alert message, and only then acknowledges it (a
//!   redelivered message records nothing new: the pair is unique);
//! - **dispatch** makes the due reminders into deliveries ([`crate::reminders`]), claims due
//!   deliveries from the database under a lease, a few per route at a time, and attempts each
//!   in its own task: routes never wait for each other, and an attempt is cut at
//!   `NOTIFY_TIMEOUT_SECS`. Each attempt is written before it is made and completed
//!   after; a failed one is retried with back-off until `NOTIFY_RETRY_FOR_SECS`, then
//!   dead-lettered on `deadletter.notify`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::bus::{self, Outgoing};
use common::domain::{Matched, from_micros};
use common::notify::{AlertNotice, Notifier, Retry, next_attempt_at};
use common::ops;
use common::storage::{
    AttemptOutcome, AttemptResult, ClaimedDelivery, FinishedAttempt, NewDelivery, Route, Storage,
};
use common::subjects::{self, STAGE_NOTIFY};
use common::worker::{DeadLetters, Settlement};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the dispatcher looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_millis(250);
/// A lease outlives the attempt's timeout by this much, so that only a stopped alerter's
/// deliveries are taken over.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The header naming the route of a dead-lettered notification.
pub const ROUTE_HEADER: &str = "Threatmon-Route";

/// The delivery side of an alerter.
#[derive(Debug, Clone)]
pub struct Delivery {
    storage: Storage,
    notifier: Notifier,
    js: jetstream::Context,
    letters: DeadLetters,
    per_route: usize,
    wake: Arc<Notify>,
    lease: String,
}

impl Delivery {
    /// Delivery over an open database and a JetStream context, at most `per_route`
    /// attempts at once to one route.
    pub fn new(
        storage: Storage,
        js: jetstream::Context,
        notifier: Notifier,
        per_route: usize,
    ) -> Delivery {
        let letters = DeadLetters {
            js: js.clone(),
            stage: STAGE_NOTIFY,
            worker: "notifier",
            max_deliver: 5,
        };
        Delivery {
            storage,
            notifier,
            js,
            letters,
            per_route: per_route.max(1),
            wake: Arc::new(Notify::new()),
            // Identifies this process's claims.
            lease: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Records the deliveries a batch of alert messages makes, then settles the batch.
    pub async fn intake(&self, batch: Vec<jetstream::Message>) {
        self.record(batch).await.apply(&self.letters).await;
        self.wake.notify_one();
    }

    /// Everything [`Delivery::intake`] does but settling.
    pub async fn record(&self, batch: Vec<jetstream::Message>) -> Settlement {
        let mut settlement = Settlement::default();
        let routes = match self.storage.enabled_routes().await {
            Ok(routes) => routes,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the notification routes; retrying");
                settlement.retry = batch;
                return settlement;
            }
        };
        let mut deliveries = Vec::new();
        let mut recorded = Vec::new();
        for message in batch {
            let notice = match AlertNotice::from_message(message.subject.as_str(), &message.payload)
            {
                Ok(Some(notice)) => notice,
                Ok(None) => {
                    settlement.ack.push(message);
                    continue;
                }
                Err(reason) => {
                    settlement.dead_letter(message, reason);
                    continue;
                }
            };
            let Some(severity) = notice.severity() else {
                settlement.dead_letter(message, "not an alert message: no severity");
                continue;
            };
            let matched = Matched {
                severity,
                source_name: notice.source_name(),
                event_type: notice.event_type(),
                trigger: notice.trigger,
            };
            // An alert left OPEN by this message is reminded of by routes that repeat.
            let open = notice.alert.get("status").and_then(|s| s.as_str()) == Some("OPEN");
            for route in routes.iter().filter(|r| r.spec.matches(matched)) {
                deliveries.push(NewDelivery {
                    route_id: route.id,
                    alert_id: notice.alert_id(),
                    message_key: notice.message_key(),
                    trigger: notice.trigger,
                    payload: notice.stored(),
                    remind_every_secs: route.spec.repeat_every_secs.filter(|_| open),
                });
            }
            recorded.push(message);
        }
        match self
            .storage
            .record_deliveries(&deliveries, Utc::now())
            .await
        {
            Ok(_) => settlement.ack.extend(recorded),
            Err(err) if err.is_transient() => settlement.retry.extend(recorded),
            Err(err) => {
                for message in recorded {
                    settlement.fail(message, format!("recording deliveries: {err}"));
                }
            }
        }
        settlement
    }

    /// Claims and attempts due deliveries until `shutdown`; then waits a little for the
    /// attempts in flight (a lease left behind is taken over when it runs out).
    ///
    /// The attempts' outcomes are recorded here, those that ended together in one
    /// transaction, as their claims and beginnings are per route and round: a few commits
    /// for many deliveries, so that delivery leaves the database's one writer to the
    /// pipeline (each commit is a sync to disk).
    pub async fn dispatch(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut busy: HashMap<i64, usize> = HashMap::new();
        let mut attempts: JoinSet<Ended> = JoinSet::new();
        let mut last_age_report = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            if let Err(err) = crate::reminders::make_due(&this.storage, Utc::now()).await {
                tracing::warn!(error = %err, "cannot make the due reminders; trying again");
            }
            if let Err(err) = this.claim_round(&mut busy, &mut attempts).await {
                tracing::warn!(error = %err, "cannot claim deliveries; trying again");
            }
            if last_age_report.elapsed() >= Duration::from_secs(5) {
                last_age_report = tokio::time::Instant::now();
                this.report_queue_age().await;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = this.wake.notified() => {}
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    let mut ended: Vec<Ended> = done.into_iter().collect();
                    while let Some(done) = attempts.try_join_next() {
                        ended.extend(done);
                    }
                    this.record_ended(&mut busy, ended).await;
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
        let grace = tokio::time::sleep(common::worker::STOP_GRACE);
        tokio::pin!(grace);
        while !attempts.is_empty() {
            tokio::select! {
                () = &mut grace => break,
                Some(done) = attempts.join_next() => {
                    this.record_ended(&mut busy, done.into_iter().collect()).await;
                }
            }
        }
        attempts.abort_all();
    }

    /// Records the outcomes of attempts that ended, and frees their routes' places.
    async fn record_ended(&self, busy: &mut HashMap<i64, usize>, ended: Vec<Ended>) {
        let finished: Vec<FinishedAttempt> = ended.iter().map(|e| e.finished.clone()).collect();
        if let Err(err) = self.storage.finish_attempts(&finished, Utc::now()).await {
            // The attempts stay in flight; their deliveries are claimed again after the lease.
            tracing::warn!(error = %err, attempts = finished.len(), "cannot record attempts' outcomes");
        }
        for e in &ended {
            release(busy, e.route_id);
        }
    }

    async fn claim_round(
        self: &Arc<Self>,
        busy: &mut HashMap<i64, usize>,
        attempts: &mut JoinSet<Ended>,
    ) -> Result<(), common::storage::StorageError> {
        let now = Utc::now();
        let due = self.storage.routes_with_due_deliveries(now).await?;
        if due.is_empty() {
            return Ok(());
        }
        let routes: HashMap<i64, Route> = self
            .storage
            .enabled_routes()
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let lease_until = now
            + chrono::Duration::from_std(
                Duration::from_secs(self.notifier.settings().notify_timeout_secs) + LEASE_MARGIN,
            )
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        for (route_id, waiting) in due {
            let in_flight = busy.get(&route_id).copied().unwrap_or(0);
            let free = self.per_route.saturating_sub(in_flight);
            if free == 0 {
                continue;
            }
            let claimed = self
                .storage
                .claim_deliveries(
                    route_id,
                    waiting.min(free as i64),
                    &self.lease,
                    lease_until,
                    now,
                )
                .await?;
            let Some(route) = routes.get(&route_id).cloned() else {
                for delivery in claimed {
                    self.storage
                        .cancel_delivery(delivery.id, "the route is disabled or deleted", now)
                        .await?;
                }
                continue;
            };
            // Written before any is attempted; if this fails, the leases run out and the
            // deliveries are claimed again.
            let attempt_ids = self
                .storage
                .begin_attempts(&claimed, &route.spec.name, Utc::now())
                .await?;
            for (delivery, attempt_id) in claimed.into_iter().zip(attempt_ids) {
                *busy.entry(route_id).or_default() += 1;
                let this = self.clone();
                let route = route.clone();
                attempts.spawn(async move { this.attempt(&route, delivery, attempt_id).await });
            }
        }
        Ok(())
    }

    /// One attempt at a claimed delivery, its beginning recorded: made, and its outcome
    /// judged (dead-lettered when it failed for good) for the dispatcher to record.
    async fn attempt(&self, route: &Route, delivery: ClaimedDelivery, attempt_id: i64) -> Ended {
        let webhook_id = delivery.webhook_id();
        let (result, notice) = match AlertNotice::from_stored(&delivery.payload) {
            Ok(notice) => {
                let sent = self.notifier.send(&route.spec, &notice, &webhook_id).await;
                (self.judge(&delivery, sent), Some(notice))
            }
            Err(reason) => (
                AttemptResult {
                    outcome: AttemptOutcome::Failed,
                    status_code: None,
                    reply: None,
                    error: Some(format!("the stored alert message is unreadable: {reason}")),
                    latency_us: 0,
                    next_attempt_at: None,
                },
                None,
            ),
        };
        let mut result = result;
        if result.outcome == AttemptOutcome::Failed
            && let Err(err) = self
                .dead_letter(route, &delivery, notice.as_ref(), &result)
                .await
        {
            // Kept pending: dead-lettered (or delivered) at a later attempt.
            tracing::warn!(error = %err, delivery = delivery.id, "cannot dead-letter a notification");
            result.outcome = AttemptOutcome::Retrying;
            result.next_attempt_at = Some(Utc::now() + chrono::Duration::seconds(30));
        }
        let outcome = result.outcome;
        // Errors name no URL and no secret (see `Notifier::send`).
        match outcome {
            AttemptOutcome::Retrying => tracing::info!(
                route = %route.spec.name, delivery = delivery.id, attempt = delivery.attempts + 1,
                status = ?result.status_code, error = ?result.error,
                next_attempt_at = ?result.next_attempt_at, "notification attempt failed; retrying"
            ),
            AttemptOutcome::Failed => tracing::warn!(
                route = %route.spec.name, delivery = delivery.id, attempt = delivery.attempts + 1,
                status = ?result.status_code, error = ?result.error,
                "notification failed for good; dead-lettered on deadletter.notify"
            ),
            _ => {}
        }
        metrics::counter!(ops::NOTIFY_ATTEMPTS, "route" => route.spec.name.clone(),
            "outcome" => outcome_name(outcome))
        .increment(1);
        metrics::histogram!(ops::NOTIFY_LATENCY, "kind" => route.spec.kind.as_str())
            .record(result.latency_us as f64 / 1e6);
        if matches!(outcome, AttemptOutcome::Delivered | AttemptOutcome::Failed) {
            metrics::counter!(ops::NOTIFY_DELIVERIES, "route" => route.spec.name.clone(),
                "outcome" => outcome_name(outcome))
            .increment(1);
        }
        Ended {
            route_id: route.id,
            finished: FinishedAttempt {
                delivery_id: delivery.id,
                attempt_id,
                result,
            },
        }
    }

    /// What an attempt's answer means for its delivery.
    fn judge(&self, delivery: &ClaimedDelivery, sent: common::notify::Sent) -> AttemptResult {
        let latency_us = i64::try_from(sent.latency.as_micros()).unwrap_or(i64::MAX);
        let now = Utc::now();
        let (outcome, next) = if sent.delivered {
            (AttemptOutcome::Delivered, None)
        } else {
            let attempts = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
            let recorded: DateTime<Utc> = from_micros(delivery.created_at);
            match sent.retry {
                Retry::Never => (AttemptOutcome::Failed, None),
                retry => {
                    match next_attempt_at(self.notifier.settings(), attempts, retry, recorded, now)
                    {
                        Some(at) => (AttemptOutcome::Retrying, Some(at)),
                        None => (AttemptOutcome::Failed, None),
                    }
                }
            }
        };
        AttemptResult {
            outcome,
            status_code: sent.status_code,
            reply: sent.reply,
            error: sent.error,
            latency_us,
            next_attempt_at: next,
        }
    }

    /// `deadletter.notify`: the alert message as its body, the route and the last error in
    /// headers.
    async fn dead_letter(
        &self,
        route: &Route,
        delivery: &ClaimedDelivery,
        notice: Option<&AlertNotice>,
        result: &AttemptResult,
    ) -> Result<(), bus::BusError> {
        let payload = match notice {
            Some(notice) => {
                let mut message = notice.alert.clone();
                if let (Some(object), Some(change)) = (message.as_object_mut(), &notice.change) {
                    object.insert("change".to_owned(), change.clone());
                }
                Bytes::from(message.to_string())
            }
            None => Bytes::from(delivery.payload.clone()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            bus::REASON_HEADER,
            bus::header_safe(result.error.as_deref().unwrap_or("failed")),
        );
        headers.insert(
            ROUTE_HEADER,
            bus::header_safe(&format!("{} ({})", route.spec.name, route.id)),
        );
        let outgoing = Outgoing {
            subject: subjects::deadletter_subject(STAGE_NOTIFY),
            msg_id: format!("notify:{}", delivery.webhook_id()),
            payload,
            headers,
        };
        bus::publish_all(&self.js, vec![outgoing]).await?;
        metrics::counter!(ops::DEADLETTERS, "stage" => STAGE_NOTIFY).increment(1);
        Ok(())
    }

    async fn report_queue_age(&self) {
        match self.storage.oldest_pending_delivery().await {
            Ok(oldest) => {
                let age = oldest.map_or(0.0, |at| {
                    (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
                });
                metrics::gauge!(ops::NOTIFY_QUEUE_AGE).set(age);
            }
            Err(err) => tracing::debug!(error = %err, "cannot read the delivery queue's age"),
        }
    }
}

/// An attempt that ended, for the dispatcher to record.
#[derive(Debug)]
struct Ended {
    route_id: i64,
    finished: FinishedAttempt,
}

fn release(busy: &mut HashMap<i64, usize>, route_id: i64) {
    if let Some(n) = busy.get_mut(&route_id) {
        *n = n.saturating_sub(1);
    }
}

fn outcome_name(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retrying => "retrying",
        AttemptOutcome::Failed => "failed",
        AttemptOutcome::InFlight => "in_flight",
        AttemptOutcome::Interrupted => "interrupted",
    }
}
