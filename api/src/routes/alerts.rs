//! `/api/alerts/`: read alerts (admins and analysts), change their status (admins).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::Utc;
use common::domain::{Alert, AlertStatus, CloseReason, Event, Severity};
use common::storage::{
    AlertChange, AlertFilter, AlertOrdering, AlertSummary, AlertUpdate, AssigneeFilter,
    MAX_NOTE_TEXT_CHARS, Note, Refusal, StatusChange, search_words,
};
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

/// A change of an alert (PUT): its status, and optionally a note, close reason, owner and
/// the version it expects.
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
    /// How it was resolved: only with `status` RESOLVED (or on a resolved alert); cleared when
    /// it is reopened.
    #[schema(required = false, nullable = false, inline)]
    pub close_reason: Option<CloseReason>,
    /// Who owns it: an active user's id, or `null` for nobody.
    #[schema(required = false, nullable = true, minimum = 1)]
    pub assignee: Option<i64>,
    /// Change only if the alert's `version` is still this (else 409 with the alert as it is).
    #[schema(required = false, nullable = false, minimum = 1)]
    pub version: Option<i64>,
}

/// A partial change of an alert (PATCH): every field optional; an empty body changes nothing.
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
    /// How it was resolved: only with `status` RESOLVED (or on a resolved alert); cleared when
    /// it is reopened.
    #[schema(required = false, nullable = false, inline)]
    pub close_reason: Option<CloseReason>,
    /// Who owns it: an active user's id, or `null` for nobody.
    #[schema(required = false, nullable = true, minimum = 1)]
    pub assignee: Option<i64>,
    /// Change only if the alert's `version` is still this (else 409 with the alert as it is).
    #[schema(required = false, nullable = false, minimum = 1)]
    pub version: Option<i64>,
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
    /// Longest quiet first.
    #[serde(rename = "last_seen_at")]
    LastSeenAt,
    /// Most recently seen first.
    #[serde(rename = "-last_seen_at")]
    LastSeenAtDescending,
    /// Fewest folded events first.
    #[serde(rename = "count")]
    Count,
    /// Most folded events first.
    #[serde(rename = "-count")]
    CountDescending,
}

fn ordering(params: &mut Params) -> AlertOrdering {
    match params.get("ordering") {
        None => AlertOrdering::NewestFirst,
        Some("-created_at") => AlertOrdering::NewestFirst,
        Some("created_at") => AlertOrdering::OldestFirst,
        Some("severity") => AlertOrdering::SeverityAscending,
        Some("-severity") => AlertOrdering::SeverityDescending,
        Some("last_seen_at") => AlertOrdering::LastSeenAscending,
        Some("-last_seen_at") => AlertOrdering::LastSeenDescending,
        Some("count") => AlertOrdering::CountAscending,
        Some("-count") => AlertOrdering::CountDescending,
        Some(other) => {
            let message = format!(
                "\"{other}\" is not a valid ordering: use created_at, -created_at, severity, \
                 -severity, last_seen_at, -last_seen_at, count or -count."
            );
            params.error("ordering", message);
            AlertOrdering::NewestFirst
        }
    }
}

/// The query parameters every alert list takes (also a bulk action's `filter`), as a filter.
fn alert_filter(params: &mut Params, user: &common::domain::User) -> AlertFilter {
    let assignee = match params.text("assignee").as_deref() {
        None => None,
        Some("me") => Some(AssigneeFilter::User(user.id)),
        Some("none") => Some(AssigneeFilter::Nobody),
        Some(other) => match other.parse::<i64>() {
            Ok(id) if id > 0 => Some(AssigneeFilter::User(id)),
            _ => {
                params.error(
                    "assignee",
                    format!("\"{other}\" is not a valid owner: use me, none or a user id."),
                );
                None
            }
        },
    };
    // Both spellings are checked (a bad one is a 400 even beside a good one);
    // `event__severity` wins when both are given.
    let search = params.text("q").map(|q| search_words(&q));
    if search
        .as_ref()
        .is_some_and(|words| words.len() > MAX_SEARCH_WORDS)
    {
        params.error(
            "q",
            format!("Ensure this search has no more than {MAX_SEARCH_WORDS} words."),
        );
    }
    let by_event = params.choices::<Severity>("event__severity");
    let by_alert = params.choices::<Severity>("severity");
    let severity = if by_event.is_empty() {
        by_alert
    } else {
        by_event
    };
    AlertFilter {
        status: params.choices::<AlertStatus>("status"),
        severity,
        event_type: params.texts("eventType"),
        source_name: params.texts("sourceName"),
        created_from: params.datetime("created_at__gte"),
        created_to: params.datetime("created_at__lte"),
        assignee,
        search,
    }
}

