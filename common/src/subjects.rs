//! Every NATS subject, stream and durable consumer threatmon uses, named and declared here
//! and nowhere else. Each service calls [`ensure_streams_within`] at start; it is idempotent.
//!
//! ```text
//! events.<source>              EVENTS       sensors and the API publish; the ingestor consumes
//! escalations.<severity>       ESCALATIONS  the ingestor publishes; the alerter consumes (work queue)
//! alerts.created.<severity>    ALERTS       the alerter publishes; operators subscribe
//! alerts.updated.<status>      ALERTS       the API publishes on a status change
//! deadletter.<stage>           DEADLETTER   a message no stage could take, with the reason
//! ```

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::bus::BusError;
use crate::domain::{AlertStatus, Severity};
use crate::storage::Storage;

/// Stream of incoming events.
pub const EVENTS_STREAM: &str = "EVENTS";
/// Everything on [`EVENTS_STREAM`].
pub const EVENTS_ALL: &str = "events.>";
/// Stream of events at or above the alert threshold, waiting for an alert.
pub const ESCALATIONS_STREAM: &str = "ESCALATIONS";
/// Everything on [`ESCALATIONS_STREAM`].
pub const ESCALATIONS_ALL: &str = "escalations.>";
/// Stream of alert notifications (created and updated), replayable by operators.
pub const ALERTS_STREAM: &str = "ALERTS";
/// Everything on [`ALERTS_STREAM`].
pub const ALERTS_ALL: &str = "alerts.>";
/// Stream of messages that could not be processed, with the reason in a header.
pub const DEADLETTER_STREAM: &str = "DEADLETTER";
/// Everything on [`DEADLETTER_STREAM`].
pub const DEADLETTER_ALL: &str = "deadletter.>";

/// Durable consumer the ingestors share on [`EVENTS_STREAM`].
pub const INGESTOR_CONSUMER: &str = "ingestor";
/// Durable consumer the alerters share on [`ESCALATIONS_STREAM`].
pub const ALERTER_CONSUMER: &str = "alerter";

/// Durable consumer the alerters' notification delivery shares on [`ALERTS_STREAM`].
pub const NOTIFIER_CONSUMER: &str = "notifier";
/// The dead-letter stage of notification delivery (`deadletter.notify`).
pub const STAGE_NOTIFY: &str = "notify";

/// The dead-letter stage of the ingestor.
pub const STAGE_INGEST: &str = "ingest";
/// The dead-letter stage of the alerter.
pub const STAGE_ALERT: &str = "alert";

/// How long JetStream remembers a `Nats-Msg-Id` to drop a repeat. The database's unique keys
/// make every stage idempotent beyond this window; the window only saves work.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);

/// The subject a sensor publishes to: `events.<source>`. Characters NATS gives meaning to
/// (`.`, `*`, `>`, white space) are replaced so that any sensor name makes one token.
pub fn event_subject(source: &str) -> String {
    let token: String = source
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect();
    if token.is_empty() {
        "events.unknown".to_owned()
    } else {
        format!("events.{token}")
    }
}

/// `escalations.<severity>`.
pub fn escalation_subject(severity: Severity) -> String {
    format!("escalations.{}", severity.subject_token())
}

/// `alerts.created.<severity>`.
pub fn alert_created_subject(severity: Severity) -> String {
    format!("alerts.created.{}", severity.subject_token())
}

/// `alerts.updated.<status>`.
pub fn alert_updated_subject(status: AlertStatus) -> String {
    format!("alerts.updated.{}", status.subject_token())
}

/// `deadletter.<stage>`.
pub fn deadletter_subject(stage: &str) -> String {
    format!("deadletter.{stage}")
}

