//! Notification routes: where alert messages go (a webhook, Slack, e-mail) and which ones.
//!
//! A route is parsed from JSON (the api's body, or a table of `NOTIFY_ROUTES_FILE` turned into
//! JSON) by [`RouteSpec::parse`], which reports every problem at once in DRF's shape.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{FieldErrors, Severity, json_type_name};

/// Longest route name, in characters.
pub const MAX_ROUTE_NAME_CHARS: usize = 100;
/// Most entries of `sources`, `event_types` and `to`.
pub const MAX_ROUTE_LIST: usize = 100;
/// Longest URL, in bytes.
pub const MAX_ROUTE_URL_BYTES: usize = 2048;
/// The shortest reminder interval: a reminder more often than this is a flood.
pub const MIN_REPEAT_SECS: u64 = 60;
/// Prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Where a route delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// An HTTP POST of the alert as JSON, signed as Standard Webhooks specifies.
    Webhook,
    /// A Slack incoming webhook (Block Kit message).
    Slack,
    /// E-mail through `SMTP_URL`.
    Email,
}

impl RouteKind {
    /// `webhook`, `slack` or `email`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Webhook => "webhook",
            RouteKind::Slack => "slack",
            RouteKind::Email => "email",
        }
    }

    /// The kind named `text`.
    pub fn parse(text: &str) -> Option<RouteKind> {
        [RouteKind::Webhook, RouteKind::Slack, RouteKind::Email]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// What happened to an alert that a route may be told about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A new alert.
    Created,
    /// A folded event raised the alert's severity.
    SeverityRaised,
    /// The alert became OPEN again (from ACKNOWLEDGED or RESOLVED).
    Reopened,
    /// The alert was acknowledged.
    Acknowledged,
    /// The alert was resolved.
    Resolved,
    /// A reminder that the alert is still OPEN (`repeat_every_secs`); never in `on`.
    Reminder,
    /// A test message (`POST /api/notification-routes/{id}/test/`); never in `on`.
    Test,
}

/// The triggers a route may list in `on`.
pub const ROUTE_TRIGGERS: [Trigger; 5] = [
    Trigger::Created,
    Trigger::SeverityRaised,
    Trigger::Reopened,
    Trigger::Acknowledged,
    Trigger::Resolved,
];

/// `on` when a route does not say.
pub const DEFAULT_TRIGGERS: [Trigger; 3] =
    [Trigger::Created, Trigger::SeverityRaised, Trigger::Reopened];

impl Trigger {
    /// The name in `on` and in the delivery log: `created`, `severity_raised`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Created => "created",
            Trigger::SeverityRaised => "severity_raised",
            Trigger::Reopened => "reopened",
            Trigger::Acknowledged => "acknowledged",
            Trigger::Resolved => "resolved",
            Trigger::Reminder => "reminder",
            Trigger::Test => "test",
        }
    }

    /// The trigger named `text` (any, reminders and tests included).
    pub fn parse(text: &str) -> Option<Trigger> {
        ROUTE_TRIGGERS
            .into_iter()
            .chain([Trigger::Reminder, Trigger::Test])
            .find(|t| t.as_str() == text)
    }

    /// The webhook's `type`: `alert.created`, `alert.severity_raised`, …
    pub fn event_type(self) -> String {
        format!("alert.{}", self.as_str())
    }
}

/// What a route is: its target and what it matches. Its `Debug` shows neither the secret nor
/// the URL's path and query (a Slack URL's path is its token), so logging a route leaks
/// nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Unique name.
    pub name: String,
    /// Where it delivers.
    pub kind: RouteKind,
    /// The webhook's or Slack's URL (`http`/`https`); none for e-mail.
    pub url: Option<String>,
    /// E-mail recipients; empty for the others.
    pub to: Vec<String>,
    /// A webhook's signing secret, `whsec_` + base64 (never returned once set).
    pub secret: Option<String>,
    /// A disabled route matches nothing.
    pub enabled: bool,
    /// The least severity it matches.
    pub min_severity: Severity,
    /// The sensors it matches; empty = any.
    pub sources: Vec<String>,
    /// The event types it matches; empty = any.
    pub event_types: Vec<String>,
    /// The changes it is told about.
    pub on: Vec<Trigger>,
    /// Remind of an alert still OPEN this often (seconds); none = never.
    pub repeat_every_secs: Option<u64>,
}

impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = self.url.as_deref().map(|url| match url::Url::parse(url) {
            Ok(parsed) => format!("{}/…", parsed.origin().ascii_serialization()),
            Err(_) => "(not a URL)".to_owned(),
        });
        f.debug_struct("RouteSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &target)
            .field("to", &self.to)
            .field("secret", &self.secret.as_ref().map(|_| "(set)"))
            .field("enabled", &self.enabled)
            .field("min_severity", &self.min_severity)
            .field("sources", &self.sources)
            .field("event_types", &self.event_types)
            .field("on", &self.on)
            .field("repeat_every_secs", &self.repeat_every_secs)
            .finish()
    }
}

/// What an alert message says, as far as matching a route goes.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The alert's severity.
    pub severity: Severity,
    /// Its sensor.
    pub source_name: &'a str,
    /// Its event type.
    pub event_type: &'a str,
    /// What happened.
    pub trigger: Trigger,
}

impl RouteSpec {
    /// Whether an alert message with these properties goes to this route.
    pub fn matches(&self, message: Matched<'_>) -> bool {
        self.on.contains(&message.trigger)
            && self.covers(message.severity, message.source_name, message.event_type)
    }

    /// Whether the route is enabled and takes alerts of this severity, sensor and type,
    /// whatever happened to them (a reminder's test: reminders are never in `on`).
    pub fn covers(&self, severity: Severity, source_name: &str, event_type: &str) -> bool {
        self.enabled
            && severity >= self.min_severity
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source_name))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }

    /// Reads a route from a JSON object: a whole new one (`base` none; a webhook without a
    /// `secret` gets a new one), or `base` with the fields `body` has (PATCH). Unknown fields
    /// are ignored, as DRF does; every problem is reported at once.
    pub fn parse(
        body: &Map<String, Value>,
        base: Option<&RouteSpec>,
    ) -> Result<RouteSpec, FieldErrors> {
        let mut errors = FieldErrors::new();
        let creating = base.is_none();
        let present = |name: &str| body.contains_key(name);
        let name = match body.get("name") {
            Some(value) => text(&mut errors, "name", value, MAX_ROUTE_NAME_CHARS),
            None if creating => required(&mut errors, "name"),
            None => base.map(|b| b.name.clone()),
        };
        let kind = match body.get("kind") {
            Some(Value::String(k)) => RouteKind::parse(k).or_else(|| {
                errors.add("kind", format!("\"{k}\" is not a valid choice."));
                None
            }),
            Some(Value::Null) => not_null(&mut errors, "kind"),
            Some(_) => {
                errors.add("kind", "Not a valid string.");
                None
            }
            None if creating => required(&mut errors, "kind"),
            None => base.map(|b| b.kind),
        };
        let url = match body.get("url") {
            Some(Value::Null) => Some(None),
            Some(value) => text(&mut errors, "url", value, MAX_ROUTE_URL_BYTES).map(|url| {
                if let Err(problem) = check_url(&url) {
                    errors.add("url", problem);
                }
                Some(url)
            }),
            None => Some(base.and_then(|b| b.url.clone())),
        };
        let to = match body.get("to") {
            Some(value) => strings(&mut errors, "to", value).inspect(|to| {
                for address in to {
                    if !plausible_address(address) {
                        errors.add("to", format!("Enter a valid email address: \"{address}\"."));
                    }
                }
            }),
            None => Some(base.map(|b| b.to.clone()).unwrap_or_default()),
        };
        let secret = match body.get("secret") {
            Some(Value::Null) if creating => Some(None),
            Some(Value::Null) => not_null(&mut errors, "secret").map(Some),
            Some(value) => text(&mut errors, "secret", value, 200).map(|secret| {
                if let Err(problem) = secret_bytes(&secret) {
                    errors.add("secret", problem);
                }
                Some(secret)
            }),
            None => Some(base.and_then(|b| b.secret.clone())),
        };
        let enabled = match body.get("enabled") {
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.add("enabled", "Must be a valid boolean.");
                None
            }
            None => Some(base.is_none_or(|b| b.enabled)),
        };
        let min_severity = match body.get("min_severity") {
            Some(Value::String(s)) => s.parse::<Severity>().ok().or_else(|| {
                errors.add("min_severity", format!("\"{s}\" is not a valid choice."));
                None
            }),
            Some(_) => {
                errors.add("min_severity", "Not a valid string.");
                None
            }
            None => Some(base.map_or(Severity::Low, |b| b.min_severity)),
        };
        let sources = match body.get("sources") {
            Some(value) => strings(&mut errors, "sources", value),
            None => Some(base.map(|b| b.sources.clone()).unwrap_or_default()),
        };
        let event_types = match body.get("event_types") {
            Some(value) => strings(&mut errors, "event_types", value),
            None => Some(base.map(|b| b.event_types.clone()).unwrap_or_default()),
        };
        let on = match body.get("on") {
            Some(value) => strings(&mut errors, "on", value).map(|names| {
                let mut on = Vec::new();
                for name in &names {
                    match Trigger::parse(name).filter(|t| ROUTE_TRIGGERS.contains(t)) {
                        Some(t) if !on.contains(&t) => on.push(t),
                        Some(_) => {}
                        None => errors.add("on", format!("\"{name}\" is not a valid choice.")),
                    }
                }
                if names.is_empty() {
                    errors.add("on", "This list may not be empty.");
                }
                on.sort();
                on
            }),
            None => Some(base.map_or_else(|| DEFAULT_TRIGGERS.to_vec(), |b| b.on.clone())),
        };
        let repeat_every_secs = match body.get("repeat_every_secs") {
            Some(Value::Null) => Some(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) if (MIN_REPEAT_SECS..=31_536_000).contains(&secs) => Some(Some(secs)),
                _ => {
                    errors.add(
                        "repeat_every_secs",
                        format!(
                            "Ensure this value is an integer from {MIN_REPEAT_SECS} to 31536000."
                        ),
                    );
                    None
                }
            },
            Some(_) => {
                errors.add("repeat_every_secs", "A valid integer is required.");
                None
            }
            None => Some(base.and_then(|b| b.repeat_every_secs)),
        };
        let (
            Some(name),
            Some(kind),
            Some(url),
            Some(to),
            Some(secret),
            Some(enabled),
            Some(min_severity),
            Some(sources),
            Some(event_types),
            Some(on),
            Some(repeat_every_secs),
        ) = (
            name,
            kind,
            url,
            to,
            secret,
            enabled,
            min_severity,
            sources,
            event_types,
            on,
            repeat_every_secs,
        )
        else {
            return Err(errors);
        };
        // What the kind needs, whichever fields were sent.
        match kind {
            RouteKind::Webhook | RouteKind::Slack => {
                if url.is_none() && (creating || present("url") || present("kind")) {
                    errors.add(
                        "url",
                        "This field is required for a webhook or Slack route.",
                    );
                }
                if !to.is_empty() && present("to") {
                    errors.add("to", "Only an email route has recipients.");
                }
            }
            RouteKind::Email => {
                if to.is_empty() && (creating || present("to") || present("kind")) {
                    errors.add("to", "This field is required for an email route.");
                }
                if url.is_some() && present("url") {
                    errors.add("url", "An email route has no URL.");
                }
            }
        }
        if kind != RouteKind::Webhook && secret.is_some() && present("secret") {
            errors.add("secret", "Only a webhook route is signed.");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (url, to) = match kind {
            RouteKind::Email => (None, to),
            _ => (url, Vec::new()),
        };
        let secret = match kind {
            RouteKind::Webhook => secret,
            _ => None,
        };
        Ok(RouteSpec {
            name,
            kind,
            url,
            to,
            secret,
            enabled,
            min_severity,
            sources,
            event_types,
            on,
            repeat_every_secs,
        })
    }
}

