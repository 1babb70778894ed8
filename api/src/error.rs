//! The one error type of the api, and the HTTP contract: every variant is a status and a
//! body in the shape Django REST Framework writes, so clients of the original keep working.
//! Internal failures are logged with their cause and answered with a bare 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::FieldErrors;
use serde_json::json;

/// What a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input is invalid; each field names its problems.
    #[error("invalid input: {0}")]
    Fields(FieldErrors),
    /// 400: the input is invalid; a list body gets one error object per item, as DRF does.
    #[error("invalid items")]
    Items(Vec<FieldErrors>),
    /// 400: the body is not JSON (or not the JSON expected), with the parser's words.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// 401: no credentials at all.
    #[error("no credentials")]
    NotAuthenticated,
    /// 401: a token that is bad, expired, revoked or of the wrong type.
    #[error("invalid token")]
    InvalidToken,
    /// 401: the token's user is gone.
    #[error("user not found")]
    UserNotFound,
    /// 401: the token's user is deactivated.
    #[error("user inactive")]
    UserInactive,
    /// 401: wrong username or password (never says which).
    #[error("bad credentials")]
    BadCredentials,
    /// 403: authenticated, but the role may not do this.
    #[error("forbidden")]
    Forbidden,
    /// 404: no such object.
    #[error("not found")]
    NotFound,
    /// 404: a page past the end.
    #[error("invalid page")]
    InvalidPage,
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed(String),
    /// 413: the body is over the limit.
    #[error("body too large")]
    TooLarge,
    /// 415: the body is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    /// 429: too many failed logins; retry after this many seconds.
    #[error("throttled")]
    Throttled(u64),
    /// 503: a dependency (the event bus, the database) is unavailable.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// 500: our fault; the cause is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// One field, one message.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        ApiError::Fields(errors)
    }

    /// An internal failure with its cause, for the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Fields(_) | ApiError::Items(_) | ApiError::Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotAuthenticated
            | ApiError::InvalidToken
            | ApiError::UserNotFound
            | ApiError::UserInactive
            | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::InvalidPage => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<common::StorageError> for ApiError {
    fn from(err: common::StorageError) -> Self {
        if err.is_transient() {
            tracing::warn!(error = %err, "database unavailable");
            ApiError::Unavailable("The database is unavailable, try again later.")
        } else {
            ApiError::internal(err)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Fields(errors) => json!(errors),
            ApiError::Items(items) => json!(items),
            ApiError::Malformed(reason) => {
                json!({ "detail": format!("JSON parse error - {reason}") })
            }
            ApiError::NotAuthenticated => {
                json!({ "detail": "Authentication credentials were not provided." })
            }
            ApiError::InvalidToken => json!({
                "detail": "Given token not valid for any token type",
                "code": "token_not_valid",
            }),
            ApiError::UserNotFound => {
                json!({ "detail": "User not found", "code": "user_not_found" })
            }
            ApiError::UserInactive => {
                json!({ "detail": "User is inactive", "code": "user_inactive" })
            }
            ApiError::BadCredentials => {
                json!({ "detail": "No active account found with the given credentials" })
            }
            ApiError::Forbidden => {
                json!({ "detail": "You do not have permission to perform this action." })
            }
            ApiError::NotFound => json!({ "detail": "Not found." }),
            ApiError::InvalidPage => json!({ "detail": "Invalid page." }),
            ApiError::MethodNotAllowed(method) => {
                json!({ "detail": format!("Method \"{method}\" not allowed.") })
            }
            ApiError::TooLarge => json!({ "detail": "Request body is too large (at most 1 MiB)." }),
            ApiError::UnsupportedMediaType(media) => {
                json!({ "detail": format!("Unsupported media type \"{media}\" in request.") })
            }
            ApiError::Throttled(seconds) => json!({
                "detail": format!("Request was throttled. Expected available in {seconds} seconds."),
            }),
            ApiError::Unavailable(detail) => json!({ "detail": detail }),
            ApiError::Internal(cause) => {
                tracing::error!(cause, "internal error");
                json!({ "detail": "A server error occurred." })
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::NotAuthenticated
            | ApiError::InvalidToken
            | ApiError::UserNotFound
            | ApiError::UserInactive => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"api\""),
                );
            }
            ApiError::Throttled(seconds) => {
                if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;
