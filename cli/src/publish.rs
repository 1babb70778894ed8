//! `threatctl publish`: events into the EVENTS stream, as a sensor sends them.

use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::{PublishAckFuture, PublishErrorKind},
    publish::PublishAck,
};
use bytes::Bytes;
use chrono::Utc;
use common::bus::MSG_ID_HEADER;
use common::config::parse_severity;
use common::domain::{EventIn, Severity};
use common::subjects::{EVENTS_STREAM, event_subject};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, chain};
use crate::generate::{Generator, Mix};
use crate::jsonl::read_events;
use crate::nats::{self, NatsArgs};
use crate::signal::CtrlC;

/// How often a publish that was not acknowledged (timeout, server restarting) is tried in all.
const ATTEMPTS: u32 = 4;

/// Send events to events.<source> through JetStream and wait until the stream has them.
///
/// Give one event with --source/--type/--severity, a file of JSON lines with --file, or
/// --count generated events. Every event carries a Nats-Msg-Id (its uid, or a new UUID), so
/// a retry never stores it twice. Up to --max-in-flight publishes await their
/// acknowledgement at once.
// Flags of one kind of input conflict with the other kinds rather than `requires` theirs:
// clap drops a requirement on an argument that conflicts with one given.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["source", "file", "count"])))]
pub struct PublishArgs {
    /// The sensor that saw it (one event from flags).
    #[arg(long, requires_all = ["event_type", "severity"], help_heading = "One event")]
    source: Option<String>,

    /// What kind of thing happened, e.g. port_scan.
    #[arg(
        long = "type",
        value_name = "TYPE",
        conflicts_with_all = ["file", "count"],
        help_heading = "One event"
    )]
    event_type: Option<String>,

    /// LOW, MEDIUM, HIGH or CRITICAL.
    #[arg(long, value_parser = parse_severity, conflicts_with_all = ["file", "count"], help_heading = "One event")]
    severity: Option<Severity>,

    /// Free text.
    #[arg(long, conflicts_with_all = ["file", "count"], help_heading = "One event")]
    description: Option<String>,

    /// An attribute, KEY=VALUE (repeatable); VALUE is JSON when it parses as JSON, else text.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attribute,
          conflicts_with_all = ["file", "count"], help_heading = "One event")]
    attributes: Vec<(String, Value)>,

    /// Idempotency key (uid and Nats-Msg-Id); a new UUID when not given.
    #[arg(long, conflicts_with_all = ["file", "count"], help_heading = "One event")]
    uid: Option<String>,

    /// A file of events, one JSON object per line ("-" for standard input). Every line is
    /// checked before anything is sent; a line's "uid" becomes its Nats-Msg-Id.
    #[arg(long, value_name = "PATH", help_heading = "From a file")]
    file: Option<PathBuf>,

    /// Send the lines of --file as they are, even when they are not valid events (to exercise
    /// dead-lettering).
    #[arg(long, conflicts_with_all = ["source", "count"], help_heading = "From a file")]
    no_validate: bool,

    /// Generate this many realistic events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Generated")]
    count: Option<u64>,

    /// Events a second (0 = as fast as possible).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = parse_rate,
          conflicts_with_all = ["source", "file"], help_heading = "Generated")]
    rate: f64,

    /// Severity weights; the counts follow them exactly.
    #[arg(
        long,
        default_value = "LOW=25,MEDIUM=25,HIGH=25,CRITICAL=25",
        conflicts_with_all = ["source", "file"],
        help_heading = "Generated"
    )]
    mix: Mix,

    /// Seed for the generator: the same seed makes the same events (each still gets a new
    /// Nats-Msg-Id). Random when not given; the summary shows it.
    #[arg(long, conflicts_with_all = ["source", "file"], help_heading = "Generated")]
    seed: Option<u64>,

    /// Most publishes awaiting their acknowledgement at once.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_in_flight: u64,

    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    nats: NatsArgs,
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && (0.0..=10_000_000.0).contains(&rate) => Ok(rate),
        _ => Err("expected events a second, 0 (as fast as possible) or more".to_owned()),
    }
}

fn parse_attribute(value: &str) -> Result<(String, Value), String> {
    let Some((key, raw)) = value.split_once('=') else {
        return Err("expected KEY=VALUE".to_owned());
    };
    let key = key.trim();
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok((key.to_owned(), value))
}

