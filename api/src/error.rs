//! The one error type of the api, and the HTTP contract: every variant is a status and a
//! body in the shape Django REST Framework writes, so clients of the original keep working.
//! Internal failures are logged with their whole cause chain where they are raised and
//! answered with a bare 500.

use std::panic::Location;

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
    /// 409: the `version` given is not the alert's; the body is the alert as it is.
    #[error("version conflict")]
    Conflict(Box<common::Alert>),
    /// 412: the `If-Match` given is not the alert's `ETag`; the body is the alert as it is.
    #[error("precondition failed")]
    PreconditionFailed(Box<common::Alert>),
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
    /// 500: our fault; the cause was logged where it was raised, and is never shown.
    #[error(transparent)]
    Internal(Internal),
}

/// An internal failure: its cause (with that cause's own causes) and where it was raised.
/// Made only by [`ApiError::internal`], which logs it, so none goes unlogged.
#[derive(Debug, thiserror::Error)]
#[error("internal error at {location}")]
pub struct Internal {
    #[source]
    cause: Box<dyn std::error::Error + Send + Sync + 'static>,
    location: &'static Location<'static>,
}

impl Internal {
    /// What went wrong.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.cause
    }

    /// Where in the api it was raised.
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

impl ApiError {
    /// One field, one message.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        ApiError::Fields(errors)
    }

    /// An internal failure: logs its whole cause chain (`a: b: c`) and the caller's
    /// location now, while the context is at hand, and answers a bare 500 later. Takes any
    /// error, or a message (`&str`, `String`) for a broken invariant.
    #[track_caller]
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        let internal = Internal {
            cause: cause.into(),
            location: Location::caller(),
        };
        tracing::error!(
            error = %common::telemetry::error_chain(internal.cause()),
            at = %internal.location,
            "internal error"
        );
        ApiError::Internal(internal)
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
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<common::StorageError> for ApiError {
    #[track_caller]
    fn from(err: common::StorageError) -> Self {
        if err.is_transient() {
            tracing::warn!(
                error = %common::telemetry::error_chain(&err),
                at = %Location::caller(),
                "database unavailable"
            );
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
            ApiError::Conflict(alert) | ApiError::PreconditionFailed(alert) => json!(alert),
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
            ApiError::Internal(_) => json!({ "detail": "A server error occurred." }),
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
            ApiError::Conflict(alert) | ApiError::PreconditionFailed(alert) => {
                headers.insert(header::ETAG, etag(alert));
            }
            _ => {}
        }
        response
    }
}

/// An alert's `ETag`: its `version`, quoted (`"3"`). It changes with every change of the
/// alert's triage state (status, severity, owner, close reason), not with each folded repeat.
pub fn etag(alert: &common::Alert) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", alert.version))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

/// `result.or_internal()?`: an error becomes [`ApiError::internal`], logged with the
/// location of this call (`map_err(ApiError::internal)` would log a place in `core`, as a
/// function passed by name does not carry its caller's location).
pub trait OrInternal<T> {
    /// The value, or an internal error raised here.
    fn or_internal(self) -> ApiResult<T>;
}

impl<T, E> OrInternal<T> for Result<T, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    #[track_caller]
    fn or_internal(self) -> ApiResult<T> {
        match self {
            Ok(value) => Ok(value),
            Err(err) => Err(ApiError::internal(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("storing the batch")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("writing row 7")]
    struct Middle(#[source] std::io::Error);

    /// What the log says while `work` runs.
    fn logged(work: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, work);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn failing() -> Result<(), Outer> {
        Err(Outer(Middle(std::io::Error::other("disk full"))))
    }

    #[test]
    fn an_internal_error_logs_its_whole_chain_where_it_is_raised() {
        let mut raised = None;
        let log = logged(|| raised = Some(failing().or_internal().unwrap_err()));
        let line = line!() - 1;
        assert!(
            log.contains("storing the batch: writing row 7: disk full"),
            "{log}"
        );
        let ApiError::Internal(internal) = raised.unwrap() else {
            panic!("not internal");
        };
        assert_eq!(internal.location().file(), file!());
        assert_eq!(internal.location().line(), line, "{log}");
        assert!(log.contains(&format!("{}:{line}", file!())), "{log}");
        assert_eq!(
            common::telemetry::error_chain(&internal),
            format!(
                "internal error at {}: storing the batch: writing row 7: disk full",
                internal.location()
            )
        );
    }

    #[test]
    fn a_storage_error_raised_by_question_mark_is_logged_where_it_was_raised() {
        fn handler() -> ApiResult<()> {
            Err(common::StorageError::Corrupt("severity 9".into()))?
        }
        let line = line!() - 2;
        let mut raised = None;
        let log = logged(|| raised = Some(handler().unwrap_err()));
        let ApiError::Internal(internal) = raised.unwrap() else {
            panic!("not internal");
        };
        assert_eq!(
            (internal.location().file(), internal.location().line()),
            (file!(), line),
            "{log}"
        );
        assert!(log.contains("corrupt row: severity 9"), "{log}");
    }

    #[test]
    fn the_answer_to_an_internal_error_never_shows_the_cause() {
        let response =
            ApiError::internal(Outer(Middle(std::io::Error::other("secret path")))).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1024))
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            json!({"detail": "A server error occurred."})
        );
    }

    #[test]
    fn a_message_is_an_internal_error_too() {
        let log = logged(|| {
            let _ = ApiError::internal("validated fields missing");
        });
        assert!(log.contains("validated fields missing"), "{log}");
    }
}
