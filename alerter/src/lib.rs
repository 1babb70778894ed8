//! The alerter: turns escalations into alerts and notifies operators.
//!
//! Repeats fold: an escalated event joins the open alert of its fold key (`ALERT_FOLD_KEY`)
//! instead of opening its own; see `common::storage::Storage::fold_alerts`.
//!
//! Guarantee: an escalation is acknowledged last, only after its alert is committed and the
//! ALERTS stream has acknowledged the notifications (`alerts.created.<severity>` for a new
//! alert, `alerts.updated.<status>` when a folded event raised an alert's severity). An event
//! is counted in exactly one alert, once (`alert_events`), however often its escalation is
//! delivered; a redelivery notifies again (same `Nats-Msg-Id`), so a crash between commit and
//! notification still notifies. A message that is not an escalation goes
//! to `deadletter.alert` with the reason and is acknowledged.

use async_nats::jetstream;
use chrono::Utc;
use common::bus::{self, BusError};
use common::config::{Connections, Pulling};
use common::domain::{Event, FoldKey};
use common::notify::{Notifier, NotifySettings};
use common::ops;
use common::storage::{CreatedAlerts, Folding, Storage};
use common::subjects::{self, STAGE_ALERT};
use common::worker::{self, DeadLetters, GroupStep, Settlement, Source, StepFailure};
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
    /// Which event fields fold repeats into one alert: comma-separated `sourceName`,
    /// `eventType`, `description` and `attributes.<path>` (e.g.
    /// `sourceName,eventType,attributes.src_ip`), or `none` for one alert per escalated event.
    #[arg(long, env = "ALERT_FOLD_KEY", default_value = "sourceName,eventType")]
    pub alert_fold_key: FoldKey,

    /// Seconds after its last event that an open (or acknowledged) alert still absorbs the
    /// next event of its fold key; a later one opens a new alert.
    #[arg(long, env = "ALERT_FOLD_WINDOW_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub alert_fold_window_secs: u64,

    /// Notifications: timeouts, retries, targets, SMTP.
    #[command(flatten)]
    pub notify: NotifySettings,

    /// Deliver notifications (webhook, Slack, e-mail routes) from this alerter; `false`
    /// leaves it to other alerters.
    #[arg(long, env = "NOTIFY_DELIVERY", default_value_t = true, action = clap::ArgAction::Set)]
    pub notify_delivery: bool,

    /// Attempts in flight at once to one route (routes never wait for each other).
    #[arg(long, env = "NOTIFY_CONCURRENCY_PER_ROUTE", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub notify_concurrency_per_route: u64,

    /// A TOML file of notification routes, loaded at start: each `[[route]]` replaces the
    /// route of its name (see the README). A webhook's secret may come from
    /// `secret_file = "/run/secrets/…"` instead of the file itself.
    #[arg(long, env = "NOTIFY_ROUTES_FILE")]
    pub notify_routes_file: Option<std::path::PathBuf>,

    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`off` to disable).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102",
          value_parser = common::ops::parse_listen_addr)]
    pub metrics_addr: common::ops::ListenAddr,
}

pub use common::worker::StartError;

pub mod delivery;
pub mod reminders;
pub mod routes_file;

/// One alerter: the step that turns a batch of escalations into notified alerts.
#[derive(Debug, Clone)]
pub struct Alerter {
    storage: Storage,
    folding: Folding,
    js: jetstream::Context,
    letters: DeadLetters,
}

/// An escalation that decoded, with the message it came in.
pub struct Escalation {
    message: jetstream::Message,
    event: Event,
}

impl Alerter {
    /// An alerter over an open database and a JetStream context, giving up on a message
    /// that keeps failing after the default `MAX_DELIVER` (5) deliveries.
    pub fn new(storage: Storage, js: jetstream::Context) -> Self {
        let letters = DeadLetters {
            js: js.clone(),
            stage: STAGE_ALERT,
            worker: "alerter",
            max_deliver: 5,
        };
        Alerter {
            storage,
            folding: Folding::none(),
            js,
            letters,
        }
    }

    /// Folds repeats as `folding` says (the default folds nothing: one alert per event).
    pub fn with_folding(mut self, folding: Folding) -> Self {
        self.folding = folding;
        self
    }

    /// Gives up on a message that keeps failing after `max_deliver` deliveries.
    pub fn with_max_deliver(mut self, max_deliver: u32) -> Self {
        self.letters.max_deliver = max_deliver;
        self
    }

    /// Handles one batch completely: creates, notifies, dead-letters, then acknowledges.
    pub async fn handle_batch(&self, batch: Vec<jetstream::Message>) {
        self.process(batch).await.apply(&self.letters).await;
    }

