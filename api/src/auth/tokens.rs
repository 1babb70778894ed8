//! JSON Web Tokens as SimpleJWT issued them: HS256 signed with `SECRET_KEY`, claims
//! `token_type`, `exp`, `iat`, `jti`, `user_id`, plus `sub`, `username` and `role`.
//!
//! The algorithm is pinned (a token claiming `none` or another algorithm is refused), and the
//! type is checked: a refresh token is never an access token, nor the reverse.

use std::time::Duration;

use chrono::Utc;
use common::domain::{Role, User};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, OrInternal};
use crate::settings::Secret;

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Short-lived, sent as `Authorization: Bearer`.
    Access,
    /// Long-lived, exchanged for access tokens at `/api/auth/refresh/`.
    Refresh,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Access or refresh.
    pub token_type: TokenType,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Unique id, for revocation.
    pub jti: String,
    /// The user's id (SimpleJWT's claim name).
    pub user_id: i64,
    /// The user's id as a string (the standard claim).
    pub sub: String,
    /// The user's name when issued.
    pub username: String,
    /// The user's role when issued (informative: every request reloads the user).
    pub role: Role,
}

/// Issues and verifies tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

impl Tokens {
    /// Keys from the secret; lifetimes for each kind.
    pub fn new(secret: &Secret, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Tokens {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// A new token of `kind` for `user`.
    pub fn issue(&self, user: &User, kind: TokenType) -> Result<(String, Claims), ApiError> {
        let ttl = match kind {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
        };
        let now = Utc::now().timestamp();
        let claims = Claims {
            token_type: kind,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            user_id: user.id,
            sub: user.id.to_string(),
            username: user.username.clone(),
            role: user.role,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .or_internal()?;
        Ok((token, claims))
    }

    /// The claims of a valid, unexpired token of `kind`; anything else is `InvalidToken`.
    pub fn verify(&self, token: &str, kind: TokenType) -> Result<Claims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::InvalidToken)?;
        if data.claims.token_type != kind || data.claims.sub != data.claims.user_id.to_string() {
            return Err(ApiError::InvalidToken);
        }
        Ok(data.claims)
    }
}