/// Lists alerts, newest first unless `ordering` says otherwise; filters combine.
#[utoipa::path(get, path = "/api/alerts/", tag = "alerts", security(("jwt" = [])),
    params(
        ("status" = Option<String>, Query, pattern = r"^(OPEN|ACKNOWLEDGED|RESOLVED)(,(OPEN|ACKNOWLEDGED|RESOLVED))*$", description = "Any of these statuses, comma-separated (`OPEN,ACKNOWLEDGED`)"),
        ("event__severity" = Option<String>, Query, pattern = r"^(LOW|MEDIUM|HIGH|CRITICAL)(,(LOW|MEDIUM|HIGH|CRITICAL))*$", description = "Any of these severities, comma-separated (`HIGH,CRITICAL`)"),
        ("severity" = Option<String>, Query, pattern = r"^(LOW|MEDIUM|HIGH|CRITICAL)(,(LOW|MEDIUM|HIGH|CRITICAL))*$", description = "Same as event__severity"),
        ("eventType" = Option<String>, Query, description = "Any of these event types (exact), comma-separated"),
        ("sourceName" = Option<String>, Query, description = "Any of these sensors (exact), comma-separated"),
        ("created_at__gte" = Option<String>, Query, format = DateTime, description = "Raised at or after (RFC 3339)"),
        ("created_at__lte" = Option<String>, Query, format = DateTime, description = "Raised at or before (RFC 3339)"),
        ("q" = Option<String>, Query, description = "Words that must all be in the alert's sensor, event type or first event's description (whole words, any case)"),
        ("assignee" = Option<String>, Query, pattern = r"^(me|none|[1-9][0-9]{0,17})$", description = "Owned by `me`, by `none` (nobody) or by this user id"),
        ("ordering" = Option<AlertOrderingParam>, Query, description = "created_at, -created_at (default), severity, -severity, last_seen_at, -last_seen_at, count, -count"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100"),
    ),
    responses((status = 200, body = Page<Alert>), (status = 400), (status = 401), (status = 404),
        (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    AnyUser(user): AnyUser,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<Alert>>> {
    let filter = alert_filter(&mut params, &user);
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
    responses((status = 200, body = Alert, headers(("ETag" = String, description = "The alert's version, quoted"))),
        (status = 401), (status = 404), (status = 503)))]
pub async fn get(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    PathId(id): PathId,
) -> ApiResult<(HeaderMap, Json<Alert>)> {
    let id = parse_id(&id)?;
    let alert = existing_alert(&state, id).await?;
    Ok(with_etag(alert))
}

/// The alert, or 404.
async fn existing_alert(state: &AppState, id: i64) -> ApiResult<Alert> {
    state
        .storage
        .alert_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The optional `note` of a change (at most [`MAX_NOTE_CHARS`] characters).
fn change_note(fields: &mut Fields) -> Option<String> {
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
    note
}

/// Records an error unless a given owner is an existing, active user.
async fn check_assignee(
    state: &AppState,
    fields: &mut Fields,
    assignee: Option<Option<i64>>,
) -> ApiResult<()> {
    if let Some(Some(user_id)) = assignee
        && !state
            .storage
            .user_by_id(user_id)
            .await?
            .is_some_and(|user| user.is_active)
    {
        fields.error(
            "assignee",
            format!("Invalid pk \"{user_id}\" - object does not exist or is inactive."),
        );
    }
    Ok(())
}

/// The version an `If-Match` header names (`"3"`, or a list of them), compared
/// with the alert's: `Some(true)` when one matches or it is `*`, `None` without the header.
fn if_match(headers: &HeaderMap, version: i64) -> Option<bool> {
    let value = headers.get(axum::http::header::IF_MATCH)?;
    let Ok(value) = value.to_str() else {
        return Some(false);
    };
    let wanted = version.to_string();
    Some(
        value
            .split(',')
            .map(str::trim)
            // Strong comparison (RFC 9110): a weak tag never matches.
            .any(|tag| tag == "*" || (!tag.starts_with("W/") && tag.trim_matches('"') == wanted)),
    )
}

/// The alert with its `ETag`.
fn with_etag(alert: Alert) -> (HeaderMap, Json<Alert>) {
    let mut headers = HeaderMap::new();
    headers.insert(axum::http::header::ETAG, crate::error::etag(&alert));
    (headers, Json(alert))
}

async fn change(
    state: &AppState,
    admin: &common::domain::User,
    id: &str,
    headers: &HeaderMap,
    body: serde_json::Value,
    status_required: bool,
) -> ApiResult<(HeaderMap, Json<Alert>)> {
    let id = parse_id(id)?;
    let mut fields = Fields::new(body)?;
    let status = fields.choice::<AlertStatus>("status", status_required);
    let note = change_note(&mut fields);
    let close_reason = fields.choice::<CloseReason>("close_reason", false);
    let assignee = fields.nullable_integer("assignee", 1);
    let version = fields.integer("version", 1);
    check_assignee(state, &mut fields, assignee).await?;
    fields.finish()?;
    // The alert as it is, for a precondition and for a request that changes nothing.
    let current = existing_alert(state, id).await?;
    let matched = if_match(headers, current.version);
    if matched == Some(false) {
        return Err(ApiError::PreconditionFailed(Box::new(current)));
    }
    if version.is_some_and(|v| v != current.version) {
        return Err(ApiError::Conflict(Box::new(current)));
    }
    let change = AlertChange {
        status,
        close_reason,
        assignee,
        note,
        // Checked again under the row lock: a change committed since the read above loses.
        expected_version: matched.map(|_| current.version).or(version),
    };
    let update = match state
        .storage
        .update_alert(id, &change, admin.id, Utc::now())
        .await?
    {
        AlertUpdate::Done(update) => update,
        AlertUpdate::NotFound => return Err(ApiError::NotFound),
        AlertUpdate::Stale(alert) if matched.is_some() => {
            return Err(ApiError::PreconditionFailed(Box::new(alert)));
        }
        AlertUpdate::Stale(alert) => return Err(ApiError::Conflict(Box::new(alert))),
        AlertUpdate::Refused(Refusal::Transition { from, to }) => {
            return Err(ApiError::field(
                "status",
                format!("Cannot change status from {from} to {to}."),
            ));
        }
        AlertUpdate::Refused(Refusal::CloseReasonWithoutResolving) => {
            return Err(ApiError::field(
                "close_reason",
                "A close reason is given only when resolving (status RESOLVED).",
            ));
        }
    };
    if let Some(change) = &update.change {
        tracing::info!(
            admin = admin.id,
            alert_id = id,
            from = ?change.from_status,
            to = %change.to_status,
            kind = ?change.kind,
            "alert changed"
        );
        crate::updates::announce(&state.js, &state.published, &update.alert, change).await;
    }
    Ok(with_etag(update.alert))
}

/// Changes an alert: `status` (any move but RESOLVED → ACKNOWLEDGED), `close_reason` when
/// resolving, `assignee`, with a `note`. The change is recorded as one history row (who,
/// when, from, to, note) and published on `alerts.updated.<status>`; `version` goes up. With
/// `If-Match` (412) or `"version"` (409) it applies only to the version given; without,
/// the last write wins.
#[utoipa::path(patch, path = "/api/alerts/{id}/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id"),
        ("If-Match" = Option<String>, Header, description = "Change only if this is still the alert's ETag (else 412)")),
    request_body = AlertPartialPatch,
    responses(
        (status = 200, body = Alert, headers(("ETag" = String, description = "The alert's version, quoted"))),
        (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 409, body = Alert, description = "`version` is not the alert's: the alert as it is"),
        (status = 412, body = Alert, description = "`If-Match` is not the alert's ETag: the alert as it is"),
        (status = 413), (status = 415), (status = 503)))]
