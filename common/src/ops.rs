//! Operations: Prometheus metrics and health endpoints. The api serves them on its own
//! port; each worker serves them on a small port of its own (`METRICS_ADDR`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Events pulled by an ingestor.
pub const EVENTS_RECEIVED: &str = "threatmon_events_received_total";
/// Events stored for the first time.
pub const EVENTS_STORED: &str = "threatmon_events_stored_total";
/// Events that were already stored (a repeat of their key).
pub const EVENTS_DUPLICATE: &str = "threatmon_events_duplicate_total";
/// Escalations published.
pub const EVENTS_ESCALATED: &str = "threatmon_events_escalated_total";
/// Messages dead-lettered, by `stage`.
pub const DEADLETTERS: &str = "threatmon_deadletters_total";
/// Escalations pulled by an alerter.
pub const ESCALATIONS_RECEIVED: &str = "threatmon_escalations_received_total";
/// Alerts created for the first time.
pub const ALERTS_CREATED: &str = "threatmon_alerts_created_total";
/// Escalated events counted into an alert that already existed (folded repeats).
pub const EVENTS_FOLDED: &str = "threatmon_events_folded_total";
/// `alerts.created.*` notifications published (repeats after a redelivery included).
pub const ALERT_NOTIFICATIONS: &str = "threatmon_alert_notifications_total";
/// `alerts.updated.*` notifications published late by the api's relay (NATS was away).
pub const ALERT_UPDATES_RELAYED: &str = "threatmon_alert_updates_relayed_total";
/// Notification attempts, by route and outcome.
pub const NOTIFY_ATTEMPTS: &str = "threatmon_notification_attempts_total";
/// Notifications delivered or given up on, by route and outcome.
pub const NOTIFY_DELIVERIES: &str = "threatmon_notification_deliveries_total";
/// How long a notification attempt took, by kind.
pub const NOTIFY_LATENCY: &str = "threatmon_notification_attempt_duration_seconds";
/// Age of the oldest notification still waiting to be delivered.
pub const NOTIFY_QUEUE_AGE: &str = "threatmon_notification_queue_age_seconds";
/// Messages handed back for a later attempt, by `worker`.
pub const RETRIES: &str = "threatmon_retries_total";
/// Messages per batch, by `worker`.
pub const BATCH_SIZE: &str = "threatmon_batch_size";
/// Messages waiting in a durable consumer, by `consumer`.
pub const CONSUMER_PENDING: &str = "threatmon_consumer_pending";
/// Messages delivered but not yet acknowledged, by `consumer`.
pub const CONSUMER_ACK_PENDING: &str = "threatmon_consumer_ack_pending";
/// HTTP requests, by `method`, `route` and `status`.
pub const HTTP_REQUESTS: &str = "threatmon_http_requests_total";
/// HTTP request latency in seconds, by `method` and `route`.
pub const HTTP_DURATION: &str = "threatmon_http_request_duration_seconds";

/// What kind of Prometheus family a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One metrics family: its name, kind, unit and the help text every scrape shows.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The exposed name (already with `_total` or a base unit, as Prometheus wants).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// What one unit of it is.
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Family {
    Family {
        name,
        kind,
        unit,
        help,
    }
}