/// One message to publish.
#[derive(Debug, Clone)]
struct Outgoing {
    subject: String,
    msg_id: String,
    payload: Bytes,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The events to send, and how many.
struct Source {
    messages: Box<dyn Iterator<Item = Outgoing> + Send>,
    total: u64,
    seed: Option<u64>,
}

fn from_flags(args: &PublishArgs) -> Result<Source, Error> {
    let mut event = Map::new();
    event.insert("sourceName".into(), json!(args.source));
    event.insert("eventType".into(), json!(args.event_type));
    event.insert("severity".into(), json!(args.severity));
    event.insert(
        "description".into(),
        json!(args.description.clone().unwrap_or_default()),
    );
    if let Some(uid) = &args.uid {
        event.insert("uid".into(), json!(uid));
    }
    if !args.attributes.is_empty() {
        let attributes: Map<String, Value> = args.attributes.iter().cloned().collect();
        event.insert("attributes".into(), Value::Object(attributes));
    }
    let event = Value::Object(event);
    let parsed = EventIn::from_value(event.clone()).map_err(|e| Error::new(e.to_string()))?;
    let message = Outgoing {
        subject: event_subject(&parsed.source_name),
        msg_id: parsed.uid.unwrap_or_else(new_id),
        payload: Bytes::from(event.to_string()),
    };
    Ok(Source {
        messages: Box::new(std::iter::once(message)),
        total: 1,
        seed: None,
    })
}

fn from_file(path: &PathBuf, validate: bool) -> Result<Source, Error> {
    let (name, events) = if path.as_os_str() == "-" {
        let name = "stdin".to_owned();
        let events = read_events(std::io::stdin().lock(), &name, validate)?;
        (name, events)
    } else {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::with_cause(&name, &e))?;
        let events = read_events(BufReader::new(file), &name, validate)?;
        (name, events)
    };
    if events.is_empty() {
        return Err(Error::new(format!("{name}: no events in it")));
    }
    let total = events.len() as u64;
    let messages = events.into_iter().map(|event| Outgoing {
        subject: event.subject,
        msg_id: event.uid.unwrap_or_else(new_id),
        payload: event.payload,
    });
    Ok(Source {
        messages: Box::new(messages),
        total,
        seed: None,
    })
}

fn generated(count: u64, mix: &Mix, seed: Option<u64>) -> Source {
    let seed = seed.unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let messages = Generator::new(mix, count, seed, Utc::now()).map(|event| Outgoing {
        subject: event_subject(event["sourceName"].as_str().unwrap_or_default()),
        msg_id: new_id(),
        payload: Bytes::from(event.to_string()),
    });
    Source {
        messages: Box::new(messages),
        total: count,
        seed: Some(seed),
    }
}

/// What a publish run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Messages published.
    pub sent: u64,
    /// Of those, acknowledged by the stream (duplicates included).
    pub acked: u64,
    /// Acknowledged as duplicates: the stream already had that Nats-Msg-Id.
    pub duplicates: u64,
    /// Never acknowledged, after retries.
    pub failed: u64,
    /// Seconds from the first publish to the last acknowledgement.
    pub elapsed_secs: f64,
    /// Acknowledged events a second.
    pub rate_per_sec: f64,
    /// The generator's seed, for generated events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, {} acked ({} duplicates), {} failed in {:.2} s ({:.0} events/s)",
            self.sent,
            self.acked,
            self.duplicates,
            self.failed,
            self.elapsed_secs,
            self.rate_per_sec
        )?;
        if let Some(seed) = self.seed {
            write!(f, ", seed {seed}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Tally {
    summary: Summary,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, result: Result<PublishAck, String>, progress: &ProgressBar) {
        match result {
            Ok(ack) => {
                self.summary.acked += 1;
                if ack.duplicate {
                    self.summary.duplicates += 1;
                }
            }
            Err(reason) => {
                self.summary.failed += 1;
                self.first_error.get_or_insert(reason);
            }
        }
        progress.inc(1);
    }
}

async fn publish_once(
    js: &jetstream::Context,
    message: &Outgoing,
) -> Result<PublishAckFuture, String> {
    let mut headers = HeaderMap::new();
    let msg_id =
        common::bus::exact_header_value(MSG_ID_HEADER, &message.msg_id).map_err(|e| chain(&e))?;
    headers.insert(MSG_ID_HEADER, msg_id);
    js.publish_with_headers(message.subject.clone(), headers, message.payload.clone())
        .await
        .map_err(|e| chain(&e))
}

