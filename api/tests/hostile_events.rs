//! Hostile bodies on `POST /api/events/`: identifiers (`sourceName`, `eventType`, `uid`)
//! holding a control character (Unicode Cc: C0 with NUL, CR, LF and TAB, DEL, C1) are
//! refused with a 400 naming the field; surrounding whitespace on them is trimmed, as DRF
//! does, not refused; free text (`description`, every string inside `attributes`) may hold
//! any character, NUL and a 64 KiB run of control characters included, and is accepted (202),
//! echoed and stored as sent. The NATS path stores and refuses the same bodies (a refused one
//! is dead-lettered). Never a dropped connection or a 5xx.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::jetstream;
use axum::http::StatusCode;
use clap::Parser;
use common::domain::Role;
use futures::FutureExt;
use serde_json::{Map, Value, json};
use support::{Resp, TestApi};
use testkit::eventually;
use tokio_util::sync::CancellationToken;

const CONTROL: &str = "Control characters are not allowed.";
const NULL: &str = "Null characters are not allowed.";
const PATIENCE: Duration = Duration::from_secs(60);

/// The identifiers, which become NATS headers, subjects and log fields.
const IDENTIFIERS: [&str; 3] = ["sourceName", "eventType", "uid"];

/// A control character of each kind, and the message refusing it inside an identifier.
const CONTROLS: [(char, &str); 11] = [
    ('\0', NULL),
    ('\u{1}', CONTROL),
    ('\t', CONTROL),
    ('\n', CONTROL),
    ('\u{b}', CONTROL),
    ('\r', CONTROL),
    ('\u{1b}', CONTROL),
    ('\u{1f}', CONTROL),
    ('\u{7f}', CONTROL),
    ('\u{85}', CONTROL),
    ('\u{9f}', CONTROL),
];

/// A valid event with a fresh `uid`.
fn event(n: usize) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "LOW",
        "description": "probe", "uid": format!("hostile-{n}"),
    }) else {
        unreachable!()
    };
    map
}

/// The control characters U+0000 to U+009F (all of Cc) over and over, `bytes` long at most.
fn control_run(bytes: usize) -> String {
    let controls: Vec<char> = ('\0'..='\u{9f}').filter(|c| c.is_control()).collect();
    let mut run = String::new();
    for c in controls.iter().cycle() {
        if run.len() + c.len_utf8() > bytes {
            break;
        }
        run.push(*c);
    }
    run
}

/// Free-text bodies that must be accepted as sent: (what, the event).
fn free_text_events() -> Vec<(String, Map<String, Value>)> {
    let mut cases = Vec::new();
    let mut n = 0;
    let mut next = |what: &str, change: &dyn Fn(&mut Map<String, Value>)| {
        n += 1;
        let mut body = event(n);
        change(&mut body);
        cases.push((what.to_owned(), body));
    };
    next("NUL inside the description", &|b| {
        b.insert("description".into(), json!("before\0after"));
    });
    for (c, _) in CONTROLS {
        next(&format!("{c:?} inside the description"), &|b| {
            b.insert("description".into(), json!(format!("x{c}y")));
        });
    }
    // The description's limit is 64 KiB: a run of control characters that fills it.
    let run = control_run(64 * 1024 - 2);
    next("64 KiB of control characters in the description", &|b| {
        b.insert("description".into(), json!(format!("<{run}>")));
    });
    next("control characters in every string of attributes", &|b| {
        b.insert(
            "attributes".into(),
            json!({
                "cmd": "rm -rf /\r\n\u{1b}[2J\0",
                "nested": {"list": ["\0", "\u{7f}\u{85}\u{9f}", "\t\n"], "key\u{1}with\rcontrols": "v"},
                "nul\0key": "ok",
            }),
        );
    });
    // Attributes are capped at 64 KiB of compact JSON, where most controls take 6 bytes.
    let small_run = control_run(9_000);
    next("a long run of control characters in attributes", &|b| {
        b.insert("attributes".into(), json!({ "run": small_run }));
    });
    cases
}

