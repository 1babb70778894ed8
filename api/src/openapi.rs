//! The OpenAPI document (served at `/api/schema/`) and the documentation page (`/api/docs/`).
//!
//! Every status an operation can answer is declared on it (CI runs schemathesis over the
//! document and fails on an undeclared one); [`ErrorBodies`] gives each error status the body
//! DRF writes, so the routes only name their statuses. The page's script is a pinned Redoc
//! bundle embedded in the binary (`api/assets/`, re-fetched by `scripts/vendor-docs`): the
//! docs work with no network.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::routes;

/// threatmon's REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "threatmon",
        description = "Threat monitoring and alert management. Wire-compatible with the original \
                       Django REST Framework service: JWT (SimpleJWT) auth, DRF pages and errors. \
                       Errors are `{\"detail\": …}`, except 400s for bad fields, which name each \
                       field: `{\"<field>\": [\"message\", …]}`.",
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
        routes::alerts::events,
        routes::alerts::notes,
        routes::alerts::add_note,
        routes::alerts::stream,
        routes::alerts::bulk,
        routes::alerts::summary,
        routes::notifications::deliveries,
        routes::notifications::list,
        routes::notifications::create,
        routes::notifications::get,
        routes::notifications::update,
        routes::notifications::delete,
        routes::notifications::test,
        schema,
        docs,
        docs_script,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
    ),
    modifiers(&BearerAuth, &ErrorBodies, &LenientInput),
    components(schemas(routes::alerts::AlertOrderingParam)),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "users", description = "User management (admins)"),
        (name = "events", description = "Security events"),
        (name = "alerts", description = "Alerts raised for HIGH and CRITICAL events, repeats folded in"),
        (name = "notifications", description = "Where alerts are sent: webhooks, Slack, e-mail (admins)"),
        (name = "health", description = "Liveness, readiness and this documentation"),
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

/// Gives every declared error status (4xx, 5xx) without a body of its own the body DRF
/// writes for it, a description, and its headers; adds the error schemas they name.
struct ErrorBodies;

/// `{"detail": …}`: every error but field errors.
const DETAIL: &str = "Detail";
/// `{"<field>": ["message", …]}`: 400 for bad fields.
const FIELD_ERRORS: &str = "FieldErrors";
/// Either of the two: what a 400 can be (a malformed body is a `Detail`).
const BAD_REQUEST: &str = "BadRequest";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn error_schemas() -> [(&'static str, RefOr<Schema>); 3] {
    let detail = ObjectBuilder::new()
        .description(Some("An error, in DRF's words."))
        .property("detail", string())
        .required("detail")
        .property(
            "code",
            string().description(Some("A machine-readable reason, for token errors")),
        )
        .build();
    let fields = ObjectBuilder::new()
        .description(Some(
            "Bad fields: each names its problems (`non_field_errors` for the body as a whole).",
        ))
        .additional_properties(Some(ArrayBuilder::new().items(string())))
        .build();
    let bad_request = AnyOfBuilder::new()
        .description(Some("Field errors, or a body that is not JSON"))
        .item(Ref::from_schema_name(FIELD_ERRORS))
        .item(Ref::from_schema_name(DETAIL))
        .build();
    [
        (DETAIL, detail.into()),
        (FIELD_ERRORS, fields.into()),
        (BAD_REQUEST, Schema::AnyOf(bad_request).into()),
    ]
}

/// The usual meaning of an error status here, when the route gives none.
fn error_description(status: &str) -> Option<&'static str> {
    Some(match status {
        "400" => "Invalid input: field errors, or a malformed body",
        "401" => "No credentials, or a bad, expired or revoked token, or an inactive user",
        "403" => "Your role may not do this",
        "404" => "Not found (for a list: a page past the end, \"Invalid page.\")",
        "413" => "The body is over 1 MiB",
        "415" => "The body is not application/json",
        "429" => "Too many failed logins: wait for Retry-After seconds",
        "503" => "The database or the event bus is unavailable: try again later",
        _ => return None,
    })
}

impl Modify for ErrorBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in error_schemas() {
            components.schemas.insert(name.to_owned(), schema);
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    // OpenAPI requires a description: one the route left out is the status's
                    // usual meaning here, or its reason phrase.
                    if response.description.is_empty()
                        && let Some(description) = error_description(status).or_else(|| {
                            StatusCode::from_bytes(status.as_bytes())
                                .ok()
                                .and_then(|code| code.canonical_reason())
                        })
                    {
                        response.description = description.to_owned();
                    }
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    if response.content.is_empty() {
                        let schema = if status == "400" { BAD_REQUEST } else { DETAIL };
                        response.content.insert(
                            "application/json".to_owned(),
                            Content::new(Some(Ref::from_schema_name(schema))),
                        );
                    }
                    let header = match status.as_str() {
                        "401" => Some((
                            "WWW-Authenticate",
                            "`Bearer realm=\"api\"` when a token is missing or not valid",
                        )),
                        "429" => Some(("Retry-After", "Seconds until a login is accepted again")),
                        _ => None,
                    };
                    if let Some((name, description)) = header {
                        response.headers.entry(name.to_owned()).or_insert_with(|| {
                            let mut header = Header::new(string());
                            header.description = Some(description.to_owned());
                            header
                        });
                    }
                }
            }
        }
    }
}

