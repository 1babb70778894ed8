//! Notification routes, their deliveries and every attempt at one (migration 0009).
//!
//! The database is the delivery queue: the alerter records one delivery per (alert message,
//! route) before it acknowledges the message, claims due deliveries with a lease (so that
//! several alerters never attempt one at once), writes each attempt before it is made and
//! completes it after. A crash mid-attempt leaves an `in_flight` attempt; when the lease runs
//! out the delivery is claimed again, that attempt is marked `interrupted`, and the delivery is
//! attempted once more (with the same `webhook-id`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::domain::{RouteKind, RouteSpec, Severity, Trigger, from_micros, to_micros};
use crate::storage::{Storage, StorageError, in_write_transaction, on_pool};

/// A stored route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Database id.
    pub id: i64,
    /// What it is.
    pub spec: RouteSpec,
    /// Loaded from `NOTIFY_ROUTES_FILE` (the file wins over the api at the next start).
    pub from_file: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RouteRow {
    id: i64,
    name: String,
    kind: String,
    url: Option<String>,
    to_addresses: String,
    secret: Option<String>,
    enabled: bool,
    min_severity: i16,
    sources: String,
    event_types: String,
    on_changes: String,
    repeat_every_secs: Option<i64>,
    from_file: bool,
    created_at: i64,
    updated_at: i64,
}

const ROUTE_COLUMNS: &str = "id, name, kind, url, to_addresses, secret, enabled, min_severity, \
     sources, event_types, on_changes, repeat_every_secs, from_file, created_at, updated_at";

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("notification route: {what}"))
}

impl TryFrom<RouteRow> for Route {
    type Error = StorageError;

    fn try_from(row: RouteRow) -> Result<Self, StorageError> {
        let list = |text: &str, what: &str| {
            serde_json::from_str::<Vec<String>>(text).map_err(|_| corrupt(what))
        };
        let on = list(&row.on_changes, "on")?
            .iter()
            .map(|name| Trigger::parse(name).ok_or_else(|| corrupt("on")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Route {
            id: row.id,
            spec: RouteSpec {
                name: row.name,
                kind: RouteKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
                url: row.url,
                to: list(&row.to_addresses, "to")?,
                secret: row.secret,
                enabled: row.enabled,
                min_severity: Severity::from_rank(row.min_severity)
                    .ok_or_else(|| corrupt("min_severity"))?,
                sources: list(&row.sources, "sources")?,
                event_types: list(&row.event_types, "event_types")?,
                on,
                repeat_every_secs: row.repeat_every_secs.and_then(|s| u64::try_from(s).ok()),
            },
            from_file: row.from_file,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        })
    }
}

/// The columns a route's spec is stored in, in [`ROUTE_WRITE_COLUMNS`] order.
struct RouteValues {
    name: String,
    kind: &'static str,
    url: Option<String>,
    to: String,
    secret: Option<String>,
    enabled: bool,
    min_severity: i16,
    sources: String,
    event_types: String,
    on: String,
    repeat_every_secs: Option<i64>,
}

impl RouteValues {
    fn of(spec: &RouteSpec) -> Result<RouteValues, StorageError> {
        let json = |list: &[String]| {
            serde_json::to_string(list).map_err(|e| StorageError::Corrupt(e.to_string()))
        };
        let on: Vec<String> = spec.on.iter().map(|t| t.as_str().to_owned()).collect();
        Ok(RouteValues {
            name: spec.name.clone(),
            kind: spec.kind.as_str(),
            url: spec.url.clone(),
            to: json(&spec.to)?,
            secret: spec.secret.clone(),
            enabled: spec.enabled,
            min_severity: spec.min_severity.rank(),
            sources: json(&spec.sources)?,
            event_types: json(&spec.event_types)?,
            on: json(&on)?,
            repeat_every_secs: spec.repeat_every_secs.and_then(|s| i64::try_from(s).ok()),
        })
    }
}

/// Binds a route's values ([`RouteValues`], in its order) to the next eleven placeholders of a
/// query: a macro, so that the same binds serve both engines' query types.
macro_rules! bind_route_values {
    ($query:expr, $values:expr) => {{
        let v = $values;
        $query
            .bind(v.name)
            .bind(v.kind)
            .bind(v.url)
            .bind(v.to)
            .bind(v.secret)
            .bind(v.enabled)
            .bind(v.min_severity)
            .bind(v.sources)
            .bind(v.event_types)
            .bind(v.on)
            .bind(v.repeat_every_secs)
    }};
}

/// A unique violation on the route's name as [`StorageError::Duplicate`]`("name")`.
fn route_error(err: sqlx::Error) -> StorageError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
        && (db.constraint() == Some("notification_routes_name_key")
            || db.message().contains("notification_routes.name"))
    {
        return StorageError::Duplicate("name");
    }
    err.into()
}

