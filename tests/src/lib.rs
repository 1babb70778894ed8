//! The whole pipeline, started for real, as steps a test reads like a story: a private
//! `nats-server`, a fresh database (SQLite, or Postgres with `THREATMON_TEST_BACKEND=postgres`),
//! and the ingestor and alerter running as tasks that a test can stop, kill and restart.

// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod receivers;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use clap::Parser;
use common::domain::Severity;
use common::storage::Storage;
use common::subjects;
use futures::StreamExt;
use serde_json::{Value, json};
use testkit::{NatsServer, TestDb, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take before it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// A short `ack_wait`, so that what a "crash" left unacknowledged comes back quickly.
pub const TEST_ACK_WAIT: Duration = Duration::from_secs(2);

/// A worker running as a task.
pub struct RunningWorker {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl RunningWorker {
    /// Asks it to stop, as SIGTERM does, and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("worker did not stop in time")
            .expect("worker panicked");
    }

    /// Kills it wherever it is, as a crash would: nothing after the current await point runs.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }
}

/// A private nats-server, a fresh database, and clients to both.
pub struct Pipeline {
    /// The broker; tests may stop and restart it.
    pub nats: NatsServer,
    /// The database; dropped with the pipeline.
    pub db: TestDb,
    /// Storage over [`Pipeline::db`], migrated.
    pub storage: Storage,
    /// The test's own JetStream client.
    pub js: jetstream::Context,
}

impl Pipeline {
    /// Starts a server and a database, migrates, and declares the streams. No workers yet.
    pub async fn start() -> Pipeline {
        let nats = NatsServer::start();
        let db = TestDb::new().await;
        let storage = Storage::connect_and_migrate(db.url())
            .await
            .expect("migrating the test database");
        let client = common::bus::connect(&nats.url(), "threatmon-test", PATIENCE)
            .await
            .expect("connecting to the test nats-server");
        let js = jetstream::new(client);
        subjects::ensure_streams(&js)
            .await
            .expect("declaring streams");
        Pipeline {
            nats,
            db,
            storage,
            js,
        }
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            "--nats-url".into(),
            self.nats.url(),
            "--database-url".into(),
            self.db.url().to_owned(),
            "--ack-wait-secs".into(),
            TEST_ACK_WAIT.as_secs().to_string(),
            // Many workers run at once in tests: let each pick a free port.
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ]
    }

    /// Ingestor settings for this pipeline, escalating from `min`.
    pub fn ingestor_settings(&self, min: Severity) -> ingestor::Settings {
        let mut args = vec!["ingestor".to_owned()];
        args.extend(self.common_args());
        args.extend(["--alert-min-severity".to_owned(), min.as_str().to_owned()]);
        ingestor::Settings::try_parse_from(args).expect("ingestor settings")
    }

    /// Alerter settings for this pipeline: one alert per escalated event
    /// (`ALERT_FOLD_KEY=none`), which the tests of the rest of the pipeline count on.
    pub fn alerter_settings(&self) -> alerter::Settings {
        self.alerter_settings_folding("none")
    }

    /// Alerter settings for this pipeline, folding by `fold_key` (`ALERT_FOLD_KEY`).
    pub fn alerter_settings_folding(&self, fold_key: &str) -> alerter::Settings {
        self.alerter_settings_from(fold_key, &[])
    }

    /// Alerter settings for this pipeline (one alert per escalated event) with more flags
    /// (not the fold key).
    pub fn alerter_settings_with(&self, extra: &[&str]) -> alerter::Settings {
        self.alerter_settings_from("none", extra)
    }

    fn alerter_settings_from(&self, fold_key: &str, extra: &[&str]) -> alerter::Settings {
        let mut args = vec!["alerter".to_owned()];
        args.extend(self.common_args());
        args.extend(["--alert-fold-key".to_owned(), fold_key.to_owned()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        alerter::Settings::try_parse_from(args).expect("alerter settings")
    }

    /// Starts an ingestor escalating from `min`.
    pub fn start_ingestor(&self, min: Severity) -> RunningWorker {
        self.start_ingestor_with(self.ingestor_settings(min))
    }

    /// Starts an ingestor with these settings.
    pub fn start_ingestor_with(&self, settings: ingestor::Settings) -> RunningWorker {
        spawn_worker(|token| async move {
            ingestor::run(settings, token)
                .await
                .expect("ingestor failed");
        })
    }

    /// Starts an alerter.
    pub fn start_alerter(&self) -> RunningWorker {
        self.start_alerter_with(self.alerter_settings())
    }

    /// Starts an alerter with these settings.
    pub fn start_alerter_with(&self, settings: alerter::Settings) -> RunningWorker {
        spawn_worker(|token| async move {
            alerter::run(settings, token).await.expect("alerter failed");
        })
    }

    /// Publishes one message to `subject` and waits for the stream's acknowledgement,
    /// retrying while the server is away (a restart in progress).
    pub async fn publish(&self, subject: &str, body: Bytes, msg_id: Option<&str>) {
        let subject = subject.to_owned();
        eventually(PATIENCE, "a publish to be acknowledged", || {
            let (subject, body) = (subject.clone(), body.clone());
            async move {
                let mut headers = HeaderMap::new();
                if let Some(id) = msg_id {
                    headers.insert("Nats-Msg-Id", id);
                }
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, body)
                    .await
                    .ok()?;
                ack.await.ok()
            }
        })
        .await;
    }

    /// Publishes an event as a sensor would, to `events.<sourceName>`.
    pub async fn publish_event(&self, event: &Value, msg_id: Option<&str>) {
        let source = event["sourceName"].as_str().unwrap_or("unknown");
        let subject = subjects::event_subject(source);
        self.publish(&subject, Bytes::from(event.to_string()), msg_id)
            .await;
    }

    /// Publishes many events with all acknowledgements in flight at once.
    pub async fn publish_events(&self, events: &[(Value, Option<String>)]) {
        // In windows: with tens of thousands of PubAcks outstanding the client stalls.
        for window in events.chunks(1000) {
            self.publish_window(window).await;
        }
    }

    async fn publish_window(&self, events: &[(Value, Option<String>)]) {
        let mut outgoing = Vec::with_capacity(events.len());
        for (event, msg_id) in events {
            let source = event["sourceName"].as_str().unwrap_or("unknown");
            let mut headers = HeaderMap::new();
            if let Some(id) = msg_id {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            let ack = self
                .js
                .publish_with_headers(
                    subjects::event_subject(source),
                    headers,
                    Bytes::from(event.to_string()),
                )
                .await
                .expect("publish");
            outgoing.push(ack);
        }
        for ack in outgoing {
            ack.await.expect("publish acknowledged");
        }
    }

    /// Waits until exactly `n` events are stored (fails if more appear).
    pub async fn wait_for_events(&self, n: i64) {
        let storage = &self.storage;
        let what = format!("{n} events stored");
        eventually(PATIENCE, &what, || async move {
            let count = storage.count_events().await.ok()?;
            assert!(count <= n, "{count} events stored, expected {n}");
            (count == n).then_some(())
        })
        .await;
    }

    /// Waits until exactly `n` alerts exist (fails if more appear).
    pub async fn wait_for_alerts(&self, n: i64) {
        let storage = &self.storage;
        let what = format!("{n} alerts created");
        eventually(PATIENCE, &what, || async move {
            let count = storage.count_alerts().await.ok()?;
            assert!(count <= n, "{count} alerts created, expected {n}");
            (count == n).then_some(())
        })
        .await;
    }

    /// Waits until a durable consumer has nothing left to deliver and nothing unacknowledged.
    pub async fn wait_consumer_drained(&self, stream: &str, consumer: &str) {
        let js = &self.js;
        let what = format!("consumer {consumer} on {stream} drained");
        eventually(PATIENCE, &what, || async move {
            let stream = js.get_stream(stream).await.ok()?;
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(consumer).await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    /// Waits until everything published so far has gone through both workers.
    pub async fn wait_drained(&self) {
        self.wait_consumer_drained(subjects::EVENTS_STREAM, subjects::INGESTOR_CONSUMER)
            .await;
        self.wait_consumer_drained(subjects::ESCALATIONS_STREAM, subjects::ALERTER_CONSUMER)
            .await;
    }

    /// Waits until `stream` holds a message on `filter`, and returns them all.
    pub async fn wait_for_stream(&self, stream: &str, filter: &str) -> Vec<jetstream::Message> {
        eventually(PATIENCE, &format!("a message on {filter}"), || async move {
            let messages = self.read_stream(stream, filter).await;
            (!messages.is_empty()).then_some(messages)
        })
        .await
    }

    /// Every message on `stream` matching `filter`, oldest first.
    pub async fn read_stream(&self, stream: &str, filter: &str) -> Vec<jetstream::Message> {
        let stream = self.js.get_stream(stream).await.expect("stream");
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter.to_owned(),
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .expect("reader consumer");
        let total = usize::try_from(consumer.info().await.expect("info").num_pending).unwrap();
        let mut messages = Vec::with_capacity(total);
        while messages.len() < total {
            let mut batch = consumer
                .batch()
                .max_messages((total - messages.len()).min(500))
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .expect("fetch");
            while let Some(message) = batch.next().await {
                messages.push(message.expect("message"));
            }
        }
        messages
    }

    /// The `alerts.created.*` notifications, counted by alert id.
    pub async fn created_notifications(&self) -> HashMap<i64, usize> {
        let mut counts = HashMap::new();
        for message in self
            .read_stream(subjects::ALERTS_STREAM, "alerts.created.>")
            .await
        {
            let alert: Value = serde_json::from_slice(&message.payload).expect("alert JSON");
            let severity = alert["severity"].as_str().unwrap();
            assert_eq!(
                message.subject.as_str(),
                format!("alerts.created.{}", severity.to_lowercase()),
                "notification subject matches the alert's severity"
            );
            *counts.entry(alert["id"].as_i64().unwrap()).or_default() += 1;
        }
        counts
    }
}

fn spawn_worker<F, Fut>(run: F) -> RunningWorker
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(shutdown.clone()));
    RunningWorker { shutdown, handle }
}

/// Publishes over the NATS protocol itself, bypassing any client's checks: an `HPUB` to
/// `subject` whose `Nats-Msg-Id` value is `header_value` as given (a lone carriage return,
/// say, which no client library lets through). Returns once the server has processed it.
pub async fn publish_with_raw_header(port: u16, subject: &str, header_value: &[u8], body: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut info = vec![0u8; 4096];
    let _ = stream.read(&mut info).await.unwrap();
    let mut headers = b"NATS/1.0\r\nNats-Msg-Id: ".to_vec();
    headers.extend_from_slice(header_value);
    headers.extend_from_slice(b"\r\n\r\n");
    let mut frame = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}}\r\n\
         HPUB {subject} {} {}\r\n",
        headers.len(),
        headers.len() + body.len()
    )
    .into_bytes();
    frame.extend_from_slice(&headers);
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\r\nPING\r\n");
    stream.write_all(&frame).await.unwrap();
    // PONG: the server has processed the publish before it.
    let mut reply = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&reply).contains("PONG") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("the server answers PING")
            .unwrap();
        assert!(n > 0, "the server closed the connection: {reply:?}");
        reply.extend_from_slice(&chunk[..n]);
    }
}

