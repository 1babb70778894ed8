use std::collections::BTreeMap;

use serde::Serialize;

/// Validation errors keyed by field, in DRF's shape: `{"severity": ["\"SEVERE\" is not a valid choice."]}`.
///
/// Every problem found is reported at once, not only the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one message for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The messages for one field.
    pub fn get(&self, field: &str) -> Option<&[String]> {
        self.0.get(field).map(Vec::as_slice)
    }

    /// The fields that have errors.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl std::fmt::Display for FieldErrors {
    /// The same JSON a DRF client would receive.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(&self.0).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

impl std::error::Error for FieldErrors {}
