//! Realistic made-up events for load and demos: sensor names, event types, descriptions and
//! attributes that look like a SOC's feed, in a severity mix given as weights.
//!
//! The severities of `count` events follow the mix exactly (largest remainders), in a random
//! order; everything is drawn from a seeded generator, so the same seed and clock give the
//! same events on every machine.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::config::parse_severity;
use common::domain::Severity;
use serde_json::{Map, Value, json};

/// A small seedable random generator (SplitMix64): the same seed gives the same numbers on
/// every platform and with every dependency version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low).saturating_add(1))
    }

    /// One of `items`, which must not be empty.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// How often each severity occurs, as weights: `LOW=25,MEDIUM=25,HIGH=25,CRITICAL=25`.
/// A severity left out has weight 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u64; 4],
}

impl Default for Mix {
    /// A quarter of each.
    fn default() -> Self {
        Mix { weights: [25; 4] }
    }
}

impl Mix {
    /// The weight of `severity`.
    pub fn weight(&self, severity: Severity) -> u64 {
        self.weights[index(severity)]
    }

    /// How many of `total` events get each severity (lowest first): exactly the mix's shares,
    /// rounded by largest remainder so that they add up to `total`.
    pub fn counts(&self, total: u64) -> [u64; 4] {
        let sum: u128 = self.weights.iter().map(|w| u128::from(*w)).sum();
        let mut counts = [0u64; 4];
        let mut remainders = [(0u128, 0usize); 4];
        for (i, weight) in self.weights.iter().enumerate() {
            let share = u128::from(total) * u128::from(*weight);
            counts[i] = (share / sum) as u64;
            remainders[i] = (share % sum, i);
        }
        let assigned: u64 = counts.iter().sum();
        // Largest remainder first; on a tie, the more severe.
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        for (_, i) in remainders.iter().take((total - assigned) as usize) {
            counts[*i] += 1;
        }
        counts
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = [None::<u64>; 4];
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, weight)) = pair.split_once('=') else {
                return Err(format!(
                    "\"{pair}\" is not SEVERITY=WEIGHT (e.g. LOW=70,HIGH=30)"
                ));
            };
            let severity = parse_severity(name)
                .map_err(|_| format!("\"{}\" is not LOW, MEDIUM, HIGH or CRITICAL", name.trim()))?;
            let weight: u64 = weight.trim().parse().map_err(|_| {
                format!(
                    "the weight of {severity} must be a whole number, not \"{}\"",
                    weight.trim()
                )
            })?;
            if weight > 1_000_000 {
                return Err(format!("the weight of {severity} is over 1000000"));
            }
            let slot = &mut weights[index(severity)];
            if slot.is_some() {
                return Err(format!("{severity} is given twice"));
            }
            *slot = Some(weight);
        }
        let weights = weights.map(|w| w.unwrap_or(0));
        if weights.iter().sum::<u64>() == 0 {
            return Err("give at least one severity a weight above 0, e.g. HIGH=1".to_owned());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = Severity::ALL
            .iter()
            .filter(|s| self.weight(**s) > 0)
            .map(|s| format!("{s}={}", self.weight(*s)))
            .collect();
        f.write_str(&pairs.join(","))
    }
}

