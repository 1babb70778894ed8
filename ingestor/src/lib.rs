//! The ingestor: takes events from the EVENTS stream, stores them, and escalates those at or
//! above the alert threshold.
//!
//! Guarantee: a message is acknowledged last, only after its event is committed to the
//! database and, when it is escalated, the ESCALATIONS stream has acknowledged the
//! escalation. A crash anywhere before that leaves the message unacknowledged and JetStream
//! redelivers it; the event's idempotency key (`Nats-Msg-Id`, else the body's `uid`, else
//! the stream and sequence) makes the repeat store nothing new, and escalates again what may
//! not have been escalated. A message that is not a valid event goes to `deadletter.ingest`
//! with the reason and is then acknowledged: it never stops the loop.

use async_nats::jetstream;
use chrono::Utc;
use common::bus::{self, BusError, MSG_ID_HEADER, Outgoing};
use common::config::{Connections, Pulling, parse_severity};
use common::domain::{EventIn, Severity};
use common::ops;
use common::storage::{EventRecord, Storage, StorageError};
use common::subjects::{self, STAGE_INGEST};
use common::worker::{self, Settlement, Source};
use tokio_util::sync::CancellationToken;

/// The ingestor's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ingestor",
    version,
    about = "Stores events from NATS and escalates HIGH and CRITICAL ones"
)]
pub struct Settings {
    /// Broker and database.
    #[command(flatten)]
    pub connections: Connections,
    /// Batching and redelivery.
    #[command(flatten)]
    pub pulling: Pulling,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`off` to disable).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9101",
          value_parser = common::ops::parse_listen_addr)]
    pub metrics_addr: common::ops::ListenAddr,
    /// Lowest severity that raises an alert.
    #[arg(long, env = "ALERT_MIN_SEVERITY", default_value = "HIGH", value_parser = parse_severity)]
    pub alert_min_severity: Severity,
}

pub use common::worker::StartError;

/// One ingestor: the step that turns a batch of messages into stored events.
#[derive(Debug, Clone)]
pub struct Ingestor {
    storage: Storage,
    js: jetstream::Context,
    escalate_from: Severity,
}

/// A message that passed validation, with what it will be stored as.
struct Valid {
    message: jetstream::Message,
    record: EventRecord,
}

impl Ingestor {
    /// An ingestor over an open database and a JetStream context.
    pub fn new(storage: Storage, js: jetstream::Context, escalate_from: Severity) -> Self {
        Ingestor {
            storage,
            js,
            escalate_from,
        }
    }

    /// Handles one batch completely: stores, escalates, dead-letters, then acknowledges.
    pub async fn handle_batch(&self, batch: Vec<jetstream::Message>) {
        self.process(batch).await.apply("ingestor").await;
    }

    /// Does everything a batch causes except acknowledging it, and says how to settle each
    /// message. Tests call this to stop "just before the ack", as a crash would.
    pub async fn process(&self, batch: Vec<jetstream::Message>) -> Settlement {
        let mut settlement = Settlement::default();
        let mut valid = Vec::with_capacity(batch.len());
        let now = Utc::now();
        metrics::counter!(ops::EVENTS_RECEIVED).increment(batch.len() as u64);
        metrics::histogram!(ops::BATCH_SIZE, "worker" => "ingestor").record(batch.len() as f64);
        for message in batch {
            match validate(&message, now) {
                Ok(record) => valid.push(Valid { message, record }),
                Err(reason) => self.dead_letter(message, &reason, &mut settlement).await,
            }
        }
        self.store_and_escalate(valid, &mut settlement).await;
        settlement
    }

    async fn dead_letter(
        &self,
        message: jetstream::Message,
        reason: &str,
        settlement: &mut Settlement,
    ) {
        tracing::warn!(subject = %message.subject, reason, "dead-lettering a message");
        match bus::dead_letter(&self.js, STAGE_INGEST, &message, reason).await {
            Ok(()) => {
                metrics::counter!(ops::DEADLETTERS, "stage" => STAGE_INGEST).increment(1);
                settlement.ack.push(message);
            }
            Err(err) => {
                tracing::warn!(error = %err, "dead letter not acknowledged; retrying later");
                settlement.retry.push(message);
            }
        }
    }

