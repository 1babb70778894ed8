//! Bad input on every endpoint: malformed JSON, bodies of the wrong shape or media type,
//! missing fields, wrong types, unknown choices, a body over the limit, injection-shaped
//! strings in every field, and bad query values and path ids. Each answer is a 4xx with a
//! JSON body in DRF's shape (the field or parameter named), never a 5xx; values that are
//! merely odd are stored verbatim, and nothing reaches the SQL.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Utc};
use common::domain::{EventIn, Role, Severity};
use common::storage::EventRecord;
use serde_json::{Map, Value, json};
use support::{Resp, TestApi};

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const NOT_BLANK: &str = "This field may not be blank.";
const NOT_STRING: &str = "Not a valid string.";
const NULL_CHARS: &str = "Null characters are not allowed.";
const NOT_BOOLEAN: &str = "Must be a valid boolean.";
const BAD_EMAIL: &str = "Enter a valid email address.";
const BAD_DATETIME: &str = "Datetime has wrong format. Use one of these formats instead: \
                            YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].";
const BAD_USERNAME: &str = "Enter a valid username. This value may contain only letters, \
                            numbers, and @/./+/-/_ characters.";
const TOO_SHORT: &str = "This password is too short. It must contain at least 8 characters.";

/// Strings shaped like attacks on SQL, HTML, paths and C strings.
const INJECTIONS: [&str; 5] = [
    "' OR 1=1 --",
    "\"; DROP TABLE alerts; --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "nul\u{0}byte",
];

const STATUSES: &[&str] = &["OPEN", "ACKNOWLEDGED", "RESOLVED"];
const ROLES: &[&str] = &["ADMIN", "ANALYST"];
const SEVERITIES: &[&str] = &["LOW", "MEDIUM", "HIGH", "CRITICAL"];

/// What a field holds, which decides how each value is answered.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Login's username: any text is looked up (trimmed), and a wrong one is 401.
    Credential,
    /// Login's password or a refresh token: any text (as given) that is wrong is 401.
    Secret,
    /// A new username: letters, digits and `@.+-_`, at most 150.
    Username,
    /// An email address.
    Email,
    /// A new password: at least 8 characters.
    Password,
    /// Required-when-given text of at most this many characters.
    Text(usize),
    /// An event's description: optional, null is absent, at most 64 KiB.
    Description,
    /// An event's idempotency key: optional, null is absent, at most 255 bytes.
    Uid,
    /// One of these names, exactly.
    Choice(&'static [&'static str]),
    /// A boolean.
    Bool,
    /// An RFC 3339 time; null is absent.
    DateTime,
    /// A JSON object; null is absent.
    Object,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn field(name: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        kind,
        required,
    }
}

/// How the api must answer a value of a field.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The endpoint's success.
    Accepted,
    /// 401: taken as credentials or a token, and wrong.
    Unauthorized,
    /// 400 naming the field alone, with this message when it is fixed.
    Refused(Option<String>),
}

