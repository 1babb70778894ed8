//! End to end, as an operator runs it: nats-server and the compiled `ingestor`, `alerter`,
//! `api` and `threatctl` binaries as separate processes, driven over NATS and HTTP.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::domain::Severity;
use common::storage::{AlertFilter, EventFilter, Storage};
use serde_json::Value;
use testkit::{NatsServer, TestDb, eventually, free_port};
use threatmon_tests::{binary, http};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(120);
const SECRET_KEY: &str = "e2e-secret-key-that-is-long-enough-for-hs256";
const ADMIN: (&str, &str) = ("e2e-admin", "e2e-admin-password");

/// A child process killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The services of one deployment.
struct System {
    nats: NatsServer,
    db: TestDb,
    storage: Storage,
    api_port: u16,
}

impl System {
    async fn new() -> System {
        let nats = NatsServer::start();
        let db = TestDb::new().await;
        let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
        System {
            nats,
            db,
            storage,
            api_port: free_port(),
        }
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(binary(name));
        command
            .env("NATS_URL", self.nats.url())
            .env("DATABASE_URL", self.db.url())
            .env("SECRET_KEY", SECRET_KEY)
            .env("API_ADDR", format!("127.0.0.1:{}", self.api_port))
            .env("ADMIN_USERNAME", ADMIN.0)
            .env("ADMIN_PASSWORD", ADMIN.1)
            .env("ACK_WAIT_SECS", "2")
            // One alert per escalated event: these tests count alerts against events.
            .env("ALERT_FOLD_KEY", "none")
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null());
        command
    }

    fn spawn(&self, name: &str, metrics_port: Option<u16>) -> Proc {
        let mut command = self.command(name);
        if let Some(port) = metrics_port {
            command.env("METRICS_ADDR", format!("127.0.0.1:{port}"));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    async fn wait_ready(&self, port: u16, path: &str) {
        let started = std::time::Instant::now();
        while !matches!(http(port, "GET", path, None, None).await, Ok((200, _))) {
            if started.elapsed() >= PATIENCE {
                // The services' own lines are above (their stderr is the test's); the
                // server's say whether it was there for them.
                let log = self.nats.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "127.0.0.1:{port}{path} did not answer 200 within {PATIENCE:?}; \
                     nats-server log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn admin_token(&self) -> String {
        let body = format!(r#"{{"username":"{}","password":"{}"}}"#, ADMIN.0, ADMIN.1);
        let (status, text) = http(self.api_port, "POST", "/api/auth/login/", None, Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        let json: Value = serde_json::from_str(&text).unwrap();
        json["access"].as_str().unwrap().to_owned()
    }

    async fn escalated_events(&self) -> i64 {
        let mut n = 0;
        for severity in [Severity::High, Severity::Critical] {
            let filter = EventFilter {
                severity: Some(severity),
                ..Default::default()
            };
            n += self.storage.count_events_matching(&filter).await.unwrap();
        }
        n
    }

    async fn wait_for_pipeline(&self, events: i64) -> i64 {
        let storage = &self.storage;
        eventually(
            PATIENCE,
            &format!("{events} events stored"),
            || async move {
                let n = storage.count_events().await.ok()?;
                assert!(n <= events, "{n} events stored, more than {events} sent");
                (n == events).then_some(())
            },
        )
        .await;
        let escalated = self.escalated_events().await;
        eventually(PATIENCE, &format!("{escalated} alerts"), || async move {
            let n = storage.count_alerts().await.ok()?;
            assert!(
                n <= escalated,
                "{n} alerts for {escalated} escalated events"
            );
            (n == escalated).then_some(())
        })
        .await;
        escalated
    }
}

/// Lines a background reader collected.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Follows `/api/alerts/stream/` and collects its `data:` lines.
async fn sse_client(port: u16, token: &str) -> Lines {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET /api/alerts/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let lines = Lines::default();
    let sink = lines.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stream).lines();
        let mut ready = Some(ready_tx);
        while let Ok(Some(line)) = reader.next_line().await {
            if line.starts_with("HTTP/1.1 200")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
            if let Some(data) = line.strip_prefix("data: ") {
                sink.push(data.to_owned());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the stream answered")
        .unwrap();
    lines
}

/// `threatctl tail --json`, its output lines collected.
fn tail(system: &System) -> (Proc, Lines) {
    let mut child = Command::new(binary("threatctl"))
        .args(["tail", "--json", "--all", "--nats-url", &system.nats.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Lines::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => sink.push(line),
                Err(_) => break,
            }
        }
    });
    (
        Proc {
            name: "threatctl tail".into(),
            child,
        },
        lines,
    )
}

/// The alert ids in JSON lines (tail's output or SSE data), by kind.
fn alert_ids(lines: &[String], updated: bool) -> HashSet<i64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let subject = v["subject"].as_str().unwrap_or("");
            let is_update = subject.starts_with("alerts.updated") || v.get("change").is_some();
            is_update == updated
        })
        .filter_map(|v| v["id"].as_i64().or_else(|| v["alert"]["id"].as_i64()))
        .collect()
}

fn publish(system: &System, count: usize, rate: usize, seed: u64) -> Value {
    let output = Command::new(binary("threatctl"))
        .args([
            "publish",
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
            "--seed",
            &seed.to_string(),
            "--json",
            "--nats-url",
            &system.nats.url(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "threatctl publish: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["acked"], count as u64, "{summary}");
    summary
}

/// A counter's value in Prometheus text, summed over its labels.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(port: u16) -> String {
    let (status, text) = http(port, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(status, 200);
    // Every line is a comment, or `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not Prometheus text: {line}");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_survive_killed_workers_and_reach_tail_and_sse() {
    let system = System::new().await;
    let (ingestor_port, alerter_port) = (free_port(), free_port());
    let mut ingestor = system.spawn("ingestor", Some(ingestor_port));
    let mut alerter = system.spawn("alerter", Some(alerter_port));
    let _api = system.spawn("api", None);
    system.wait_ready(system.api_port, "/readyz").await;
    system.wait_ready(ingestor_port, "/readyz").await;
    system.wait_ready(alerter_port, "/readyz").await;
    let token = system.admin_token().await;
    let sse = sse_client(system.api_port, &token).await;
    let (_tail, tail_lines) = tail(&system);

    // Publish at a steady rate while both workers are killed (SIGKILL) and restarted.
    let publisher = {
        let url = system.nats.url();
        std::thread::spawn(move || {
            let output = Command::new(binary("threatctl"))
                .args([
                    "publish",
                    "--count",
                    "5000",
                    "--rate",
                    "2500",
                    "--seed",
                    "42",
                    "--json",
                    "--nats-url",
                    &url,
                ])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice::<Value>(&output.stdout).unwrap()
        })
    };
    let storage = &system.storage;
    eventually(PATIENCE, "some events stored", || async move {
        (storage.count_events().await.ok()? > 500).then_some(())
    })
    .await;
    ingestor.kill();
    alerter.kill();
    let stored_at_kill = system.storage.count_events().await.unwrap();
    eprintln!(
        "killed {} and {} with {stored_at_kill} events stored",
        ingestor.name, alerter.name
    );
    let _ingestor = system.spawn("ingestor", Some(ingestor_port));
    let _alerter = system.spawn("alerter", Some(alerter_port));
    let summary = publisher.join().unwrap();
    assert_eq!(summary["acked"], 5000, "{summary}");

    let escalated = system.wait_for_pipeline(5000).await;
    assert!(stored_at_kill < 5000, "the kill happened mid-stream");
    let alerts = system
        .storage
        .list_alerts(&AlertFilter::default(), Default::default(), 100_000, 0)
        .await
        .unwrap();
    let ids: HashSet<i64> = alerts.iter().map(|a| a.id).collect();
    assert_eq!(ids.len() as i64, escalated);

    // Both live views saw every new alert.
    let tail_ref = &tail_lines;
    let ids_ref = &ids;
    eventually(PATIENCE, "tail to show every alert", || async move {
        alert_ids(&tail_ref.snapshot(), false)
            .is_superset(ids_ref)
            .then_some(())
    })
    .await;
    let sse_ref = &sse;
    eventually(
        PATIENCE,
        "the SSE client to see every alert",
        || async move {
            alert_ids(&sse_ref.snapshot(), false)
                .is_superset(ids_ref)
                .then_some(())
        },
    )
    .await;

    // A status change reaches both.
    let target = alerts[0].id;
    let (status, text) = http(
        system.api_port,
        "PATCH",
        &format!("/api/alerts/{target}/"),
        Some(&token),
        Some(r#"{"status":"ACKNOWLEDGED","note":"e2e"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    eventually(PATIENCE, "tail and SSE to see the change", || async move {
        (alert_ids(&tail_ref.snapshot(), true).contains(&target)
            && alert_ids(&sse_ref.snapshot(), true).contains(&target))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_on_nats_and_http_leave_every_service_running() {
    let system = System::new().await;
    let (ingestor_port, alerter_port) = (free_port(), free_port());
    let mut ingestor = system.spawn("ingestor", Some(ingestor_port));
    let mut alerter = system.spawn("alerter", Some(alerter_port));
    let mut api = system.spawn("api", None);
    system.wait_ready(system.api_port, "/readyz").await;
    system.wait_ready(ingestor_port, "/readyz").await;
    system.wait_ready(alerter_port, "/readyz").await;
    let token = system.admin_token().await;

    // What once killed the ingestor for good, and the api's request task.
    let client = async_nats::connect(system.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for body in [
        r#"{"sourceName":"fw1","eventType":"x","severity":"SEV\r\nERE"}"#,
        r#"{"sourceName":"fw1","eventType":"x","severity":"HIGH","uid":"a\r\nb"}"#,
        r#"{"sourceName":"fw\u0000 1","eventType":"x\u007f","severity":"HIGH"}"#,
    ] {
        js.publish("events.fw1", body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    threatmon_tests::publish_with_raw_header(
        system.nats.port(),
        "events.fw1",
        b"lone\rcr",
        br#"{"sourceName":"fw1","eventType":"x","severity":"HIGH"}"#,
    )
    .await;
    let body = r#"{"sourceName":"fw1","eventType":"x","severity":"HIGH","uid":"a\r\nb"}"#;
    let (status, text) = http(
        system.api_port,
        "POST",
        "/api/events/",
        Some(&token),
        Some(body),
    )
    .await
    .expect("an answer, not a dropped connection");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"uid\""), "{text}");

    let valid = r#"{"sourceName":"fw1","eventType":"x","severity":"HIGH","uid":"valid-1"}"#;
    let (status, text) = http(
        system.api_port,
        "POST",
        "/api/events/",
        Some(&token),
        Some(valid),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{text}");
    assert_eq!(
        system.wait_for_pipeline(1).await,
        1,
        "the valid event is alerted"
    );
    for process in [&mut ingestor, &mut alerter, &mut api] {
        assert!(
            process.child.try_wait().unwrap().is_none(),
            "{} exited",
            process.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingestors_and_two_alerters_share_the_work_and_their_metrics_add_up() {
    let system = System::new().await;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _workers = [
        system.spawn("ingestor", Some(ports[0])),
        system.spawn("ingestor", Some(ports[1])),
        system.spawn("alerter", Some(ports[2])),
        system.spawn("alerter", Some(ports[3])),
    ];
    for port in &ports {
        system.wait_ready(*port, "/readyz").await;
    }

    publish(&system, 3000, 0, 7);
    let escalated = system.wait_for_pipeline(3000).await;
    assert!(escalated > 0);

    // Counters move just after the commit; wait until they account for all the work.
    let ports_ref = &ports;
    let (stored, created) = eventually(PATIENCE, "the metrics to add up", || async move {
        let mut stored = Vec::new();
        let mut created = Vec::new();
        for (i, port) in ports_ref.iter().enumerate() {
            let text = metrics(*port).await;
            if i < 2 {
                stored.push(counter(&text, "threatmon_events_stored_total"));
            } else {
                created.push(counter(&text, "threatmon_alerts_created_total"));
            }
        }
        (stored.iter().sum::<f64>() == 3000.0 && created.iter().sum::<f64>() == escalated as f64)
            .then_some((stored, created))
    })
    .await;
    assert!(
        stored.iter().all(|&n| n > 0.0),
        "both ingestors worked: {stored:?}"
    );
    assert!(
        created.iter().all(|&n| n > 0.0),
        "both alerters worked: {created:?}"
    );
    let mut dead = 0.0;
    for port in &ports {
        dead += counter(&metrics(*port).await, "threatmon_deadletters_total");
    }
    assert_eq!(dead, 0.0, "nothing was dead-lettered");

    // The api counts each request it served by route and status, in the same text format.
    let _api = system.spawn("api", None);
    system.wait_ready(system.api_port, "/readyz").await;
    let token = system.admin_token().await;
    let mut listed = 0;
    for page in 1..=3 {
        let path = format!("/api/alerts/?page={page}");
        let (status, text) = http(system.api_port, "GET", &path, Some(&token), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        listed += serde_json::from_str::<serde_json::Value>(&text).unwrap()["results"]
            .as_array()
            .unwrap()
            .len();
    }
    assert_eq!(listed, 30.min(escalated as usize));
    let (status, _) = http(system.api_port, "GET", "/api/alerts/0/", Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    let text = metrics(system.api_port).await;
    let requests = |method: &str, route: &str, status: &str| {
        let labels = [
            format!("method=\"{method}\""),
            format!("route=\"{route}\""),
            format!("status=\"{status}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with("threatmon_http_requests_total{"))
            .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(requests("GET", "/api/alerts", "200"), 3.0, "{text}");
    assert_eq!(requests("GET", "/api/alerts/{id}", "404"), 1.0, "{text}");
    assert_eq!(requests("POST", "/api/auth/login", "200"), 1.0, "{text}");
}

#[tokio::test]
async fn a_bad_setting_stops_each_service_with_one_line_naming_it() {
    let system = System::new().await;
    let cases: [(&str, &str, &str); 5] = [
        ("ingestor", "ALERT_MIN_SEVERITY", "HUGE"),
        ("api", "SECRET_KEY", "short"),
        ("ingestor", "DATABASE_URL", "sqlite:///proc/threatmon/x.db"),
        ("alerter", "DATABASE_URL", "sqlite:///proc/threatmon/x.db"),
        ("api", "DATABASE_URL", "sqlite:///proc/threatmon/x.db"),
    ];
    for (service, setting, value) in cases {
        let output = system
            .command(service)
            .env(setting, value)
            .env("METRICS_ADDR", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{service} with {setting}={value} started"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.contains(setting), "{service} {setting}: {stderr}");
    }
    // A taken metrics port is named too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = system
        .command("alerter")
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("METRICS_ADDR"));
}
