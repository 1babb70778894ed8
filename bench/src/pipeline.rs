//! The pipeline as deployed: `ingestor` and `alerter` processes on a fresh nats-server and a
//! fresh database (a SQLite file or a PostgreSQL scratch database). Sustained rate for a
//! large load, then latency from publish to `alerts.created.*` at fixed rates, stage by
//! stage, then the correctness checks; with notification delivery as deployed, off, or to
//! webhook routes (the delivery comparison).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream;
use common::domain::Severity;
use common::subjects;
use futures::{StreamExt, TryStreamExt};
use tempfile::TempDir;
use testkit::NatsServer;

use crate::db::{Backend, Database, Reader};
use crate::load::{self, Outgoing, Publisher, Sent, Uids};
use crate::locks::{LockSampler, LockSamples};
use crate::procs::{CpuMeter, CpuUse, Service, free_port, pids_named};
use crate::stats::Latencies;
use crate::webhooks::Webhooks;

/// How long the fixed-rate latency phases publish: `warm_up` unmeasured (the rate's
/// steady state, not the tail of the disk work the sustained phase left behind), then
/// `measured`.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// Published at the rate but not measured.
    pub warm_up: Duration,
    /// Measured.
    pub measured: Duration,
}

/// nats-server, a database, and the workers: one or more ingestors and alerters.
pub struct Stack {
    /// The broker (the api benchmark reuses it).
    pub nats: NatsServer,
    /// Holds the SQLite database (if that is the backend) and the logs.
    pub dir: TempDir,
    ingestors: Vec<Service>,
    alerters: Vec<Service>,
    js: jetstream::Context,
    client: async_nats::Client,
    reader: Reader,
    folding: Folding,
    // Last, so that on an error path the workers are killed before it is dropped.
    database: Database,
}

/// Publish → `alerts.created.*`, and the stages in between, each as the bench can observe
/// it. The stages compare the bench's wall clock with timestamps the services wrote (one
/// machine, one clock); a stage that reads below zero (a few µs of scheduling between two
/// processes, or the bench's own subscriber being scheduled late) is recorded as zero and
/// counted in `negative`.
#[derive(Default)]
pub struct Stages {
    /// Publish (bench wall clock) → `events.created_at` (the ingestor received the batch).
    pub received: Latencies,
    /// `events.created_at` → the escalation arrives on a core subscription to
    /// `escalations.>` (store, commit, publish).
    pub escalated: Latencies,
    /// The escalation arrives → `alerts.created_at` (the alerter received it and began the
    /// alert's transaction).
    pub alerter: Latencies,
    /// `alerts.created_at` → the `alerts.created.*` notification arrives (alert commit and
    /// publish).
    pub notified: Latencies,
    /// Publish → the notification arrives (monotonic clock).
    pub total: Latencies,
    /// Values below zero, recorded as zero, per stage (in the order of [`STAGE_NAMES`]).
    pub negative: [u64; 4],
}

/// The stages of [`Stages::parts`], named by what is measured; the total last.
pub const STAGE_NAMES: [&str; 5] = [
    "1: publish → `events.created_at` (the ingestor received the batch)",
    "2: `events.created_at` → escalation seen on `escalations.>` (store, commit, publish)",
    "3: escalation seen → `alerts.created_at` (the alerter received it and began the alert's transaction)",
    "4: `alerts.created_at` → `alerts.created.*` seen (alert commit, publish)",
    "**total**: publish → `alerts.created.*` seen",
];

impl Stages {
    /// The stages in the order of [`STAGE_NAMES`].
    pub fn parts(&self) -> [&Latencies; 5] {
        [
            &self.received,
            &self.escalated,
            &self.alerter,
            &self.notified,
            &self.total,
        ]
    }
}

