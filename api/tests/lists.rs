//! Lists on a seeded database: three hundred events of mixed severities, sensors and types,
//! the alerts of the HIGH and CRITICAL ones raised in timed batches, some of them
//! acknowledged, resolved or reopened. A plain-Rust model of what was seeded says what every
//! page, filter and ordering must answer; each answer is compared with it row for row, and
//! every list is walked through its `next` links to the end and back through `previous`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};
use common::domain::{Alert, AlertStatus, Event, EventIn, Role, Severity};
use common::storage::EventRecord;
use serde::Serialize;
use serde_json::{Value, json};
use support::{Resp, TestApi};

/// The `Host` every request names; absolute links must use it.
const HOST: &str = "testserver";
const SOURCES: [&str; 4] = ["fw-edge-01", "ids-core", "waf-01", "vpn-gw"];
const TYPES: [&str; 5] = [
    "port_scan",
    "brute_force",
    "malware",
    "exfiltration",
    "login_anomaly",
];
const EVENTS: usize = 300;
/// Alerts are raised this many at a time, an hour apart, so that they have distinct times.
const ALERT_BATCH: usize = 12;

/// A recorded status change, as the model knows it.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    from: AlertStatus,
    to: AlertStatus,
    by: i64,
    note: String,
}

/// What the test put in the database.
struct Model {
    /// Every event, by id.
    events: Vec<Event>,
    /// Every alert as it is now, by id.
    alerts: Vec<Alert>,
    /// The changes after creation of each alert that has any, oldest first.
    changes: BTreeMap<i64, Vec<Change>>,
    /// When the first event was stored; event `i` was stored `i` minutes later.
    event_base: DateTime<Utc>,
    /// When each batch of alerts was raised, in order.
    alert_times: Vec<DateTime<Utc>>,
}

/// A well-mixed, repeatable choice of one of `n` for row `i`.
fn pick(i: usize, salt: u64, n: usize) -> usize {
    let mut x = (i as u64)
        .wrapping_add(salt.wrapping_mul(0x5851_F42D_4C95_7F2D))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x % n as u64) as usize
}

/// Seeds the database straight through storage and returns the model of what it holds.
async fn seed(api: &TestApi, admin_id: i64) -> Model {
    let storage = &api.state.storage;
    let event_base = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let records: Vec<EventRecord> = (0..EVENTS)
        .map(|i| {
            let minutes = Duration::minutes(i as i64);
            let mut body = json!({
                "sourceName": SOURCES[pick(i, 1, SOURCES.len())],
                "eventType": TYPES[pick(i, 2, TYPES.len())],
                "severity": Severity::ALL[pick(i, 3, Severity::ALL.len())].as_str(),
                "description": format!("seeded event {i}"),
            });
            if i % 3 == 0 {
                body["occurred_at"] = json!((event_base - minutes).to_rfc3339());
            }
            if i % 4 == 0 {
                body["attributes"] = json!({"n": i, "ip": format!("203.0.113.{}", i % 250)});
            }
            EventRecord {
                uid: format!("seed-{i:03}"),
                event: EventIn::from_value(body).unwrap(),
                created_at: event_base + minutes,
            }
        })
        .collect();
    // Escalating from LOW hands back every stored event with its id.
    let stored = storage.store_events(&records, Severity::Low).await.unwrap();
    assert_eq!(stored.newly_stored, EVENTS as u64);
    let mut events = stored.to_escalate;
    events.sort_by_key(|e| e.id);
    assert_eq!(events.len(), EVENTS);

    let escalated: Vec<Event> = events
        .iter()
        .filter(|e| e.severity >= Severity::High)
        .cloned()
        .collect();
    let alert_base = event_base + Duration::days(1);
    let mut alerts = Vec::new();
    let mut alert_times = Vec::new();
    for (k, batch) in escalated.chunks(ALERT_BATCH).enumerate() {
        let at = alert_base + Duration::hours(k as i64);
        let created = storage.create_alerts(batch, at).await.unwrap();
        assert_eq!(created.newly_created, batch.len() as u64);
        alerts.extend(created.alerts);
        alert_times.push(at);
    }
    alerts.sort_by_key(|a| a.id);
    assert_eq!(alerts.len(), escalated.len());

    use AlertStatus::{Acknowledged, Open, Resolved};
    let mut changes = BTreeMap::new();
    for (j, alert) in alerts.iter_mut().enumerate() {
        let path: &[AlertStatus] = match j % 6 {
            1 => &[Acknowledged],
            2 => &[Resolved],
            3 => &[Acknowledged, Resolved],
            4 => &[Acknowledged, Open],
            _ => &[],
        };
        for (step, &to) in path.iter().enumerate() {
            let note = format!("seeded change {step} of alert {}", alert.id);
            let update = storage
                .change_alert_status(alert.id, to, admin_id, Some(&note), Utc::now())
                .await
                .unwrap()
                .expect("the alert exists");
            assert!(update.change.is_some(), "a real change");
            changes
                .entry(alert.id)
                .or_insert_with(Vec::new)
                .push(Change {
                    from: alert.status,
                    to,
                    by: admin_id,
                    note,
                });
            *alert = update.alert;
        }
    }
    Model {
        events,
        alerts,
        changes,
        event_base,
        alert_times,
    }
}

