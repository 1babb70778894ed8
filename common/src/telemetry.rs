//! Logging, set up once per process: `RUST_LOG` filters; `LOG_FORMAT=json` for machines.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    // A second init (tests that start several services) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// An error and its whole chain of causes on one line: "a: b: c". For logs and dead-letter
/// reasons, where the outermost message alone often hides what went wrong.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