/// What one pipeline run measured.
#[derive(Default)]
pub struct PipelineRun {
    /// Events a second accepted by the broker (PubAck) while the pipeline ran.
    pub published_rate: f64,
    /// Events a second from the first publish to the last stored (acknowledged by the
    /// ingestor after its commit).
    pub stored_rate: f64,
    /// Events a second from the first publish until every alert notification was out.
    pub alerted_rate: f64,
    /// Peak resident memory of the largest ingestor, MiB.
    pub ingestor_mib: f64,
    /// Peak resident memory of the largest alerter, MiB.
    pub alerter_mib: f64,
    /// At 1,000 events/s (none when the run had no latency phases).
    pub latency_fixed: Option<Stages>,
    /// The same at half the measured stored rate.
    pub latency_half: Option<Stages>,
    /// What that half rate was.
    pub half_rate: f64,
    /// PostgreSQL lock waits while the sustained phase ran (scaling runs only).
    pub locks: Option<LockSamples>,
    /// Where the machine's CPU went during the sustained phase.
    pub cpu: Option<CpuUse>,
    /// What the webhook receiver got (runs with [`Notify::Webhooks`]).
    pub webhooks: Option<Delivered>,
    /// The correctness checks, as `(what, expected, found)`.
    pub checks: Vec<(String, u64, u64)>,
}

/// The webhook deliveries of a run with [`Notify::Webhooks`].
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// Requests the receiver got.
    pub requests: u64,
    /// Distinct `webhook-id`s among them.
    pub distinct: u64,
    /// From the end of the latency phases (every alert notified) and their checks until the
    /// receiver had them all (or the wait gave up).
    pub after: Duration,
}

