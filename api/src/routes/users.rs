//! `/api/users/`: user management, for admins.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::Utc;
use common::domain::{Role, User};
use common::storage::{NewUser, StorageError, UserChanges};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::auth::{AdminUser, check_password_policy};
use crate::error::{ApiError, ApiResult};
use crate::input::{Fields, JsonBody, Params};
use crate::pagination::{Page, PageRequest};
use crate::routes::{PathId, parse_id};
use crate::state::AppState;

/// Longest username, as in Django.
const MAX_USERNAME_CHARS: usize = 150;
/// Longest email address.
const MAX_EMAIL_CHARS: usize = 254;

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIn {
    /// Letters, digits and `@.+-_`, at most 150 (a number is taken as its text).
    #[schema(schema_with = username_schema)]
    pub username: String,
    /// Email address (optional).
    #[schema(required = false, nullable = false, format = Email, max_length = 254)]
    pub email: Option<String>,
    /// At least 8 characters, not the username (a number is taken as its text).
    #[schema(schema_with = password_schema)]
    pub password: String,
    /// `ADMIN` or `ANALYST`.
    pub role: Role,
}

/// A text field that, as DRF's `CharField` does, also takes a number as its text: the
/// schema says so, so that a client (or a fuzzer) sending `12345` expects it taken.
fn text_or_number(text: ObjectBuilder, description: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(text)
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .description(Some(description))
        .into()
}

fn username_schema() -> RefOr<Schema> {
    text_or_number(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_USERNAME_CHARS))
            .pattern(Some(r"^[\w.@+-]+$")),
        "Letters, digits and `@.+-_`, at most 150 (a number is taken as its text).",
    )
}

fn password_schema() -> RefOr<Schema> {
    text_or_number(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(8)),
        "At least 8 characters, not the username (a number is taken as its text).",
    )
}

/// Changes to a user; every field optional.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserPatch {
    /// Email address.
    #[schema(required = false, nullable = false, format = Email, max_length = 254)]
    pub email: Option<String>,
    /// New password: at least 8 characters, not the username.
    #[schema(required = false, nullable = false, min_length = 8)]
    pub password: Option<String>,
    /// `ADMIN` or `ANALYST`.
    #[schema(required = false, nullable = false)]
    pub role: Option<Role>,
    /// False deactivates: the user's tokens stop working at once.
    #[schema(required = false, nullable = false)]
    pub is_active: Option<bool>,
}

fn check_username(fields: &mut Fields, username: &str) -> bool {
    if username.chars().count() > MAX_USERNAME_CHARS {
        fields.error(
            "username",
            format!("Ensure this field has no more than {MAX_USERNAME_CHARS} characters."),
        );
        false
    } else if !username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'))
    {
        fields.error(
            "username",
            "Enter a valid username. This value may contain only letters, numbers, and \
             @/./+/-/_ characters.",
        );
        false
    } else {
        true
    }
}

/// A plausible address: one `@`, something before it, a dotted domain after, no spaces.
fn email_field(fields: &mut Fields) -> Option<String> {
    if !fields.has("email") {
        return None;
    }
    let email = fields.string("email", false)?;
    let valid =
        email.chars().count() <= MAX_EMAIL_CHARS && common::domain::plausible_address(&email);
    if valid {
        Some(email)
    } else {
        fields.error("email", "Enter a valid email address.");
        None
    }
}

/// An admin may not lock themselves out: another admin must do it.
const SELF_LOCKOUT: &str = "You cannot deactivate or demote your own account.";

fn duplicate_username() -> ApiError {
    ApiError::field("username", "A user with that username already exists.")
}

