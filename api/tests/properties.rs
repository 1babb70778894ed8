//! Property: no input stops the api. Every route of [`api::routes::ROUTES`], called with an
//! admin's token, a bad token or none, with arbitrary query strings (any keys and values:
//! control characters, NUL, invalid percent-encoding, bytes that are not UTF-8, huge
//! values), arbitrary path ids and arbitrary bodies (any JSON, with any strings in the
//! fields the route reads; JSON text with lone surrogates; raw bytes under any content
//! type), answers without a 5xx, and every 4xx has a body in DRF's shape: `{"detail": …}`,
//! `{"<field>": ["message", …]}`, or a list of those for an array POST.
//!
//! One api (over a real nats-server and database) serves the whole run. Each route gets
//! [`CASES`] random cases (`PROPTEST_CASES` overrides), then a fixed sweep of each kind of
//! [`JUNK`] inside each field of the route's valid body and each query parameter, so that
//! the commonest attack (a CR/LF in one otherwise valid field) is never left to chance. A
//! failure is shrunk to a minimal input and reported with the others at the end, with the
//! seed that reproduces the run (`PROPTEST_RNG_SEED=<seed>`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use common::domain::Role;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::{Map, Value, json};
use support::{Resp, TestApi};

/// Cases per route: enough to meet each kind of input several times, few enough that the
/// run (twice in CI, on SQLite and on Postgres) stays well under a minute.
const CASES: u32 = 192;

/// How long a response body may take (a live stream's is not read).
const BODY_PATIENCE: Duration = Duration::from_secs(2);

/// Every body field some route reads.
const FIELDS: &[&str] = &[
    "status",
    "note",
    "username",
    "password",
    "email",
    "role",
    "is_active",
    "refresh",
    "sourceName",
    "eventType",
    "severity",
    "description",
    "uid",
    "occurred_at",
    "attributes",
];

/// Every query parameter some route reads.
const PARAMS: &[&str] = &[
    "page",
    "page_size",
    "status",
    "severity",
    "event__severity",
    "eventType",
    "sourceName",
    "created_at__gte",
    "created_at__lte",
    "ordering",
    "role",
    "is_active",
];

/// Values that pass some check, so that inputs get past the first one.
const VALID: &[&str] = &[
    "OPEN",
    "ACKNOWLEDGED",
    "RESOLVED",
    "LOW",
    "HIGH",
    "CRITICAL",
    "ADMIN",
    "ANALYST",
    "true",
    "1",
    "2",
    "100",
    "-severity",
    "created_at",
    "2026-11-28T12:00:00Z",
    "2026-11-28",
    "fw-edge-01",
    "port_scan",
    "someone@example.com",
    "a-long-enough-password",
];

/// What gets into a valid value to make it hostile.
const JUNK: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    "\0",
    "\t",
    " ",
    "\u{1b}[2J",
    "\u{7f}",
    "\u{85}",
    "\u{9f}",
    "\u{2028}",
    "\r\nNats-Msg-Id: forged",
    "%0d%0a",
];

/// The body fields a route reads (others get arbitrary fields only).
fn fields_of(path: &str) -> &'static [&'static str] {
    match path {
        "/api/auth/login" => &["username", "password"],
        "/api/auth/refresh" | "/api/auth/logout" => &["refresh"],
        "/api/users" | "/api/users/{id}" => &["username", "email", "password", "role", "is_active"],
        "/api/events" => &[
            "sourceName",
            "eventType",
            "severity",
            "description",
            "uid",
            "occurred_at",
            "attributes",
        ],
        "/api/alerts/{id}" => &["status", "note"],
        _ => FIELDS,
    }
}

/// Who calls.
#[derive(Debug, Clone)]
enum Auth {
    /// The admin's access token.
    Admin,
    /// No `Authorization` header.
    Anonymous,
    /// This header value, as bytes (may be no token, or not even ASCII).
    Header(Vec<u8>),
}

/// What the request carries.
#[derive(Debug, Clone)]
enum Payload {
    /// No body.
    Empty,
    /// JSON, as `application/json`.
    Json(Value),
    /// Text sent as `application/json` (lone surrogates, truncations, comments).
    JsonText(String),
    /// Any bytes under any content type (or none).
    Raw(Option<String>, Vec<u8>),
}

