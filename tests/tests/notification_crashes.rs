//! Notification delivery through a crash and past a hanging receiver (issue 13, points 3 and
//! 5), on the backend under test, with real receivers (tests/receivers/webhook.py: a Python
//! process on a loopback port verifying each signature with the Standard Webhooks reference
//! library) and the alerter as a process, killed with SIGKILL:
//! - killed in the middle of 1,000 deliveries (500 alerts × 2 routes) and restarted, it
//!   delivers every (alert, route), and only the attempts in flight at the kill reach their
//!   receiver twice, with the same `webhook-id`;
//! - a receiver that never answers does not delay another route's deliveries, and its own
//!   attempts are cut at `NOTIFY_TIMEOUT_SECS`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::domain::{RouteSpec, Severity, new_secret};
use common::storage::{
    AlertFilter, AlertOrdering, AttemptOutcome, DeliveryAttempt, DeliveryRecord, Storage,
};
use common::subjects;
use serde_json::{Value, json};
use testkit::eventually;
use threatmon_tests::receivers::Receiver;
use threatmon_tests::{PATIENCE, Pipeline, TEST_ACK_WAIT, binary, event};

/// `NOTIFY_CONCURRENCY_PER_ROUTE` of the alerters these tests run (the default, said out loud:
/// the bounds below are counted in it).
const PER_ROUTE: usize = 4;

/// One test at a time: the second measures delays, which the first's 1,000 deliveries (an
/// alerter, two receivers and the database all busy) would inflate.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An alerter process (`ALERT_FOLD_KEY=none`: one alert per escalated event), killed with
/// SIGKILL when dropped.
struct AlerterProcess(Child);

impl AlerterProcess {
    fn start(pipeline: &Pipeline, notify_timeout_secs: u64) -> AlerterProcess {
        let child = Command::new(binary("alerter"))
            .env("NATS_URL", pipeline.nats.url())
            .env("DATABASE_URL", pipeline.db.url())
            .env("ACK_WAIT_SECS", TEST_ACK_WAIT.as_secs().to_string())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("ALERT_FOLD_KEY", "none")
            .env("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")
            .env("NOTIFY_CONCURRENCY_PER_ROUTE", PER_ROUTE.to_string())
            .env("NOTIFY_TIMEOUT_SECS", notify_timeout_secs.to_string())
            .env("RUST_LOG", "warn")
            // No .env of the workspace: only what is set here.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the alerter");
        AlerterProcess(child)
    }

    /// `kill -9`, and waits until it is gone.
    fn kill(mut self) {
        self.0.kill().expect("SIGKILL to the alerter");
        self.0.wait().expect("the alerter is reaped");
    }
}

impl Drop for AlerterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the alerter has declared its `notifier` consumer, which takes only the alert
/// messages published after it is made (`DeliverPolicy::New`).
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

fn webhook_spec(name: &str, url: &str, secret: &str, min: Severity, enabled: bool) -> RouteSpec {
    let body = json!({"name": name, "kind": "webhook", "url": url, "secret": secret,
        "min_severity": min.as_str(), "enabled": enabled});
    RouteSpec::parse(body.as_object().unwrap(), None).unwrap()
}

