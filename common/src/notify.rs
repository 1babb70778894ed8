//! Sending alert messages to people: a signed webhook (Standard Webhooks), a Slack message or
//! an e-mail, one attempt at a time; what an attempt found decides whether it is retried
//! ([`Sent::retry`]) and when ([`next_attempt_at`]).
//!
//! Targets are checked at each attempt (not only when a route is saved, as DNS may change):
//! a URL whose host is, or resolves to, a loopback, private or link-local address is refused
//! unless `NOTIFY_ALLOW_PRIVATE_TARGETS=true` (SSRF). Redirects are not followed and no proxy
//! is used, so the address checked is the address reached.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};

use crate::domain::{RouteKind, RouteSpec, Severity, Trigger, is_private_address, secret_bytes};

/// The longest part of a receiver's answer kept in the delivery log, in characters.
const MAX_REPLY_CHARS: usize = 300;

/// How notifications are sent: timeouts, retries, targets, SMTP.
#[derive(Clone, clap::Args)]
pub struct NotifySettings {
    /// Seconds an attempt may take before it is cut (and retried).
    #[arg(long, env = "NOTIFY_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub notify_timeout_secs: u64,
    /// Seconds a delivery is retried for, from its first attempt; then it is dead-lettered on
    /// `deadletter.notify`.
    #[arg(long, env = "NOTIFY_RETRY_FOR_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub notify_retry_for_secs: u64,
    /// Allow targets on loopback, private and link-local addresses (the local quick start
    /// and the tests; never on a host that can reach an internal network).
    #[arg(long, env = "NOTIFY_ALLOW_PRIVATE_TARGETS", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub notify_allow_private_targets: bool,
    /// The SMTP server of e-mail routes: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://user:password@host:465` (TLS). Put a password in the environment or
    /// an env file, never on a command line.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of e-mail notifications.
    #[arg(
        long,
        env = "SMTP_FROM",
        default_value = "threatmon <threatmon@localhost>"
    )]
    pub smtp_from: String,
    /// The api's public address, for links to an alert (`<url>/console/alerts/<id>`).
    #[arg(long, env = "API_PUBLIC_URL")]
    pub api_public_url: Option<String>,
    /// Milliseconds before the first retry (it doubles from there, with jitter).
    #[arg(long, env = "NOTIFY_BACKOFF_FIRST_MS", default_value_t = 1000, hide = true,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub notify_backoff_first_ms: u64,
    /// The longest wait between two attempts, in seconds.
    #[arg(long, env = "NOTIFY_BACKOFF_MAX_SECS", default_value_t = 300, hide = true,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub notify_backoff_max_secs: u64,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SMTP_URL may hold a password.
        f.debug_struct("NotifySettings")
            .field("notify_timeout_secs", &self.notify_timeout_secs)
            .field("notify_retry_for_secs", &self.notify_retry_for_secs)
            .field(
                "notify_allow_private_targets",
                &self.notify_allow_private_targets,
            )
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(crate::storage::redact_url),
            )
            .field("smtp_from", &self.smtp_from)
            .field("api_public_url", &self.api_public_url)
            .field("notify_backoff_first_ms", &self.notify_backoff_first_ms)
            .field("notify_backoff_max_secs", &self.notify_backoff_max_secs)
            .finish()
    }
}

/// Why notifications cannot be sent at all.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Http(#[source] reqwest::Error),
    /// `SMTP_URL` is not a URL lettre understands.
    #[error("SMTP_URL is not an smtp:// or smtps:// URL")]
    SmtpUrl(#[source] lettre::transport::smtp::Error),
    /// `SMTP_FROM` is not an address.
    #[error("SMTP_FROM is not an e-mail address")]
    SmtpFrom(#[source] lettre::address::AddressError),
}

/// An alert message, read from the ALERTS stream (or made for a test or a reminder).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertNotice {
    /// What happened.
    pub trigger: Trigger,
    /// The alert, as the api shows it.
    pub alert: Value,
    /// The change, for `alerts.updated.*`.
    pub change: Option<Value>,
}

