//! Access levels as extractors: a handler that takes [`AdminUser`] cannot forget to check.
//!
//! JWTs cannot be revoked once issued, so every request loads the user: a deactivated or
//! deleted user, or a changed role, takes effect at once rather than when the token expires.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use common::domain::{Role, User};

use super::TokenType;
use crate::error::ApiError;
use crate::state::AppState;

/// Any active user with a valid access token.
#[derive(Debug, Clone)]
pub struct AnyUser(pub User);

/// An active admin with a valid access token.
#[derive(Debug, Clone)]
pub struct AdminUser(pub User);

/// The client's address (the TCP peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for AnyUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::NotAuthenticated);
        };
        let value = header.to_str().map_err(|_| ApiError::InvalidToken)?;
        let mut words = value.split_whitespace();
        // Another scheme (Basic, Token) is no credentials for us, as in SimpleJWT.
        if words.next() != Some("Bearer") {
            return Err(ApiError::NotAuthenticated);
        }
        let (Some(token), None) = (words.next(), words.next()) else {
            return Err(ApiError::InvalidToken);
        };
        let claims = state.tokens.verify(token, TokenType::Access)?;
        let user = state
            .storage
            .user_by_id(claims.user_id)
            .await?
            .ok_or(ApiError::UserNotFound)?;
        if !user.is_active {
            return Err(ApiError::UserInactive);
        }
        Ok(AnyUser(user))
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AnyUser(user) = AnyUser::from_request_parts(parts, state).await?;
        if user.role == Role::Admin {
            Ok(AdminUser(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Ok(ClientAddr(address))
    }
}
