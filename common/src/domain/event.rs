use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{FieldErrors, Severity};

/// Longest `sourceName` and `eventType`, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest `description`, in bytes of UTF-8 (64 KiB).
pub const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
/// Longest idempotency key (`uid` or `Nats-Msg-Id`), in bytes.
pub const MAX_UID_BYTES: usize = 255;
/// Largest `attributes` object, in bytes of compact JSON (64 KiB).
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const NOT_BLANK: &str = "This field may not be blank.";
const NOT_STRING: &str = "Not a valid string.";
const NO_NULL_CHARS: &str = "Null characters are not allowed.";
const NO_CONTROL_CHARS: &str = "Control characters are not allowed.";
const NO_REPLACEMENT_CHARS: &str =
    "Replacement characters (U+FFFD) are not allowed: the value was not valid text.";
const BAD_DATETIME: &str = "Datetime has wrong format. Use one of these formats instead: \
                            YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].";

/// An event as a sensor sends it, before validation: any JSON object.
///
/// Unknown top-level fields are ignored, as the original did.
pub struct EventIn;

/// Why an incoming message is not an event. Its `Display` is the reason a dead letter carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRejection {
    /// The bytes are not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a valid event; every bad field is named.
    #[error("invalid event: {0}")]
    Invalid(FieldErrors),
}

/// A validated event, not yet stored. Only [`EventIn::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NewEvent {
    /// The sensor's idempotency key from the body, if it gave one.
    pub uid: Option<String>,
    /// Which sensor saw it (1–128 characters).
    #[serde(rename = "sourceName")]
    pub source_name: String,
    /// What kind of thing happened (1–128 characters).
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// How serious it is.
    pub severity: Severity,
    /// Free text, at most 64 KiB; empty when not given. Any character, NUL included.
    pub description: String,
    /// When the sensor says it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Extra structured data from the sensor.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
}

/// A stored event, in the original's wire shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Database id.
    pub id: i64,
    /// The idempotency key it was stored under.
    pub uid: String,
    /// Which sensor saw it.
    #[serde(rename = "sourceName")]
    pub source_name: String,
    /// What kind of thing happened.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// How serious it is.
    pub severity: Severity,
    /// Free text.
    pub description: String,
    /// When the sensor says it happened, if it said.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Extra structured data from the sensor.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// When threatmon stored it (UTC).
    pub created_at: DateTime<Utc>,
}

impl EventIn {
    /// Parses a message body into a [`NewEvent`], reporting every bad field at once.
    pub fn parse(body: &[u8]) -> Result<NewEvent, EventRejection> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventRejection::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Validates an already-decoded JSON value (the API decodes bodies itself).
    pub fn from_value(value: Value) -> Result<NewEvent, EventRejection> {
        let mut errors = FieldErrors::new();
        let Value::Object(mut fields) = value else {
            errors.add(
                "non_field_errors",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    json_type_name(&value)
                ),
            );
            return Err(EventRejection::Invalid(errors));
        };

        let source_name = name_field(&mut fields, "sourceName", &mut errors);
        let event_type = name_field(&mut fields, "eventType", &mut errors);
        let severity = severity_field(&mut fields, &mut errors);
        let description = description_field(&mut fields, &mut errors);
        let uid = uid_field(&mut fields, &mut errors);
        let occurred_at = occurred_at_field(&mut fields, &mut errors);
        let attributes = attributes_field(&mut fields, &mut errors);

        match (source_name, event_type, severity, description) {
            (Some(source_name), Some(event_type), Some(severity), Some(description))
                if errors.is_empty() =>
            {
                Ok(NewEvent {
                    uid,
                    source_name,
                    event_type,
                    severity,
                    description,
                    occurred_at,
                    attributes,
                })
            }
            _ => Err(EventRejection::Invalid(errors)),
        }
    }
}

/// The name DRF gives a JSON value's type in its errors (`"Expected a list of items but got
/// type \"str\"."`): Python's.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A string field that may be absent or null; `None` when it is, or when it is not a string
/// (then the error is recorded). DRF trims surrounding whitespace.
fn optional_string(
    fields: &mut Map<String, Value>,
    name: &str,
    errors: &mut FieldErrors,
) -> Option<Option<String>> {
    match fields.remove(name) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.trim().to_owned())),
        // DRF's CharField accepts numbers and renders them as text; so do we.
        Some(Value::Number(n)) => Some(Some(n.to_string())),
        Some(_) => {
            errors.add(name, NOT_STRING);
            None
        }
    }
}