/// Every family any service records, described once when the recorder is installed, so
/// that each service's `/metrics` has `# HELP` and `# TYPE` for all it shows.
pub const FAMILIES: &[Family] = &[
    family(
        EVENTS_RECEIVED,
        Kind::Counter,
        Unit::Count,
        "Events pulled from the EVENTS stream by this ingestor.",
    ),
    family(
        EVENTS_STORED,
        Kind::Counter,
        Unit::Count,
        "Events stored for the first time.",
    ),
    family(
        EVENTS_DUPLICATE,
        Kind::Counter,
        Unit::Count,
        "Events whose idempotency key was already stored (not stored again).",
    ),
    family(
        EVENTS_ESCALATED,
        Kind::Counter,
        Unit::Count,
        "Escalations published for events at or above the alert threshold.",
    ),
    family(
        DEADLETTERS,
        Kind::Counter,
        Unit::Count,
        "Messages dead-lettered, by stage.",
    ),
    family(
        ESCALATIONS_RECEIVED,
        Kind::Counter,
        Unit::Count,
        "Escalations pulled from the ESCALATIONS stream by this alerter.",
    ),
    family(
        ALERTS_CREATED,
        Kind::Counter,
        Unit::Count,
        "Alerts created for the first time.",
    ),
    family(
        EVENTS_FOLDED,
        Kind::Counter,
        Unit::Count,
        "Escalated events counted into an alert that already existed (folded repeats).",
    ),
    family(
        ALERT_NOTIFICATIONS,
        Kind::Counter,
        Unit::Count,
        "alerts.created notifications published, repeats after a redelivery included.",
    ),
    family(
        ALERT_UPDATES_RELAYED,
        Kind::Counter,
        Unit::Count,
        "alerts.updated notifications published late by the api's relay, after NATS was away.",
    ),
    family(
        NOTIFY_ATTEMPTS,
        Kind::Counter,
        Unit::Count,
        "Notification attempts (webhook, Slack, e-mail), by route and outcome (delivered, retrying, failed).",
    ),
    family(
        NOTIFY_DELIVERIES,
        Kind::Counter,
        Unit::Count,
        "Notifications finished, by route and outcome: delivered, or failed and dead-lettered.",
    ),
    family(
        NOTIFY_LATENCY,
        Kind::Histogram,
        Unit::Seconds,
        "Time a notification attempt took, by kind of route.",
    ),
    family(
        NOTIFY_QUEUE_AGE,
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest notification not yet delivered (0 when none waits).",
    ),
    family(
        RETRIES,
        Kind::Counter,
        Unit::Count,
        "Messages handed back for a later delivery, by worker.",
    ),
    family(
        BATCH_SIZE,
        Kind::Histogram,
        Unit::Count,
        "Messages in each batch a worker handles, by worker.",
    ),
    family(
        CONSUMER_PENDING,
        Kind::Gauge,
        Unit::Count,
        "Messages waiting in a durable consumer, by consumer.",
    ),
    family(
        CONSUMER_ACK_PENDING,
        Kind::Gauge,
        Unit::Count,
        "Messages delivered but not yet acknowledged, by consumer.",
    ),
    family(
        HTTP_REQUESTS,
        Kind::Counter,
        Unit::Count,
        "HTTP requests served, by method, route and status.",
    ),
    family(
        HTTP_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route.",
    ),
];

/// Registers the help text and unit of every family with the installed recorder.
fn describe_all() {
    for family in FAMILIES {
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.unit, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.unit, family.help),
            Kind::Histogram => {
                metrics::describe_histogram!(family.name, family.unit, family.help);
            }
        }
    }
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's metrics recorder, installed on first use. `None` only if another recorder
/// was installed first (then metrics are that recorder's business).
pub fn metrics() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_all();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    metrics().map(PrometheusHandle::render).unwrap_or_default()
}

/// What breaks the Prometheus conventions in a text exposition (the format of [`render`]):
/// a sample without `# TYPE`, a family without `# HELP` text, a counter not named `_total`,
/// a line that does not parse. Empty when the text is clean; scrapes of every service are
/// checked with it.
pub fn exposition_problems(text: &str) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut problems = Vec::new();
    let mut help: BTreeMap<&str, &str> = BTreeMap::new();
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            if help.insert(name, doc.trim()).is_some() {
                problems.push(format!("{name}: more than one # HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                problems.push(format!("{name}: unknown type {kind:?}"));
            }
            if types.insert(name, kind).is_some() {
                problems.push(format!("{name}: more than one # TYPE"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = split_sample(line) else {
            problems.push(format!("not a sample line: {line:?}"));
            continue;
        };
        if value.parse::<f64>().is_err() {
            problems.push(format!("{name}: value {value:?} is not a number"));
        }
        if sample_family(name, &types).is_none() {
            problems.push(format!("{name}: sample before (or without) its # TYPE"));
        }
    }
    for (name, kind) in &types {
        match help.get(name) {
            None => problems.push(format!("{name}: no # HELP")),
            Some(&"") => problems.push(format!("{name}: empty # HELP")),
            Some(_) => {}
        }
        match (*kind, name.ends_with("_total")) {
            ("counter", false) => problems.push(format!("{name}: a counter not named _total")),
            ("gauge" | "histogram" | "summary", true) => {
                problems.push(format!("{name}: only counters end in _total"));
            }
            _ => {}
        }
    }
    for name in help.keys() {
        if !types.contains_key(name) {
            problems.push(format!("{name}: # HELP without # TYPE"));
        }
    }
    problems
}

/// A sample line's metric name and value: `name{labels} value [timestamp]`, where label
/// values are quoted and may hold escaped quotes, braces and spaces.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid_name {
        return None;
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[close? + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next()?;
    Some((name, value))
}

/// The family (its `# TYPE` name) a sample belongs to: its own name, or a histogram's or
/// summary's name for its `_bucket`, `_sum` and `_count` series.
fn sample_family<'a>(
    name: &'a str,
    types: &std::collections::BTreeMap<&str, &str>,
) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        match types.get(base) {
            Some(&"histogram") => Some(base),
            Some(&"summary") if *suffix != "_bucket" => Some(base),
            _ => None,
        }
    })
}

