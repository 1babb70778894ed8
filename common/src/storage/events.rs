//! Events: stored once per idempotency key, read newest first.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Sqlite};

use super::counts::{CountShards, EventCountDelta};
use super::listing::{CountTables, ListFilter, shared_conditions};
use super::sql::{Condition, in_list_chunks};
use super::{Storage, StorageError, fixed_shape_chunks, in_write_transaction, on_pool, pg_chunks};
use crate::domain::{Event, NewEvent, Severity, from_micros, to_micros};

const SELECT_EVENT: &str = "SELECT id, uid, source_name, event_type, severity, description, \
                            description_exact, occurred_at, attributes, created_at FROM events";
/// Postgres inserts a whole batch with one statement of one text, whatever the batch size, so
/// that it stays a cached prepared statement: one array per column, zipped by `UNNEST`.
const INSERT_EVENTS_UNNEST: &str = "INSERT INTO events (uid, source_name, event_type, severity, \
     description, description_exact, occurred_at, attributes, created_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[], \
     $6::text[], $7::bigint[], $8::text[], $9::bigint[]) \
     ON CONFLICT (uid) DO NOTHING RETURNING id, uid, severity";

/// A validated event with the idempotency key it will be stored under.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The key: `Nats-Msg-Id`, else the body's `uid`, else one derived from the stream.
    pub uid: String,
    /// The validated event.
    pub event: NewEvent,
    /// When it is being stored.
    pub created_at: DateTime<Utc>,
}

/// What storing a batch did.
#[derive(Debug, Clone, Default)]
pub struct StoredEvents {
    /// How many were new (the rest were already stored under their key).
    pub newly_stored: u64,
    /// The stored events of the batch at or above the escalation threshold, new or not, each
    /// once: a redelivered batch escalates again, so a crash between commit and escalation
    /// loses no escalation (the escalation's `Nats-Msg-Id` and the one-alert-per-event rule
    /// absorb the repeat).
    pub to_escalate: Vec<Event>,
}

/// Which events a list or count covers; every given field must match (`AND`), and the
/// default matches every event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Exactly this severity.
    pub severity: Option<Severity>,
    /// Exactly this sensor (case-sensitive).
    pub source_name: Option<String>,
    /// Exactly this type (case-sensitive).
    pub event_type: Option<String>,
    /// Stored at or after this time (inclusive).
    pub created_from: Option<DateTime<Utc>>,
    /// Stored at or before this time (inclusive).
    pub created_to: Option<DateTime<Utc>>,
}

const EVENT_COUNT_TABLES: CountTables = CountTables {
    all: "event_counts",
    by_type: "event_counts_by_type",
    by_source: "event_counts_by_source",
};

impl ListFilter for EventFilter {
    const SELECT: &'static str = SELECT_EVENT;
    const TABLE: &'static str = "events";

    fn conditions(&self) -> Vec<Condition> {
        shared_conditions(
            self.severity.as_slice(),
            self.source_name.as_slice(),
            self.event_type.as_slice(),
            self.created_from,
            self.created_to,
        )
        .collect()
    }

    /// `event_counts` when nothing but the severity is given, `event_counts_by_type` or
    /// `event_counts_by_source` when the type or the sensor is given as well (not both),
    /// none when a time is given.
    fn count_table(&self) -> Option<&'static str> {
        // Destructured so that a new field must be considered here.
        let EventFilter {
            severity: _,
            source_name,
            event_type,
            created_from,
            created_to,
        } = self;
        EVENT_COUNT_TABLES.answering(
            event_type.is_some(),
            source_name.is_some(),
            created_from.is_some() || created_to.is_some(),
        )
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    uid: String,
    source_name: String,
    event_type: String,
    severity: i16,
    description: String,
    description_exact: Option<String>,
    occurred_at: Option<i64>,
    attributes: Option<String>,
    created_at: i64,
}