async fn all_alert_ids(storage: &Storage) -> Vec<i64> {
    let mut ids: Vec<i64> = storage
        .list_alerts(
            &AlertFilter::default(),
            AlertOrdering::default(),
            100_000,
            0,
        )
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// The requests a receiver answered 2xx, by alert id.
fn answered_by_alert(receiver: &Receiver) -> HashMap<i64, Vec<Value>> {
    let mut by_alert: HashMap<i64, Vec<Value>> = HashMap::new();
    for request in receiver.received() {
        if request["status"]
            .as_i64()
            .is_some_and(|s| (200..300).contains(&s))
        {
            let alert = request["body"]["alert"]["id"].as_i64().unwrap();
            by_alert.entry(alert).or_default().push(request);
        }
    }
    by_alert
}

const ALERTS: usize = 500;
/// Each request held this long by its receiver, so that attempts are in flight at the kill.
const RECEIVER_DELAY_MS: &str = "25";
/// Short, so that the killed alerter's leases (the timeout and 5 s) run out soon.
const KILL_TEST_TIMEOUT_SECS: u64 = 3;

/// Point 3: `kill -9` of the alerter while it delivers 500 alerts to two webhook routes (each
/// route's attempts in parallel, [`PER_ROUTE`] at once), then a restart. Every (alert, route)
/// reaches its receiver; one reaches it twice only if its attempt was in flight at the kill
/// (at most [`PER_ROUTE`] a route), then with the same `webhook-id`; the delivery log ends
/// `delivered` for each, and the attempts the kill cut are `interrupted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerter_killed_during_1000_deliveries_delivers_each_once_but_those_in_flight() {
    let _turn = ONE_AT_A_TIME.lock().await;
    binary("alerter");
    let began = Instant::now();
    let pipeline = Pipeline::start().await;
    let mut receivers = Vec::new();
    let mut routes = Vec::new();
    for name in ["soc-a", "soc-b"] {
        let secret = new_secret().unwrap();
        let receiver = Receiver::webhook(&secret, &["--delay-ms", RECEIVER_DELAY_MS]).await;
        let spec = webhook_spec(name, &receiver.url(), &secret, Severity::High, true);
        routes.push(
            pipeline
                .storage
                .create_route(&spec, Utc::now())
                .await
                .unwrap()
                .id,
        );
        receivers.push(receiver);
    }
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = AlerterProcess::start(&pipeline, KILL_TEST_TIMEOUT_SECS);
    wait_for_notifier(&pipeline).await;
    let events: Vec<(Value, Option<String>)> = (0..ALERTS)
        .map(|i| {
            let severity = [Severity::High, Severity::Critical][i % 2];
            (event(i, severity), Some(format!("notify-kill-{i}")))
        })
        .collect();
    pipeline.publish_events(&events).await;

    let receivers = &receivers;
    let answered = || -> usize {
        receivers
            .iter()
            .map(|r| answered_by_alert(r).values().map(Vec::len).sum::<usize>())
            .sum()
    };
    let at_kill = eventually(PATIENCE, "200 deliveries answered", || async move {
        let n = answered();
        (n >= 200).then_some(n)
    })
    .await;
    alerter.kill();
    let dead = Utc::now();
    assert!(
        at_kill < 2 * ALERTS,
        "the kill landed mid-way: {at_kill} answered"
    );
    let killed_after = began.elapsed();

    let restarted = Utc::now();
    let alerter = AlerterProcess::start(&pipeline, KILL_TEST_TIMEOUT_SECS);
    pipeline.wait_for_alerts(ALERTS as i64).await;
    let storage = &pipeline.storage;
    eventually(
        PATIENCE,
        "every (alert, route) answered 2xx and no delivery pending",
        || async move {
            if storage.oldest_pending_delivery().await.ok()?.is_some() {
                return None;
            }
            let pairs: usize = receivers.iter().map(|r| answered_by_alert(r).len()).sum();
            (pairs == 2 * ALERTS).then_some(())
        },
    )
    .await;
    pipeline.wait_drained().await;
    pipeline
        .wait_consumer_drained(subjects::ALERTS_STREAM, subjects::NOTIFIER_CONSUMER)
        .await;
    let done_after = began.elapsed();

    let alert_ids = all_alert_ids(storage).await;
    assert_eq!(alert_ids.len(), ALERTS);
    let mut webhook_ids = HashSet::new();
    let mut twice = [0usize; 2];
    let mut interrupted = [0usize; 2];
    for (i, (receiver, &route)) in receivers.iter().zip(&routes).enumerate() {
        let all = receiver.received();
        for request in &all {
            assert_eq!(
                request["verified"], true,
                "the Standard Webhooks library verifies every request: {request}"
            );
            assert_eq!(request["status"], 200, "{request}");
            assert_eq!(request["body"]["type"], "alert.created", "{request}");
        }
        let by_alert = answered_by_alert(receiver);
        let unknown: Vec<&i64> = by_alert
            .keys()
            .filter(|a| alert_ids.binary_search(a).is_err())
            .collect();
        assert!(unknown.is_empty(), "requests for no alert: {unknown:?}");
        for &alert in &alert_ids {
            let requests = by_alert
                .get(&alert)
                .unwrap_or_else(|| panic!("alert {alert} never reached route {route}"));
            let deliveries: Vec<DeliveryRecord> = storage
                .alert_deliveries(alert)
                .await
                .unwrap()
                .into_iter()
                .filter(|d| d.route_id == route)
                .collect();
            assert_eq!(deliveries.len(), 1, "one delivery: {deliveries:#?}");
            let delivery = &deliveries[0];
            assert_eq!(delivery.state, "delivered", "{delivery:#?}");
            assert!(
                webhook_ids.insert(delivery.webhook_id.clone()),
                "webhook-id {} used by two deliveries",
                delivery.webhook_id
            );
            for request in requests {
                assert_eq!(
                    request["webhook_id"],
                    delivery.webhook_id.as_str(),
                    "every request of (alert {alert}, route {route}) carries its webhook-id"
                );
            }

            let log: Vec<DeliveryAttempt> = storage
                .alert_attempts(alert, 100, 0)
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.route_id == route)
                .collect();
            let (last, earlier) = log.split_last().expect("attempts logged");
            assert_eq!(last.outcome, AttemptOutcome::Delivered, "{log:#?}");
            assert_eq!(last.status_code, Some(200), "{log:#?}");
            for (n, attempt) in log.iter().enumerate() {
                assert_eq!(attempt.attempt, n as i64 + 1, "{log:#?}");
                assert_eq!(attempt.webhook_id, delivery.webhook_id);
            }
            for cut in earlier {
                // Only the kill makes an attempt end otherwise: these receivers never fail.
                assert_eq!(cut.outcome, AttemptOutcome::Interrupted, "{log:#?}");
                assert!(
                    cut.started_at < dead,
                    "an interrupted attempt began before the kill: {log:#?}"
                );
                assert!(
                    cut.error.as_deref().is_some_and(|e| e.contains("stopped")),
                    "{log:#?}"
                );
                interrupted[i] += 1;
            }
            if !earlier.is_empty() {
                assert!(
                    last.started_at >= restarted,
                    "attempted again by the restarted alerter: {log:#?}"
                );
            }
            assert!(
                requests.len() <= log.len(),
                "a request for each attempt at most: {requests:#?} {log:#?}"
            );
            if requests.len() > 1 {
                // Answered 2xx by the receiver, but the kill came before it was recorded.
                assert_eq!(requests.len(), 2, "{requests:#?}");
                assert!(
                    !earlier.is_empty(),
                    "twice only after an interrupted attempt: {requests:#?} {log:#?}"
                );
                // When each was sent, by the sender's clock (the signed body's timestamp): the
                // receiver may read a request after its sender died.
                let sent: Vec<DateTime<Utc>> = requests
                    .iter()
                    .map(|r| {
                        DateTime::parse_from_rfc3339(r["body"]["timestamp"].as_str().unwrap())
                            .unwrap()
                            .with_timezone(&Utc)
                    })
                    .collect();
                assert!(
                    sent[0] < dead && sent[1] >= restarted,
                    "once by the killed alerter (dead at {dead}), once by the restarted one \
                     (started at {restarted}): {requests:#?}"
                );
                twice[i] += 1;
            }
        }
    }
    assert_eq!(webhook_ids.len(), 2 * ALERTS);
    eprintln!(
        "{at_kill} of {} answered at the kill ({killed_after:?} in); all delivered after \
         {done_after:?}; interrupted per route {interrupted:?}, answered twice per route \
         {twice:?}",
        2 * ALERTS
    );
    for (cut, doubled) in interrupted.iter().zip(&twice) {
        assert!(
            *cut <= PER_ROUTE && *doubled <= PER_ROUTE,
            "at most NOTIFY_CONCURRENCY_PER_ROUTE ({PER_ROUTE}) attempts of a route were in \
             flight at the kill: {interrupted:?} interrupted, {twice:?} answered twice"
        );
    }
    assert!(
        interrupted.iter().sum::<usize>() >= 1,
        "the kill cut no attempt: with receivers holding each request {RECEIVER_DELAY_MS} ms \
         and deliveries left, some must have been in flight"
    );
    alerter.kill();
    ingestor.stop().await;
}

