//! The one error type of `threatctl`: a message that prints as one line, and an exit code.

use std::fmt;

/// Why a command failed. `main` prints it as `threatctl: <message>` on one line of stderr
/// and exits with [`Error::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    code: u8,
}

impl Error {
    /// A failure (exit status 1).
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            code: 1,
        }
    }

    /// `context: cause`, with the cause's own causes appended (each once).
    pub fn with_cause(
        context: impl fmt::Display,
        cause: &(dyn std::error::Error + 'static),
    ) -> Self {
        Error::new(format!("{context}: {}", chain(cause)))
    }

    /// The same message with another exit status (130 after Ctrl-C, for example).
    pub fn with_exit_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The exit status to end the process with.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Error {
    /// The message on one line: line breaks and other control characters become spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(&self.message))
    }
}

impl std::error::Error for Error {}

/// An error and its causes as one line, `outer: inner: innermost`, skipping a cause whose
/// text the line already holds (many libraries repeat their source in their own message).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` with runs of white space and control characters collapsed into one space.
pub fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.trim().chars() {
        if c.is_whitespace() || c.is_control() {
            gap = true;
        } else {
            if gap && !line.is_empty() {
                line.push(' ');
            }
            gap = false;
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("request failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn errors_print_on_one_line_with_their_causes() {
        let err = Error::with_cause(
            "cannot reach the API",
            &Outer(std::io::Error::other("connection\nrefused")),
        );
        assert_eq!(
            err.to_string(),
            "cannot reach the API: request failed: connection refused"
        );
        assert_eq!(err.exit_code(), 1);
        assert_eq!(Error::new("x").with_exit_code(130).exit_code(), 130);
        assert_eq!(one_line("  a \r\n\t b  "), "a b");
    }
}