/// One request to one route.
#[derive(Debug, Clone)]
struct Case {
    auth: Auth,
    /// What stands for `{id}`, already in the path's encoding.
    id: String,
    slash: bool,
    /// The query string, already encoded (possibly badly), without `?`.
    query: Option<String>,
    payload: Payload,
}

/// Characters of every kind: control characters (C0 with NUL, CR, LF; DEL; C1), the
/// replacement character, noncharacters, any other Unicode scalar.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::char::range('\0', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{9f}'),
        1 => Just('\u{fffd}'),
        1 => Just('\u{ffff}'),
        1 => Just('\u{2028}'),
        2 => prop::char::range(' ', '~'),
    ]
}

/// Text of every kind: short and hostile, a valid value, or huge (past each limit).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(hostile_char(), 0..24).prop_map(String::from_iter),
        3 => prop::sample::select(VALID).prop_map(str::to_owned),
        4 => (prop::sample::select(VALID), prop::sample::select(JUNK), any::<prop::sample::Index>())
            // Junk before, inside or after a valid value: a header injection, a log line
            // break, a terminal escape.
            .prop_map(|(value, junk, at)| inject(value, junk, at)),
        1 => (hostile_char(), 1..70_000usize).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => (0..4usize).prop_map(|k| "\u{1}\u{7f}\r\n\0".repeat(65_536 / 5 + k)),
    ]
}

/// Any JSON value, strings from [`text`], keys from [`FIELDS`] or [`text`].
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => vec(hostile_char(), 0..12).prop_map(String::from_iter),
    ]
}

