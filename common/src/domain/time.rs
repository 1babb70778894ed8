//! Timestamps are stored as microseconds since the Unix epoch (UTC) in both databases: one
//! column type, exact ordering and range filters, and the same SQL on SQLite and Postgres.

use chrono::{DateTime, Utc};

/// A timestamp as stored.
pub fn to_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored timestamp back as a UTC time. Values out of chrono's range (which we never
/// write) clamp to the epoch rather than failing a read.
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