/// A delivery to record: one alert message (or reminder, or test) for one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The route.
    pub route_id: i64,
    /// The alert (none for a test message).
    pub alert_id: Option<i64>,
    /// Identifies the message among the route's: `alert-7-created`, `alert-7-change-12`,
    /// `alert-7-reminder-3`, `test-<uuid>`. With the route, the delivery's `webhook-id`.
    pub message_key: String,
    /// What happened.
    pub trigger: Trigger,
    /// The alert message (the JSON published on ALERTS).
    pub payload: String,
    /// The route's `repeat_every_secs` when the alert is OPEN after this message: recording
    /// it (re)starts the wait for the route's next reminder of the alert.
    pub remind_every_secs: Option<u64>,
}

/// A delivery claimed for an attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedDelivery {
    /// Database id.
    pub id: i64,
    /// The route.
    pub route_id: i64,
    /// The alert (none for a test message).
    pub alert_id: Option<i64>,
    /// See [`NewDelivery::message_key`].
    pub message_key: String,
    /// See [`Trigger::as_str`].
    pub trigger_name: String,
    /// The alert message.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the delivery was recorded (µs): the retry window counts from here.
    pub created_at: i64,
}

impl ClaimedDelivery {
    /// The Standard Webhooks `webhook-id`: the same for every attempt of this delivery.
    pub fn webhook_id(&self) -> String {
        delivery_webhook_id(&self.message_key, self.route_id)
    }
}

/// `<message key>-route-<route id>`: stable across attempts, crashes and alerters.
pub fn delivery_webhook_id(message_key: &str, route_id: i64) -> String {
    format!("{message_key}-route-{route_id}")
}

/// A delivery as recorded: one alert message for one route, its state and when it was
/// recorded (for tests and diagnostics; the delivery log shows its attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Database id.
    pub id: i64,
    /// The route.
    pub route_id: i64,
    /// The alert (none for a test message).
    pub alert_id: Option<i64>,
    /// See [`NewDelivery::message_key`].
    pub message_key: String,
    /// The `webhook-id` its attempts carry.
    pub webhook_id: String,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub state: String,
    /// Attempts begun so far.
    pub attempts: i64,
    /// When it was recorded (due at once).
    pub created_at: DateTime<Utc>,
    /// When it was delivered, failed or cancelled.
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    route_id: i64,
    alert_id: Option<i64>,
    message_key: String,
    state: String,
    attempts: i64,
    created_at: i64,
    finished_at: Option<i64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Being made (or its alerter stopped during it, until the delivery is claimed again).
    InFlight,
    /// The receiver accepted it.
    Delivered,
    /// It failed and will be retried at `next_attempt_at`.
    Retrying,
    /// It failed for good (a refusal, or the retry window ended): dead-lettered.
    Failed,
    /// Its alerter stopped during it; the delivery was attempted again.
    Interrupted,
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::InFlight => "in_flight",
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Option<AttemptOutcome> {
        [
            AttemptOutcome::InFlight,
            AttemptOutcome::Delivered,
            AttemptOutcome::Retrying,
            AttemptOutcome::Failed,
            AttemptOutcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// An attempt that ended, to record ([`Storage::finish_attempts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedAttempt {
    /// Its delivery.
    pub delivery_id: i64,
    /// The attempt, as [`Storage::begin_attempts`] numbered it.
    pub attempt_id: i64,
    /// What it found.
    pub result: AttemptResult,
}

/// What an attempt found, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// [`AttemptOutcome::Delivered`], [`AttemptOutcome::Retrying`] or
    /// [`AttemptOutcome::Failed`].
    pub outcome: AttemptOutcome,
    /// The HTTP status, or the SMTP reply code.
    pub status_code: Option<i64>,
    /// The start of the receiver's answer (a few hundred characters), or the SMTP reply.
    pub reply: Option<String>,
    /// Why it failed (never holding a secret or a URL).
    pub error: Option<String>,
    /// How long the attempt took, µs.
    pub latency_us: i64,
    /// When it is tried again ([`AttemptOutcome::Retrying`]).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    /// Database id.
    pub id: i64,
    /// The delivery it belongs to.
    pub delivery_id: i64,
    /// The route.
    pub route_id: i64,
    /// The route's name when the attempt was made.
    pub route_name: String,
    /// The alert (null for a test message).
    pub alert_id: Option<i64>,
    /// What happened to the alert: `created`, `severity_raised`, …, `reminder`, `test`.
    pub trigger: String,
    /// The `webhook-id` it carried (the same for every attempt of a delivery).
    pub webhook_id: String,
    /// 1 for the first attempt of its delivery.
    pub attempt: i64,
    /// When it began (UTC).
    pub started_at: DateTime<Utc>,
    /// When it ended (null while in flight).
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The HTTP status, or the SMTP reply code.
    pub status_code: Option<i64>,
    /// The start of the receiver's answer, or the SMTP reply.
    pub reply: Option<String>,
    /// How long it took, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it is tried again (the back-off), if it is.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: i64,
    delivery_id: i64,
    route_id: i64,
    route_name: String,
    alert_id: Option<i64>,
    trigger_name: String,
    message_key: String,
    attempt: i64,
    started_at: i64,
    finished_at: Option<i64>,
    outcome: String,
    status_code: Option<i64>,
    reply: Option<String>,
    latency_us: Option<i64>,
    error: Option<String>,
    next_attempt_at: Option<i64>,
}