fn refused(message: &str) -> Outcome {
    Outcome::Refused(Some(message.to_owned()))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The answer to `value` in a field of `kind`, the other fields being valid.
fn expect(kind: Kind, value: &Value) -> Outcome {
    match kind {
        Kind::Choice(choices) => match value {
            Value::Null => refused(NOT_NULL),
            Value::String(s) if choices.contains(&s.as_str()) => Outcome::Accepted,
            Value::String(s) => refused(&format!("\"{s}\" is not a valid choice.")),
            other => refused(&format!("\"{other}\" is not a valid choice.")),
        },
        Kind::Bool => match value {
            Value::Bool(_) => Outcome::Accepted,
            Value::String(s)
                if ["true", "True", "1", "false", "False", "0"].contains(&s.as_str()) =>
            {
                Outcome::Accepted
            }
            Value::Number(n) if matches!(n.as_i64(), Some(0 | 1)) => Outcome::Accepted,
            _ => refused(NOT_BOOLEAN),
        },
        Kind::DateTime => match value {
            Value::Null => Outcome::Accepted,
            Value::String(s) if DateTime::parse_from_rfc3339(s.trim()).is_ok() => Outcome::Accepted,
            _ => refused(BAD_DATETIME),
        },
        Kind::Object => match value {
            Value::Null => Outcome::Accepted,
            Value::Object(_) => Outcome::Accepted,
            other => refused(&format!(
                "Expected a dictionary of items but got type \"{}\".",
                type_name(other)
            )),
        },
        _ => match value {
            Value::Null if matches!(kind, Kind::Description | Kind::Uid) => Outcome::Accepted,
            Value::Null => refused(NOT_NULL),
            // Free text may hold any character, NUL included; names and keys may not.
            Value::String(s) if s.contains('\0') && kind != Kind::Description => {
                refused(NULL_CHARS)
            }
            Value::String(s) => text(kind, s),
            // Numbers are text, as DRF's CharField has them.
            Value::Number(n) => text(kind, &n.to_string()),
            _ => refused(NOT_STRING),
        },
    }
}

/// The answer to a text value without NUL characters.
fn text(kind: Kind, s: &str) -> Outcome {
    let trimmed = s.trim();
    match kind {
        Kind::Credential if trimmed.is_empty() => refused(NOT_BLANK),
        Kind::Secret if s.is_empty() => refused(NOT_BLANK),
        Kind::Credential | Kind::Secret => Outcome::Unauthorized,
        Kind::Username if trimmed.is_empty() => refused(NOT_BLANK),
        Kind::Username if trimmed.chars().count() > 150 => {
            refused("Ensure this field has no more than 150 characters.")
        }
        Kind::Username
            if !trimmed
                .chars()
                .all(|c| c.is_alphanumeric() || "@.+-_".contains(c)) =>
        {
            refused(BAD_USERNAME)
        }
        Kind::Username => Outcome::Accepted,
        Kind::Email if trimmed.is_empty() => refused(NOT_BLANK),
        // None of the values tried here is an address, and each is refused as such.
        Kind::Email => refused(BAD_EMAIL),
        Kind::Password if s.is_empty() => refused(NOT_BLANK),
        Kind::Password if s.chars().count() < 8 => refused(TOO_SHORT),
        Kind::Password => Outcome::Accepted,
        Kind::Text(_) if trimmed.is_empty() => refused(NOT_BLANK),
        Kind::Text(max) if trimmed.chars().count() > max => refused(&format!(
            "Ensure this field has no more than {max} characters."
        )),
        Kind::Text(_) | Kind::Description => Outcome::Accepted,
        Kind::Uid if trimmed.is_empty() => refused(NOT_BLANK),
        Kind::Uid if trimmed.len() > 255 => {
            refused("Ensure this field has no more than 255 characters.")
        }
        Kind::Uid => Outcome::Accepted,
        other => panic!("{other:?} is not text"),
    }
}

/// An endpoint that takes a body.
struct Endpoint {
    name: &'static str,
    method: &'static str,
    path: String,
    token: Option<String>,
    /// The body is a JSON array of such objects, and field errors come back as a list.
    batch: bool,
    /// A body it accepts.
    valid: Value,
    fields: Vec<Field>,
    success: StatusCode,
}

impl Endpoint {
    /// A valid object, with a fresh username and idempotency key where it has them.
    fn object(&self, n: usize) -> Map<String, Value> {
        let mut map = self.valid.as_object().unwrap().clone();
        if self.fields.iter().any(|f| f.kind == Kind::Username) {
            map.insert("username".into(), json!(format!("user{n}")));
        }
        if map.contains_key("uid") {
            map.insert("uid".into(), json!(format!("bad-input-{n}")));
        }
        map
    }

    /// An object as this endpoint's body.
    fn body(&self, object: Map<String, Value>) -> Value {
        if self.batch {
            json!([object])
        } else {
            Value::Object(object)
        }
    }

    async fn send(&self, api: &TestApi, body: Value) -> Resp {
        api.call(self.method, &self.path, self.token.as_deref(), Some(body))
            .await
    }

    async fn send_raw(&self, api: &TestApi, content_type: Option<&str>, bytes: Vec<u8>) -> Resp {
        let mut builder = Request::builder().method(self.method).uri(&self.path);
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        api.send(builder.body(Body::from(bytes)).unwrap()).await
    }

    fn describe(&self) -> String {
        format!("{} ({} {})", self.name, self.method, self.path)
    }
}

/// Never a 5xx; always a JSON object, or a list for a batch's field errors.
fn assert_json_answer(resp: &Resp, what: &str) {
    assert!(
        !resp.status.is_server_error(),
        "{what}: {} {}",
        resp.status,
        resp.text
    );
    let content_type = resp
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content type {content_type:?}, body {:?}",
        resp.text
    );
    assert!(
        resp.json.is_object() || resp.json.is_array(),
        "{what}: {}",
        resp.text
    );
}

/// A 4xx with a JSON body.
fn assert_refused(resp: &Resp, what: &str) {
    assert_json_answer(resp, what);
    assert!(
        resp.status.is_client_error(),
        "{what}: {} {}",
        resp.status,
        resp.text
    );
}

/// The field errors of an answer: the object, or a batch's only item.
fn field_errors<'a>(endpoint: &Endpoint, resp: &'a Resp, what: &str) -> &'a Map<String, Value> {
    let errors = if endpoint.batch {
        let items = resp
            .json
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {}", resp.text));
        assert_eq!(items.len(), 1, "{what}: {}", resp.text);
        &items[0]
    } else {
        &resp.json
    };
    errors
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {}", resp.text))
}

