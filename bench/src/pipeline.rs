//! The pipeline as deployed: `ingestor` and `alerter` processes on a fresh nats-server and a
//! fresh SQLite file. Sustained rate for a large load, then latency from publish to
//! `alerts.created.*` at fixed rates, then the correctness checks.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream;
use common::domain::Severity;
use common::subjects;
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use tempfile::TempDir;
use testkit::NatsServer;

use crate::load::{self, Outgoing, Publisher};
use crate::procs::{Service, free_port};
use crate::stats::Latencies;

/// How long each fixed-rate latency phase is measured.
const LATENCY_PHASE: Duration = Duration::from_secs(10);
/// How long each fixed-rate phase publishes before it is measured: the rate's steady state,
/// not the tail of the disk work (WAL checkpoints) the sustained phase left behind.
const LATENCY_WARM_UP: Duration = Duration::from_secs(5);

/// nats-server, a database file, and the two workers.
pub struct Stack {
    /// The broker (the api benchmark reuses it).
    pub nats: NatsServer,
    /// Holds the database and the logs.
    pub dir: TempDir,
    ingestor: Service,
    alerter: Service,
    js: jetstream::Context,
    client: async_nats::Client,
    db: SqlitePool,
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
    /// Peak resident memory of the ingestor, MiB.
    pub ingestor_mib: f64,
    /// Peak resident memory of the alerter, MiB.
    pub alerter_mib: f64,
    /// Publish → `alerts.created.*` at 1,000 events/s.
    pub latency_fixed: Latencies,
    /// The same at half the measured stored rate.
    pub latency_half: Latencies,
    /// What that half rate was.
    pub half_rate: f64,
    /// The correctness checks, as `(what, expected, found)`.
    pub checks: Vec<(String, u64, u64)>,
}

impl Stack {
    /// Starts a fresh broker, database and both workers, and waits until they are ready.
    pub async fn start() -> Result<Stack> {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir()?;
        let db_path = dir.path().join("threatmon.db");
        let db_url = format!("sqlite:{}", db_path.display());
        let mut workers = Vec::new();
        for name in ["ingestor", "alerter"] {
            let port = free_port()?;
            let mut service = Service::start(
                name,
                &[
                    ("NATS_URL", nats.url()),
                    ("DATABASE_URL", db_url.clone()),
                    ("METRICS_ADDR", format!("127.0.0.1:{port}")),
                ],
                dir.path(),
            )?;
            service
                .wait_ready(&format!("http://127.0.0.1:{port}/readyz"))
                .await?;
            workers.push(service);
        }
        let alerter = workers.pop().context("alerter")?;
        let ingestor = workers.pop().context("ingestor")?;
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 20)
            .connect(nats.url())
            .await
            .context("connecting to nats-server")?;
        let js = jetstream::new(client.clone());
        let db = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::from_str(&db_url)?.read_only(true))
            .await?;
        Ok(Stack {
            nats,
            dir,
            ingestor,
            alerter,
            js,
            client,
            db,
        })
    }

    async fn count(&self, sql: &'static str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.db).await?;
        Ok(u64::try_from(n).unwrap_or(0))
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

    /// Publishes `events` as fast as the broker takes them, and measures how fast the
    /// pipeline stores them and notifies their alerts.
    pub async fn sustained(&self, events: &[Outgoing], run: &mut PipelineRun) -> Result<()> {
        let alerts_before = self.count("SELECT COUNT(*) FROM alerts").await?;
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
        let deadline = Instant::now() + Duration::from_secs(900);
        let stored_at = self.wait_stored(last_seq, deadline).await?;
        let escalated = load::at_or_above(events, Severity::High);
        let alerted_at = self
            .wait_alerted(alerts_before + escalated, deadline)
            .await?;
        run.stored_rate = events.len() as f64 / (stored_at - start).as_secs_f64();
        run.alerted_rate = events.len() as f64 / (alerted_at - start).as_secs_f64();
        Ok(())
    }

    /// Publishes `events` at `rate` a second and measures, for each that raises an alert,
    /// the time from its publish to its `alerts.created.*` notification.
    /// Events sent before `from` (the warm-up) are not measured.
    pub async fn latency(&self, events: &[Outgoing], rate: f64, from: usize) -> Result<Latencies> {
        let expected = load::at_or_above(events, Severity::High) as usize;
        let mut notifications = self
            .client
            .subscribe("alerts.created.>")
            .await
            .context("subscribing to alerts.created.>")?;
        self.client.flush().await?;
        let collector = tokio::spawn(async move {
            let mut seen: Vec<(i64, Instant)> = Vec::with_capacity(expected);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < expected {
                match tokio::time::timeout_at(deadline, notifications.next()).await {
                    Ok(Some(message)) => {
                        let at = Instant::now();
                        let event_id =
                            serde_json::from_slice::<serde_json::Value>(&message.payload)
                                .ok()
                                .and_then(|v| v.get("event_id").and_then(|id| id.as_i64()));
                        if let Some(id) = event_id {
                            seen.push((id, at));
                        }
                    }
                    _ => break,
                }
            }
            seen
        });
        let sent_at = load::publish_at_rate(self.js.clone(), events, rate).await?;
        let seen = collector.await?;
        ensure!(
            seen.len() == expected,
            "{} of {expected} alert notifications arrived",
            seen.len()
        );
        let sent_by_uid: HashMap<&str, (usize, Instant)> = events
            .iter()
            .zip(sent_at)
            .enumerate()
            .map(|(i, (event, at))| (event.uid.as_str(), (i, at)))
            .collect();
        let uids = self.uids_of(seen.iter().map(|(id, _)| *id)).await?;
        let mut latencies = Latencies::new();
        for (event_id, at) in seen {
            let sent = uids
                .get(&event_id)
                .and_then(|uid| sent_by_uid.get(uid.as_str()))
                .with_context(|| format!("alert for event {event_id} that was not sent"))?;
            let (index, sent) = sent;
            if *index >= from {
                latencies.record(at.saturating_duration_since(*sent));
            }
        }
        Ok(latencies)
    }

    async fn uids_of(&self, ids: impl Iterator<Item = i64>) -> Result<HashMap<i64, String>> {
        let ids: Vec<i64> = ids.collect();
        let mut uids = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let list = chunk
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let rows: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT id, uid FROM events WHERE id IN ({list})"
            )))
            .fetch_all(&self.db)
            .await?;
            uids.extend(rows);
        }
        Ok(uids)
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
        run.checks = vec![
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
            (
                "alerts = escalated events".to_owned(),
                escalated,
                self.count("SELECT COUNT(*) FROM alerts").await?,
            ),
            (
                "alerts.created notifications = alerts".to_owned(),
                escalated,
                notified,
            ),
            ("dead-lettered".to_owned(), 0, dead),
        ];
        Ok(())
    }

    /// A consistent copy of the database as it is now (for the api benchmark).
    pub async fn snapshot(&self, to: &std::path::Path) -> Result<()> {
        let sql = format!(
            "VACUUM INTO '{}'",
            to.display().to_string().replace('\'', "''")
        );
        self.db.execute(AssertSqlSafe(sql)).await?;
        Ok(())
    }

    /// Stops both workers with SIGTERM; records their peak memory. Keeps the broker.
    pub async fn stop_workers(self, run: &mut PipelineRun) -> Result<(NatsServer, TempDir)> {
        self.db.close().await;
        run.ingestor_mib = self.ingestor.stop()?;
        run.alerter_mib = self.alerter.stop()?;
        Ok((self.nats, self.dir))
    }
}