/// Why `text` cannot be an identifier (a name, a type, an idempotency key), if it cannot:
/// identifiers become subjects, headers, log fields and filter values, where a control
/// character (C0, DEL, C1) breaks a line or a protocol. U+FFFD is refused too: it stands for
/// what could not be carried as text (our NATS client shows a CR or LF that a raw publish put
/// inside a header that way), and an identifier must be exact. Free text may hold anything.
pub fn identifier_problem(text: &str) -> Option<&'static str> {
    if text.contains('\0') {
        Some(NO_NULL_CHARS)
    } else if text.chars().any(char::is_control) {
        Some(NO_CONTROL_CHARS)
    } else if text.contains('\u{fffd}') {
        Some(NO_REPLACEMENT_CHARS)
    } else {
        None
    }
}

fn name_field(
    fields: &mut Map<String, Value>,
    name: &str,
    errors: &mut FieldErrors,
) -> Option<String> {
    let present = fields.contains_key(name);
    let is_null = matches!(fields.get(name), Some(Value::Null));
    let value = optional_string(fields, name, errors)?;
    match value {
        None if !present => errors.add(name, REQUIRED),
        None if is_null => errors.add(name, NOT_NULL),
        None => {}
        Some(s) if s.is_empty() => errors.add(name, NOT_BLANK),
        Some(s) if s.chars().count() > MAX_NAME_CHARS => errors.add(
            name,
            format!("Ensure this field has no more than {MAX_NAME_CHARS} characters."),
        ),
        Some(s) => match identifier_problem(&s) {
            Some(problem) => errors.add(name, problem),
            None => return Some(s),
        },
    }
    None
}

fn severity_field(fields: &mut Map<String, Value>, errors: &mut FieldErrors) -> Option<Severity> {
    const NAME: &str = "severity";
    match fields.remove(NAME) {
        None => errors.add(NAME, REQUIRED),
        Some(Value::Null) => errors.add(NAME, NOT_NULL),
        Some(Value::String(s)) => match s.parse::<Severity>() {
            Ok(sev) => return Some(sev),
            Err(e) => errors.add(NAME, e.to_string()),
        },
        Some(other) => errors.add(NAME, format!("\"{other}\" is not a valid choice.")),
    }
    None
}

fn description_field(fields: &mut Map<String, Value>, errors: &mut FieldErrors) -> Option<String> {
    const NAME: &str = "description";
    let description = optional_string(fields, NAME, errors)?.unwrap_or_default();
    if description.len() > MAX_DESCRIPTION_BYTES {
        errors.add(
            NAME,
            format!(
                "Ensure this field has no more than {MAX_DESCRIPTION_BYTES} bytes (it has {}).",
                description.len()
            ),
        );
        return None;
    }
    Some(description)
}

fn uid_field(fields: &mut Map<String, Value>, errors: &mut FieldErrors) -> Option<String> {
    const NAME: &str = "uid";
    let uid = optional_string(fields, NAME, errors)??;
    if let Err(message) = check_idempotency_key(&uid) {
        errors.add(NAME, message);
        return None;
    }
    Some(uid)
}

/// Checks an idempotency key from a body or a `Nats-Msg-Id` header.
pub fn check_idempotency_key(uid: &str) -> Result<(), String> {
    if uid.is_empty() {
        Err(NOT_BLANK.to_owned())
    } else if uid.len() > MAX_UID_BYTES {
        Err(format!(
            "Ensure this field has no more than {MAX_UID_BYTES} characters."
        ))
    } else if let Some(problem) = identifier_problem(uid) {
        Err(problem.to_owned())
    } else {
        Ok(())
    }
}

fn occurred_at_field(
    fields: &mut Map<String, Value>,
    errors: &mut FieldErrors,
) -> Option<DateTime<Utc>> {
    const NAME: &str = "occurred_at";
    match fields.remove(NAME) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s.trim()) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(_) => {
                errors.add(NAME, BAD_DATETIME);
                None
            }
        },
        Some(_) => {
            errors.add(NAME, BAD_DATETIME);
            None
        }
    }
}