fn index(severity: Severity) -> usize {
    match severity {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

const FIREWALLS: &[&str] = &["fw-edge-01", "fw-edge-02", "fw-dc-01"];
const IDS: &[&str] = &["ids-core-01", "ids-dmz-01"];
const WAFS: &[&str] = &["waf-prod-01", "waf-prod-02"];
const EDR: &[&str] = &[
    "edr-ws-0117",
    "edr-ws-0342",
    "edr-srv-db01",
    "edr-srv-web03",
];
const VPNS: &[&str] = &["vpn-gw-01", "vpn-gw-02"];
const MAIL: &[&str] = &["mail-gw-01"];
const DNS: &[&str] = &["dns-resolver-01", "dns-resolver-02"];
const HONEYPOTS: &[&str] = &["honeypot-dmz-01", "honeypot-int-02"];

use Severity::{Critical, High, Low, Medium};

/// One kind of event: its type, who reports it, how serious it can be, and a description
/// with `{placeholders}` (see [`render`]).
struct Template {
    event_type: &'static str,
    sensors: &'static [&'static str],
    severities: &'static [Severity],
    description: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        event_type: "port_scan",
        sensors: FIREWALLS,
        severities: &[Low, Medium, High],
        description: "{n:20-4000} ports probed on {dst} from {src} in 60 s",
    },
    Template {
        event_type: "blocked_connection",
        sensors: FIREWALLS,
        severities: &[Low],
        description: "Inbound connection from {src} to {dst}:{port} blocked by policy",
    },
    Template {
        event_type: "egress_policy_violation",
        sensors: FIREWALLS,
        severities: &[Low, Medium],
        description: "Outbound connection from {host} to {src}:{port} violates the egress policy",
    },
    Template {
        event_type: "data_exfiltration",
        sensors: FIREWALLS,
        severities: &[Critical],
        description: "{n:200-9000} MB uploaded from {host} to {src} over TLS in 15 min",
    },
    Template {
        event_type: "ssh_brute_force",
        sensors: IDS,
        severities: &[Medium, High],
        description: "{n:30-900} failed SSH logins for {user} on {dst} from {src}",
    },
    Template {
        event_type: "signature_match",
        sensors: IDS,
        severities: &[Low, Medium, High],
        description: "Signature {sid} matched on traffic from {src} to {dst}:{port}",
    },
    Template {
        event_type: "lateral_movement",
        sensors: IDS,
        severities: &[High, Critical],
        description: "Admin share on {dst} opened from {host} with {user}'s credentials",
    },
    Template {
        event_type: "c2_beacon",
        sensors: IDS,
        severities: &[High, Critical],
        description: "{host} beacons to {src}:{port} every {n:30-600} s",
    },
    Template {
        event_type: "sql_injection",
        sensors: WAFS,
        severities: &[Medium, High],
        description: "SQL injection attempt in a parameter of {path} from {src}",
    },
    Template {
        event_type: "xss_attempt",
        sensors: WAFS,
        severities: &[Low, Medium],
        description: "Reflected XSS payload in the query string of {path} from {src}",
    },
    Template {
        event_type: "path_traversal",
        sensors: WAFS,
        severities: &[Medium, High],
        description: "Path traversal (../../etc/passwd) against {path} from {src}",
    },
    Template {
        event_type: "malware_detected",
        sensors: EDR,
        severities: &[High, Critical],
        description: "{malware} detected in {file} on {host}",
    },
    Template {
        event_type: "ransomware_behavior",
        sensors: EDR,
        severities: &[Critical],
        description: "{n:200-20000} files renamed to *.locked by {process} on {host} within 10 s",
    },
    Template {
        event_type: "privilege_escalation",
        sensors: EDR,
        severities: &[High, Critical],
        description: "{user} obtained SYSTEM privileges through {process} on {host}",
    },
    Template {
        event_type: "suspicious_process",
        sensors: EDR,
        severities: &[Low, Medium, High],
        description: "Encoded PowerShell command started by {process} on {host}",
    },
    Template {
        event_type: "vpn_login_failure",
        sensors: VPNS,
        severities: &[Low],
        description: "Failed VPN login for {user} from {src}",
    },
    Template {
        event_type: "impossible_travel",
        sensors: VPNS,
        severities: &[Medium, High],
        description: "{user} signed in from {country} {n:5-90} min after signing in from {country2}",
    },
    Template {
        event_type: "phishing_email",
        sensors: MAIL,
        severities: &[Low, Medium, High],
        description: "Credential-phishing email from {sender} to {user}@example.com quarantined",
    },
    Template {
        event_type: "malicious_attachment",
        sensors: MAIL,
        severities: &[High, Critical],
        description: "Attachment {file} in mail to {user}@example.com matched {malware}",
    },
    Template {
        event_type: "dns_tunneling",
        sensors: DNS,
        severities: &[High, Critical],
        description: "{n:500-20000} TXT queries for subdomains of {domain} from {host} in 5 min",
    },
    Template {
        event_type: "dga_domain",
        sensors: DNS,
        severities: &[Medium, High],
        description: "{host} resolved the algorithmically generated domain {domain}",
    },
    Template {
        event_type: "honeypot_interaction",
        sensors: HONEYPOTS,
        severities: &[Medium, High, Critical],
        description: "{src} logged in to decoy {dst} and ran {n:1-40} commands",
    },
];