/// Lists users, by id.
#[utoipa::path(get, path = "/api/users/", tag = "users", security(("jwt" = [])),
    params(("page" = Option<i64>, Query, minimum = 1, maximum = 2147483647, description = "Page number (a page past the end is 404)"),
           ("page_size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page, at most 100")),
    responses((status = 200, body = Page<User>), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    mut params: Params,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<Page<User>>> {
    let page = PageRequest::from_params(&mut params);
    params.finish()?;
    let count = state.storage.count_users().await?;
    page.check_exists(count)?;
    let users = state.storage.list_users(page.size, page.offset()).await?;
    Ok(Json(page.page(count, users, &uri, &headers)))
}

/// Creates a user. The password is hashed (argon2id) and never returned.
#[utoipa::path(post, path = "/api/users/", tag = "users", security(("jwt" = [])),
    request_body = UserIn,
    responses((status = 201, body = User), (status = 400), (status = 401), (status = 403),
        (status = 413), (status = 415), (status = 503)))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<User>)> {
    let mut fields = Fields::new(body)?;
    let username = fields.string("username", true);
    let email = email_field(&mut fields);
    let password = fields.raw_string("password", true);
    let role = fields.choice::<Role>("role", true);
    let username = username.filter(|u| check_username(&mut fields, u));
    if let (Some(username), Some(password)) = (&username, &password)
        && let Err(err) = check_password_policy(password, username)
    {
        fields.error("password", err.to_string());
    }
    fields.finish()?;
    let (Some(username), Some(password), Some(role)) = (username, password, role) else {
        return Err(ApiError::internal("validated fields missing"));
    };
    let new_user = NewUser {
        username,
        email: email.unwrap_or_default(),
        password_hash: state.passwords.hash(&password).await?,
        role,
        is_active: true,
    };
    match state.storage.create_user(&new_user, Utc::now()).await {
        Ok(user) => {
            tracing::info!(admin = admin.id, user_id = user.id, role = %user.role, "user created");
            Ok((StatusCode::CREATED, Json(user)))
        }
        Err(StorageError::Duplicate(_)) => Err(duplicate_username()),
        Err(err) => Err(err.into()),
    }
}

/// One user.
#[utoipa::path(get, path = "/api/users/{id}/", tag = "users", security(("jwt" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = User), (status = 401), (status = 403), (status = 404),
        (status = 503)))]
pub async fn get(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    PathId(id): PathId,
) -> ApiResult<Json<User>> {
    let id = parse_id(&id)?;
    let user = state
        .storage
        .user_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(user))
}

/// Changes a user's email, password, role or active flag. Takes effect on the user's next
/// request, whatever tokens they hold.
#[utoipa::path(patch, path = "/api/users/{id}/", tag = "users", security(("jwt" = [])),
    params(("id" = i64, Path, description = "User id")), request_body = UserPatch,
    responses((status = 200, body = User), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 413), (status = 415), (status = 503)))]
pub async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<User>> {
    let id = parse_id(&id)?;
    let existing = state
        .storage
        .user_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut fields = Fields::new(body)?;
    let email = email_field(&mut fields);
    let password = fields.raw_string("password", false);
    let role = fields.choice::<Role>("role", false);
    let is_active = fields.boolean("is_active");
    if id == admin.id && (is_active == Some(false) || role == Some(Role::Analyst)) {
        fields.error("non_field_errors", SELF_LOCKOUT);
    }
    if let Some(password) = &password
        && let Err(err) = check_password_policy(password, &existing.username)
    {
        fields.error("password", err.to_string());
    }
    fields.finish()?;
    let password_hash = match password {
        Some(password) => Some(state.passwords.hash(&password).await?),
        None => None,
    };
    let changes = UserChanges {
        email,
        role,
        password_hash,
        is_active,
    };
    let user = state
        .storage
        .update_user(id, &changes, Utc::now())
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(admin = admin.id, user_id = id, "user updated");
    Ok(Json(user))
}

/// Deactivates a user (kept for the audit trail, and still readable with `is_active` false;
/// their tokens stop working at once).
#[utoipa::path(delete, path = "/api/users/{id}/", tag = "users", security(("jwt" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204, description = "Deactivated"),
        (status = 400, description = "An admin may not deactivate themselves"),
        (status = 401), (status = 403), (status = 404), (status = 503)))]
pub async fn deactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if id == admin.id {
        return Err(ApiError::field("non_field_errors", SELF_LOCKOUT));
    }
    let changes = UserChanges {
        is_active: Some(false),
        ..UserChanges::default()
    };
    state
        .storage
        .update_user(id, &changes, Utc::now())
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(admin = admin.id, user_id = id, "user deactivated");
    Ok(StatusCode::NO_CONTENT)
}
