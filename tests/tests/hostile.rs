//! Hostile input on the bus: no message a sensor can send stops the pipeline. Each one is
//! either stored exactly as sent or dead-lettered with a readable, header-safe reason; a
//! panicking step costs only its message; a message that keeps failing is dead-lettered
//! after `MAX_DELIVER` deliveries, while a database outage, however long, dead-letters
//! nothing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use common::bus::{MSG_ID_HEADER, REASON_HEADER};
use common::domain::Severity;
use common::storage::Storage;
use common::subjects;
use common::worker::{self, Source};
use serde_json::{Value, json};
use testkit::{DbOutage, eventually};
use threatmon_tests::{
    PATIENCE, Pipeline, TEST_ACK_WAIT, count_at_least, mixed_events, publish_with_raw_header,
};
use tokio_util::sync::CancellationToken;

/// A HIGH event from `fw1` with these fields replaced.
fn event_with(fields: Value) -> Value {
    let mut event = json!({
        "sourceName": "fw1", "eventType": "port_scan", "severity": "HIGH",
        "description": "probe", "uid": uuid_like("base"),
    });
    for (key, value) in fields.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

fn uuid_like(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// Publishes `body` to `subject` with an optional `Nats-Msg-Id` value, built on the client's
/// fallible path, and waits for the stream's acknowledgement.
async fn publish_raw(pipeline: &Pipeline, subject: &str, body: Bytes, msg_id: Option<&str>) {
    let mut headers = HeaderMap::new();
    if let Some(id) = msg_id {
        let value: HeaderValue = id.parse().expect("the client accepts this header value");
        headers.insert(MSG_ID_HEADER, value);
    }
    pipeline
        .js
        .publish_with_headers(subject.to_owned(), headers, body)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The `deadletter.ingest` letters, with their reasons.
async fn ingest_dead_letters(pipeline: &Pipeline) -> Vec<(Bytes, String)> {
    pipeline
        .read_stream(subjects::DEADLETTER_STREAM, "deadletter.ingest")
        .await
        .into_iter()
        .map(|letter| {
            let reason = letter
                .headers
                .as_ref()
                .and_then(|h| h.get(REASON_HEADER))
                .map(|v| v.as_str().to_owned())
                .expect("a dead letter carries its reason");
            (letter.payload.clone(), reason)
        })
        .collect()
}

fn assert_header_safe(reason: &str) {
    assert!(
        !reason.chars().any(char::is_control),
        "reason {reason:?} holds a control character"
    );
    assert!(reason.len() <= 2048 + '…'.len_utf8(), "reason is bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sensor_messages_are_stored_as_sent_or_dead_lettered_and_never_stop_the_pipeline() {
    let pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();

    // Identifiers with control characters inside: refused, naming the field.
    let mut refused: Vec<(Value, Option<String>, &str)> = Vec::new();
    for bad in [
        "a\r\nb",
        "a\u{0}b",
        "a\u{7f}b",
        "a\u{1b}[31mb",
        "a\u{85}b",
        "a\u{fffd}b",
    ] {
        for field in ["sourceName", "eventType", "uid"] {
            refused.push((event_with(json!({ field: bad })), None, field));
        }
    }
    refused.push((
        event_with(json!({"severity": "SEV\r\nERE"})),
        None,
        "severity",
    ));
    refused.push((
        event_with(json!({"description": "\u{1}".repeat(64 * 1024 + 1)})),
        None,
        "description",
    ));
    // Idempotency headers with control characters the client lets through.
    for bad in ["id\u{0}x", "id\u{7f}x", "id\u{1}x"] {
        refused.push((
            event_with(json!({"uid": null})),
            Some(bad.to_owned()),
            MSG_ID_HEADER,
        ));
    }

    // Free text may hold any character, and is stored exactly as sent.
    let all_controls: String = (0u32..0x20)
        .chain(0x7f..0xa0)
        .filter_map(char::from_u32)
        .collect();
    let mut big = String::from("start");
    while big.len() + all_controls.len() < 64 * 1024 - 3 {
        big.push_str(&all_controls);
    }
    big.push_str("end");
    let stored_as_sent = vec![
        event_with(
            json!({"uid": uuid_like("text-crlf"), "description": "line 1\r\nline 2\u{0}\u{7f} done"}),
        ),
        event_with(json!({"uid": uuid_like("text-big"), "description": big})),
        event_with(json!({"uid": uuid_like("attrs"), "attributes": {
            "cmd": "rm -rf /\r\n\u{0}\u{7f}", "key\u{0}\r\n": ["\u{1b}[2J", {"deep": "\u{85}"}],
        }})),
    ];

    for (event, msg_id, _) in &refused {
        publish_raw(
            &pipeline,
            "events.fw1",
            Bytes::from(event.to_string()),
            msg_id.as_deref(),
        )
        .await;
    }
    // Not UTF-8, not JSON at all.
    let not_utf8 = Bytes::from_static(b"{\"sourceName\": \"\xff\xfe\", \"severity\": \"HIGH\"}");
    publish_raw(&pipeline, "events.fw1", not_utf8.clone(), None).await;
    // A lone CR in the idempotency header, past the client's checks.
    let raw_body = event_with(json!({"uid": null})).to_string();
    publish_with_raw_header(
        pipeline.nats.port(),
        "events.fw1",
        b"raw\rid",
        raw_body.as_bytes(),
    )
    .await;
    for event in &stored_as_sent {
        publish_raw(
            &pipeline,
            "events.fw1",
            Bytes::from(event.to_string()),
            None,
        )
        .await;
    }
    let valid = event_with(json!({"uid": uuid_like("valid-after"), "severity": "HIGH"}));
    publish_raw(
        &pipeline,
        "events.fw1",
        Bytes::from(valid.to_string()),
        None,
    )
    .await;

    // The valid event after all of it is stored and alerted.
    pipeline
        .wait_for_events(stored_as_sent.len() as i64 + 1)
        .await;
    pipeline
        .wait_for_alerts(stored_as_sent.len() as i64 + 1)
        .await;
    pipeline.wait_drained().await;
    assert!(ingestor.is_running(), "the ingestor survived every message");
    assert!(alerter.is_running(), "the alerter survived every message");

    for event in stored_as_sent.iter().chain([&valid]) {
        let uid = event["uid"].as_str().unwrap();
        let stored = pipeline.storage.event_by_uid(uid).await.unwrap().unwrap();
        assert_eq!(stored.description, event["description"].as_str().unwrap());
        assert_eq!(
            stored.attributes.map(Value::Object),
            event.get("attributes").cloned(),
            "attributes of {uid} are stored as sent"
        );
    }

    let letters = ingest_dead_letters(&pipeline).await;
    // Every refused message, the one that is not UTF-8, and the raw-header one.
    assert_eq!(letters.len(), refused.len() + 2, "{letters:#?}");
    for ((event, _, field), (payload, reason)) in refused.iter().zip(&letters) {
        assert_eq!(
            payload,
            &Bytes::from(event.to_string()),
            "kept byte for byte"
        );
        assert_header_safe(reason);
        assert!(reason.contains(field), "reason {reason:?} names {field}");
    }
    let (payload, reason) = &letters[refused.len()];
    assert_eq!(payload, &not_utf8);
    assert!(reason.starts_with("not JSON"), "{reason}");
    let (payload, reason) = &letters[refused.len() + 1];
    assert_eq!(payload.as_ref(), raw_body.as_bytes());
    assert_header_safe(reason);
    assert!(reason.contains(MSG_ID_HEADER), "{reason}");

    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_panics_on_one_message_dead_letters_it_and_stores_the_rest_of_its_batch() {
    let pipeline = Pipeline::start().await;
    let marker = "this description makes the step panic";
    let mut events = mixed_events("panic", 200);
    events[137].0["description"] = json!(marker);
    let (culprit, culprit_key) = events[137].clone();
    // All published before the worker starts, so that they come in one batch.
    pipeline.publish_events(&events).await;

    let settings = pipeline.ingestor_settings(Severity::High);
    let connected = worker::connect("ingestor", &settings.connections)
        .await
        .unwrap();
    let ingestor = ingestor::Ingestor::new(
        connected.storage.clone(),
        connected.js.clone(),
        Severity::High,
    )
    .with_max_deliver(2)
    .panicking_on_description(marker);
    let source = Source {
        stream: subjects::EVENTS_STREAM,
        consumer: subjects::ingestor_consumer(TEST_ACK_WAIT),
        batch_size: 1000,
        batches_in_flight: 2,
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker::run_worker(
        "ingestor",
        connected,
        source,
        None,
        shutdown.clone(),
        move |batch| {
            let ingestor = ingestor.clone();
            async move { ingestor.handle_batch(batch).await }
        },
    ));

    pipeline.wait_for_events(199).await;
    let js = &pipeline;
    let letters = eventually(PATIENCE, "the culprit dead-lettered", || async move {
        let letters = ingest_dead_letters(js).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    pipeline
        .wait_consumer_drained(subjects::EVENTS_STREAM, subjects::INGESTOR_CONSUMER)
        .await;
    assert_eq!(letters.len(), 1, "only the culprit: {letters:#?}");
    let (payload, reason) = &letters[0];
    assert_eq!(payload, &Bytes::from(culprit.to_string()));
    assert!(reason.contains("panicked: test hook"), "{reason}");
    assert!(reason.starts_with("gave up after 2 deliveries"), "{reason}");
    assert_eq!(pipeline.storage.count_events().await.unwrap(), 199);
    let key = culprit_key.unwrap();
    assert!(pipeline.storage.event_by_uid(&key).await.unwrap().is_none());

    assert!(!running.is_finished(), "the worker survived the panic");
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Puts a row in `events` that our code would never write: attributes that are not JSON.
async fn store_corrupt_event(storage: &Storage, uid: &str) {
    let sql = "INSERT INTO events (uid, source_name, event_type, severity, description, \
               occurred_at, attributes, created_at) VALUES ($1, 'fw1', 'x', 3, '', NULL, \
               '{not json', 0)";
    match storage {
        Storage::Sqlite(pool, ..) => {
            sqlx::query(sql).bind(uid).execute(pool).await.unwrap();
        }
        Storage::Postgres(pool) => {
            sqlx::query(sql).bind(uid).execute(pool).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_after_max_deliver_deliveries() {
    let pipeline = Pipeline::start().await;
    let corrupt_uid = uuid_like("corrupt");
    store_corrupt_event(&pipeline.storage, &corrupt_uid).await;
    let mut settings = pipeline.ingestor_settings(Severity::High);
    settings.pulling.max_deliver = 3;
    let ingestor = pipeline.start_ingestor_with(settings);
    let alerter = pipeline.start_alerter();

    // A repeat of the corrupt row's key: storing finds it and cannot read it back, every time.
    let repeat = event_with(json!({"uid": corrupt_uid}));
    let events = mixed_events("around-corrupt", 30);
    pipeline.publish_events(&events[..15]).await;
    pipeline.publish_event(&repeat, None).await;
    pipeline.publish_events(&events[15..]).await;

    // The corrupt row was put there behind the counts' back: the count is of the 30.
    pipeline.wait_for_events(30).await;
    pipeline
        .wait_for_alerts(count_at_least(&events, Severity::High))
        .await;
    let js = &pipeline;
    let letters = eventually(
        PATIENCE,
        "the failing message dead-lettered",
        || async move {
            let letters = ingest_dead_letters(js).await;
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await;
    pipeline.wait_drained().await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let (payload, reason) = &letters[0];
    assert_eq!(payload, &Bytes::from(repeat.to_string()));
    assert!(
        reason.starts_with("gave up after 3 deliveries: corrupt row"),
        "{reason}"
    );
    assert!(ingestor.is_running());
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_retries_dead_letters_nothing_and_loses_nothing() {
    const MAX_DELIVER: u32 = 3;
    let pipeline = Pipeline::start().await;
    let mut outage = DbOutage::new(&pipeline.db).await;
    let mut ingestor_settings = pipeline.ingestor_settings(Severity::High);
    ingestor_settings.connections.database_url = outage.url().to_owned();
    ingestor_settings.pulling.max_deliver = MAX_DELIVER;
    let mut alerter_settings = pipeline.alerter_settings();
    alerter_settings.connections.database_url = outage.url().to_owned();
    alerter_settings.pulling.max_deliver = MAX_DELIVER;
    let ingestor = pipeline.start_ingestor_with(ingestor_settings);
    let alerter = pipeline.start_alerter_with(alerter_settings);

    let before = mixed_events("before-outage", 20);
    pipeline.publish_events(&before).await;
    pipeline.wait_for_events(20).await;

    outage.begin().await;
    let during = mixed_events("during-outage", 50);
    pipeline.publish_events(&during).await;
    // The outage lasts until every message published during it has been delivered more
    // than MAX_DELIVER times (JetStream redelivers each after ack_wait), which is longer
    // than MAX_DELIVER × the back-off.
    let js = &pipeline.js;
    let enough = 20 + 50 * (u64::from(MAX_DELIVER) + 1);
    eventually(
        PATIENCE * 2,
        "deliveries during the outage beyond MAX_DELIVER",
        || async move {
            let stream = js.get_stream(subjects::EVENTS_STREAM).await.ok()?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(subjects::INGESTOR_CONSUMER)
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.delivered.consumer_sequence >= enough).then_some(())
        },
    )
    .await;
    assert_eq!(
        pipeline.storage.count_events().await.unwrap(),
        20,
        "nothing was stored during the outage"
    );
    outage.end().await;

    let all: Vec<_> = before.iter().chain(&during).cloned().collect();
    pipeline.wait_for_events(70).await;
    pipeline
        .wait_for_alerts(count_at_least(&all, Severity::High))
        .await;
    pipeline.wait_drained().await;
    let letters = pipeline
        .read_stream(subjects::DEADLETTER_STREAM, subjects::DEADLETTER_ALL)
        .await;
    assert!(letters.is_empty(), "an outage dead-letters nothing");
    assert!(ingestor.is_running() && alerter.is_running());
    ingestor.stop().await;
    alerter.stop().await;
    // The outage's switch outlives the workers that used it.
    drop(outage);
    let _ = Duration::ZERO;
}
