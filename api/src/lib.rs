//! threatmon's REST API: an axum service over `common`'s storage and subjects that serves
//! the original DRF service's contract (JWT auth, roles, pages, DRF error bodies).
//!
//! [`Application::build`] binds (port 0 in tests) and [`Application::run`] serves until the
//! shutdown token is cancelled; `main` is a few lines around them, and tests build the same
//! router with [`app`].

pub mod auth;
pub mod error;
pub mod input;
pub mod openapi;
pub mod pagination;
pub mod routes;
pub mod settings;
pub mod state;
pub mod updates;

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{get, post};
use chrono::Utc;
use common::bus::{self, BusError};
use common::domain::Role;
use common::notify::Notifier;
use common::storage::{NewUser, Storage, StorageError};
use common::subjects;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{LoginLimiter, PasswordPolicyError, Passwords, Tokens, check_password_policy};
use crate::error::ApiError;
use crate::input::MAX_BODY_BYTES;
use crate::settings::Settings;
use crate::state::{AppState, Shared};

pub use crate::state::AppState as State;

/// Why the api could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `SECRET_KEY` is not set.
    #[error("SECRET_KEY is required (at least 32 bytes): set it in the environment or .env")]
    MissingSecretKey,
    /// The database (`DATABASE_URL`) could not be opened or migrated.
    #[error("DATABASE_URL")]
    Database(#[from] StorageError),
    /// NATS (`NATS_URL`) could not be reached or set up.
    #[error("NATS_URL")]
    Nats(#[from] BusError),
    /// `ADMIN_PASSWORD` does not meet the password policy.
    #[error("ADMIN_PASSWORD")]
    AdminPassword(#[source] PasswordPolicyError),
    /// `ADMIN_USERNAME`/`ADMIN_PASSWORD` may not be used with these settings.
    #[error("ADMIN_PASSWORD: {0}")]
    Admin(&'static str),
    /// The password hasher could not be set up or could not hash `ADMIN_PASSWORD`.
    #[error("ADMIN_PASSWORD: cannot hash the password")]
    Hashing(#[source] ApiError),
    /// The notification settings (`SMTP_URL`, `SMTP_FROM`) are unusable.
    #[error("notification settings")]
    Notify(#[source] common::notify::NotifyError),
    /// `API_ADDR` could not be bound.
    #[error("API_ADDR: cannot listen on {addr}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The router: every route of [`routes::ROUTES`], without trailing slashes.
pub fn router(state: AppState) -> Router {
    use routes::{alerts, auth, events, health, notifications, users};
    let mut router = Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/users", get(users::list).post(users::create))
        .route(
            "/api/users/{id}",
            get(users::get)
                .patch(users::update)
                .delete(users::deactivate),
        )
        .route("/api/events", get(events::list).post(events::create))
        .route("/api/events/{id}", get(events::get))
        .route("/api/alerts", get(alerts::list))
        .route(
            "/api/alerts/{id}",
            get(alerts::get).patch(alerts::patch).put(alerts::put),
        )
        .route("/api/alerts/{id}/history", get(alerts::history))
        .route("/api/alerts/{id}/events", get(alerts::events))
        .route(
            "/api/alerts/{id}/notes",
            get(alerts::notes).post(alerts::add_note),
        )
        .route("/api/alerts/stream", get(alerts::stream))
        .route("/api/alerts/bulk", post(alerts::bulk))
        .route("/api/alerts/summary", get(alerts::summary))
        .route(
            "/api/alerts/{id}/deliveries",
            get(notifications::deliveries),
        )
        .route(
            "/api/notification-routes",
            get(notifications::list).post(notifications::create),
        )
        .route(
            "/api/notification-routes/{id}",
            get(notifications::get)
                .patch(notifications::update)
                .delete(notifications::delete),
        )
        .route(
            "/api/notification-routes/{id}/test",
            post(notifications::test),
        )
        .route("/api/schema", get(openapi::schema))
        .route("/api/docs", get(openapi::docs))
        .route(openapi::DOCS_SCRIPT_PATH, get(openapi::docs_script))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Defence in depth: a handler that panics (a bug) answers a DRF-shaped 500 instead
        // of dropping the client's connection, and the panic is logged.
        .layer(CatchPanicLayer::custom(answer_panic))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(axum::middleware::from_fn(track_requests))
        .layer(TraceLayer::new_for_http());
    let origins: Vec<HeaderValue> = state
        .settings
        .cors_allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok())
        .collect();
    if !origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PATCH,
                    Method::PUT,
                    Method::DELETE,
                ])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                ]),
        );
    }
    router.with_state(state)
}

/// The whole service: the router behind trailing-slash normalization, so `/api/alerts/`
/// and `/api/alerts` are the same route.
pub fn app(state: AppState) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router(state))
}

