//! The routes, one module per resource, composed over one shared [`AppState`].

pub mod alerts;
pub mod auth;
pub mod events;
pub mod health;
pub mod notifications;
pub mod users;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::Method;
use axum::http::request::Parts;

use crate::error::ApiError;

/// Every route the api serves (without the optional trailing slash), for the router, the
/// OpenAPI document and the test that checks they agree.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("GET", "/api/users/{id}"),
    ("PATCH", "/api/users/{id}"),
    ("DELETE", "/api/users/{id}"),
    ("GET", "/api/events"),
    ("POST", "/api/events"),
    ("GET", "/api/events/{id}"),
    ("GET", "/api/alerts"),
    ("GET", "/api/alerts/{id}"),
    ("PATCH", "/api/alerts/{id}"),
    ("PUT", "/api/alerts/{id}"),
    ("GET", "/api/alerts/{id}/history"),
    ("GET", "/api/alerts/{id}/events"),
    ("GET", "/api/alerts/{id}/notes"),
    ("POST", "/api/alerts/{id}/notes"),
    ("GET", "/api/alerts/stream"),
    ("POST", "/api/alerts/bulk"),
    ("GET", "/api/alerts/summary"),
    ("GET", "/api/alerts/{id}/deliveries"),
    ("GET", "/api/notification-routes"),
    ("POST", "/api/notification-routes"),
    ("GET", "/api/notification-routes/{id}"),
    ("PATCH", "/api/notification-routes/{id}"),
    ("DELETE", "/api/notification-routes/{id}"),
    ("POST", "/api/notification-routes/{id}/test"),
    ("GET", "/api/schema"),
    ("GET", "/api/docs"),
    ("GET", crate::openapi::DOCS_SCRIPT_PATH),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
];

/// 404 for any path we do not serve.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// 405 for a path we serve, with a method we do not.
pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Parses a path id; anything but a positive integer is simply not found.
pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(ApiError::NotFound)
}

/// A path id as given, for [`parse_id`]. One that does not even decode (`%FF`, not UTF-8)
/// is not found like any other non-id, instead of axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(PathId(id)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::NotFound),
            Err(other) => Err(ApiError::internal(other)),
        }
    }
}
