//! The loop every worker runs: pull batches from a durable consumer and hand them to a step
//! function, until told to stop.
//!
//! The step owns acknowledgement. This loop only fetches, survives broker restarts (it
//! declares the consumer again and resumes), and stops *between* batches: a batch in hand is
//! finished; messages pulled but not yet handed over stay unacknowledged and JetStream
//! redelivers them after the consumer's `ack_wait`, so a stop anywhere loses nothing.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, BusError};
use crate::config::Connections;
use crate::ops::{self, Readiness};
use crate::storage::{Storage, StorageError};
use crate::subjects;
use crate::telemetry;

/// Where a worker reads from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The stream.
    pub stream: &'static str,
    /// The durable consumer, as declared in [`crate::subjects`].
    pub consumer: pull::Config,
    /// Most messages handed to one step.
    pub batch_size: usize,
    /// Steps running at once (each on its own batch); at least 1.
    pub batches_in_flight: usize,
}

/// The wait between attempts to reach a broker that is gone, growing to a cap.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(3);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Waits, unless told to stop first; returns false when told to stop.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        shutdown
            .run_until_cancelled(tokio::time::sleep(delay))
            .await
            .is_some()
    }
}

/// Makes `source`'s durable consumer (or updates it: on nats-server 2.9 creating an existing
/// durable with changed settings does), for a worker that must have it before it starts:
/// one that takes only new messages misses those published before it exists.
pub async fn declare_consumer(
    js: &jetstream::Context,
    source: &Source,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let stream = js
        .get_stream(source.stream)
        .await
        .map_err(|e| BusError::setup(format!("stream {}", source.stream), e))?;
    stream
        .create_consumer(source.consumer.clone())
        .await
        .map_err(|e| BusError::setup(format!("consumer on {}", source.stream), e))
}

async fn open(
    js: &jetstream::Context,
    source: &Source,
) -> Result<jetstream::consumer::pull::Stream, BusError> {
    declare_consumer(js, source)
        .await?
        .stream()
        // Several batches outstanding, so a full batch is buffered while the last one is
        // being stored: with only one, batches come out a fraction of the size.
        .max_messages_per_batch(source.batch_size.saturating_mul(4))
        .expires(Duration::from_secs(10))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| BusError::setup(format!("pulling from {}", source.stream), e))
}

/// Runs `step` on each batch from `source` until `shutdown` is cancelled, with up to
/// `source.batches_in_flight` steps at once. Returns once the batches in hand are finished.
/// `ready` is true while pulling.
///
/// Several steps at once, so that a worker's database and broker work overlap: while one
/// batch waits for its PubAcks and acknowledgements, the next one's transaction runs. Each
/// step still settles its own messages only after its own work is done, so the guarantee
/// (acknowledged last) holds per message whatever the order the steps finish in.
pub async fn run_batches<F, Fut>(
    js: jetstream::Context,
    source: Source,
    ready: Readiness,
    shutdown: CancellationToken,
    mut step: F,
) where
    F: FnMut(Vec<jetstream::Message>) -> Fut,
    Fut: Future<Output = ()>,
{
    let most_in_flight = source.batches_in_flight.max(1);
    let mut backoff = Backoff::new();
    'connect: while !shutdown.is_cancelled() {
        let messages = match open(&js, &source).await {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %telemetry::error_chain(&err), "cannot pull yet; retrying");
                if !backoff.wait(&shutdown).await {
                    break;
                }
                continue;
            }
        };
        tracing::info!(stream = source.stream, "pulling");
        ready.set(true);
        let mut batches = messages.ready_chunks(source.batch_size);
        let mut in_flight = FuturesUnordered::new();
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    finish(&mut in_flight, &shutdown).await;
                    break 'connect;
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                // Unconstrained: tokio's cooperative budget would end each chunk after 128
                // messages however many are waiting, capping batches far below batch_size.
                next = tokio::task::unconstrained(batches.next()),
                    if in_flight.len() < most_in_flight => next,
            };
            let Some(items) = next else {
                tracing::warn!(stream = source.stream, "message stream ended; reopening");
                break;
            };
            let mut batch = Vec::with_capacity(items.len());
            let mut failure = None;
            for item in items {
                match item {
                    Ok(message) => batch.push(message),
                    Err(err) => failure = Some(err),
                }
            }
            if !batch.is_empty() {
                backoff.reset();
                in_flight.push(run_step(source.stream, step(batch)));
            }
            if let Some(err) = failure {
                // Missed heartbeats, a server restart, a deleted consumer: start over.
                tracing::warn!(stream = source.stream, error = %err, "pulling failed; reopening");
                break;
            }
        }
        finish(&mut in_flight, &shutdown).await;
        ready.set(false);
        if !backoff.wait(&shutdown).await {
            break;
        }
    }
    ready.set(false);
    tracing::info!(stream = source.stream, "stopped pulling");
}