const PORTS: &[u64] = &[
    22, 23, 80, 443, 445, 1433, 3306, 3389, 5432, 5900, 8080, 8443,
];
const HOSTS: &[&str] = &[
    "ws-0117",
    "ws-0342",
    "lt-finance-07",
    "srv-db01",
    "srv-web03",
    "srv-files02",
    "srv-build04",
];
const USERS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "mallory",
    "svc-backup",
    "admin",
];
const PATHS: &[&str] = &[
    "/login",
    "/api/v1/orders",
    "/search",
    "/admin/export",
    "/cart/checkout",
];
const FILES: &[&str] = &[
    "invoice_0423.xlsm",
    "C:\\Users\\Public\\svchost.exe",
    "shipping_label.iso",
    "payroll_2026.zip",
    "/tmp/.x/kworker",
];
const PROCESSES: &[&str] = &[
    "powershell.exe",
    "rundll32.exe",
    "mshta.exe",
    "wmic.exe",
    "regsvr32.exe",
];
const MALWARE: &[&str] = &[
    "Emotet",
    "QakBot",
    "AgentTesla",
    "a Cobalt Strike beacon",
    "a LockBit loader",
];
const SENDERS: &[&str] = &[
    "billing@paypa1-secure.example",
    "it-helpdesk@micros0ft-support.example",
    "ceo.office@corp-mail.example",
];
const COUNTRIES: &[&str] = &[
    "Germany",
    "Brazil",
    "Singapore",
    "Nigeria",
    "Canada",
    "Japan",
    "Romania",
];
/// Documentation address blocks (RFC 5737), standing in for the internet.
const EXTERNAL_NETS: &[&str] = &["203.0.113", "198.51.100", "192.0.2"];

/// Fills a template's `{placeholders}` with random values (each placeholder once per event,
/// so one that appears twice reads the same), returning the text and the values worth
/// keeping as structured attributes. `{n:LOW-HIGH}` is a number in that range.
fn render(template: &str, rng: &mut Rng) -> (String, Map<String, Value>) {
    let mut text = String::with_capacity(template.len() + 32);
    let mut values: HashMap<&str, String> = HashMap::new();
    let mut attributes = Map::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        text.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        rest = &rest[start + len + 1..];
        if let Some(value) = values.get(name) {
            text.push_str(value);
            continue;
        }
        let value = placeholder(name, rng, &values, &mut attributes);
        text.push_str(&value);
        values.insert(name, value);
    }
    text.push_str(rest);
    (text, attributes)
}