/// `GET /metrics`.
pub async fn metrics_endpoint() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(),
    )
}

/// Whether a worker is doing its job (pulling from its consumer).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

async fn readyz(State(ready): State<Readiness>) -> impl IntoResponse {
    if ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds a worker's operations port: `/metrics`, `/healthz`, `/readyz`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    metrics();
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the operations endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ready);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Where to listen, or nowhere (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

/// Parses a listen address; `off` disables the endpoint.
pub fn parse_listen_addr(value: &str) -> Result<ListenAddr, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(ListenAddr(None));
    }
    value
        .parse::<SocketAddr>()
        .map(|addr| ListenAddr(Some(addr)))
        .map_err(|_| "expected host:port (e.g. 127.0.0.1:9101) or off".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every family once (through the process's recorder, as the services do), so
    /// that each appears in the rendering.
    fn record_every_family() {
        for family in FAMILIES {
            match family.kind {
                Kind::Counter => metrics::counter!(family.name, "test" => "ops").increment(1),
                Kind::Gauge => metrics::gauge!(family.name, "test" => "ops").set(1.0),
                Kind::Histogram => metrics::histogram!(family.name, "test" => "ops").record(0.5),
            }
        }
    }

    #[test]
    fn every_family_is_rendered_with_help_and_type() {
        // The recorder is process-wide: nothing else in this crate's tests installs one, and
        // this test only adds series labelled test="ops", so the order of tests is moot.
        assert!(metrics().is_some(), "the recorder was installed");
        record_every_family();
        let text = render();
        let problems = exposition_problems(&text);
        assert!(problems.is_empty(), "{problems:#?}\n{text}");
        for family in FAMILIES {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let help = format!("# HELP {} {}\n", family.name, family.help);
            let type_line = format!("# TYPE {} {kind}\n", family.name);
            assert!(
                text.contains(&help),
                "{}: no HELP line in\n{text}",
                family.name
            );
            assert!(
                text.contains(&type_line),
                "{}: no TYPE line in\n{text}",
                family.name
            );
        }
    }

    #[test]
    fn family_names_follow_prometheus_conventions() {
        let mut names = std::collections::HashSet::new();
        for family in FAMILIES {
            assert!(names.insert(family.name), "{} twice", family.name);
            assert!(family.name.starts_with("threatmon_"), "{}", family.name);
            assert!(!family.help.is_empty(), "{}", family.name);
            assert_eq!(
                family.kind == Kind::Counter,
                family.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                family.name
            );
            // A family measured in a base unit says which in its name.
            if family.unit == Unit::Seconds {
                assert!(family.name.ends_with("_seconds"), "{}", family.name);
            }
            assert!(
                ![
                    "_milliseconds",
                    "_ms",
                    "_minutes",
                    "_kilobytes",
                    "_megabytes"
                ]
                .iter()
                .any(|unit| family.name.contains(unit)),
                "{}: base units only",
                family.name
            );
        }
    }

    #[test]
    fn the_exposition_check_finds_what_breaks_conventions() {
        let clean = "# HELP a_total As.\n# TYPE a_total counter\na_total{x=\"} \\\" {\"} 1\n\n\
                     # HELP h_seconds Hs.\n# TYPE h_seconds histogram\n\
                     h_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.5\nh_seconds_count 1\n";
        assert_eq!(exposition_problems(clean), Vec::<String>::new());
        let no_help = "# TYPE a_total counter\na_total 1\n";
        assert_eq!(exposition_problems(no_help), ["a_total: no # HELP"]);
        let no_type = "b 1\n";
        assert_eq!(
            exposition_problems(no_type),
            ["b: sample before (or without) its # TYPE"]
        );
        let badly_named = "# HELP c Cs.\n# TYPE c counter\nc 1\n";
        assert_eq!(
            exposition_problems(badly_named),
            ["c: a counter not named _total"]
        );
        assert_eq!(
            exposition_problems("# HELP d_total Ds.\n# TYPE d_total counter\nd_total x\n"),
            ["d_total: value \"x\" is not a number"]
        );
        assert!(!exposition_problems("{oops} 1\n").is_empty());
    }

    #[test]
    fn listen_addresses_parse_or_turn_off() {
        assert_eq!(parse_listen_addr("OFF"), Ok(ListenAddr(None)));
        assert!(parse_listen_addr("127.0.0.1:9101").is_ok_and(|a| a.0.is_some()));
        assert!(parse_listen_addr("nowhere").is_err());
    }
}