pub async fn patch(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(HeaderMap, Json<Alert>)> {
    change(&state, &admin, &id, &headers, body, false).await
}

/// As PATCH, with `status` required (the original's ModelViewSet accepted PUT too).
#[utoipa::path(put, path = "/api/alerts/{id}/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id"),
        ("If-Match" = Option<String>, Header, description = "Change only if this is still the alert's ETag (else 412)")),
    request_body = AlertPatch,
    responses(
        (status = 200, body = Alert, headers(("ETag" = String, description = "The alert's version, quoted"))),
        (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 409, body = Alert, description = "`version` is not the alert's: the alert as it is"),
        (status = 412, body = Alert, description = "`If-Match` is not the alert's ETag: the alert as it is"),
        (status = 413), (status = 415), (status = 503)))]
pub async fn put(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(HeaderMap, Json<Alert>)> {
    change(&state, &admin, &id, &headers, body, true).await
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
    existing_alert(&state, id).await?;
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
    let alert = existing_alert(&state, id).await?;
    page.check_exists(alert.count)?;
    let events = state
        .storage
        .alert_events(id, page.size, page.offset())
        .await?;
    Ok(Json(page.page(alert.count, events, &uri, &headers)))
}

/// An alert's notes, oldest first.
#[utoipa::path(get, path = "/api/alerts/{id}/notes/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id")),
    responses((status = 200, body = Vec<Note>), (status = 401), (status = 404), (status = 503)))]