/// A time as a query value: RFC 3339 in UTC.
fn at(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A query time the way the api reads it: RFC 3339, or a date taken as midnight UTC.
fn parse_time(value: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        })
}

type Query = Vec<(&'static str, String)>;

fn q(pairs: &[(&'static str, &str)]) -> Query {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Model {
    /// The alerts `query` must list, in the order it must list them.
    fn alerts_for(&self, query: &Query) -> Vec<Value> {
        let mut rows: Vec<&Alert> = self
            .alerts
            .iter()
            .filter(|a| {
                query.iter().all(|(key, value)| match *key {
                    "status" => a.status.as_str() == value,
                    "event__severity" | "severity" => a.severity.as_str() == value,
                    "eventType" => a.event_type == *value,
                    "sourceName" => a.source_name == *value,
                    "created_at__gte" => a.created_at >= parse_time(value),
                    "created_at__lte" => a.created_at <= parse_time(value),
                    "ordering" | "page_size" => true,
                    other => panic!("the model has no alert filter {other}"),
                })
            })
            .collect();
        let ordering = query
            .iter()
            .find(|(key, _)| *key == "ordering")
            .map_or("-created_at", |(_, value)| value.as_str());
        match ordering {
            "-created_at" => rows.sort_by_key(|a| Reverse((a.created_at, a.id))),
            "created_at" => rows.sort_by_key(|a| (a.created_at, a.id)),
            // Severity ties: newest (highest id) first.
            "severity" => rows.sort_by(|a, b| a.severity.cmp(&b.severity).then(b.id.cmp(&a.id))),
            "-severity" => rows.sort_by(|a, b| b.severity.cmp(&a.severity).then(b.id.cmp(&a.id))),
            other => panic!("the model has no ordering {other}"),
        }
        rows.into_iter().map(to_json).collect()
    }

    /// The events `query` must list, newest first.
    fn events_for(&self, query: &Query) -> Vec<Value> {
        let mut rows: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| {
                query.iter().all(|(key, value)| match *key {
                    "severity" => e.severity.as_str() == value,
                    "eventType" => e.event_type == *value,
                    "sourceName" => e.source_name == *value,
                    "created_at__gte" => e.created_at >= parse_time(value),
                    "created_at__lte" => e.created_at <= parse_time(value),
                    "page_size" => true,
                    other => panic!("the model has no event filter {other}"),
                })
            })
            .collect();
        rows.sort_by_key(|e| Reverse(e.id));
        rows.into_iter().map(to_json).collect()
    }

    /// The index of an alert in `alerts`.
    fn alert_index(&self, id: i64) -> usize {
        self.alerts.iter().position(|a| a.id == id).unwrap()
    }
}

fn to_json<T: Serialize>(row: &T) -> Value {
    serde_json::to_value(row).unwrap()
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// GET as a client of `HOST` would send it.
async fn get(api: &TestApi, path: &str, token: &str) -> Resp {
    let request = Request::builder()
        .method("GET")
        .uri(path)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    api.send(request).await
}

/// `path` with `query` and, past the first, `page`: the request and link form of a page.
fn page_path(path: &str, query: &Query, page: usize) -> String {
    let mut pairs: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.clone())).collect();
    if page > 1 {
        pairs.push(("page", page.to_string()));
    }
    if pairs.is_empty() {
        return path.to_owned();
    }
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{encoded}")
}

fn absolute(path: &str) -> String {
    format!("http://{HOST}{path}")
}

/// An absolute link of this host, as a path to request.
fn relative(link: &Value) -> String {
    let link = link.as_str().expect("a link");
    link.strip_prefix(&format!("http://{HOST}"))
        .unwrap_or_else(|| panic!("{link} is not an absolute link to {HOST}"))
        .to_owned()
}

/// Lists `path?query` page by page through `next`, then back through `previous`, checking
/// every page against `expected` (the whole answer, in order): the count, the rows, the
/// links (absolute, keeping the query); that every row comes exactly once with no overlap
/// between pages; and that the page after the last is 404.
async fn check_pages(api: &TestApi, token: &str, path: &str, query: &Query, expected: &[Value]) {
    let size = query
        .iter()
        .find(|(key, _)| *key == "page_size")
        .map_or(10, |(_, value)| value.parse::<usize>().unwrap());
    let pages = expected.len().div_ceil(size).max(1);
    let slice = |page: usize| {
        let start = (page - 1) * size;
        &expected[start..(start + size).min(expected.len())]
    };
    let check_page = |resp: &Resp, page: usize, url: &str| {
        assert_eq!(resp.status, StatusCode::OK, "{url}: {}", resp.text);
        assert_eq!(resp.json["count"], json!(expected.len()), "count of {url}");
        let results = resp.json["results"].as_array().expect("results");
        assert_eq!(results.as_slice(), slice(page), "rows of {url}");
        let previous = (page > 1).then(|| absolute(&page_path(path, query, page - 1)));
        assert_eq!(resp.json["previous"], json!(previous), "previous of {url}");
        let next = (page < pages).then(|| absolute(&page_path(path, query, page + 1)));
        assert_eq!(resp.json["next"], json!(next), "next of {url}");
        ids(results)
    };

    let mut url = page_path(path, query, 1);
    let mut seen = Vec::new();
    let mut resp = get(api, &url, token).await;
    for page in 1..=pages {
        seen.extend(check_page(&resp, page, &url));
        if page < pages {
            url = relative(&resp.json["next"]);
            resp = get(api, &url, token).await;
        }
    }
    assert!(resp.json["next"].is_null());
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a row on two pages of {path} {query:?}"
    );
    assert_eq!(seen, ids(expected), "rows of {path} {query:?}");

    for page in (1..pages).rev() {
        url = relative(&resp.json["previous"]);
        resp = get(api, &url, token).await;
        check_page(&resp, page, &url);
    }
    assert!(resp.json["previous"].is_null());

    let past = page_path(path, query, pages + 1);
    let resp = get(api, &past, token).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{past}: {}", resp.text);
    assert_eq!(resp.json, json!({"detail": "Invalid page."}), "{past}");
}