impl AlertNotice {
    /// Reads an ALERTS message: `alerts.created.*` is the alert, `alerts.updated.*` the alert
    /// with its `change`. `None` for an update no route is told about (an owner or a note),
    /// an error for what is not an alert message.
    pub fn from_message(subject: &str, payload: &[u8]) -> Result<Option<AlertNotice>, String> {
        let mut alert: Value =
            serde_json::from_slice(payload).map_err(|e| format!("not an alert message: {e}"))?;
        let object = alert
            .as_object_mut()
            .ok_or("not an alert message: not a JSON object")?;
        if object.get("id").and_then(Value::as_i64).is_none() {
            return Err("not an alert message: no integer id".to_owned());
        }
        if subject.starts_with("alerts.created.") {
            return Ok(Some(AlertNotice {
                trigger: Trigger::Created,
                alert,
                change: None,
            }));
        }
        if !subject.starts_with("alerts.updated.") {
            return Err(format!("not an alert message: subject {subject}"));
        }
        let change = object
            .remove("change")
            .ok_or("not an alert update: no change")?;
        let trigger = match change.get("kind").and_then(Value::as_str) {
            Some("severity_raised") => Trigger::SeverityRaised,
            Some("reopened") => Trigger::Reopened,
            Some("acknowledged") => Trigger::Acknowledged,
            Some("resolved") => Trigger::Resolved,
            Some(_) => return Ok(None),
            None => return Err("not an alert update: change without a kind".to_owned()),
        };
        Ok(Some(AlertNotice {
            trigger,
            alert,
            change: Some(change),
        }))
    }

    /// The alert's id.
    pub fn alert_id(&self) -> Option<i64> {
        self.alert.get("id").and_then(Value::as_i64)
    }

