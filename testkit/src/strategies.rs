//! Hostile input for property tests (`proptest`): strings and JSON that break parsers.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// The fields of an event as a sensor sends it, for generators that aim at them.
pub const EVENT_FIELDS: [&str; 7] = [
    "sourceName",
    "eventType",
    "severity",
    "description",
    "uid",
    "occurred_at",
    "attributes",
];

/// Strings that break things: control characters (C0, DEL, C1) and NUL, U+FFFD, line
/// separators, runs of 15k–17k copies of one character (up to 68 KiB), likely field values,
/// and anything at all.
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f-\\u{9f}]{0,40}",
        "[a-z \\r\\n\\t\\x00\\x7f\\u{85}\\u{2028}\\u{fffd}]{1,40}",
        prop::sample::select(vec![
            "HIGH", "LOW", "MEDIUM", "CRITICAL", "high", " HIGH ", "OPEN", "RESOLVED", "fw1",
        ])
        .prop_map(str::to_owned),
        (any::<char>(), 60_000usize..70_000).prop_map(|(c, n)| c.to_string().repeat(n / 4)),
    ]
}

/// Any JSON value, up to three levels deep, with [`nasty_string`]s for strings and keys.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}