/// Waits for the acknowledgement of a publish, publishing again (same Nats-Msg-Id, so never
/// stored twice) while the failure may pass: no answer in time, connection lost, no stream
/// answering during a server restart.
async fn deliver(
    js: jetstream::Context,
    message: Outgoing,
    first: Result<PublishAckFuture, String>,
) -> Result<PublishAck, String> {
    let mut pending = first;
    let mut attempt = 1;
    loop {
        let (retryable, reason) = match pending {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack),
                Err(err) => (
                    matches!(
                        err.kind(),
                        PublishErrorKind::TimedOut
                            | PublishErrorKind::BrokenPipe
                            | PublishErrorKind::StreamNotFound
                            | PublishErrorKind::MaxAckPending
                    ),
                    chain(&err),
                ),
            },
            Err(reason) => (true, reason),
        };
        if !retryable || attempt >= ATTEMPTS {
            return Err(format!("{}: {reason}", message.subject));
        }
        tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(attempt - 1)).await;
        attempt += 1;
        pending = publish_once(&js, &message).await;
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} acked ({percent}%)  ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Publishes everything, keeping up to `max_in_flight` acknowledgements pending, paced to
/// `rate` a second when it is above 0; stops sending (and waits for what is in flight) when
/// `stop` is cancelled.
async fn pump(
    js: &jetstream::Context,
    source: Source,
    rate: f64,
    max_in_flight: usize,
    stop: &CancellationToken,
) -> Tally {
    let progress = progress_bar(source.total);
    let mut tally = Tally::default();
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    'send: for (i, message) in source.messages.enumerate() {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => break,
                    () = stop.cancelled() => break 'send,
                    Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                        tally.record(result, &progress);
                    }
                }
            }
        }
        while in_flight.len() >= max_in_flight {
            tokio::select! {
                () = stop.cancelled() => break 'send,
                Some(result) = in_flight.next() => tally.record(result, &progress),
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let first = publish_once(js, &message).await;
        tally.summary.sent += 1;
        in_flight.push(deliver(js.clone(), message, first));
    }
    while let Some(result) = in_flight.next().await {
        tally.record(result, &progress);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    tally.summary.elapsed_secs = (elapsed * 1000.0).round() / 1000.0;
    tally.summary.rate_per_sec = if elapsed > 0.0 {
        (tally.summary.acked as f64 / elapsed * 10.0).round() / 10.0
    } else {
        0.0
    };
    tally.summary.seed = source.seed;
    tally
}

/// Runs `threatctl publish`.
pub async fn run(args: PublishArgs) -> Result<(), Error> {
    let source = if let Some(path) = &args.file {
        from_file(path, !args.no_validate)?
    } else if let Some(count) = args.count {
        generated(count, &args.mix, args.seed)
    } else {
        from_flags(&args)?
    };
    let client = nats::connect(&args.nats, None).await?;
    let js = jetstream::new(client.clone());
    nats::stream(&js, EVENTS_STREAM, &args.nats.nats_url).await?;

    // From here on Ctrl-C stops sending, waits for what is in flight, and tells how far it got.
    let stop = CancellationToken::new();
    let on_signal = {
        let stop = stop.clone();
        let mut ctrl_c = CtrlC::listen();
        tokio::spawn(async move {
            ctrl_c.recv().await;
            stop.cancel();
        })
    };
    let total = source.total;
    let max_in_flight = usize::try_from(args.max_in_flight).unwrap_or(usize::MAX);
    let tally = pump(&js, source, args.rate, max_in_flight, &stop).await;
    on_signal.abort();
    // Everything was acknowledged or gave up; nothing is left to flush.
    drop(client);

    let summary = &tally.summary;
    if args.json {
        let line = serde_json::to_string(summary).map_err(|e| Error::with_cause("summary", &e))?;
        println!("{line}");
    } else {
        println!("{summary}");
    }
    if let Some(reason) = &tally.first_error {
        return Err(Error::new(format!(
            "{} of {} events were not acknowledged; first: {reason}",
            summary.failed, summary.sent
        )));
    }
    if stop.is_cancelled() {
        return Err(Error::new(format!(
            "interrupted after sending {} of {total} events",
            summary.sent
        ))
        .with_exit_code(130));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_json_when_they_parse_and_text_otherwise() {
        assert_eq!(
            parse_attribute("port=22").unwrap(),
            ("port".into(), json!(22))
        );
        assert_eq!(
            parse_attribute("ip=203.0.113.9").unwrap(),
            ("ip".into(), json!("203.0.113.9"))
        );
        assert_eq!(
            parse_attribute("tags=[\"a\"]").unwrap(),
            ("tags".into(), json!(["a"]))
        );
        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("=1").is_err());
    }

    #[test]
    fn rates_are_zero_or_more() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("250.5"), Ok(250.5));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("NaN").is_err());
    }

    #[test]
    fn a_summary_reads_as_one_line() {
        let summary = Summary {
            sent: 500,
            acked: 500,
            duplicates: 2,
            failed: 0,
            elapsed_secs: 0.5,
            rate_per_sec: 1000.0,
            seed: Some(7),
        };
        assert_eq!(
            summary.to_string(),
            "sent 500, 500 acked (2 duplicates), 0 failed in 0.50 s (1000 events/s), seed 7"
        );
    }
}
