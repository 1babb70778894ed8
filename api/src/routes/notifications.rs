//! `/api/notification-routes/`: where alerts are sent (Admins only: a route's URL may itself
//! be a secret, as Slack's are), and `/api/alerts/{id}/deliveries/`: every attempt to send
//! an alert, for everyone.
//!
//! A webhook's secret is write-only: generated when a new webhook route gives none and then
//! shown once, in the 201; never in any other answer, log line or error.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::{DateTime, Utc};
use common::domain::{RouteKind, RouteSpec, Severity, Trigger, new_secret};
use common::notify::AlertNotice;
use common::storage::{AttemptOutcome, AttemptResult, DeliveryAttempt, Route, StorageError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{AdminUser, AnyUser};
use crate::error::{ApiError, ApiResult};
use crate::input::{JsonBody, Params};
use crate::pagination::{Page, PageRequest};
use crate::routes::{PathId, parse_id};
use crate::state::AppState;

/// What a route may be told about (the `on` list).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RouteTrigger {
    /// A new alert.
    Created,
    /// A folded event raised the alert's severity.
    SeverityRaised,
    /// The alert became OPEN again.
    Reopened,
    /// The alert was acknowledged.
    Acknowledged,
    /// The alert was resolved.
    Resolved,
}

/// A route as the api shows it: everything but the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteOut {
    /// Database id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: RouteKind,
    /// The webhook's or Slack's URL (null for e-mail).
    pub url: Option<String>,
    /// E-mail recipients (empty for the others).
    pub to: Vec<String>,
    /// Whether a signing secret is set (webhooks); the secret itself is never shown again.
    pub has_secret: bool,
    /// A disabled route matches nothing.
    pub enabled: bool,
    /// The least severity it matches.
    pub min_severity: Severity,
    /// The sensors it matches; empty = any.
    pub sources: Vec<String>,
    /// The event types it matches; empty = any.
    pub event_types: Vec<String>,
    /// The changes it is told about: `created`, `severity_raised`, `reopened`,
    /// `acknowledged`, `resolved`.
    #[schema(value_type = Vec<RouteTrigger>)]
    pub on: Vec<Trigger>,
    /// Seconds between reminders of an alert that stays OPEN (`"type": "alert.reminder"`),
    /// counted from the route's last message about it; null = none.
    pub repeat_every_secs: Option<u64>,
    /// Loaded from `NOTIFY_ROUTES_FILE` (the file wins again at the alerter's next start).
    pub from_file: bool,
    /// When it was made (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
    /// Only in the answer that made it, when it was generated: `whsec_` + base64. Keep it:
    /// it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl RouteOut {
    fn of(route: Route) -> RouteOut {
        let spec = route.spec;
        RouteOut {
            id: route.id,
            name: spec.name,
            kind: spec.kind,
            url: spec.url,
            to: spec.to,
            has_secret: spec.secret.is_some(),
            enabled: spec.enabled,
            min_severity: spec.min_severity,
            sources: spec.sources,
            event_types: spec.event_types,
            on: spec.on,
            repeat_every_secs: spec.repeat_every_secs,
            from_file: route.from_file,
            created_at: route.created_at,
            updated_at: route.updated_at,
            secret: None,
        }
    }
}

/// A new route, or changes to one (PATCH: every field optional).
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RouteIn {
    /// Unique, at most 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// `webhook`, `slack` or `email`.
    kind: RouteKind,
    /// `http` or `https` URL (webhook, Slack); its host may not be a loopback, private or
    /// link-local address unless `NOTIFY_ALLOW_PRIVATE_TARGETS=true`.
    #[schema(required = false, pattern = r"^https?://")]
    url: Option<String>,
    /// E-mail recipients (e-mail routes), at most 100.
    #[schema(required = false)]
    to: Option<Vec<String>>,
    /// A webhook's signing secret, `whsec_` + base64 of 24–64 bytes (Standard Webhooks);
    /// generated when a new webhook route gives none. Write-only.
    #[schema(required = false, write_only)]
    secret: Option<String>,
    /// Default true.
    #[schema(required = false)]
    enabled: Option<bool>,
    /// Default `LOW`.
    #[schema(required = false)]
    min_severity: Option<Severity>,
    /// Sensors to match; empty or absent = any.
    #[schema(required = false)]
    sources: Option<Vec<String>>,
    /// Event types to match; empty or absent = any.
    #[schema(required = false)]
    event_types: Option<Vec<String>>,
    /// Changes to be told about; default `created`, `severity_raised`, `reopened`.
    #[schema(required = false, value_type = Option<Vec<RouteTrigger>>, min_items = 1)]
    on: Option<Vec<Trigger>>,
    /// Remind of an alert that stays OPEN this often (seconds, 60 to 31,536,000), counted
    /// from the route's last message about it; null or absent = never.
    #[schema(required = false, minimum = 60, maximum = 31_536_000)]
    repeat_every_secs: Option<u64>,
}

