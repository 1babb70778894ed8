//! The OpenAPI document (served at `/api/schema/`) and the interactive docs (`/api/docs/`).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

/// threatmon's REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "threatmon",
        description = "Threat monitoring and alert management. Wire-compatible with the original \
                       Django REST Framework service: JWT (SimpleJWT) auth, DRF pages and errors.",
    ),
    paths(
        routes::auth::login,
        routes::auth::refresh,
        routes::auth::logout,
        routes::users::list,
        routes::users::create,
        routes::users::get,
        routes::users::update,
        routes::users::deactivate,
        routes::events::list,
        routes::events::create,
        routes::events::get,
        routes::alerts::list,
        routes::alerts::get,
        routes::alerts::patch,
        routes::alerts::put,
        routes::alerts::history,
        routes::alerts::stream,
        schema,
        docs,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "users", description = "User management (admins)"),
        (name = "events", description = "Security events"),
        (name = "alerts", description = "Alerts raised for HIGH and CRITICAL events"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("jwt", SecurityScheme::Http(scheme));
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/api/schema/", tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1, JSON)")))]
pub async fn schema() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// Interactive documentation of this API.
#[utoipa::path(get, path = "/api/docs/", tag = "health",
    responses((status = 200, description = "An HTML page", content_type = "text/html")))]
pub async fn docs() -> axum::response::Html<String> {
    axum::response::Html(utoipa_scalar::Scalar::new(ApiDoc::openapi()).to_html())
}
