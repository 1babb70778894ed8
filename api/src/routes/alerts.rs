//! `/api/alerts/`: read alerts (admins and analysts), change their status (admins).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::Utc;
use common::domain::{Alert, AlertStatus, Event, Severity};
use common::storage::{AlertFilter, AlertOrdering, StatusChange};
use common::subjects;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{AdminUser, AnyUser};
use crate::error::{ApiError, ApiResult};
use crate::input::{Fields, JsonBody, Params};
use crate::pagination::{Page, PageRequest};
use crate::routes::{PathId, parse_id};
use crate::state::AppState;

/// Longest note on a status change.
const MAX_NOTE_CHARS: usize = 2000;

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AlertPatch {
    /// `OPEN`, `ACKNOWLEDGED` or `RESOLVED`.
    pub status: AlertStatus,
    /// Why, kept in the history (at most 2000 characters).
    #[schema(
        required = false,
        nullable = false,
        min_length = 1,
        max_length = 2000,
        pattern = r"\S"
    )]
    pub note: Option<String>,
}

/// A partial status change (PATCH): every field optional; an empty body changes nothing.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AlertPartialPatch {
    /// `OPEN`, `ACKNOWLEDGED` or `RESOLVED`.
    #[schema(required = false, nullable = false, inline)]
    pub status: Option<AlertStatus>,
    /// Why, kept in the history (at most 2000 characters).
    #[schema(
        required = false,
        nullable = false,
        min_length = 1,
        max_length = 2000,
        pattern = r"\S"
    )]
    pub note: Option<String>,
}

/// The orderings `?ordering=` takes, for the document ([`ordering`] reads them).
#[derive(Debug, Deserialize, ToSchema)]
pub enum AlertOrderingParam {
    /// Oldest first.
    #[serde(rename = "created_at")]
    CreatedAt,
    /// Newest first (the default).
    #[serde(rename = "-created_at")]
    NewestFirst,
    /// LOW first.
    #[serde(rename = "severity")]
    Severity,
    /// CRITICAL first.
    #[serde(rename = "-severity")]
    SeverityDescending,
}

fn ordering(params: &mut Params) -> AlertOrdering {
    match params.get("ordering") {
        None => AlertOrdering::NewestFirst,
        Some("-created_at") => AlertOrdering::NewestFirst,
        Some("created_at") => AlertOrdering::OldestFirst,
        Some("severity") => AlertOrdering::SeverityAscending,
        Some("-severity") => AlertOrdering::SeverityDescending,
        Some(other) => {
            let message = format!(
                "\"{other}\" is not a valid ordering: use created_at, -created_at, severity or -severity."
            );
            params.error("ordering", message);
            AlertOrdering::NewestFirst
        }
    }
}