/// Checks that `resp` is `outcome` for `field` of `endpoint`.
fn check(endpoint: &Endpoint, field: &str, outcome: &Outcome, resp: &Resp, what: &str) {
    assert_json_answer(resp, what);
    match outcome {
        Outcome::Accepted => assert_eq!(resp.status, endpoint.success, "{what}: {}", resp.text),
        Outcome::Unauthorized => {
            assert_eq!(
                resp.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                resp.text
            );
            assert!(resp.json["detail"].is_string(), "{what}: {}", resp.text);
        }
        Outcome::Refused(message) => {
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                resp.text
            );
            let errors = field_errors(endpoint, resp, what);
            assert_eq!(
                errors.keys().collect::<Vec<_>>(),
                [field],
                "{what}: {}",
                resp.text
            );
            let messages = errors[field].as_array().unwrap();
            assert!(
                !messages.is_empty() && messages.iter().all(Value::is_string),
                "{what}: {}",
                resp.text
            );
            if let Some(message) = message {
                assert_eq!(errors[field], json!([message]), "{what}");
            }
        }
    }
}

/// An api with an admin, a user to change, an alert and two refresh tokens. Failed logins
/// are not limited here: this test fails many on purpose.
struct Ctx {
    api: TestApi,
    admin: String,
    alert_id: i64,
    event_id: i64,
    target_id: i64,
    refresh: String,
    logout: String,
}

async fn setup() -> Ctx {
    let api = TestApi::start_with(&[
        "--login-max-failures",
        "100000",
        "--login-max-failures-per-address",
        "100000",
    ])
    .await;
    let (_, admin) = api.user_with_token("admin", Role::Admin).await;
    let target = api.create_user("target", Role::Analyst).await;
    let (_, refresh) = api.login("admin").await;
    let (_, logout) = api.login("admin").await;
    let (event_id, alert_id) = store_event(&api, "fw-edge-01", "seed-1", Severity::High).await;
    Ctx {
        api,
        admin,
        alert_id: alert_id.unwrap(),
        event_id,
        target_id: target.id,
        refresh,
        logout,
    }
}

/// Stores an event straight in the database, with its alert when HIGH or above.
async fn store_event(
    api: &TestApi,
    source: &str,
    uid: &str,
    severity: Severity,
) -> (i64, Option<i64>) {
    let event = EventIn::from_value(
        json!({"sourceName": source, "eventType": "port_scan", "severity": severity.as_str()}),
    )
    .unwrap();
    let record = EventRecord {
        uid: uid.to_owned(),
        event,
        created_at: Utc::now(),
    };
    let stored = api
        .state
        .storage
        .store_events(&[record], Severity::Low)
        .await
        .unwrap();
    let event = stored.to_escalate[0].clone();
    if severity < Severity::High {
        return (event.id, None);
    }
    let alerts = api
        .state
        .storage
        .create_alerts(std::slice::from_ref(&event), Utc::now())
        .await
        .unwrap();
    (event.id, Some(alerts.alerts[0].id))
}