impl TryFrom<AttemptRow> for DeliveryAttempt {
    type Error = StorageError;

    fn try_from(row: AttemptRow) -> Result<Self, StorageError> {
        Ok(DeliveryAttempt {
            id: row.id,
            delivery_id: row.delivery_id,
            route_id: row.route_id,
            route_name: row.route_name,
            alert_id: row.alert_id,
            webhook_id: delivery_webhook_id(&row.message_key, row.route_id),
            trigger: row.trigger_name,
            attempt: row.attempt,
            started_at: from_micros(row.started_at),
            finished_at: row.finished_at.map(from_micros),
            outcome: AttemptOutcome::parse(&row.outcome)
                .ok_or_else(|| StorageError::Corrupt(format!("attempt outcome {}", row.outcome)))?,
            status_code: row.status_code,
            reply: row.reply,
            latency_ms: row.latency_us.map(|us| us as f64 / 1000.0),
            error: row.error,
            next_attempt_at: row.next_attempt_at.map(from_micros),
        })
    }
}

const ATTEMPT_SELECT: &str = "SELECT a.id, a.delivery_id, a.route_id, a.route_name, a.alert_id, \
     d.trigger_name, d.message_key, a.attempt, a.started_at, a.finished_at, a.outcome, \
     a.status_code, a.reply, a.latency_us, a.error, a.next_attempt_at \
     FROM notification_attempts a JOIN notification_deliveries d ON d.id = a.delivery_id";

const DELIVERY_COLUMNS: &str =
    "id, route_id, alert_id, message_key, trigger_name, payload, attempts, created_at";

/// Records a delivery due now, unless its (route, message) has one: binds route, alert,
/// message key, trigger, payload, now.
pub(super) const INSERT_DELIVERY: &str = "INSERT INTO notification_deliveries (route_id, \
     alert_id, message_key, trigger_name, payload, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (route_id, message_key) DO NOTHING";

/// Runs [`INSERT_DELIVERY`] for a [`NewDelivery`] due at `now` (µs) in the transaction `tx`,
/// inside `in_write_transaction!`; how many rows it made, 0 or 1.
macro_rules! insert_delivery {
    ($tx:ident, $delivery:expr, $now:expr) => {
        sqlx::query::<Db>($crate::storage::notifications::INSERT_DELIVERY)
            .bind($delivery.route_id)
            .bind($delivery.alert_id)
            .bind($delivery.message_key.as_str())
            .bind($delivery.trigger.as_str())
            .bind($delivery.payload.as_str())
            .bind($now)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
    };
}
pub(super) use insert_delivery;

/// Why an interrupted attempt is marked so.
const INTERRUPTED: &str =
    "the alerter stopped during this attempt; the delivery was attempted again";