/// Lists alerts, newest first unless `ordering` says otherwise; filters combine.
#[utoipa::path(get, path = "/api/alerts/", tag = "alerts", security(("jwt" = [])),
    params(
        ("status" = Option<AlertStatus>, Query, description = "Exact status"),
        ("event__severity" = Option<Severity>, Query, description = "The event's severity"),
        ("severity" = Option<Severity>, Query, description = "Same as event__severity"),
        ("eventType" = Option<String>, Query, description = "Exact event type"),
        ("sourceName" = Option<String>, Query, description = "Exact sensor name"),
        ("created_at__gte" = Option<String>, Query, format = DateTime, description = "Raised at or after (RFC 3339)"),
        ("created_at__lte" = Option<String>, Query, format = DateTime, description = "Raised at or before (RFC 3339)"),
        ("ordering" = Option<AlertOrderingParam>, Query, description = "created_at, -created_at (default), severity, -severity"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100"),
    ),
    responses((status = 200, body = Page<Alert>), (status = 400), (status = 401), (status = 404),
        (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<Alert>>> {
    // Both spellings are checked (a bad one is a 400 even beside a good one);
    // `event__severity` wins when both are given.
    let by_event = params.choice::<Severity>("event__severity");
    let severity = by_event.or(params.choice::<Severity>("severity"));
    let filter = AlertFilter {
        status: params.choice::<AlertStatus>("status"),
        severity,
        event_type: params.text("eventType"),
        source_name: params.text("sourceName"),
        created_from: params.datetime("created_at__gte"),
        created_to: params.datetime("created_at__lte"),
    };
    let ordering = ordering(&mut params);
    let page = PageRequest::from_params(&mut params);
    params.finish()?;
    let count = state.storage.count_alerts_matching(&filter).await?;
    page.check_exists(count)?;
    let alerts = state
        .storage
        .list_alerts(&filter, ordering, page.size, page.offset())
        .await?;
    Ok(Json(page.page(count, alerts, &uri, &headers)))
}

/// One alert.
#[utoipa::path(get, path = "/api/alerts/{id}/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 401), (status = 404), (status = 503)))]
pub async fn get(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    PathId(id): PathId,
) -> ApiResult<Json<Alert>> {
    let id = parse_id(&id)?;
    let alert = state
        .storage
        .alert_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(alert))
}

async fn change_status(
    state: &AppState,
    admin: &common::domain::User,
    id: &str,
    body: serde_json::Value,
    status_required: bool,
) -> ApiResult<Json<Alert>> {
    let id = parse_id(id)?;
    let mut fields = Fields::new(body)?;
    let status = fields.choice::<AlertStatus>("status", status_required);
    let note = if fields.has("note") {
        fields.string("note", false)
    } else {
        None
    };
    if let Some(note) = &note
        && note.chars().count() > MAX_NOTE_CHARS
    {
        fields.error(
            "note",
            format!("Ensure this field has no more than {MAX_NOTE_CHARS} characters."),
        );
    }
    fields.finish()?;
    let Some(status) = status else {
        // A partial update with nothing to change answers the alert as it is, as DRF does.
        let alert = state
            .storage
            .alert_by_id(id)
            .await?
            .ok_or(ApiError::NotFound)?;
        return Ok(Json(alert));
    };
    let update = state
        .storage
        .change_alert_status(id, status, admin.id, note.as_deref(), Utc::now())
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(change) = &update.change {
        tracing::info!(
            admin = admin.id,
            alert_id = id,
            from = ?change.from_status,
            to = %change.to_status,
            "alert status changed"
        );
        crate::updates::announce(&state.js, &state.published, &update.alert, change).await;
    }
    Ok(Json(update.alert))
}

/// Changes an alert's status (`{"status": …, "note": …}`); the change is recorded (who,
/// when, from, to, note) and published on `alerts.updated.<status>`.
#[utoipa::path(patch, path = "/api/alerts/{id}/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id")), request_body = AlertPartialPatch,
    responses((status = 200, body = Alert), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 413), (status = 415), (status = 503)))]
pub async fn patch(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Alert>> {
    change_status(&state, &admin, &id, body, false).await
}

/// As PATCH, with `status` required (the original's ModelViewSet accepted PUT too).
#[utoipa::path(put, path = "/api/alerts/{id}/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id")), request_body = AlertPatch,
    responses((status = 200, body = Alert), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 413), (status = 415), (status = 503)))]
pub async fn put(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Alert>> {
    change_status(&state, &admin, &id, body, true).await
}

/// Every status change of an alert, oldest first; the first is its creation.
#[utoipa::path(get, path = "/api/alerts/{id}/history/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id")),
    responses((status = 200, body = Vec<StatusChange>), (status = 401), (status = 404),
        (status = 503)))]
pub async fn history(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    PathId(id): PathId,
) -> ApiResult<Json<Vec<StatusChange>>> {
    let id = parse_id(&id)?;
    state
        .storage
        .alert_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(state.storage.status_history(id).await?))
}