/// Says what the api accepts beyond what the generated schemas say, as DRF does:
/// an empty query value is no value; a text field takes a number (as its text); a boolean
/// takes `"true"`/`"false"`/`1`/`0`; an empty PATCH body changes nothing.
struct LenientInput;

/// Text fields that take a number too (DRF's `CharField`), by schema.
const NUMBERS_AS_TEXT: &[(&str, &str)] = &[
    ("LoginIn", "username"),
    ("LoginIn", "password"),
    ("RefreshIn", "refresh"),
    ("UserIn", "username"),
    ("AlertPatch", "note"),
    ("AlertPartialPatch", "note"),
    ("NoteIn", "text"),
    ("BulkIn", "note"),
];

fn or_also(schema: RefOr<Schema>, other: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    Schema::AnyOf(AnyOfBuilder::new().item(schema).item(other).build()).into()
}

fn number() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Number)
}

impl Modify for LenientInput {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let empty = || string().max_length(Some(0));
        for item in openapi.paths.paths.values_mut() {
            if let Some(patch) = item.patch.as_mut()
                && let Some(body) = patch.request_body.as_mut()
            {
                body.required = Some(utoipa::openapi::Required::False);
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.parameter_in != utoipa::openapi::path::ParameterIn::Query {
                        continue;
                    }
                    if let Some(schema) = parameter.schema.take() {
                        parameter.schema = Some(or_also(schema, empty()));
                    }
                }
            }
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let mut widen = |schema: &str, field: &str, other: RefOr<Schema>| {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
                && let Some(property) = object.properties.remove(field)
            {
                object
                    .properties
                    .insert(field.to_owned(), or_also(property, other));
            }
        };
        for (schema, field) in NUMBERS_AS_TEXT {
            widen(schema, field, number().into());
        }
        widen(
            "UserPatch",
            "is_active",
            Schema::AnyOf(
                AnyOfBuilder::new()
                    .item(string().enum_values(Some(["true", "True", "1", "false", "False", "0"])))
                    .item(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .enum_values(Some([0, 1])),
                    )
                    .build(),
            )
            .into(),
        );
    }
}

// `common`'s event limits (common/src/domain/event.rs), as the document states them.
const MAX_NAME_CHARS: usize = 128;
const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
const MAX_UID_BYTES: usize = 255;

/// One event as `POST /api/events/` takes it. Documentation only: the route validates the
/// JSON itself (as DRF does, reporting every bad field), with `common`'s rules.
pub struct EventIn;

impl utoipa::PartialSchema for EventIn {
    fn schema() -> RefOr<Schema> {
        let nullable = |kind: Type| {
            ObjectBuilder::new().schema_type(SchemaType::from_iter([kind, Type::Null]))
        };
        let name = || {
            string()
                .min_length(Some(1))
                .max_length(Some(MAX_NAME_CHARS))
                // Surrounding whitespace is trimmed, and what is left may not be blank.
                .pattern(Some(r"\S"))
        };
        ObjectBuilder::new()
            .description(Some(
                "An event as a sensor sends it; unknown fields are ignored. Strings hold no NUL \
                 characters.",
            ))
            .property(
                "sourceName",
                or_also(
                    name()
                        .description(Some("Which sensor saw it (1–128 characters)"))
                        .into(),
                    number(),
                ),
            )
            .required("sourceName")
            .property(
                "eventType",
                or_also(
                    name()
                        .description(Some("What kind of thing happened (1–128 characters)"))
                        .into(),
                    number(),
                ),
            )
            .required("eventType")
            .property("severity", Ref::from_schema_name("Severity"))
            .required("severity")
            .property(
                "description",
                or_also(
                    nullable(Type::String)
                        .max_length(Some(MAX_DESCRIPTION_BYTES))
                        .description(Some(
                            "Free text, at most 64 KiB of UTF-8; empty when not given",
                        ))
                        .into(),
                    number(),
                ),
            )
            .property(
                "uid",
                or_also(
                    nullable(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(MAX_UID_BYTES))
                        // It becomes a NATS header value, which cannot hold line breaks.
                        .pattern(Some(r"^[^\r\n]*$"))
                        .description(Some(
                            "Idempotency key (at most 255 bytes, no line breaks): an event \
                             posted again with it is stored once",
                        ))
                        .into(),
                    number(),
                ),
            )
            .property(
                "occurred_at",
                nullable(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .description(Some("When the sensor says it happened (RFC 3339)")),
            )
            .property(
                "attributes",
                nullable(Type::Object)
                    .description(Some("Extra structured data, at most 64 KiB as JSON")),
            )
            .into()
    }
}

impl utoipa::ToSchema for EventIn {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            "Severity".to_owned(),
            <common::domain::Severity as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// The body of `POST /api/events/`: one event, or a list of 1 to 1000.
pub struct EventsIn;

impl utoipa::PartialSchema for EventsIn {
    fn schema() -> RefOr<Schema> {
        let batch = ArrayBuilder::new()
            .items(Ref::from_schema_name("EventIn"))
            .min_items(Some(1))
            .max_items(Some(1000));
        Schema::OneOf(
            OneOfBuilder::new()
                .item(Ref::from_schema_name("EventIn"))
                .item(batch)
                .build(),
        )
        .into()
    }
}

impl utoipa::ToSchema for EventsIn {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            "EventIn".to_owned(),
            <EventIn as utoipa::PartialSchema>::schema(),
        ));
        <EventIn as utoipa::ToSchema>::schemas(schemas);
    }
}