/// Builds the shared state from settings: database (migrated), NATS (streams declared),
/// token keys, password hashing, login limits.
pub async fn build_state(settings: Settings) -> Result<AppState, StartError> {
    let secret = settings
        .secret_key
        .clone()
        .ok_or(StartError::MissingSecretKey)?;
    let storage = Storage::connect_and_migrate(&settings.connections.database_url).await?;
    let nats = bus::connect(
        &settings.connections.nats_url,
        "threatmon-api",
        settings.connections.nats_connect_timeout(),
    )
    .await?;
    let js = jetstream::new(nats.clone());
    subjects::ensure_streams_within(&js, &storage, settings.connections.nats_connect_timeout())
        .await?;
    // One hash at a time: each holds 12 MiB of argon2 memory, the api's budget is 64 MiB,
    // and one core still checks ~65 logins a second (the original managed 3).
    let passwords = Passwords::new(1).map_err(StartError::Hashing)?;
    let notifier = Notifier::new(settings.notify.clone()).map_err(StartError::Notify)?;
    let state = AppState::new(Shared {
        tokens: Tokens::new(&secret, settings.access_ttl(), settings.refresh_ttl()),
        limiter: LoginLimiter::new(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_window(),
        ),
        storage,
        nats,
        js,
        passwords,
        notifier,
        settings,
        shutdown: CancellationToken::new(),
        published: updates::PublishedChanges::default(),
    });
    common::ops::metrics();
    ensure_admin(&state).await?;
    Ok(state)
}

/// Creates `ADMIN_USERNAME` with `ADMIN_PASSWORD` when no user has that name.
async fn ensure_admin(state: &AppState) -> Result<(), StartError> {
    let (Some(username), Some(password)) = (
        state.settings.admin_username.as_deref(),
        state.settings.admin_password.as_ref(),
    ) else {
        return Ok(());
    };
    if state
        .storage
        .user_with_password_hash(username)
        .await?
        .is_some()
    {
        return Ok(());
    }
    if state.settings.local_quickstart {
        if !state.settings.api_addr.ip().is_loopback() {
            return Err(StartError::Admin(
                "LOCAL_QUICKSTART allows a weak admin password only when API_ADDR is a loopback address",
            ));
        }
        if check_password_policy(password.expose(), username).is_err() {
            tracing::warn!(
                username,
                "LOCAL QUICK START: creating an admin with a weak password. For local use only!"
            );
        }
    } else {
        check_password_policy(password.expose(), username).map_err(StartError::AdminPassword)?;
    }
    let password_hash = state
        .passwords
        .hash(password.expose())
        .await
        .map_err(StartError::Hashing)?;
    let user = NewUser {
        username: username.to_owned(),
        email: String::new(),
        password_hash,
        role: Role::Admin,
        is_active: true,
    };
    match state.storage.create_user(&user, Utc::now()).await {
        Ok(user) => tracing::info!(
            username,
            user_id = user.id,
            "admin created from ADMIN_USERNAME"
        ),
        // Another instance starting at the same time made it first.
        Err(StorageError::Duplicate(_)) => {}
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// A bound, ready-to-serve api.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Builds the state and binds `API_ADDR` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let addr = settings.api_addr;
        let state = build_state(settings).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Application { listener, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The shared state (tests seed users through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let storage = self.state.storage.clone();
        let streams = self.state.shutdown.clone();
        let purge = tokio::spawn(purge_revoked_tokens(storage.clone(), shutdown.clone()));
        let relay = tokio::spawn(updates::relay_pending_updates(
            self.state.clone(),
            shutdown.clone(),
        ));
        let service =
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app(self.state));
        tracing::info!(addr = ?self.listener.local_addr().ok(), "api listening");
        axum::serve(self.listener, service)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                // Live streams never finish by themselves: end them so draining can.
                streams.cancel();
            })
            .await?;
        let _ = purge.await;
        let _ = relay.await;
        storage.close().await;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Forgets revoked refresh tokens once they have expired anyway, hourly.
async fn purge_revoked_tokens(storage: Storage, shutdown: CancellationToken) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    while shutdown
        .run_until_cancelled(every_hour.tick())
        .await
        .is_some()
    {
        match storage.purge_revoked_tokens(Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired revoked tokens purged"),
            Err(err) => tracing::warn!(error = %err, "purging revoked tokens failed"),
        }
    }
}

/// The answer to a request whose handler panicked: logged, and a bare 500 to the client.
fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = common::worker::panic_message(panic.as_ref());
    error::ApiError::internal(format!("a request handler panicked: {message}")).into_response()
}

/// Counts every request by method, route (the pattern, not the raw path) and status, and
/// records its latency.
async fn track_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(common::ops::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(common::ops::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