/// The events counted in an alert (its first and every repeat folded into it), newest
/// first, paginated like the lists; `count` is the alert's `count`.
#[utoipa::path(get, path = "/api/alerts/{id}/events/", tag = "alerts", security(("jwt" = [])),
    params(
        ("id" = i64, Path, description = "Alert id"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100"),
    ),
    responses((status = 200, body = Page<Event>), (status = 400), (status = 401), (status = 404),
        (status = 503)))]
pub async fn events(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    PathId(id): PathId,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<Event>>> {
    let id = parse_id(&id)?;
    let page = PageRequest::from_params(&mut params);
    params.finish()?;
    let alert = state
        .storage
        .alert_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    page.check_exists(alert.count)?;
    let events = state
        .storage
        .alert_events(id, page.size, page.offset())
        .await?;
    Ok(Json(page.page(alert.count, events, &uri, &headers)))
}

/// What a live stream sends: the alert (with `change` for an update), named by kind, with
/// the ALERTS stream sequence as its id.
fn sse_event(message: &async_nats::jetstream::Message, wanted: &StreamFilter) -> Option<SseEvent> {
    let payload: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
    let kind = if message.subject.starts_with("alerts.created.") {
        "alert.created"
    } else if message.subject.starts_with("alerts.updated.") {
        "alert.updated"
    } else {
        return None;
    };
    if let Some(severity) = wanted.severity
        && payload["severity"] != severity.as_str()
    {
        return None;
    }
    if let Some(status) = wanted.status
        && payload["status"] != status.as_str()
    {
        return None;
    }
    let sequence = message.info().ok()?.stream_sequence;
    Some(
        SseEvent::default()
            .id(sequence.to_string())
            .event(kind)
            .data(payload.to_string()),
    )
}

/// Which alerts a live stream relays.
#[derive(Debug, Clone, Copy)]
struct StreamFilter {
    severity: Option<Severity>,
    status: Option<AlertStatus>,
}

/// Live alerts as Server-Sent Events: `alert.created` and `alert.updated`, each with the
/// alert's JSON and the ALERTS stream sequence as its id. Filter with `severity` and
/// `status`. A client that reconnects with `Last-Event-ID` gets everything after that id
/// first, from the replayable ALERTS stream. Keep-alive comments every 15 s.
#[utoipa::path(get, path = "/api/alerts/stream/", tag = "alerts", security(("jwt" = [])),
    params(
        ("severity" = Option<Severity>, Query, description = "Only alerts of this severity"),
        ("status" = Option<AlertStatus>, Query, description = "Only alerts now in this status"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (a number; anything else is ignored)"),
    ),
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream"),
        (status = 400), (status = 401), (status = 503),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    AnyUser(user): AnyUser,
    mut params: Params,
    headers: HeaderMap,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>>>> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    use futures::StreamExt;

    let wanted = StreamFilter {
        severity: params.choice::<Severity>("severity"),
        status: params.choice::<AlertStatus>("status"),
    };
    params.finish()?;
    let deliver_policy = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(last) => DeliverPolicy::ByStartSequence {
            start_sequence: last.saturating_add(1),
        },
        None => DeliverPolicy::New,
    };
    let unavailable = || ApiError::Unavailable("The alert stream is unavailable, try again later.");
    let alerts = state
        .js
        .get_stream(subjects::ALERTS_STREAM)
        .await
        .map_err(|_| unavailable())?;
    let consumer = alerts
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects::ALERTS_ALL.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|_| unavailable())?;
    let messages = consumer.messages().await.map_err(|_| unavailable())?;
    tracing::info!(user_id = user.id, "live alert stream opened");
    // On a broker error the stream ends: the client reconnects with Last-Event-ID and gets
    // a fresh consumer from where it left off (an ordered consumer does not always recover
    // from a server restart by itself).
    let events = messages
        .take_while(|message| {
            if let Err(err) = message {
                tracing::warn!(error = %err, "live alert stream interrupted; the client will resume");
            }
            std::future::ready(message.is_ok())
        })
        .filter_map(move |message| {
            let event = message.ok().and_then(|m| sse_event(&m, &wanted));
            async move { event.map(Ok) }
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}
