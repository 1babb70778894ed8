//! Exact counts without scans: `event_counts` (per severity) and `alert_counts` (per status
//! and severity), and the same again per event type (`*_counts_by_type`) and per sensor
//! (`*_counts_by_source`), are kept in the same transaction as every change to the rows they
//! count. A transaction collects what it adds in a delta ([`EventCountDelta`],
//! [`AlertCountDelta`]), claims a shard ([`CountShards`]) last before its commit, and upserts
//! the delta's keys in order into that shard; reads sum the shards.

use std::collections::BTreeMap;

use sqlx::QueryBuilder;

use super::StorageError;
use super::fixed_shape_chunks;
use super::sql::{BindValue, Value, push_tuple};
use crate::domain::NewEvent;

/// The key columns' values of one count row.
trait CountKey {
    fn values(&self) -> Vec<Value>;
}

impl CountKey for i16 {
    fn values(&self) -> Vec<Value> {
        vec![Value::SmallInt(*self)]
    }
}

impl CountKey for (&str, i16) {
    fn values(&self) -> Vec<Value> {
        vec![self.0.into(), Value::SmallInt(self.1)]
    }
}

impl CountKey for (&str, &str, i16) {
    fn values(&self) -> Vec<Value> {
        vec![self.0.into(), self.1.into(), Value::SmallInt(self.2)]
    }
}

impl CountKey for (i64, &str, i16) {
    fn values(&self) -> Vec<Value> {
        vec![Value::Int(self.0), self.1.into(), Value::SmallInt(self.2)]
    }
}

impl CountKey for (i64, &str, &str) {
    fn values(&self) -> Vec<Value> {
        vec![Value::Int(self.0), self.1.into(), self.2.into()]
    }
}

/// The hour of creation the `alert_counts_by_hour*` tables count an alert in.
pub(super) fn creation_hour(created_at_micros: i64) -> i64 {
    created_at_micros.div_euclid(3_600_000_000)
}

/// Appends to `upserts` the statements that add the counts of `delta` (keys in order) to
/// shard `shard` of counts table `table`, whose key columns are `keys`: `INSERT … VALUES (…),
/// (…) ON CONFLICT (keys…, shard) DO UPDATE SET n = table.n + excluded.n`, in the statement
/// sizes of [`fixed_shape_chunks`] so that their texts stay few and prepared.
fn push_upserts<DB: BindValue, K: CountKey>(
    upserts: &mut Vec<QueryBuilder<DB>>,
    table: &str,
    keys: &[&str],
    shard: i16,
    delta: &BTreeMap<K, i64>,
) {
    let keys = keys.join(", ");
    let rows: Vec<_> = delta.iter().collect();
    for chunk in fixed_shape_chunks(&rows) {
        let mut query =
            QueryBuilder::new(format!("INSERT INTO {table} ({keys}, shard, n) VALUES "));
        for (i, (key, n)) in chunk.iter().enumerate() {
            if i > 0 {
                query.push(", ");
            }
            let mut values = key.values();
            values.extend([Value::SmallInt(shard), Value::Int(**n)]);
            push_tuple(&mut query, values);
        }
        query.push(format_args!(
            " ON CONFLICT ({keys}, shard) DO UPDATE SET n = {table}.n + excluded.n"
        ));
        upserts.push(query);
    }
}

