//! Issue 13, point 6: a route's secret never appears in any response, log line or error.
//!
//! The real `api`, `alerter` and `ingestor` binaries run as processes on the harness's
//! nats-server and test database, logging everything (`RUST_LOG=trace`, `DEBUG=true`; the
//! api and the ingestor as JSON, the alerter as text) to files. The secrets:
//! - webhook secrets: one given in a POST; one the api generated (read from its 201, the one
//!   answer that may show it); one generated and then rotated away by a PATCH, and the one it
//!   was rotated to; one the alerter read from `NOTIFY_ROUTES_FILE` through `secret_file`;
//! - the path tokens of Slack URLs (a Slack URL is a secret: errors never include URLs; only
//!   the route itself shows its URL, to Admins, and that field alone is not searched);
//! - the password in `SMTP_URL`, which both services send to an SMTP server that asks for it;
//! - secrets refused as malformed (in a PATCH, in routes files that stop an alerter) and a
//!   good one next to a bad field in such a file.
//!
//! They go down every path that makes errors and logs: deliveries answered 500 (by a real
//! receiver verifying each signature with the Standard Webhooks library), refused
//! connections, a receiver that never answers (cut at `NOTIFY_TIMEOUT_SECS`), an SMTP server
//! refusing the login for now, retries until `NOTIFY_RETRY_FOR_SECS` ends and then
//! `deadletter.notify`; route tests; refused bodies (400); lists, details, the delivery log,
//! a deletion, `/metrics`; services refusing to start over a bad routes file or `SMTP_URL`.
//! Then every answer the test got (head and body), every log file, every delivery-log entry
//! and every dead letter (headers and body) is searched for each secret: whole, and as its
//! base64 key alone (also percent-encoded, in hex and as a Debug list of its bytes).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::domain::{new_secret, secret_bytes};
use common::subjects;
use serde_json::{Value, json};
use testkit::{eventually, free_port};
use threatmon_tests::receivers::python;
use threatmon_tests::{Pipeline, binary};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(120);
const SECRET_KEY: &str = "notification-secrets-signing-key-long-enough-for-hs256";
const ADMIN: (&str, &str) = ("secrets-admin", "secrets-admin-password");
const SMTP_USER: &str = "threatmon";
/// An attempt is cut after this long (the hanging receiver's attempts).
const TIMEOUT_SECS: &str = "2";
/// How long a failing delivery is retried: a few attempts, then the dead letter.
const RETRY_FOR_SECS: &str = "5";

/// Something that must never be shown, and the forms it could be shown in.
struct Secret {
    label: String,
    needles: Vec<String>,
}

impl Secret {
    /// A Standard Webhooks secret: whole, its base64 alone (as is and percent-encoded), and
    /// its key bytes in hex and as a Debug list.
    fn webhook(label: &str, secret: &str) -> Secret {
        let base64 = secret.strip_prefix("whsec_").unwrap().to_owned();
        let mut needles = vec![secret.to_owned(), base64.clone()];
        let encoded = base64.replace('+', "%2B").replace('/', "%2F");
        if encoded != base64 {
            needles.push(encoded);
        }
        if let Ok(bytes) = secret_bytes(secret) {
            needles.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
            let debug = format!("{:?}", &bytes[..8]);
            needles.push(debug.trim_end_matches(']').to_owned());
        }
        Secret {
            label: label.to_owned(),
            needles,
        }
    }

    /// A token (letters and digits), in these forms too.
    fn token(label: &str, token: &str, forms: &[String]) -> Secret {
        let mut needles = vec![token.to_owned()];
        needles.extend(forms.iter().cloned());
        Secret {
            label: label.to_owned(),
            needles,
        }
    }

    /// The first needle found in `text`.
    fn found_in(&self, text: &str) -> Option<&str> {
        self.needles
            .iter()
            .find(|n| text.contains(n.as_str()))
            .map(String::as_str)
    }
}

/// Fails, naming the place and the secret (masked in the line shown), if `text` holds one.
fn assert_no_secret(secrets: &[Secret], place: &str, text: &str) {
    for secret in secrets {
        if let Some(needle) = secret.found_in(text) {
            let line = text
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_default()
                .replace(needle, &format!("<{}>", secret.label));
            panic!(
                "{} found in {place}:\n{}",
                secret.label,
                line.chars().take(2000).collect::<String>()
            );
        }
    }
}

