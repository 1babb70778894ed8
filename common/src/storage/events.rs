//! Events: stored once per idempotency key, read newest first.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use sqlx::AssertSqlSafe;

use super::filter::{Clauses, Param, bind_params};
use super::{Storage, StorageError, on_pool, row_placeholders};
use crate::domain::{Event, NewEvent, Severity, from_micros, to_micros};

/// Rows per multi-row `INSERT`: 8 columns × 500 rows stays far below both engines' limit on
/// bound parameters (SQLite 32,766; Postgres 65,535).
const INSERT_CHUNK_ROWS: usize = 500;
const EVENT_COLUMNS: usize = 8;
const SELECT_EVENT: &str = "SELECT id, uid, source_name, event_type, severity, description, \
                            occurred_at, attributes, created_at FROM events";

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

impl EventFilter {
    /// The filter as `WHERE` conditions with their bound values.
    fn conditions(&self) -> Clauses {
        let mut clauses = Clauses::conditions();
        clauses.push_some("severity", "=", self.severity, |s| {
            Param::SmallInt(s.rank())
        });
        clauses.push_some("source_name", "=", self.source_name.clone(), Param::Text);
        clauses.push_some("event_type", "=", self.event_type.clone(), Param::Text);
        clauses.push_some("created_at", ">=", self.created_from, |t| {
            Param::Int(to_micros(t))
        });
        clauses.push_some("created_at", "<=", self.created_to, |t| {
            Param::Int(to_micros(t))
        });
        clauses
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
    occurred_at: Option<i64>,
    attributes: Option<String>,
    created_at: i64,
}

impl TryFrom<EventRow> for Event {
    type Error = StorageError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        let severity = Severity::from_rank(row.severity).ok_or_else(|| {
            StorageError::Corrupt(format!("event {}: severity {}", row.id, row.severity))
        })?;
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
            description: row.description,
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

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (uid, source_name, event_type, severity, description, \
         occurred_at, attributes, created_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        row_placeholders(&mut sql, row * EVENT_COLUMNS + 1, EVENT_COLUMNS);
    }
    sql.push_str(" ON CONFLICT (uid) DO NOTHING RETURNING id, uid");
    sql
}

fn in_list_sql(prefix: &str, count: usize) -> String {
    let mut sql = String::from(prefix);
    sql.push_str(" IN ");
    row_placeholders(&mut sql, 1, count);
    sql
}

impl Storage {
    /// Stores a batch of events in one transaction. An event whose key is already stored is
    /// left as it is (not an error). Returns how many were new and which stored events of the
    /// batch are at or above `escalate_from`.
    pub async fn store_events(
        &self,
        records: &[EventRecord],
        escalate_from: Severity,
    ) -> Result<StoredEvents, StorageError> {
        if records.is_empty() {
            return Ok(StoredEvents::default());
        }
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut new_ids: HashMap<String, i64> = HashMap::with_capacity(records.len());
            for chunk in records.chunks(INSERT_CHUNK_ROWS) {
                let sql = insert_sql(chunk.len());
                let mut query = sqlx::query_as::<Db, (i64, String)>(AssertSqlSafe(sql));
                for record in chunk {
                    let event = &record.event;
                    let attributes = event
                        .attributes
                        .as_ref()
                        .map(|map| serde_json::Value::Object(map.clone()).to_string());
                    query = query
                        .bind(record.uid.as_str())
                        .bind(event.source_name.as_str())
                        .bind(event.event_type.as_str())
                        .bind(event.severity.rank())
                        .bind(event.description.as_str())
                        .bind(event.occurred_at.map(to_micros))
                        .bind(attributes)
                        .bind(to_micros(record.created_at));
                }
                for (id, uid) in query.fetch_all(&mut *tx).await? {
                    new_ids.insert(uid, id);
                }
            }

            let mut seen = HashSet::new();
            let mut to_escalate = Vec::new();
            let mut already_stored = Vec::new();
            for record in records {
                if !seen.insert(record.uid.as_str()) {
                    continue;
                }
                match new_ids.get(&record.uid) {
                    Some(&id) if record.event.severity >= escalate_from => {
                        to_escalate.push(stored_event(record, id))
                    }
                    Some(_) => {}
                    None => already_stored.push(record.uid.as_str()),
                }
            }
            // Keys stored before (a redelivery, or a repeat within the batch): escalate what
            // the database holds, which is what the first delivery stored.
            for chunk in already_stored.chunks(INSERT_CHUNK_ROWS) {
                let sql = in_list_sql(&format!("{SELECT_EVENT} WHERE uid"), chunk.len());
                let mut query = sqlx::query_as::<Db, EventRow>(AssertSqlSafe(sql));
                for uid in chunk {
                    query = query.bind(*uid);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    let event = Event::try_from(row)?;
                    if event.severity >= escalate_from {
                        to_escalate.push(event);
                    }
                }
            }
            tx.commit().await?;
            Ok(StoredEvents {
                newly_stored: new_ids.len() as u64,
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

    /// How many events are stored.
    pub async fn count_events(&self) -> Result<i64, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM events")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }

    /// How many events match `filter`.
    pub async fn count_events_matching(&self, filter: &EventFilter) -> Result<i64, StorageError> {
        let clauses = filter.conditions();
        let sql = format!("SELECT COUNT(*) FROM events{}", clauses.sql("WHERE"));
        let count = on_pool!(self, |pool| {
            bind_params!(
                sqlx::query_scalar::<Db, i64>(AssertSqlSafe(sql)),
                clauses.params()
            )
            .fetch_one(pool)
            .await?
        });
        Ok(count)
    }

    /// The events matching `filter`, newest first, `limit` of them after skipping `offset`
    /// (a negative `limit` or `offset` counts as 0, on both engines).
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Event>, StorageError> {
        let mut clauses = filter.conditions();
        let where_sql = clauses.sql("WHERE");
        let limit = clauses.bind(Param::Int(limit.max(0)));
        let offset = clauses.bind(Param::Int(offset.max(0)));
        let sql =
            format!("{SELECT_EVENT}{where_sql} ORDER BY id DESC LIMIT {limit} OFFSET {offset}");
        let rows = on_pool!(self, |pool| {
            bind_params!(
                sqlx::query_as::<Db, EventRow>(AssertSqlSafe(sql)),
                clauses.params()
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Event::try_from).collect()
    }
}
