//! Reading client input the way DRF does: a JSON body that is checked field by field with
//! every problem reported at once, and query parameters whose bad values name the parameter.

use std::fmt::Display;
use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use common::FieldErrors;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const NOT_BLANK: &str = "This field may not be blank.";

/// A JSON request body. Another content type is 415, malformed JSON 400, a body over
/// [`MAX_BODY_BYTES`] 413; an empty body is an empty object, as in DRF.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::Malformed(rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Map::new())));
        }
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::Malformed(e.to_string()))
    }
}

/// The fields of a JSON object body, read one by one; errors accumulate until
/// [`Fields::finish`].
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    errors: FieldErrors,
}

impl Fields {
    /// The body must be an object.
    pub fn new(value: Value) -> Result<Fields, ApiError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                errors: FieldErrors::new(),
            }),
            other => Err(ApiError::field(
                "non_field_errors",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    common::domain::json_type_name(&other)
                ),
            )),
        }
    }

    /// True when the body has this field (even null).
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Records an error for a field.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors.add(name, message);
    }

    fn take_string(&mut self, name: &str, required: bool, trim: bool) -> Option<String> {
        match self.map.remove(name) {
            None => {
                if required {
                    self.errors.add(name, REQUIRED);
                }
                None
            }
            Some(Value::Null) => {
                self.errors.add(name, NOT_NULL);
                None
            }
            Some(Value::String(s)) if s.contains('\0') => {
                self.errors.add(name, "Null characters are not allowed.");
                None
            }
            Some(Value::String(s)) => {
                let s = if trim { s.trim().to_owned() } else { s };
                if s.is_empty() {
                    self.errors.add(name, NOT_BLANK);
                    None
                } else {
                    Some(s)
                }
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                self.errors.add(name, "Not a valid string.");
                None
            }
        }
    }

    /// A non-blank string, trimmed.
    pub fn string(&mut self, name: &str, required: bool) -> Option<String> {
        self.take_string(name, required, true)
    }

    /// A non-blank string as given (passwords: spaces count).
    pub fn raw_string(&mut self, name: &str, required: bool) -> Option<String> {
        self.take_string(name, required, false)
    }

    /// One of a fixed set of values.
    pub fn choice<T>(&mut self, name: &str, required: bool) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.map.remove(name) {
            None => {
                if required {
                    self.errors.add(name, REQUIRED);
                }
                None
            }
            Some(Value::Null) => {
                self.errors.add(name, NOT_NULL);
                None
            }
            Some(Value::String(s)) => match s.parse::<T>() {
                Ok(value) => Some(value),
                Err(err) => {
                    self.errors.add(name, err.to_string());
                    None
                }
            },
            Some(other) => {
                self.errors
                    .add(name, format!("\"{other}\" is not a valid choice."));
                None
            }
        }
    }

    /// An integer of at least `min` (a JSON number, as the document says); `null` is
    /// refused.
    pub fn integer(&mut self, name: &str, min: i64) -> Option<i64> {
        match self.nullable_integer(name, min) {
            Some(None) => {
                self.errors.add(name, NOT_NULL);
                None
            }
            Some(Some(n)) => Some(n),
            None => None,
        }
    }

    /// As [`Fields::integer`], `null` allowed: `Some(None)` is a given `null`, `None` an
    /// absent or invalid field.
    pub fn nullable_integer(&mut self, name: &str, min: i64) -> Option<Option<i64>> {
        let value = match self.map.remove(name)? {
            Value::Null => return Some(None),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        match value {
            Some(n) if n >= min => Some(Some(n)),
            Some(_) => {
                self.errors.add(
                    name,
                    format!("Ensure this value is greater than or equal to {min}."),
                );
                None
            }
            None => {
                self.errors.add(name, "A valid integer is required.");
                None
            }
        }
    }

    /// A JSON `true` or `false`, nothing else (for new fields, documented as booleans).
    pub fn strict_boolean(&mut self, name: &str) -> Option<bool> {
        match self.map.remove(name)? {
            Value::Bool(b) => Some(b),
            _ => {
                self.errors.add(name, "Must be a valid boolean.");
                None
            }
        }
    }

    /// A boolean (DRF also accepts "true"/"false" strings and 1/0).
    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.map.remove(name) {
            None => None,
            Some(Value::Bool(b)) => Some(b),
            Some(Value::String(s)) if matches!(s.as_str(), "true" | "True" | "1") => Some(true),
            Some(Value::String(s)) if matches!(s.as_str(), "false" | "False" | "0") => Some(false),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Some(true),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Some(false),
            Some(_) => {
                self.errors.add(name, "Must be a valid boolean.");
                None
            }
        }
    }

    /// True when a field already had an error.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// A field's raw JSON, for shapes the readers above do not cover.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// Records the errors of a nested object under `name`, each as `name.field`.
    pub fn nested_errors(&mut self, name: &str, errors: &FieldErrors) {
        for field in errors.fields() {
            for message in errors.get(field).unwrap_or_default() {
                self.errors.add(&format!("{name}.{field}"), message.clone());
            }
        }
    }

    /// Ok when no field had an error.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Fields(self.errors))
        }
    }
}