/// One step on one batch, timed. The steps catch panics around their own work; this is the
/// last line: a batch whose step panicked here is redelivered after ack_wait.
async fn run_step(stream: &'static str, step: impl Future<Output = ()>) {
    let started = std::time::Instant::now();
    if let Err(panic) = catching_panics(step).await {
        tracing::error!(
            stream,
            panic,
            "a step panicked; its batch will be redelivered"
        );
    }
    tracing::debug!(took_us = started.elapsed().as_micros() as u64, "batch done");
}

/// How long a stopping worker waits for the steps in hand to finish. A step still running
/// then is dropped where it stands, as a kill would stop it: its transaction rolls back or
/// has committed, its messages come back after `ack_wait`, and every stage absorbs a
/// redelivery. Without a bound, a worker told to stop while the broker was gone waited for
/// the broker for ever: its acknowledgements filled the client's queue, which only a
/// connection drains.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Waits for every step in hand to finish; once `shutdown` is cancelled, for at most
/// [`STOP_GRACE`] more.
async fn finish<F: Future<Output = ()>>(
    in_flight: &mut FuturesUnordered<F>,
    shutdown: &CancellationToken,
) {
    let unsettled = {
        let all_done = async { while in_flight.next().await.is_some() {} };
        tokio::pin!(all_done);
        tokio::select! {
            () = &mut all_done => return,
            () = shutdown.cancelled() => {}
        }
        tokio::time::timeout(STOP_GRACE, all_done).await.is_err()
    };
    if unsettled {
        tracing::warn!(
            batches = in_flight.len(),
            "stopping with batches unsettled; they will be redelivered"
        );
    }
}

/// Reports a durable consumer's backlog as gauges every few seconds, until `shutdown`.
pub async fn report_lag(
    js: jetstream::Context,
    stream: &'static str,
    consumer: String,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    while shutdown.run_until_cancelled(every.tick()).await.is_some() {
        let info = async {
            let stream = js.get_stream(stream).await.ok()?;
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(&consumer).await.ok()?;
            consumer.info().await.ok().cloned()
        };
        if let Some(info) = info.await {
            let labels = [("consumer", consumer.clone())];
            metrics::gauge!(ops::CONSUMER_PENDING, &labels).set(info.num_pending as f64);
            metrics::gauge!(ops::CONSUMER_ACK_PENDING, &labels).set(info.num_ack_pending as f64);
        }
    }
}

/// How a step left each message of its batch: acknowledged, handed back to JetStream for a
/// later attempt, or dead-lettered.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Done: everything it caused is committed and published.
    pub ack: Vec<jetstream::Message>,
    /// Not done for a reason that may pass (database or broker unavailable): redeliver later,
    /// however many times it takes.
    pub retry: Vec<jetstream::Message>,
    /// Not done for a reason that may not pass (a corrupt row, an unencodable message, a
    /// panic), with that reason: redelivered until it has been delivered `MAX_DELIVER` times,
    /// then dead-lettered.
    pub failed: Vec<(jetstream::Message, String)>,
    /// Never will be done (not a valid message), with the reason: dead-lettered now.
    pub dead: Vec<(jetstream::Message, String)>,
}