/// Identifier bodies that must be refused: (what, field, message, the event).
fn refused_events() -> Vec<(String, &'static str, &'static str, Map<String, Value>)> {
    let mut cases = Vec::new();
    let mut n = 1000;
    for field in IDENTIFIERS {
        for (c, message) in CONTROLS {
            n += 1;
            let mut body = event(n);
            body.insert(field.into(), json!(format!("fw{c}edge")));
            cases.push((format!("{c:?} inside {field}"), field, message, body));
        }
        n += 1;
        let mut body = event(n);
        body.insert(field.into(), json!("fw\r\nNats-Msg-Id: x"));
        cases.push((
            format!("a header injected through {field}"),
            field,
            CONTROL,
            body,
        ));
    }
    cases
}

/// What the 202 body must echo of what was sent: the values, trimmed where DRF trims.
/// `Err` says what differs (a dropped connection would panic the call itself).
fn echoed(
    resp: &Result<Resp, String>,
    sent: &Map<String, Value>,
    what: &str,
) -> Result<(), String> {
    let resp = resp.as_ref().map_err(|e| format!("{what}: {e}"))?;
    if resp.status != StatusCode::ACCEPTED {
        return Err(format!("{what}: {} {}", resp.status, cut(&resp.text)));
    }
    for field in IDENTIFIERS {
        let sent = sent[field].as_str().unwrap_or_default().trim();
        if resp.json[field] != sent {
            return Err(format!("{what}: {field} echoed as {}", resp.json[field]));
        }
    }
    if resp.json["description"] != sent["description"] {
        return Err(format!("{what}: description not echoed as sent"));
    }
    if let Some(attributes) = sent.get("attributes")
        && &resp.json["attributes"] != attributes
    {
        return Err(format!("{what}: attributes not echoed as sent"));
    }
    Ok(())
}

/// A 400 naming only `field`, with `message`.
fn refused(
    resp: &Result<Resp, String>,
    field: &str,
    message: &str,
    what: &str,
) -> Result<(), String> {
    let resp = resp.as_ref().map_err(|e| format!("{what}: {e}"))?;
    let expected = json!({ field: [message] });
    if resp.status != StatusCode::BAD_REQUEST || resp.json != expected {
        return Err(format!(
            "{what}: {} {} (expected 400 {expected})",
            resp.status,
            cut(&resp.text)
        ));
    }
    Ok(())
}

/// A 400 for a batch: one error object per item, in order.
fn refused_items(resp: &Result<Resp, String>, items: &[Value], what: &str) -> Result<(), String> {
    let resp = resp.as_ref().map_err(|e| format!("{what}: {e}"))?;
    let expected = Value::Array(items.to_vec());
    if resp.status != StatusCode::BAD_REQUEST || resp.json != expected {
        return Err(format!(
            "{what}: {} {} (expected 400 {expected})",
            resp.status,
            cut(&resp.text)
        ));
    }
    Ok(())
}