/// What a transaction adds to the event count tables.
#[derive(Default)]
pub(super) struct EventCountDelta<'a> {
    by_severity: BTreeMap<i16, i64>,
    by_type: BTreeMap<(&'a str, i16), i64>,
    by_source: BTreeMap<(&'a str, i16), i64>,
}

impl<'a> EventCountDelta<'a> {
    /// Counts one more stored event.
    pub(super) fn add(&mut self, event: &'a NewEvent) {
        let severity = event.severity.rank();
        *self.by_severity.entry(severity).or_default() += 1;
        *self
            .by_type
            .entry((event.event_type.as_str(), severity))
            .or_default() += 1;
        *self
            .by_source
            .entry((event.source_name.as_str(), severity))
            .or_default() += 1;
    }

    /// The upserts that add this delta to `shard`: nothing when it is empty.
    pub(super) fn upserts<DB: BindValue>(&self, shard: i16) -> Vec<QueryBuilder<DB>> {
        let mut upserts = Vec::new();
        push_upserts(
            &mut upserts,
            "event_counts",
            &["severity"],
            shard,
            &self.by_severity,
        );
        push_upserts(
            &mut upserts,
            "event_counts_by_type",
            &["event_type", "severity"],
            shard,
            &self.by_type,
        );
        push_upserts(
            &mut upserts,
            "event_counts_by_source",
            &["source_name", "severity"],
            shard,
            &self.by_source,
        );
        upserts
    }
}

/// What a transaction adds to (or moves between) the alert count tables.
#[derive(Default)]
pub(super) struct AlertCountDelta<'a> {
    by_status: BTreeMap<(&'a str, i16), i64>,
    by_type: BTreeMap<(&'a str, &'a str, i16), i64>,
    by_source: BTreeMap<(&'a str, &'a str, i16), i64>,
    by_hour: BTreeMap<(i64, &'a str, i16), i64>,
    by_hour_source: BTreeMap<(i64, &'a str, &'a str), i64>,
    by_hour_type: BTreeMap<(i64, &'a str, &'a str), i64>,
}

impl<'a> AlertCountDelta<'a> {
    /// Adds `n` (negative to take away) alerts with this status, severity, type and sensor,
    /// created in `hour` (see [`creation_hour`]).
    pub(super) fn add(
        &mut self,
        status: &'a str,
        severity: i16,
        event_type: &'a str,
        source_name: &'a str,
        hour: i64,
        n: i64,
    ) {
        *self.by_hour.entry((hour, status, severity)).or_default() += n;
        *self
            .by_hour_source
            .entry((hour, source_name, status))
            .or_default() += n;
        *self
            .by_hour_type
            .entry((hour, event_type, status))
            .or_default() += n;
        *self.by_status.entry((status, severity)).or_default() += n;
        *self
            .by_type
            .entry((event_type, status, severity))
            .or_default() += n;
        *self
            .by_source
            .entry((source_name, status, severity))
            .or_default() += n;
    }

    /// Moves one alert from the counts of its old (status, severity) to its new.
    pub(super) fn moved(
        &mut self,
        from: (&'a str, i16),
        to: (&'a str, i16),
        event_type: &'a str,
        source_name: &'a str,
        hour: i64,
    ) {
        self.add(from.0, from.1, event_type, source_name, hour, -1);
        self.add(to.0, to.1, event_type, source_name, hour, 1);
    }

    /// The upserts that add this delta to `shard`: nothing when it is empty.
    pub(super) fn upserts<DB: BindValue>(&self, shard: i16) -> Vec<QueryBuilder<DB>> {
        let mut upserts = Vec::new();
        push_upserts(
            &mut upserts,
            "alert_counts",
            &["status", "severity"],
            shard,
            &self.by_status,
        );
        push_upserts(
            &mut upserts,
            "alert_counts_by_type",
            &["event_type", "status", "severity"],
            shard,
            &self.by_type,
        );
        push_upserts(
            &mut upserts,
            "alert_counts_by_source",
            &["source_name", "status", "severity"],
            shard,
            &self.by_source,
        );
        push_upserts(
            &mut upserts,
            "alert_counts_by_hour",
            &["hour", "status", "severity"],
            shard,
            &self.by_hour,
        );
        push_upserts(
            &mut upserts,
            "alert_counts_by_hour_source",
            &["hour", "source_name", "status"],
            shard,
            &self.by_hour_source,
        );
        push_upserts(
            &mut upserts,
            "alert_counts_by_hour_type",
            &["hour", "event_type", "status"],
            shard,
            &self.by_hour_type,
        );
        upserts
    }
}

/// Shards of each counts table on PostgreSQL (see migration 0007): more than the writers
/// that run at once (two batches in flight per worker, the api's changes), so a writer
/// almost always finds one free without waiting.
pub(super) const POSTGRES_COUNT_SHARDS: i16 = 32;

/// The advisory-lock class of count shards (`pg_advisory_xact_lock(class, shard)`; "tmcs").
const COUNT_SHARD_LOCK_CLASS: i32 = 0x746d_6373;

/// How a writing transaction picks the shard of the counts tables it adds to.
pub(crate) trait CountShards: sqlx::Database {
    /// A shard that no other running transaction writes, held until this one ends.
    async fn claim_count_shard(conn: &mut Self::Connection) -> Result<i16, StorageError>;
}

/// SQLite: one writer at a time, so always shard 0.
impl CountShards for sqlx::Sqlite {
    async fn claim_count_shard(_conn: &mut Self::Connection) -> Result<i16, StorageError> {
        Ok(0)
    }
}

/// Postgres: the first shard whose advisory lock is free, tried without waiting, from a
/// random start so that writers spread out. Only when every shard is taken does it wait,
/// and then on one shard's lock, not on rows.
impl CountShards for sqlx::Postgres {
    async fn claim_count_shard(conn: &mut Self::Connection) -> Result<i16, StorageError> {
        let free: Option<i16> = sqlx::query_scalar(
            "SELECT CAST(s % $2 AS SMALLINT) \
             FROM (SELECT CAST(floor(random() * $2) AS INT) AS start) AS r, \
                  generate_series(r.start, r.start + $2 - 1) AS s \
             WHERE pg_try_advisory_xact_lock($1, s % $2) LIMIT 1",
        )
        .bind(COUNT_SHARD_LOCK_CLASS)
        .bind(i32::from(POSTGRES_COUNT_SHARDS))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(shard) = free {
            return Ok(shard);
        }
        let shard: i16 = sqlx::query_scalar(
            "SELECT CAST(pg_backend_pid() % $2 AS SMALLINT) \
             FROM (SELECT pg_advisory_xact_lock($1, pg_backend_pid() % $2)) AS locked",
        )
        .bind(COUNT_SHARD_LOCK_CLASS)
        .bind(i32::from(POSTGRES_COUNT_SHARDS))
        .fetch_one(&mut *conn)
        .await?;
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, Sqlite};

    use super::*;

    #[test]
    fn upserts_add_to_every_key_of_the_shard_in_key_order() {
        let mut moved = AlertCountDelta::default();
        moved.moved(("OPEN", 3), ("ACKNOWLEDGED", 3), "login", "fw", 491_000);
        let upserts = moved.upserts::<Postgres>(7);
        // Two keys in each of the six tables, sent as statements of one row (1 and 4 are
        // statement sizes, 2 is not).
        assert_eq!(upserts.len(), 12);
        assert_eq!(
            upserts[0].sql().as_str(),
            "INSERT INTO alert_counts (status, severity, shard, n) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (status, severity, shard) DO UPDATE SET n = alert_counts.n + excluded.n"
        );
        assert!(AlertCountDelta::default().upserts::<Sqlite>(0).is_empty());
    }

    #[test]
    fn many_keys_are_upserted_in_statements_of_a_few_sizes() {
        let events: Vec<NewEvent> = (0..300)
            .map(|i| NewEvent {
                uid: None,
                source_name: "fw".into(),
                event_type: format!("type-{i}"),
                severity: crate::domain::Severity::High,
                description: String::new(),
                occurred_at: None,
                attributes: None,
            })
            .collect();
        let mut added = EventCountDelta::default();
        for event in &events {
            added.add(event);
        }
        let sizes: Vec<usize> = added
            .upserts::<Sqlite>(0)
            .iter()
            .map(|q| q.sql().as_str().matches("(?").count())
            .collect();
        // 1 severity; 300 types (256 + 4 × 11 … in fixed sizes); 1 sensor.
        assert_eq!(sizes.iter().sum::<usize>(), 1 + 300 + 1, "{sizes:?}");
    }
}