/// A valid body for the route, so that most cases get past the first check and one or two
/// hostile fields reach the checks (and the code) behind it.
fn template(method: &str, path: &str, refresh: &str) -> Map<String, Value> {
    let body = match (method, path) {
        (_, "/api/auth/login") => json!({"username": "admin", "password": "admin-secret-pw"}),
        (_, "/api/auth/refresh" | "/api/auth/logout") => json!({ "refresh": refresh }),
        ("POST", "/api/users") => json!({"username": "someone", "email": "someone@example.com",
                                         "password": "a-long-enough-password", "role": "ANALYST"}),
        (_, "/api/users/{id}") => json!({"email": "victim@example.com", "role": "ANALYST",
                                         "is_active": true, "password": "a-long-enough-password"}),
        (_, "/api/events") => json!({"sourceName": "fw-edge-01", "eventType": "port_scan",
                                     "severity": "HIGH", "description": "probe", "uid": "key-1",
                                     "occurred_at": "2026-11-28T12:00:00Z",
                                     "attributes": {"ip": "203.0.113.9"}}),
        (_, "/api/alerts/{id}") => json!({"status": "ACKNOWLEDGED", "note": "looking"}),
        _ => json!({}),
    };
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// How a case changes one field of a template.
#[derive(Debug, Clone)]
enum Change {
    /// Junk put into the template's value at this point (or the junk alone).
    Inject(&'static str, prop::sample::Index),
    /// Another value.
    Set(Value),
}

/// `junk` put into `value` at the char boundary `at` picks.
fn inject(value: &str, junk: &str, at: prop::sample::Index) -> String {
    let boundaries: Vec<usize> = (0..=value.len())
        .filter(|&i| value.is_char_boundary(i))
        .collect();
    let at = boundaries[at.index(boundaries.len())];
    format!("{}{junk}{}", &value[..at], &value[at..])
}

/// An object: mostly the route's valid template with one or two of its `fields` changed
/// (junk put into their value, or set to anything, mostly strings) or removed, sometimes
/// only arbitrary fields; extra keys too.
fn object(
    fields: &'static [&'static str],
    template: Map<String, Value>,
) -> impl Strategy<Value = Value> {
    let change = prop_oneof![
        3 => (prop::sample::select(JUNK), any::<prop::sample::Index>())
            .prop_map(|(junk, at)| Change::Inject(junk, at)),
        3 => text().prop_map(|t| Change::Set(Value::String(t))),
        1 => json_value().prop_map(Change::Set),
    ];
    (
        prop::bool::weighted(0.9),
        prop_oneof![
            1 => Just(Vec::new()),
            6 => vec((prop::sample::select(fields), change), 1..=2),
        ],
        vec(prop::sample::select(fields), 0..2),
        btree_map(key(), json_value(), 0..3),
    )
        .prop_map(move |(from_template, changed, removed, extra)| {
            let mut map = if from_template {
                template.clone()
            } else {
                Map::new()
            };
            for name in removed {
                map.remove(name);
            }
            for (name, value) in extra {
                map.insert(name, value);
            }
            for (name, change) in changed {
                let value = match change {
                    Change::Set(value) => value,
                    Change::Inject(junk, at) => {
                        let current = map.get(name).and_then(Value::as_str).unwrap_or("");
                        Value::String(inject(current, junk, at))
                    }
                };
                map.insert(name.to_owned(), value);
            }
            Value::Object(map)
        })
}

/// JSON text that serde would not write: lone or swapped surrogate escapes in a field's
/// value or name, a valid pair, escaped NUL and controls, a truncated document.
fn json_text(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    let escape = prop::sample::select(
        &[
            r"\ud800",
            r"\udfff",
            r"\udc00\ud800",
            r"\ud83d\ude00",
            r"\u0000",
            r"\r\n",
            r"\u001b[31m",
            r"\u0085",
        ][..],
    );
    (
        prop::sample::select(fields),
        escape,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(field, escape, in_name, truncate)| {
            let text = if in_name {
                format!(r#"{{"{field}{escape}": "x", "{field}": "a{escape}b"}}"#)
            } else {
                format!(r#"{{"{field}": "a{escape}b"}}"#)
            };
            if truncate {
                text[..text.len() - 2].to_owned()
            } else {
                text
            }
        })
}

fn payload(path: &'static str, template: Map<String, Value>) -> impl Strategy<Value = Payload> {
    let fields = fields_of(path);
    let content_type = prop::option::of(prop::sample::select(
        &[
            "application/json",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "application/json\u{7f}",
        ][..],
    ))
    .prop_map(|ct| ct.map(str::to_owned));
    prop_oneof![
        1 => Just(Payload::Empty),
        10 => object(fields, template.clone()).prop_map(Payload::Json),
        2 => vec(object(fields, template), 0..4).prop_map(|items| Payload::Json(Value::Array(items))),
        1 => json_value().prop_map(Payload::Json),
        2 => json_text(fields).prop_map(Payload::JsonText),
        1 => (content_type, vec(any::<u8>(), 0..64)).prop_map(|(ct, bytes)| Payload::Raw(ct, bytes)),
    ]
}

/// Percent-encodes every byte but unreserved ones.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// One query key or value, encoded well, or badly: a stray `%`, a bad hex digit, bytes that
/// decode to no UTF-8 (an encoded lone surrogate among them), `+` for spaces.
fn query_part(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let bad = prop::sample::select(
        &[
            "%",
            "%G1",
            "%FF%FE",
            "%ED%A0%80",
            "%C0%80",
            "%00",
            "%0D%0A",
            "+",
            "%2",
            "%%",
        ][..],
    );
    prop_oneof![
        3 => prop::sample::select(names).prop_map(str::to_owned),
        4 => text().prop_map(|t| encode(&t)),
        2 => (text(), bad, any::<bool>())
            .prop_map(|(t, bad, before)| if before { format!("{bad}{}", encode(&t)) } else { format!("{}{bad}", encode(&t)) }),
    ]
}

/// At most `max` bytes of an encoded URI part (the `http` crate takes URIs of up to 64 KiB);
/// a cut may leave a broken escape at the end, one more bad encoding.
fn capped(part: String, max: usize) -> String {
    if part.len() > max {
        part[..max].to_owned()
    } else {
        part
    }
}

fn query() -> impl Strategy<Value = Option<String>> {
    let value = prop_oneof![
        2 => prop::sample::select(VALID).prop_map(encode),
        3 => query_part(&[""]),
    ];
    let pair = (query_part(PARAMS), value, any::<bool>())
        .prop_map(|(k, v, bare)| if bare { k } else { format!("{k}={v}") });
    prop::option::of(prop_oneof![
        5 => vec(pair, 0..5).prop_map(|pairs| capped(pairs.join("&"), 30_000)),
        1 => prop::sample::select(&["", "&", "&&=&", "=", "page", "page=", "page=1&page=x"][..])
            .prop_map(str::to_owned),
    ])
}

fn id(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(known),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(&["0", "-1", "1e3", "99999999999999999999", "%FF", "%00", "%ED%A0%80", "..", "%2F"][..])
            .prop_map(str::to_owned),
        1 => text().prop_map(|t| capped(encode(&t), 30_000)),
    ]
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        8 => Just(Auth::Admin),
        1 => Just(Auth::Anonymous),
        1 => vec(any::<u8>().prop_filter("a header value", |b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)), 0..40)
            .prop_map(Auth::Header),
        1 => vec(any::<u8>().prop_filter("a header value", |b| *b >= 0x21 && *b != 0x7f), 0..40)
            .prop_map(|token| Auth::Header([b"Bearer ".as_slice(), &token].concat())),
    ]
}