fn required<T>(errors: &mut FieldErrors, field: &str) -> Option<T> {
    errors.add(field, "This field is required.");
    None
}

fn not_null<T>(errors: &mut FieldErrors, field: &str) -> Option<T> {
    errors.add(field, "This field may not be null.");
    None
}

/// A non-blank string of at most `max` characters.
fn text(errors: &mut FieldErrors, field: &str, value: &Value, max: usize) -> Option<String> {
    match value {
        Value::String(s) if s.trim().is_empty() => {
            errors.add(field, "This field may not be blank.");
            None
        }
        Value::String(s) if s.chars().count() > max => {
            errors.add(
                field,
                format!("Ensure this field has no more than {max} characters."),
            );
            None
        }
        Value::String(s) if s.chars().any(char::is_control) => {
            errors.add(field, "This field may not contain control characters.");
            None
        }
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Null => not_null(errors, field),
        _ => {
            errors.add(field, "Not a valid string.");
            None
        }
    }
}

/// A list of at most [`MAX_ROUTE_LIST`] non-blank strings.
fn strings(errors: &mut FieldErrors, field: &str, value: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = value else {
        errors.add(
            field,
            format!(
                "Expected a list of items but got type \"{}\".",
                json_type_name(value)
            ),
        );
        return None;
    };
    if items.len() > MAX_ROUTE_LIST {
        errors.add(
            field,
            format!("Ensure this field has no more than {MAX_ROUTE_LIST} elements."),
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(text(errors, field, item, 254)?);
    }
    Some(out)
}

/// An `http` or `https` URL with a host and no credentials.
pub fn check_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|_| "Enter a valid URL.".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("Enter an http or https URL.".to_owned());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("Enter a valid URL.".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("Put no credentials in the URL.".to_owned());
    }
    Ok(parsed)
}

