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
/// `alerts.created.*` notifications published (repeats after a redelivery included).
pub const ALERT_NOTIFICATIONS: &str = "threatmon_alert_notifications_total";
/// `alerts.updated.*` notifications published late by the api's relay (NATS was away).
pub const ALERT_UPDATES_RELAYED: &str = "threatmon_alert_updates_relayed_total";
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
                Ok(handle) => Some(handle),
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
