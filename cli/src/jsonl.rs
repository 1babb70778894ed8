//! Reading events from JSON lines: one JSON object per line, blank lines skipped.

use std::io::BufRead;

use bytes::Bytes;
use common::domain::EventIn;
use common::subjects::event_subject;
use serde_json::Value;

use crate::error::Error;

/// An event read from a line, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct LineEvent {
    /// Its line number, from 1.
    pub line: usize,
    /// Where it goes: `events.<sourceName>`.
    pub subject: String,
    /// Its `uid`, when it has one: the `Nats-Msg-Id` to publish it with.
    pub uid: Option<String>,
    /// The line as written, without surrounding white space.
    pub payload: Bytes,
}

/// Reads every event of `reader`, naming `source` (a path, or `stdin`) and the line number in
/// the error about the first line that is not a JSON object, or with `validate`, not a valid
/// event. Nothing is returned unless every line is good.
pub fn read_events(
    reader: impl BufRead,
    source: &str,
    validate: bool,
) -> Result<Vec<LineEvent>, Error> {
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let at = |what: String| Error::new(format!("{source} line {number}: {what}"));
        let line = line.map_err(|e| at(e.to_string()))?;
        let text = line.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let message = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            at(format!("not JSON (column {}): {message}", e.column()))
        })?;
        let Value::Object(fields) = &value else {
            return Err(at(format!(
                "expected a JSON object, got {}",
                type_name(&value)
            )));
        };
        let (source_name, uid) = if validate {
            let event = EventIn::from_value(value.clone()).map_err(|e| at(e.to_string()))?;
            (event.source_name, event.uid)
        } else {
            let text_field = |name: &str| {
                fields
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            (
                text_field("sourceName").unwrap_or_default(),
                text_field("uid"),
            )
        };
        events.push(LineEvent {
            line: number,
            subject: event_subject(&source_name),
            uid,
            payload: Bytes::copy_from_slice(text.as_bytes()),
        });
    }
    Ok(events)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        r#"{"sourceName":"fw-edge-01","eventType":"port_scan","severity":"HIGH","uid":"k1"}"#;

    #[test]
    fn good_lines_become_events_with_subjects_and_keys() {
        let text = format!(
            "{GOOD}\n\n  {}  \n",
            r#"{"sourceName":"ids.core 1","eventType":"x","severity":"LOW"}"#
        );
        let events = read_events(text.as_bytes(), "events.jsonl", true).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].line, 1);
        assert_eq!(events[0].subject, "events.fw-edge-01");
        assert_eq!(events[0].uid.as_deref(), Some("k1"));
        assert_eq!(events[0].payload, GOOD.as_bytes());
        assert_eq!(events[1].line, 3);
        assert_eq!(events[1].subject, "events.ids_core_1");
        assert_eq!(events[1].uid, None);
    }

    #[test]
    fn the_first_bad_line_is_named() {
        let text = format!("{GOOD}\n{GOOD}\n{{\"sourceName\": \n{GOOD}\n");
        let err = read_events(text.as_bytes(), "events.jsonl", true).unwrap_err();
        assert!(
            err.to_string().starts_with("events.jsonl line 3: not JSON"),
            "{err}"
        );

        let text = format!("{GOOD}\n[1, 2]\n");
        let err = read_events(text.as_bytes(), "stdin", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stdin line 2: expected a JSON object, got a list"
        );

        let text = format!(
            "\n{GOOD}\n{}\n",
            r#"{"sourceName":"a","eventType":"b","severity":"SEVERE"}"#
        );
        let err = read_events(text.as_bytes(), "f", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"f line 3: invalid event: {"severity":["\"SEVERE\" is not a valid choice."]}"#
        );
    }

    #[test]
    fn without_validation_any_object_goes() {
        let text = r#"{"sourceName":"a","severity":"SEVERE","uid":"u"}
{"eventType":"no source"}"#;
        let events = read_events(text.as_bytes(), "f", false).unwrap();
        assert_eq!(events[0].subject, "events.a");
        assert_eq!(events[0].uid.as_deref(), Some("u"));
        assert_eq!(events[1].subject, "events.unknown");
        assert!(read_events("nope".as_bytes(), "f", false).is_err());
    }
}