/// A fresh api with an admin and an analyst, seeded.
async fn seeded() -> (TestApi, Model, i64, String, String) {
    let api = TestApi::start().await;
    let (admin, admin_token) = api.user_with_token("admin", Role::Admin).await;
    let (_, analyst_token) = api.user_with_token("analyst", Role::Analyst).await;
    let model = seed(&api, admin.id).await;
    (api, model, admin.id, admin_token, analyst_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_row_once_newest_first_with_absolute_links() {
    let (api, model, _, admin, analyst) = seeded().await;
    let all_alerts = model.alerts_for(&Query::new());
    let all_events = model.events_for(&Query::new());
    assert!(all_alerts.len() > 100, "{} alerts seeded", all_alerts.len());

    // The first page, spelled out.
    for (path, total, newest) in [
        ("/api/alerts/", model.alerts.len(), &all_alerts),
        ("/api/events/", EVENTS, &all_events),
    ] {
        let resp = get(&api, path, &admin).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text);
        assert_eq!(resp.json["count"], json!(total));
        assert_eq!(resp.json["previous"], Value::Null);
        assert_eq!(
            resp.json["next"],
            json!(format!("http://testserver{path}?page=2"))
        );
        let results = resp.json["results"].as_array().unwrap();
        assert_eq!(results.len(), 10);
        let page_ids = ids(results);
        assert!(page_ids.windows(2).all(|w| w[0] > w[1]), "{page_ids:?}");
        assert_eq!(results.as_slice(), &newest[..10]);
    }
    let resp = get(&api, "/api/alerts/", &analyst).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json["results"].as_array().unwrap().as_slice(),
        &all_alerts[..10]
    );

    // Links keep page_size, and drop `page` for the first page.
    let resp = get(&api, "/api/alerts/?page_size=25&page=2", &admin).await;
    assert_eq!(
        resp.json["next"],
        "http://testserver/api/alerts/?page_size=25&page=3"
    );
    assert_eq!(
        resp.json["previous"],
        "http://testserver/api/alerts/?page_size=25"
    );

    // Every page, forwards and back, at each page size.
    for size in [None, Some("25"), Some("100")] {
        let query = size.map_or_else(Query::new, |s| q(&[("page_size", s)]));
        check_pages(&api, &admin, "/api/alerts/", &query, &all_alerts).await;
        check_pages(&api, &admin, "/api/events/", &query, &all_events).await;
    }
    check_pages(&api, &analyst, "/api/alerts/", &Query::new(), &all_alerts).await;

    // Past the end.
    let last = all_alerts.len().div_ceil(10);
    for page in [last + 1, last + 50, 1_000_000] {
        let resp = get(&api, &format!("/api/alerts/?page={page}"), &admin).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "page {page}");
        assert_eq!(resp.json, json!({"detail": "Invalid page."}));
    }
    let resp = get(&api, &format!("/api/alerts/?page={last}"), &admin).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json["next"], Value::Null);

    // An empty result: page 1 is an empty page, page 2 does not exist.
    for path in [
        "/api/alerts/?sourceName=nowhere",
        "/api/alerts/?event__severity=LOW",
        "/api/events/?eventType=nothing",
    ] {
        let resp = get(&api, path, &admin).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text);
        assert_eq!(
            resp.json,
            json!({"count": 0, "next": null, "previous": null, "results": []}),
            "{path}"
        );
        let resp = get(&api, &format!("{path}&page=2"), &admin).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{path}&page=2");
        assert_eq!(resp.json, json!({"detail": "Invalid page."}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_filter_and_ordering_lists_exactly_the_models_rows() {
    let (api, model, _, admin, analyst) = seeded().await;
    let times = &model.alert_times;
    assert!(times.len() >= 8, "{} batches", times.len());

    // Combinations that certainly match something: taken from a seeded row.
    let acked_critical = model
        .alerts
        .iter()
        .find(|a| a.status == AlertStatus::Acknowledged && a.severity == Severity::Critical)
        .expect("an acknowledged critical alert");
    let resolved_high = model
        .alerts
        .iter()
        .find(|a| a.status == AlertStatus::Resolved && a.severity == Severity::High)
        .expect("a resolved high alert");

    let mut cases: Vec<Query> = Vec::new();
    for status in AlertStatus::ALL {
        cases.push(q(&[("status", status.as_str())]));
    }
    for severity in [Severity::High, Severity::Critical] {
        cases.push(q(&[("event__severity", severity.as_str())]));
        cases.push(q(&[("severity", severity.as_str())]));
    }
    for source in SOURCES {
        cases.push(q(&[("sourceName", source)]));
    }
    for event_type in TYPES {
        cases.push(q(&[("eventType", event_type)]));
    }
    let one_us = Duration::microseconds(1);
    for time in [times[3], times[3] + one_us, times[times.len() - 1]] {
        cases.push(q(&[("created_at__gte", &at(time))]));
    }
    for time in [times[0], times[3], times[3] - one_us] {
        cases.push(q(&[("created_at__lte", &at(time))]));
    }
    cases.extend([
        q(&[("status", "OPEN"), ("event__severity", "HIGH")]),
        q(&[("status", "RESOLVED"), ("severity", "CRITICAL")]),
        q(&[
            ("status", "ACKNOWLEDGED"),
            ("event__severity", "CRITICAL"),
            ("sourceName", &acked_critical.source_name),
        ]),
        q(&[
            ("eventType", &resolved_high.event_type),
            ("status", "RESOLVED"),
            ("severity", "HIGH"),
        ]),
        q(&[
            ("created_at__gte", &at(times[2])),
            ("created_at__lte", &at(times[5])),
            ("eventType", "malware"),
        ]),
        q(&[
            ("created_at__gte", &at(times[2])),
            ("created_at__lte", &at(times[2])),
        ]),
    ]);
    for ordering in ["created_at", "-created_at", "severity", "-severity"] {
        cases.push(q(&[("ordering", ordering)]));
        cases.push(q(&[("ordering", ordering), ("page_size", "25")]));
        cases.push(q(&[("status", "OPEN"), ("ordering", ordering)]));
    }
    cases.push(q(&[
        ("sourceName", &acked_critical.source_name),
        ("ordering", "-severity"),
        ("created_at__gte", &at(times[1])),
        ("page_size", "7"),
    ]));

    for query in &cases {
        let expected = model.alerts_for(query);
        assert!(
            !expected.is_empty() && expected.len() < model.alerts.len()
                || query
                    .iter()
                    .all(|(k, _)| *k == "ordering" || *k == "page_size"),
            "the case {query:?} should select some alerts but not all ({} of them)",
            expected.len()
        );
        check_pages(&api, &admin, "/api/alerts/", query, &expected).await;
    }

    // Ties in severity are broken newest first.
    let resp = get(&api, "/api/alerts/?ordering=severity&page_size=100", &admin).await;
    let rows = resp.json["results"].as_array().unwrap();
    assert!(rows.windows(2).all(|w| {
        let rank = |r: &Value| r["severity"].as_str().unwrap().parse::<Severity>().unwrap();
        rank(&w[0]) < rank(&w[1])
            || rank(&w[0]) == rank(&w[1]) && w[0]["id"].as_i64() > w[1]["id"].as_i64()
    }));

    // An analyst reads the same lists.
    for query in [
        q(&[("status", "OPEN"), ("event__severity", "HIGH")]),
        q(&[("ordering", "-severity"), ("page_size", "25")]),
    ] {
        let expected = model.alerts_for(&query);
        check_pages(&api, &analyst, "/api/alerts/", &query, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_filter_lists_exactly_the_models_rows() {
    let (api, model, _, admin, _) = seeded().await;
    let base = model.event_base;
    let minutes = |m: i64| base + Duration::minutes(m);
    let critical = model
        .events
        .iter()
        .find(|e| e.severity == Severity::Critical)
        .unwrap();

    let mut cases: Vec<Query> = Vec::new();
    for severity in Severity::ALL {
        cases.push(q(&[("severity", severity.as_str())]));
    }
    for source in SOURCES {
        cases.push(q(&[("sourceName", source)]));
    }
    for event_type in TYPES {
        cases.push(q(&[("eventType", event_type)]));
    }
    cases.extend([
        q(&[("created_at__gte", &at(minutes(100)))]),
        q(&[("created_at__lte", &at(minutes(199)))]),
        q(&[
            ("created_at__gte", &at(minutes(100))),
            ("created_at__lte", &at(minutes(199))),
        ]),
        // Another offset is the same instant: 03:00+01:00 is 02:00Z, event 120.
        q(&[("created_at__gte", "2026-03-01T03:00:00+01:00")]),
        // A date is midnight UTC: only the first event is at or before it.
        q(&[("created_at__lte", "2026-03-01")]),
        q(&[("severity", "LOW"), ("sourceName", "ids-core")]),
        q(&[
            ("severity", "CRITICAL"),
            ("sourceName", &critical.source_name),
            ("eventType", &critical.event_type),
        ]),
        q(&[
            ("eventType", "malware"),
            ("created_at__gte", &at(minutes(50))),
            ("page_size", "5"),
        ]),
    ]);
    for query in &cases {
        let expected = model.events_for(query);
        assert!(
            !expected.is_empty() && expected.len() < EVENTS,
            "the case {query:?} should select some events but not all ({})",
            expected.len()
        );
        check_pages(&api, &admin, "/api/events/", query, &expected).await;
    }
    assert_eq!(
        model
            .events_for(&q(&[
                ("created_at__gte", &at(minutes(100))),
                ("created_at__lte", &at(minutes(199)))
            ]))
            .len(),
        100,
        "both bounds are inclusive"
    );
    assert_eq!(
        model
            .events_for(&q(&[("created_at__lte", "2026-03-01")]))
            .len(),
        1
    );

    // An empty answer is still a page.
    let resp = get(
        &api,
        &format!(
            "/api/events/?created_at__gte={}",
            at(minutes(EVENTS as i64))
        ),
        &admin,
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["count"], 0);
    assert_eq!(resp.json["results"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_the_creation_then_each_change_and_a_trailing_slash_changes_nothing() {
    let (api, mut model, admin_id, admin, analyst) = seeded().await;

    // A seeded alert that went OPEN → ACKNOWLEDGED → RESOLVED.
    let (&seeded_id, seeded_changes) = model
        .changes
        .iter()
        .find(|(_, changes)| changes.len() == 2 && changes[1].to == AlertStatus::Resolved)
        .unwrap();
    let resp = get(&api, &format!("/api/alerts/{seeded_id}/history/"), &analyst).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let rows = resp.json.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let creation = &model.alerts[model.alert_index(seeded_id)].created_at;
    assert_eq!(rows[0]["from_status"], Value::Null);
    assert_eq!(rows[0]["to_status"], "OPEN");
    assert_eq!(rows[0]["changed_by"], Value::Null);
    assert_eq!(rows[0]["note"], Value::Null);
    assert_eq!(rows[0]["changed_at"], to_json(creation));
    for (row, change) in rows[1..].iter().zip(seeded_changes) {
        assert_eq!(row["alert_id"], seeded_id);
        assert_eq!(row["from_status"], change.from.as_str());
        assert_eq!(row["to_status"], change.to.as_str());
        assert_eq!(row["changed_by"], change.by);
        assert_eq!(row["note"], change.note.as_str());
    }

    // An untouched OPEN alert, changed through the api.
    let index = model
        .alerts
        .iter()
        .position(|a| a.status == AlertStatus::Open && !model.changes.contains_key(&a.id))
        .unwrap();
    let id = model.alerts[index].id;
    let path = format!("/api/alerts/{id}/history/");
    let resp = get(&api, &path, &admin).await;
    assert_eq!(resp.json.as_array().unwrap().len(), 1, "{}", resp.text);
    let creation_row = resp.json[0].clone();

    let resp = api
        .call(
            "PATCH",
            &format!("/api/alerts/{id}/"),
            Some(&admin),
            Some(json!({"status": "ACKNOWLEDGED", "note": "looking into it"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["status"], "ACKNOWLEDGED");
    let patched: Alert = serde_json::from_value(resp.json.clone()).unwrap();
    assert_eq!(patched.id, id);
    model.alerts[index] = patched.clone();

    let resp = get(&api, &path, &analyst).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let rows = resp.json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], creation_row);
    assert_eq!(rows[1]["alert_id"], id);
    assert_eq!(rows[1]["from_status"], "OPEN");
    assert_eq!(rows[1]["to_status"], "ACKNOWLEDGED");
    assert_eq!(rows[1]["changed_by"], admin_id);
    assert_eq!(rows[1]["note"], "looking into it");
    assert_eq!(rows[1]["changed_at"], to_json(&patched.updated_at));

    // The same status again records nothing; a PUT without a note records a null note.
    let resp = api
        .call(
            "PATCH",
            &format!("/api/alerts/{id}/"),
            Some(&admin),
            Some(json!({"status": "ACKNOWLEDGED", "note": "still on it"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        get(&api, &path, &admin)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let resp = api
        .call(
            "PUT",
            &format!("/api/alerts/{id}/"),
            Some(&admin),
            Some(json!({"status": "RESOLVED"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    model.alerts[index] = serde_json::from_value(resp.json.clone()).unwrap();
    let rows = get(&api, &path, &admin).await.json;
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    assert_eq!(rows[2]["from_status"], "ACKNOWLEDGED");
    assert_eq!(rows[2]["to_status"], "RESOLVED");
    assert_eq!(rows[2]["note"], Value::Null);

    // The lists follow.
    for status in ["OPEN", "RESOLVED"] {
        let query = q(&[("status", status)]);
        let expected = model.alerts_for(&query);
        check_pages(&api, &admin, "/api/alerts/", &query, &expected).await;
    }

    // With or without the trailing slash, the same answer (links included).
    for path in [
        "/api/alerts".to_owned(),
        "/api/alerts?status=OPEN&page=2".to_owned(),
        "/api/alerts?ordering=severity&page_size=25&page=3".to_owned(),
        "/api/events".to_owned(),
        "/api/events?severity=LOW&page=2".to_owned(),
        format!("/api/alerts/{id}"),
        format!("/api/alerts/{id}/history"),
        format!("/api/events/{}", model.events[0].id),
    ] {
        let with_slash = match path.split_once('?') {
            Some((route, query)) => format!("{route}/?{query}"),
            None => format!("{path}/"),
        };
        let bare = get(&api, &path, &admin).await;
        let slashed = get(&api, &with_slash, &admin).await;
        assert_eq!(bare.status, StatusCode::OK, "{path}: {}", bare.text);
        assert_eq!(
            slashed.status,
            StatusCode::OK,
            "{with_slash}: {}",
            slashed.text
        );
        assert_eq!(bare.json, slashed.json, "{path} and {with_slash}");
    }
    let bare = get(&api, "/api/alerts", &analyst).await;
    assert_eq!(bare.json["next"], "http://testserver/api/alerts/?page=2");
    assert_eq!(
        bare.json["results"].as_array().unwrap().as_slice(),
        &model.alerts_for(&Query::new())[..10]
    );
}