/// `n` random letters and digits.
fn random_token(n: usize) -> String {
    let mut token = String::new();
    while token.len() < n {
        token.extend(
            new_secret()
                .unwrap()
                .trim_start_matches("whsec_")
                .chars()
                .filter(char::is_ascii_alphanumeric),
        );
    }
    token.truncate(n);
    token
}

/// Standard base64, padded.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A service or receiver process, its output in a file; SIGKILLed when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `command` with its stdout and stderr in `log`.
    fn spawn(name: &str, mut command: Command, log: &Path) -> Proc {
        let out = File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// Asks it to stop (SIGTERM) and waits until it has.
    async fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid} ({})", self.name);
        assert!(self.wait_exit().await, "{} stopped cleanly", self.name);
    }

    /// Waits for it to exit; returns whether it succeeded.
    async fn wait_exit(&mut self) -> bool {
        let what = format!("{} to exit", self.name);
        let child = &mut self.child;
        let status = eventually(PATIENCE, &what, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await;
        status.success()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver (tests/receivers/webhook.py) verifying signatures with `secret`.
struct Receiver {
    _proc: Proc,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    async fn start(dir: &Path, name: &str, secret: &str, args: &[&str]) -> Receiver {
        let port_file = dir.join(format!("{name}.port"));
        let log = dir.join(format!("{name}.jsonl"));
        let mut command = Command::new(python());
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("receivers/webhook.py"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args(args)
            .env("RECEIVER_SECRET", secret);
        let proc = Proc::spawn(name, command, &dir.join(format!("{name}.out")));
        let port = eventually(Duration::from_secs(20), "the receiver to listen", || {
            let port_file = port_file.clone();
            async move { std::fs::read_to_string(port_file).ok()?.trim().parse().ok() }
        })
        .await;
        Receiver {
            _proc: proc,
            port,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests it answered at `path`, in order.
    fn requests(&self, path: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|r| r["path"] == path)
            .collect()
    }
}

/// An SMTP server that offers `AUTH PLAIN LOGIN` and answers every login `454` (a temporary
/// failure: retried), keeping the lines it got. Lives as long as the test's runtime.
async fn smtp_asking_for_a_password() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let lines = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let got = lines.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = tokio::io::BufReader::new(read).lines();
                if write.write_all(b"220 smtp.test ESMTP\r\n").await.is_err() {
                    return;
                }
                while let Ok(Some(line)) = read.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    got.lock().unwrap().push(line);
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-smtp.test\r\n250 AUTH PLAIN LOGIN\r\n",
                        "AUTH" => b"454 4.7.0 Temporary authentication failure\r\n",
                        "QUIT" => b"221 2.0.0 bye\r\n",
                        _ => b"250 2.0.0 ok\r\n",
                    };
                    if write.write_all(reply).await.is_err() || verb == "QUIT" {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

/// An HTTP answer: status, head (status line and headers), body.
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection; `None` when nothing answers.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<Response> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .ok()?;
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    Some(Response {
        status,
        head: head.to_owned(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// One answer the test got from a service.
struct Answer {
    what: String,
    head: String,
    /// The body, but what it may show: a route's own `url` (Admins see it) and, in the 201
    /// that generated it, the `secret`.
    body: String,
}

/// The api, as an Admin, keeping every answer.
struct Api {
    port: u16,
    token: String,
    answers: Mutex<Vec<Answer>>,
}

impl Api {
    fn keep(&self, what: String, response: &Response, body: String) {
        self.answers.lock().unwrap().push(Answer {
            what,
            head: response.head.clone(),
            body,
        });
    }

    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        request(self.port, method, path, Some(&self.token), body)
            .await
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// A request whose whole answer is searched.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let response = self.send(method, path, body).await;
        let what = format!("{method} {path} ({})", response.status);
        self.keep(what, &response, response.body.clone());
        let json = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        (response.status, json)
    }

    /// A request answered with routes (one, or a page): their `url`s, which an Admin may
    /// see, are left out of what is searched, and so is `secret` when `generated` (the 201
    /// that made it); everything else is searched.
    async fn call_routes(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        generated: bool,
    ) -> (u16, Value) {
        let response = self.send(method, path, body).await;
        let json: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        let mut searched = json.clone();
        if (200..300).contains(&response.status) {
            let routes: Vec<&mut Value> = match searched.get_mut("results") {
                Some(Value::Array(results)) => results.iter_mut().collect(),
                _ => vec![&mut searched],
            };
            for route in routes {
                let route = route.as_object_mut().expect("a route");
                assert!(route.contains_key("kind"), "a route: {}", response.body);
                route.remove("url");
                if generated {
                    route.remove("secret");
                }
            }
        }
        let what = format!("{method} {path} ({}, route URLs left out)", response.status);
        self.keep(what, &response, searched.to_string());
        (response.status, json)
    }

    /// Creates a route that has or needs no generated secret; returns it.
    async fn create_route(&self, body: Value) -> Value {
        let path = "/api/notification-routes/";
        let (status, route) = self
            .call_routes("POST", path, Some(&body.to_string()), false)
            .await;
        assert_eq!(status, 201, "{route}");
        assert!(route.get("secret").is_none(), "no secret shown: {route}");
        route
    }

    /// Creates a webhook route without a secret; returns it and the secret the api made.
    async fn create_generated(&self, body: Value) -> (Value, String) {
        let path = "/api/notification-routes/";
        let (status, route) = self
            .call_routes("POST", path, Some(&body.to_string()), true)
            .await;
        assert_eq!(status, 201, "{route}");
        let secret = route["secret"].as_str().expect("the generated secret");
        assert!(secret_bytes(secret).is_ok(), "a Standard Webhooks secret");
        (route.clone(), secret.to_owned())
    }

    /// A request that must be refused with a 400.
    async fn refused(&self, method: &str, path: &str, body: &str) {
        let (status, answer) = self.call(method, path, Some(body)).await;
        assert_eq!(status, 400, "{method} {path} {body}: {answer}");
    }

    /// An unauthenticated `GET` of another port (health, metrics), searched too.
    async fn scrape(&self, port: u16, path: &str) -> String {
        let response = request(port, "GET", path, None, None)
            .await
            .expect("an answer");
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let what = format!("GET 127.0.0.1:{port}{path}");
        self.keep(what, &response, response.body.clone());
        response.body
    }
}

/// Waits until `GET port/path` answers 200.
async fn wait_ready(port: u16, path: &str) {
    let what = format!("127.0.0.1:{port}{path} to answer 200");
    eventually(PATIENCE, &what, || async move {
        let response = request(port, "GET", path, None, None).await?;
        (response.status == 200).then_some(())
    })
    .await;
}

/// Waits until the alerter has declared its `notifier` consumer, which takes only the alert
/// messages published after it is made.
async fn wait_for_notifier(pipeline: &Pipeline) {
    let js = &pipeline.js;
    eventually(PATIENCE, "the notifier consumer to exist", || async move {
        let stream = js.get_stream(subjects::ALERTS_STREAM).await.ok()?;
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                subjects::NOTIFIER_CONSUMER,
            )
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// What every service gets: the harness's broker and database, every log line.
fn service(pipeline: &Pipeline, name: &str) -> Command {
    let mut command = Command::new(binary(name));
    command
        .env("NATS_URL", pipeline.nats.url())
        .env("DATABASE_URL", pipeline.db.url())
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .env("ACK_WAIT_SECS", "2")
        // No .env of the workspace: only what is set here.
        .current_dir(std::env::temp_dir());
    command
}

/// The alerter: fast retries, ending in dead letters within the test.
fn alerter(pipeline: &Pipeline, routes_file: &Path, smtp_url: &str) -> Command {
    let mut command = service(pipeline, "alerter");
    command
        .env("ALERT_FOLD_KEY", "none")
        .env("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")
        .env("NOTIFY_TIMEOUT_SECS", TIMEOUT_SECS)
        .env("NOTIFY_RETRY_FOR_SECS", RETRY_FOR_SECS)
        .env("NOTIFY_BACKOFF_FIRST_MS", "100")
        .env("NOTIFY_BACKOFF_MAX_SECS", "1")
        .env("NOTIFY_ROUTES_FILE", routes_file)
        .env("SMTP_URL", smtp_url);
    command
}

fn api(pipeline: &Pipeline, port: u16, smtp_url: &str) -> Command {
    let mut command = service(pipeline, "api");
    command
        .env("SECRET_KEY", SECRET_KEY)
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_USERNAME", ADMIN.0)
        .env("ADMIN_PASSWORD", ADMIN.1)
        .env("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")
        .env("NOTIFY_TIMEOUT_SECS", TIMEOUT_SECS)
        .env("SMTP_URL", smtp_url)
        .env("DEBUG", "true")
        .env("LOG_FORMAT", "json");
    command
}

/// Runs a service that must refuse to start; returns the line it stopped with
/// (`<service>: …`; log lines of tasks ending may come after it).
async fn refused_start(service: &str, command: Command, log: &Path) -> String {
    let mut refused = Proc::spawn(service, command, log);
    assert!(!refused.wait_exit().await, "{service} started");
    let output = std::fs::read_to_string(log).unwrap();
    let prefix = format!("{service}: ");
    let line = output.lines().find(|l| l.starts_with(&prefix));
    line.unwrap_or_else(|| panic!("{service} said why: {output}"))
        .to_owned()
}

/// The attempts of the delivery log once every route's delivery has ended (delivered, or
/// failed for good).
async fn settled_deliveries(api: &Api, alert: i64, routes: &[&str]) -> Vec<Value> {
    let path = format!("/api/alerts/{alert}/deliveries/?page_size=100");
    eventually(PATIENCE, "every delivery to end", || {
        let path = path.clone();
        async move {
            let (status, page) = api.call("GET", &path, None).await;
            assert_eq!(status, 200, "{page}");
            let attempts = page["results"].as_array().unwrap().clone();
            let ended = |route: &str| {
                attempts.iter().any(|a| {
                    a["route_name"] == route
                        && (a["outcome"] == "delivered" || a["outcome"] == "failed")
                })
            };
            routes.iter().all(|r| ended(r)).then_some(attempts)
        }
    })
    .await
}

/// A route's attempts, oldest first.
fn of_route<'a>(attempts: &'a [Value], route: &str) -> Vec<&'a Value> {
    attempts
        .iter()
        .filter(|a| a["route_name"] == route)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_secret_reaches_any_answer_log_line_delivery_log_or_dead_letter() {
    let started = Instant::now();
    let pipeline = Pipeline::start().await;
    let work = tempfile::tempdir().unwrap();
    let (logs, files, receivers) = (
        work.path().join("logs"),
        work.path().join("files"),
        work.path().join("receivers"),
    );
    for dir in [&logs, &files, &receivers] {
        std::fs::create_dir(dir).unwrap();
    }

    // The secrets.
    let given = new_secret().unwrap();
    let rotated_to = new_secret().unwrap();
    let from_file = new_secret().unwrap();
    let beside_bad_field = new_secret().unwrap();
    let malformed_in_file = random_token(40);
    // Well formed, but 12 bytes: refused.
    let too_short = format!("whsec_{}", base64(random_token(12).as_bytes()));
    assert!(secret_bytes(&format!("whsec_{}", base64(&[7; 24]))).is_ok());
    let slack_tokens = [random_token(24), random_token(24), random_token(24)];
    let smtp_password = random_token(20);

    // Receivers: 500 twice then 200; 500 once then 200; always 500; never an answer.
    let receiver_given = Receiver::start(&receivers, "given", &given, &["--fail-first", "2"]).await;
    let receiver_rotated =
        Receiver::start(&receivers, "rotated", &rotated_to, &["--fail-first", "1"]).await;
    let receiver_500 =
        Receiver::start(&receivers, "500", &from_file, &["--fail-first", "1000000"]).await;
    let receiver_hang = Receiver::start(&receivers, "hang", &given, &["--hang"]).await;
    // Nothing listens on these: connections are refused.
    let (closed_webhook, closed_slack) = (free_port(), free_port());
    let (smtp_port, smtp_got) = smtp_asking_for_a_password().await;
    let smtp_url = format!("smtp://{SMTP_USER}:{smtp_password}@127.0.0.1:{smtp_port}");
    let slack_refused = format!(
        "http://127.0.0.1:{closed_slack}/services/T0/B0/{}",
        slack_tokens[0]
    );
    let slack_hang = receiver_hang.url(&format!("/services/T1/B1/{}", slack_tokens[1]));
    let slack_500 = receiver_500.url(&format!("/services/T2/B2/{}", slack_tokens[2]));

    let auth_plain = base64(format!("\0{SMTP_USER}\0{smtp_password}").as_bytes());
    let auth_login = base64(smtp_password.as_bytes());
    let unpadded = |s: &str| s.trim_end_matches('=').to_owned();
    let mut secrets = vec![
        Secret::webhook("the secret given in a POST", &given),
        Secret::webhook("the secret of a secret_file", &from_file),
        Secret::webhook("the rotated-to secret", &rotated_to),
        Secret::webhook(
            "the secret beside a bad field of a routes file",
            &beside_bad_field,
        ),
        Secret::token(
            "the malformed secret of a routes file",
            &malformed_in_file,
            &[],
        ),
        Secret::webhook("the too-short secret of a PATCH", &too_short),
        Secret::token("the refused Slack URL's token", &slack_tokens[0], &[]),
        Secret::token("the hanging Slack URL's token", &slack_tokens[1], &[]),
        Secret::token("the 500 Slack URL's token", &slack_tokens[2], &[]),
        Secret::token(
            "the SMTP password",
            &smtp_password,
            &[unpadded(&auth_plain), unpadded(&auth_login)],
        ),
    ];

    // Routes files that stop an alerter at start: a good secret (from its file) beside a bad
    // field, and a malformed secret in the file itself. And a bad SMTP_URL holding the
    // password, which stops the api.
    let secret_path = files.join("beside-bad-field.secret");
    std::fs::write(&secret_path, &beside_bad_field).unwrap();
    let bad_files = [
        (
            format!(
                "[[route]]\nname = \"bad-field\"\nkind = \"webhook\"\nurl = \"{}\"\n\
                 secret_file = \"{}\"\nmin_severity = \"SEVERE\"\n",
                receiver_500.url("/hook"),
                secret_path.display()
            ),
            "min_severity",
        ),
        (
            format!(
                "[[route]]\nname = \"bad-secret\"\nkind = \"webhook\"\nurl = \"{}\"\n\
                 secret = \"whsec_{malformed_in_file}!\"\n",
                receiver_500.url("/hook")
            ),
            "secret",
        ),
    ];
    for (i, (text, field)) in bad_files.iter().enumerate() {
        let path = files.join(format!("bad-routes-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut command = alerter(&pipeline, &path, &smtp_url);
        command.env("METRICS_ADDR", "off");
        let log = logs.join(format!("alerter-bad-routes-{i}.log"));
        let last = refused_start("alerter", command, &log).await;
        assert!(
            last.contains("route 1 (bad-") && last.contains(field),
            "the error names the route and the field: {last}"
        );
    }
    let bad_smtp = format!("{smtp_url}?tls=sometimes");
    let last = refused_start(
        "api",
        api(&pipeline, free_port(), &bad_smtp),
        &logs.join("api-bad-smtp-url.log"),
    )
    .await;
    assert!(
        last.contains("SMTP_URL"),
        "the error names SMTP_URL: {last}"
    );

    // The routes file, its secret in a file of its own.
    let secret_path = files.join("from-file.secret");
    std::fs::write(&secret_path, format!("{from_file}\n")).unwrap();
    let routes_file = files.join("routes.toml");
    std::fs::write(
        &routes_file,
        format!(
            "[[route]]\nname = \"from-file\"\nkind = \"webhook\"\nurl = \"{}\"\n\
             secret_file = \"{}\"\n",
            receiver_500.url("/hook"),
            secret_path.display()
        ),
    )
    .unwrap();

    // The services.
    let api_port = free_port();
    let (alerter_metrics, ingestor_metrics) = (free_port(), free_port());
    let mut api_service = Proc::spawn(
        "api",
        api(&pipeline, api_port, &smtp_url),
        &logs.join("api.log"),
    );
    let mut command = alerter(&pipeline, &routes_file, &smtp_url);
    command.env("METRICS_ADDR", format!("127.0.0.1:{alerter_metrics}"));
    let mut alerter_service = Proc::spawn("alerter", command, &logs.join("alerter.log"));
    let mut command = service(&pipeline, "ingestor");
    command
        .env("METRICS_ADDR", format!("127.0.0.1:{ingestor_metrics}"))
        .env("LOG_FORMAT", "json");
    let mut ingestor_service = Proc::spawn("ingestor", command, &logs.join("ingestor.log"));
    wait_ready(api_port, "/readyz").await;
    wait_ready(alerter_metrics, "/readyz").await;
    wait_ready(ingestor_metrics, "/readyz").await;
    wait_for_notifier(&pipeline).await;

    let login = format!(r#"{{"username":"{}","password":"{}"}}"#, ADMIN.0, ADMIN.1);
    let response = request(api_port, "POST", "/api/auth/login/", None, Some(&login))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let token = serde_json::from_str::<Value>(&response.body).unwrap()["access"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = Api {
        port: api_port,
        token,
        answers: Mutex::new(Vec::new()),
    };
    api.keep(
        "POST /api/auth/login/".to_owned(),
        &response,
        response.body.clone(),
    );

    // The routes: every kind, every way a secret comes in.
    let given_route = api
        .create_route(json!({"name": "given", "kind": "webhook",
            "url": receiver_given.url("/hook"), "secret": given}))
        .await;
    let (generated_route, generated) = api
        .create_generated(json!({"name": "generated", "kind": "webhook",
            "url": format!("http://127.0.0.1:{closed_webhook}/hook")}))
        .await;
    secrets.push(Secret::webhook("the secret the api generated", &generated));
    let (rotated_route, rotated_from) = api
        .create_generated(json!({"name": "rotated", "kind": "webhook",
            "url": receiver_rotated.url("/hook")}))
        .await;
    secrets.push(Secret::webhook("the secret rotated away", &rotated_from));
    let rotated_path = format!("/api/notification-routes/{}/", rotated_route["id"]);
    let rotation = json!({"secret": rotated_to}).to_string();
    let (status, rotated_route) = api
        .call_routes("PATCH", &rotated_path, Some(&rotation), false)
        .await;
    assert_eq!(status, 200, "{rotated_route}");
    assert_eq!(rotated_route["has_secret"], true);
    assert!(rotated_route.get("secret").is_none(), "{rotated_route}");
    let mut routes = vec![given_route, generated_route, rotated_route];
    for (name, url) in [
        ("slack-refused", &slack_refused),
        ("slack-hang", &slack_hang),
        ("slack-500", &slack_500),
    ] {
        let route = api
            .create_route(json!({"name": name, "kind": "slack", "url": url}))
            .await;
        routes.push(route);
    }
    routes.push(
        api.create_route(json!({"name": "email", "kind": "email", "to": ["soc@example.com"]}))
            .await,
    );
    let (status, page) = api
        .call_routes(
            "GET",
            "/api/notification-routes/?page_size=100",
            None,
            false,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let file_route = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "from-file")
        .expect("the route of the routes file")
        .clone();
    assert_eq!(file_route["from_file"], true);
    assert_eq!(file_route["has_secret"], true);
    routes.push(file_route);
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let path_of = |name: &str| {
        let route = routes.iter().find(|r| r["name"] == name).unwrap();
        format!("/api/notification-routes/{}/", route["id"])
    };

    // Bodies the api refuses, each holding a secret.
    let (given_path, slack_path) = (path_of("given"), path_of("slack-refused"));
    let token = &slack_tokens[0];
    for (path, body) in [
        (
            &given_path,
            json!({"secret": given, "min_severity": "SEVERE"}).to_string(),
        ),
        (&given_path, json!({"secret": too_short}).to_string()),
        (
            &given_path,
            json!({"secret": format!("{rotated_to}\u{7}")}).to_string(),
        ),
        (&given_path, json!({"secret": given.repeat(5)}).to_string()),
        (&given_path, json!({"secret": null, "on": []}).to_string()),
        (&given_path, format!(r#"{{"secret": "{given}", "#)),
        (&given_path, format!(r#"["{given}"]"#)),
        (&slack_path, json!({"secret": given}).to_string()),
        (
            &slack_path,
            json!({"url": format!("ftp://hooks.example.com/services/T/B/{token}")}).to_string(),
        ),
        (
            &slack_path,
            json!({"url": format!("https://x:{token}@hooks.example.com/services/T/B/")})
                .to_string(),
        ),
        (
            &slack_path,
            json!({"url": format!("http://[::1/services/T/B/{token}")}).to_string(),
        ),
        (
            &slack_path,
            json!({"url": format!("{slack_refused}\n")}).to_string(),
        ),
    ] {
        api.refused("PATCH", path, &body).await;
    }
    for body in [
        json!({"name": "given", "kind": "webhook", "url": receiver_given.url("/hook"),
            "secret": given}),
        json!({"name": "bad-url", "kind": "webhook", "url": "not a url", "secret": rotated_to}),
        json!({"name": "bad-kind", "kind": "pager", "url": slack_refused, "secret": given}),
        json!({"name": "signed-mail", "kind": "email", "to": ["soc@example.com"], "secret": given}),
        json!({"name": "slack-refused", "kind": "slack", "url": slack_refused}),
    ] {
        api.refused("POST", "/api/notification-routes/", &body.to_string())
            .await;
    }

    // An alert, to every route.
    let event = json!({"sourceName": "fw-secrets", "eventType": "port_scan",
        "severity": "CRITICAL", "description": "ports probed"});
    pipeline.publish_event(&event, Some("secrets-1")).await;
    let alert = eventually(PATIENCE, "the alert", || async {
        let (status, page) = api.call("GET", "/api/alerts/", None).await;
        assert_eq!(status, 200, "{page}");
        page["results"].as_array()?.first()?["id"].as_i64()
    })
    .await;
    let attempts = settled_deliveries(&api, alert, &names).await;
    let outcomes = |route: &str| -> Vec<&str> {
        of_route(&attempts, route)
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect()
    };
    let errors = |route: &str| -> Vec<&str> {
        of_route(&attempts, route)
            .iter()
            .filter_map(|a| a["error"].as_str())
            .collect()
    };
    for route in ["given", "rotated"] {
        let seen = outcomes(route);
        assert_eq!(seen.last(), Some(&"delivered"), "{route}: {seen:?}");
        assert!(
            seen.contains(&"retrying"),
            "{route} was answered 500 first: {seen:?}"
        );
    }
    for route in [
        "generated",
        "from-file",
        "slack-refused",
        "slack-hang",
        "slack-500",
        "email",
    ] {
        let seen = outcomes(route);
        assert_eq!(seen.last(), Some(&"failed"), "{route}: {seen:?}");
        assert!(seen.len() >= 2, "{route} was retried: {seen:?}");
    }
    for route in ["generated", "slack-refused"] {
        let seen = errors(route);
        assert!(
            seen.iter().all(|e| e.contains("Connection refused")),
            "{seen:?}"
        );
    }
    for route in ["from-file", "slack-500"] {
        assert!(
            of_route(&attempts, route)
                .iter()
                .all(|a| a["status_code"] == 500 && a["reply"] == "try again"),
            "{attempts:#?}"
        );
    }
    let hang_errors = errors("slack-hang");
    assert!(
        hang_errors
            .iter()
            .all(|e| e.contains("no answer") || e.contains("timed out")),
        "{hang_errors:?}"
    );
    assert!(
        of_route(&attempts, "email")
            .iter()
            .all(|a| a["status_code"] == 454),
        "the SMTP server's answer to the login: {attempts:#?}"
    );
    // The secrets were used: the receivers verified each signature with the Standard
    // Webhooks library, and the SMTP server was sent the password.
    for (receiver, at_least) in [
        (&receiver_given, 3),
        (&receiver_rotated, 2),
        (&receiver_500, 2),
    ] {
        let requests = receiver.requests("/hook");
        assert!(requests.len() >= at_least, "{requests:#?}");
        assert!(
            requests.iter().all(|r| r["verified"] == true),
            "each signed with the route's secret: {requests:#?}"
        );
    }
    assert!(
        smtp_got
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&unpadded(&auth_plain))),
        "the SMTP server was sent the password: {:?}",
        smtp_got.lock().unwrap()
    );
    // Every entry of the delivery log, field by field (the answers are searched whole too).
    for attempt in &attempts {
        for (field, value) in attempt.as_object().unwrap() {
            let place = format!(
                "the {field} of a delivery log entry ({})",
                attempt["route_name"]
            );
            assert_no_secret(&secrets, &place, &value.to_string());
        }
    }
    let (status, _) = api
        .call(
            "GET",
            &format!("/api/alerts/{alert}/deliveries/?page=9"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // The dead letters: one per delivery that failed for good, headers and body searched.
    let letters = pipeline
        .read_stream(subjects::DEADLETTER_STREAM, "deadletter.notify")
        .await;
    let mut dead: Vec<String> = Vec::new();
    for letter in &letters {
        let headers = letter.headers.as_ref().expect("headers");
        let mut text = String::new();
        for (name, values) in headers.iter() {
            for value in values {
                text.push_str(&format!("{name}: {}\n", value.as_str()));
            }
        }
        let reason = headers.get(common::bus::REASON_HEADER).expect("a reason");
        assert!(!reason.as_str().is_empty(), "{text}");
        let route = headers
            .get(alerter::delivery::ROUTE_HEADER)
            .expect("the route");
        let route = route.as_str().to_owned();
        dead.push(route.split(' ').next().unwrap().to_owned());
        let body: Value = serde_json::from_slice(&letter.payload).expect("the alert");
        assert_eq!(body["id"], alert);
        assert_no_secret(
            &secrets,
            &format!("the headers of a dead letter ({route})"),
            &text,
        );
        let body = String::from_utf8_lossy(&letter.payload);
        assert_no_secret(
            &secrets,
            &format!("the body of a dead letter ({route})"),
            &body,
        );
    }
    dead.sort();
    assert_eq!(
        dead,
        [
            "email",
            "from-file",
            "generated",
            "slack-500",
            "slack-hang",
            "slack-refused"
        ]
    );

    // Route tests: the receivers that answered 500 first answer 200 by now.
    for route in &routes {
        let path = format!("{}test/", path_of(route["name"].as_str().unwrap()));
        let (status, attempt) = api.call("POST", &path, Some("{}")).await;
        assert_eq!(status, 200, "{attempt}");
        let expected = match route["name"].as_str().unwrap() {
            "given" | "rotated" => "delivered",
            _ => "failed",
        };
        assert_eq!(attempt["outcome"], expected, "{attempt}");
        assert_eq!(attempt["trigger"], "test");
    }
    // Each route, the list, a deletion; the services' metrics.
    for route in &routes {
        let (status, shown) = api
            .call_routes(
                "GET",
                &path_of(route["name"].as_str().unwrap()),
                None,
                false,
            )
            .await;
        assert_eq!(status, 200, "{shown}");
        assert!(shown.get("secret").is_none(), "{shown}");
    }
    let (status, _) = api
        .call_routes("GET", "/api/notification-routes/", None, false)
        .await;
    assert_eq!(status, 200);
    let (status, _) = api.call("DELETE", &path_of("generated"), None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", &path_of("generated"), None).await;
    assert_eq!(status, 404);
    let metrics = api.scrape(alerter_metrics, "/metrics").await;
    assert!(
        metrics.contains("threatmon_notification_attempts_total"),
        "{metrics}"
    );
    api.scrape(api_port, "/metrics").await;
    api.scrape(ingestor_metrics, "/metrics").await;

    // Every service stops as asked, so that its last lines are written too.
    for service in [
        &mut alerter_service,
        &mut ingestor_service,
        &mut api_service,
    ] {
        service.stop().await;
    }

    // Every answer, head and body.
    let answers = api.answers.lock().unwrap();
    for answer in answers.iter() {
        assert_no_secret(
            &secrets,
            &format!("the head of {}", answer.what),
            &answer.head,
        );
        assert_no_secret(
            &secrets,
            &format!("the body of {}", answer.what),
            &answer.body,
        );
    }
    // Every log line of every service.
    let mut log_files: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    log_files.sort();
    assert_eq!(log_files.len(), 6, "{log_files:?}");
    let mut total = 0;
    for file in &log_files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.trim().is_empty(), "{} is empty", file.display());
        total += text.len();
        assert_no_secret(&secrets, &file.display().to_string(), &text);
    }
    eprintln!(
        "{} secrets: none in {} answers, {} delivery-log entries, {} dead letters, {} log \
         files ({} KiB), on {:?}, in {:?}",
        secrets.len(),
        answers.len(),
        attempts.len(),
        letters.len(),
        log_files.len(),
        total / 1024,
        pipeline.db.backend(),
        started.elapsed()
    );

    // The searches were not of empty or idle logs: each path ran and left lines.
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap();
    let api_log = read("api.log");
    for line in [
        "\"level\":\"TRACE\"",
        "notification route created",
        "notification route updated",
        "notification route tested",
        "INSERT INTO notification_routes",
    ] {
        assert!(api_log.contains(line), "the api logged {line:?}");
    }
    let alerter_log = read("alerter.log");
    let refused_slack = format!("connect error for 127.0.0.1:{closed_slack}");
    for line in [
        " TRACE ",
        "notification routes loaded",
        "INSERT INTO notification_attempts",
        "Connection refused",
        &refused_slack,
        "subject=deadletter.notify",
    ] {
        assert!(alerter_log.contains(line), "the alerter logged {line:?}");
    }
}