/// Where a worker's messages go when they cannot be processed, and how often a failing one
/// is tried first.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    /// Where to publish dead letters.
    pub js: jetstream::Context,
    /// `deadletter.<stage>`.
    pub stage: &'static str,
    /// The worker's name in logs and metrics.
    pub worker: &'static str,
    /// Deliveries of a message that keeps failing for a reason that is not transient before
    /// it is dead-lettered (`MAX_DELIVER`).
    pub max_deliver: u32,
}

impl Settlement {
    /// Sends a message to the dead letters now, with `reason`.
    pub fn dead_letter(&mut self, message: jetstream::Message, reason: impl Into<String>) {
        self.dead.push((message, reason.into()));
    }

    /// Records a failure that may not pass: tried again until `MAX_DELIVER` deliveries.
    pub fn fail(&mut self, message: jetstream::Message, reason: impl Into<String>) {
        self.failed.push((message, reason.into()));
    }

    /// Settles every message, last of all: failures that have used their deliveries join
    /// the dead letters; dead letters are published (all in flight at once) and their
    /// originals acknowledged once the stream holds them; retries are negatively
    /// acknowledged with a back-off; the rest are acknowledged. A lost acknowledgement only
    /// means a redelivery, which every stage absorbs.
    ///
    /// Why the bound lives here and not in the consumer's `max_deliver`: JetStream stops
    /// delivering a message that reaches its `max_deliver` and leaves it unacknowledged for
    /// good, so a database outage longer than the retries would strand every message in
    /// flight, never stored and never dead-lettered. The consumer delivers forever; this
    /// counts deliveries (`info().delivered`) and gives up only on failures that are not
    /// transient. An outage is transient however long it lasts.
    pub async fn apply(self, letters: &DeadLetters) {
        let Settlement {
            mut ack,
            mut retry,
            failed,
            mut dead,
        } = self;
        for (message, reason) in failed {
            let delivered = deliveries(&message);
            if delivered >= i64::from(letters.max_deliver) {
                let deliveries = if delivered == 1 {
                    "delivery"
                } else {
                    "deliveries"
                };
                dead.push((
                    message,
                    format!("gave up after {delivered} {deliveries}: {reason}"),
                ));
            } else {
                tracing::warn!(
                    worker = letters.worker,
                    delivered,
                    reason = %bus::header_safe(&reason).as_str(),
                    "processing failed; trying again later"
                );
                retry.push(message);
            }
        }
        if !dead.is_empty() {
            let outgoing = dead
                .iter()
                .map(|(message, reason)| bus::dead_letter_message(letters.stage, message, reason))
                .collect();
            match bus::publish_all(&letters.js, outgoing).await {
                Ok(_) => {
                    metrics::counter!(ops::DEADLETTERS, "stage" => letters.stage)
                        .increment(dead.len() as u64);
                    for (message, reason) in dead {
                        tracing::warn!(
                            worker = letters.worker,
                            subject = %bus::header_safe(message.subject.as_str()).as_str(),
                            reason = %bus::header_safe(&reason).as_str(),
                            "dead-lettered a message"
                        );
                        ack.push(message);
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        error = %telemetry::error_chain(&err),
                        "dead letters not acknowledged; retrying later"
                    );
                    retry.extend(dead.into_iter().map(|(message, _)| message));
                }
            }
        }
        if !retry.is_empty() {
            metrics::counter!(ops::RETRIES, "worker" => letters.worker)
                .increment(retry.len() as u64);
        }
        for message in retry {
            let delay = retry_delay(&message);
            if let Err(err) = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await {
                tracing::warn!(error = %err, "nak failed; the message will be redelivered after ack_wait");
            }
        }
        let acking = std::time::Instant::now();
        let acks = ack.len();
        for message in ack {
            if let Err(err) = message.ack().await {
                tracing::warn!(error = %err, "ack failed; the message will be redelivered and absorbed");
            }
        }
        tracing::debug!(
            acks,
            took_us = acking.elapsed().as_micros() as u64,
            "acknowledged"
        );
    }
}

