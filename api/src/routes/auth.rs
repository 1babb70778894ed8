//! `/api/auth/`: login, refresh, logout.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{ClientAddr, TokenType};
use crate::error::{ApiError, ApiResult};
use crate::input::{Fields, JsonBody};
use crate::state::AppState;

/// Login request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginIn {
    /// Username (surrounding whitespace is trimmed).
    #[schema(min_length = 1, pattern = r"\S")]
    pub username: String,
    /// Password.
    #[schema(min_length = 1)]
    pub password: String,
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// Refresh token (a day by default).
    pub refresh: String,
    /// Access token (30 minutes by default).
    pub access: String,
}

/// A refresh token, to exchange or revoke.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshIn {
    /// Refresh token.
    #[schema(min_length = 1)]
    pub refresh: String,
}

/// A new access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessOut {
    /// Access token.
    pub access: String,
}

/// Exchanges a username and password for a token pair. Repeated failures from one address
/// are refused for a while (429 with `Retry-After`), even with the right password.
#[utoipa::path(post, path = "/api/auth/login/", tag = "auth", request_body = LoginIn,
    responses(
        (status = 200, body = TokenPair),
        (status = 400, description = "A field is missing"),
        (status = 401, description = "No active account found with the given credentials"),
        (status = 413), (status = 415),
        (status = 429, description = "Too many failed logins; see Retry-After"),
        (status = 503),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TokenPair>> {
    let mut fields = Fields::new(body)?;
    let username = fields.string("username", true);
    let password = fields.raw_string("password", true);
    fields.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::internal("validated fields missing"));
    };

    if let Some(wait) = state.limiter.check(&username, address, Instant::now()) {
        tracing::warn!(%address, username, "login throttled");
        return Err(ApiError::Throttled(wait));
    }
    let found = state.storage.user_with_password_hash(&username).await?;
    let hash = found.as_ref().map(|(_, hash)| hash.as_str());
    let matches = state.passwords.verify(&password, hash).await?;
    let user = match found {
        Some((user, _)) if matches && user.is_active => user,
        _ => {
            state.limiter.failed(&username, address, Instant::now());
            tracing::info!(%address, username, "login failed");
            return Err(ApiError::BadCredentials);
        }
    };
    state.limiter.succeeded(&username, address);
    let (refresh, _) = state.tokens.issue(&user, TokenType::Refresh)?;
    let (access, _) = state.tokens.issue(&user, TokenType::Access)?;
    tracing::info!(user_id = user.id, %address, "login");
    Ok(Json(TokenPair { refresh, access }))
}

fn refresh_field(body: Value) -> ApiResult<String> {
    let mut fields = Fields::new(body)?;
    let refresh = fields.raw_string("refresh", true);
    fields.finish()?;
    refresh.ok_or_else(|| ApiError::internal("validated field missing"))
}

/// Exchanges a refresh token for a new access token. An access token here is 401.
#[utoipa::path(post, path = "/api/auth/refresh/", tag = "auth", request_body = RefreshIn,
    responses(
        (status = 200, body = AccessOut),
        (status = 400, description = "The field is missing"),
        (status = 401, description = "Given token not valid for any token type"),
        (status = 413), (status = 415), (status = 503),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<AccessOut>> {
    let token = refresh_field(body)?;
    let claims = state.tokens.verify(&token, TokenType::Refresh)?;
    if state.storage.is_token_revoked(&claims.jti).await? {
        return Err(ApiError::InvalidToken);
    }
    let user = state
        .storage
        .user_by_id(claims.user_id)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    if !user.is_active {
        return Err(ApiError::UserInactive);
    }
    let (access, _) = state.tokens.issue(&user, TokenType::Access)?;
    Ok(Json(AccessOut { access }))
}

/// Revokes a refresh token: it can no longer be exchanged.
#[utoipa::path(post, path = "/api/auth/logout/", tag = "auth", request_body = RefreshIn,
    responses(
        (status = 200, description = "Revoked"),
        (status = 400, description = "The field is missing"),
        (status = 401, description = "Given token not valid for any token type"),
        (status = 413), (status = 415), (status = 503),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let token = refresh_field(body)?;
    let claims = state.tokens.verify(&token, TokenType::Refresh)?;
    let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
    state.storage.revoke_token(&claims.jti, expires_at).await?;
    tracing::info!(user_id = claims.user_id, "refresh token revoked");
    Ok(Json(json!({})))
}