fn case(
    path: &'static str,
    ids: Vec<String>,
    template: Map<String, Value>,
) -> impl Strategy<Value = Case> {
    (
        auth(),
        id(ids),
        any::<bool>(),
        query(),
        payload(path, template),
    )
        .prop_map(|(auth, id, slash, query, payload)| Case {
            auth,
            id,
            slash,
            query,
            payload,
        })
}

/// True for a body in DRF's error shape.
fn drf_shaped(body: &Value) -> bool {
    let field_errors = |v: &Value| {
        v.as_object().is_some_and(|map| {
            map.values().all(|messages| {
                messages
                    .as_array()
                    .is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string))
            })
        })
    };
    match body {
        Value::Object(map) if map.contains_key("detail") => map["detail"].is_string(),
        Value::Object(map) => !map.is_empty() && field_errors(body),
        Value::Array(items) => {
            !items.is_empty()
                && items.iter().all(field_errors)
                && items
                    .iter()
                    .any(|item| item.as_object().is_some_and(|m| !m.is_empty()))
        }
        _ => false,
    }
}

/// The request a case makes.
fn request(method: &str, path: &str, case: &Case, admin: &str) -> Option<Request<Body>> {
    let mut uri = path.replace("{id}", &case.id);
    if case.slash {
        uri.push('/');
    }
    if let Some(query) = &case.query {
        uri.push('?');
        uri.push_str(query);
    }
    let mut builder = Request::builder().method(method).uri(uri);
    match &case.auth {
        Auth::Admin => builder = builder.header(header::AUTHORIZATION, format!("Bearer {admin}")),
        Auth::Anonymous => {}
        Auth::Header(bytes) => {
            builder = builder.header(header::AUTHORIZATION, HeaderValue::from_bytes(bytes).ok()?);
        }
    }
    let body = match &case.payload {
        Payload::Empty => Body::empty(),
        Payload::Json(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(value.to_string())
        }
        Payload::JsonText(text) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(text.clone())
        }
        Payload::Raw(content_type, bytes) => {
            if let Some(content_type) = content_type {
                builder = builder.header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_bytes(content_type.as_bytes()).ok()?,
                );
            }
            Body::from(bytes.clone())
        }
    };
    builder.body(body).ok()
}

/// The property, for one answer.
fn check(resp: &Resp, complete: bool) -> Result<(), TestCaseError> {
    let status = resp.status;
    prop_assert!(
        !status.is_server_error(),
        "{status} with body {:?}",
        resp.text
    );
    if status.is_client_error() {
        prop_assert!(complete, "{status} whose body never ended");
        prop_assert!(
            drf_shaped(&resp.json),
            "{status} with a body not in DRF's shape: {:?}",
            resp.text
        );
    } else {
        // Only a live stream may go on past the patience, and only once it is open.
        prop_assert!(
            complete || status == StatusCode::OK,
            "{status} whose body never ended"
        );
    }
    Ok(())
}

/// True when a path id, once decoded as the router decodes it, is `id` (`1`, `+1`, `%2B01`).
fn names(raw: &str, id: i64) -> bool {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).parse::<i64>() == Ok(id)
}

/// How a value shows in a failure report: long strings shortened.
fn shorten(debug: String) -> String {
    if debug.chars().count() > 2000 {
        let head: String = debug.chars().take(2000).collect();
        format!("{head}… ({} chars)", debug.chars().count())
    } else {
        debug
    }
}