fn body_object(body: Value) -> ApiResult<serde_json::Map<String, Value>> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::field(
            "non_field_errors",
            "Invalid data. Expected a dictionary.",
        )),
    }
}

/// A route's target checked against this api's settings: an address in the URL that is
/// private is refused now (a name is checked at each attempt, where it resolves).
fn check_target(state: &AppState, spec: &RouteSpec) -> ApiResult<()> {
    if state.settings.notify.notify_allow_private_targets {
        return Ok(());
    }
    let Some(url) = spec.url.as_deref().and_then(|u| url::Url::parse(u).ok()) else {
        return Ok(());
    };
    let private = match url.host() {
        Some(url::Host::Ipv4(ip)) => common::domain::is_private_address(ip.into()),
        Some(url::Host::Ipv6(ip)) => common::domain::is_private_address(ip.into()),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost")
        }
        None => false,
    };
    if private {
        return Err(ApiError::field(
            "url",
            "Targets on loopback, private or link-local addresses are refused \
             (NOTIFY_ALLOW_PRIVATE_TARGETS).",
        ));
    }
    Ok(())
}

/// A route from a body, every problem at once.
fn parse_route(
    body: &serde_json::Map<String, Value>,
    base: Option<&RouteSpec>,
) -> ApiResult<RouteSpec> {
    RouteSpec::parse(body, base).map_err(ApiError::Fields)
}

fn duplicate_name() -> ApiError {
    ApiError::field(
        "name",
        "A notification route with this name already exists.",
    )
}

/// Lists the notification routes, by id.
#[utoipa::path(get, path = "/api/notification-routes/", tag = "notifications", security(("jwt" = [])),
    params(("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
           ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100")),
    responses((status = 200, body = Page<RouteOut>), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<RouteOut>>> {
    let page = PageRequest::from_params(&mut params);
    params.finish()?;
    let count = state.storage.count_routes().await?;
    page.check_exists(count)?;
    let routes = state.storage.list_routes(page.size, page.offset()).await?;
    let routes = routes.into_iter().map(RouteOut::of).collect();
    Ok(Json(page.page(count, routes, &uri, &headers)))
}

/// Creates a route. A webhook route without a `secret` gets one, shown in this answer only.
/// It applies from the next alert message.
#[utoipa::path(post, path = "/api/notification-routes/", tag = "notifications", security(("jwt" = [])),
    request_body = RouteIn,
    responses((status = 201, body = RouteOut), (status = 400), (status = 401), (status = 403),
        (status = 413), (status = 415), (status = 503)))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<RouteOut>)> {
    let body = body_object(body)?;
    let mut spec = parse_route(&body, None)?;
    check_target(&state, &spec)?;
    let mut generated = None;
    if spec.kind == RouteKind::Webhook && spec.secret.is_none() {
        let secret = new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
        spec.secret = Some(secret.clone());
        generated = Some(secret);
    }
    match state.storage.create_route(&spec, Utc::now()).await {
        Ok(route) => {
            tracing::info!(
                admin = admin.id,
                route_id = route.id,
                kind = route.spec.kind.as_str(),
                "notification route created"
            );
            let mut out = RouteOut::of(route);
            out.secret = generated;
            Ok((StatusCode::CREATED, Json(out)))
        }
        Err(StorageError::Duplicate(_)) => Err(duplicate_name()),
        Err(err) => Err(err.into()),
    }
}

/// One route.
#[utoipa::path(get, path = "/api/notification-routes/{id}/", tag = "notifications", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Route id")),
    responses((status = 200, body = RouteOut), (status = 401), (status = 403), (status = 404),
        (status = 503)))]
pub async fn get(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    PathId(id): PathId,
) -> ApiResult<Json<RouteOut>> {
    let id = parse_id(&id)?;
    let route = state.storage.route(id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(RouteOut::of(route)))
}

/// Changes a route (any of its fields; a new `secret` replaces the old one, which is how a
/// secret is rotated). It applies from the next alert message.
#[utoipa::path(patch, path = "/api/notification-routes/{id}/", tag = "notifications", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Route id")), request_body = RouteIn,
    responses((status = 200, body = RouteOut), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 413), (status = 415), (status = 503)))]
