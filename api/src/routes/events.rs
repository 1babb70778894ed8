//! `/api/events/`: read stored events; post new ones into the pipeline.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::FieldErrors;
use common::bus::{self, Outgoing};
use common::domain::{Event, EventIn, EventRejection, Severity};
use common::storage::EventFilter;
use common::subjects;
use serde_json::Value;

use crate::auth::AdminUser;
use crate::error::{ApiError, ApiResult, OrInternal};
use crate::input::{JsonBody, Params};
use crate::pagination::{Page, PageRequest};
use crate::routes::{PathId, parse_id};
use crate::state::AppState;

/// Most events one POST may carry.
const MAX_BATCH: usize = 1000;
/// How long a POST waits for the stream to acknowledge before answering 503.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Lists stored events, newest first.
#[utoipa::path(get, path = "/api/events/", tag = "events", security(("jwt" = [])),
    params(
        ("severity" = Option<Severity>, Query, description = "Exact severity"),
        ("sourceName" = Option<String>, Query, description = "Exact sensor name"),
        ("eventType" = Option<String>, Query, description = "Exact event type"),
        ("created_at__gte" = Option<String>, Query, format = DateTime, description = "Stored at or after (RFC 3339)"),
        ("created_at__lte" = Option<String>, Query, format = DateTime, description = "Stored at or before (RFC 3339)"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100"),
    ),
    responses((status = 200, body = Page<Event>), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<Event>>> {
    let filter = EventFilter {
        severity: params.choice::<Severity>("severity"),
        source_name: params.text("sourceName"),
        event_type: params.text("eventType"),
        created_from: params.datetime("created_at__gte"),
        created_to: params.datetime("created_at__lte"),
    };
    let page = PageRequest::from_params(&mut params);
    params.finish()?;
    let count = state.storage.count_events_matching(&filter).await?;
    page.check_exists(count)?;
    let events = state
        .storage
        .list_events(&filter, page.size, page.offset())
        .await?;
    Ok(Json(page.page(count, events, &uri, &headers)))
}

/// One stored event.
#[utoipa::path(get, path = "/api/events/{id}/", tag = "events", security(("jwt" = [])),
    params(("id" = i64, Path, description = "Event id")),
    responses((status = 200, body = Event), (status = 401), (status = 403), (status = 404),
        (status = 503)))]
pub async fn get(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    PathId(id): PathId,
) -> ApiResult<Json<Event>> {
    let id = parse_id(&id)?;
    let event = state
        .storage
        .event_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(event))
}

fn field_errors(rejection: EventRejection) -> FieldErrors {
    match rejection {
        EventRejection::Invalid(errors) => errors,
        EventRejection::NotJson(reason) => {
            let mut errors = FieldErrors::new();
            errors.add("non_field_errors", reason);
            errors
        }
    }
}

/// Accepts an event (or a JSON array of events) into the pipeline: validated, published to
/// `events.api` and durable in the EVENTS stream before the answer. The ingestor stores it
/// and escalates it like any sensor's. Each accepted event carries its idempotency `uid`
/// (the body's, or a new one): posting it again with that `uid` stores it once.
#[utoipa::path(post, path = "/api/events/", tag = "events", security(("jwt" = [])),
    request_body(content = crate::openapi::EventsIn, description = "An event, or a JSON array of up to 1000 events"),
    responses(
        (status = 202, body = crate::openapi::EventsAccepted, description = "Accepted (a list for a list)"),
        (status = 400, body = crate::openapi::EventErrors,
            description = "Field errors (a list of them, one per event, for a list)"),
        (status = 401), (status = 403), (status = 413), (status = 415),
        (status = 503, description = "The event bus or the database is unavailable"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (items, is_batch) = match body {
        Value::Array(items) => (items, true),
        single => (vec![single], false),
    };
    if is_batch && items.is_empty() {
        return Err(ApiError::field(
            "non_field_errors",
            "Expected a non-empty list of events.",
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::field(
            "non_field_errors",
            format!("Ensure this list has no more than {MAX_BATCH} events."),
        ));
    }

    let mut accepted = Vec::with_capacity(items.len());
    let mut errors = Vec::with_capacity(items.len());
    for item in items {
        match EventIn::from_value(item) {
            Ok(mut event) => {
                event
                    .uid
                    .get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
                accepted.push(event);
                errors.push(FieldErrors::new());
            }
            Err(rejection) => errors.push(field_errors(rejection)),
        }
    }
    if errors.iter().any(|e| !e.is_empty()) {
        return Err(if is_batch {
            ApiError::Items(errors)
        } else {
            ApiError::Fields(errors.into_iter().next().unwrap_or_default())
        });
    }

    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::Unavailable(
            "The event bus is unavailable, try again later.",
        ));
    }
    let subject = subjects::event_subject("api");
    let mut outgoing = Vec::with_capacity(accepted.len());
    for event in &accepted {
        let uid = event.uid.clone().unwrap_or_default();
        outgoing.push(Outgoing::json(subject.clone(), uid, event).or_internal()?);
    }
    match tokio::time::timeout(PUBLISH_TIMEOUT, bus::publish_all(&state.js, outgoing)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) if !err.is_transient() => return Err(ApiError::internal(err)),
        Ok(Err(err)) => {
            tracing::warn!(error = %common::telemetry::error_chain(&err), "publishing events failed");
            return Err(ApiError::Unavailable(
                "The event bus is unavailable, try again later.",
            ));
        }
        Err(_) => {
            tracing::warn!("publishing events timed out");
            return Err(ApiError::Unavailable(
                "The event bus is unavailable, try again later.",
            ));
        }
    }
    tracing::info!(admin = admin.id, count = accepted.len(), "events accepted");
    let body = if is_batch {
        serde_json::to_value(&accepted)
    } else {
        serde_json::to_value(accepted.first())
    }
    .or_internal()?;
    Ok((StatusCode::ACCEPTED, Json(body)))
}
