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
use tokio_util::sync::CancellationToken;

use crate::bus::{self, BusError};
use crate::config::Connections;
use crate::ops::{self, Readiness};
use crate::storage::{Storage, StorageError};
use crate::subjects;

/// Where a worker reads from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The stream.
    pub stream: &'static str,
    /// The durable consumer, as declared in [`crate::subjects`].
    pub consumer: pull::Config,
    /// Most messages handed to one step.
    pub batch_size: usize,
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

async fn open(
    js: &jetstream::Context,
    source: &Source,
) -> Result<jetstream::consumer::pull::Stream, BusError> {
    let stream = js
        .get_stream(source.stream)
        .await
        .map_err(|e| BusError::Setup(format!("stream {}: {e}", source.stream)))?;
    // On nats-server 2.9 creating an existing durable with changed settings updates it.
    let consumer = stream
        .create_consumer(source.consumer.clone())
        .await
        .map_err(|e| BusError::Setup(format!("consumer on {}: {e}", source.stream)))?;
    consumer
        .stream()
        // Several batches outstanding, so a full batch is buffered while the last one is
        // being stored: with only one, batches come out a fraction of the size.
        .max_messages_per_batch(source.batch_size.saturating_mul(4))
        .expires(Duration::from_secs(10))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| BusError::Setup(format!("pulling from {}: {e}", source.stream)))
}

/// Runs `step` on each batch from `source` until `shutdown` is cancelled. Returns once the
/// batch in hand (if any) is finished. `ready` is true while pulling.
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
    let mut backoff = Backoff::new();
    'connect: while !shutdown.is_cancelled() {
        let messages = match open(&js, &source).await {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %err, "cannot pull yet; retrying");
                if !backoff.wait(&shutdown).await {
                    break;
                }
                continue;
            }
        };
        tracing::info!(stream = source.stream, "pulling");
        ready.set(true);
        let mut batches = messages.ready_chunks(source.batch_size);
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break 'connect,
                // Unconstrained: tokio's cooperative budget would end each chunk after 128
                // messages however many are waiting, capping batches far below batch_size.
                next = tokio::task::unconstrained(batches.next()) => next,
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
                let size = batch.len();
                let started = std::time::Instant::now();
                step(batch).await;
                tracing::debug!(
                    size,
                    took_us = started.elapsed().as_micros() as u64,
                    "batch done"
                );
            }
            if let Some(err) = failure {
                // Missed heartbeats, a server restart, a deleted consumer: start over.
                tracing::warn!(stream = source.stream, error = %err, "pulling failed; reopening");
                break;
            }
        }
        ready.set(false);
        if !backoff.wait(&shutdown).await {
            break;
        }
    }
    ready.set(false);
    tracing::info!(stream = source.stream, "stopped pulling");
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

/// How a step left each message of its batch: acknowledged at the end, or handed back to
/// JetStream for a later attempt.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Done: everything it caused is committed and published.
    pub ack: Vec<jetstream::Message>,
    /// Not done for a reason that may pass (database or broker unavailable): redeliver later.
    pub retry: Vec<jetstream::Message>,
}

impl Settlement {
    /// Acknowledges and negatively acknowledges, last of all. A lost acknowledgement only
    /// means a redelivery, which every stage absorbs.
    pub async fn apply(self, worker: &'static str) {
        if !self.retry.is_empty() {
            metrics::counter!(ops::RETRIES, "worker" => worker).increment(self.retry.len() as u64);
        }
        for message in self.retry {
            let delay = retry_delay(&message);
            if let Err(err) = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await {
                tracing::warn!(error = %err, "nak failed; the message will be redelivered after ack_wait");
            }
        }
        for message in self.ack {
            if let Err(err) = message.ack().await {
                tracing::warn!(error = %err, "ack failed; the message will be redelivered and absorbed");
            }
        }
    }
}

/// Back-off for a redelivery: 1 s after the first attempt, doubling to a minute.
pub fn retry_delay(message: &jetstream::Message) -> Duration {
    let attempts = message
        .info()
        .map(|info| info.delivered)
        .unwrap_or(1)
        .max(1);
    let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(6);
    Duration::from_secs(1 << exponent)
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
    /// The operations port (`METRICS_ADDR`) could not be bound.
    #[error("METRICS_ADDR: cannot listen on {addr}: {reason}")]
    Metrics {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
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
            let listener = ops::bind(addr).await.map_err(|e| StartError::Metrics {
                addr,
                reason: e.to_string(),
            })?;
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
