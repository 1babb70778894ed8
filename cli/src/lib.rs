//! `threatctl`: threatmon from a shell. Publish events as a sensor would (one, a file of
//! JSON lines, or generated load), follow alerts live from the ALERTS stream, and log in to
//! the REST API to list, acknowledge, resolve, reopen, annotate, assign and bulk-change
//! alerts and see their summary.
//!
//! `main.rs` only calls [`main`]; each command is a module with its clap arguments and a
//! `run`. A failure prints one line, `threatctl: <what went wrong>`, and exits non-zero
//! (2 for a bad command line).

mod alerts;
mod error;
pub mod generate;
pub mod jsonl;
mod nats;
mod publish;
mod session;
mod signal;
mod tail;
mod triage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::domain::AlertStatus;

pub use alerts::{AlertsArgs, ChangeArgs, table};
pub use error::Error;
pub use nats::NatsArgs;
pub use publish::{PublishArgs, Summary};
pub use session::{LoginArgs, TokenFileArgs, Tokens, describe_error_body};
pub use tail::{TailArgs, json_line, readable_line, subject_matches};
pub use triage::{AssignArgs, BulkArgs, NoteArgs, SummaryArgs, summary_text};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "threatctl",
    version,
    about = "threatmon from a shell: publish events, follow alerts, manage alerts"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Each command's help is the doc comment of its arguments' struct.
#[derive(Debug, Subcommand)]
enum Command {
    Publish(PublishArgs),
    Tail(TailArgs),
    Login(LoginArgs),
    Alerts(AlertsArgs),
    #[command(
        about = "Acknowledge an alert: its status becomes ACKNOWLEDGED (admins only)",
        long_about = "Acknowledge an alert: its status becomes ACKNOWLEDGED (admins only).\n\n\
                      The change and the note are recorded in the alert's history and published \
                      on alerts.updated.acknowledged. Prints the alert's new state."
    )]
    Ack(ChangeArgs),
    #[command(
        about = "Resolve an alert: its status becomes RESOLVED (admins only)",
        long_about = "Resolve an alert: its status becomes RESOLVED (admins only).\n\n\
                      The change and the note are recorded in the alert's history and published \
                      on alerts.updated.resolved. Prints the alert's new state."
    )]
    Resolve(ChangeArgs),
    #[command(
        about = "Reopen an alert: its status becomes OPEN again (admins only)",
        long_about = "Reopen an alert: its status becomes OPEN again (admins only).\n\n\
                      Its close reason is cleared. The change and the note are recorded in the \
                      alert's history and published on alerts.updated.open."
    )]
    Reopen(ChangeArgs),
    Note(NoteArgs),
    Assign(AssignArgs),
    Bulk(BulkArgs),
    Summary(SummaryArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Publish(args) => publish::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Login(args) => session::login(args).await,
        Command::Alerts(args) => alerts::list(args).await,
        Command::Ack(args) => alerts::change(args, AlertStatus::Acknowledged).await,
        Command::Resolve(args) => alerts::change(args, AlertStatus::Resolved).await,
        Command::Reopen(args) => alerts::change(args, AlertStatus::Open).await,
        Command::Note(args) => triage::note(args).await,
        Command::Assign(args) => triage::assign(args).await,
        Command::Bulk(args) => triage::bulk(args).await,
        Command::Summary(args) => triage::summary(args).await,
    }
}

/// A clap error as one line: its message without the usage block and the `--help` hint.
fn usage_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect();
    format!("{} (see --help)", error::one_line(&parts.join(" ")))
}

/// The whole program: parses the command line, runs the command, prints a failure as one
/// line on stderr, and gives the exit status (0, 1 on failure, 2 on a bad command line, 130
/// when Ctrl-C interrupted a publish).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if !err.use_stderr()
                || err.kind()
                    == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            // --help, --version, or no command at all: clap's own output.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
        Err(err) => {
            eprintln!("threatctl: {}", usage_line(&err));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("threatctl: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (the NATS client's) have nothing left to do; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("threatctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("threatctl").chain(args.iter().copied()))
    }

    #[test]
    fn publish_takes_exactly_one_source_of_events() {
        assert!(parse(&["publish", "--count", "5"]).is_ok());
        assert!(parse(&["publish", "--file", "-"]).is_ok());
        assert!(
            parse(&[
                "publish",
                "--source",
                "s",
                "--type",
                "t",
                "--severity",
                "high"
            ])
            .is_ok()
        );
        assert!(parse(&["publish"]).is_err());
        assert!(parse(&["publish", "--count", "5", "--file", "x"]).is_err());
        assert!(
            parse(&["publish", "--source", "s"]).is_err(),
            "type and severity required"
        );
        assert!(
            parse(&["publish", "--file", "x", "--rate", "5"]).is_err(),
            "rate is for --count"
        );
        assert!(parse(&["publish", "--file", "x", "--seed", "1"]).is_err());
        assert!(parse(&["publish", "--file", "x", "--type", "t"]).is_err());
        assert!(parse(&["publish", "--count", "5", "--no-validate"]).is_err());
        assert!(parse(&["publish", "--rate", "5"]).is_err());
        assert!(parse(&["publish", "--count", "0"]).is_err());
        assert!(parse(&["publish", "--count", "5", "--mix", "HIGH=x"]).is_err());
    }

    #[test]
    fn usage_errors_are_one_line() {
        let err = parse(&["publish", "--source", "s"]).unwrap_err();
        let line = usage_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--type"), "{line}");
        let err = parse(&["tail", "--severity", "SEVERE"]).unwrap_err();
        let line = usage_line(&err);
        assert!(
            line.contains("SEVERE") && line.contains("--severity"),
            "{line}"
        );
    }
}