pub async fn notes(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    PathId(id): PathId,
) -> ApiResult<Json<Vec<Note>>> {
    let id = parse_id(&id)?;
    existing_alert(&state, id).await?;
    Ok(Json(state.storage.notes(id).await?))
}

/// A note to add to an alert.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NoteIn {
    /// What it says (1–10,000 characters).
    #[schema(min_length = 1, max_length = 10000, pattern = r"\S")]
    pub text: String,
}

/// Adds a note to an alert (Admins); it is in the alert's history too.
#[utoipa::path(post, path = "/api/alerts/{id}/notes/", tag = "alerts", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Alert id")), request_body = NoteIn,
    responses((status = 201, body = Note), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 413), (status = 415), (status = 503)))]
pub async fn add_note(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Note>)> {
    let id = parse_id(&id)?;
    let mut fields = Fields::new(body)?;
    let text = fields.string("text", true);
    if let Some(text) = &text
        && text.chars().count() > MAX_NOTE_TEXT_CHARS
    {
        fields.error(
            "text",
            format!("Ensure this field has no more than {MAX_NOTE_TEXT_CHARS} characters."),
        );
    }
    fields.finish()?;
    let text = text.unwrap_or_default();
    let note = state
        .storage
        .add_note(id, admin.id, &text, Utc::now())
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(
        admin = admin.id,
        alert_id = id,
        note_id = note.id,
        "note added"
    );
    Ok((StatusCode::CREATED, Json(note)))
}

/// Alerts per status × severity and the ten sensors and event types with the most unresolved
/// alerts, of every alert and of those created in the last 24 hours (the current hour and the
/// 23 before it), from counters kept with the alerts (no scan of the alerts).
#[utoipa::path(get, path = "/api/alerts/summary/", tag = "alerts", security(("jwt" = [])),
    responses((status = 200, body = AlertSummary), (status = 401), (status = 503)))]
pub async fn summary(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
) -> ApiResult<Json<AlertSummary>> {
    Ok(Json(state.storage.alert_summary(Utc::now()).await?))
}

/// Most words a search (`q=`) takes.
const MAX_SEARCH_WORDS: usize = 32;

/// Most alerts one bulk action changes (and ids it takes).
pub const MAX_BULK: usize = 10_000;
/// How many ids a dry run shows.
const DRY_RUN_IDS: usize = 20;
/// The filters a bulk action's `filter` takes: those of `GET /api/alerts/`.
const BULK_FILTERS: [&str; 9] = [
    "q",
    "status",
    "severity",
    "event__severity",
    "eventType",
    "sourceName",
    "created_at__gte",
    "created_at__lte",
    "assignee",
];