/// How a description is stored: the `description` column, and the exact text for the
/// `description_exact` column when the first cannot hold it (it holds NUL, which PostgreSQL
/// text cannot; see migration 0006).
fn description_columns(description: &str) -> (std::borrow::Cow<'_, str>, Option<String>) {
    if description.contains('\0') {
        (
            std::borrow::Cow::Owned(description.replace('\0', "\u{fffd}")),
            serde_json::to_string(description).ok(),
        )
    } else {
        (std::borrow::Cow::Borrowed(description), None)
    }
}

impl TryFrom<EventRow> for Event {
    type Error = StorageError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        let severity = Severity::from_rank(row.severity).ok_or_else(|| {
            StorageError::Corrupt(format!("event {}: severity {}", row.id, row.severity))
        })?;
        let description = match row.description_exact {
            None => row.description,
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                StorageError::Corrupt(format!("event {}: description_exact: {e}", row.id))
            })?,
        };
        let attributes = match row.attributes {
            None => None,
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                StorageError::Corrupt(format!("event {}: attributes: {e}", row.id))
            })?),
        };
        Ok(Event {
            id: row.id,
            uid: row.uid,
            source_name: row.source_name,
            event_type: row.event_type,
            severity,
            description,
            occurred_at: row.occurred_at.map(from_micros),
            attributes,
            created_at: from_micros(row.created_at),
        })
    }
}

fn stored_event(record: &EventRecord, id: i64) -> Event {
    let event = &record.event;
    Event {
        id,
        uid: record.uid.clone(),
        source_name: event.source_name.clone(),
        event_type: event.event_type.clone(),
        severity: event.severity,
        description: event.description.clone(),
        occurred_at: event.occurred_at,
        attributes: event.attributes.clone(),
        // What the database holds: microsecond precision.
        created_at: from_micros(to_micros(record.created_at)),
    }
}

/// The stored form of an event's attributes: JSON text, or NULL when it has none.
fn attributes_text(record: &EventRecord) -> Option<String> {
    record
        .event
        .attributes
        .as_ref()
        .map(|map| serde_json::Value::Object(map.clone()).to_string())
}

/// The statements of [`Storage::store_events`] whose fastest form differs by engine.
trait EventStatements: sqlx::Database {
    /// Inserts the events whose key is not stored yet (the keys of `records` are distinct);
    /// returns `(id, uid, severity)` of each row inserted.
    async fn insert_events(
        conn: &mut Self::Connection,
        records: &[&EventRecord],
    ) -> Result<Vec<(i64, String, i16)>, StorageError>;

    /// The stored events with these keys.
    async fn events_by_uids(
        conn: &mut Self::Connection,
        uids: &[&str],
    ) -> Result<Vec<EventRow>, StorageError>;
}

/// SQLite: multi-row `VALUES` and `IN` lists, in chunks.
impl EventStatements for Sqlite {
    async fn insert_events(
        conn: &mut Self::Connection,
        records: &[&EventRecord],
    ) -> Result<Vec<(i64, String, i16)>, StorageError> {
        let mut inserted = Vec::with_capacity(records.len());
        for chunk in fixed_shape_chunks(records) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (uid, source_name, event_type, severity, description, \
                 description_exact, occurred_at, attributes, created_at) ",
            );
            query.push_values(chunk, |mut row, record| {
                let event = &record.event;
                let (description, description_exact) = description_columns(&event.description);
                row.push_bind(record.uid.as_str())
                    .push_bind(event.source_name.as_str())
                    .push_bind(event.event_type.as_str())
                    .push_bind(event.severity.rank())
                    .push_bind(description)
                    .push_bind(description_exact)
                    .push_bind(event.occurred_at.map(to_micros))
                    .push_bind(attributes_text(record))
                    .push_bind(to_micros(record.created_at));
            });
            query.push(" ON CONFLICT (uid) DO NOTHING RETURNING id, uid, severity");
            inserted.extend(
                query
                    .build_query_as::<(i64, String, i16)>()
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(inserted)
    }

