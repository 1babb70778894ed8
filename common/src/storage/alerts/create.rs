//! Creating alerts and folding repeats into them: each escalated event is counted in exactly
//! one alert, once, however often its escalation arrives and whatever runs at once.
//!
//! Without a fold key (`ALERT_FOLD_KEY=none`) every event opens its own alert; the unique
//! `alerts.event_id` makes a redelivery a no-op. With one, a batch's transaction first takes
//! the `open_folds` row of each key it holds (an upsert, in key order, so two alerters never
//! wait on each other in a circle): whoever folds a key next waits for this transaction and
//! then sees its alert and its counted events. Under those locks it drops the events that
//! `alert_events` already counts (a redelivery), locks the keys' open alerts, and plans (see
//! [`plan_fold`]) which events fold into them and which open new ones.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Sqlite};

use super::{
    AlertRow, CreatedAlerts, SELECT_ALERT, STATUS_CHANGE_COLUMNS, StatusChange, StatusChangeRow,
    search_words,
};
use crate::domain::{Alert, AlertStatus, Event, FoldKey, Severity, to_micros};
use crate::storage::counts::{AlertCountDelta, CountShards, creation_hour};
use crate::storage::sql::{BindValue, Value, in_list_chunks, push_tuple};
use crate::storage::{Storage, StorageError, fixed_shape_chunks, in_write_transaction, pg_chunks};

/// How escalated events fold into alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folding {
    /// Which fields events must share to fold together; `none` folds nothing.
    pub key: FoldKey,
    /// How long after its last event an open alert still absorbs the next, in seconds.
    pub window_secs: u64,
}

impl Folding {
    /// One alert per escalated event: the original's behaviour.
    pub fn none() -> Self {
        Folding {
            key: FoldKey::none(),
            window_secs: 0,
        }
    }
}

/// Postgres creates a batch's alerts, records their creation and counts their events with
/// one statement each of one text, whatever the batch size (so that each stays a cached
/// prepared statement).
const INSERT_ALERTS_UNNEST: &str = "INSERT INTO alerts (event_id, source_name, event_type, \
     severity, status, created_at, updated_at, event_count, first_seen_at, last_seen_at, \
     last_event_id, fold_key, search) \
     SELECT event_id, source_name, event_type, severity, $5, $6, $6, event_count, \
     first_seen_at, last_seen_at, last_event_id, fold_key, \
     to_tsvector('simple', document) \
     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::smallint[], $7::bigint[], \
     $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[]) \
     AS batch (event_id, source_name, event_type, severity, event_count, first_seen_at, \
     last_seen_at, last_event_id, fold_key, document) \
     ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id";
const RECORD_CREATIONS_UNNEST: &str = "INSERT INTO alert_status_changes (alert_id, to_status, \
     changed_at) SELECT alert_id, $2, $3 FROM UNNEST($1::bigint[]) AS batch (alert_id)";
const COUNT_EVENTS_UNNEST: &str = "INSERT INTO alert_events (event_id, alert_id) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[]) ON CONFLICT (event_id) DO NOTHING";

/// An alert a batch opens: its first event and what it folds of the batch.
#[derive(Debug, Clone, PartialEq)]
struct NewAlert<'a> {
    first: &'a Event,
    /// The batch's events it holds, in id order, `first` first (so the last is the newest).
    events: Vec<&'a Event>,
    severity: Severity,
    fold_key: Option<String>,
}

impl NewAlert<'_> {
    fn first_seen(&self) -> i64 {
        self.events
            .iter()
            .map(|e| to_micros(e.created_at))
            .min()
            .unwrap_or_default()
    }

    fn last_seen(&self) -> i64 {
        self.events
            .iter()
            .map(|e| to_micros(e.created_at))
            .max()
            .unwrap_or_default()
    }

    fn last_event_id(&self) -> i64 {
        self.events.last().map_or(self.first.id, |e| e.id)
    }
}