fn placeholder(
    name: &str,
    rng: &mut Rng,
    earlier: &HashMap<&str, String>,
    attributes: &mut Map<String, Value>,
) -> String {
    let mut keep = |key: &str, value: Value| {
        attributes.insert(key.to_owned(), value);
    };
    match name {
        "src" => {
            let ip = format!("{}.{}", rng.pick(EXTERNAL_NETS), rng.between(1, 254));
            keep("src_ip", json!(ip));
            ip
        }
        "dst" => {
            let ip = format!(
                "10.{}.{}.{}",
                rng.between(0, 40),
                rng.between(0, 255),
                rng.between(1, 254)
            );
            keep("dst_ip", json!(ip));
            ip
        }
        "port" => {
            let port = *rng.pick(PORTS);
            keep("dst_port", json!(port));
            port.to_string()
        }
        "sid" => {
            let sid = rng.between(2_000_000, 2_999_999);
            keep("signature_id", json!(sid));
            sid.to_string()
        }
        "country" | "country2" => {
            let other = earlier
                .get(if name == "country" {
                    "country2"
                } else {
                    "country"
                })
                .map(String::as_str);
            let mut country = *rng.pick(COUNTRIES);
            while Some(country) == other {
                country = *rng.pick(COUNTRIES);
            }
            let key = if name == "country" {
                "country"
            } else {
                "previous_country"
            };
            keep(key, json!(country));
            country.to_owned()
        }
        "domain" => {
            const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let label: String = (0..rng.between(10, 16))
                .map(|_| char::from(*rng.pick(LETTERS)))
                .collect();
            let domain = format!("{label}.example.net");
            keep("domain", json!(domain));
            domain
        }
        _ => {
            let listed: Option<(&str, &[&str])> = match name {
                "host" => Some(("host", HOSTS)),
                "user" => Some(("user", USERS)),
                "path" => Some(("url_path", PATHS)),
                "file" => Some(("file", FILES)),
                "process" => Some(("process", PROCESSES)),
                "malware" => Some(("malware_family", MALWARE)),
                "sender" => Some(("sender", SENDERS)),
                _ => None,
            };
            if let Some((key, items)) = listed {
                let value = *rng.pick(items);
                keep(key, json!(value.trim_start_matches("a ")));
                return value.to_owned();
            }
            if let Some((low, high)) = name
                .strip_prefix("n:")
                .and_then(|range| range.split_once('-'))
                .and_then(|(l, h)| Some((l.parse::<u64>().ok()?, h.parse::<u64>().ok()?)))
            {
                return rng.between(low, high).to_string();
            }
            format!("{{{name}}}")
        }
    }
}

/// Makes `count` events in a [`Mix`]: an iterator of JSON objects as a sensor would publish
/// them (`sourceName`, `eventType`, `severity`, `description`, `occurred_at` up to two minutes
/// before `now`, `attributes`).
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    remaining: [u64; 4],
    now: DateTime<Utc>,
    by_severity: [Vec<usize>; 4],
}

impl Generator {
    /// `count` events in `mix`, drawn from `seed`, dated relative to `now`.
    pub fn new(mix: &Mix, count: u64, seed: u64, now: DateTime<Utc>) -> Self {
        let by_severity = Severity::ALL.map(|severity| {
            TEMPLATES
                .iter()
                .enumerate()
                .filter(|(_, t)| t.severities.contains(&severity))
                .map(|(i, _)| i)
                .collect()
        });
        Generator {
            rng: Rng::new(seed),
            remaining: mix.counts(count),
            now,
            by_severity,
        }
    }

    fn event(&mut self, severity: Severity) -> Value {
        let choices = &self.by_severity[index(severity)];
        let template = &TEMPLATES[*self.rng.pick(choices)];
        let sensor = *self.rng.pick(template.sensors);
        let (description, attributes) = render(template.description, &mut self.rng);
        let ago = TimeDelta::milliseconds(self.rng.below(120_000) as i64);
        let occurred_at = (self.now - ago).to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "sourceName": sensor,
            "eventType": template.event_type,
            "severity": severity.as_str(),
            "description": description,
            "occurred_at": occurred_at,
            "attributes": attributes,
        })
    }
}

