use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    /// Manages users, and everything an analyst does.
    Admin,
    /// Reads events and alerts and changes alert statuses.
    Analyst,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 2] = [Role::Admin, Role::Analyst];

    /// The wire and stored name (`"ADMIN"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Analyst => "ANALYST",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `ADMIN`, `ANALYST`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a valid choice.")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exact wire names only, like [`Severity`](super::Severity).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A user of the API. Deliberately holds no password hash, so that serializing one can never
/// leak it; storage hands the hash out separately, and only for logging in.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// The login name: unique, matched exactly (case-sensitive).
    pub username: String,
    /// Contact address; may be empty.
    pub email: String,
    /// What the user may do.
    pub role: Role,
    /// False once deactivated: the user may no longer log in.
    pub is_active: bool,
    /// When the user was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When the user was last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_name_and_json() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::String(role.as_str().to_owned())
            );
        }
        assert_eq!(
            "admin".parse::<Role>().unwrap_err().to_string(),
            "\"admin\" is not a valid choice."
        );
    }
}
