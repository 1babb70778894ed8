//! The ceilings threatmon is compared with, measured in the same run on the same machine:
//! the broker alone and each database engine alone, with the same messages and rows.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Executor};

use crate::db::PgScratch;
use crate::load::{Outgoing, Publisher};

/// Rows per transaction in the raw insert ceilings (CEILINGS.md used 1,000).
const RAW_BATCH: usize = 1000;
/// Messages a raw consumer fetches at once (as CEILINGS.md measured).
const RAW_FETCH: usize = 500;

/// JetStream publish with [`crate::load::IN_FLIGHT`] PubAcks in flight and a `Nats-Msg-Id`
/// each, into a file stream: messages a second.
pub async fn jetstream_publish(js: &jetstream::Context, events: &[Outgoing]) -> Result<f64> {
    js.create_stream(stream::Config {
        name: "RAW".to_owned(),
        subjects: vec!["raw.>".to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("creating the RAW stream")?;
    let mut publisher = Publisher::new(js.clone());
    let start = Instant::now();
    for event in events {
        publisher
            .send("raw.events", &event.uid, event.payload.clone())
            .await?;
    }
    let acked = publisher.finish().await?;
    Ok(acked as f64 / start.elapsed().as_secs_f64())
}

/// A durable pull consumer draining the RAW stream, fetching [`RAW_FETCH`] at a time and
/// acknowledging each message (explicit acks, as the workers do): messages a second.
pub async fn jetstream_consume(js: &jetstream::Context, expected: u64) -> Result<f64> {
    let stream = js.get_stream("RAW").await.context("finding RAW")?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .context("creating the raw consumer")?;
    let start = Instant::now();
    let mut received = 0u64;
    while received < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(RAW_FETCH)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .context("fetching")?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("fetching: {e}"))?;
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("acking: {e}"))?;
            got += 1;
        }
        if got == 0 {
            bail!("the raw consumer stalled at {received} of {expected}");
        }
        received += got;
    }
    Ok(received as f64 / start.elapsed().as_secs_f64())
}

/// A table like `events` as CEILINGS.md measured it: a UNIQUE text uid, indexes on severity
/// and created_at.
const RAW_TABLE: &str = "CREATE TABLE raw_events (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, source_name TEXT NOT NULL,
    event_type TEXT NOT NULL, severity INTEGER NOT NULL, description TEXT NOT NULL,
    occurred_at BIGINT, attributes TEXT, created_at BIGINT NOT NULL)";
const RAW_INDEXES: [&str; 2] = [
    "CREATE INDEX raw_events_severity ON raw_events (severity)",
    "CREATE INDEX raw_events_created_at ON raw_events (created_at)",
];

/// The raw row of an event: what both engines insert.
struct RawRow {
    uid: String,
    source_name: String,
    event_type: String,
    severity: i16,
    description: String,
    attributes: String,
}

fn raw_rows(events: &[Outgoing]) -> Vec<RawRow> {
    events
        .iter()
        .map(|event| {
            let value: serde_json::Value =
                serde_json::from_slice(&event.payload).unwrap_or_default();
            let text = |key: &str| {
                value
                    .get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            RawRow {
                uid: event.uid.clone(),
                source_name: text("sourceName"),
                event_type: text("eventType"),
                severity: event.severity.rank(),
                description: text("description"),
                attributes: value
                    .get("attributes")
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// SQLite through sqlx, WAL and `synchronous=FULL` as threatmon runs it, one multi-row
/// INSERT per [`RAW_BATCH`]-row transaction: rows a second.
pub async fn sqlite_insert(dir: &std::path::Path, events: &[Outgoing]) -> Result<f64> {
    let options =
        SqliteConnectOptions::from_str(&format!("sqlite:{}", dir.join("raw.db").display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    pool.execute(RAW_TABLE).await?;
    for index in RAW_INDEXES {
        pool.execute(index).await?;
    }
    let rows = raw_rows(events);
    // 8 columns × 1,000 rows: below SQLite's 32,766 bound parameters.
    let start = Instant::now();
    for chunk in rows.chunks(RAW_BATCH) {
        let mut sql = String::from(
            "INSERT INTO raw_events (uid, source_name, event_type, severity, description, \
             occurred_at, attributes, created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            // Anonymous placeholders: sqlx looks numbered ones up by name, quadratically.
            sql.push_str("(?,?,?,?,?,?,?,?)");
        }
        let mut tx = pool.begin().await?;
        let mut query = sqlx::query(AssertSqlSafe(sql));
        let now = chrono::Utc::now().timestamp_micros();
        for row in chunk {
            query = query
                .bind(&row.uid)
                .bind(&row.source_name)
                .bind(&row.event_type)
                .bind(row.severity)
                .bind(&row.description)
                .bind(now)
                .bind(&row.attributes)
                .bind(now);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let rate = rows.len() as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// PostgreSQL through sqlx, one `INSERT … SELECT FROM UNNEST(…)` per [`RAW_BATCH`]-row
/// transaction, into a scratch database that is dropped afterwards: rows a second.
pub async fn postgres_insert(url: &str, events: &[Outgoing]) -> Result<f64> {
    let scratch = PgScratch::create(url).await?;
    let result = async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&scratch.url)
            .await?;
        pool.execute(AssertSqlSafe(RAW_TABLE.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")))
            .await?;
        for index in RAW_INDEXES {
            pool.execute(index).await?;
        }
        let rows = raw_rows(events);
        let start = Instant::now();
        for chunk in rows.chunks(RAW_BATCH) {
            let now = chrono::Utc::now().timestamp_micros();
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO raw_events (uid, source_name, event_type, severity, description, \
                 occurred_at, attributes, created_at) \
                 SELECT u, s, t, v, d, $6, a, $6 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[], $7::text[]) \
                 AS x(u, s, t, v, d, a)",
            )
            .bind(chunk.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.source_name.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.severity).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.description.as_str()).collect::<Vec<_>>())
            .bind(now)
            .bind(chunk.iter().map(|r| r.attributes.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        let rate = rows.len() as f64 / start.elapsed().as_secs_f64();
        pool.close().await;
        anyhow::Ok(rate)
    }
    .await;
    scratch.drop_now().await?;
    result
}