impl Stack {
    /// Starts a fresh broker, a fresh database on `backend`, and `workers` ingestors and
    /// as many alerters (each its own process and metrics port; the alerters with
    /// `alerter_env` besides), and waits until they are ready. They start one at a time, so
    /// that only the first migrates the database.
    pub async fn start(
        backend: &Backend,
        workers: usize,
        folding: Folding,
        alerter_env: &[(&'static str, String)],
    ) -> Result<Stack> {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir()?;
        let database = Database::create(backend, dir.path()).await?;
        let db_url = database.url();
        let mut ingestors = Vec::new();
        let mut alerters = Vec::new();
        for n in 1..=workers.max(1) {
            for name in ["ingestor", "alerter"] {
                // One log directory per pair: the logs are named after the service.
                let log_dir = dir.path().join(format!("workers-{n}"));
                std::fs::create_dir_all(&log_dir)?;
                let port = free_port()?;
                let mut env = vec![
                    ("NATS_URL", nats.url()),
                    ("DATABASE_URL", db_url.clone()),
                    ("METRICS_ADDR", format!("127.0.0.1:{port}")),
                    ("ALERT_FOLD_KEY", folding.fold_key().to_owned()),
                ];
                if name == "alerter" {
                    env.extend_from_slice(alerter_env);
                }
                let mut service = Service::start(name, &env, &log_dir)?;
                service
                    .wait_ready(&format!("http://127.0.0.1:{port}/readyz"))
                    .await?;
                if name == "ingestor" {
                    ingestors.push(service);
                } else {
                    alerters.push(service);
                }
            }
        }
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 20)
            .connect(nats.url())
            .await
            .context("connecting to nats-server")?;
        let js = jetstream::new(client.clone());
        let reader = database.reader().await?;
        Ok(Stack {
            nats,
            dir,
            ingestors,
            alerters,
            js,
            client,
            reader,
            database,
            folding,
        })
    }

    /// Measures the CPU of every process the pipeline runs on: the broker, the workers, this
    /// bench (the publisher) and, on PostgreSQL, the server's processes.
    fn cpu_meter(&self) -> CpuMeter {
        let mut groups = vec![
            ("nats-server", self.nats.pid().into_iter().collect()),
            (
                "ingestor",
                self.ingestors.iter().map(Service::pid).collect(),
            ),
            ("alerter", self.alerters.iter().map(Service::pid).collect()),
            ("bench (publisher)", vec![std::process::id()]),
        ];
        if self.postgres_url().is_some() {
            groups.push(("postgres (server)", pids_named("postgres")));
        }
        CpuMeter::start(groups)
    }

    async fn count(&self, sql: &'static str) -> Result<u64> {
        self.reader.count(sql).await
    }

    /// The scratch database's URL, on PostgreSQL.
    fn postgres_url(&self) -> Option<String> {
        match &self.database {
            Database::Postgres(scratch) => Some(scratch.url.clone()),
            Database::Sqlite(_) => None,
        }
    }

    /// Waits until the ingestor has acknowledged (stored) every message up to `last_seq`;
    /// returns when it saw that.
    async fn wait_stored(&self, last_seq: u64, deadline: Instant) -> Result<Instant> {
        let mut consumer: jetstream::consumer::PullConsumer = self
            .js
            .get_consumer_from_stream(subjects::INGESTOR_CONSUMER, subjects::EVENTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding the ingestor's consumer: {e}"))?;
        loop {
            let info = consumer
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("consumer info: {e}"))?;
            if info.ack_floor.stream_sequence >= last_seq && info.num_ack_pending == 0 {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "the ingestor stored up to {} of {last_seq} before the deadline",
                    info.ack_floor.stream_sequence
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the ALERTS stream holds `expected` notifications.
    async fn wait_alerted(&self, expected: u64, deadline: Instant) -> Result<Instant> {
        let mut stream = self
            .js
            .get_stream(subjects::ALERTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding ALERTS: {e}"))?;
        loop {
            let messages = stream
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
                .state
                .messages;
            if messages >= expected {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("{messages} of {expected} alert notifications before the deadline");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the alerters have acknowledged every escalation, `expected` of them at
    /// least (each counted in an alert and committed); returns when they had.
    async fn wait_folded(&self, expected: u64, deadline: Instant) -> Result<Instant> {
        let mut stream = self
            .js
            .get_stream(subjects::ESCALATIONS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding ESCALATIONS: {e}"))?;
        let mut consumer: jetstream::consumer::PullConsumer = self
            .js
            .get_consumer_from_stream(subjects::ALERTER_CONSUMER, subjects::ESCALATIONS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding the alerter's consumer: {e}"))?;
        loop {
            let published = stream
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
                .state
                .last_sequence;
            let info = consumer
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("consumer info: {e}"))?;
            if published >= expected
                && info.ack_floor.stream_sequence >= published
                && info.num_ack_pending == 0
            {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "the alerters took up to {} of {published} escalations before the deadline",
                    info.ack_floor.stream_sequence
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes `events` as fast as the broker takes them, and measures how fast the
    /// pipeline stores them and notifies their alerts.
    pub async fn sustained(&self, events: &[Outgoing], run: &mut PipelineRun) -> Result<()> {
        let alerts_before = self.count("SELECT COUNT(*) FROM alerts").await?;
        let meter = self.cpu_meter();
        let start = Instant::now();
        let mut publisher = Publisher::new(self.js.clone());
        for event in events {
            publisher
                .send(&event.subject, &event.uid, event.payload.clone())
                .await?;
        }
        publisher.finish().await?;
        run.published_rate = events.len() as f64 / start.elapsed().as_secs_f64();
        let last_seq = self
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding EVENTS: {e}"))?
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
            .state
            .last_sequence;
        // PostgreSQL stores about 2,000 events/s today: a million takes 8 minutes. Allow
        // 15 minutes and a millisecond an event besides, so a slow backend is measured
        // rather than cut off.
        let deadline =
            Instant::now() + Duration::from_secs(900) + Duration::from_millis(events.len() as u64);
        let stored_at = self.wait_stored(last_seq, deadline).await?;
        let escalated = load::at_or_above(events, Severity::High);
        let alerted_at = match self.folding {
            Folding::Off => {
                self.wait_alerted(alerts_before + escalated, deadline)
                    .await?
            }
            Folding::Keys { .. } => self.wait_folded(escalated, deadline).await?,
        };
        let mut cpu = meter.stop();
        cpu.events = events.len() as u64;
        run.cpu = Some(cpu);
        run.stored_rate = events.len() as f64 / (stored_at - start).as_secs_f64();
        run.alerted_rate = events.len() as f64 / (alerted_at - start).as_secs_f64();
        Ok(())
    }

    /// Publishes `events` at `rate` a second and measures, for each that raises an alert,
    /// the time from its publish to its `alerts.created.*` notification, stage by stage.
    /// Events sent before `from` (the warm-up) are not measured. Notifications may take
    /// until `within` after the start (a pipeline slower than `rate` drains a backlog).
    pub async fn latency(
        &self,
        events: &[Outgoing],
        rate: f64,
        from: usize,
        within: Duration,
    ) -> Result<Stages> {
        let expected = load::at_or_above(events, Severity::High) as usize;
        let deadline = tokio::time::Instant::now() + within;
        let notifications = self
            .client
            .subscribe("alerts.created.>")
            .await
            .context("subscribing to alerts.created.>")?;
        let escalations = self
            .client
            .subscribe(subjects::ESCALATIONS_ALL)
            .await
            .context("subscribing to escalations.>")?;
        self.client.flush().await?;
        // Alerts carry `event_id`; escalations are the stored event, with its `id`.
        let alerts = tokio::spawn(arrivals(notifications, "event_id", expected, deadline));
        let escalated = tokio::spawn(arrivals(escalations, "id", expected, deadline));
        let sent_at = load::publish_at_rate(self.js.clone(), events, rate).await?;
        let alerts = alerts.await?;
        let escalated = escalated.await?;
        ensure!(
            alerts.len() == expected,
            "{} of {expected} alert notifications arrived",
            alerts.len()
        );
        ensure!(
            escalated.len() == expected,
            "{} of {expected} escalations arrived",
            escalated.len()
        );
        let sent_by_uid: HashMap<&str, (usize, Sent)> = events
            .iter()
            .zip(sent_at)
            .enumerate()
            .map(|(i, (event, at))| (event.uid.as_str(), (i, at)))
            .collect();
        let ids: Vec<i64> = alerts.keys().copied().collect();
        let stored = self.stored_at(&ids).await?;
        let alerted = self.alerted_at(&ids).await?;
        let mut stages = Stages::default();
        let mut negative = [0u64; 4];
        for (event_id, notified) in alerts {
            let (uid, received_us) = stored
                .get(&event_id)
                .with_context(|| format!("alert for event {event_id}, which is not stored"))?;
            let (index, sent) = sent_by_uid
                .get(uid.as_str())
                .with_context(|| format!("alert for event {event_id} that was not sent"))?;
            if *index < from {
                continue;
            }
            let escalation = escalated
                .get(&event_id)
                .with_context(|| format!("no escalation seen for event {event_id}"))?;
            let alert_us = alerted
                .get(&event_id)
                .with_context(|| format!("no alert stored for event {event_id}"))?;
            let mut gap = |stage: usize, from_us: i64, to_us: i64| {
                if to_us < from_us {
                    negative[stage] += 1;
                }
                Duration::from_micros(u64::try_from(to_us - from_us).unwrap_or(0))
            };
            let received = gap(0, sent.wall_us, *received_us);
            let escalation_seen = gap(1, *received_us, escalation.wall_us);
            let alert_begun = gap(2, escalation.wall_us, *alert_us);
            let notification_seen = gap(3, *alert_us, notified.wall_us);
            stages.received.record(received);
            stages.escalated.record(escalation_seen);
            stages.alerter.record(alert_begun);
            stages.notified.record(notification_seen);
            stages
                .total
                .record(notified.at.saturating_duration_since(sent.at));
        }
        stages.negative = negative;
        Ok(stages)
    }

    /// `id → (uid, created_at)` of the events `ids`.
    async fn stored_at(&self, ids: &[i64]) -> Result<HashMap<i64, (String, i64)>> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows = self
                .reader
                .triples(format!(
                    "SELECT id, uid, created_at FROM events WHERE id IN ({})",
                    id_list(chunk)
                ))
                .await?;
            found.extend(rows.into_iter().map(|(id, uid, at)| (id, (uid, at))));
        }
        Ok(found)
    }

    /// `event_id → alerts.created_at` of the alerts of the events `ids`.
    async fn alerted_at(&self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows = self
                .reader
                .pairs(format!(
                    "SELECT event_id, created_at FROM alerts WHERE event_id IN ({})",
                    id_list(chunk)
                ))
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// Compares what was sent with what was stored, escalated and notified.
    pub async fn check(&self, sent: &[Outgoing], run: &mut PipelineRun) -> Result<()> {
        let escalated = load::at_or_above(sent, Severity::High);
        let mut stream = self
            .js
            .get_stream(subjects::ALERTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding ALERTS: {e}"))?;
        let notified = stream
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
            .state
            .messages;
        let mut dead_stream = self
            .js
            .get_stream(subjects::DEADLETTER_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("finding DEADLETTER: {e}"))?;
        let dead = dead_stream
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
            .state
            .messages;
        let mut checks = vec![
            (
                "events stored = events sent".to_owned(),
                sent.len() as u64,
                self.count("SELECT COUNT(*) FROM events").await?,
            ),
            (
                "HIGH/CRITICAL stored = HIGH/CRITICAL sent".to_owned(),
                escalated,
                self.count("SELECT COUNT(*) FROM events WHERE severity >= 3")
                    .await?,
            ),
        ];
        let alerts = self.count("SELECT COUNT(*) FROM alerts").await?;
        match self.folding {
            Folding::Off => checks.extend([
                ("alerts = escalated events".to_owned(), escalated, alerts),
                (
                    "alerts.created notifications = alerts".to_owned(),
                    escalated,
                    notified,
                ),
            ]),
            Folding::Keys { keys } => {
                let created = stream
                    .info_with_subjects("alerts.created.>")
                    .await
                    .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
                    .try_fold(0u64, |sum, (_, n)| async move { Ok(sum + n as u64) })
                    .await
                    .map_err(|e| anyhow::anyhow!("stream subjects: {e}"))?;
                checks.extend([
                    (
                        "alerts = fold keys (repeats folded)".to_owned(),
                        keys.min(escalated),
                        alerts,
                    ),
                    (
                        "sum of the alerts' counts = escalated events".to_owned(),
                        escalated,
                        self.count(
                            "SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM alerts",
                        )
                        .await?,
                    ),
                    (
                        "escalated events each in one alert (`alert_events`)".to_owned(),
                        escalated,
                        self.count("SELECT COUNT(*) FROM alert_events").await?,
                    ),
                    (
                        "alerts.created notifications = alerts".to_owned(),
                        keys.min(escalated),
                        created,
                    ),
                ]);
            }
        }
        checks.push(("dead-lettered".to_owned(), 0, dead));
        run.checks = checks;
        Ok(())
    }

    /// A consistent copy of the (SQLite) database as it is now, for the api benchmark.
    pub async fn snapshot(&self, to: &Path) -> Result<()> {
        self.reader.snapshot(to).await
    }

    /// Stops every worker with SIGTERM and records the largest peak memory of each kind;
    /// removes a PostgreSQL scratch database. Keeps the broker and the directory.
    pub async fn stop_workers(self, run: &mut PipelineRun) -> Result<(NatsServer, TempDir)> {
        self.reader.close().await;
        for ingestor in self.ingestors {
            run.ingestor_mib = run.ingestor_mib.max(ingestor.stop()?);
        }
        for alerter in self.alerters {
            run.alerter_mib = run.alerter_mib.max(alerter.stop()?);
        }
        self.database.remove().await?;
        Ok((self.nats, self.dir))
    }
}

/// A message's arrival on a core subscription.
#[derive(Clone, Copy)]
struct Arrival {
    at: Instant,
    wall_us: i64,
}

/// Collects, until `expected` distinct ids or `deadline`, when each message on
/// `subscription` arrived, keyed by the integer field `key` of its JSON body (the first
/// arrival if a message was published twice).
async fn arrivals(
    mut subscription: async_nats::Subscriber,
    key: &'static str,
    expected: usize,
    deadline: tokio::time::Instant,
) -> HashMap<i64, Arrival> {
    let mut seen = HashMap::with_capacity(expected);
    while seen.len() < expected {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(message)) => {
                let arrival = Arrival {
                    at: Instant::now(),
                    wall_us: load::wall_us(),
                };
                let id = serde_json::from_slice::<serde_json::Value>(&message.payload)
                    .ok()
                    .and_then(|v| v.get(key).and_then(|id| id.as_i64()));
                if let Some(id) = id {
                    seen.entry(id).or_insert(arrival);
                }
            }
            _ => break,
        }
    }
    seen
}

/// `1,2,3` for an `IN (…)` list of ids (integers, so formatting them into SQL is safe).
fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What one pipeline run does.
pub struct Plan<'a> {
    /// Where the services store.
    pub backend: &'a Backend,
    /// The sensors' uid kind.
    pub uids: Uids,
    /// Events in the sustained phase; 0 for none (the latency phases then start on an empty
    /// database, and there is no half-rate phase: no stored rate was measured).
    pub events: u64,
    /// Seed of the generated events.
    pub seed: u64,
    /// Ingestors (and as many alerters).
    pub workers: usize,
    /// The latency phases, or none (the scaling runs measure the sustained rate only).
    pub latency: Option<Phases>,
    /// Where to copy the database after the sustained phase (SQLite only).
    pub snapshot_to: Option<&'a Path>,
    /// The load and how the alerters fold it.
    pub load: Load,
    /// Whether and where the alerters deliver notifications.
    pub notify: Notify,
}

/// Whether the alerters deliver notifications, and to what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// As deployed without routes: the delivery loop runs (its consumer reads ALERTS) but
    /// matches no route, so nothing is delivered. Every run but the delivery comparison's.
    NoRoutes,
    /// `NOTIFY_DELIVERY=false`: the alerters run no delivery loop at all.
    Off,
    /// Delivery on, with `routes` webhook routes that match every alert (a
    /// `NOTIFY_ROUTES_FILE`), all to a receiver in the bench that answers 200.
    Webhooks {
        /// The routes.
        routes: usize,
    },
}

/// What a pipeline run publishes, and how its alerters fold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// [`load::events`] with `ALERT_FOLD_KEY=none`: one alert per escalation, the
    /// original's behaviour, which the checks count.
    Generated,
    /// [`load::fold_events`] over `keys` fold keys, the alerters folding by `folding`.
    Repeating {
        /// (`sourceName`, `eventType`) pairs the escalated events fall on.
        keys: u64,
        /// How the alerters fold them.
        folding: Folding,
    },
}

/// How the alerters fold escalations into alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folding {
    /// `ALERT_FOLD_KEY=none`: one alert per escalation.
    Off,
    /// The default key, `sourceName,eventType`, over a load of `keys` such pairs.
    Keys {
        /// The pairs the load's escalations fall on (the alerts the checks expect).
        keys: u64,
    },
}

impl Folding {
    /// The alerters' `ALERT_FOLD_KEY`.
    fn fold_key(self) -> &'static str {
        match self {
            Folding::Off => "none",
            Folding::Keys { .. } => "sourceName,eventType",
        }
    }
}

impl Load {
    fn folding(self) -> Folding {
        match self {
            Load::Generated => Folding::Off,
            Load::Repeating { folding, .. } => folding,
        }
    }

    fn events(self, count: u64, seed: u64, uids: Uids) -> Result<Vec<Outgoing>> {
        match self {
            Load::Generated => load::events(count, seed, uids),
            Load::Repeating { keys, .. } => load::fold_events(count, seed, uids, keys),
        }
    }
}

/// One whole pipeline run: the sustained phase (sampling PostgreSQL's locks when several
/// workers share the database), then the latency phases, with the correctness checks
/// after each. Returns the broker and the run's directory (the api benchmark reuses them).
pub async fn run(plan: Plan<'_>) -> Result<(PipelineRun, NatsServer, TempDir)> {
    ensure!(
        plan.latency.is_none() || plan.load == Load::Generated,
        "the latency phases count an alert per escalation: they need the generated load"
    );
    ensure!(
        !matches!(plan.notify, Notify::Webhooks { .. }) || plan.load == Load::Generated,
        "the webhook check counts a delivery per escalation and route: it needs the generated load"
    );
    let mut run = PipelineRun::default();
    let events = plan.load.events(plan.events, plan.seed, plan.uids)?;
    let webhooks = match plan.notify {
        Notify::Webhooks { routes } => Some(Webhooks::start(routes)?),
        Notify::NoRoutes | Notify::Off => None,
    };
    let alerter_env = match (plan.notify, &webhooks) {
        (Notify::Off, _) => vec![("NOTIFY_DELIVERY", "false".to_owned())],
        (_, Some(webhooks)) => webhooks.alerter_env(),
        _ => Vec::new(),
    };
    let stack = Stack::start(
        plan.backend,
        plan.workers,
        plan.load.folding(),
        &alerter_env,
    )
    .await?;
    let sustained = !events.is_empty();
    if sustained {
        let sampler = match stack.postgres_url() {
            Some(url) if plan.workers > 1 => Some(LockSampler::start(&url).await?),
            _ => None,
        };
        stack.sustained(&events, &mut run).await?;
        if let Some(sampler) = sampler {
            run.locks = Some(sampler.finish().await?);
        }
        stack.check(&events, &mut run).await?;
        if let Some(path) = plan.snapshot_to {
            stack.snapshot(path).await?;
        }
    }
    let mut sent = events;
    if let Some(phases) = plan.latency {
        let fixed_rate = 1000.0;
        let length = (phases.warm_up + phases.measured).as_secs_f64();
        // A pipeline slower than the rate drains a backlog after the phase: allow twice the
        // time its stored rate (or, without a sustained phase, the fixed rate) says, and a
        // minute besides.
        let drain_rate = if sustained {
            run.stored_rate.max(1.0)
        } else {
            fixed_rate
        };
        let within =
            |count: usize| Duration::from_secs_f64(length + 60.0 + 2.0 * count as f64 / drain_rate);

        let fixed = load::events((fixed_rate * length) as u64, plan.seed + 1, plan.uids)?;
        let warm = (fixed_rate * phases.warm_up.as_secs_f64()) as usize;
        run.latency_fixed = Some(
            stack
                .latency(&fixed, fixed_rate, warm, within(fixed.len()))
                .await
                .context("latency at 1,000 events/s")?,
        );
        sent.extend(fixed);

        if sustained {
            run.half_rate = run.stored_rate / 2.0;
            let half = load::events((run.half_rate * length) as u64, plan.seed + 2, plan.uids)?;
            let warm = (run.half_rate * phases.warm_up.as_secs_f64()) as usize;
            run.latency_half = Some(
                stack
                    .latency(&half, run.half_rate, warm, within(half.len()))
                    .await
                    .context("latency at half the stored rate")?,
            );
            sent.extend(half);
        }

        // Checked again over everything sent, the latency phases included.
        let sustained_checks = std::mem::take(&mut run.checks);
        stack.check(&sent, &mut run).await?;
        if sustained {
            for check in &mut run.checks {
                check.0 = format!("after the latency phases too: {}", check.0);
            }
        }
        run.checks.splice(0..0, sustained_checks);
    }
    if let Some(webhooks) = &webhooks {
        // One delivery per alert message and route: with the generated load (no folding)
        // only `alerts.created.*`, one per escalated event. Counted by `webhook-id`, which
        // an attempt made again keeps; allow at least 50 deliveries a second.
        let expected = load::at_or_above(&sent, Severity::High) * webhooks.routes() as u64;
        let from = Instant::now();
        let deadline = from + Duration::from_secs(60) + Duration::from_millis(20 * expected);
        let received = webhooks.wait_for(expected, deadline).await;
        run.webhooks = Some(Delivered {
            requests: received.requests,
            distinct: received.distinct,
            after: from.elapsed(),
        });
        run.checks.push((
            format!(
                "webhook deliveries = alerts × {} routes (distinct `webhook-id`s received)",
                webhooks.routes()
            ),
            expected,
            received.distinct,
        ));
    }
    let (nats, dir) = stack.stop_workers(&mut run).await?;
    drop(webhooks);
    Ok((run, nats, dir))
}
