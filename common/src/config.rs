//! Configuration shared by the services: environment variables (also read from `.env`), each
//! also a command-line flag. `--help` on any service is the reference.
//!
//! A missing or bad setting stops the service at start with one line naming it.

use std::time::Duration;

use clap::Parser;

use crate::domain::Severity;

/// Where the broker and the database are.
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Database: `sqlite://path/to/file.db` (created when missing) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/threatmon.db",
          value_parser = parse_database_url)]
    pub database_url: String,

    /// How long to wait for NATS at start before giving up, in seconds.
    #[arg(long, env = "NATS_CONNECT_TIMEOUT_SECS", default_value_t = 30)]
    pub nats_connect_timeout_secs: u64,
}

impl Connections {
    /// [`Connections::nats_connect_timeout_secs`] as a duration.
    pub fn nats_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.nats_connect_timeout_secs)
    }
}

/// How a worker pulls from its consumer.
#[derive(Debug, Clone, clap::Args)]
pub struct Pulling {
    /// Most messages stored or alerted in one transaction. 1,000: 3,000 stored ~15% more
    /// events/s in the whole pipeline (`scripts/pipeline-rate`, 200,000 events, 2 cores:
    /// SQLite 22.6k → 26.7k, PostgreSQL 24.6k → 26.5k), but a worker then holds more than the
    /// consumer's 20,000 unacknowledged messages allow (two batches in flight, four batches'
    /// worth of pulls outstanding), and in the benchmark's latency phase after a sustained
    /// one the alerter's pull went quiet until its missed-heartbeat check reopened it, 4 s
    /// later. A batch is what is waiting, so a slow trickle still goes through at once.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u16).range(1..=5000))]
    pub batch_size: u16,

    /// Seconds JetStream waits for a message's acknowledgement before redelivering it.
    #[arg(long, env = "ACK_WAIT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ack_wait_secs: u64,

    /// Deliveries of a message that keeps failing for a reason that is not transient (a
    /// value the database refuses, a corrupt row, a bug) before it is dead-lettered. An
    /// outage of the broker or the database is transient and never counts.
    #[arg(long, env = "MAX_DELIVER", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_deliver: u32,

    /// Batches one worker has in hand at once. At 2 the next batch's transaction runs
    /// while the last one's publishes and acknowledgements travel, so the database and the
    /// broker work at the same time; 1 handles one batch at a time.
    #[arg(long, env = "BATCHES_IN_FLIGHT", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub batches_in_flight: u16,
}

impl Pulling {
    /// [`Pulling::ack_wait_secs`] as a duration.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }
}

/// Parses `ALERT_MIN_SEVERITY`: a severity name, any case.
pub fn parse_severity(value: &str) -> Result<Severity, String> {
    value
        .trim()
        .to_ascii_uppercase()
        .parse::<Severity>()
        .map_err(|_| "expected one of LOW, MEDIUM, HIGH, CRITICAL".to_owned())
}

fn parse_database_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.starts_with("sqlite:")
        || value.starts_with("postgres://")
        || value.starts_with("postgresql://")
    {
        Ok(value.to_owned())
    } else {
        Err("expected sqlite://… or postgres://…".to_owned())
    }
}

/// Reads `.env` (when present) into the environment, then parses the settings. On a bad
/// setting prints one line naming it and exits with status 2; `--help` prints the reference.
pub fn load<T: Parser>(service: &str) -> T {
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("{service}: cannot read .env: {err}");
        std::process::exit(2);
    }
    match T::try_parse() {
        Ok(settings) => settings,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                err.exit();
            }
            eprintln!("{service}: {}", describe(&err));
            std::process::exit(2);
        }
    }
}

/// One line naming the bad setting. A secret's value is never repeated back.
fn describe(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() == ErrorKind::ValueValidation
        && let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
    {
        let upper = arg.to_ascii_uppercase();
        if ["SECRET", "PASSWORD", "TOKEN"]
            .iter()
            .any(|word| upper.contains(word))
        {
            let reason = std::error::Error::source(err)
                .map(|source| source.to_string())
                .unwrap_or_else(|| "invalid".to_owned());
            return format!("invalid value for '{arg}': {reason}");
        }
    }
    one_line(&err.to_string())
}

/// The first line of a clap error, without its `error: ` prefix.
fn one_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Settings {
        #[command(flatten)]
        connections: Connections,
        #[arg(long, env = "ALERT_MIN_SEVERITY", default_value = "HIGH", value_parser = parse_severity)]
        alert_min_severity: Severity,
    }

    #[test]
    fn defaults_are_local_and_bad_values_name_the_setting() {
        let ok = Settings::try_parse_from(["x", "--alert-min-severity", "critical"]).unwrap();
        assert_eq!(ok.alert_min_severity, Severity::Critical);
        assert_eq!(ok.connections.database_url, "sqlite://data/threatmon.db");

        let err = Settings::try_parse_from(["x", "--alert-min-severity", "HUGE"]).unwrap_err();
        let line = one_line(&err.to_string());
        assert!(
            line.contains("HUGE") && line.contains("ALERT_MIN_SEVERITY"),
            "{line}"
        );

        let err = Settings::try_parse_from(["x", "--database-url", "mysql://x"]).unwrap_err();
        assert!(describe(&err).contains("DATABASE_URL"));
    }
}
