//! Property test of the ingest step against a real nats-server and database: whatever a
//! sensor publishes (any bytes, any headers the client can send, any JSON with any strings in
//! any field), the ingestor survives it; the message is stored once or dead-lettered with a
//! header-safe reason (its payload kept byte for byte); and a valid event sent after it is
//! stored.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use common::bus::{MSG_ID_HEADER, REASON_HEADER};
use common::domain::{EventIn, Severity, identifier_problem};
use common::subjects;
use proptest::prelude::*;
use serde_json::json;
use testkit::eventually;
use testkit::strategies::{EVENT_FIELDS, json_value, nasty_string};
use threatmon_tests::{PATIENCE, Pipeline, RunningWorker};

/// A message body: arbitrary bytes, or an event whose every field may be replaced by
/// anything (so that many are valid and many are almost valid).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let field = prop::sample::select(EVENT_FIELDS.to_vec());
    let event = prop::collection::vec((field, json_value()), 0..4).prop_map(|changes| {
        let mut event = json!({"sourceName": "fw1", "eventType": "port_scan", "severity": "HIGH"});
        for (field, value) in changes {
            event[field] = value;
        }
        event.to_string().into_bytes()
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        4 => event,
    ]
}

/// Headers the client can send: an optional `Nats-Msg-Id` and a few others, any value the
/// client's fallible parser accepts.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![Just(MSG_ID_HEADER.to_owned()), "[A-Za-z][A-Za-z0-9-]{0,12}",];
    prop::collection::vec((name, nasty_string()), 0..3)
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    pipeline: Pipeline,
    _ingestor: RunningWorker,
    cases: AtomicUsize,
}

impl Harness {
    fn new() -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (pipeline, ingestor) = runtime.block_on(async {
            let pipeline = Pipeline::start().await;
            let mut settings = pipeline.ingestor_settings(Severity::High);
            // Give up at the first non-transient failure: each case settles at once.
            settings.pulling.max_deliver = 1;
            let ingestor = pipeline.start_ingestor_with(settings);
            (pipeline, ingestor)
        });
        Harness {
            runtime,
            pipeline,
            _ingestor: ingestor,
            cases: AtomicUsize::new(0),
        }
    }

    async fn dead_letters(&self) -> u64 {
        let mut stream = self
            .pipeline
            .js
            .get_stream(subjects::DEADLETTER_STREAM)
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// One case: publish the hostile message, then a valid event, and check both outcomes.
    async fn check(&self, payload: Vec<u8>, header_pairs: Vec<(String, String)>) {
        let case = self.cases.fetch_add(1, Ordering::Relaxed);
        let pipeline = &self.pipeline;
        let mut headers = HeaderMap::new();
        let mut msg_id = None;
        for (name, value) in header_pairs {
            let Ok(value) = value.parse::<HeaderValue>() else {
                continue; // The client refuses it: no sensor can send it this way.
            };
            if name == MSG_ID_HEADER {
                msg_id = Some(value.as_str().to_owned());
            }
            headers.insert(name.as_str(), value);
        }
        // What the message would be stored under if it were stored: it is a duplicate when
        // something is stored under that key already.
        let key = msg_id
            .filter(|id| !id.is_empty())
            .or_else(|| EventIn::parse(&payload).ok().and_then(|event| event.uid));
        let duplicate = match &key {
            // A key that is not a valid identifier was never stored (and PostgreSQL cannot
            // even be asked about one with NUL in it).
            Some(key) if identifier_problem(key).is_none() => {
                pipeline.storage.event_by_uid(key).await.unwrap().is_some()
            }
            _ => false,
        };
        let events_before = pipeline.storage.count_events().await.unwrap();
        let letters_before = self.dead_letters().await;

        let payload = Bytes::from(payload);
        let published = pipeline
            .js
            .publish_with_headers("events.fw1", headers, payload.clone())
            .await
            .unwrap()
            .await;
        let Ok(ack) = published else {
            // The server refused it (headers over 64 KiB): no sensor can send it either.
            return;
        };
        // A repeat of a recent Nats-Msg-Id never reaches the ingestor: the stream drops it.
        let duplicate = duplicate || ack.duplicate;
        let marker = format!("valid-after-case-{case}");
        pipeline
            .publish_event(
                &json!({"sourceName": "fw1", "eventType": "check", "severity": "LOW",
                        "uid": marker}),
                None,
            )
            .await;
        let storage = &pipeline.storage;
        let marker = &marker;
        eventually(PATIENCE, "the valid event after it stored", || async move {
            storage.event_by_uid(marker).await.ok()?.map(|_| ())
        })
        .await;
        pipeline
            .wait_consumer_drained(subjects::EVENTS_STREAM, subjects::INGESTOR_CONSUMER)
            .await;

        let stored = pipeline.storage.count_events().await.unwrap() - events_before - 1;
        let dead = self.dead_letters().await - letters_before;
        match (stored, dead) {
            (1, 0) => assert!(!duplicate, "a duplicate key was stored twice"),
            (0, 0) => assert!(
                duplicate,
                "the message was neither stored nor dead-lettered"
            ),
            (0, 1) => {
                let stream = pipeline
                    .js
                    .get_stream(subjects::DEADLETTER_STREAM)
                    .await
                    .unwrap();
                let letter = stream
                    .get_last_raw_message_by_subject("deadletter.ingest")
                    .await
                    .unwrap();
                assert_eq!(letter.payload, payload, "the dead letter keeps the message");
                let headers = letter.headers;
                let reason = headers.get(REASON_HEADER).unwrap().as_str();
                assert!(!reason.is_empty());
                assert!(
                    !reason.chars().any(char::is_control),
                    "reason {reason:?} is not header-safe"
                );
            }
            other => panic!("stored and dead-lettered {other:?} for one message"),
        }
    }
}

#[test]
fn whatever_a_sensor_publishes_is_stored_once_or_dead_lettered_and_later_events_are_stored() {
    let harness = Harness::new();
    let config = ProptestConfig {
        // Each case is a round trip through the real broker and database.
        cases: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |(payload in payload(), header_pairs in headers())| {
        harness
            .runtime
            .block_on(harness.check(payload, header_pairs));
    });
}
