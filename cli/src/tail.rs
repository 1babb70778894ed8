//! `threatctl tail`: follow alerts from the ALERTS stream as they are created and updated.

use std::io::{ErrorKind, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{
        DeliverPolicy,
        pull::{self, OrderedConfig},
    },
};
use chrono::{DateTime, Utc};
use common::config::parse_severity;
use common::domain::Severity;
use common::subjects::{ALERTS_ALL, ALERTS_STREAM, alert_created_subject};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::{Error, chain, one_line};
use crate::nats::{self, NatsArgs};
use crate::signal::CtrlC;

/// Follow alerts (alerts.>) as they are created and updated, one line each.
///
/// Reads through an ordered consumer on the ALERTS stream: new alerts only by default, or
/// from --since / --all; it carries on across NATS server restarts. Ctrl-C ends it (exit 0).
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// Only alerts created at this severity (alerts.created.<severity>), plus every status
    /// update (alerts.updated.>).
    #[arg(long, value_parser = parse_severity, conflicts_with = "subject")]
    severity: Option<Severity>,

    /// Follow these subjects of the ALERTS stream instead of alerts.> (repeatable; NATS
    /// wildcards allowed), e.g. alerts.created.critical.
    #[arg(long, value_name = "SUBJECT")]
    subject: Vec<String>,

    /// Start with the alerts stored since this time (RFC 3339, e.g. 2026-11-28T09:00:00Z)
    /// instead of new ones only.
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "all")]
    since: Option<DateTime<Utc>>,

    /// Start with every alert the stream still holds.
    #[arg(long)]
    all: bool,

    /// Exit after this many alerts.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// One JSON object per line: the message's payload plus its "subject".
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    nats: NatsArgs,
}

fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-11-28T09:00:00Z ({e})"))
}

impl TailArgs {
    /// The subjects followed.
    fn subjects(&self) -> Vec<String> {
        if let Some(severity) = self.severity {
            vec![
                alert_created_subject(severity),
                "alerts.updated.>".to_owned(),
            ]
        } else if !self.subject.is_empty() {
            self.subject.iter().map(|s| s.trim().to_owned()).collect()
        } else {
            vec![ALERTS_ALL.to_owned()]
        }
    }
}

/// Whether `subject` matches `pattern`, with NATS wildcards: `*` is one token, `>` the rest.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for want in pattern.split('.') {
        match (want, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(token)) if want == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

fn timestamp(value: &Value) -> Option<String> {
    let at = DateTime::parse_from_rfc3339(value.as_str()?).ok()?;
    Some(
        at.with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%SZ")
            .to_string(),
    )
}

/// An alert message as one readable line: time, created/updated, severity, status, id,
/// event type, sensor (and who changed it, with their note, for an update).
pub fn readable_line(subject: &str, payload: &[u8]) -> String {
    let kind = subject
        .strip_prefix("alerts.")
        .and_then(|rest| rest.split_once('.'))
        .map_or(subject, |(kind, _)| kind);
    let alert = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(alert)) if alert.contains_key("id") => alert,
        _ => {
            let text: String = one_line(&String::from_utf8_lossy(payload))
                .chars()
                .take(200)
                .collect();
            let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ");
            return format!("{now}  {subject}  {text}");
        }
    };
    let field = |name: &str| match alert.get(name) {
        Some(Value::String(s)) => one_line(s),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    let at = if kind == "updated" {
        alert.get("updated_at")
    } else {
        alert.get("created_at")
    };
    let time = at
        .and_then(timestamp)
        .unwrap_or_else(|| Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string());
    let mut line = format!(
        "{time}  {kind:<7}  {:<8}  {:<12}  #{:<6}  {}  {}",
        field("severity"),
        field("status"),
        field("id"),
        field("eventType"),
        field("sourceName"),
    );
    if let Some(change) = alert.get("change") {
        if let Some(by) = change.get("changed_by").and_then(Value::as_i64) {
            line.push_str(&format!("  by user {by}"));
        }
        if let Some(note) = change
            .get("note")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            line.push_str(&format!("  note: {}", one_line(note)));
        }
    }
    line
}

