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

/// An error and all its causes on one line, `outer: cause: root cause`, for a log field or
/// a start-up message. A cause whose text the message before it already ends with (an error
/// that prints its source as well as returning it) is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("starting")]
        Start(#[source] Middle),
        #[error("opening: {0}")]
        Open(#[source] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading the file")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_is_on_the_line_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            error_chain(&Outer::Start(Middle(io()))),
            "starting: reading the file: disk on fire"
        );
        assert_eq!(error_chain(&Outer::Open(io())), "opening: disk on fire");
        assert_eq!(error_chain(&io()), "disk on fire");
    }
}
