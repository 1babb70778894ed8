//! The events a benchmark publishes, and publishing them as a sensor fleet would: each with a
//! `uid` of the run's kind (random UUIDv4, the worst case for the unique index, or
//! time-ordered UUIDv7) as its `Nats-Msg-Id`, many PubAcks in flight.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use cli::generate::{Generator, Mix};
use common::domain::Severity;

/// PubAcks a publisher keeps in flight (CEILINGS.md measured the broker with 1,024).
pub const IN_FLIGHT: usize = 1024;

/// One event ready to publish.
#[derive(Clone)]
pub struct Outgoing {
    /// `events.<sensor>`.
    pub subject: String,
    /// The event's `uid`, also its `Nats-Msg-Id`.
    pub uid: String,
    /// Its severity.
    pub severity: Severity,
    /// The JSON body.
    pub payload: Bytes,
}

/// Which uids the benchmark's sensors choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Uids {
    /// Random UUIDv4: the worst case for the unique index.
    V4,
    /// Time-ordered UUIDv7 (what `threatctl publish` generates).
    V7,
}

impl Uids {
    /// `v4` or `v7`, as the `--uids` flag spells it.
    pub fn flag(self) -> &'static str {
        match self {
            Uids::V4 => "v4",
            Uids::V7 => "v7",
        }
    }

    /// A new uid of this kind.
    fn generate(self) -> String {
        match self {
            Uids::V4 => uuid::Uuid::new_v4().to_string(),
            Uids::V7 => uuid::Uuid::now_v7().to_string(),
        }
    }
}

/// `count` realistic events in a 25/25/25/25 severity mix, with `uids` of that kind.
pub fn events(count: u64, seed: u64, uids: Uids) -> Result<Vec<Outgoing>> {
    let generator = Generator::new(&Mix::default(), count, seed, chrono::Utc::now());
    generator
        .map(|mut event| {
            let uid = uids.generate();
            let severity = event
                .get("severity")
                .and_then(|s| s.as_str())
                .map(common::config::parse_severity)
                .context("generated event without severity")?
                .map_err(anyhow::Error::msg)?;
            let source = event
                .get("sourceName")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_owned();
            event["uid"] = serde_json::Value::String(uid.clone());
            Ok(Outgoing {
                subject: common::subjects::event_subject(&source),
                uid,
                severity,
                payload: Bytes::from(serde_json::to_vec(&event)?),
            })
        })
        .collect()
}

/// Event types the folding load spreads its keys over (ten of the generator's own).
const FOLD_TYPES: [&str; 10] = [
    "port_scan",
    "ssh_brute_force",
    "lateral_movement",
    "c2_beacon",
    "sql_injection",
    "malware_detected",
    "privilege_escalation",
    "dns_tunneling",
    "phishing_email",
    "honeypot_interaction",
];

/// The events of [`events`] reported by `keys / 10` sensors of ten event types each, so that
/// the escalated ones fall on exactly `keys` (`sourceName`, `eventType`) pairs, the default
/// fold key, in turn (the j-th escalated event on pair `j % keys`). The folding benchmark's
/// load: a fleet whose sensors repeat themselves.
pub fn fold_events(count: u64, seed: u64, uids: Uids, keys: u64) -> Result<Vec<Outgoing>> {
    let keys = keys.max(1);
    let mut escalated = 0u64;
    events(count, seed, uids)?
        .into_iter()
        .enumerate()
        .map(|(i, mut event)| {
            let key = if event.severity >= Severity::High {
                escalated += 1;
                (escalated - 1) % keys
            } else {
                i as u64 % keys
            };
            let source = format!("sensor-{:03}", key / FOLD_TYPES.len() as u64);
            let event_type = FOLD_TYPES[(key % FOLD_TYPES.len() as u64) as usize];
            let mut body: serde_json::Value = serde_json::from_slice(&event.payload)?;
            body["sourceName"] = serde_json::Value::String(source.clone());
            body["eventType"] = serde_json::Value::String(event_type.to_owned());
            event.subject = common::subjects::event_subject(&source);
            event.payload = Bytes::from(serde_json::to_vec(&body)?);
            Ok(event)
        })
        .collect()
}

/// How many of `events` are at or above `threshold`.
pub fn at_or_above(events: &[Outgoing], threshold: Severity) -> u64 {
    events.iter().filter(|e| e.severity >= threshold).count() as u64
}

/// Publishes with up to [`IN_FLIGHT`] PubAcks outstanding; returns once every one is acked.
/// A refused publish fails the run: the benchmark's counts would no longer hold.
pub struct Publisher {
    js: jetstream::Context,
    pending: VecDeque<PublishAckFuture>,
    /// How many the broker has acknowledged.
    pub acked: u64,
}

impl Publisher {
    /// A publisher on `js`.
    pub fn new(js: jetstream::Context) -> Self {
        Publisher {
            js,
            pending: VecDeque::with_capacity(IN_FLIGHT),
            acked: 0,
        }
    }

    /// Sends one message with `Nats-Msg-Id: msg_id`.
    pub async fn send(&mut self, subject: &str, msg_id: &str, payload: Bytes) -> Result<()> {
        if self.pending.len() >= IN_FLIGHT {
            self.settle_one().await?;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .context("publishing")?;
        self.pending.push_back(ack);
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<()> {
        if let Some(ack) = self.pending.pop_front() {
            let ack = ack.await.context("waiting for a PubAck")?;
            if ack.duplicate {
                bail!("the broker reported a duplicate: {}", ack.sequence);
            }
            self.acked += 1;
        }
        Ok(())
    }

    /// Waits for every outstanding PubAck.
    pub async fn finish(&mut self) -> Result<u64> {
        while !self.pending.is_empty() {
            self.settle_one().await?;
        }
        Ok(self.acked)
    }
}

/// When one event was published: by the monotonic clock (for the total latency) and by the
/// wall clock, in microseconds since the epoch (to compare with the services' timestamps).
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Monotonic.
    pub at: Instant,
    /// Wall clock, µs since the Unix epoch (UTC), as `events.created_at` is.
    pub wall_us: i64,
}

/// Microseconds since the Unix epoch, now.
pub fn wall_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Publishes `events` at `rate` a second (in 1 ms ticks), returning when each was sent.
pub async fn publish_at_rate(
    js: jetstream::Context,
    events: &[Outgoing],
    rate: f64,
) -> Result<Vec<Sent>> {
    let mut publisher = Publisher::new(js);
    let mut sent_at = Vec::with_capacity(events.len());
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 0usize;
    while next < events.len() {
        ticker.tick().await;
        // How many should be out by now, so rounding never drifts from the rate.
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(events.len());
        while next < due {
            let event = &events[next];
            sent_at.push(Sent {
                at: Instant::now(),
                wall_us: wall_us(),
            });
            publisher
                .send(&event.subject, &event.uid, event.payload.clone())
                .await?;
            next += 1;
        }
    }
    publisher.finish().await?;
    Ok(sent_at)
}