/// Query parameters. A bad value is a 400 naming the parameter.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    errors: FieldErrors,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Params {
            pairs,
            errors: FieldErrors::new(),
        })
    }
}

impl Params {
    /// Parameters given as `(name, value)` pairs (the filter of a bulk action).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params {
            pairs,
            errors: FieldErrors::new(),
        }
    }

    /// The errors so far, taken.
    pub fn take_errors(&mut self) -> FieldErrors {
        std::mem::take(&mut self.errors)
    }

    /// The last value given for `name`, if any and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// Exact-match text filter.
    pub fn text(&mut self, name: &str) -> Option<String> {
        let value = self.get(name)?.to_owned();
        if value.contains('\0') {
            self.errors.add(name, "Null characters are not allowed.");
            return None;
        }
        Some(value)
    }

    /// One of a fixed set of values.
    pub fn choice<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let value = self.get(name)?;
        match value.parse::<T>() {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                let message = format!("Select a valid choice. {err}");
                self.errors.add(name, message);
                None
            }
        }
    }

    /// Most values one filter takes (each becomes a bound parameter).
    pub const MAX_VALUES: usize = 100;

    /// Refuses more than [`Params::MAX_VALUES`] values for `name`.
    fn limit_values<T>(&mut self, name: &str, mut values: Vec<T>) -> Vec<T> {
        if values.len() > Self::MAX_VALUES {
            self.errors.add(
                name,
                format!(
                    "Ensure this filter has no more than {} values.",
                    Self::MAX_VALUES
                ),
            );
            values.clear();
        }
        values
    }

    /// Any of a fixed set of values, comma-separated (`OPEN,ACKNOWLEDGED`); empty when not
    /// given.
    pub fn choices<T>(&mut self, name: &str) -> Vec<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(value) = self.get(name).map(str::to_owned) else {
            return Vec::new();
        };
        let mut chosen = Vec::new();
        // An empty item (`a,,b`, or the parameter given empty) is no value; one of blanks
        // (`%0D`) is not a choice.
        for item in value.split(',').filter(|item| !item.is_empty()) {
            match item.trim().parse::<T>() {
                Ok(parsed) => chosen.push(parsed),
                Err(err) => self
                    .errors
                    .add(name, format!("Select a valid choice. {err}")),
            }
        }
        self.limit_values(name, chosen)
    }

    /// Exact-match text filters, comma-separated; empty when not given.
    pub fn texts(&mut self, name: &str) -> Vec<String> {
        let Some(value) = self.text(name) else {
            return Vec::new();
        };
        // Names are matched exactly: only the commas split them.
        let mut values: Vec<String> = value
            .split(',')
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        values.sort_unstable();
        values.dedup();
        self.limit_values(name, values)
    }

    /// A date-time: RFC 3339, or a naive date-time or date taken as UTC.
    pub fn datetime(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let value = self.get(name)?.trim().to_owned();
        let parsed = DateTime::parse_from_rfc3339(&value)
            .map(|at| at.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(&value, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(&value, "%Y-%m-%d %H:%M:%S%.f"))
                    .ok()
                    .map(|naive| naive.and_utc())
            })
            .or_else(|| {
                NaiveDate::parse_from_str(&value, "%Y-%m-%d")
                    .ok()
                    .and_then(|date| date.and_hms_opt(0, 0, 0))
                    .map(|naive| naive.and_utc())
            });
        if parsed.is_none() {
            self.errors.add(name, "Enter a valid date/time.");
        }
        parsed
    }

    /// A positive integer no larger than `max`.
    pub fn positive_int(&mut self, name: &str, max: i64) -> Option<i64> {
        let value = self.get(name)?;
        match value.trim().parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            Ok(_) => {
                self.errors
                    .add(name, format!("Ensure this value is between 1 and {max}."));
                None
            }
            Err(_) => {
                self.errors.add(name, "A valid integer is required.");
                None
            }
        }
    }

    /// Records an error for a parameter.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors.add(name, message);
    }

    /// Ok when every parameter read was valid.
    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Fields(std::mem::take(&mut self.errors)))
        }
    }
}