    /// The alert's text field `name` (empty if it has none).
    fn text(&self, name: &str) -> &str {
        self.alert.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// The alert's severity.
    pub fn severity(&self) -> Option<Severity> {
        self.text("severity").parse::<Severity>().ok()
    }

    /// The alert's sensor.
    pub fn source_name(&self) -> &str {
        self.text("sourceName")
    }

    /// The alert's event type.
    pub fn event_type(&self) -> &str {
        self.text("eventType")
    }

    /// The identity of this message among a route's deliveries: `alert-7-created`,
    /// `alert-7-change-12`.
    pub fn message_key(&self) -> String {
        let id = self.alert_id().unwrap_or(0);
        match self
            .change
            .as_ref()
            .and_then(|c| c.get("id"))
            .and_then(Value::as_i64)
        {
            Some(change) => format!("alert-{id}-change-{change}"),
            None => format!("alert-{id}-{}", self.trigger.as_str()),
        }
    }

    /// What is stored with a delivery, and read back by [`AlertNotice::from_stored`].
    pub fn stored(&self) -> String {
        json!({"trigger": self.trigger, "alert": self.alert, "change": self.change}).to_string()
    }

    /// A notice stored by [`AlertNotice::stored`].
    pub fn from_stored(stored: &str) -> Result<AlertNotice, String> {
        let value: Value = serde_json::from_str(stored).map_err(|e| e.to_string())?;
        let trigger = value
            .get("trigger")
            .and_then(Value::as_str)
            .and_then(Trigger::parse)
            .ok_or("a stored notice without a trigger")?;
        Ok(AlertNotice {
            trigger,
            alert: value.get("alert").cloned().unwrap_or(Value::Null),
            change: value.get("change").cloned().filter(|c| !c.is_null()),
        })
    }

    /// A made-up alert for `POST /api/notification-routes/{id}/test/`.
    pub fn test(route: &RouteSpec, now: DateTime<Utc>) -> AlertNotice {
        AlertNotice {
            trigger: Trigger::Test,
            alert: json!({
                "id": 0, "event_id": 0, "sourceName": "threatmon", "eventType": "test",
                "severity": route.min_severity.as_str(), "status": "OPEN",
                "created_at": now, "updated_at": now, "count": 1,
                "description": format!("A test message for the route \"{}\".", route.name),
            }),
            change: None,
        }
    }

    /// A reminder that an alert is still OPEN.
    pub fn reminder(alert: Value) -> AlertNotice {
        AlertNotice {
            trigger: Trigger::Reminder,
            alert,
            change: None,
        }
    }

    /// The webhook's body: `{"type", "timestamp", "alert", "change"}`.
    pub fn webhook_body(&self, now: DateTime<Utc>) -> Value {
        json!({
            "type": self.trigger.event_type(),
            "timestamp": now,
            "alert": self.alert,
            "change": self.change,
        })
    }

    /// One line: `HIGH port_scan on fw-edge-01 (alert 12, created)`.
    pub fn headline(&self) -> String {
        format!(
            "{} {} on {} (alert {}, {})",
            self.text("severity"),
            self.event_type(),
            self.source_name(),
            self.alert_id().unwrap_or(0),
            self.trigger.as_str().replace('_', " ")
        )
    }

    fn link(&self, public_url: Option<&str>) -> Option<String> {
        public_url.map(|base| {
            format!(
                "{}/console/alerts/{}",
                base.trim_end_matches('/'),
                self.alert_id().unwrap_or(0)
            )
        })
    }

    fn count(&self) -> i64 {
        self.alert.get("count").and_then(Value::as_i64).unwrap_or(1)
    }

    /// A Slack incoming-webhook message (Block Kit), with a plain `text` fallback.
    pub fn slack_message(&self, public_url: Option<&str>) -> Value {
        let field = |label: &str, value: String| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", slack_escape(&value))});
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text",
                "text": truncate(&format!("threatmon: {}", self.headline()), 150)}}),
            json!({"type": "section", "fields": [
                field("Severity", self.text("severity").to_owned()),
                field("Type", self.event_type().to_owned()),
                field("Source", self.source_name().to_owned()),
                field("Count", self.count().to_string()),
                field("Status", self.text("status").to_owned()),
                field("Change", self.trigger.as_str().replace('_', " ")),
            ]}),
        ];
        if let Some(link) = self.link(public_url) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
                "text": format!("<{link}|Open alert {} in threatmon>", self.alert_id().unwrap_or(0))}}));
        }
        // `text` is mrkdwn too (Slack shows it in notifications): a sensor's `<!channel>` or
        // `<https://…|…>` is escaped here as in the fields.
        json!({"text": slack_escape(&format!("threatmon: {}", self.headline())), "blocks": blocks})
    }

    /// An e-mail's subject, text part and HTML part.
    pub fn email(&self, public_url: Option<&str>) -> (String, String, String) {
        let subject = format!("[threatmon] {}", self.headline());
        let rows = [
            ("Severity", self.text("severity").to_owned()),
            ("Type", self.event_type().to_owned()),
            ("Source", self.source_name().to_owned()),
            ("Count", self.count().to_string()),
            ("Status", self.text("status").to_owned()),
            ("Change", self.trigger.as_str().replace('_', " ")),
        ];
        let link = self.link(public_url);
        let mut text = format!("{}\n\n", self.headline());
        for (label, value) in &rows {
            text.push_str(&format!("{label}: {value}\n"));
        }
        if let Some(link) = &link {
            text.push_str(&format!("\n{link}\n"));
        }
        let mut html = format!(
            "<html><body><h2>{}</h2><table>",
            html_escape(&self.headline())
        );
        for (label, value) in &rows {
            html.push_str(&format!(
                "<tr><th align=\"left\">{label}</th><td>{}</td></tr>",
                html_escape(value)
            ));
        }
        html.push_str("</table>");
        if let Some(link) = &link {
            let link = html_escape(link);
            html.push_str(&format!("<p><a href=\"{link}\">{link}</a></p>"));
        }
        html.push_str("</body></html>");
        (subject, text, html)
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Slack's three control characters in mrkdwn text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text as HTML text (an alert's fields come from sensors: never markup).
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The receiver accepted it.
    pub delivered: bool,
    /// Whether a failure is worth retrying, and the receiver's `Retry-After` if it said.
    pub retry: Retry,
    /// The HTTP status or SMTP reply code.
    pub status_code: Option<i64>,
    /// The start of the answer.
    pub reply: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took.
    pub latency: Duration,
}

/// Whether a failed attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It succeeded, or failed for good (a 4xx other than 408/429, a refused target).
    Never,
    /// Network errors, timeouts, 408, 429 and 5xx: after the back-off.
    AfterBackoff,
    /// The receiver asked to wait this long (`Retry-After`), at least.
    After(Duration),
}

