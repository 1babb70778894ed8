use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Severity;

/// Where an alert is in its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertStatus {
    /// New, nobody has looked yet.
    Open,
    /// Somebody is on it.
    Acknowledged,
    /// Dealt with.
    Resolved,
}

impl AlertStatus {
    /// Every status, in handling order.
    pub const ALL: [AlertStatus; 3] = [
        AlertStatus::Open,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
    ];

    /// The wire and stored name (`"OPEN"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "OPEN",
            AlertStatus::Acknowledged => "ACKNOWLEDGED",
            AlertStatus::Resolved => "RESOLVED",
        }
    }

    /// The lower-case token used in subjects (`alerts.updated.acknowledged`).
    pub fn subject_token(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of `OPEN`, `ACKNOWLEDGED`, `RESOLVED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a valid choice.")]
pub struct UnknownStatus(pub String);

impl FromStr for AlertStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlertStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// An alert: one per escalated event, in the original's wire shape plus a few fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// Database id.
    pub id: i64,
    /// The event it was raised for.
    pub event_id: i64,
    /// The event's type, copied so that lists filter without a join.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// The event's severity, copied likewise.
    pub severity: Severity,
    /// The event's sensor, copied likewise.
    #[serde(rename = "sourceName")]
    pub source_name: String,
    /// Where it is in its handling.
    pub status: AlertStatus,
    /// When it was raised (UTC).
    pub created_at: DateTime<Utc>,
    /// When its status last changed (UTC).
    pub updated_at: DateTime<Utc>,
}