fn attributes_field(
    fields: &mut Map<String, Value>,
    errors: &mut FieldErrors,
) -> Option<Map<String, Value>> {
    const NAME: &str = "attributes";
    match fields.remove(NAME) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let encoded = Value::Object(map);
            let text = encoded.to_string();
            if text.len() > MAX_ATTRIBUTES_BYTES {
                errors.add(
                    NAME,
                    format!("Ensure this object has no more than {MAX_ATTRIBUTES_BYTES} bytes."),
                );
                None
            } else if let Value::Object(map) = encoded {
                Some(map)
            } else {
                None
            }
        }
        Some(other) => {
            errors.add(
                NAME,
                format!(
                    "Expected a dictionary of items but got type \"{}\".",
                    json_type_name(&other)
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invalid(value: Value) -> FieldErrors {
        match EventIn::from_value(value) {
            Err(EventRejection::Invalid(errors)) => errors,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_full_event_parses_and_ignores_unknown_fields() {
        let event = EventIn::parse(
            br#"{"sourceName":" fw-edge-01 ","eventType":"port_scan","severity":"HIGH",
                 "description":"1,024 ports","uid":"abc","occurred_at":"2026-11-28T10:00:00+01:00",
                 "attributes":{"ip":"203.0.113.9"},"extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(event.source_name, "fw-edge-01");
        assert_eq!(event.severity, Severity::High);
        assert_eq!(event.uid.as_deref(), Some("abc"));
        assert_eq!(
            event.occurred_at.unwrap().to_rfc3339(),
            "2026-11-28T09:00:00+00:00"
        );
        assert_eq!(event.attributes.unwrap()["ip"], "203.0.113.9");
    }

    #[test]
    fn every_bad_field_is_reported_at_once_in_drf_words() {
        let errors = invalid(json!({"eventType": "", "severity": "SEVERE", "attributes": [1]}));
        assert_eq!(
            errors.get("sourceName").unwrap(),
            ["This field is required."]
        );
        assert_eq!(
            errors.get("eventType").unwrap(),
            ["This field may not be blank."]
        );
        assert_eq!(
            errors.get("severity").unwrap(),
            ["\"SEVERE\" is not a valid choice."]
        );
        assert_eq!(
            errors.get("attributes").unwrap(),
            ["Expected a dictionary of items but got type \"list\"."]
        );
        assert_eq!(
            errors.to_string(),
            r#"{"attributes":["Expected a dictionary of items but got type \"list\"."],"eventType":["This field may not be blank."],"severity":["\"SEVERE\" is not a valid choice."],"sourceName":["This field is required."]}"#
        );
    }

    #[test]
    fn limits_are_enforced() {
        let long_name = "x".repeat(MAX_NAME_CHARS + 1);
        let errors = invalid(json!({
            "sourceName": long_name, "eventType": "t\u{0}", "severity": "LOW",
            "description": "d".repeat(MAX_DESCRIPTION_BYTES + 1),
            "occurred_at": "yesterday", "uid": "u".repeat(MAX_UID_BYTES + 1),
        }));
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            [
                "description",
                "eventType",
                "occurred_at",
                "sourceName",
                "uid"
            ]
        );
        assert_eq!(
            errors.get("eventType").unwrap(),
            ["Null characters are not allowed."]
        );

        let ok = EventIn::from_value(json!({
            "sourceName": "x".repeat(MAX_NAME_CHARS), "eventType": "t", "severity": "LOW",
            "description": "d".repeat(MAX_DESCRIPTION_BYTES),
        }));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn non_objects_and_non_json_are_rejected_with_a_reason() {
        assert!(matches!(
            EventIn::parse(b"not json"),
            Err(EventRejection::NotJson(_))
        ));
        let errors = invalid(json!([1, 2]));
        assert_eq!(
            errors.get("non_field_errors").unwrap(),
            ["Invalid data. Expected a dictionary, but got list."]
        );
        let errors = invalid(json!({"sourceName": null, "eventType": 5, "severity": 3}));
        assert_eq!(
            errors.get("sourceName").unwrap(),
            ["This field may not be null."]
        );
        assert!(
            errors.get("eventType").is_none(),
            "numbers are text, as in DRF"
        );
        assert_eq!(
            errors.get("severity").unwrap(),
            ["\"3\" is not a valid choice."]
        );
    }
}
