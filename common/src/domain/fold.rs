//! Folding repeats: which events share an alert (`ALERT_FOLD_KEY`).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Event;

/// One field of a fold key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FoldField {
    SourceName,
    EventType,
    Description,
    /// `attributes.<path>`: a dotted path into the event's attributes object.
    Attribute(Vec<String>),
}

impl FoldField {
    fn name(&self) -> String {
        match self {
            FoldField::SourceName => "sourceName".to_owned(),
            FoldField::EventType => "eventType".to_owned(),
            FoldField::Description => "description".to_owned(),
            FoldField::Attribute(path) => format!("attributes.{}", path.join(".")),
        }
    }

    /// The event's value of this field; `null` when the event has none.
    fn value_of(&self, event: &Event) -> Value {
        match self {
            FoldField::SourceName => Value::String(event.source_name.clone()),
            FoldField::EventType => Value::String(event.event_type.clone()),
            FoldField::Description => Value::String(event.description.clone()),
            FoldField::Attribute(path) => {
                let mut at = event.attributes.as_ref().map(|a| a as &Map<String, Value>);
                let mut found: Option<&Value> = None;
                for (i, step) in path.iter().enumerate() {
                    let Some(object) = at else {
                        found = None;
                        break;
                    };
                    found = object.get(step);
                    at = if i + 1 < path.len() {
                        found.and_then(Value::as_object)
                    } else {
                        None
                    };
                }
                found.cloned().unwrap_or(Value::Null)
            }
        }
    }
}

/// The fields whose equal values fold events into one alert; empty (`none`) for one alert per
/// event, the original's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldKey(Vec<FoldField>);

/// An event's place under a [`FoldKey`]: its values of the key's fields, and their hash.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldValue {
    /// Field name → the event's value (`null` when it has none), shown on the alert.
    pub fields: Map<String, Value>,
    /// SHA-256 (hex) of the field names and values, in the key's order: the alert's
    /// identity while it is open for folding.
    pub hash: String,
}

impl FoldKey {
    /// One alert per event.
    pub fn none() -> Self {
        FoldKey(Vec::new())
    }

    /// Whether this key folds nothing (`none`).
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    /// The event's values of this key, or `None` when the key is `none`.
    pub fn value_of(&self, event: &Event) -> Option<FoldValue> {
        if self.is_none() {
            return None;
        }
        let pairs: Vec<(String, Value)> = self
            .0
            .iter()
            .map(|field| (field.name(), field.value_of(event)))
            .collect();
        // serde_json's maps are sorted, so equal values always encode the same.
        let canonical = serde_json::to_vec(&pairs).unwrap_or_default();
        let hash = format!("{:x}", Sha256::digest(&canonical));
        Some(FoldValue {
            fields: pairs.into_iter().collect(),
            hash,
        })
    }
}

impl Default for FoldKey {
    /// `sourceName,eventType`: the same sensor reporting the same kind of thing.
    fn default() -> Self {
        FoldKey(vec![FoldField::SourceName, FoldField::EventType])
    }
}

impl fmt::Display for FoldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.0.iter().map(FoldField::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Why an `ALERT_FOLD_KEY` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{0}\" is not a fold key field: use sourceName, eventType, description or \
     attributes.<path>, separated by commas, or none"
)]
pub struct BadFoldKey(pub String);

impl FromStr for FoldKey {
    type Err = BadFoldKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(FoldKey::none());
        }
        let mut fields = Vec::new();
        for entry in s.split(',').map(str::trim) {
            let field = match entry {
                "sourceName" => FoldField::SourceName,
                "eventType" => FoldField::EventType,
                "description" => FoldField::Description,
                _ => {
                    let path = entry
                        .strip_prefix("attributes.")
                        .ok_or_else(|| BadFoldKey(entry.to_owned()))?;
                    let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
                    if steps.iter().any(String::is_empty) {
                        return Err(BadFoldKey(entry.to_owned()));
                    }
                    FoldField::Attribute(steps)
                }
            };
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
        Ok(FoldKey(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Severity;
    use proptest::prelude::*;
    use serde_json::json;

    fn event(source: &str, attributes: Value) -> Event {
        Event {
            id: 1,
            uid: "u".into(),
            source_name: source.into(),
            event_type: "login_failed".into(),
            severity: Severity::High,
            description: String::new(),
            occurred_at: None,
            attributes: attributes.as_object().cloned(),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn parses_the_documented_forms_and_refuses_others() {
        assert_eq!("none".parse::<FoldKey>(), Ok(FoldKey::none()));
        assert_eq!(
            "sourceName,eventType".parse::<FoldKey>(),
            Ok(FoldKey::default())
        );
        let key: FoldKey = "sourceName, eventType, attributes.net.src_ip"
            .parse()
            .unwrap();
        assert_eq!(
            key.to_string(),
            "sourceName,eventType,attributes.net.src_ip"
        );
        for bad in [
            "",
            "severity",
            "attributes.",
            "attributes.a..b",
            "sourceName,bogus",
        ] {
            assert!(bad.parse::<FoldKey>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_attribute_splits_the_key_and_a_missing_one_is_null() {
        let key: FoldKey = "sourceName,attributes.src_ip".parse().unwrap();
        let a = key
            .value_of(&event("s", json!({"src_ip": "10.0.0.1"})))
            .unwrap();
        let b = key
            .value_of(&event("s", json!({"src_ip": "10.0.0.2"})))
            .unwrap();
        let none = key.value_of(&event("s", json!({"other": 1}))).unwrap();
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.fields["attributes.src_ip"], json!("10.0.0.1"));
        assert_eq!(none.fields["attributes.src_ip"], Value::Null);
        assert_eq!(FoldKey::none().value_of(&event("s", Value::Null)), None);
    }

    proptest! {
        /// Equal key values give equal hashes whatever else differs; different sensors differ.
        #[test]
        fn the_hash_depends_on_the_key_values_only(
            source in "[a-z]{1,8}", other in "[a-z]{1,8}", ip in "[0-9.]{1,15}", noise in any::<u32>()
        ) {
            let key: FoldKey = "sourceName,attributes.ip".parse().unwrap();
            let a = key.value_of(&event(&source, json!({"ip": ip, "noise": noise}))).unwrap();
            let b = key.value_of(&event(&source, json!({"noise": noise ^ 1, "ip": ip}))).unwrap();
            prop_assert_eq!(&a.hash, &b.hash);
            let c = key.value_of(&event(&other, json!({"ip": ip}))).unwrap();
            prop_assert_eq!(a.hash == c.hash, source == other);
        }
    }
}