/// One whole pipeline run: `count` events as fast as possible, then the two latency phases.
/// With `snapshot_to`, the database after the sustained phase is copied there.
pub async fn run(
    count: u64,
    seed: u64,
    snapshot_to: Option<&std::path::Path>,
) -> Result<(PipelineRun, NatsServer, TempDir)> {
    let mut run = PipelineRun::default();
    let events = load::events(count, seed)?;
    let stack = Stack::start().await?;
    stack.sustained(&events, &mut run).await?;
    stack.check(&events, &mut run).await?;
    if let Some(path) = snapshot_to {
        stack.snapshot(path).await?;
    }
    let mut sent = events;

    let fixed_rate = 1000.0;
    let phase = (LATENCY_WARM_UP + LATENCY_PHASE).as_secs_f64();
    let fixed = load::events((fixed_rate * phase) as u64, seed + 1)?;
    let warm = (fixed_rate * LATENCY_WARM_UP.as_secs_f64()) as usize;
    run.latency_fixed = stack.latency(&fixed, fixed_rate, warm).await?;
    sent.extend(fixed);

    run.half_rate = run.stored_rate / 2.0;
    let half = load::events((run.half_rate * phase) as u64, seed + 2)?;
    let warm = (run.half_rate * LATENCY_WARM_UP.as_secs_f64()) as usize;
    run.latency_half = stack.latency(&half, run.half_rate, warm).await?;
    sent.extend(half);

    // Checked again over everything sent, the latency phases included.
    let sustained_checks = std::mem::take(&mut run.checks);
    stack.check(&sent, &mut run).await?;
    for check in &mut run.checks {
        check.0 = format!("after the latency phases too: {}", check.0);
    }
    run.checks.splice(0..0, sustained_checks);
    let (nats, dir) = stack.stop_workers(&mut run).await?;
    Ok((run, nats, dir))
}