fn endpoints(ctx: &Ctx) -> Vec<Endpoint> {
    use Kind::{
        Choice, Credential, Description, Email, Object, Password, Secret, Text, Uid, Username,
    };
    let admin = Some(ctx.admin.clone());
    let event = json!({
        "sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "LOW",
        "description": "a scan", "uid": "bad-input-0", "occurred_at": "2026-03-01T10:00:00Z",
        "attributes": {"ip": "203.0.113.9"},
    });
    let event_fields = vec![
        field("sourceName", Text(128), true),
        field("eventType", Text(128), true),
        field("severity", Choice(SEVERITIES), true),
        field("description", Description, false),
        field("uid", Uid, false),
        field("occurred_at", Kind::DateTime, false),
        field("attributes", Object, false),
    ];
    let alert = format!("/api/alerts/{}/", ctx.alert_id);
    let user = format!("/api/users/{}/", ctx.target_id);
    vec![
        Endpoint {
            name: "login",
            method: "POST",
            path: "/api/auth/login/".into(),
            token: None,
            batch: false,
            valid: json!({"username": "admin", "password": TestApi::password_of("admin")}),
            fields: vec![
                field("username", Credential, true),
                field("password", Secret, true),
            ],
            success: StatusCode::OK,
        },
        Endpoint {
            name: "refresh",
            method: "POST",
            path: "/api/auth/refresh/".into(),
            token: None,
            batch: false,
            valid: json!({"refresh": ctx.refresh}),
            fields: vec![field("refresh", Secret, true)],
            success: StatusCode::OK,
        },
        Endpoint {
            name: "logout",
            method: "POST",
            path: "/api/auth/logout/".into(),
            token: None,
            batch: false,
            valid: json!({"refresh": ctx.logout}),
            fields: vec![field("refresh", Secret, true)],
            success: StatusCode::OK,
        },
        Endpoint {
            name: "create a user",
            method: "POST",
            path: "/api/users/".into(),
            token: admin.clone(),
            batch: false,
            valid: json!({"username": "user0", "email": "new@example.com",
                          "password": "a long password", "role": "ANALYST"}),
            fields: vec![
                field("username", Username, true),
                field("email", Email, false),
                field("password", Password, true),
                field("role", Choice(ROLES), true),
            ],
            success: StatusCode::CREATED,
        },
        Endpoint {
            name: "change a user",
            method: "PATCH",
            path: user,
            token: admin.clone(),
            batch: false,
            valid: json!({"email": "target@example.com", "password": "another long password",
                          "role": "ANALYST", "is_active": true}),
            fields: vec![
                field("email", Email, false),
                field("password", Password, false),
                field("role", Choice(ROLES), false),
                field("is_active", Kind::Bool, false),
            ],
            success: StatusCode::OK,
        },
        Endpoint {
            name: "post an event",
            method: "POST",
            path: "/api/events/".into(),
            token: admin.clone(),
            batch: false,
            valid: event.clone(),
            fields: event_fields.clone(),
            success: StatusCode::ACCEPTED,
        },
        Endpoint {
            name: "post a batch of events",
            method: "POST",
            path: "/api/events/".into(),
            token: admin.clone(),
            batch: true,
            valid: event,
            fields: event_fields,
            success: StatusCode::ACCEPTED,
        },
        Endpoint {
            name: "patch an alert",
            method: "PATCH",
            path: alert.clone(),
            token: admin.clone(),
            batch: false,
            valid: json!({"status": "ACKNOWLEDGED", "note": "checked"}),
            fields: vec![
                field("status", Choice(STATUSES), false),
                field("note", Text(2000), false),
            ],
            success: StatusCode::OK,
        },
        Endpoint {
            name: "put an alert",
            method: "PUT",
            path: alert,
            token: admin,
            batch: false,
            valid: json!({"status": "RESOLVED", "note": "done"}),
            fields: vec![
                field("status", Choice(STATUSES), true),
                field("note", Text(2000), false),
            ],
            success: StatusCode::OK,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_misshapen_mistyped_and_oversized_bodies_are_4xx_with_a_json_body() {
    let ctx = setup().await;
    let api = &ctx.api;
    let endpoints = endpoints(&ctx);
    let mut n = 1;

    for endpoint in &endpoints {
        let name = endpoint.describe();
        // A control: the valid body succeeds (the logout one revokes its token, which no
        // later case needs).
        n += 1;
        let resp = endpoint.send(api, endpoint.body(endpoint.object(n))).await;
        assert_eq!(resp.status, endpoint.success, "{name}: {}", resp.text);
        let valid = endpoint.body(endpoint.object(n)).to_string().into_bytes();

        // Not JSON, or not JSON as we know it.
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for (case, bytes) in [
            ("truncated", br#"{"a":"#.to_vec()),
            ("not JSON at all", b"username=admin&password=x".to_vec()),
            ("invalid UTF-8", b"{\"a\": \"\xff\xfe\"}".to_vec()),
            ("a lone surrogate", br#"{"a": "\ud800"}"#.to_vec()),
            ("a number out of range", b"{\"a\": 1e400}".to_vec()),
            ("two documents", b"{} {}".to_vec()),
            ("nested 10,000 deep", nested.into_bytes()),
        ] {
            let what = format!("{name}, {case}");
            let resp = endpoint
                .send_raw(api, Some("application/json"), bytes)
                .await;
            assert_refused(&resp, &what);
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                resp.text
            );
            let detail = resp.json["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with("JSON parse error - "),
                "{what}: {}",
                resp.text
            );
        }

        // JSON, but not an object (for a batch: items that are not objects).
        for value in [
            json!([1, 2]),
            json!(42),
            json!("a string"),
            json!(null),
            json!(true),
        ] {
            let what = format!("{name}, the body {value}");
            let (body, items) = if endpoint.batch {
                (json!([value.clone()]), vec![value.clone()])
            } else if endpoint.name == "post an event" && value.is_array() {
                // An array is a batch: each item is answered.
                (value.clone(), value.as_array().unwrap().clone())
            } else {
                (value.clone(), Vec::new())
            };
            let resp = endpoint.send(api, body).await;
            assert_refused(&resp, &what);
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                resp.text
            );
            let dictionary = |v: &Value| {
                json!({"non_field_errors": [
                    format!("Invalid data. Expected a dictionary, but got {}.", type_name(v))
                ]})
            };
            let expected = if items.is_empty() {
                dictionary(&value)
            } else {
                Value::Array(items.iter().map(dictionary).collect())
            };
            assert_eq!(resp.json, expected, "{what}");
        }

        // Not declared as JSON: 415, whatever the body.
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            None,
        ] {
            let what = format!("{name}, content type {content_type:?}");
            let resp = endpoint.send_raw(api, content_type, valid.clone()).await;
            assert_refused(&resp, &what);
            assert_eq!(
                resp.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{what}: {}",
                resp.text
            );
            assert_eq!(
                resp.json,
                json!({"detail": format!("Unsupported media type \"{}\" in request.",
                                         content_type.unwrap_or_default())}),
                "{what}"
            );
        }

        // Two megabytes: 413, JSON or not.
        let big = json!({"pad": "x".repeat(2 * 1024 * 1024)})
            .to_string()
            .into_bytes();
        for content_type in ["application/json", "text/plain"] {
            let what = format!("{name}, 2 MB of {content_type}");
            let resp = endpoint
                .send_raw(api, Some(content_type), big.clone())
                .await;
            assert_refused(&resp, &what);
            assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
            assert_eq!(
                resp.json,
                json!({"detail": "Request body is too large (at most 1 MiB)."})
            );
        }
    }

    // A batch must have one to a thousand events.
    let batch = &endpoints[6];
    assert!(batch.batch);
    let resp = batch.send(api, json!([])).await;
    assert_refused(&resp, "an empty batch");
    assert_eq!(
        resp.json,
        json!({"non_field_errors": ["Expected a non-empty list of events."]})
    );
    let many: Vec<Value> = (0..1001).map(|i| Value::Object(batch.object(i))).collect();
    let resp = batch.send(api, Value::Array(many)).await;
    assert_refused(&resp, "1001 events");
    assert_eq!(
        resp.json,
        json!({"non_field_errors": ["Ensure this list has no more than 1000 events."]})
    );
    // One bad item: every item is answered, in order, the good ones with no errors.
    let mut bad = batch.object(1);
    bad.insert("severity".into(), json!("BOGUS"));
    let resp = batch
        .send(api, json!([batch.object(2), bad, batch.object(3)]))
        .await;
    assert_refused(&resp, "a batch with one bad event");
    assert_eq!(
        resp.json,
        json!([{}, {"severity": ["\"BOGUS\" is not a valid choice."]}, {}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields_wrong_types_and_unknown_choices_are_400_naming_the_field() {
    let ctx = setup().await;
    let api = &ctx.api;
    let endpoints = endpoints(&ctx);
    let mut n = 1;

    for endpoint in &endpoints {
        let name = endpoint.describe();

        // Nothing at all: every required field is named; with none required, a no-op.
        let required: Map<String, Value> = endpoint
            .fields
            .iter()
            .filter(|f| f.required)
            .map(|f| (f.name.to_owned(), json!([REQUIRED])))
            .collect();
        for (case, bytes) in [("{}", b"{}".to_vec()), ("an empty body", Vec::new())] {
            let what = format!("{name}, {case}");
            let body = if endpoint.batch && case == "{}" {
                b"[{}]".to_vec()
            } else {
                bytes
            };
            let resp = endpoint.send_raw(api, Some("application/json"), body).await;
            assert_json_answer(&resp, &what);
            if required.is_empty() {
                assert_eq!(resp.status, endpoint.success, "{what}: {}", resp.text);
            } else if endpoint.batch && case == "an empty body" {
                // An empty body is an empty object, which is not a list.
                assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{what}");
                assert_eq!(resp.json, Value::Object(required.clone()), "{what}");
            } else {
                assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{what}");
                let expected = Value::Object(required.clone());
                let expected = if endpoint.batch {
                    json!([expected])
                } else {
                    expected
                };
                assert_eq!(resp.json, expected, "{what}");
            }
        }

        for field in &endpoint.fields {
            // Each required field left out alone.
            if field.required {
                n += 1;
                let mut object = endpoint.object(n);
                object.remove(field.name);
                let what = format!("{name} without {}", field.name);
                let resp = endpoint.send(api, endpoint.body(object)).await;
                check(endpoint, field.name, &refused(REQUIRED), &resp, &what);
            }

            // Wrong types, blanks and unknown choices.
            let mut values = vec![
                json!({}),
                json!({"$ne": null}),
                json!([]),
                json!(["admin"]),
                json!(null),
                json!(true),
                json!(12345),
                json!(1.5),
                json!(""),
                json!("   "),
            ];
            if let Kind::Choice(choices) = field.kind {
                values.extend([
                    json!("BOGUS"),
                    json!(choices[0].to_lowercase()),
                    json!(format!(" {} ", choices[0])),
                    json!(choices.join(",")),
                ]);
            }
            if field.kind == Kind::Bool {
                values.extend([json!("yes"), json!(2), json!("false")]);
            }
            if field.kind == Kind::DateTime {
                values.extend([
                    json!("yesterday"),
                    json!("2026-13-45T25:61:00Z"),
                    json!(1_700_000_000),
                ]);
            }
            for value in values {
                n += 1;
                let mut object = endpoint.object(n);
                object.insert(field.name.to_owned(), value.clone());
                let outcome = expect(field.kind, &value);
                let what = format!("{name}, {} = {value}", field.name);
                let resp = endpoint.send(api, endpoint.body(object)).await;
                check(endpoint, field.name, &outcome, &resp, &what);
            }
        }
    }

    // The contract's own example, exactly.
    let resp = api
        .call(
            "PATCH",
            &format!("/api/alerts/{}/", ctx.alert_id),
            Some(&ctx.admin),
            Some(json!({"status": "BOGUS"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json,
        json!({"status": ["\"BOGUS\" is not a valid choice."]})
    );
    // Every problem at once.
    let resp = api
        .call(
            "POST",
            "/api/users/",
            Some(&ctx.admin),
            Some(json!({"username": "a b", "email": "nope", "password": "short", "role": "ROOT"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({
            "username": [BAD_USERNAME],
            "email": [BAD_EMAIL],
            "role": ["\"ROOT\" is not a valid choice."],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_shaped_strings_are_refused_or_kept_verbatim_and_break_nothing() {
    let ctx = setup().await;
    let api = &ctx.api;
    let admin = ctx.admin.as_str();
    // A second event, whose sensor name is an injection.
    let (odd_event, _) = store_event(api, "' OR 1=1 --", "seed-2", Severity::Low).await;
    let count = |path: &'static str| async move {
        let resp = api.call("GET", path, Some(admin), None).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text);
        resp.json["count"].as_i64().unwrap()
    };
    let (alerts, events, users) = (
        count("/api/alerts/").await,
        count("/api/events/").await,
        count("/api/users/").await,
    );
    assert_eq!((alerts, events, users), (1, 2, 2));

    let endpoints = endpoints(&ctx);
    let long = "A".repeat(10_000);
    let mut values: Vec<Value> = INJECTIONS.iter().map(|s| json!(s)).collect();
    values.push(json!(long));
    let mut n = 1;
    let mut users_created = 0;
    for endpoint in &endpoints {
        for field in &endpoint.fields {
            let mut tried = values.clone();
            if field.kind == Kind::Object {
                // As values and as keys inside the object, too.
                for s in INJECTIONS {
                    tried.push(json!({"value": s}));
                    tried.push(json!({s: 1}));
                }
            }
            for value in tried {
                n += 1;
                let mut object = endpoint.object(n);
                object.insert(field.name.to_owned(), value.clone());
                let outcome = expect(field.kind, &value);
                let shown: String = value.to_string().chars().take(60).collect();
                let what = format!("{}, {} = {shown}", endpoint.describe(), field.name);
                let resp = endpoint.send(api, endpoint.body(object)).await;
                check(endpoint, field.name, &outcome, &resp, &what);
                if outcome == Outcome::Accepted && endpoint.name == "create a user" {
                    users_created += 1;
                }
            }
        }
    }
    assert!(
        users_created > 0,
        "some injection-shaped passwords are valid"
    );

    // Every table and row is still there.
    assert_eq!(count("/api/alerts/").await, alerts);
    assert_eq!(count("/api/events/").await, events);
    assert_eq!(count("/api/users/").await, users + users_created);
    let resp = api
        .call(
            "GET",
            &format!("/api/alerts/{}/history/", ctx.alert_id),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    // A note shaped like an injection is kept verbatim.
    let alert_path = format!("/api/alerts/{}/", ctx.alert_id);
    for (status, note) in [
        ("OPEN", "'; DROP TABLE alerts; --"),
        ("ACKNOWLEDGED", "<script>alert(1)</script>"),
        ("RESOLVED", "' OR 1=1 --"),
    ] {
        let resp = api.call("GET", &alert_path, Some(admin), None).await;
        let status = if resp.json["status"] == status {
            "ACKNOWLEDGED"
        } else {
            status
        };
        let status = if resp.json["status"] == status {
            "RESOLVED"
        } else {
            status
        };
        let resp = api
            .call(
                "PATCH",
                &alert_path,
                Some(admin),
                Some(json!({"status": status, "note": note})),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        let history = api
            .call("GET", &format!("{alert_path}history/"), Some(admin), None)
            .await
            .json;
        let last = history.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["to_status"], status);
        assert_eq!(last["note"], note, "{history}");
    }
    assert_eq!(count("/api/alerts/").await, alerts);

    // A user whose email and password are shaped like injections, kept verbatim; logging in
    // takes the password as a password, and odd usernames as names.
    let email = "o'brien';--@example.com";
    let password = "' OR 1=1 --";
    let resp = api
        .call(
            "POST",
            "/api/users/",
            Some(admin),
            Some(
                json!({"username": "o.brien", "email": email, "password": password,
                        "role": "ANALYST"}),
            ),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let id = resp.json["id"].as_i64().unwrap();
    let resp = api
        .call("GET", &format!("/api/users/{id}/"), Some(admin), None)
        .await;
    assert_eq!(resp.json["email"], email);
    assert_eq!(resp.json["username"], "o.brien");
    let login = |username: &str, password: &str| {
        api.call(
            "POST",
            "/api/auth/login/",
            None,
            Some(json!({"username": username, "password": password})),
        )
    };
    assert_eq!(login("o.brien", password).await.status, StatusCode::OK);
    for (username, password) in [
        ("o.brien' --", "anything at all"),
        ("' OR '1'='1", "' OR '1'='1"),
        ("admin'--", "x"),
        ("admin\" OR \"\"=\"", "x"),
    ] {
        let resp = login(username, password).await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{username}: {}",
            resp.text
        );
        assert_eq!(
            resp.json,
            json!({"detail": "No active account found with the given credentials"})
        );
    }

    // Filters take injection-shaped values as values: only the exact match.
    let resp = api
        .call(
            "GET",
            "/api/events/?sourceName=%27%20OR%201%3D1%20--",
            Some(admin),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["count"], 1);
    assert_eq!(resp.json["results"][0]["id"], odd_event);
    assert_eq!(resp.json["results"][0]["sourceName"], "' OR 1=1 --");
    for query in [
        "sourceName=x%27%20OR%20%271%27%3D%271",
        "eventType=%27%3B%20DROP%20TABLE%20events%3B%20--",
        "sourceName=fw-edge-01%27--",
    ] {
        for path in ["/api/alerts/", "/api/events/"] {
            let resp = api
                .call("GET", &format!("{path}?{query}"), Some(admin), None)
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{path}?{query}: {}", resp.text);
            assert_eq!(resp.json["count"], 0, "{path}?{query}");
        }
    }
    assert_eq!(count("/api/events/").await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_and_path_ids_are_4xx_naming_the_parameter() {
    let ctx = setup().await;
    let api = &ctx.api;
    let admin = Some(ctx.admin.as_str());

    // Each GET endpoint and the parameters it reads; others are ignored, as in DRF.
    let alert_params: &[&str] = &[
        "status",
        "event__severity",
        "severity",
        "eventType",
        "sourceName",
        "created_at__gte",
        "created_at__lte",
        "ordering",
        "page",
        "page_size",
    ];
    let event_params: &[&str] = &[
        "severity",
        "eventType",
        "sourceName",
        "created_at__gte",
        "created_at__lte",
        "page",
        "page_size",
    ];
    let lists: Vec<(String, &[&str])> = vec![
        ("/api/alerts/".into(), alert_params),
        ("/api/events/".into(), event_params),
        ("/api/users/".into(), &["page", "page_size"]),
        (format!("/api/alerts/{}/", ctx.alert_id), &[]),
        (format!("/api/alerts/{}/history/", ctx.alert_id), &[]),
        (format!("/api/events/{}/", ctx.event_id), &[]),
        (format!("/api/users/{}/", ctx.target_id), &[]),
    ];
    // A query and the parameters it gets wrong.
    let queries: &[(&str, &[&str])] = &[
        ("status=BOGUS", &["status"]),
        ("status=open", &["status"]),
        ("status=%27%20OR%201%3D1%20--", &["status"]),
        ("event__severity=SEVERE", &["event__severity"]),
        ("severity=SEVERE", &["severity"]),
        ("severity=low", &["severity"]),
        ("page=abc", &["page"]),
        ("page=0", &["page"]),
        ("page=-1", &["page"]),
        ("page=1.5", &["page"]),
        ("page=1e3", &["page"]),
        ("page=99999999999999999999", &["page"]),
        ("page=92233720368547759", &["page"]),
        ("page=%00", &["page"]),
        ("page_size=1000", &["page_size"]),
        ("page_size=101", &["page_size"]),
        ("page_size=0", &["page_size"]),
        ("page_size=-5", &["page_size"]),
        ("page_size=abc", &["page_size"]),
        ("ordering=id;DROP", &["ordering"]),
        ("ordering=id%3B%20DROP%20TABLE%20alerts", &["ordering"]),
        ("ordering=password_hash", &["ordering"]),
        ("ordering=-id", &["ordering"]),
        ("ordering=severity,id", &["ordering"]),
        ("created_at__gte=yesterday", &["created_at__gte"]),
        ("created_at__lte=2026-13-45", &["created_at__lte"]),
        ("created_at__gte=1%27%20OR%201=1", &["created_at__gte"]),
        ("created_at__lte=%00", &["created_at__lte"]),
        ("sourceName=a%00b", &["sourceName"]),
        ("eventType=%00", &["eventType"]),
        (
            "status=BOGUS&page=abc&ordering=x&severity=SEVERE",
            &["status", "page", "ordering", "severity"],
        ),
        // Fine values: empty ones are no filter; odd text matches nothing.
        ("status=&severity=&page=&page_size=&ordering=", &[]),
        ("sourceName=%27%20OR%201%3D1%20--", &[]),
        ("unknown=%27%3B%20DROP%20TABLE%20users%3B%20--", &[]),
        ("created_at__gte=2026-03-01", &[]),
        ("created_at__lte=2026-03-01T10:00:00%2B01:00", &[]),
    ];
    for (path, takes) in &lists {
        let is_list = takes.contains(&"page");
        for (query, wrong) in queries {
            let url = format!("{path}?{query}");
            let resp = api.call("GET", &url, admin, None).await;
            assert_json_answer(&resp, &url);
            let named: Vec<&str> = wrong
                .iter()
                .copied()
                .filter(|p| takes.contains(p))
                .collect();
            if named.is_empty() {
                assert_eq!(resp.status, StatusCode::OK, "{url}: {}", resp.text);
                continue;
            }
            assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{url}: {}", resp.text);
            let errors = resp.json.as_object().unwrap();
            let mut keys: Vec<&str> = errors.keys().map(String::as_str).collect();
            let mut expected = named.clone();
            keys.sort_unstable();
            expected.sort_unstable();
            assert_eq!(keys, expected, "{url}: {}", resp.text);
            for param in named {
                let messages = errors[param].as_array().unwrap();
                assert!(
                    !messages.is_empty() && messages.iter().all(Value::is_string),
                    "{url}: {}",
                    resp.text
                );
            }
        }
        if is_list {
            // A page that parses but does not exist.
            for query in [
                "page=2",
                "page=92233720368547758",
                "page=92233720368547758&page_size=100",
            ] {
                let url = format!("{path}?{query}");
                let resp = api.call("GET", &url, admin, None).await;
                assert_refused(&resp, &url);
                assert_eq!(resp.status, StatusCode::NOT_FOUND, "{url}: {}", resp.text);
                assert_eq!(resp.json, json!({"detail": "Invalid page."}), "{url}");
            }
        }
    }
    let resp = api
        .call("GET", "/api/alerts/?status=BOGUS", admin, None)
        .await;
    assert_eq!(
        resp.json,
        json!({"status": ["Select a valid choice. \"BOGUS\" is not a valid choice."]})
    );
    let resp = api.call("GET", "/api/alerts/?page=abc", admin, None).await;
    assert_eq!(resp.json, json!({"page": ["A valid integer is required."]}));
    let resp = api
        .call("GET", "/api/alerts/?page_size=1000", admin, None)
        .await;
    assert_eq!(
        resp.json,
        json!({"page_size": ["Ensure this value is between 1 and 100."]})
    );
    let resp = api
        .call("GET", "/api/events/?created_at__gte=yesterday", admin, None)
        .await;
    assert_eq!(
        resp.json,
        json!({"created_at__gte": ["Enter a valid date/time."]})
    );

    // Ids that are not ids, or not of anything: 404 on every route that takes one.
    let alert_body = json!({"status": "RESOLVED", "note": "n"});
    let routes: &[(&str, &str, Option<&Value>)] = &[
        ("GET", "/api/alerts/{}/", None),
        ("GET", "/api/alerts/{}/history/", None),
        ("PATCH", "/api/alerts/{}/", Some(&alert_body)),
        ("PUT", "/api/alerts/{}/", Some(&alert_body)),
        ("GET", "/api/events/{}/", None),
        ("GET", "/api/users/{}/", None),
        (
            "PATCH",
            "/api/users/{}/",
            Some(&json!({"email": "x@example.com"})),
        ),
        ("DELETE", "/api/users/{}/", None),
    ];
    for id in [
        "abc",
        "-1",
        "0",
        "99999999999999999999",
        "9223372036854775807",
        "1%27%20OR%201=1",
        "1;DROP%20TABLE%20users",
        "%00",
        "1.0",
        "1e3",
        "0x10",
        "%2e%2e",
        "%FF",
        "%C3%A9",
        "99999",
    ] {
        for (method, route, body) in routes {
            let path = route.replace("{}", id);
            let what = format!("{method} {path}");
            let resp = api.call(method, &path, admin, body.cloned()).await;
            assert_refused(&resp, &what);
            assert_eq!(resp.status, StatusCode::NOT_FOUND, "{what}: {}", resp.text);
            assert_eq!(resp.json, json!({"detail": "Not found."}), "{what}");
        }
    }
    // Still all there.
    for path in ["/api/alerts/", "/api/events/", "/api/users/"] {
        let resp = api.call("GET", path, admin, None).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        assert!(resp.json["count"].as_i64().unwrap() >= 1, "{path}");
    }
}