pub async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<RouteOut>> {
    let id = parse_id(&id)?;
    let existing = state.storage.route(id).await?.ok_or(ApiError::NotFound)?;
    let body = body_object(body)?;
    let mut spec = parse_route(&body, Some(&existing.spec))?;
    check_target(&state, &spec)?;
    if spec.kind == RouteKind::Webhook && spec.secret.is_none() {
        // A route that became a webhook needs a secret to sign with.
        return Err(ApiError::field("secret", "A webhook route needs a secret."));
    }
    if spec.kind != RouteKind::Webhook {
        spec.secret = None;
    }
    match state.storage.update_route(id, &spec, Utc::now()).await {
        Ok(Some(route)) => {
            tracing::info!(
                admin = admin.id,
                route_id = id,
                "notification route updated"
            );
            Ok(Json(RouteOut::of(route)))
        }
        Ok(None) => Err(ApiError::NotFound),
        Err(StorageError::Duplicate(_)) => Err(duplicate_name()),
        Err(err) => Err(err.into()),
    }
}

/// Deletes a route; its deliveries not yet made are cancelled, its attempts stay in the log.
#[utoipa::path(delete, path = "/api/notification-routes/{id}/", tag = "notifications", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Route id")),
    responses((status = 204, description = "Deleted"), (status = 401), (status = 403),
        (status = 404), (status = 503)))]
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if !state.storage.delete_route(id, Utc::now()).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(
        admin = admin.id,
        route_id = id,
        "notification route deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// A route test's body: nothing (an empty body or `{}`; other fields are ignored).
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct RouteTestIn {}

/// Sends a test message through the route now (once, no retries) and answers with that
/// attempt, as the delivery log records it.
#[utoipa::path(post, path = "/api/notification-routes/{id}/test/", tag = "notifications", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Route id")), request_body = RouteTestIn,
    responses((status = 200, body = DeliveryAttempt), (status = 400), (status = 401),
        (status = 403), (status = 404), (status = 413), (status = 415), (status = 503)))]
pub async fn test(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<DeliveryAttempt>> {
    body_object(body)?;
    let id = parse_id(&id)?;
    let route = state.storage.route(id).await?.ok_or(ApiError::NotFound)?;
    let now = Utc::now();
    let notice = AlertNotice::test(&route.spec, now);
    let key = format!("test-{}", uuid::Uuid::new_v4());
    let delivery = state
        .storage
        .record_test_delivery(route.id, &key, &notice.stored(), now)
        .await?;
    let attempt_id = state
        .storage
        .begin_attempt(&delivery, &route.spec.name, now)
        .await?;
    let sent = state
        .notifier
        .send(&route.spec, &notice, &delivery.webhook_id())
        .await;
    let result = AttemptResult {
        outcome: if sent.delivered {
            AttemptOutcome::Delivered
        } else {
            AttemptOutcome::Failed
        },
        status_code: sent.status_code,
        reply: sent.reply,
        error: sent.error,
        latency_us: i64::try_from(sent.latency.as_micros()).unwrap_or(i64::MAX),
        next_attempt_at: None,
    };
    state
        .storage
        .finish_attempt(delivery.id, attempt_id, &result, Utc::now())
        .await?;
    tracing::info!(
        admin = admin.id,
        route_id = id,
        delivered = sent.delivered,
        "notification route tested"
    );
    let attempt = state
        .storage
        .attempt(attempt_id)
        .await?
        .ok_or_else(|| ApiError::internal("the test attempt vanished"))?;
    Ok(Json(attempt))
}

/// Every attempt to send an alert, oldest first: route, time, outcome, HTTP status or SMTP
/// reply, latency, and when a failed one is tried again.
#[utoipa::path(get, path = "/api/alerts/{id}/deliveries/", tag = "alerts", security(("jwt" = [])),
    params(
        ("id" = i64, Path, description = "Alert id"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100"),
    ),
    responses((status = 200, body = Page<DeliveryAttempt>), (status = 400), (status = 401),
        (status = 404), (status = 503)))]
pub async fn deliveries(
    State(state): State<AppState>,
    AnyUser(_user): AnyUser,
    PathId(id): PathId,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<DeliveryAttempt>>> {
    let id = parse_id(&id)?;
    let page = PageRequest::from_params(&mut params);
    params.finish()?;
    state
        .storage
        .alert_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let count = state.storage.count_alert_attempts(id).await?;
    page.check_exists(count)?;
    let attempts = state
        .storage
        .alert_attempts(id, page.size, page.offset())
        .await?;
    Ok(Json(page.page(count, attempts, &uri, &headers)))
}
