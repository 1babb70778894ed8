//! The REST API on a database of the pipeline's making: requests a second and latency at a
//! fixed number of keep-alive connections, each sending its next request when the last
//! answered (closed loop), as a dashboard fleet would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cli::generate::Rng;
use serde_json::json;

use crate::procs::{Service, free_port};
use crate::stats::Latencies;

const USERNAME: &str = "bench-admin";

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET` of a fixed path and query.
    Get(&'static str),
    /// `PATCH /api/alerts/{random id}/` to a random status.
    PatchAlert,
    /// `POST /api/auth/login/` with the right password.
    Login,
}

/// The triage summary (answered from the counts tables).
pub const SUMMARY: Request = Request::Get("/api/alerts/summary/");
/// A full-text search: a word of one event type, `ransomware_behavior`, whose alerts are
/// one in twenty or so.
pub const SEARCH: Request = Request::Get("/api/alerts/?q=ransomware");

/// What the benchmark asks the api, with a name for the table.
pub const SCENARIOS: &[(&str, Request)] = &[
    (
        "GET /api/alerts/ (first page)",
        Request::Get("/api/alerts/"),
    ),
    (
        "GET /api/alerts/?page=100",
        Request::Get("/api/alerts/?page=100"),
    ),
    (
        "GET /api/alerts/?status=OPEN",
        Request::Get("/api/alerts/?status=OPEN"),
    ),
    (
        "GET /api/alerts/?event__severity=HIGH",
        Request::Get("/api/alerts/?event__severity=HIGH"),
    ),
    (
        "GET /api/alerts/?status=OPEN&event__severity=HIGH",
        Request::Get("/api/alerts/?status=OPEN&event__severity=HIGH"),
    ),
    (
        "GET /api/alerts/?eventType=malware_detected",
        Request::Get("/api/alerts/?eventType=malware_detected"),
    ),
    ("GET /api/alerts/summary/", SUMMARY),
    ("GET /api/alerts/?q=ransomware", SEARCH),
    (
        "GET /api/alerts/?q=srv-db01&status=OPEN",
        Request::Get("/api/alerts/?q=srv-db01&status=OPEN"),
    ),
    (
        "GET /api/events/ (first page)",
        Request::Get("/api/events/"),
    ),
    (
        "GET /api/events/?severity=CRITICAL",
        Request::Get("/api/events/?severity=CRITICAL"),
    ),
    ("PATCH /api/alerts/{id}/", Request::PatchAlert),
    ("POST /api/auth/login/", Request::Login),
];

/// A running api on a copy of the pipeline's database.
pub struct Api {
    service: Service,
    base: String,
    password: String,
    /// Alerts in the database (PATCH picks among them).
    pub alerts: u64,
}

/// One cell of the table: a scenario at a concurrency, for one run.
pub struct Measured {
    /// Answered requests a second.
    pub rate: f64,
    /// Their latencies.
    pub latencies: Latencies,
}

impl Api {
    /// Starts the api on `db_path` with `nats_url`, with an admin to log in as.
    pub async fn start(
        db_path: &std::path::Path,
        nats_url: String,
        alerts: u64,
        log_dir: &std::path::Path,
    ) -> Result<Api> {
        let port = free_port()?;
        let password = uuid::Uuid::new_v4().to_string();
        let secret = format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let mut service = Service::start(
            "api",
            &[
                ("NATS_URL", nats_url),
                ("DATABASE_URL", format!("sqlite:{}", db_path.display())),
                ("SECRET_KEY", secret),
                ("API_ADDR", format!("127.0.0.1:{port}")),
                ("ADMIN_USERNAME", USERNAME.to_owned()),
                ("ADMIN_PASSWORD", password.clone()),
            ],
            log_dir,
        )?;
        let base = format!("http://127.0.0.1:{port}");
        service.wait_ready(&format!("{base}/readyz")).await?;
        Ok(Api {
            service,
            base,
            password,
            alerts,
        })
    }

    async fn access_token(&self) -> Result<String> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/auth/login/", self.base))
            .json(&json!({"username": USERNAME, "password": self.password}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("login failed: {}", response.status());
        }
        let body: serde_json::Value = response.json().await?;
        body.get("access")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .context("no access token in the login answer")
    }

    /// Sends `request` over `connections` connections for `duration` (after a short
    /// warm-up that is not counted). Any answer but 2xx fails the run.
    pub async fn measure(
        &self,
        request: Request,
        connections: usize,
        duration: Duration,
    ) -> Result<Measured> {
        let token = Arc::new(self.access_token().await?);
        let warm_until = Instant::now() + Duration::from_millis(500);
        let end = warm_until + duration;
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let token = token.clone();
            let base = self.base.clone();
            let password = self.password.clone();
            let alerts = self.alerts.max(1);
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .http1_only()
                    .build()?;
                let mut rng = Rng::new(connection as u64 + 1);
                let mut latencies = Latencies::new();
                let mut answered = 0u64;
                loop {
                    let builder = match request {
                        Request::Get(path) => client.get(format!("{base}{path}")),
                        Request::PatchAlert => {
                            let id = rng.between(1, alerts);
                            // Moves the lifecycle allows from any status (RESOLVED →
                            // ACKNOWLEDGED is refused), so that every PATCH writes.
                            let status = ["RESOLVED", "OPEN"][rng.below(2) as usize];
                            client
                                .patch(format!("{base}/api/alerts/{id}/"))
                                .json(&json!({ "status": status }))
                        }
                        Request::Login => client
                            .post(format!("{base}/api/auth/login/"))
                            .json(&json!({"username": USERNAME, "password": password})),
                    };
                    let builder = if request == Request::Login {
                        builder
                    } else {
                        builder.bearer_auth(token.as_str())
                    };
                    let sent = Instant::now();
                    let response = builder.send().await?;
                    let status = response.status();
                    let _ = response.bytes().await?;
                    let done = Instant::now();
                    if !status.is_success() {
                        bail!("{request:?} answered {status}");
                    }
                    if done >= end {
                        break;
                    }
                    if sent >= warm_until {
                        latencies.record(done - sent);
                        answered += 1;
                    }
                }
                anyhow::Ok((answered, latencies))
            }));
        }
        let mut latencies = Latencies::new();
        let mut answered = 0;
        for task in tasks {
            let (n, part) = task.await??;
            answered += n;
            latencies.merge(&part);
        }
        Ok(Measured {
            rate: answered as f64 / duration.as_secs_f64(),
            latencies,
        })
    }

    /// Stops the api; returns its peak memory in MiB.
    pub fn stop(self) -> Result<f64> {
        self.service.stop()
    }
}