impl Storage {
    /// Stores a new route. [`StorageError::Duplicate`]`("name")` when the name is taken.
    pub async fn create_route(
        &self,
        spec: &RouteSpec,
        now: DateTime<Utc>,
    ) -> Result<Route, StorageError> {
        self.retrying_while_busy(|| self.create_route_once(spec, now))
            .await
    }

    async fn create_route_once(
        &self,
        spec: &RouteSpec,
        now: DateTime<Utc>,
    ) -> Result<Route, StorageError> {
        let v = RouteValues::of(spec)?;
        let now = to_micros(now);
        let sql = format!(
            "INSERT INTO notification_routes (name, kind, url, to_addresses, secret, enabled, \
             min_severity, sources, event_types, on_changes, repeat_every_secs, from_file, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FALSE, $12, $12) \
             RETURNING {ROUTE_COLUMNS}"
        );
        let row = in_write_transaction!(self, |tx| {
            let row = bind_route_values!(sqlx::query_as::<Db, RouteRow>(AssertSqlSafe(sql)), v)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(route_error)?;
            tx.commit().await?;
            row
        });
        Route::try_from(row)
    }

    /// Replaces a route's spec; `None` when there is no such route. A file route changed
    /// through the api stays a file route: the file wins again at the next start.
    pub async fn update_route(
        &self,
        id: i64,
        spec: &RouteSpec,
        now: DateTime<Utc>,
    ) -> Result<Option<Route>, StorageError> {
        self.retrying_while_busy(|| self.update_route_once(id, spec, now))
            .await
    }

    async fn update_route_once(
        &self,
        id: i64,
        spec: &RouteSpec,
        now: DateTime<Utc>,
    ) -> Result<Option<Route>, StorageError> {
        let v = RouteValues::of(spec)?;
        let sql = format!(
            "UPDATE notification_routes SET name = $1, kind = $2, url = $3, to_addresses = $4, \
             secret = $5, enabled = $6, min_severity = $7, sources = $8, event_types = $9, \
             on_changes = $10, repeat_every_secs = $11, updated_at = $12 WHERE id = $13 \
             RETURNING {ROUTE_COLUMNS}"
        );
        let row = in_write_transaction!(self, |tx| {
            let row = bind_route_values!(sqlx::query_as::<Db, RouteRow>(AssertSqlSafe(sql)), v)
                .bind(to_micros(now))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(route_error)?;
            tx.commit().await?;
            row
        });
        row.map(Route::try_from).transpose()
    }

    /// Stores the routes of `NOTIFY_ROUTES_FILE`: each replaces the route of its name (the
    /// file wins), in one transaction.
    pub async fn load_file_routes(
        &self,
        specs: &[RouteSpec],
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        self.retrying_while_busy(|| self.load_file_routes_once(specs, now))
            .await
    }

