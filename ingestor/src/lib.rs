//! The ingestor: takes events from the EVENTS stream, stores them, and escalates those at or
//! above the alert threshold.
//!
//! Guarantee: a message is acknowledged last, only after its event is committed to the
//! database and, when it is escalated, the ESCALATIONS stream has acknowledged the
//! escalation. A crash anywhere before that leaves the message unacknowledged and JetStream
//! redelivers it; the event's idempotency key (`Nats-Msg-Id`, else the body's `uid`, else
//! the stream and sequence) makes the repeat store nothing new, and escalates again what may
//! not have been escalated. A message that is not a valid event goes to `deadletter.ingest`
//! with the reason and is then acknowledged: it never stops the loop. One that fails for a
//! reason that may not pass (a panic, a corrupt row) is tried again, alone, until it has been
//! delivered `MAX_DELIVER` times, then dead-lettered; an outage is waited out, never counted.

use async_nats::jetstream;
use chrono::Utc;
use common::bus::{self, BusError, MSG_ID_HEADER, Outgoing};
use common::config::{Connections, Pulling, parse_severity};
use common::domain::{EventIn, Severity};
use common::ops;
use common::storage::{EventRecord, Storage};
use common::subjects::{self, STAGE_INGEST};
use common::worker::{self, DeadLetters, GroupStep, Settlement, Source, StepFailure};
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
    letters: DeadLetters,
    /// Test-only: panic while storing an event with this description (never in release
    /// builds), to show that a panicking step costs only its message.
    #[cfg(debug_assertions)]
    panic_on_description: Option<String>,
}

/// A message that passed validation, with what it will be stored as.
pub struct Valid {
    message: jetstream::Message,
    record: EventRecord,
}

impl Ingestor {
    /// An ingestor over an open database and a JetStream context, giving up on a message
    /// that keeps failing after the default `MAX_DELIVER` (5) deliveries.
    pub fn new(storage: Storage, js: jetstream::Context, escalate_from: Severity) -> Self {
        let letters = DeadLetters {
            js: js.clone(),
            stage: STAGE_INGEST,
            worker: "ingestor",
            max_deliver: 5,
        };
        Ingestor {
            storage,
            js,
            escalate_from,
            letters,
            #[cfg(debug_assertions)]
            panic_on_description: None,
        }
    }

    /// Gives up on a message that keeps failing after `max_deliver` deliveries.
    pub fn with_max_deliver(mut self, max_deliver: u32) -> Self {
        self.letters.max_deliver = max_deliver;
        self
    }

    /// Test-only hook (debug builds only): the step panics while storing any event whose
    /// description is `description`.
    #[cfg(debug_assertions)]
    pub fn panicking_on_description(mut self, description: &str) -> Self {
        self.panic_on_description = Some(description.to_owned());
        self
    }

    /// Handles one batch completely: stores, escalates, dead-letters, then acknowledges.
    pub async fn handle_batch(&self, batch: Vec<jetstream::Message>) {
        self.process(batch).await.apply(&self.letters).await;
    }

    /// Does everything a batch causes except settling it (dead letters, acknowledgements),
    /// and says how to settle each message. Tests call this to stop "just before the ack",
    /// as a crash would.
    pub async fn process(&self, batch: Vec<jetstream::Message>) -> Settlement {
        let mut settlement = Settlement::default();
        let mut valid = Vec::with_capacity(batch.len());
        let now = Utc::now();
        metrics::counter!(ops::EVENTS_RECEIVED).increment(batch.len() as u64);
        metrics::histogram!(ops::BATCH_SIZE, "worker" => "ingestor").record(batch.len() as f64);
        for message in batch {
            let checked =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| validate(&message, now)));
            match checked {
                Ok(Ok(record)) => valid.push(Valid { message, record }),
                Ok(Err(reason)) => settlement.dead_letter(message, reason),
                Err(panic) => settlement.fail(message, worker::panicked(panic.as_ref())),
            }
        }
        worker::process_isolating(self, valid, &mut settlement).await;
        settlement
    }

    /// Stores a group in one transaction and publishes its escalations.
    async fn store_group(&self, group: &[Valid]) -> Result<(), StepFailure> {
        #[cfg(debug_assertions)]
        if let Some(marker) = &self.panic_on_description
            && group.iter().any(|v| v.record.event.description == *marker)
        {
            panic!("test hook: storing an event described {marker:?}");
        }
        let records: Vec<EventRecord> = group.iter().map(|v| v.record.clone()).collect();
        let started = std::time::Instant::now();
        let stored = self
            .storage
            .store_events(&records, self.escalate_from)
            .await
            .map_err(|err| worker::storage_failure("event", &err))?;
        let escalations = stored.to_escalate.len();
        let store_us = started.elapsed().as_micros() as u64;
        self.escalate(stored.to_escalate)
            .await
            .map_err(|err| worker::bus_failure(&err))?;
        let escalate_us = started.elapsed().as_micros() as u64 - store_us;
        let received = group.len() as u64;
        metrics::counter!(ops::EVENTS_STORED).increment(stored.newly_stored);
        metrics::counter!(ops::EVENTS_DUPLICATE)
            .increment(received - stored.newly_stored.min(received));
        metrics::counter!(ops::EVENTS_ESCALATED).increment(escalations as u64);
        tracing::debug!(
            received,
            new = stored.newly_stored,
            escalations,
            store_us,
            escalate_us,
            "batch stored"
        );
        Ok(())
    }

    async fn escalate(&self, events: Vec<common::Event>) -> Result<(), BusError> {
        let mut outgoing = Vec::with_capacity(events.len());
        for event in &events {
            outgoing.push(Outgoing::json(
                subjects::escalation_subject(event.severity),
                event.uid.clone(),
                event,
            )?);
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

impl GroupStep for Ingestor {
    type Item = Valid;

    fn process_group(
        &self,
        group: &[Valid],
    ) -> impl Future<Output = Result<(), StepFailure>> + Send {
        self.store_group(group)
    }

    fn into_message(item: Valid) -> jetstream::Message {
        item.message
    }
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
    )
    .with_max_deliver(settings.pulling.max_deliver);
    let source = Source {
        stream: subjects::EVENTS_STREAM,
        consumer: subjects::ingestor_consumer(settings.pulling.ack_wait()),
        batch_size: usize::from(settings.pulling.batch_size),
        batches_in_flight: usize::from(settings.pulling.batches_in_flight),
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