    async fn store_and_escalate(&self, valid: Vec<Valid>, settlement: &mut Settlement) {
        // Usually one pass over the whole batch. When the database refuses the batch (a value
        // it cannot hold), each event is tried alone so that only the culprit is
        // dead-lettered.
        let mut groups = vec![valid];
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            let records: Vec<EventRecord> = group.iter().map(|v| v.record.clone()).collect();
            match self
                .storage
                .store_events(&records, self.escalate_from)
                .await
            {
                Ok(stored) => {
                    let escalations = stored.to_escalate.len();
                    match self.escalate(stored.to_escalate).await {
                        Ok(()) => {
                            metrics::counter!(ops::EVENTS_STORED).increment(stored.newly_stored);
                            metrics::counter!(ops::EVENTS_DUPLICATE).increment(
                                group.len() as u64 - stored.newly_stored.min(group.len() as u64),
                            );
                            metrics::counter!(ops::EVENTS_ESCALATED).increment(escalations as u64);
                            tracing::debug!(
                                received = group.len(),
                                new = stored.newly_stored,
                                escalations,
                                "batch stored"
                            );
                            settlement.ack.extend(group.into_iter().map(|v| v.message));
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "escalation not acknowledged; retrying the batch later");
                            settlement
                                .retry
                                .extend(group.into_iter().map(|v| v.message));
                        }
                    }
                }
                Err(StorageError::Rejected(err)) if group.len() == 1 => {
                    let reason = format!("the database refused the event: {err}");
                    for v in group {
                        self.dead_letter(v.message, &reason, settlement).await;
                    }
                }
                Err(StorageError::Rejected(_)) => {
                    groups.extend(group.into_iter().map(|v| vec![v]));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "storing failed; retrying the batch later");
                    settlement
                        .retry
                        .extend(group.into_iter().map(|v| v.message));
                }
            }
        }
    }

    async fn escalate(&self, events: Vec<common::Event>) -> Result<(), BusError> {
        let mut outgoing = Vec::with_capacity(events.len());
        for event in &events {
            let message = Outgoing::json(
                subjects::escalation_subject(event.severity),
                event.uid.clone(),
                event,
            )
            .map_err(|e| BusError::Publish {
                subject: subjects::escalation_subject(event.severity),
                reason: e.to_string(),
            })?;
            outgoing.push(message);
        }
        bus::publish_all(&self.js, outgoing).await?;
        Ok(())
    }
}

/// Turns a message into the record to store, or the reason it cannot be one.
fn validate(
    message: &jetstream::Message,
    now: chrono::DateTime<Utc>,
) -> Result<EventRecord, String> {
    let event = EventIn::parse(&message.payload).map_err(|rejection| rejection.to_string())?;
    let uid = match bus::header(message, MSG_ID_HEADER) {
        Some(id) => {
            common::domain::check_idempotency_key(id)
                .map_err(|e| format!("invalid {MSG_ID_HEADER} header: {e}"))?;
            id.to_owned()
        }
        None => match &event.uid {
            Some(uid) => uid.clone(),
            // No key from the sensor: the message's place in the stream is stable across
            // redeliveries, so it serves as one.
            None => {
                let info = message
                    .info()
                    .map_err(|e| format!("no stream sequence on the message: {e}"))?;
                format!("{}:{}", info.stream, info.stream_sequence)
            }
        },
    };
    Ok(EventRecord {
        uid,
        event,
        created_at: now,
    })
}

/// Connects to the database and NATS, declares the streams, and ingests until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let connected = worker::connect("ingestor", &settings.connections).await?;
    tracing::info!(
        database = %common::storage::redact_url(&settings.connections.database_url),
        escalate_from = %settings.alert_min_severity,
        "ingestor started"
    );
    let ingestor = Ingestor::new(
        connected.storage.clone(),
        connected.js.clone(),
        settings.alert_min_severity,
    );
    let source = Source {
        stream: subjects::EVENTS_STREAM,
        consumer: subjects::ingestor_consumer(settings.pulling.ack_wait()),
        batch_size: usize::from(settings.pulling.batch_size),
    };
    worker::run_worker(
        "ingestor",
        connected,
        source,
        settings.metrics_addr.0,
        shutdown,
        |batch| ingestor.handle_batch(batch),
    )
    .await
}