    async fn load_file_routes_once(
        &self,
        specs: &[RouteSpec],
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let now = to_micros(now);
        let values = specs
            .iter()
            .map(RouteValues::of)
            .collect::<Result<Vec<_>, _>>()?;
        in_write_transaction!(self, |tx| {
            for v in values {
                bind_route_values!(
                    sqlx::query::<Db>(
                        "INSERT INTO notification_routes (name, kind, url, to_addresses, secret, \
                     enabled, min_severity, sources, event_types, on_changes, \
                     repeat_every_secs, from_file, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, TRUE, $12, $12) \
                     ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url, \
                     to_addresses = excluded.to_addresses, \
                     secret = COALESCE(excluded.secret, notification_routes.secret), \
                     enabled = excluded.enabled, min_severity = excluded.min_severity, \
                     sources = excluded.sources, event_types = excluded.event_types, \
                     on_changes = excluded.on_changes, \
                     repeat_every_secs = excluded.repeat_every_secs, from_file = TRUE, \
                     updated_at = excluded.updated_at",
                    ),
                    v
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// One route.
    pub async fn route(&self, id: i64) -> Result<Option<Route>, StorageError> {
        let sql = format!("SELECT {ROUTE_COLUMNS} FROM notification_routes WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, RouteRow>(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Route::try_from).transpose()
    }

    /// How many routes there are.
    pub async fn count_routes(&self) -> Result<i64, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM notification_routes")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }

    /// Routes by id, `limit` of them after `offset`.
    pub async fn list_routes(&self, limit: i64, offset: i64) -> Result<Vec<Route>, StorageError> {
        let sql = format!(
            "SELECT {ROUTE_COLUMNS} FROM notification_routes ORDER BY id LIMIT $1 OFFSET $2"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, RouteRow>(AssertSqlSafe(sql))
                .bind(limit.max(0))
                .bind(offset.max(0))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Route::try_from).collect()
    }

    /// Every enabled route (what alert messages are matched against).
    pub async fn enabled_routes(&self) -> Result<Vec<Route>, StorageError> {
        let sql =
            format!("SELECT {ROUTE_COLUMNS} FROM notification_routes WHERE enabled ORDER BY id");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, RouteRow>(AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Route::try_from).collect()
    }

    /// Deletes a route and cancels its pending deliveries (their attempts stay in the log);
    /// false when there was no such route.
    pub async fn delete_route(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StorageError> {
        self.retrying_while_busy(|| self.delete_route_once(id, now))
            .await
    }

    async fn delete_route_once(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StorageError> {
        in_write_transaction!(self, |tx| {
            let deleted = sqlx::query::<Db>("DELETE FROM notification_routes WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query::<Db>("DELETE FROM notification_reminders WHERE route_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<Db>(
                "UPDATE notification_deliveries SET state = 'cancelled', finished_at = $1, \
                 last_error = 'the route was deleted', lease = NULL, lease_until = NULL \
                 WHERE route_id = $2 AND state = 'pending'",
            )
            .bind(to_micros(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(deleted > 0)
        })
    }

    /// Records deliveries, due now, in one transaction; one already recorded for its
    /// (route, message) is left as it is (a redelivered alert message). Returns how many
    /// are new.
    pub async fn record_deliveries(
        &self,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        self.retrying_while_busy(|| self.record_deliveries_once(deliveries, now))
            .await
    }

    async fn record_deliveries_once(
        &self,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        let now = to_micros(now);
        in_write_transaction!(self, |tx| {
            let mut new = 0;
            for delivery in deliveries {
                let inserted = insert_delivery!(tx, delivery, now);
                if inserted == 1
                    && let (Some(alert_id), Some(every)) =
                        (delivery.alert_id, delivery.remind_every_secs)
                {
                    sqlx::query::<Db>(super::reminders::SCHEDULE)
                        .bind(delivery.route_id)
                        .bind(alert_id)
                        .bind(super::reminders::next_reminder_at(now, every))
                        .execute(&mut *tx)
                        .await?;
                }
                new += inserted;
            }
            tx.commit().await?;
            Ok(new)
        })
    }

    /// Records a test message's delivery, already claimed by its caller (never due for the
    /// dispatchers), for `POST /api/notification-routes/{id}/test/`.
    pub async fn record_test_delivery(
        &self,
        route_id: i64,
        message_key: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimedDelivery, StorageError> {
        let now = to_micros(now);
        let sql = format!(
            "INSERT INTO notification_deliveries (route_id, alert_id, message_key, trigger_name, \
             payload, next_attempt_at, lease, lease_until, created_at) \
             VALUES ($1, NULL, $2, 'test', $3, $4, 'test', $4, $5) RETURNING {DELIVERY_COLUMNS}"
        );
        let row = in_write_transaction!(self, |tx| {
            let row = sqlx::query_as::<Db, ClaimedDelivery>(AssertSqlSafe(sql))
                .bind(route_id)
                .bind(message_key)
                .bind(payload)
                .bind(i64::MAX)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            row
        });
        Ok(row)
    }

    /// The routes with deliveries due at `now` and not leased, with how many each.
    pub async fn routes_with_due_deliveries(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, StorageError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, (i64, i64)>(
                "SELECT route_id, COUNT(*) FROM notification_deliveries \
                 WHERE state = 'pending' AND next_attempt_at <= $1 \
                 AND (lease_until IS NULL OR lease_until < $1) GROUP BY route_id",
            )
            .bind(to_micros(now))
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Claims up to `limit` due deliveries of a route under `lease` until `lease_until`: no
    /// other claim takes them before then (two alerters claiming at once split them).
    pub async fn claim_deliveries(
        &self,
        route_id: i64,
        limit: i64,
        lease: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>, StorageError> {
        self.retrying_while_busy(|| {
            self.claim_deliveries_once(route_id, limit, lease, lease_until, now)
        })
        .await
    }

    async fn claim_deliveries_once(
        &self,
        route_id: i64,
        limit: i64,
        lease: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>, StorageError> {
        // The outer conditions repeat the inner ones: on PostgreSQL a claim that waited for
        // another's row lock sees the row as the other left it, leased, and skips it.
        let sql = format!(
            "UPDATE notification_deliveries SET lease = $1, lease_until = $2 \
             WHERE id IN (SELECT id FROM notification_deliveries WHERE route_id = $3 \
             AND state = 'pending' AND next_attempt_at <= $4 \
             AND (lease_until IS NULL OR lease_until < $4) ORDER BY next_attempt_at, id LIMIT $5) \
             AND state = 'pending' AND (lease_until IS NULL OR lease_until < $4) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut claimed = in_write_transaction!(self, |tx| {
            let rows = sqlx::query_as::<Db, ClaimedDelivery>(AssertSqlSafe(sql))
                .bind(lease)
                .bind(to_micros(lease_until))
                .bind(route_id)
                .bind(to_micros(now))
                .bind(limit.max(0))
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            rows
        });
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    /// Records that an attempt at a claimed delivery begins (before it is made), marking any
    /// attempt left in flight by a stopped alerter as interrupted. Returns the attempt's id.
    pub async fn begin_attempt(
        &self,
        delivery: &ClaimedDelivery,
        route_name: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StorageError> {
        let ids = self
            .begin_attempts(std::slice::from_ref(delivery), route_name, now)
            .await?;
        ids.first()
            .copied()
            .ok_or_else(|| StorageError::Corrupt("no attempt was recorded".to_owned()))
    }

    /// [`Storage::begin_attempt`] for claimed deliveries of one route, in one transaction
    /// (one commit, so one sync to disk, for a whole claim). Returns the attempts' ids, in
    /// the order of `deliveries`.
    pub async fn begin_attempts(
        &self,
        deliveries: &[ClaimedDelivery],
        route_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StorageError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying_while_busy(|| self.begin_attempts_once(deliveries, route_name, now))
            .await
    }

    async fn begin_attempts_once(
        &self,
        deliveries: &[ClaimedDelivery],
        route_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StorageError> {
        let now = to_micros(now);
        in_write_transaction!(self, |tx| {
            let mut ids = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                sqlx::query::<Db>(
                    "UPDATE notification_attempts SET outcome = 'interrupted', finished_at = $1, \
                     error = $2 WHERE delivery_id = $3 AND outcome = 'in_flight'",
                )
                .bind(now)
                .bind(INTERRUPTED)
                .bind(delivery.id)
                .execute(&mut *tx)
                .await?;
                let attempt: i64 = sqlx::query_scalar::<Db, i64>(
                    "UPDATE notification_deliveries SET attempts = attempts + 1 WHERE id = $1 \
                     RETURNING attempts",
                )
                .bind(delivery.id)
                .fetch_one(&mut *tx)
                .await?;
                let id: i64 = sqlx::query_scalar::<Db, i64>(
                    "INSERT INTO notification_attempts (delivery_id, route_id, route_name, \
                     alert_id, attempt, started_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(delivery.id)
                .bind(delivery.route_id)
                .bind(route_name)
                .bind(delivery.alert_id)
                .bind(attempt)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                ids.push(id);
            }
            tx.commit().await?;
            Ok(ids)
        })
    }

    /// Records how an attempt ended, and so the delivery's state: delivered, failed, or due
    /// again at the result's `next_attempt_at`; its lease is released.
    pub async fn finish_attempt(
        &self,
        delivery_id: i64,
        attempt_id: i64,
        result: &AttemptResult,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        self.finish_attempts(
            &[FinishedAttempt {
                delivery_id,
                attempt_id,
                result: result.clone(),
            }],
            now,
        )
        .await
    }

    /// [`Storage::finish_attempt`] for several attempts, in one transaction.
    pub async fn finish_attempts(
        &self,
        finished: &[FinishedAttempt],
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        if finished.is_empty() {
            return Ok(());
        }
        self.retrying_while_busy(|| self.finish_attempts_once(finished, now))
            .await
    }

    async fn finish_attempts_once(
        &self,
        finished: &[FinishedAttempt],
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let now = to_micros(now);
        in_write_transaction!(self, |tx| {
            for FinishedAttempt {
                delivery_id,
                attempt_id,
                result,
            } in finished
            {
                let next = result.next_attempt_at.map(to_micros);
                let (state, done_at) = match result.outcome {
                    AttemptOutcome::Delivered => ("delivered", Some(now)),
                    AttemptOutcome::Retrying => ("pending", None),
                    _ => ("failed", Some(now)),
                };
                sqlx::query::<Db>(
                    "UPDATE notification_attempts SET outcome = $1, finished_at = $2, \
                     status_code = $3, reply = $4, error = $5, latency_us = $6, \
                     next_attempt_at = $7 WHERE id = $8",
                )
                .bind(result.outcome.as_str())
                .bind(now)
                .bind(result.status_code)
                .bind(result.reply.as_deref())
                .bind(result.error.as_deref())
                .bind(result.latency_us)
                .bind(next)
                .bind(*attempt_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query::<Db>(
                    "UPDATE notification_deliveries SET state = $1, finished_at = $2, \
                     next_attempt_at = COALESCE($3, next_attempt_at), last_error = $4, \
                     lease = NULL, lease_until = NULL WHERE id = $5",
                )
                .bind(state)
                .bind(done_at)
                .bind(next)
                .bind(result.error.as_deref())
                .bind(*delivery_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Releases a claimed delivery without an attempt (its route went away or was
    /// disabled): cancelled, with why.
    pub async fn cancel_delivery(
        &self,
        delivery_id: i64,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        on_pool!(self, |pool| {
            sqlx::query::<Db>(
                "UPDATE notification_deliveries SET state = 'cancelled', finished_at = $1, \
                 last_error = $2, lease = NULL, lease_until = NULL WHERE id = $3",
            )
            .bind(to_micros(now))
            .bind(why)
            .bind(delivery_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// How many attempts were made at deliveries of an alert.
    pub async fn count_alert_attempts(&self, alert_id: i64) -> Result<i64, StorageError> {
        let count = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>(
                "SELECT COUNT(*) FROM notification_attempts WHERE alert_id = $1",
            )
            .bind(alert_id)
            .fetch_one(pool)
            .await?
        });
        Ok(count)
    }

    /// The attempts at deliveries of an alert, oldest first, `limit` after `offset`.
    pub async fn alert_attempts(
        &self,
        alert_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DeliveryAttempt>, StorageError> {
        let sql =
            format!("{ATTEMPT_SELECT} WHERE a.alert_id = $1 ORDER BY a.id LIMIT $2 OFFSET $3");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, AttemptRow>(AssertSqlSafe(sql))
                .bind(alert_id)
                .bind(limit.max(0))
                .bind(offset.max(0))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(DeliveryAttempt::try_from).collect()
    }

    /// The deliveries of an alert's messages, by id.
    pub async fn alert_deliveries(
        &self,
        alert_id: i64,
    ) -> Result<Vec<DeliveryRecord>, StorageError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, DeliveryRow>(
                "SELECT id, route_id, alert_id, message_key, state, attempts, created_at, \
                 finished_at FROM notification_deliveries WHERE alert_id = $1 ORDER BY id",
            )
            .bind(alert_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| DeliveryRecord {
                id: row.id,
                route_id: row.route_id,
                webhook_id: delivery_webhook_id(&row.message_key, row.route_id),
                alert_id: row.alert_id,
                message_key: row.message_key,
                state: row.state,
                attempts: row.attempts,
                created_at: from_micros(row.created_at),
                finished_at: row.finished_at.map(from_micros),
            })
            .collect())
    }

    /// One attempt.
    pub async fn attempt(&self, id: i64) -> Result<Option<DeliveryAttempt>, StorageError> {
        let sql = format!("{ATTEMPT_SELECT} WHERE a.id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, AttemptRow>(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(DeliveryAttempt::try_from).transpose()
    }

    /// When the oldest delivery still pending was recorded (the queue's age), if any is.
    pub async fn oldest_pending_delivery(&self) -> Result<Option<DateTime<Utc>>, StorageError> {
        let oldest = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, Option<i64>>(
                "SELECT MIN(created_at) FROM notification_deliveries WHERE state = 'pending'",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(oldest.map(from_micros))
    }
}