/// Why a step could not process a group of messages.
#[derive(Debug, Clone)]
pub enum StepFailure {
    /// May pass (the database or the broker is unavailable): retry the group later, however
    /// often it takes.
    Transient(String),
    /// Refused for its content (the database cannot hold a value): the same message fails
    /// the same way every time, so once alone it is dead-lettered at once.
    Refused(String),
    /// Failed for a reason that may not pass (a corrupt row, an unencodable message, a
    /// panic): once alone it is tried again until `MAX_DELIVER` deliveries.
    Permanent(String),
}

/// A step that processes a group of messages at once (one transaction, one publish of all
/// that it causes), for [`process_isolating`].
pub trait GroupStep {
    /// One message with what the step made of it.
    type Item: Send;

    /// Processes the whole group, or fails it as a whole.
    fn process_group(
        &self,
        group: &[Self::Item],
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;

    /// The message an item came from, to settle it.
    fn into_message(item: Self::Item) -> jetstream::Message;
}

/// Runs `step` over `items` as one group and settles every item's message by the outcome.
/// A group that fails for a reason that is not transient, or panics, is split in halves
/// and each half tried again, until the culprit is alone: only it is dead-lettered (or tried
/// again later), and the rest are done.
///
/// Halves rather than one at a time: a batch of 1,000 with one bad message takes about 20
/// attempts instead of 1,000 transactions, and ends in the same place.
pub async fn process_isolating<S: GroupStep + Sync>(
    step: &S,
    items: Vec<S::Item>,
    settlement: &mut Settlement,
) {
    let message_of = S::into_message;
    let mut groups = vec![items];
    while let Some(mut group) = groups.pop() {
        if group.is_empty() {
            continue;
        }
        let outcome = match catching_panics(step.process_group(&group)).await {
            Ok(outcome) => outcome,
            Err(panic) => Err(StepFailure::Permanent(panic)),
        };
        match outcome {
            Ok(()) => settlement.ack.extend(group.into_iter().map(&message_of)),
            Err(StepFailure::Transient(reason)) => {
                tracing::warn!(
                    error = %bus::header_safe(&reason).as_str(),
                    size = group.len(),
                    "step failed; retrying later"
                );
                settlement.retry.extend(group.into_iter().map(&message_of));
            }
            Err(StepFailure::Refused(reason)) if group.len() == 1 => {
                for item in group {
                    settlement.dead_letter(message_of(item), reason.clone());
                }
            }
            Err(StepFailure::Permanent(reason)) if group.len() == 1 => {
                for item in group {
                    settlement.fail(message_of(item), reason.clone());
                }
            }
            Err(StepFailure::Refused(_) | StepFailure::Permanent(_)) => {
                let second_half = group.split_off(group.len() / 2);
                groups.push(second_half);
                groups.push(group);
            }
        }
    }
}

/// A storage error as a step failure: refused, transient or neither; `what` says what was
/// being stored ("event", "alert").
pub fn storage_failure(what: &str, err: &StorageError) -> StepFailure {
    match err {
        StorageError::Rejected(source) => StepFailure::Refused(format!(
            "the database refused the {what}: {}",
            telemetry::error_chain(source)
        )),
        err if err.is_transient() => StepFailure::Transient(telemetry::error_chain(err)),
        err => StepFailure::Permanent(telemetry::error_chain(err)),
    }
}

/// A broker error as a step failure: transient or not.
pub fn bus_failure(err: &BusError) -> StepFailure {
    if err.is_transient() {
        StepFailure::Transient(telemetry::error_chain(err))
    } else {
        StepFailure::Permanent(telemetry::error_chain(err))
    }
}

/// How many times JetStream has delivered `message`, this delivery included (1 when it
/// does not say).
pub fn deliveries(message: &jetstream::Message) -> i64 {
    message
        .info()
        .map(|info| info.delivered)
        .unwrap_or(1)
        .max(1)
}

/// Back-off for a redelivery: 1 s after the first attempt, doubling to a minute.
pub fn retry_delay(message: &jetstream::Message) -> Duration {
    let exponent = u32::try_from(deliveries(message) - 1)
        .unwrap_or(u32::MAX)
        .min(6);
    Duration::from_secs(1 << exponent)
}

/// Runs `work`, turning a panic inside it into an error that says `panicked: <message>`.
/// Defence in depth: a bug that panics on some input must cost that input (dead-lettered),
/// never the worker and with it the whole pipeline.
pub async fn catching_panics<T>(work: impl Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| panicked(panic.as_ref()))
}