/// How long the hanging receiver's attempts last: longer than the test needs to see every
/// delivery of the other route, short enough to see them cut.
const HANG_TEST_TIMEOUT_SECS: u64 = 8;
/// Alerts delivered to route B alone, first: its dispatch delay with nothing hanging.
const BASELINE_ALERTS: usize = 10;
/// Alerts delivered to route B while route A's attempts hang.
const DURING_ALERTS: usize = 20;
/// What the acceptance allows a hanging route to add to another's delivery.
const MAX_ADDED_DELAY: Duration = Duration::from_millis(100);

/// Publishes `n` CRITICAL events one at a time, each after route `route` has delivered the
/// last, all before `deadline`; returns each delivery's dispatch delay: from when it was
/// recorded to when its (first) attempt began. One at a time, so that no delivery waits for
/// the route's own earlier ones (its concurrency): what is left is the dispatcher's delay.
async fn deliver_one_by_one(
    pipeline: &Pipeline,
    route: i64,
    first: usize,
    n: usize,
    deadline: Instant,
    phase: &str,
) -> Vec<Duration> {
    let storage = &pipeline.storage;
    let mut delays = Vec::with_capacity(n);
    for i in first..first + n {
        let before = storage.count_alerts().await.unwrap();
        pipeline
            .publish_event(
                &event(i, Severity::Critical),
                Some(&format!("notify-hang-{i}")),
            )
            .await;
        let what = format!("route {route} to deliver the alert of event {i} ({phase})");
        let left = deadline.saturating_duration_since(Instant::now());
        let (delivery, attempts) = eventually(left, &what, || async move {
            if storage.count_alerts().await.ok()? <= before {
                return None;
            }
            let alert = storage
                .list_alerts(&AlertFilter::default(), AlertOrdering::NewestFirst, 1, 0)
                .await
                .ok()?
                .first()?
                .id;
            let delivery = storage
                .alert_deliveries(alert)
                .await
                .ok()?
                .into_iter()
                .find(|d| d.route_id == route && d.state == "delivered")?;
            let attempts: Vec<DeliveryAttempt> = storage
                .alert_attempts(alert, 100, 0)
                .await
                .ok()?
                .into_iter()
                .filter(|a| a.route_id == route)
                .collect();
            Some((delivery, attempts))
        })
        .await;
        assert_eq!(
            attempts.len(),
            1,
            "delivered at the first attempt: {attempts:#?}"
        );
        assert_eq!(attempts[0].outcome, AttemptOutcome::Delivered);
        delays.push(
            (attempts[0].started_at - delivery.created_at)
                .to_std()
                .unwrap_or_default(),
        );
    }
    delays
}

