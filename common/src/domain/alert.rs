use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Severity;

/// Where an alert is in its handling.
/// Orders in handling order (OPEN first).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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

/// An alert: an escalated event and the repeats folded into it, in the original's wire shape
/// plus a few fields.
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
    /// How many escalated events it holds (folded into it), its first included.
    #[serde(default = "one")]
    pub count: i64,
    /// When threatmon stored its first event (UTC).
    #[serde(default)]
    pub first_seen_at: DateTime<Utc>,
    /// When threatmon stored its last event (UTC).
    #[serde(default)]
    pub last_seen_at: DateTime<Utc>,
    /// The last event folded into it (its first while it holds one).
    #[serde(default)]
    pub last_event_id: i64,
    /// The fold key's values its events share (field → value); empty when nothing folds
    /// (`ALERT_FOLD_KEY=none`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fold_key: Map<String, Value>,
    /// Bumped by every change of its status, severity, owner or close reason (not by
    /// folded events of no higher severity): what `If-Match` and `"version"` compare.
    #[serde(default = "one")]
    pub version: i64,
    /// Why it was resolved; `null` while it is not resolved.
    #[serde(default)]
    pub close_reason: Option<CloseReason>,
    /// The user who owns it (a user id), or `null`.
    #[serde(default)]
    pub assignee: Option<i64>,
}

fn one() -> i64 {
    1
}

/// Why an alert was resolved.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// A real threat, handled.
    TruePositive,
    /// Not a threat: the detection was wrong.
    FalsePositive,
    /// Real but harmless (expected activity).
    Benign,
    /// Another alert covers it.
    Duplicate,
    /// None of the above.
    Other,
}

impl CloseReason {
    /// Every close reason.
    pub const ALL: [CloseReason; 5] = [
        CloseReason::TruePositive,
        CloseReason::FalsePositive,
        CloseReason::Benign,
        CloseReason::Duplicate,
        CloseReason::Other,
    ];

    /// The wire and stored name (`"true_positive"`).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TruePositive => "true_positive",
            CloseReason::FalsePositive => "false_positive",
            CloseReason::Benign => "benign",
            CloseReason::Duplicate => "duplicate",
            CloseReason::Other => "other",
        }
    }
}

impl FromStr for CloseReason {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CloseReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl AlertStatus {
    /// Whether an alert may go from this status to `to` (the same status is no change, and
    /// allowed): anything but RESOLVED → ACKNOWLEDGED.
    pub fn may_become(self, to: AlertStatus) -> bool {
        !(self == AlertStatus::Resolved && to == AlertStatus::Acknowledged)
    }
}