/// What `POST /api/events/` answers: each accepted event with its `uid`, a list for a list.
pub struct EventsAccepted;

impl utoipa::PartialSchema for EventsAccepted {
    fn schema() -> RefOr<Schema> {
        Schema::OneOf(
            OneOfBuilder::new()
                .item(Ref::from_schema_name("NewEvent"))
                .item(ArrayBuilder::new().items(Ref::from_schema_name("NewEvent")))
                .build(),
        )
        .into()
    }
}

impl utoipa::ToSchema for EventsAccepted {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            "NewEvent".to_owned(),
            <common::domain::NewEvent as utoipa::PartialSchema>::schema(),
        ));
        <common::domain::NewEvent as utoipa::ToSchema>::schemas(schemas);
    }
}

/// What `POST /api/events/` answers a bad body with: field errors, one object of them per
/// event for a list (`{}` for a good one), or a `Detail` for a body that is not JSON.
pub struct EventErrors;

impl utoipa::PartialSchema for EventErrors {
    fn schema() -> RefOr<Schema> {
        Schema::AnyOf(
            AnyOfBuilder::new()
                .item(Ref::from_schema_name(FIELD_ERRORS))
                .item(Ref::from_schema_name(DETAIL))
                .item(ArrayBuilder::new().items(Ref::from_schema_name(FIELD_ERRORS)))
                .build(),
        )
        .into()
    }
}

impl utoipa::ToSchema for EventErrors {}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/api/schema/", tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1, JSON)")))]
pub async fn schema() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The pinned Redoc release in `api/assets/` (scripts/vendor-docs fetches exactly this one).
pub const REDOC_VERSION: &str = "2.5.4";
/// Where the page loads Redoc from: served by this api, never a CDN.
pub const DOCS_SCRIPT_PATH: &str = "/api/docs/redoc.standalone.js";
const REDOC_JS: &[u8] = include_bytes!("../assets/redoc.standalone.js");

/// The page: Redoc rendering `/api/schema/`, every asset from this api. Redoc's default
/// fonts (Montserrat, Roboto) fall back to local ones; nothing is fetched from elsewhere.
const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>threatmon API</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/api/schema/"></redoc>
<script src="/api/docs/redoc.standalone.js"></script>
</body>
</html>
"#;

/// What the page may load: only this api's own scripts, styles, images and the document
/// (Redoc runs its search in a worker it makes from a blob, and styles inline).
const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-eval'; worker-src blob:; \
                        style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
                        connect-src 'self'; base-uri 'none'; form-action 'none'; \
                        frame-ancestors 'none'";

/// Documentation of this API (Redoc, served offline).
#[utoipa::path(get, path = "/api/docs/", tag = "health",
    responses((status = 200, description = "An HTML page", content_type = "text/html")))]
pub async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Small and names the script: always revalidate, so an upgrade shows at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DOCS_HTML,
    )
        .into_response()
}

/// The docs page's script: the Redoc bundle embedded in this binary.
#[utoipa::path(get, path = "/api/docs/redoc.standalone.js", tag = "health",
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of a cached copy")),
    responses(
        (status = 200, description = "JavaScript", content_type = "text/javascript",
            headers(("ETag" = String, description = "Names the Redoc release"))),
        (status = 304, description = "The cached copy is current"),
    ))]
pub async fn docs_script(headers: HeaderMap) -> Response {
    let etag = format!("\"redoc-{REDOC_VERSION}\"");
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            REDOC_JS,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    // A day, then revalidate with the ETag: the URL does not change with the release.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