    /// Does everything a batch causes except settling it (dead letters, acknowledgements),
    /// and says how to settle each message. Tests call this to stop "just before the ack",
    /// as a crash would.
    pub async fn process(&self, batch: Vec<jetstream::Message>) -> Settlement {
        let mut settlement = Settlement::default();
        let mut escalations = Vec::with_capacity(batch.len());
        metrics::counter!(ops::ESCALATIONS_RECEIVED).increment(batch.len() as u64);
        metrics::histogram!(ops::BATCH_SIZE, "worker" => "alerter").record(batch.len() as f64);
        for message in batch {
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(event) => escalations.push(Escalation { message, event }),
                Err(err) => {
                    settlement.dead_letter(message, format!("not an escalated event: {err}"))
                }
            }
        }
        worker::process_isolating(self, escalations, &mut settlement).await;
        settlement
    }

    /// Creates the alerts of a group in one transaction and publishes their notifications.
    async fn create_and_notify(&self, group: &[Escalation]) -> Result<(), StepFailure> {
        let events: Vec<Event> = group.iter().map(|e| e.event.clone()).collect();
        let started = std::time::Instant::now();
        let created = self
            .storage
            .fold_alerts(&events, &self.folding, Utc::now())
            .await
            .map_err(|err| worker::storage_failure("alert", &err))?;
        let store_us = started.elapsed().as_micros() as u64;
        self.notify(&created)
            .await
            .map_err(|err| worker::bus_failure(&err))?;
        let notify_us = started.elapsed().as_micros() as u64 - store_us;
        metrics::counter!(ops::ALERTS_CREATED).increment(created.newly_created);
        metrics::counter!(ops::ALERT_NOTIFICATIONS).increment(created.alerts.len() as u64);
        metrics::counter!(ops::EVENTS_FOLDED).increment(created.folded);
        tracing::debug!(
            escalations = group.len(),
            new = created.newly_created,
            folded = created.folded,
            updates = created.updates.len(),
            store_us,
            notify_us,
            "alerts created"
        );
        Ok(())
    }

    /// Announces the alerts made and the pipeline's changes to others, then clears the
    /// changes' pending marks. A mark left set (a failure here, a crash) only makes the api's
    /// relay announce the change again, under the same `Nats-Msg-Id`; folded events that
    /// changed nothing but the count are not announced.
    async fn notify(&self, created: &CreatedAlerts) -> Result<(), BusError> {
        let mut outgoing = Vec::with_capacity(created.alerts.len() + created.updates.len());
        for alert in &created.alerts {
            outgoing.push(bus::alert_created_message(alert)?);
        }
        for (alert, change) in &created.updates {
            outgoing.push(bus::alert_updated_message(alert, change)?);
        }
        bus::publish_all(&self.js, outgoing).await?;
        let change_ids: Vec<i64> = created.updates.iter().map(|(_, c)| c.id).collect();
        if let Err(err) = self.storage.mark_changes_notified(&change_ids).await {
            tracing::warn!(error = %err, changes = change_ids.len(),
                "cannot clear announced changes' marks; the api's relay will announce them again");
        }
        Ok(())
    }
}

impl GroupStep for Alerter {
    type Item = Escalation;

    fn process_group(
        &self,
        group: &[Escalation],
    ) -> impl Future<Output = Result<(), StepFailure>> + Send {
        self.create_and_notify(group)
    }

    fn into_message(item: Escalation) -> jetstream::Message {
        item.message
    }
}

/// Connects to the database and NATS, declares the streams, and alerts until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let connected = worker::connect("alerter", &settings.connections).await?;
    tracing::info!(
        database = %common::storage::redact_url(&settings.connections.database_url),
        "alerter started"
    );
    let alerter = Alerter::new(connected.storage.clone(), connected.js.clone())
        .with_max_deliver(settings.pulling.max_deliver)
        .with_folding(Folding {
            key: settings.alert_fold_key.clone(),
            window_secs: settings.alert_fold_window_secs,
        });
    if let Some(path) = &settings.notify_routes_file {
        routes_file::load(&connected.storage, path)
            .await
            .map_err(|err| StartError::Config(err.to_string()))?;
    }
    let delivery = if settings.notify_delivery {
        let notifier = Notifier::new(settings.notify.clone())
            .map_err(|err| StartError::Config(common::telemetry::error_chain(&err)))?;
        Some(delivery::Delivery::new(
            connected.storage.clone(),
            connected.js.clone(),
            notifier,
            usize::try_from(settings.notify_concurrency_per_route).unwrap_or(4),
        ))
    } else {
        None
    };
    let source = Source {
        stream: subjects::ESCALATIONS_STREAM,
        consumer: subjects::alerter_consumer(settings.pulling.ack_wait()),
        batch_size: usize::from(settings.pulling.batch_size),
        batches_in_flight: usize::from(settings.pulling.batches_in_flight),
    };
    let intake = Source {
        stream: subjects::ALERTS_STREAM,
        consumer: subjects::notifier_consumer(settings.pulling.ack_wait()),
        batch_size: usize::from(settings.pulling.batch_size),
        batches_in_flight: 1,
    };
    if delivery.is_some() {
        // Before the first alert: the consumer takes only messages published after it exists,
        // so on a new deployment the first alerts would otherwise go unnotified.
        worker::declare_consumer(&connected.js, &intake).await?;
    }
    let notifying = async {
        let Some(delivery) = delivery else { return };
        let dispatching = delivery.clone().dispatch(shutdown.clone());
        let recording = worker::run_batches(
            connected.js.clone(),
            intake,
            common::ops::Readiness::new(),
            shutdown.clone(),
            |batch| delivery.intake(batch),
        );
        tokio::join!(dispatching, recording);
    };
    let alerting = async {
        let alerted = worker::run_worker(
            "alerter",
            connected.clone(),
            source,
            settings.metrics_addr.0,
            shutdown.clone(),
            |batch| alerter.handle_batch(batch),
        )
        .await;
        // However alerting ended (a port that cannot be bound ends it at once), delivery
        // ends with it: the process must not live on half-started.
        shutdown.cancel();
        alerted
    };
    let (alerted, ()) = tokio::join!(alerting, notifying);
    alerted
}