/// The path of one of the workspace's binaries (`ingestor`, `api`, `threatctl`, …), all built
/// once if this test run has not built them, for tests that run them as processes.
pub fn binary(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let workspace = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = std::process::Command::new(cargo);
        build
            .args(["build", "--workspace", "--bins"])
            .current_dir(&workspace);
        // The variables cargo sets for this test would make build scripts rerun.
        for (name, _) in std::env::vars() {
            if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
                build.env_remove(name);
            }
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
        // This test runs from target/<profile>/deps/.
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().to_path_buf()
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// One HTTP/1.1 request to 127.0.0.1:`port` over a fresh connection, with an optional bearer
/// token and JSON body; returns (status, body). For tests of services run as processes.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A realistic event; `i` picks the sensor and type, `severity` is as given.
pub fn event(i: usize, severity: Severity) -> Value {
    const SOURCES: [&str; 4] = ["fw-edge-01", "ids-core", "edr.laptop-17", "waf eu"];
    const TYPES: [&str; 4] = [
        "port_scan",
        "malware_detected",
        "brute_force",
        "sql_injection",
    ];
    json!({
        "sourceName": SOURCES[i % SOURCES.len()],
        "eventType": TYPES[(i / 4) % TYPES.len()],
        "severity": severity.as_str(),
        "description": format!("event number {i}"),
        "attributes": {"n": i},
    })
}

/// `n` events cycling through the severities (so a quarter each), each with a unique
/// `Nats-Msg-Id` made from `prefix`.
pub fn mixed_events(prefix: &str, n: usize) -> Vec<(Value, Option<String>)> {
    (0..n)
        .map(|i| {
            let severity = Severity::ALL[i % 4];
            (event(i, severity), Some(format!("{prefix}-{i}")))
        })
        .collect()
}

/// How many of these events are at or above `min`.
pub fn count_at_least(events: &[(Value, Option<String>)], min: Severity) -> i64 {
    events
        .iter()
        .filter(|(e, _)| {
            e["severity"]
                .as_str()
                .and_then(|s| s.parse::<Severity>().ok())
                .is_some_and(|s| s >= min)
        })
        .count() as i64
}
