//! The NATS side: connecting, publishing durably (the PubAck is the proof), and dead letters.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, publish::PublishAck};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;

use crate::subjects::deadletter_subject;

/// Header on a dead letter: why it could not be processed.
pub const REASON_HEADER: &str = "Threatmon-Reason";
/// Header on a dead letter: the subject it was first published to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Threatmon-Original-Subject";
/// Header on a dead letter: its sequence in the stream it came from.
pub const ORIGINAL_SEQUENCE_HEADER: &str = "Threatmon-Original-Sequence";
/// Header on a dead letter: the stream it came from.
pub const ORIGINAL_STREAM_HEADER: &str = "Threatmon-Original-Stream";
/// JetStream's idempotency header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Longest header value we write (a dead letter's reason), in bytes, before the ellipsis.
const MAX_HEADER_VALUE_BYTES: usize = 2048;

/// An error from the NATS client, kept whole as the source of a [`BusError`].
pub type ClientError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong with NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// Where we tried.
        url: String,
        /// What the client said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Declaring a stream or consumer failed.
    #[error("JetStream setup failed: {what}")]
    Setup {
        /// What was being declared.
        what: String,
        /// What the client said.
        #[source]
        source: ClientError,
    },
    /// A publish was not acknowledged by the stream (timeout, no stream, server gone).
    #[error("publish to {subject} not acknowledged")]
    Publish {
        /// Where it went.
        subject: String,
        /// What the client said.
        #[source]
        source: ClientError,
    },
    /// A value cannot be a NATS header value (it holds CR or LF). Not transient: the same
    /// value fails again.
    #[error("the {name} header cannot hold this value")]
    InvalidHeader {
        /// Which header.
        name: &'static str,
        /// What the client said.
        #[source]
        source: async_nats::header::ParseHeaderValueError,
    },
    /// A message body could not be encoded. Not transient.
    #[error("cannot encode a message for {subject}")]
    Encode {
        /// Where it was going.
        subject: String,
        /// What the encoder said.
        #[source]
        source: serde_json::Error,
    },
}

impl BusError {
    /// True when trying the same work again later may succeed: the broker was away, slow or
    /// restarting. A value the protocol cannot carry fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            BusError::Connect { .. } | BusError::Setup { .. } | BusError::Publish { .. } => true,
            BusError::InvalidHeader { .. } | BusError::Encode { .. } => false,
        }
    }

    /// A [`BusError::Setup`] for `what`.
    pub fn setup(what: impl Into<String>, source: impl Into<ClientError>) -> Self {
        BusError::Setup {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Connects to NATS, retrying for up to `patience` so that services started alongside the
/// server wait for it. After the first connection the client reconnects on its own, forever.
pub async fn connect(
    url: &str,
    name: &str,
    patience: Duration,
) -> Result<async_nats::Client, BusError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(100);
    loop {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempt| Duration::from_millis(100 * attempt.min(20) as u64))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        match options.connect(url).await {
            Ok(client) => return Ok(client),
            Err(err) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(url, error = %err, "NATS not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                return Err(BusError::Connect {
                    url: url.to_owned(),
                    source: err,
                });
            }
        }
    }
}

/// A message to publish to a stream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where to.
    pub subject: String,
    /// JetStream's idempotency key: a repeat within the duplicate window is stored once.
    pub msg_id: String,
    /// The body.
    pub payload: Bytes,
    /// Further headers.
    pub headers: HeaderMap,
}

impl Outgoing {
    /// A JSON message with an idempotency key.
    pub fn json(
        subject: String,
        msg_id: String,
        value: &impl serde::Serialize,
    ) -> Result<Self, BusError> {
        match serde_json::to_vec(value) {
            Ok(payload) => Ok(Outgoing {
                subject,
                msg_id,
                payload: Bytes::from(payload),
                headers: HeaderMap::new(),
            }),
            Err(source) => Err(BusError::Encode { subject, source }),
        }
    }
}

/// Most publishes one [`publish_all`] has in flight. Past 5,000 awaiting their PubAck the
/// client holds further publishes back (its default limit), and a bulk action of 10,000
/// changes published that way got only 5,000 out in 20 s; in windows all go in about a second.
const PUBLISH_WINDOW: usize = 2048;

/// Publishes every message, up to `PUBLISH_WINDOW` (2,048) in flight at once, and returns
/// when the stream has acknowledged every one: only then are they durable. Any failure fails
/// the whole call (the caller retries the whole batch; the idempotency keys absorb what got
/// through).
pub async fn publish_all(
    js: &jetstream::Context,
    messages: Vec<Outgoing>,
) -> Result<Vec<PublishAck>, BusError> {
    let mut acks = Vec::with_capacity(messages.len());
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let window: Vec<Outgoing> = messages.by_ref().take(PUBLISH_WINDOW).collect();
        acks.extend(publish_window(js, window).await?);
    }
    Ok(acks)
}

async fn publish_window(
    js: &jetstream::Context,
    messages: Vec<Outgoing>,
) -> Result<Vec<PublishAck>, BusError> {
    let mut pending: Vec<(String, PublishAckFuture)> = Vec::with_capacity(messages.len());
    for message in messages {
        let mut headers = message.headers;
        headers.insert(
            MSG_ID_HEADER,
            exact_header_value(MSG_ID_HEADER, &message.msg_id)?,
        );
        let ack = js
            .publish_with_headers(message.subject.clone(), headers, message.payload)
            .await
            .map_err(|e| BusError::Publish {
                subject: message.subject.clone(),
                source: Box::new(e),
            })?;
        pending.push((message.subject, ack));
    }
    let mut acks = Vec::with_capacity(pending.len());
    for (subject, ack) in pending {
        acks.push(ack.await.map_err(|e| BusError::Publish {
            subject,
            source: Box::new(e),
        })?);
    }
    Ok(acks)
}