#[test]
fn no_query_path_or_body_on_any_route_gets_a_5xx_or_a_4xx_outside_drf_shape() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (api, admin, ids) = runtime.block_on(async {
        let api = TestApi::start().await;
        let admin = api.create_user("admin", Role::Admin).await;
        let (token, refresh) = api.login("admin").await;
        let victim = api.create_user("victim", Role::Analyst).await;
        let alert = api.stored_alert("stored-1").await;
        let ids = vec![
            victim.id.to_string(),
            alert.id.to_string(),
            alert.event_id.to_string(),
        ];
        (api, (admin, token, refresh), ids)
    });
    let (admin_user, token, refresh) = admin;

    let defaults = Config::default();
    let seed = match defaults.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => uuid::Uuid::new_v4().as_u64_pair().0,
    };
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        defaults.cases
    } else {
        CASES
    };
    let mut failures = Vec::new();
    let started = std::time::Instant::now();

    for &(method, path) in api::routes::ROUTES {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 512,
            rng_seed: RngSeed::Fixed(seed),
            ..defaults.clone()
        };
        let mut runner = TestRunner::new(config);
        let route_started = std::time::Instant::now();
        let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
        let strategy = case(path, ids.clone(), template(method, path, &refresh));
        let result = runner.run(&strategy, |case| {
            // The admin's own account is never the one a users route changes: a
            // deactivated admin would turn the rest of the run into 401s.
            if path.starts_with("/api/users/") && names(&case.id, admin_user.id) {
                return Ok(());
            }
            let Some(request) = request(method, path, &case, &token) else {
                // Not a request a client could send (the builder refuses it).
                return Ok(());
            };
            let (resp, complete) = runtime.block_on(api.send_bounded(request, BODY_PATIENCE));
            *seen
                .lock()
                .unwrap()
                .entry(resp.status.as_u16())
                .or_default() += 1;
            check(&resp, complete)
        });
        eprintln!(
            "{method} {path}: {:?}, statuses {:?}",
            route_started.elapsed(),
            seen.lock().unwrap()
        );
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, case)) => failures.push(format!(
                "{method} {path}: {reason}\n  minimal input: {}",
                shorten(format!("{case:?}"))
            )),
            Err(TestError::Abort(reason)) => {
                failures.push(format!("{method} {path}: aborted: {reason}"));
            }
        }
    }
    eprintln!(
        "{} routes x {cases} cases in {:?} (seed {seed})",
        api::routes::ROUTES.len(),
        started.elapsed()
    );

    // Then a sweep that leaves nothing to chance: each kind of junk put into the middle of
    // each field of each route's valid body, and of each query parameter's value.
    for &(method, path) in api::routes::ROUTES {
        let id = if path.starts_with("/api/users/") {
            &ids[0]
        } else if path.starts_with("/api/events/") {
            &ids[2]
        } else {
            &ids[1]
        };
        let template = template(method, path, &refresh);
        let mut variants = Vec::new();
        for (field, value) in &template {
            let Some(value) = value.as_str() else {
                continue;
            };
            for junk in JUNK {
                let mut body = template.clone();
                let middle = value.chars().count() / 2;
                let at = value
                    .char_indices()
                    .nth(middle)
                    .map_or(value.len(), |(i, _)| i);
                let hostile = format!("{}{junk}{}", &value[..at], &value[at..]);
                body.insert(field.clone(), Value::String(hostile));
                variants.push((None, Payload::Json(Value::Object(body))));
            }
        }
        if method == "GET" {
            for param in PARAMS {
                for junk in JUNK {
                    let query = format!("{param}={}", encode(&format!("1{junk}1")));
                    variants.push((Some(query), Payload::Empty));
                }
            }
        }
        for (query, payload) in variants {
            let case = Case {
                auth: Auth::Admin,
                id: id.clone(),
                slash: true,
                query,
                payload,
            };
            let request = request(method, path, &case, &token).unwrap();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (resp, complete) = runtime.block_on(api.send_bounded(request, BODY_PATIENCE));
                check(&resp, complete)
            }));
            let reason = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(err)) => err.to_string(),
                Err(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
            };
            failures.push(format!(
                "{method} {path} (sweep): {reason}\n  input: {}",
                shorten(format!("{case:?}"))
            ));
        }
    }
    eprintln!("and a sweep, {:?} in all", started.elapsed());
    // The api still answers its admin: no case broke it for the next.
    let resp = runtime.block_on(api.call("GET", "/api/alerts/", Some(&token), None));
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert!(
        failures.is_empty(),
        "{} failures (rerun with PROPTEST_RNG_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