/// The start of a long body, for a failure message.
fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Fails listing every problem, so that one run shows all that is wrong.
fn assert_none(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Posts `body`; `Err` when the api panicked, which a real server answers by dropping the
/// connection.
async fn post(api: &TestApi, token: &str, body: Value) -> Result<Resp, String> {
    AssertUnwindSafe(api.call("POST", "/api/events/", Some(token), Some(body)))
        .catch_unwind()
        .await
        .map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("the connection was dropped (the api panicked: {message})")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_in_identifiers_and_kept_in_free_text() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let mut problems = Vec::new();

    for (what, body) in free_text_events() {
        let resp = post(&api, &token, Value::Object(body.clone())).await;
        problems.extend(echoed(&resp, &body, &what).err());
    }

    for (what, field, message, body) in refused_events() {
        let resp = post(&api, &token, Value::Object(body)).await;
        problems.extend(refused(&resp, field, message, &what).err());
    }

    // Surrounding whitespace is trimmed, as DRF trims it, not refused.
    for (n, padding) in [" ", "\n", "\r\n", "\t", " \r\n\t "]
        .into_iter()
        .enumerate()
    {
        let mut body = event(2000 + n);
        for field in IDENTIFIERS {
            let value = body[field].as_str().unwrap().to_owned();
            body.insert(field.into(), json!(format!("{padding}{value}{padding}")));
        }
        let what = format!("identifiers padded with {padding:?}");
        let resp = post(&api, &token, Value::Object(body.clone())).await;
        problems.extend(echoed(&resp, &body, &what).err());
    }

    // In a batch, each refused item names its field, and nothing of the batch is accepted.
    let good = event(3000);
    let (what, field, message, bad) = refused_events().swap_remove(3);
    let resp = post(&api, &token, json!([good, bad])).await;
    let items = vec![json!({}), json!({ field: [message] })];
    problems.extend(refused_items(&resp, &items, &format!("a batch with {what}")).err());
    assert_none(&problems);
}

fn worker_args(api: &TestApi, name: &str) -> Vec<String> {
    vec![
        name.to_owned(),
        "--nats-url".into(),
        api.nats.url(),
        "--database-url".into(),
        api.db.url().to_owned(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
    ]
}

/// How many messages a stream holds.
async fn messages_in(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bodies_are_stored_as_sent_over_http_and_nats_or_refused_on_both() {
    let api = TestApi::start().await;
    let (_, token) = api.user_with_token("admin", Role::Admin).await;
    let shutdown = CancellationToken::new();
    let ingestor = tokio::spawn(ingestor::run(
        ingestor::Settings::try_parse_from(worker_args(&api, "ingestor")).unwrap(),
        shutdown.clone(),
    ));
    let js = &api.state.js;

    // Over HTTP: accepted and echoed; over NATS, the same bodies under other keys.
    let sent = free_text_events();
    let mut problems = Vec::new();
    for (what, body) in &sent {
        let resp = post(&api, &token, Value::Object(body.clone())).await;
        problems.extend(echoed(&resp, body, what).err());
        let mut over_nats = body.clone();
        let uid = format!("nats-{}", body["uid"].as_str().unwrap());
        over_nats.insert("uid".into(), json!(uid));
        js.publish(
            "events.hostile",
            Value::Object(over_nats).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Only what was accepted can be stored.
    assert_none(&problems);
    // What the api refuses, the ingestor refuses too: each is dead-lettered, none stored.
    let refused = refused_events();
    for (_, _, _, body) in &refused {
        js.publish(
            "events.hostile",
            Value::Object(body.clone()).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let expected = 2 * sent.len();
    let stored = eventually(PATIENCE, "every accepted event to be stored", || {
        let api = &api;
        let token = token.clone();
        async move {
            let resp = api
                .call("GET", "/api/events/?page_size=100", Some(&token), None)
                .await;
            let count = resp.json["count"].as_u64()?;
            assert!(
                count <= expected as u64,
                "{count} stored, {expected} accepted"
            );
            (count == expected as u64)
                .then(|| resp.json["results"].as_array().cloned().unwrap_or_default())
        }
    })
    .await;
    let refused = refused.len() as u64;
    let dead = eventually(
        PATIENCE,
        "every refused event to be dead-lettered",
        || async move {
            let n = messages_in(js, common::subjects::DEADLETTER_STREAM).await;
            (n >= refused).then_some(n)
        },
    )
    .await;
    assert_eq!(dead, refused);

    for (what, body) in &sent {
        let uid = body["uid"].as_str().unwrap();
        for (path, uid) in [("HTTP", uid.to_owned()), ("NATS", format!("nats-{uid}"))] {
            let Some(event) = stored.iter().find(|e| e["uid"] == uid.as_str()) else {
                problems.push(format!("{what} over {path}: not stored"));
                continue;
            };
            for field in ["description", "sourceName", "eventType"] {
                if event[field] != body[field] {
                    problems.push(format!("{what} over {path}: {field} not stored as sent"));
                }
            }
            if event.get("attributes").unwrap_or(&Value::Null)
                != body.get("attributes").unwrap_or(&Value::Null)
            {
                problems.push(format!("{what} over {path}: attributes not stored as sent"));
            }
        }
    }
    assert_none(&problems);

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, ingestor)
        .await
        .expect("the ingestor stopped")
        .unwrap()
        .unwrap();
}