/// The reason a panic gives a dead letter: `panicked: <message>`.
pub fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    format!("panicked: {}", panic_message(panic))
}

/// The text a panic was raised with, if it was raised with text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database (`DATABASE_URL`) could not be opened or migrated.
    #[error("DATABASE_URL: {0}")]
    Database(#[from] StorageError),
    /// NATS (`NATS_URL`) could not be reached or set up.
    #[error("NATS_URL: {0}")]
    Nats(#[from] BusError),
    /// A setting is unusable (`NOTIFY_ROUTES_FILE`, `SMTP_URL`, …), with why.
    #[error("configuration: {0}")]
    Config(String),
    /// The operations port (`METRICS_ADDR`) could not be bound.
    #[error("METRICS_ADDR: cannot listen on {addr}")]
    Metrics {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a worker runs on: the database (migrated) and NATS (streams declared).
#[derive(Debug, Clone)]
pub struct Connected {
    /// The database.
    pub storage: Storage,
    /// The NATS client.
    pub client: async_nats::Client,
    /// JetStream over [`Connected::client`].
    pub js: jetstream::Context,
}

/// Opens the database (applying migrations) and NATS (declaring the streams).
pub async fn connect(name: &str, connections: &Connections) -> Result<Connected, StartError> {
    let storage = Storage::connect_and_migrate(&connections.database_url).await?;
    let client = bus::connect(
        &connections.nats_url,
        &format!("threatmon-{name}"),
        connections.nats_connect_timeout(),
    )
    .await?;
    let js = jetstream::new(client.clone());
    subjects::ensure_streams_within(&js, &storage, connections.nats_connect_timeout()).await?;
    Ok(Connected {
        storage,
        client,
        js,
    })
}

/// Runs a worker to the end: serves its operations port (when `metrics_addr` is set),
/// reports its consumer's backlog, runs `step` on every batch until `shutdown`, then sends
/// the last acknowledgements and closes the database.
pub async fn run_worker<F, Fut>(
    name: &'static str,
    connected: Connected,
    source: Source,
    metrics_addr: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
    step: F,
) -> Result<(), StartError>
where
    F: FnMut(Vec<jetstream::Message>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ready = Readiness::new();
    let ops_server = match metrics_addr {
        None => None,
        Some(addr) => {
            let listener = ops::bind(addr)
                .await
                .map_err(|source| StartError::Metrics { addr, source })?;
            tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics, /healthz, /readyz");
            let (ready, shutdown) = (ready.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                if let Err(err) = ops::serve(listener, ready, shutdown).await {
                    tracing::warn!(error = %err, "operations server failed");
                }
            }))
        }
    };
    let consumer = source.consumer.durable_name.clone().unwrap_or_default();
    let lag = tokio::spawn(report_lag(
        connected.js.clone(),
        source.stream,
        consumer,
        shutdown.clone(),
    ));
    run_batches(connected.js.clone(), source, ready, shutdown.clone(), step).await;

    // Whatever ended the loop, the helpers stop with it.
    shutdown.cancel();
    let _ = lag.await;
    if let Some(server) = ops_server {
        let _ = server.await;
    }
    if tokio::time::timeout(Duration::from_secs(5), connected.client.flush())
        .await
        .is_err()
    {
        tracing::warn!("flushing acknowledgements timed out");
    }
    connected.storage.close().await;
    tracing::info!(worker = name, "stopped");
    Ok(())
}
