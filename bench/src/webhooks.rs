//! Webhook routes for the delivery comparison and the receiver they deliver to: an HTTP
//! server on a loopback port that answers every request 200 at once and counts the requests
//! and the distinct `webhook-id`s among them (a delivery attempted again keeps its id). It
//! runs on a thread and a runtime of its own, so that answering never queues behind the
//! bench's measuring tasks; it still shares the machine's cores, as a receiver on the same
//! host would.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// What the receiver has been sent so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    /// Every request.
    pub requests: u64,
    /// Distinct `webhook-id`s: one per (alert message, route).
    pub distinct: u64,
}

#[derive(Default)]
struct Seen {
    requests: u64,
    ids: HashSet<String>,
}

/// `routes` webhook routes matching every alert (a `NOTIFY_ROUTES_FILE`) and the running
/// receiver they point at. Stops the receiver when dropped.
pub struct Webhooks {
    routes: usize,
    seen: Arc<Mutex<Seen>>,
    file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl Webhooks {
    /// Starts the receiver and writes the routes file: `routes` webhook routes, each with
    /// its own path and secret, every severity and the default changes (`created`,
    /// `severity_raised`, `reopened`).
    pub fn start(routes: usize) -> Result<Webhooks> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the webhook receiver")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the webhook receiver's runtime")?;
        let listener = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(seen.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("webhook-receiver".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        served = axum::serve(listener, app).into_future() => {
                            if let Err(err) = served {
                                eprintln!("threatmon-bench: the webhook receiver stopped: {err}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
            })
            .context("starting the webhook receiver's thread")?;

        let dir = tempfile::tempdir()?;
        let file = dir.path().join("routes.toml");
        let mut text = String::new();
        for n in 1..=routes {
            let secret = common::domain::new_secret()
                .map_err(|e| anyhow::anyhow!("a webhook secret: {e}"))?;
            text.push_str(&format!(
                "[[route]]\nname = \"bench-{n}\"\nkind = \"webhook\"\n\
                 url = \"http://{address}/route-{n}\"\nsecret = \"{secret}\"\n\n"
            ));
        }
        std::fs::write(&file, text).context("writing the routes file")?;
        Ok(Webhooks {
            routes,
            seen,
            file,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The routes.
    pub fn routes(&self) -> usize {
        self.routes
    }

    /// What the alerters need to load the routes and deliver to a loopback address.
    pub fn alerter_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_ROUTES_FILE", self.file.display().to_string()),
            ("NOTIFY_ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ]
    }

    /// What has been received so far.
    pub fn received(&self) -> Received {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        Received {
            requests: seen.requests,
            distinct: seen.ids.len() as u64,
        }
    }

    /// Waits until `distinct` distinct `webhook-id`s have arrived, or `deadline`; returns
    /// what had.
    pub async fn wait_for(&self, distinct: u64, deadline: Instant) -> Received {
        loop {
            let received = self.received();
            if received.distinct >= distinct || Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every request: counted, its body read, answered 200.
async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    seen.requests += 1;
    if let Some(id) = id {
        seen.ids.insert(id);
    }
    StatusCode::OK
}