fn stream(
    name: &str,
    subject: &str,
    description: &str,
    retention: RetentionPolicy,
    max_age: Duration,
) -> StreamConfig {
    StreamConfig {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        description: Some(description.to_owned()),
        retention,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_age,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The four streams, as declared.
pub fn stream_configs() -> [StreamConfig; 4] {
    [
        stream(
            EVENTS_STREAM,
            EVENTS_ALL,
            "Security events from sensors and the API",
            RetentionPolicy::Limits,
            7 * DAY,
        ),
        // A work queue: an escalation is gone once its alert is made and notified.
        stream(
            ESCALATIONS_STREAM,
            ESCALATIONS_ALL,
            "Events at or above the alert threshold, waiting for their alert",
            RetentionPolicy::WorkQueue,
            Duration::ZERO,
        ),
        stream(
            ALERTS_STREAM,
            ALERTS_ALL,
            "Alert notifications: alerts.created.<severity>, alerts.updated.<status>",
            RetentionPolicy::Limits,
            30 * DAY,
        ),
        stream(
            DEADLETTER_STREAM,
            DEADLETTER_ALL,
            "Messages no stage could process, with the reason in the Threatmon-Reason header",
            RetentionPolicy::Limits,
            90 * DAY,
        ),
    ]
}

/// Creates the streams, or updates them to the declared settings. Safe to run at every start,
/// but not from two clients at once on nats-server before 2.9.16: services declare them
/// through [`ensure_streams_within`], which takes turns with the others.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), BusError> {
    for config in stream_configs() {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| BusError::setup(format!("stream {name}"), e))?;
    }
    Ok(())
}

/// [`ensure_streams`], one service at a time, retried for up to `patience` while JetStream
/// does not answer.
///
/// Services that share `storage` take turns ([`Storage::one_setup_at_a_time`]): several
/// starting at once on a new nats-server 2.9.10 would otherwise create each stream
/// concurrently, which that server gets wrong. A service starting while the server restarts
/// (or before JetStream has recovered its streams) waits for it, as it waits for the first
/// connection, instead of exiting.
pub async fn ensure_streams_within(
    js: &jetstream::Context,
    storage: &Storage,
    patience: Duration,
) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(100);
    loop {
        let declared = match storage.one_setup_at_a_time(ensure_streams(js)).await {
            Ok(declared) => declared,
            Err(err) => Err(BusError::setup(
                "taking turns with other services through the database",
                err,
            )),
        };
        match declared {
            Ok(()) => return Ok(()),
            Err(err) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %crate::telemetry::error_chain(&err), "JetStream not ready yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => return Err(err),
        }
    }
}

/// The settings of a durable pull consumer.
fn durable(name: &str, filter: &str, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: filter.to_owned(),
        deliver_policy: DeliverPolicy::All,
        // Each message is acknowledged on its own: several workers may share the consumer,
        // and "ack all" would acknowledge another worker's messages.
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Never give up on a message: a transient failure is retried with a back-off, and
        // a message that can never succeed is dead-lettered by the worker, not dropped here.
        max_deliver: -1,
        max_ack_pending: 20_000,
        ..Default::default()
    }
}

/// The ingestors' consumer on [`EVENTS_STREAM`].
pub fn ingestor_consumer(ack_wait: Duration) -> pull::Config {
    durable(INGESTOR_CONSUMER, EVENTS_ALL, ack_wait)
}

/// The alerters' consumer on [`ESCALATIONS_STREAM`].
pub fn alerter_consumer(ack_wait: Duration) -> pull::Config {
    durable(ALERTER_CONSUMER, ESCALATIONS_ALL, ack_wait)
}

/// The notification delivery's consumer on [`ALERTS_STREAM`]: from the first message
/// published after it is made (a new deployment does not notify 30 days of old alerts).
pub fn notifier_consumer(ack_wait: Duration) -> pull::Config {
    pull::Config {
        deliver_policy: DeliverPolicy::New,
        ..durable(NOTIFIER_CONSUMER, ALERTS_ALL, ack_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_single_tokens_under_their_roots() {
        assert_eq!(event_subject("fw-edge-01"), "events.fw-edge-01");
        assert_eq!(event_subject("a.b *>c"), "events.a_b___c");
        assert_eq!(event_subject(""), "events.unknown");
        assert_eq!(
            escalation_subject(Severity::Critical),
            "escalations.critical"
        );
        assert_eq!(alert_created_subject(Severity::High), "alerts.created.high");
        assert_eq!(
            alert_updated_subject(AlertStatus::Acknowledged),
            "alerts.updated.acknowledged"
        );
        assert_eq!(deadletter_subject(STAGE_INGEST), "deadletter.ingest");
    }
}
