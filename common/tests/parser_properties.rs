//! Property tests of what turns untrusted bytes into values: the event parser and the
//! header-safe form of a reason. No input may panic them, and what they accept or produce
//! keeps their promises.

#![allow(clippy::unwrap_used)]

use common::bus::header_safe;
use common::domain::{EventIn, EventRejection, identifier_problem};
use proptest::prelude::*;
use serde_json::Value;
use testkit::strategies::{EVENT_FIELDS as FIELDS, json_value, nasty_string};

/// An object whose keys are mostly the parser's own fields.
fn event_like() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => nasty_string(),
    ];
    prop::collection::vec((key, json_value()), 0..10)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

fn check_outcome(outcome: Result<common::NewEvent, EventRejection>) {
    match outcome {
        Ok(event) => {
            for (name, value) in [
                ("sourceName", event.source_name.as_str()),
                ("eventType", event.event_type.as_str()),
            ] {
                assert!(!value.is_empty(), "{name} accepted empty");
                assert!(value.chars().count() <= 128, "{name} accepted too long");
                assert_eq!(identifier_problem(value), None, "{name} {value:?}");
            }
            if let Some(uid) = &event.uid {
                assert_eq!(identifier_problem(uid), None, "uid {uid:?}");
                assert!(!uid.is_empty() && uid.len() <= 255);
            }
            assert!(event.description.len() <= 64 * 1024);
        }
        Err(EventRejection::Invalid(errors)) => {
            assert!(!errors.is_empty(), "a rejection names what is wrong");
            for field in errors.fields() {
                assert!(
                    FIELDS.contains(&field) || field == "non_field_errors",
                    "unexpected field {field}"
                );
            }
            // The reason a dead letter carries is header-safe whatever it quotes.
            let reason = header_safe(&errors.to_string());
            assert!(!reason.as_str().chars().any(char::is_control));
        }
        Err(EventRejection::NotJson(reason)) => {
            assert!(!header_safe(&reason).as_str().contains(['\r', '\n']));
        }
    }
}

proptest! {
    // A fixed case count keeps CI's time predictable (two runs of the suite).
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_an_event_or_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_outcome(EventIn::parse(&bytes));
    }

    #[test]
    fn any_json_object_is_a_valid_event_or_named_field_errors(value in event_like()) {
        check_outcome(EventIn::parse(value.to_string().as_bytes()));
        check_outcome(EventIn::from_value(value));
    }

    #[test]
    fn free_text_keeps_every_character_as_sent(
        description in "[^\\s][\\x00-\\u{10ffff}]{0,200}[^\\s]",
        attribute in any::<String>(),
    ) {
        prop_assume!(attribute != "a");
        let body = serde_json::json!({
            "sourceName": "fw1", "eventType": "t", "severity": "LOW",
            "description": description, "attributes": {"a": attribute, attribute.clone(): 1},
        });
        let event = EventIn::from_value(body).unwrap();
        prop_assert_eq!(&event.description, &description);
        let attributes = event.attributes.unwrap();
        prop_assert_eq!(attributes["a"].as_str().unwrap(), attribute.as_str());
    }

    #[test]
    fn header_safe_text_is_one_bounded_line_that_keeps_plain_text(text in any::<String>()) {
        let safe = header_safe(&text);
        let safe = safe.as_str();
        prop_assert!(!safe.chars().any(char::is_control));
        prop_assert!(safe.len() <= 2048 + '…'.len_utf8());
        if !text.chars().any(char::is_control) && text.len() <= 2048 {
            prop_assert_eq!(safe, text.as_str());
        }
    }
}
