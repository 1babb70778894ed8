//! The alerter: turns escalations into alerts and notifies operators.
//!
//! Guarantee: an escalation is acknowledged last, only after its alert is committed and the
//! ALERTS stream has acknowledged the `alerts.created.<severity>` notification. An event has
//! exactly one alert (the database's unique `event_id`), however often its escalation is
//! delivered; a redelivery notifies again (same `Nats-Msg-Id`, the alert's id), so a crash
//! between commit and notification still notifies. A message that is not an escalation goes
//! to `deadletter.alert` with the reason and is acknowledged.

use async_nats::jetstream;
use chrono::Utc;
use common::bus::{self, BusError, Outgoing};
use common::config::{Connections, Pulling};
use common::domain::{Alert, Event};
use common::ops;
use common::storage::{Storage, StorageError};
use common::subjects::{self, STAGE_ALERT};
use common::worker::{self, Settlement, Source};
use tokio_util::sync::CancellationToken;

/// The alerter's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "alerter",
    version,
    about = "Creates alerts for escalated events and notifies operators"
)]
pub struct Settings {
    /// Broker and database.
    #[command(flatten)]
    pub connections: Connections,
    /// Batching and redelivery.
    #[command(flatten)]
    pub pulling: Pulling,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`off` to disable).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102",
          value_parser = common::ops::parse_listen_addr)]
    pub metrics_addr: common::ops::ListenAddr,
}

pub use common::worker::StartError;

/// One alerter: the step that turns a batch of escalations into notified alerts.
#[derive(Debug, Clone)]
pub struct Alerter {
    storage: Storage,
    js: jetstream::Context,
}

struct Escalation {
    message: jetstream::Message,
    event: Event,
}

impl Alerter {
    /// An alerter over an open database and a JetStream context.
    pub fn new(storage: Storage, js: jetstream::Context) -> Self {
        Alerter { storage, js }
    }

    /// Handles one batch completely: creates, notifies, dead-letters, then acknowledges.
    pub async fn handle_batch(&self, batch: Vec<jetstream::Message>) {
        self.process(batch).await.apply("alerter").await;
    }

    /// Does everything a batch causes except acknowledging it, and says how to settle each
    /// message. Tests call this to stop "just before the ack", as a crash would.
    pub async fn process(&self, batch: Vec<jetstream::Message>) -> Settlement {
        let mut settlement = Settlement::default();
        let mut escalations = Vec::with_capacity(batch.len());
        metrics::counter!(ops::ESCALATIONS_RECEIVED).increment(batch.len() as u64);
        metrics::histogram!(ops::BATCH_SIZE, "worker" => "alerter").record(batch.len() as f64);
        for message in batch {
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(event) => escalations.push(Escalation { message, event }),
                Err(err) => {
                    let reason = format!("not an escalated event: {err}");
                    self.dead_letter(message, &reason, &mut settlement).await;
                }
            }
        }
        self.create_and_notify(escalations, &mut settlement).await;
        settlement
    }

    async fn dead_letter(
        &self,
        message: jetstream::Message,
        reason: &str,
        settlement: &mut Settlement,
    ) {
        tracing::warn!(subject = %message.subject, reason, "dead-lettering a message");
        match bus::dead_letter(&self.js, STAGE_ALERT, &message, reason).await {
            Ok(()) => {
                metrics::counter!(ops::DEADLETTERS, "stage" => STAGE_ALERT).increment(1);
                settlement.ack.push(message);
            }
            Err(err) => {
                tracing::warn!(error = %err, "dead letter not acknowledged; retrying later");
                settlement.retry.push(message);
            }
        }
    }

    async fn create_and_notify(&self, escalations: Vec<Escalation>, settlement: &mut Settlement) {
        // Usually one pass; when the database refuses the batch (say, an escalation of an
        // event it does not hold), each is tried alone so that only the culprit is
        // dead-lettered.
        let mut groups = vec![escalations];
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            let events: Vec<Event> = group.iter().map(|e| e.event.clone()).collect();
            match self.storage.create_alerts(&events, Utc::now()).await {
                Ok(created) => match self.notify(&created.alerts).await {
                    Ok(()) => {
                        metrics::counter!(ops::ALERTS_CREATED).increment(created.newly_created);
                        metrics::counter!(ops::ALERT_NOTIFICATIONS)
                            .increment(created.alerts.len() as u64);
                        tracing::debug!(
                            escalations = group.len(),
                            new = created.newly_created,
                            "alerts created"
                        );
                        settlement.ack.extend(group.into_iter().map(|e| e.message));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "notification not acknowledged; retrying the batch later");
                        settlement
                            .retry
                            .extend(group.into_iter().map(|e| e.message));
                    }
                },
                Err(StorageError::Rejected(err)) if group.len() == 1 => {
                    let reason = format!("the database refused the alert: {err}");
                    for e in group {
                        self.dead_letter(e.message, &reason, settlement).await;
                    }
                }
                Err(StorageError::Rejected(_)) => {
                    groups.extend(group.into_iter().map(|e| vec![e]));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "creating alerts failed; retrying the batch later");
                    settlement
                        .retry
                        .extend(group.into_iter().map(|e| e.message));
                }
            }
        }
    }

    async fn notify(&self, alerts: &[Alert]) -> Result<(), BusError> {
        let mut outgoing = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let subject = subjects::alert_created_subject(alert.severity);
            let message =
                Outgoing::json(subject.clone(), alert.id.to_string(), alert).map_err(|e| {
                    BusError::Publish {
                        subject,
                        reason: e.to_string(),
                    }
                })?;
            outgoing.push(message);
        }
        bus::publish_all(&self.js, outgoing).await?;
        Ok(())
    }
}

/// Connects to the database and NATS, declares the streams, and alerts until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let connected = worker::connect("alerter", &settings.connections).await?;
    tracing::info!(
        database = %common::storage::redact_url(&settings.connections.database_url),
        "alerter started"
    );
    let alerter = Alerter::new(connected.storage.clone(), connected.js.clone());
    let source = Source {
        stream: subjects::ESCALATIONS_STREAM,
        consumer: subjects::alerter_consumer(settings.pulling.ack_wait()),
        batch_size: usize::from(settings.pulling.batch_size),
    };
    worker::run_worker(
        "alerter",
        connected,
        source,
        settings.metrics_addr.0,
        shutdown,
        |batch| alerter.handle_batch(batch),
    )
    .await
}