impl Sent {
    fn failed(retry: Retry, error: String, started: Instant) -> Sent {
        Sent {
            delivered: false,
            retry,
            status_code: None,
            reply: None,
            error: Some(error),
            latency: started.elapsed(),
        }
    }
}

/// When a delivery that has failed `attempts` times (this one included) is tried again:
/// about `first` doubling each time, with jitter, at most the settings' maximum and not
/// before the receiver's `Retry-After`; `None` when that is past the retry window, which
/// counts from `recorded_at`.
pub fn next_attempt_at(
    settings: &NotifySettings,
    attempts: u32,
    retry: Retry,
    recorded_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let max = Duration::from_secs(settings.notify_backoff_max_secs);
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(settings.notify_backoff_first_ms))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1) as usize)
        .unwrap_or(max)
        .min(max);
    let wait = match retry {
        Retry::Never => return None,
        Retry::AfterBackoff => backoff,
        Retry::After(asked) => asked.max(backoff),
    };
    let at = now + chrono::Duration::from_std(wait).ok()?;
    let window_ends =
        recorded_at + chrono::Duration::seconds(settings.notify_retry_for_secs as i64);
    (at <= window_ends).then_some(at)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Refuses names that resolve to private addresses (unless allowed), for reqwest.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> BoxError { Box::new(e) })?;
            let addrs: Vec<SocketAddr> = resolved
                .filter(|addr| allow_private || !is_private_address(addr.ip()))
                .collect();
            if addrs.is_empty() {
                let refused: BoxError = format!(
                    "{host} resolves to no address a notification may reach (loopback, private \
                     and link-local ones are refused; NOTIFY_ALLOW_PRIVATE_TARGETS)"
                )
                .into();
                return Err(refused);
            }
            Ok::<reqwest::dns::Addrs, BoxError>(Box::new(addrs.into_iter()))
        })
    }
}