    async fn events_by_uids(
        conn: &mut Self::Connection,
        uids: &[&str],
    ) -> Result<Vec<EventRow>, StorageError> {
        let mut rows = Vec::with_capacity(uids.len());
        for mut query in in_list_chunks::<Sqlite, _>(&format!("{SELECT_EVENT} WHERE uid IN "), uids)
        {
            rows.extend(
                query
                    .build_query_as::<EventRow>()
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(rows)
    }
}

/// Postgres: one statement per batch, with one array per column.
impl EventStatements for Postgres {
    async fn insert_events(
        conn: &mut Self::Connection,
        records: &[&EventRecord],
    ) -> Result<Vec<(i64, String, i16)>, StorageError> {
        let mut inserted = Vec::with_capacity(records.len());
        for chunk in pg_chunks(records, |r| {
            let e = &r.event;
            r.uid.len()
                + e.source_name.len()
                + e.event_type.len()
                + e.description.len()
                + e.attributes.as_ref().map_or(0, |a| a.len() * 64)
                + 32
        }) {
            inserted.extend(pg_insert_event_chunk(conn, chunk).await?);
        }
        Ok(inserted)
    }

    async fn events_by_uids(
        conn: &mut Self::Connection,
        uids: &[&str],
    ) -> Result<Vec<EventRow>, StorageError> {
        let sql = format!("{SELECT_EVENT} WHERE uid = ANY($1::text[])");
        let mut rows = Vec::with_capacity(uids.len());
        for chunk in pg_chunks(uids, |uid| uid.len()) {
            rows.extend(
                sqlx::query_as::<Postgres, EventRow>(AssertSqlSafe(sql.clone()))
                    .bind(chunk)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(rows)
    }
}

/// One `INSERT … SELECT FROM UNNEST` of `records` (Postgres).
async fn pg_insert_event_chunk(
    conn: &mut PgConnection,
    records: &[&EventRecord],
) -> Result<Vec<(i64, String, i16)>, StorageError> {
    let n = records.len();
    let description_columns: Vec<_> = records
        .iter()
        .map(|record| description_columns(&record.event.description))
        .collect();
    let mut uids = Vec::with_capacity(n);
    let mut source_names = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut severities = Vec::with_capacity(n);
    let mut descriptions = Vec::with_capacity(n);
    let mut exact_descriptions = Vec::with_capacity(n);
    let mut occurred_ats = Vec::with_capacity(n);
    let mut attributes = Vec::with_capacity(n);
    let mut created_ats = Vec::with_capacity(n);
    for (record, (description, exact)) in records.iter().zip(&description_columns) {
        let event = &record.event;
        uids.push(record.uid.as_str());
        source_names.push(event.source_name.as_str());
        event_types.push(event.event_type.as_str());
        severities.push(event.severity.rank());
        descriptions.push(description.as_ref());
        exact_descriptions.push(exact.as_deref());
        occurred_ats.push(event.occurred_at.map(to_micros));
        attributes.push(attributes_text(record));
        created_ats.push(to_micros(record.created_at));
    }
    let inserted = sqlx::query_as::<Postgres, (i64, String, i16)>(INSERT_EVENTS_UNNEST)
        .bind(uids)
        .bind(source_names)
        .bind(event_types)
        .bind(severities)
        .bind(descriptions)
        .bind(exact_descriptions)
        .bind(occurred_ats)
        .bind(attributes)
        .bind(created_ats)
        .fetch_all(&mut *conn)
        .await?;
    Ok(inserted)
}

impl Storage {
    /// Stores a batch of events in one transaction. An event whose key is already stored is
    /// left as it is (not an error); of events sharing a key within the batch, the first is
    /// the one stored. Returns how many were new and which stored events of the batch are at
    /// or above `escalate_from`. The counts of `event_counts` grow by the events stored, in
    /// the same transaction.
    pub async fn store_events(
        &self,
        records: &[EventRecord],
        escalate_from: Severity,
    ) -> Result<StoredEvents, StorageError> {
        self.retrying_while_busy(|| self.store_events_once(records, escalate_from))
            .await
    }

    async fn store_events_once(
        &self,
        records: &[EventRecord],
        escalate_from: Severity,
    ) -> Result<StoredEvents, StorageError> {
        // A repeat of a key within the batch is not sent: the first with a key is the one
        // stored, whatever order the engine inserts the rows of one statement in.
        let mut seen = HashSet::new();
        let records: Vec<&EventRecord> = records
            .iter()
            .filter(|record| seen.insert(record.uid.as_str()))
            .collect();
        if records.is_empty() {
            return Ok(StoredEvents::default());
        }
        in_write_transaction!(self, |tx| {
            let inserted = <Db as EventStatements>::insert_events(&mut tx, &records).await?;
            let mut new_ids: HashMap<&str, i64> = HashMap::with_capacity(inserted.len());
            for (id, uid, _) in &inserted {
                new_ids.insert(uid.as_str(), *id);
            }
            let mut added = EventCountDelta::default();
            for record in &records {
                if new_ids.contains_key(record.uid.as_str()) {
                    added.add(&record.event);
                }
            }

            let mut to_escalate = Vec::new();
            let mut already_stored = Vec::new();
            for record in &records {
                match new_ids.get(record.uid.as_str()) {
                    Some(&id) if record.event.severity >= escalate_from => {
                        to_escalate.push(stored_event(record, id))
                    }
                    Some(_) => {}
                    None => already_stored.push(record.uid.as_str()),
                }
            }
            // Keys stored before (a redelivery): escalate what the database holds, which is
            // what the first delivery stored.
            if !already_stored.is_empty() {
                for row in <Db as EventStatements>::events_by_uids(&mut tx, &already_stored).await?
                {
                    let event = Event::try_from(row)?;
                    if event.severity >= escalate_from {
                        to_escalate.push(event);
                    }
                }
            }

            // Last before the commit, so that the count rows stay locked briefly.
            let shard = <Db as CountShards>::claim_count_shard(&mut tx).await?;
            for mut upsert in added.upserts::<Db>(shard) {
                upsert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(StoredEvents {
                newly_stored: inserted.len() as u64,
                to_escalate,
            })
        })
    }

    /// One event by id.
    pub async fn event_by_id(&self, id: i64) -> Result<Option<Event>, StorageError> {
        let sql = format!("{SELECT_EVENT} WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, EventRow>(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Event::try_from).transpose()
    }

    /// One event by its idempotency key.
    pub async fn event_by_uid(&self, uid: &str) -> Result<Option<Event>, StorageError> {
        let sql = format!("{SELECT_EVENT} WHERE uid = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, EventRow>(AssertSqlSafe(sql))
                .bind(uid)
                .fetch_optional(pool)
                .await?
        });
        row.map(Event::try_from).transpose()
    }

    /// How many events are stored (from `event_counts`: no scan).
    pub async fn count_events(&self) -> Result<i64, StorageError> {
        self.count_events_matching(&EventFilter::default()).await
    }

    /// How many events match `filter`. A filter on the severity, the type or the sensor (not
    /// both of those) is answered from a counts table (a few rows); any other counts the
    /// matching rows.
    pub async fn count_events_matching(&self, filter: &EventFilter) -> Result<i64, StorageError> {
        self.count_matching(filter).await
    }

    /// The events matching `filter`, newest first, `limit` of them after skipping `offset`
    /// (a negative `limit` or `offset` counts as 0, on both engines).
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Event>, StorageError> {
        let rows: Vec<EventRow> = self
            .list_matching(filter, "ORDER BY id DESC", limit, offset)
            .await?;
        rows.into_iter().map(Event::try_from).collect()
    }

    /// The events counted in an alert, newest first, `limit` of them after skipping `offset`
    /// (negative counts as 0). How many there are is the alert's `count`.
    pub async fn alert_events(
        &self,
        alert_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Event>, StorageError> {
        let sql = format!(
            "{SELECT_EVENT} WHERE id IN (SELECT event_id FROM alert_events WHERE alert_id = $1 \
             ORDER BY event_id DESC LIMIT $2 OFFSET $3) ORDER BY id DESC"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, EventRow>(AssertSqlSafe(sql))
                .bind(alert_id)
                .bind(limit.max(0))
                .bind(offset.max(0))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Event::try_from).collect()
    }
}