fn median(delays: &[Duration]) -> Duration {
    let mut sorted = delays.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// Point 5: route A's receiver takes requests and never answers, route B's answers at once.
/// With A's attempts hanging ([`PER_ROUTE`] of them, all A may have at once), B delivers
/// every alert, each within [`MAX_ADDED_DELAY`] of its delay with A out of the way, and all
/// before A's first attempts end; then those are cut at `NOTIFY_TIMEOUT_SECS`, to be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_another_routes_deliveries() {
    let _turn = ONE_AT_A_TIME.lock().await;
    binary("alerter");
    let began = Instant::now();
    let pipeline = Pipeline::start().await;
    let storage = &pipeline.storage;
    let (hang_secret, fine_secret) = (new_secret().unwrap(), new_secret().unwrap());
    let hanging = Receiver::webhook(&hang_secret, &["--hang", "--log-hung"]).await;
    let fine = Receiver::webhook(&fine_secret, &[]).await;
    // A takes HIGH and CRITICAL alerts (disabled while B's baseline is measured), B CRITICAL
    // ones: HIGH alerts fill A's slots without B.
    let a_spec = |enabled| webhook_spec("a", &hanging.url(), &hang_secret, Severity::High, enabled);
    let a = storage
        .create_route(&a_spec(false), Utc::now())
        .await
        .unwrap()
        .id;
    let b_spec = webhook_spec("b", &fine.url(), &fine_secret, Severity::Critical, true);
    let b = storage.create_route(&b_spec, Utc::now()).await.unwrap().id;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = AlerterProcess::start(&pipeline, HANG_TEST_TIMEOUT_SECS);
    wait_for_notifier(&pipeline).await;

    let baseline = deliver_one_by_one(
        &pipeline,
        b,
        0,
        BASELINE_ALERTS,
        Instant::now() + PATIENCE,
        "baseline",
    )
    .await;

    // A on, and hanging on as many attempts as it may have at once.
    storage
        .update_route(a, &a_spec(true), Utc::now())
        .await
        .unwrap()
        .unwrap();
    for i in 0..PER_ROUTE {
        pipeline
            .publish_event(
                &event(1000 + i, Severity::High),
                Some(&format!("notify-hang-fill-{i}")),
            )
            .await;
    }
    let hanging_ref = &hanging;
    let hung: Vec<DeliveryAttempt> = eventually(
        PATIENCE,
        "route A's attempts to hang at its receiver",
        || async move {
            if hanging_ref.received().len() < PER_ROUTE {
                return None;
            }
            let mut hung = Vec::new();
            for alert in all_alert_ids(storage).await {
                hung.extend(
                    storage
                        .alert_attempts(alert, 100, 0)
                        .await
                        .ok()?
                        .into_iter()
                        .filter(|t| t.route_id == a),
                );
            }
            (hung.len() == PER_ROUTE).then_some(hung)
        },
    )
    .await;
    for attempt in &hung {
        assert_eq!(attempt.outcome, AttemptOutcome::InFlight, "{hung:#?}");
    }
    // B's deliveries must all be done before the first of A's attempts is cut (less a margin
    // for the clocks of the test and of the alerter).
    let hang_ends = hung.iter().map(|t| t.started_at).min().unwrap()
        + chrono::Duration::seconds(HANG_TEST_TIMEOUT_SECS as i64);
    let left = (hang_ends - Utc::now() - chrono::Duration::milliseconds(500))
        .to_std()
        .expect("time left before A's attempts are cut");
    let during = deliver_one_by_one(
        &pipeline,
        b,
        BASELINE_ALERTS,
        DURING_ALERTS,
        Instant::now() + left,
        "while A hangs",
    )
    .await;

    // A's attempts were hanging all along: still in flight, and A attempted nothing else
    // (its slots were full), though each of B's alerts made it a delivery too.
    for attempt in &hung {
        let now = storage.attempt(attempt.id).await.unwrap().unwrap();
        assert_eq!(
            now.outcome,
            AttemptOutcome::InFlight,
            "A's attempt still hangs after B's deliveries: {now:#?}"
        );
    }
    let mut a_waiting = 0;
    for alert in all_alert_ids(storage).await {
        for delivery in storage.alert_deliveries(alert).await.unwrap() {
            if delivery.route_id == a && delivery.attempts == 0 {
                assert_eq!(delivery.state, "pending");
                a_waiting += 1;
            }
        }
    }
    assert_eq!(
        a_waiting, DURING_ALERTS,
        "A's deliveries of B's alerts wait"
    );

    let base = median(&baseline);
    eprintln!(
        "B's dispatch delays: baseline {baseline:?} (median {base:?}); while A hangs \
         {during:?}; B done {:?} before A's attempts end",
        (hang_ends - Utc::now()).to_std().unwrap_or_default()
    );
    for (n, delay) in during.iter().enumerate() {
        assert!(
            delay.saturating_sub(base) <= MAX_ADDED_DELAY,
            "B's delivery {n} waited {delay:?} with A hanging, {base:?} without (median): more \
             than {MAX_ADDED_DELAY:?} added"
        );
    }
    let fine_requests = fine.received();
    assert_eq!(fine_requests.len(), BASELINE_ALERTS + DURING_ALERTS);
    for request in fine_requests.iter().chain(&hanging.received()) {
        assert_eq!(request["verified"], true, "{request}");
    }
    let hung_ids: HashSet<String> = hung.iter().map(|t| t.webhook_id.clone()).collect();
    let received: HashSet<String> = hanging
        .received()
        .iter()
        .map(|r| r["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        hung_ids.is_subset(&received),
        "A's receiver holds A's attempts"
    );

    // Then A's attempts are cut at NOTIFY_TIMEOUT_SECS, to be retried.
    let cut: Vec<DeliveryAttempt> = eventually(PATIENCE, "A's attempts to be cut", || {
        let hung = &hung;
        async move {
            let mut cut = Vec::new();
            for attempt in hung {
                let now = storage.attempt(attempt.id).await.ok()??;
                if now.outcome == AttemptOutcome::InFlight {
                    return None;
                }
                cut.push(now);
            }
            Some(cut)
        }
    })
    .await;
    let timeout = Duration::from_secs(HANG_TEST_TIMEOUT_SECS);
    for attempt in &cut {
        assert_eq!(attempt.outcome, AttemptOutcome::Retrying, "{attempt:#?}");
        assert_eq!(attempt.status_code, None, "{attempt:#?}");
        let error = attempt.error.as_deref().unwrap_or("");
        assert!(
            error.contains("timed out") || error.contains("no answer within"),
            "the error says the attempt timed out: {attempt:#?}"
        );
        let took = Duration::from_secs_f64(attempt.latency_ms.unwrap() / 1000.0);
        assert!(
            took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(2),
            "cut at NOTIFY_TIMEOUT_SECS ({timeout:?}), not {took:?}: {attempt:#?}"
        );
        assert!(attempt.next_attempt_at.is_some(), "{attempt:#?}");
    }
    eprintln!("hanging-receiver test took {:?}", began.elapsed());
    alerter.kill();
    ingestor.stop().await;
}