/// Sends notifications; one for the process, shared by every delivery.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    settings: Arc<NotifySettings>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SMTP transport holds credentials: never printed.
        f.debug_struct("Notifier")
            .field("smtp", &self.smtp.is_some())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier with these settings.
    pub fn new(settings: NotifySettings) -> Result<Notifier, NotifyError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_secs(settings.notify_timeout_secs);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("threatmon/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.notify_allow_private_targets,
            }))
            .build()
            .map_err(NotifyError::Http)?;
        let smtp = match &settings.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(NotifyError::SmtpUrl)?
                    .timeout(Some(timeout))
                    .build(),
            ),
            None => None,
        };
        let from = settings
            .smtp_from
            .parse::<Mailbox>()
            .map_err(NotifyError::SmtpFrom)?;
        Ok(Notifier {
            http,
            smtp,
            from,
            settings: Arc::new(settings),
        })
    }

    /// The settings it sends with.
    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// One attempt at sending `notice` to `route`, as delivery `webhook_id`. Never longer
    /// than `NOTIFY_TIMEOUT_SECS` (and a little): a receiver that hangs is cut.
    pub async fn send(&self, route: &RouteSpec, notice: &AlertNotice, webhook_id: &str) -> Sent {
        let started = Instant::now();
        let limit = Duration::from_secs(self.settings.notify_timeout_secs) + Duration::from_secs(1);
        let attempt = async {
            match route.kind {
                RouteKind::Webhook => self.send_webhook(route, notice, webhook_id, started).await,
                RouteKind::Slack => {
                    let body = notice.slack_message(self.settings.api_public_url.as_deref());
                    self.post(route, body.to_string(), Vec::new(), started)
                        .await
                }
                RouteKind::Email => self.send_email(route, notice, started).await,
            }
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(sent) => sent,
            Err(_) => Sent::failed(
                Retry::AfterBackoff,
                format!("no answer within {} s", self.settings.notify_timeout_secs),
                started,
            ),
        }
    }

    async fn send_webhook(
        &self,
        route: &RouteSpec,
        notice: &AlertNotice,
        webhook_id: &str,
        started: Instant,
    ) -> Sent {
        let now = Utc::now();
        let body = notice.webhook_body(now).to_string();
        let Some(secret) = route.secret.as_deref() else {
            return Sent::failed(Retry::Never, "the route has no secret".to_owned(), started);
        };
        let signature = secret_bytes(secret)
            .map_err(|_| "the route's secret is not a Standard Webhooks secret".to_owned())
            .and_then(|key| {
                standardwebhooks::Webhook::from_bytes(key)
                    .and_then(|hook| hook.sign(webhook_id, now.timestamp(), body.as_bytes()))
                    .map_err(|_| "signing failed".to_owned())
            });
        let signature = match signature {
            Ok(signature) => signature,
            Err(error) => return Sent::failed(Retry::Never, error, started),
        };
        let headers = vec![
            ("webhook-id", webhook_id.to_owned()),
            ("webhook-timestamp", now.timestamp().to_string()),
            ("webhook-signature", signature),
        ];
        self.post(route, body, headers, started).await
    }

    /// POSTs `body` (JSON) to the route's URL, after checking its host.
    async fn post(
        &self,
        route: &RouteSpec,
        body: String,
        headers: Vec<(&'static str, String)>,
        started: Instant,
    ) -> Sent {
        let Some(url) = route.url.as_deref() else {
            return Sent::failed(Retry::Never, "the route has no URL".to_owned(), started);
        };
        let url = match crate::domain::check_url(url) {
            Ok(url) => url,
            Err(problem) => return Sent::failed(Retry::Never, problem, started),
        };
        // An address in the URL is not resolved, so the resolver cannot refuse it.
        if !self.settings.notify_allow_private_targets
            && let Some(ip) = url_ip(&url)
            && is_private_address(ip)
        {
            return Sent::failed(
                Retry::Never,
                "the target is a loopback, private or link-local address \
                 (NOTIFY_ALLOW_PRIVATE_TARGETS)"
                    .to_owned(),
                started,
            );
        }
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // Without the URL: a Slack URL is itself a secret.
            Err(err) => {
                let error = crate::telemetry::error_chain(&err.without_url());
                let retry = if error.contains("resolves to no address a notification may reach") {
                    Retry::Never
                } else {
                    Retry::AfterBackoff
                };
                return Sent::failed(retry, error, started);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let reply = response
            .text()
            .await
            .ok()
            .map(|text| truncate(&text, MAX_REPLY_CHARS))
            .filter(|text| !text.is_empty());
        let code = status.as_u16();
        let retry = if status.is_success() {
            Retry::Never
        } else if code == 429 || code == 408 || status.is_server_error() {
            retry_after.map_or(Retry::AfterBackoff, Retry::After)
        } else {
            Retry::Never
        };
        Sent {
            delivered: status.is_success(),
            retry,
            status_code: Some(i64::from(code)),
            reply,
            error: (!status.is_success()).then(|| format!("the receiver answered {status}")),
            latency: started.elapsed(),
        }
    }

    async fn send_email(&self, route: &RouteSpec, notice: &AlertNotice, started: Instant) -> Sent {
        let Some(smtp) = &self.smtp else {
            return Sent::failed(
                Retry::Never,
                "no SMTP server is configured (SMTP_URL)".to_owned(),
                started,
            );
        };
        let (subject, text, html) = notice.email(self.settings.api_public_url.as_deref());
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            // lettre adds none, and receivers such as Gmail refuse a message without one.
            // Random, never the delivery's id: that repeats across databases and test messages,
            // and a receiver may drop a "duplicate" Message-ID.
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::new_v4().simple(),
                self.from.email.domain()
            )));
        for to in &route.to {
            match to.parse::<Mailbox>() {
                Ok(mailbox) => builder = builder.to(mailbox),
                Err(_) => {
                    return Sent::failed(
                        Retry::Never,
                        format!("\"{to}\" is not an e-mail address"),
                        started,
                    );
                }
            }
        }
        let message = match builder.multipart(MultiPart::alternative_plain_html(text, html)) {
            Ok(message) => message,
            Err(err) => {
                return Sent::failed(Retry::Never, format!("building the e-mail: {err}"), started);
            }
        };
        match smtp.send(message).await {
            Ok(response) => Sent {
                delivered: true,
                retry: Retry::Never,
                status_code: Some(i64::from(u16::from(response.code()))),
                reply: Some(truncate(
                    &response.message().collect::<Vec<_>>().join(" "),
                    MAX_REPLY_CHARS,
                )),
                error: None,
                latency: started.elapsed(),
            },
            Err(err) => Sent {
                delivered: false,
                retry: if err.is_permanent() {
                    Retry::Never
                } else {
                    Retry::AfterBackoff
                },
                status_code: err.status().map(|code| i64::from(u16::from(code))),
                reply: None,
                error: Some(crate::telemetry::error_chain(&err)),
                latency: started.elapsed(),
            },
        }
    }
}