/// An alert message as one line of JSON: the payload with its `subject` added.
pub fn json_line(subject: &str, payload: &[u8]) -> String {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut object)) => {
            object.insert("subject".to_owned(), json!(subject));
            Value::Object(object).to_string()
        }
        Ok(other) => json!({ "subject": subject, "payload": other }).to_string(),
        Err(_) => json!({
            "subject": subject,
            "payload": String::from_utf8_lossy(payload),
        })
        .to_string(),
    }
}

/// An ordered consumer on the ALERTS stream that can be opened again where it left off.
struct Follower {
    stream: jetstream::stream::Stream,
    filter_subject: String,
    start: DeliverPolicy,
    last_sequence: Option<u64>,
}

impl Follower {
    /// Opens a consumer from the start policy, or after the last message seen.
    async fn open(&self) -> Result<pull::Ordered, String> {
        let deliver_policy = match self.last_sequence {
            Some(sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
            None => self.start,
        };
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: self.filter_subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| chain(&e))?;
        consumer.messages().await.map_err(|e| chain(&e))
    }
}

/// Opens the follower again, retrying until it works; `None` when Ctrl-C came first.
async fn reopen(follower: &Follower, ctrl_c: &mut CtrlC) -> Option<pull::Ordered> {
    let mut delay = Duration::from_millis(250);
    loop {
        match follower.open().await {
            Ok(messages) => return Some(messages),
            Err(reason) => eprintln!("threatctl: {ALERTS_STREAM}: {reason}; trying again"),
        }
        tokio::select! {
            () = ctrl_c.recv() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Runs `threatctl tail`.
pub async fn run(args: TailArgs) -> Result<(), Error> {
    let subjects = args.subjects();
    let url = args.nats.nats_url.clone();
    let mut ctrl_c = CtrlC::listen();
    let reconnected = Arc::new(Notify::new());
    let client = nats::connect(&args.nats, Some(Arc::clone(&reconnected))).await?;
    let js = jetstream::new(client);
    let stream = nats::stream(&js, ALERTS_STREAM, &url).await?;

    let (start, from) = if args.all {
        (DeliverPolicy::All, "every stored alert".to_owned())
    } else if let Some(since) = args.since {
        let nanos = since.timestamp_nanos_opt().unwrap_or_default();
        let start_time = async_nats::datetime::from_nanos(i128::from(nanos))
            .map_err(|e| Error::new(format!("--since: {e}")))?;
        (
            DeliverPolicy::ByStartTime { start_time },
            format!("since {}", since.to_rfc3339()),
        )
    } else {
        // "New" as a start sequence rather than DeliverPolicy::New, so that a consumer opened
        // again after a reconnect, before any alert arrived, still misses nothing.
        let last = stream.cached_info().state.last_sequence;
        (
            DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            "new alerts".to_owned(),
        )
    };
    // One subject is filtered by the server; several (NATS 2.9 takes one filter) on our side,
    // from one consumer, so that the stream's order is kept.
    let filter_subject = match subjects.as_slice() {
        [one] => one.clone(),
        _ => String::new(),
    };
    let mut follower = Follower {
        stream,
        filter_subject,
        start,
        last_sequence: None,
    };
    let mut messages = follower
        .open()
        .await
        .map_err(|reason| Error::new(format!("cannot follow {}: {reason}", subjects.join(", "))))?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "following {} on {ALERTS_STREAM} ({from}); Ctrl-C to stop",
            subjects.join(", ")
        );
    }

    let mut printed = 0u64;
    while args.count.is_none_or(|count| printed < count) {
        let next = tokio::select! {
            () = ctrl_c.recv() => break,
            () = reconnected.notified() => None,
            next = messages.next() => Some(next),
        };
        let message = match next {
            Some(Some(Ok(message))) => message,
            failed => {
                // After a reconnect the server may have lost the consumer (a restart), and the
                // consumer would take a while to notice; after an error it is gone or stuck.
                // Either way, open a new one after the last alert seen.
                match failed {
                    None => {}
                    Some(Some(Err(err))) => {
                        eprintln!(
                            "threatctl: {ALERTS_STREAM}: {}; following again",
                            chain(&err)
                        );
                    }
                    Some(_) => {
                        eprintln!("threatctl: {ALERTS_STREAM}: the consumer ended; following again")
                    }
                }
                match reopen(&follower, &mut ctrl_c).await {
                    Some(reopened) => messages = reopened,
                    None => break,
                }
                continue;
            }
        };
        if let Ok(info) = message.info() {
            follower.last_sequence = Some(info.stream_sequence);
        }
        let subject = message.subject.as_str();
        if !subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
        {
            continue;
        }
        let line = if args.json {
            json_line(subject, &message.payload)
        } else {
            readable_line(subject, &message.payload)
        };
        match writeln!(std::io::stdout().lock(), "{line}") {
            Ok(()) => printed += 1,
            // Whoever read our output (`| head`) has had enough.
            Err(err) if err.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(err) => return Err(Error::with_cause("writing to stdout", &err)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_nats_does() {
        assert!(subject_matches("alerts.>", "alerts.created.high"));
        assert!(!subject_matches("alerts.>", "alerts"));
        assert!(subject_matches("alerts.*.high", "alerts.created.high"));
        assert!(!subject_matches("alerts.*", "alerts.created.high"));
        assert!(subject_matches(
            "alerts.created.high",
            "alerts.created.high"
        ));
        assert!(!subject_matches(
            "alerts.created.high",
            "alerts.created.critical"
        ));
        assert!(!subject_matches("alerts.created", "alerts.created.high"));
    }

    #[test]
    fn severity_follows_its_creations_and_every_update() {
        let args = TailArgs {
            severity: Some(Severity::High),
            subject: vec![],
            since: None,
            all: false,
            count: None,
            json: false,
            nats: NatsArgs {
                nats_url: String::new(),
                connect_timeout: std::time::Duration::from_secs(1),
            },
        };
        assert_eq!(args.subjects(), ["alerts.created.high", "alerts.updated.>"]);
        let args = TailArgs {
            severity: None,
            ..args
        };
        assert_eq!(args.subjects(), ["alerts.>"]);
    }

    #[test]
    fn alerts_read_as_one_line() {
        let created = br#"{"id":42,"event_id":7,"eventType":"port_scan","severity":"HIGH","sourceName":"fw-edge-01","status":"OPEN","created_at":"2026-11-28T10:00:00.123Z","updated_at":"2026-11-28T10:00:00.123Z"}"#;
        assert_eq!(
            readable_line("alerts.created.high", created),
            "2026-11-28 10:00:00Z  created  HIGH      OPEN          #42      port_scan  fw-edge-01"
        );
        let updated = br#"{"id":42,"eventType":"port_scan","severity":"HIGH","sourceName":"fw-edge-01","status":"ACKNOWLEDGED","created_at":"2026-11-28T10:00:00Z","updated_at":"2026-11-28T10:05:00+01:00","change":{"changed_by":3,"note":"on it\nnow"}}"#;
        assert_eq!(
            readable_line("alerts.updated.acknowledged", updated),
            "2026-11-28 09:05:00Z  updated  HIGH      ACKNOWLEDGED  #42      port_scan  fw-edge-01  by user 3  note: on it now"
        );
        let other = readable_line("alerts.created.high", b"not json");
        assert!(
            other.ends_with("  alerts.created.high  not json"),
            "{other}"
        );
    }

    #[test]
    fn json_lines_carry_the_subject() {
        let line = json_line("alerts.created.high", br#"{"id":1}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({"id": 1, "subject": "alerts.created.high"})
        );
        let line = json_line("alerts.created.high", b"[1]");
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({"subject": "alerts.created.high", "payload": [1]})
        );
    }
}