impl Iterator for Generator {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        let left: u64 = self.remaining.iter().sum();
        if left == 0 {
            return None;
        }
        // Draw without replacement from what is left of each severity: exact totals, random order.
        let mut draw = self.rng.below(left);
        let mut chosen = 0;
        for (i, remaining) in self.remaining.iter().enumerate() {
            if draw < *remaining {
                chosen = i;
                break;
            }
            draw -= remaining;
        }
        self.remaining[chosen] -= 1;
        Some(self.event(Severity::ALL[chosen]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.remaining.iter().sum::<u64>()).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::domain::EventIn;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn mixes_parse_in_any_case_and_reject_nonsense() {
        let mix: Mix = "low=70, HIGH=30".parse().unwrap();
        assert_eq!(mix.weight(Severity::Low), 70);
        assert_eq!(mix.weight(Severity::Medium), 0);
        assert_eq!(mix.to_string(), "LOW=70,HIGH=30");
        assert_eq!(
            "LOW=25,MEDIUM=25,HIGH=25,CRITICAL=25".parse::<Mix>(),
            Ok(Mix::default())
        );
        for bad in ["", "HIGH", "SEVERE=1", "HIGH=x", "HIGH=1,HIGH=2", "LOW=0"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn counts_are_exact_shares_that_add_up() {
        assert_eq!(Mix::default().counts(500), [125; 4]);
        assert_eq!(Mix::default().counts(10), [2, 2, 3, 3]);
        let mix: Mix = "LOW=1,MEDIUM=1,HIGH=1".parse().unwrap();
        assert_eq!(mix.counts(10), [3, 3, 4, 0]);
        assert_eq!(mix.counts(0), [0; 4]);
    }

    #[test]
    fn every_template_fills_all_its_placeholders() {
        let mut rng = Rng::new(7);
        for template in TEMPLATES {
            assert!(!template.sensors.is_empty() && !template.severities.is_empty());
            for _ in 0..20 {
                let (text, _) = render(template.description, &mut rng);
                assert!(!text.contains('{') && !text.contains('}'), "{text}");
            }
        }
        for severity in Severity::ALL {
            assert!(TEMPLATES.iter().any(|t| t.severities.contains(&severity)));
        }
    }

    #[test]
    fn two_countries_differ() {
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            let (_, attributes) = render("{country} {country2}", &mut rng);
            assert_ne!(attributes["country"], attributes["previous_country"]);
        }
    }

    #[test]
    fn numbers_stay_in_their_range() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let n = rng.between(5, 9);
            assert!((5..=9).contains(&n));
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn generated_events_follow_the_mix_exactly_and_are_valid() {
        let mix: Mix = "LOW=40,MEDIUM=30,HIGH=20,CRITICAL=10".parse().unwrap();
        let events: Vec<Value> = Generator::new(&mix, 1000, 42, now()).collect();
        assert_eq!(events.len(), 1000);
        let mut counts = HashMap::new();
        for event in &events {
            let parsed = EventIn::from_value(event.clone())
                .unwrap_or_else(|e| panic!("{event} is not a valid event: {e}"));
            *counts.entry(parsed.severity).or_insert(0) += 1;
            assert!(parsed.occurred_at.unwrap() <= now());
            assert!(parsed.attributes.is_some_and(|a| !a.is_empty()));
            assert!(!parsed.description.is_empty());
        }
        assert_eq!(counts[&Severity::Low], 400);
        assert_eq!(counts[&Severity::Medium], 300);
        assert_eq!(counts[&Severity::High], 200);
        assert_eq!(counts[&Severity::Critical], 100);
        // Shuffled, not in blocks.
        let first_hundred: std::collections::HashSet<&str> = events[..100]
            .iter()
            .map(|e| e["severity"].as_str().unwrap())
            .collect();
        assert_eq!(first_hundred.len(), 4);
        // Varied.
        let types: std::collections::HashSet<&str> = events
            .iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect();
        assert!(types.len() >= 15, "{types:?}");
    }

    #[test]
    fn a_seed_gives_the_same_events_and_another_seed_others() {
        let mix = Mix::default();
        let a: Vec<Value> = Generator::new(&mix, 50, 9, now()).collect();
        let b: Vec<Value> = Generator::new(&mix, 50, 9, now()).collect();
        let c: Vec<Value> = Generator::new(&mix, 50, 10, now()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_single_severity_mix_gives_only_that_severity() {
        let mix: Mix = "CRITICAL=1".parse().unwrap();
        let events: Vec<Value> = Generator::new(&mix, 30, 1, now()).collect();
        assert!(events.iter().all(|e| e["severity"] == "CRITICAL"));
        assert_eq!(
            Generator::new(&mix, 30, 1, now()).size_hint(),
            (30, Some(30))
        );
    }
}