/// `value` as a header value, exactly, or the reason it cannot be one. async-nats's
/// `From<&str>` (what `HeaderMap::insert` with a `&str` uses) panics on CR or LF, so every
/// header built from data goes through here or [`header_safe`].
pub fn exact_header_value(name: &'static str, value: &str) -> Result<HeaderValue, BusError> {
    value
        .parse::<HeaderValue>()
        .map_err(|source| BusError::InvalidHeader { name, source })
}

/// Any text as a header value that still says what it said: one line, control characters
/// written as escapes (`\r`, `\n`, `\t`, `\u{7f}`, …), at most [`MAX_HEADER_VALUE_BYTES`]
/// cut on a character boundary and marked with `…`. Made to be read, not decoded (a
/// backslash stays as it is): a dead letter keeps the original message byte for byte.
pub fn header_safe(text: &str) -> HeaderValue {
    let mut line = String::with_capacity(text.len().min(MAX_HEADER_VALUE_BYTES) + 8);
    for c in text.chars() {
        let before = line.len();
        match c {
            '\r' => line.push_str("\\r"),
            '\n' => line.push_str("\\n"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => line.extend(c.escape_unicode()),
            c => line.push(c),
        }
        if line.len() > MAX_HEADER_VALUE_BYTES {
            // Never half an escape or half a character: drop the whole last one.
            line.truncate(before);
            line.push('…');
            break;
        }
    }
    // Cannot fail: the line holds no CR or LF. The fallback only keeps this panic-free.
    line.parse().unwrap_or_default()
}

/// The dead letter of `message` for `deadletter.<stage>`: its payload byte for byte, the
/// reason and where it came from in headers (every one made header-safe), and an
/// idempotency key from its place in its stream, so that a redelivered original makes a
/// duplicate JetStream drops. The original is acknowledged only once this is published.
pub fn dead_letter_message(stage: &str, message: &jetstream::Message, reason: &str) -> Outgoing {
    let mut headers = HeaderMap::new();
    headers.insert(REASON_HEADER, header_safe(reason));
    headers.insert(
        ORIGINAL_SUBJECT_HEADER,
        header_safe(message.subject.as_str()),
    );
    let (stream, sequence) = match message.info() {
        Ok(info) => (info.stream.to_owned(), info.stream_sequence),
        Err(_) => (String::from("?"), 0),
    };
    headers.insert(ORIGINAL_STREAM_HEADER, header_safe(&stream));
    headers.insert(ORIGINAL_SEQUENCE_HEADER, HeaderValue::from(sequence));
    Outgoing {
        subject: deadletter_subject(stage),
        msg_id: format!("{stage}:{}:{sequence}", header_safe(&stream).as_str()),
        payload: message.payload.clone(),
        headers,
    }
}

/// The value of a header on a message, if present and not empty.
pub fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_one_bounded_header_line_that_still_says_what_was_wrong() {
        assert_eq!(
            header_safe("bad \"SEV\r\nERE\"\t\u{0}\u{7f}\u{85}\\").as_str(),
            r#"bad "SEV\r\nERE"\t\u{0}\u{7f}\u{85}\"#
        );
        let long = "é".repeat(MAX_HEADER_VALUE_BYTES);
        let cut = header_safe(&long);
        assert!(cut.as_str().len() <= MAX_HEADER_VALUE_BYTES + '…'.len_utf8());
        assert!(cut.as_str().ends_with('…'));
        let controls = "\u{1}".repeat(MAX_HEADER_VALUE_BYTES);
        let cut = header_safe(&controls);
        assert!(cut.as_str().trim_end_matches('…').ends_with("\\u{1}"));
    }

    #[test]
    fn a_header_value_with_a_line_break_is_an_error_not_a_panic() {
        assert!(matches!(
            exact_header_value(MSG_ID_HEADER, "a\r\nb"),
            Err(BusError::InvalidHeader { .. })
        ));
        assert_eq!(
            exact_header_value(MSG_ID_HEADER, "a b").unwrap().as_str(),
            "a b"
        );
    }
}

/// `alerts.created.<severity>`: the alert as it was made; its id is the idempotency key, so
/// a redelivered escalation announces it again without a second copy in the stream.
pub fn alert_created_message(alert: &crate::domain::Alert) -> Result<Outgoing, BusError> {
    Outgoing::json(
        crate::subjects::alert_created_subject(alert.severity),
        alert.id.to_string(),
        alert,
    )
}

/// What `alerts.updated.<status>` carries: the alert after the change, and the change.
#[derive(Debug, serde::Serialize)]
struct AlertUpdated<'a> {
    #[serde(flatten)]
    alert: &'a crate::domain::Alert,
    change: &'a crate::storage::StatusChange,
}

/// `alerts.updated.<status>` for a recorded change, keyed by the change (each is stored in
/// the ALERTS stream once, whoever announces it: the api, its relay or the alerter).
pub fn alert_updated_message(
    alert: &crate::domain::Alert,
    change: &crate::storage::StatusChange,
) -> Result<Outgoing, BusError> {
    Outgoing::json(
        crate::subjects::alert_updated_subject(change.to_status),
        format!("alert-{}-change-{}", alert.id, change.id),
        &AlertUpdated { alert, change },
    )
}