/// What a bulk action does to each alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// To ACKNOWLEDGED.
    Acknowledge,
    /// To RESOLVED, with an optional `close_reason`.
    Resolve,
    /// To OPEN.
    Reopen,
    /// To the owner `assignee` (a user id or null).
    Assign,
}

impl std::str::FromStr for BulkAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "acknowledge" => Ok(BulkAction::Acknowledge),
            "resolve" => Ok(BulkAction::Resolve),
            "reopen" => Ok(BulkAction::Reopen),
            "assign" => Ok(BulkAction::Assign),
            other => Err(format!("\"{other}\" is not a valid choice.")),
        }
    }
}

/// A bulk action (documentation of the body; the route reads it field by field).
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkIn {
    /// The alerts, by id (at most 10,000); or give `filter`.
    #[schema(required = false, max_items = 10000)]
    pub ids: Option<Vec<i64>>,
    /// The alerts, by the filters of `GET /api/alerts/` (`{"status": "OPEN", "sourceName":
    /// "fw"}`); more than 10,000 matches are refused unless `dry_run`. Or give `ids`.
    #[schema(required = false, value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    /// What to do.
    pub action: BulkAction,
    /// With `resolve`: why.
    #[schema(required = false, nullable = false, inline)]
    pub close_reason: Option<CloseReason>,
    /// Kept with each change in the history.
    #[schema(
        required = false,
        nullable = false,
        min_length = 1,
        max_length = 2000,
        pattern = r"\S"
    )]
    pub note: Option<String>,
    /// With `assign`: the owner, an active user's id, or null.
    #[schema(required = false, nullable = true, minimum = 1)]
    pub assignee: Option<i64>,
    /// Only count and show what would change.
    #[schema(required = false, nullable = false)]
    pub dry_run: Option<bool>,
}

/// What a bulk action did (or, as a dry run, would touch).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct BulkOut {
    /// How many alerts the ids or the filter name.
    pub matched: i64,
    /// A dry run: the first (newest) of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ids: Option<Vec<i64>>,
    /// How many were changed (absent in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<usize>,
    /// The ones left as they were, with why (absent in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<Skipped>>,
}

/// An alert a bulk action left as it was.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Skipped {
    /// The alert.
    pub id: i64,
    /// Why (a move the lifecycle refuses, nothing to change, no such alert).
    pub reason: String,
}

/// Acknowledges, resolves, reopens or assigns many alerts at once (Admins), named by `ids`
/// or by a `filter`: one transaction, one history row and one `alerts.updated.<status>`
/// message per changed alert. `dry_run` only counts.
#[utoipa::path(post, path = "/api/alerts/bulk/", tag = "alerts", security(("jwt" = [])),
    request_body = BulkIn,
    responses((status = 200, body = BulkOut), (status = 400), (status = 401), (status = 403),
        (status = 413), (status = 415), (status = 503)))]