/// A plausible e-mail address: one `@`, something before it, a dotted domain after, no
/// spaces (lettre checks a recipient fully when it sends).
pub fn plausible_address(address: &str) -> bool {
    !address.chars().any(char::is_whitespace)
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

/// The key bytes of a Standard Webhooks secret: `whsec_` + base64 of 24 to 64 bytes.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("A secret starts with \"{SECRET_PREFIX}\" (Standard Webhooks)."))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| format!("After \"{SECRET_PREFIX}\", a secret is base64."))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err("A secret holds 24 to 64 bytes.".to_owned());
    }
    Ok(bytes)
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> Result<String, getrandom::Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Whether an address is one a notification must not reach unless private targets are
/// allowed: loopback, private, link-local, carrier-grade NAT, unspecified, multicast,
/// documentation or unique-local (IPv4-mapped IPv6 addresses as their IPv4 address).
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<RouteSpec, FieldErrors> {
        RouteSpec::parse(body.as_object().expect("an object"), None)
    }

    #[test]
    fn a_routes_debug_shows_neither_its_secret_nor_its_urls_token() {
        let secret = new_secret().unwrap();
        let spec = parse(json!({"name": "chat", "kind": "webhook", "secret": secret,
            "url": "https://hooks.example.com/services/T0/B0/sEcReTtOkEn?key=qUeRy"}))
        .unwrap();
        let shown = format!("{spec:?}");
        assert!(shown.contains("https://hooks.example.com/…"), "{shown}");
        for hidden in [secret.as_str(), &secret[6..], "sEcReTtOkEn", "qUeRy"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
    }

    #[test]
    fn a_webhook_needs_a_url_and_an_email_route_its_recipients() {
        let errors = parse(json!({"name": "x", "kind": "webhook"})).unwrap_err();
        assert!(errors.get("url").is_some());
        let errors = parse(json!({"name": "x", "kind": "email"})).unwrap_err();
        assert!(errors.get("to").is_some());
        let route =
            parse(json!({"name": "mail", "kind": "email", "to": ["soc@example.com"]})).unwrap();
        assert_eq!(route.on, DEFAULT_TRIGGERS.to_vec());
        assert_eq!(route.min_severity, Severity::Low);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = parse(json!({
            "name": "", "kind": "pager", "min_severity": "SEVERE", "on": ["created", "deleted"],
            "repeat_every_secs": 5, "enabled": "yes"
        }))
        .unwrap_err();
        for field in [
            "name",
            "kind",
            "min_severity",
            "on",
            "repeat_every_secs",
            "enabled",
        ] {
            assert!(errors.get(field).is_some(), "{field}: {errors}");
        }
    }

    #[test]
    fn a_secret_is_standard_webhooks_shaped() {
        let secret = new_secret().unwrap();
        assert_eq!(secret_bytes(&secret).unwrap().len(), 32);
        assert!(secret_bytes("whsec_c2hvcnQ=").is_err());
        assert!(secret_bytes("abc").is_err());
        let errors = parse(json!({"name": "x", "kind": "webhook", "url": "https://example.com/h", "secret": "nope"}))
            .unwrap_err();
        assert!(errors.get("secret").is_some());
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_name() {
        let base = parse(
            json!({"name": "x", "kind": "webhook", "url": "https://example.com/h",
            "secret": new_secret().unwrap(), "sources": ["fw-1"]}),
        )
        .unwrap();
        let patched =
            RouteSpec::parse(json!({"enabled": false}).as_object().unwrap(), Some(&base)).unwrap();
        assert!(!patched.enabled);
        assert_eq!(patched.sources, base.sources);
        assert_eq!(patched.secret, base.secret);
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_private_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn matching_follows_severity_sources_types_and_triggers() {
        let route = parse(
            json!({"name": "x", "kind": "slack", "url": "https://hooks.example.com/a",
            "min_severity": "HIGH", "sources": ["fw-1"]}),
        )
        .unwrap();
        let message = Matched {
            severity: Severity::High,
            source_name: "fw-1",
            event_type: "port_scan",
            trigger: Trigger::Created,
        };
        assert!(route.matches(message));
        assert!(!route.matches(Matched {
            severity: Severity::Medium,
            ..message
        }));
        assert!(!route.matches(Matched {
            source_name: "fw-2",
            ..message
        }));
        assert!(!route.matches(Matched {
            trigger: Trigger::Resolved,
            ..message
        }));
    }
}
