//! Crashes and restarts: a worker dying anywhere, or the broker going away, loses no event
//! and doubles no event or alert. Restarting is enough to catch up.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::domain::Severity;
use common::storage::{AlertFilter, AlertOrdering, Storage};
use common::subjects;
use futures::StreamExt;
use testkit::eventually;
use threatmon_tests::{PATIENCE, Pipeline, TEST_ACK_WAIT, count_at_least, mixed_events};

/// Pulls one batch from a worker's durable consumer, as the worker itself would.
async fn pull_batch(
    pipeline: &Pipeline,
    stream: &str,
    consumer: jetstream::consumer::pull::Config,
    n: usize,
) -> Vec<jetstream::Message> {
    let stream = pipeline.js.get_stream(stream).await.unwrap();
    let consumer = stream.create_consumer(consumer).await.unwrap();
    let mut batch = consumer.fetch().max_messages(n).messages().await.unwrap();
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message.unwrap());
    }
    assert_eq!(messages.len(), n, "the stream held enough messages");
    messages
}

/// Asserts the end state every crash test must reach: each event once, one alert per
/// escalated event, at least one notification per alert.
async fn assert_exactly_once(pipeline: &Pipeline, events: i64, alerts: i64) {
    pipeline.wait_for_events(events).await;
    pipeline.wait_for_alerts(alerts).await;
    pipeline.wait_drained().await;
    assert_eq!(pipeline.storage.count_events().await.unwrap(), events);
    assert_eq!(pipeline.storage.count_alerts().await.unwrap(), alerts);
    let notified = pipeline.created_notifications().await;
    let stored = pipeline
        .storage
        .list_alerts(
            &AlertFilter::default(),
            AlertOrdering::default(),
            100_000,
            0,
        )
        .await
        .unwrap();
    for alert in stored {
        assert!(
            notified.get(&alert.id).is_some_and(|&n| n >= 1),
            "alert {} was never notified",
            alert.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingestor_that_dies_after_committing_but_before_acking_loses_and_doubles_nothing() {
    let pipeline = Pipeline::start().await;
    let events = mixed_events("crash-ingest", 300);
    pipeline.publish_events(&events).await;

    // The first ingestor stores and escalates a batch, then "dies" before acknowledging it.
    let batch = pull_batch(
        &pipeline,
        subjects::EVENTS_STREAM,
        subjects::ingestor_consumer(TEST_ACK_WAIT),
        100,
    )
    .await;
    let doomed = ingestor::Ingestor::new(
        pipeline.storage.clone(),
        pipeline.js.clone(),
        Severity::High,
    );
    let settlement = doomed.process(batch).await;
    assert_eq!(settlement.ack.len(), 100, "the batch was fully processed");
    drop(settlement);
    assert_eq!(pipeline.storage.count_events().await.unwrap(), 100);

    // A new ingestor gets the unacknowledged batch again, with the rest.
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    assert_exactly_once(&pipeline, 300, count_at_least(&events, Severity::High)).await;
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerter_that_dies_after_notifying_but_before_acking_makes_no_second_alert() {
    let pipeline = Pipeline::start().await;
    let events = mixed_events("crash-alert", 200);
    let escalated = count_at_least(&events, Severity::High);
    let ingestor = pipeline.start_ingestor(Severity::High);
    pipeline.publish_events(&events).await;
    pipeline
        .wait_consumer_drained(subjects::EVENTS_STREAM, subjects::INGESTOR_CONSUMER)
        .await;

    let batch = pull_batch(
        &pipeline,
        subjects::ESCALATIONS_STREAM,
        subjects::alerter_consumer(TEST_ACK_WAIT),
        40,
    )
    .await;
    let doomed = alerter::Alerter::new(pipeline.storage.clone(), pipeline.js.clone());
    let settlement = doomed.process(batch).await;
    assert_eq!(settlement.ack.len(), 40);
    drop(settlement);
    assert_eq!(pipeline.storage.count_alerts().await.unwrap(), 40);

    let alerter = pipeline.start_alerter();
    assert_exactly_once(&pipeline, 200, escalated).await;
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_any_point_and_restarted_lose_and_double_nothing() {
    let pipeline = Pipeline::start().await;
    let events = mixed_events("kill", 4000);
    let escalated = count_at_least(&events, Severity::High);
    pipeline.publish_events(&events).await;

    // Kill both workers a few times while they work, wherever they happen to be.
    let mut ingestor = pipeline.start_ingestor(Severity::High);
    let mut alerter = pipeline.start_alerter();
    for round in 0..3 {
        let before = pipeline.storage.count_events().await.unwrap();
        let storage = &pipeline.storage;
        eventually(PATIENCE, "progress before the kill", || async move {
            let now = storage.count_events().await.ok()?;
            (now > before || now == 4000).then_some(())
        })
        .await;
        ingestor.kill().await;
        alerter.kill().await;
        let stored = pipeline.storage.count_events().await.unwrap();
        eprintln!("kill round {round}: {stored} events stored when killed");
        ingestor = pipeline.start_ingestor(Severity::High);
        alerter = pipeline.start_alerter();
    }

    assert_exactly_once(&pipeline, 4000, escalated).await;
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_workers_carry_on_after_the_nats_server_restarts_mid_stream() {
    let mut pipeline = Pipeline::start().await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    let before = mixed_events("before-restart", 1000);
    let after = mixed_events("after-restart", 1000);

    pipeline.publish_events(&before).await;
    let storage = &pipeline.storage;
    eventually(PATIENCE, "some events stored", || async move {
        (storage.count_events().await.ok()? > 0).then_some(())
    })
    .await;
    pipeline.nats.stop();
    pipeline.nats.restart();
    for (event, msg_id) in &after {
        let subject = subjects::event_subject(event["sourceName"].as_str().unwrap());
        pipeline
            .publish(&subject, Bytes::from(event.to_string()), msg_id.as_deref())
            .await;
    }

    let escalated =
        count_at_least(&before, Severity::High) + count_at_least(&after, Severity::High);
    assert_exactly_once(&pipeline, 2000, escalated).await;
    assert!(ingestor.is_running() && alerter.is_running());
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_asked_to_stop_finishes_its_batch_and_a_successor_resumes() {
    let pipeline = Pipeline::start().await;
    let events = mixed_events("graceful", 2000);
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    pipeline.publish_events(&events).await;

    let storage = &pipeline.storage;
    eventually(PATIENCE, "some events stored", || async move {
        (storage.count_events().await.ok()? > 0).then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        ingestor.stop().await;
        alerter.stop().await;
    })
    .await
    .expect("workers stop promptly when asked");

    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    assert_exactly_once(&pipeline, 2000, count_at_least(&events, Severity::High)).await;
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_asked_to_stop_while_the_broker_is_gone_stop_and_successors_lose_nothing() {
    let mut pipeline = Pipeline::start().await;
    // A backlog, so that both workers have full batches in hand when the broker goes.
    let events = mixed_events("broker-gone", 20_000);
    pipeline.publish_events(&events).await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    let storage = &pipeline.storage;
    eventually(PATIENCE, "both workers busy", || async move {
        (storage.count_alerts().await.ok()? > 0).then_some(())
    })
    .await;

    pipeline.nats.stop();
    // Each worker waits a bounded time for its batches in hand to settle, then stops:
    // a service manager's stop must not wait for the broker to come back.
    tokio::time::timeout(Duration::from_secs(40), async {
        tokio::join!(ingestor.stop(), alerter.stop());
    })
    .await
    .expect("workers stop while the broker is gone");

    pipeline.nats.restart();
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter();
    assert_exactly_once(&pipeline, 20_000, count_at_least(&events, Severity::High)).await;
    ingestor.stop().await;
    alerter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_starting_while_jetstream_is_not_ready_waits_for_it() {
    let mut nats = testkit::NatsServer::start();
    // A server that takes connections but answers no JetStream request yet, as one that is
    // still recovering its streams after a restart.
    nats.restart_without_jetstream();
    let client = common::bus::connect(&nats.url(), "starting", Duration::from_secs(10))
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let db = testkit::TestDb::new().await;
    let storage = Storage::connect_and_migrate(db.url()).await.unwrap();
    let mut declaring = tokio::spawn(async move {
        subjects::ensure_streams_within(&js, &storage, Duration::from_secs(60)).await
    });
    // A single attempt fails at once ("no responders"): the service must still be waiting.
    tokio::time::timeout(Duration::from_secs(3), &mut declaring)
        .await
        .expect_err("the streams cannot be declared without JetStream");
    nats.restart();
    tokio::time::timeout(PATIENCE, declaring)
        .await
        .expect("declared once JetStream is back")
        .unwrap()
        .expect("no error reaches the service");
    let js = jetstream::new(client);
    for stream in [
        subjects::EVENTS_STREAM,
        subjects::ESCALATIONS_STREAM,
        subjects::ALERTS_STREAM,
        subjects::DEADLETTER_STREAM,
    ] {
        js.get_stream(stream).await.unwrap();
    }
}

/// Services started together on a new server all declare the streams at once. nats-server
/// 2.9.10 gets concurrent creations of one stream wrong (the stream is left broken and later
/// requests on it time out), so the services take turns through their shared database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_starting_together_on_a_new_server_leave_every_stream_working() {
    const SERVICES: usize = 6;
    for round in 0..3 {
        let nats = testkit::NatsServer::start();
        let db = testkit::TestDb::new().await;
        Storage::connect_and_migrate(db.url()).await.unwrap();
        let mut starting = Vec::new();
        for service in 0..SERVICES {
            // Each service has its own connections, as separate processes would: the server
            // answers one connection's requests in order, so one client cannot race itself.
            let client = common::bus::connect(&nats.url(), &format!("service-{service}"), PATIENCE)
                .await
                .unwrap();
            let storage = Storage::connect(db.url()).await.unwrap();
            starting.push(tokio::spawn(async move {
                let js = jetstream::new(client);
                subjects::ensure_streams_within(&js, &storage, Duration::from_secs(30)).await
            }));
        }
        for service in starting {
            service
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a service could not start: {e}"));
        }
        // Every stream takes a message and answers for it, as the services will ask.
        let client = common::bus::connect(&nats.url(), "checking", PATIENCE)
            .await
            .unwrap();
        let js = jetstream::new(client);
        for (stream, subject) in [
            (subjects::EVENTS_STREAM, "events.check"),
            (subjects::ESCALATIONS_STREAM, "escalations.high"),
            (subjects::ALERTS_STREAM, "alerts.created.high"),
            (subjects::DEADLETTER_STREAM, "deadletter.check"),
        ] {
            let ack = tokio::time::timeout(Duration::from_secs(10), async {
                js.publish(subject, Bytes::from_static(b"{}")).await?.await
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: {stream} did not answer a publish"))
            .unwrap_or_else(|e| panic!("round {round}: {stream} refused a publish: {e}"));
            assert_eq!(ack.stream, stream, "round {round}");
            let mut info = js.get_stream(stream).await.unwrap();
            let state = info.info().await.unwrap().state.clone();
            assert_eq!(
                state.messages, 1,
                "round {round}: {stream} holds the one message"
            );
        }
    }
}