pub async fn bulk(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<BulkOut>> {
    let mut fields = Fields::new(body)?;
    let action = fields.choice::<BulkAction>("action", true);
    let close_reason = fields.choice::<CloseReason>("close_reason", false);
    let note = change_note(&mut fields);
    let assignee = fields.nullable_integer("assignee", 1);
    let dry_run = fields.strict_boolean("dry_run").unwrap_or(false);
    let ids = match fields.take("ids") {
        None => None,
        Some(serde_json::Value::Array(items)) if items.len() > MAX_BULK => {
            fields.error(
                "ids",
                format!("Ensure this field has no more than {MAX_BULK} elements."),
            );
            None
        }
        Some(serde_json::Value::Array(items)) => {
            // Any integer is an id; one that no alert has is skipped as not found.
            let parsed: Option<Vec<i64>> = items.iter().map(serde_json::Value::as_i64).collect();
            if parsed.is_none() {
                fields.error("ids", "A list of alert ids (integers) is required.");
            }
            parsed
        }
        Some(_) => {
            fields.error("ids", "A list of alert ids (integers) is required.");
            None
        }
    };
    let filter = match fields.take("filter") {
        None => None,
        Some(serde_json::Value::Object(map)) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (key, value) in map {
                if !BULK_FILTERS.contains(&key.as_str()) {
                    fields.error("filter", format!("\"{key}\" is not a filter of alerts."));
                    continue;
                }
                match value {
                    serde_json::Value::String(text) => pairs.push((key, text)),
                    serde_json::Value::Number(n) => pairs.push((key, n.to_string())),
                    _ => fields.error("filter", format!("\"{key}\" must be a string.")),
                }
            }
            let mut params = Params::from_pairs(pairs);
            let filter = alert_filter(&mut params, &admin);
            fields.nested_errors("filter", &params.take_errors());
            Some(filter)
        }
        Some(_) => {
            fields.error("filter", "Expected a dictionary of the filters of alerts.");
            None
        }
    };
    if ids.is_some() == filter.is_some() && !fields.has_errors() {
        fields.error("non_field_errors", "Give either \"ids\" or \"filter\".");
    }
    check_assignee(&state, &mut fields, assignee).await?;
    match action {
        Some(BulkAction::Assign) if assignee.is_none() => {
            fields.error("assignee", "This field is required.");
        }
        Some(BulkAction::Acknowledge | BulkAction::Reopen | BulkAction::Assign)
            if close_reason.is_some() =>
        {
            fields.error(
                "close_reason",
                "A close reason is given only when resolving.",
            );
        }
        _ => {}
    }
    fields.finish()?;
    let Some(action) = action else {
        return Err(ApiError::internal("bulk action missing after validation"));
    };

    // The alerts named, newest first.
    let ids: Vec<i64> = match (ids, filter) {
        (Some(ids), _) => {
            let mut ids = ids;
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            ids
        }
        (None, Some(filter)) => {
            let matched = state.storage.count_alerts_matching(&filter).await?;
            if dry_run {
                let first = state
                    .storage
                    .list_alerts(&filter, AlertOrdering::NewestFirst, DRY_RUN_IDS as i64, 0)
                    .await?;
                return Ok(Json(BulkOut {
                    matched,
                    first_ids: Some(first.iter().map(|a| a.id).collect()),
                    changed: None,
                    skipped: None,
                }));
            }
            if matched > MAX_BULK as i64 {
                return Err(ApiError::field(
                    "filter",
                    format!(
                        "The filter matches {matched} alerts; one bulk action changes at most \
                         {MAX_BULK}. Narrow the filter."
                    ),
                ));
            }
            let ids: Vec<i64> = state
                .storage
                .list_alerts(&filter, AlertOrdering::NewestFirst, MAX_BULK as i64 + 1, 0)
                .await?
                .iter()
                .map(|a| a.id)
                .collect();
            // More may have come since the count.
            if ids.len() > MAX_BULK {
                return Err(ApiError::field(
                    "filter",
                    format!(
                        "The filter matches more than {MAX_BULK} alerts; one bulk action \
                         changes at most {MAX_BULK}. Narrow the filter."
                    ),
                ));
            }
            ids
        }
        (None, None) => Vec::new(),
    };
    if dry_run {
        return Ok(Json(BulkOut {
            matched: ids.len() as i64,
            first_ids: Some(ids.iter().take(DRY_RUN_IDS).copied().collect()),
            changed: None,
            skipped: None,
        }));
    }
    let change = AlertChange {
        status: match action {
            BulkAction::Acknowledge => Some(AlertStatus::Acknowledged),
            BulkAction::Resolve => Some(AlertStatus::Resolved),
            BulkAction::Reopen => Some(AlertStatus::Open),
            BulkAction::Assign => None,
        },
        close_reason,
        assignee: if action == BulkAction::Assign {
            assignee
        } else {
            None
        },
        note,
        expected_version: None,
    };
    let done = state
        .storage
        .update_alerts(&ids, &change, admin.id, Utc::now())
        .await?;
    tracing::info!(
        admin = admin.id,
        action = ?action,
        matched = ids.len(),
        changed = done.changed.len(),
        "bulk alert action"
    );
    crate::updates::announce_all(&state.js, &state.published, &done.changed).await;
    Ok(Json(BulkOut {
        matched: ids.len() as i64,
        first_ids: None,
        changed: Some(done.changed.len()),
        skipped: Some(
            done.skipped
                .into_iter()
                .map(|(id, reason)| Skipped { id, reason })
                .collect(),
        ),
    }))
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