/// The address a URL names directly, if it does.
fn url_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings() -> NotifySettings {
        NotifySettings {
            notify_timeout_secs: 10,
            notify_retry_for_secs: 3600,
            notify_allow_private_targets: false,
            smtp_url: None,
            smtp_from: "threatmon@localhost".into(),
            api_public_url: None,
            notify_backoff_first_ms: 1000,
            notify_backoff_max_secs: 300,
        }
    }

    #[test]
    fn the_backoff_doubles_from_about_a_second_up_to_five_minutes_then_gives_up() {
        let s = settings();
        let now = Utc::now();
        let wait = |attempts: u32| {
            (next_attempt_at(&s, attempts, Retry::AfterBackoff, now, now).unwrap() - now)
                .to_std()
                .unwrap()
        };
        assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&wait(1)));
        assert!((Duration::from_secs(8)..=Duration::from_secs(16)).contains(&wait(4)));
        assert_eq!(wait(30), Duration::from_secs(300));
        assert_eq!(next_attempt_at(&s, 1, Retry::Never, now, now), None);
        let asked = Retry::After(Duration::from_secs(120));
        assert!(
            wait(1)
                < (next_attempt_at(&s, 1, asked, now, now).unwrap() - now)
                    .to_std()
                    .unwrap()
        );
        let long_ago = now - chrono::Duration::seconds(3599);
        assert_eq!(
            next_attempt_at(&s, 3, Retry::AfterBackoff, long_ago, now),
            None
        );
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        assert!(parse_retry_after(&later).is_some_and(|d| d > Duration::from_secs(50)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn alert_messages_are_read_and_other_updates_skipped() {
        let created = AlertNotice::from_message(
            "alerts.created.high",
            br#"{"id": 7, "severity": "HIGH", "sourceName": "fw", "eventType": "port_scan"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(created.trigger, Trigger::Created);
        assert_eq!(created.message_key(), "alert-7-created");
        let stored = AlertNotice::from_stored(&created.stored()).unwrap();
        assert_eq!(stored, created);
        let raised = AlertNotice::from_message(
            "alerts.updated.open",
            br#"{"id": 7, "change": {"id": 12, "kind": "severity_raised"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(raised.trigger, Trigger::SeverityRaised);
        assert_eq!(raised.message_key(), "alert-7-change-12");
        assert!(raised.alert.get("change").is_none());
        let note = AlertNotice::from_message(
            "alerts.updated.open",
            br#"{"id": 7, "change": {"id": 13, "kind": "note"}}"#,
        )
        .unwrap();
        assert_eq!(note, None);
        for bad in [&b"[]"[..], b"{}", b"not json", br#"{"id": "7"}"#] {
            assert!(AlertNotice::from_message("alerts.created.high", bad).is_err());
        }
    }

    #[test]
    fn e_mail_and_slack_render_alert_text_as_text() {
        let notice = AlertNotice::from_message(
            "alerts.created.high",
            br#"{"id": 7, "severity": "HIGH", "sourceName": "<b>fw</b>", "eventType": "x&y"}"#,
        )
        .unwrap()
        .unwrap();
        let (_, _, html) = notice.email(Some("https://tm.example.com/"));
        assert!(html.contains("&lt;b&gt;fw&lt;/b&gt;") && !html.contains("<b>fw"));
        assert!(html.contains("https://tm.example.com/console/alerts/7"));
        let slack = notice.slack_message(None);
        assert!(slack.to_string().contains("&lt;b&gt;fw"));
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("on &lt;b&gt;fw&lt;/b&gt; (alert 7")
        );
    }
}
