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

/// Longest reason kept in a dead letter's header.
const MAX_REASON_BYTES: usize = 2048;

/// What can go wrong with NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// Where we tried.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// Declaring a stream or consumer failed.
    #[error("JetStream setup failed: {0}")]
    Setup(String),
    /// A publish was not acknowledged by the stream (timeout, no stream, server gone).
    #[error("publish to {subject} not acknowledged: {reason}")]
    Publish {
        /// Where it went.
        subject: String,
        /// What the client said.
        reason: String,
    },
    /// Acknowledging a delivery failed.
    #[error("acknowledging a message failed: {0}")]
    Ack(String),
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
                    reason: err.to_string(),
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
    ) -> Result<Self, serde_json::Error> {
        Ok(Outgoing {
            subject,
            msg_id,
            payload: Bytes::from(serde_json::to_vec(value)?),
            headers: HeaderMap::new(),
        })
    }
}

/// Publishes every message, all in flight at once, and returns when the stream has
/// acknowledged every one: only then are they durable. Any failure fails the whole call
/// (the caller retries the whole batch; the idempotency keys absorb what got through).
pub async fn publish_all(
    js: &jetstream::Context,
    messages: Vec<Outgoing>,
) -> Result<Vec<PublishAck>, BusError> {
    let mut pending: Vec<(String, PublishAckFuture)> = Vec::with_capacity(messages.len());
    for message in messages {
        let mut headers = message.headers;
        headers.insert(MSG_ID_HEADER, message.msg_id.as_str());
        let ack = js
            .publish_with_headers(message.subject.clone(), headers, message.payload)
            .await
            .map_err(|e| BusError::Publish {
                subject: message.subject.clone(),
                reason: e.to_string(),
            })?;
        pending.push((message.subject, ack));
    }
    let mut acks = Vec::with_capacity(pending.len());
    for (subject, ack) in pending {
        acks.push(ack.await.map_err(|e| BusError::Publish {
            subject,
            reason: e.to_string(),
        })?);
    }
    Ok(acks)
}

/// A header value fit for NATS: one line, bounded.
fn header_value(text: &str) -> HeaderValue {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    HeaderValue::from(line.as_str())
}

/// Publishes a copy of `message` to `deadletter.<stage>` with `reason`, and waits for the
/// stream's acknowledgement. The caller acknowledges the original only after this returns.
/// A redelivered original makes the same dead letter, which JetStream drops as a duplicate.
pub async fn dead_letter(
    js: &jetstream::Context,
    stage: &str,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), BusError> {
    let mut headers = HeaderMap::new();
    headers.insert(REASON_HEADER, header_value(reason));
    headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
    let (stream, sequence) = match message.info() {
        Ok(info) => (info.stream.to_owned(), info.stream_sequence),
        Err(_) => (String::from("?"), 0),
    };
    headers.insert(ORIGINAL_STREAM_HEADER, stream.as_str());
    headers.insert(ORIGINAL_SEQUENCE_HEADER, sequence.to_string().as_str());
    let outgoing = Outgoing {
        subject: deadletter_subject(stage),
        msg_id: format!("{stage}:{stream}:{sequence}"),
        payload: message.payload.clone(),
        headers,
    };
    publish_all(js, vec![outgoing]).await?;
    Ok(())
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
    fn reasons_become_one_bounded_header_line() {
        assert_eq!(header_value("a\r\nb").as_str(), "a  b");
        let long = "é".repeat(MAX_REASON_BYTES);
        assert!(header_value(&long).as_str().len() <= MAX_REASON_BYTES + '…'.len_utf8());
    }
}