/// The statements whose fastest form differs by engine.
trait AlertStatements: sqlx::Database {
    /// Inserts each alert unless its first event has one; returns `(id, event_id)` of each
    /// alert inserted.
    async fn insert_alerts(
        conn: &mut Self::Connection,
        alerts: &[NewAlert<'_>],
        now: i64,
    ) -> Result<Vec<(i64, i64)>, StorageError>;

    /// Records the creation (to `OPEN`, by the pipeline) of each of these alerts.
    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError>;

    /// Counts each event in its alert (`alert_events`): `(event_id, alert_id)` pairs, unless
    /// it is counted already; returns how many it counted.
    async fn count_events(
        conn: &mut Self::Connection,
        pairs: &[(i64, i64)],
    ) -> Result<u64, StorageError>;

    /// The alerts of these events.
    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError>;

    /// Which of these events `alert_events` counts already.
    async fn counted_events(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<HashSet<i64>, StorageError>;
}

/// SQLite: multi-row `VALUES` and `IN` lists, in chunks.
impl AlertStatements for Sqlite {
    async fn insert_alerts(
        conn: &mut Self::Connection,
        alerts: &[NewAlert<'_>],
        now: i64,
    ) -> Result<Vec<(i64, i64)>, StorageError> {
        let mut inserted = Vec::with_capacity(alerts.len());
        for chunk in fixed_shape_chunks(alerts) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alerts (event_id, source_name, event_type, severity, status, \
                 created_at, updated_at, event_count, first_seen_at, last_seen_at, \
                 last_event_id, fold_key) ",
            );
            query.push_values(chunk, |mut row, alert| {
                row.push_bind(alert.first.id)
                    .push_bind(alert.first.source_name.as_str())
                    .push_bind(alert.first.event_type.as_str())
                    .push_bind(alert.severity.rank())
                    .push_bind(AlertStatus::Open.as_str())
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(alert.events.len() as i64)
                    .push_bind(alert.first_seen())
                    .push_bind(alert.last_seen())
                    .push_bind(alert.last_event_id())
                    .push_bind(alert.fold_key.as_deref());
            });
            query.push(" ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id");
            inserted.extend(
                query
                    .build_query_as::<(i64, i64)>()
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        // Their search documents (alert_search), by rowid = alert id.
        let by_first_event: HashMap<i64, &NewAlert> =
            alerts.iter().map(|a| (a.first.id, a)).collect();
        let documents: Vec<(i64, &NewAlert)> = inserted
            .iter()
            .filter_map(|(id, event_id)| by_first_event.get(event_id).map(|a| (*id, *a)))
            .collect();
        for chunk in fixed_shape_chunks(&documents) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alert_search (rowid, source_name, event_type, description) ",
            );
            query.push_values(chunk, |mut row, (id, alert)| {
                let [source, kind, description] = alert.search_document();
                row.push_bind(*id)
                    .push_bind(source)
                    .push_bind(kind)
                    .push_bind(description);
            });
            query.build().execute(&mut *conn).await?;
        }
        Ok(inserted)
    }

    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError> {
        for chunk in fixed_shape_chunks(alert_ids) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alert_status_changes (alert_id, to_status, changed_at) ",
            );
            query.push_values(chunk, |mut row, id| {
                row.push_bind(*id)
                    .push_bind(AlertStatus::Open.as_str())
                    .push_bind(now);
            });
            query.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn count_events(
        conn: &mut Self::Connection,
        pairs: &[(i64, i64)],
    ) -> Result<u64, StorageError> {
        let mut counted = 0;
        for chunk in fixed_shape_chunks(pairs) {
            let mut query =
                QueryBuilder::<Sqlite>::new("INSERT INTO alert_events (event_id, alert_id) ");
            query.push_values(chunk, |mut row, (event_id, alert_id)| {
                row.push_bind(*event_id).push_bind(*alert_id);
            });
            query.push(" ON CONFLICT (event_id) DO NOTHING");
            counted += query.build().execute(&mut *conn).await?.rows_affected();
        }
        Ok(counted)
    }

    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError> {
        let mut rows = Vec::with_capacity(event_ids.len());
        let prefix = format!("{SELECT_ALERT} WHERE event_id IN ");
        for mut query in in_list_chunks::<Sqlite, _>(&prefix, event_ids) {
            rows.extend(
                query
                    .build_query_as::<AlertRow>()
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(rows)
    }

    async fn counted_events(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<HashSet<i64>, StorageError> {
        let mut counted = HashSet::new();
        for mut query in in_list_chunks::<Sqlite, _>(
            "SELECT event_id FROM alert_events WHERE event_id IN ",
            event_ids,
        ) {
            for (id,) in query
                .build_query_as::<(i64,)>()
                .fetch_all(&mut *conn)
                .await?
            {
                counted.insert(id);
            }
        }
        Ok(counted)
    }
}

/// Postgres: one statement per batch, with one array per column.
impl AlertStatements for Postgres {
    async fn insert_alerts(
        conn: &mut Self::Connection,
        alerts: &[NewAlert<'_>],
        now: i64,
    ) -> Result<Vec<(i64, i64)>, StorageError> {
        let mut inserted = Vec::with_capacity(alerts.len());
        let size = |a: &NewAlert| {
            a.first.source_name.len()
                + a.first.event_type.len()
                + a.first.description.len()
                + 50
                + a.fold_key_len()
        };
        for chunk in pg_chunks(alerts, size) {
            inserted.extend(pg_insert_alert_chunk(conn, chunk, now).await?);
        }
        Ok(inserted)
    }

    async fn record_creations(
        conn: &mut Self::Connection,
        alert_ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError> {
        sqlx::query::<Postgres>(RECORD_CREATIONS_UNNEST)
            .bind(alert_ids)
            .bind(AlertStatus::Open.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn count_events(
        conn: &mut Self::Connection,
        pairs: &[(i64, i64)],
    ) -> Result<u64, StorageError> {
        let (event_ids, alert_ids): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        let done = sqlx::query::<Postgres>(COUNT_EVENTS_UNNEST)
            .bind(event_ids)
            .bind(alert_ids)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }

    async fn alerts_by_event_ids(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<Vec<AlertRow>, StorageError> {
        let sql = format!("{SELECT_ALERT} WHERE event_id = ANY($1::bigint[])");
        let rows = sqlx::query_as::<Postgres, AlertRow>(AssertSqlSafe(sql))
            .bind(event_ids)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows)
    }

    async fn counted_events(
        conn: &mut Self::Connection,
        event_ids: &[i64],
    ) -> Result<HashSet<i64>, StorageError> {
        let ids = sqlx::query_scalar::<Postgres, i64>(
            "SELECT event_id FROM alert_events WHERE event_id = ANY($1::bigint[])",
        )
        .bind(event_ids)
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().collect())
    }
}

impl NewAlert<'_> {
    fn fold_key_len(&self) -> usize {
        self.fold_key.as_ref().map_or(0, String::len)
    }

    /// What `q=` searches (the sensor, the type and the first event's description) as its
    /// words (see [`search_words`]), so that both engines index exactly the words a query is
    /// reduced to: PostgreSQL's parser would otherwise keep `mail.example.com` or
    /// `203.0.113.9` whole, where FTS5 splits them. (No NUL survives either.)
    fn search_document(&self) -> [String; 3] {
        [
            &self.first.source_name,
            &self.first.event_type,
            &self.first.description,
        ]
        .map(|text| search_words(text).join(" "))
    }
}

/// One `INSERT … SELECT FROM UNNEST` of `alerts` (Postgres).
async fn pg_insert_alert_chunk(
    conn: &mut PgConnection,
    alerts: &[NewAlert<'_>],
    now: i64,
) -> Result<Vec<(i64, i64)>, StorageError> {
    let n = alerts.len();
    let mut event_ids = Vec::with_capacity(n);
    let mut source_names = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut severities = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    let mut first_seen = Vec::with_capacity(n);
    let mut last_seen = Vec::with_capacity(n);
    let mut last_event_ids = Vec::with_capacity(n);
    let mut fold_keys = Vec::with_capacity(n);
    let mut descriptions = Vec::with_capacity(n);
    for alert in alerts {
        event_ids.push(alert.first.id);
        source_names.push(alert.first.source_name.as_str());
        event_types.push(alert.first.event_type.as_str());
        severities.push(alert.severity.rank());
        counts.push(alert.events.len() as i64);
        first_seen.push(alert.first_seen());
        last_seen.push(alert.last_seen());
        last_event_ids.push(alert.last_event_id());
        fold_keys.push(alert.fold_key.as_deref());
        descriptions.push(alert.search_document().join(" "));
    }
    let inserted = sqlx::query_as::<Postgres, (i64, i64)>(INSERT_ALERTS_UNNEST)
        .bind(event_ids)
        .bind(source_names)
        .bind(event_types)
        .bind(severities)
        .bind(AlertStatus::Open.as_str())
        .bind(now)
        .bind(counts)
        .bind(first_seen)
        .bind(last_seen)
        .bind(last_event_ids)
        .bind(fold_keys)
        .bind(descriptions)
        .fetch_all(&mut *conn)
        .await?;
    Ok(inserted)
}

/// The open alert of a fold key, as its row lock found it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FoldTarget {
    id: i64,
    status: AlertStatus,
    severity: Severity,
    last_seen: i64,
}

/// Where a run of one key's events goes.
#[derive(Debug, Clone, PartialEq)]
enum FoldRun<'a> {
    /// Into the key's open alert.
    Into(Vec<&'a Event>),
    /// Into a new alert.
    New(Vec<&'a Event>),
}

/// Plans where one fold key's new events go, given its current alert (if any): in id order,
/// each event folds into the alert of the run before it while that alert is open (not
/// RESOLVED) and its last event is at most `window_us` older; otherwise it opens a new
/// alert. Only the first run can be [`FoldRun::Into`].
fn plan_fold<'a>(
    events: &[&'a Event],
    target: Option<FoldTarget>,
    window_us: i64,
) -> Vec<FoldRun<'a>> {
    let mut runs: Vec<FoldRun<'a>> = Vec::new();
    let mut last_seen = target
        .filter(|t| t.status != AlertStatus::Resolved)
        .map(|t| t.last_seen);
    let mut into_target = last_seen.is_some();
    for &event in events {
        let at = to_micros(event.created_at);
        let fits = last_seen.is_some_and(|last| at.saturating_sub(last) <= window_us);
        match runs.last_mut() {
            Some(FoldRun::Into(run) | FoldRun::New(run)) if fits => run.push(event),
            None if fits && into_target => runs.push(FoldRun::Into(vec![event])),
            _ => runs.push(FoldRun::New(vec![event])),
        }
        into_target = false;
        last_seen = Some(last_seen.map_or(at, |last| last.max(at)));
    }
    runs
}

/// Events folded now into an existing alert, and what that does to it.
struct Bump {
    target: FoldTarget,
    event_type: String,
    source_name: String,
    /// When the alert was made (micros): the hour its counts are kept in.
    created_at: i64,
    count: i64,
    first_seen: i64,
    last_seen: i64,
    last_event_id: i64,
    severity: Severity,
    /// The event of highest severity, when it raised the alert's.
    raised_by: Option<i64>,
    /// The events folded in, in id order.
    events: Vec<i64>,
}

impl Bump {
    fn status(&self) -> AlertStatus {
        match (self.raised_by, self.target.status) {
            (Some(_), AlertStatus::Acknowledged) => AlertStatus::Open,
            (_, status) => status,
        }
    }

    /// The history row's reason for a rise in severity.
    fn reason(&self) -> Option<String> {
        let event = self.raised_by?;
        let mut reason = format!(
            "event {event} raised the severity from {} to {}",
            self.target.severity, self.severity
        );
        if self.status() != self.target.status {
            reason.push_str(", reopening the alert");
        }
        Some(reason)
    }
}

/// `UPDATE alerts … FROM (VALUES …)` for a run of bumps (both engines name the columns of a
/// `VALUES` list `column1`, `column2`, …).
fn bump_statement<DB: BindValue>(bumps: &[&Bump], now: i64) -> QueryBuilder<DB> {
    let mut query = QueryBuilder::new(
        "UPDATE alerts SET event_count = alerts.event_count + v.column2, \
         last_seen_at = v.column3, last_event_id = v.column4, severity = v.column5, \
         status = v.column6, version = alerts.version + v.column7, \
         updated_at = CASE WHEN v.column7 = 1 THEN v.column8 ELSE alerts.updated_at END, \
         first_seen_at = v.column9 FROM (VALUES ",
    );
    for (i, bump) in bumps.iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        let raised = bump.raised_by.is_some();
        push_tuple(
            &mut query,
            [
                Value::Int(bump.target.id),
                Value::Int(bump.count),
                Value::Int(bump.last_seen),
                Value::Int(bump.last_event_id),
                Value::SmallInt(bump.severity.rank()),
                Value::from(bump.status().as_str()),
                Value::Int(i64::from(raised)),
                Value::Int(now),
                Value::Int(bump.first_seen),
            ],
        );
    }
    query.push(") AS v WHERE alerts.id = v.column1");
    query
}

impl Storage {
    /// Makes the alert of each escalated event, in one transaction, unless it exists: an event
    /// has exactly one alert however often its escalation arrives (no folding: see
    /// [`Storage::fold_alerts`]).
    pub async fn create_alerts(
        &self,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<CreatedAlerts, StorageError> {
        self.fold_alerts(events, &Folding::none(), now).await
    }

    /// Counts each escalated event in exactly one alert, in one transaction: the open alert
    /// of its fold key when there is one (raising its severity if the event's is higher, and
    /// reopening it then if it was acknowledged), else a new one. An event already counted
    /// (a redelivery) changes nothing. Returns the alerts the batch's events opened, now or
    /// before, and the pipeline's changes to existing alerts; the alert counts follow in the
    /// same transaction.
    pub async fn fold_alerts(
        &self,
        events: &[Event],
        folding: &Folding,
        now: DateTime<Utc>,
    ) -> Result<CreatedAlerts, StorageError> {
        self.retrying_while_busy(|| self.fold_alerts_once(events, folding, now))
            .await
    }

    async fn fold_alerts_once(
        &self,
        events: &[Event],
        folding: &Folding,
        now: DateTime<Utc>,
    ) -> Result<CreatedAlerts, StorageError> {
        let mut seen = HashSet::new();
        let mut events: Vec<&Event> = events.iter().filter(|e| seen.insert(e.id)).collect();
        if events.is_empty() {
            return Ok(CreatedAlerts::default());
        }
        events.sort_by_key(|e| e.id);
        let event_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        // Each key's events in id order, keys in hash order (the order their locks are taken).
        let mut by_key: BTreeMap<String, (String, Vec<&Event>)> = BTreeMap::new();
        for &event in &events {
            if let Some(value) = folding.key.value_of(event) {
                let fields = serde_json::to_string(&value.fields).unwrap_or_default();
                by_key
                    .entry(value.hash)
                    .or_insert_with(|| (fields, Vec::new()))
                    .1
                    .push(event);
            }
        }
        let window_us = i64::try_from(folding.window_secs)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000);
        let lock_rows = matches!(self, Storage::Postgres(_));
        let now = to_micros(now);
        in_write_transaction!(self, |tx| {
            let mut new_alerts: Vec<NewAlert> = Vec::new();
            let mut bumps: Vec<Bump> = Vec::new();
            // The new alert that each key's open_folds row must point to after this batch.
            let mut repoint: Vec<(&str, i64)> = Vec::new();
            let mut repoint_first_event: Vec<(&str, i64)> = Vec::new();
            if by_key.is_empty() {
                // Events an alerter folding by a key counted are left where they are.
                let counted = <Db as AlertStatements>::counted_events(&mut tx, &event_ids).await?;
                new_alerts = events
                    .iter()
                    .filter(|e| !counted.contains(&e.id))
                    .map(|&e| NewAlert {
                        first: e,
                        events: vec![e],
                        severity: e.severity,
                        fold_key: None,
                    })
                    .collect();
            } else {
                let hashes: Vec<&str> = by_key.keys().map(String::as_str).collect();
                let mut folds: HashMap<String, Option<i64>> = HashMap::new();
                for chunk in fixed_shape_chunks(&hashes) {
                    let mut query = QueryBuilder::<Db>::new(
                        "INSERT INTO open_folds (fold_hash, alert_id) VALUES ",
                    );
                    for (i, hash) in chunk.iter().enumerate() {
                        query.push(if i == 0 { "(" } else { ", (" });
                        query.push_bind(*hash);
                        query.push(", NULL)");
                    }
                    query.push(
                        " ON CONFLICT (fold_hash) DO UPDATE SET alert_id = open_folds.alert_id \
                         RETURNING fold_hash, alert_id",
                    );
                    for (hash, alert_id) in query
                        .build_query_as::<(String, Option<i64>)>()
                        .fetch_all(&mut *tx)
                        .await?
                    {
                        folds.insert(hash, alert_id);
                    }
                }
                let counted = <Db as AlertStatements>::counted_events(&mut tx, &event_ids).await?;
                let mut target_ids: Vec<i64> = folds.values().flatten().copied().collect();
                target_ids.sort_unstable();
                let mut targets: HashMap<i64, AlertRow> = HashMap::new();
                let prefix = format!("{SELECT_ALERT} WHERE id IN ");
                for mut query in in_list_chunks::<Db, _>(&prefix, &target_ids) {
                    query.push(" ORDER BY id");
                    if lock_rows {
                        query.push(" FOR UPDATE");
                    }
                    for row in query
                        .build_query_as::<AlertRow>()
                        .fetch_all(&mut *tx)
                        .await?
                    {
                        targets.insert(row.id, row);
                    }
                }
                for (hash, (fields, key_events)) in &by_key {
                    let fresh: Vec<&Event> = key_events
                        .iter()
                        .copied()
                        .filter(|e| !counted.contains(&e.id))
                        .collect();
                    let target_row = folds
                        .get(hash)
                        .copied()
                        .flatten()
                        .and_then(|id| targets.get(&id));
                    let target = match target_row {
                        Some(row) => Some(FoldTarget {
                            id: row.id,
                            status: row.status.parse().map_err(|_| {
                                StorageError::Corrupt(format!("alert {}: status", row.id))
                            })?,
                            severity: Severity::from_rank(row.severity).ok_or_else(|| {
                                StorageError::Corrupt(format!("alert {}: severity", row.id))
                            })?,
                            last_seen: row.last_seen_at,
                        }),
                        None => None,
                    };
                    let runs = plan_fold(&fresh, target, window_us);
                    let last_new = runs.iter().rposition(|r| matches!(r, FoldRun::New(_)));
                    for (i, run) in runs.into_iter().enumerate() {
                        match run {
                            FoldRun::Into(run) => {
                                let (Some(target), Some(row)) = (target, target_row) else {
                                    continue;
                                };
                                let top = run.iter().max_by_key(|e| (e.severity, e.id));
                                let raised_by =
                                    top.filter(|e| e.severity > target.severity).map(|e| e.id);
                                bumps.push(Bump {
                                    target,
                                    event_type: row.event_type.clone(),
                                    source_name: row.source_name.clone(),
                                    created_at: row.created_at,
                                    count: run.len() as i64,
                                    first_seen: run
                                        .iter()
                                        .map(|e| to_micros(e.created_at))
                                        .fold(row.first_seen_at, i64::min),
                                    last_seen: run
                                        .iter()
                                        .map(|e| to_micros(e.created_at))
                                        .fold(target.last_seen, i64::max),
                                    last_event_id: run
                                        .iter()
                                        .map(|e| e.id)
                                        .fold(row.last_event_id, i64::max),
                                    severity: target
                                        .severity
                                        .max(top.map_or(target.severity, |e| e.severity)),
                                    raised_by,
                                    events: run.iter().map(|e| e.id).collect(),
                                });
                            }
                            FoldRun::New(run) => {
                                let Some(&first) = run.first() else { continue };
                                if Some(i) == last_new {
                                    repoint_first_event.push((hash.as_str(), first.id));
                                }
                                let severity = run
                                    .iter()
                                    .map(|e| e.severity)
                                    .max()
                                    .unwrap_or(first.severity);
                                new_alerts.push(NewAlert {
                                    first,
                                    events: run,
                                    severity,
                                    fold_key: Some(fields.clone()),
                                });
                            }
                        }
                    }
                }
            }
            let mut created_ids = Vec::new();
            let mut added = AlertCountDelta::default();
            let mut pairs: Vec<(i64, i64)> = Vec::new();
            if !new_alerts.is_empty() {
                let created =
                    <Db as AlertStatements>::insert_alerts(&mut tx, &new_alerts, now).await?;
                let alert_of_event: HashMap<i64, i64> = created
                    .iter()
                    .map(|&(id, event_id)| (event_id, id))
                    .collect();
                for alert in &new_alerts {
                    let Some(&id) = alert_of_event.get(&alert.first.id) else {
                        if folding.key.is_none() {
                            // Another alerter made this event's alert meanwhile.
                            continue;
                        }
                        // The key's lock was held, so only an alerter not folding (by this
                        // key) can have made it: the plan is stale.
                        return Err(StorageError::Contended(format!(
                            "event {} got an alert outside its fold key's lock",
                            alert.first.id
                        )));
                    };
                    created_ids.push(id);
                    pairs.extend(alert.events.iter().map(|e| (e.id, id)));
                    added.add(
                        AlertStatus::Open.as_str(),
                        alert.severity.rank(),
                        &alert.first.event_type,
                        &alert.first.source_name,
                        creation_hour(now),
                        1,
                    );
                }
                for (hash, first_event) in &repoint_first_event {
                    if let Some(&id) = alert_of_event.get(first_event) {
                        repoint.push((hash, id));
                    }
                }
                created_ids.sort_unstable();
                if !created_ids.is_empty() {
                    <Db as AlertStatements>::record_creations(&mut tx, &created_ids, now).await?;
                }
            }
            for chunk in fixed_shape_chunks(&repoint) {
                let mut query = QueryBuilder::<Db>::new(
                    "UPDATE open_folds SET alert_id = v.column2 FROM (VALUES ",
                );
                for (i, (hash, id)) in chunk.iter().enumerate() {
                    if i > 0 {
                        query.push(", ");
                    }
                    push_tuple(&mut query, [Value::from(*hash), Value::Int(*id)]);
                }
                query.push(") AS v WHERE open_folds.fold_hash = v.column1");
                query.build().execute(&mut *tx).await?;
            }
            bumps.sort_by_key(|b| b.target.id);
            let bump_refs: Vec<&Bump> = bumps.iter().collect();
            for chunk in fixed_shape_chunks(&bump_refs) {
                bump_statement::<Db>(chunk, now)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            let mut folded = 0u64;
            for bump in &bumps {
                folded += bump.count as u64;
            }
            let mut raises: Vec<&Bump> = Vec::new();
            for bump in &bumps {
                if bump.raised_by.is_some() {
                    raises.push(bump);
                    added.moved(
                        (bump.target.status.as_str(), bump.target.severity.rank()),
                        (bump.status().as_str(), bump.severity.rank()),
                        &bump.event_type,
                        &bump.source_name,
                        creation_hour(bump.created_at),
                    );
                }
            }
            let mut changes: Vec<StatusChangeRow> = Vec::new();
            for chunk in fixed_shape_chunks(&raises) {
                let mut query = QueryBuilder::<Db>::new(
                    "INSERT INTO alert_status_changes (alert_id, from_status, to_status, \
                     reason, from_severity, to_severity, changed_at, notify_pending) VALUES ",
                );
                for (i, bump) in chunk.iter().enumerate() {
                    if i > 0 {
                        query.push(", ");
                    }
                    push_tuple(
                        &mut query,
                        [
                            Value::Int(bump.target.id),
                            Value::from(bump.target.status.as_str()),
                            Value::from(bump.status().as_str()),
                            Value::from(bump.reason().unwrap_or_default()),
                            Value::SmallInt(bump.target.severity.rank()),
                            Value::SmallInt(bump.severity.rank()),
                            Value::Int(now),
                            Value::Bool(true),
                        ],
                    );
                }
                query.push(format_args!(" RETURNING {STATUS_CHANGE_COLUMNS}"));
                changes.extend(
                    query
                        .build_query_as::<StatusChangeRow>()
                        .fetch_all(&mut *tx)
                        .await?,
                );
            }
            for bump in &bumps {
                pairs.extend(bump.events.iter().map(|&id| (id, bump.target.id)));
            }
            if !pairs.is_empty() {
                let counted = <Db as AlertStatements>::count_events(&mut tx, &pairs).await?;
                if counted != pairs.len() as u64 {
                    // Another alerter, folding by another key, counted some meanwhile.
                    return Err(StorageError::Contended(format!(
                        "{} of {} events were counted meanwhile",
                        pairs.len() as u64 - counted,
                        pairs.len()
                    )));
                }
            }
            // Last before the commit, so that the count rows stay locked briefly.
            let shard = <Db as CountShards>::claim_count_shard(&mut tx).await?;
            for mut upsert in added.upserts::<Db>(shard) {
                upsert.build().execute(&mut *tx).await?;
            }
            let rows = <Db as AlertStatements>::alerts_by_event_ids(&mut tx, &event_ids).await?;
            let mut updated_rows: HashMap<i64, AlertRow> = HashMap::new();
            if !changes.is_empty() {
                let ids: Vec<i64> = changes.iter().map(|c| c.alert_id).collect();
                let prefix = format!("{SELECT_ALERT} WHERE id IN ");
                for mut query in in_list_chunks::<Db, _>(&prefix, &ids) {
                    for row in query
                        .build_query_as::<AlertRow>()
                        .fetch_all(&mut *tx)
                        .await?
                    {
                        updated_rows.insert(row.id, row);
                    }
                }
            }
            tx.commit().await?;
            let mut alerts = Vec::with_capacity(rows.len());
            for row in rows {
                alerts.push(Alert::try_from(row)?);
            }
            let mut updates = Vec::with_capacity(changes.len());
            for change in changes {
                if let Some(row) = updated_rows.remove(&change.alert_id) {
                    updates.push((Alert::try_from(row)?, StatusChange::try_from(change)?));
                }
            }
            Ok(CreatedAlerts {
                alerts,
                newly_created: created_ids.len() as u64,
                folded,
                updates,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::from_micros;
    use proptest::prelude::*;

    fn event(id: i64, at_secs: i64, severity: Severity) -> Event {
        Event {
            id,
            uid: format!("u{id}"),
            source_name: "s".into(),
            event_type: "t".into(),
            severity,
            description: String::new(),
            occurred_at: None,
            attributes: None,
            created_at: from_micros(at_secs * 1_000_000),
        }
    }

    fn target(status: AlertStatus, last_seen_secs: i64) -> FoldTarget {
        FoldTarget {
            id: 7,
            status,
            severity: Severity::High,
            last_seen: last_seen_secs * 1_000_000,
        }
    }

    fn lengths(runs: &[FoldRun]) -> Vec<(bool, usize)> {
        runs.iter()
            .map(|run| match run {
                FoldRun::Into(events) => (true, events.len()),
                FoldRun::New(events) => (false, events.len()),
            })
            .collect()
    }

    #[test]
    fn events_fold_into_an_open_alert_within_the_window_only() {
        let events = [event(1, 100, Severity::High), event(2, 150, Severity::High)];
        let refs: Vec<&Event> = events.iter().collect();
        let window = 60 * 1_000_000;
        let open = plan_fold(&refs, Some(target(AlertStatus::Open, 90)), window);
        assert_eq!(lengths(&open), [(true, 2)]);
        let acked = plan_fold(&refs, Some(target(AlertStatus::Acknowledged, 90)), window);
        assert_eq!(lengths(&acked), [(true, 2)]);
        let resolved = plan_fold(&refs, Some(target(AlertStatus::Resolved, 90)), window);
        assert_eq!(lengths(&resolved), [(false, 2)]);
        let stale = plan_fold(&refs, Some(target(AlertStatus::Open, 10)), window);
        assert_eq!(lengths(&stale), [(false, 2)]);
        let none = plan_fold(&refs, None, window);
        assert_eq!(lengths(&none), [(false, 2)]);
        let gap = plan_fold(&refs, Some(target(AlertStatus::Open, 90)), 20 * 1_000_000);
        assert_eq!(lengths(&gap), [(true, 1), (false, 1)]);
    }

    proptest! {
        /// Every event lands in exactly one run, in order; only the first run folds into the
        /// existing alert; a run starts only after a gap longer than the window.
        #[test]
        fn every_event_lands_in_one_run(
            gaps in proptest::collection::vec(0i64..200, 0..40),
            last_seen in 0i64..300,
            window_secs in 1i64..100,
            status in prop::sample::select(AlertStatus::ALL.to_vec()),
        ) {
            let mut at = 200;
            let events: Vec<Event> = gaps.iter().enumerate().map(|(i, gap)| {
                at += gap;
                event(i as i64 + 1, at, Severity::High)
            }).collect();
            let refs: Vec<&Event> = events.iter().collect();
            let window = window_secs * 1_000_000;
            let runs = plan_fold(&refs, Some(target(status, last_seen)), window);
            let flat: Vec<i64> = runs.iter().flat_map(|run| match run {
                FoldRun::Into(events) | FoldRun::New(events) => events.iter().map(|e| e.id),
            }).collect();
            prop_assert_eq!(flat, refs.iter().map(|e| e.id).collect::<Vec<_>>());
            for (i, run) in runs.iter().enumerate() {
                match run {
                    FoldRun::Into(events) => {
                        prop_assert_eq!(i, 0);
                        prop_assert!(status != AlertStatus::Resolved);
                        prop_assert!(to_micros(events[0].created_at) - last_seen * 1_000_000 <= window);
                    }
                    FoldRun::New(events) => prop_assert!(!events.is_empty()),
                }
            }
        }
    }
}
