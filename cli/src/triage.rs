//! `threatctl note`, `assign`, `bulk` and `summary`: triage over the REST API.

use std::io::{BufRead, IsTerminal, Write};

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::error::{Error, one_line};
use crate::session::{Session, TokenFileArgs};

/// Add a note to an alert (admins only); it is kept in the alert's history.
#[derive(Debug, Clone, clap::Args)]
pub struct NoteArgs {
    /// The alert's id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,

    /// What the note says (1–10,000 characters).
    text: String,

    /// Print the note as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

/// Give an alert an owner, or take it away (admins only).
#[derive(Debug, Clone, clap::Args)]
pub struct AssignArgs {
    /// The alert's id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,

    /// The owner's user id, or `none` to leave it without one.
    #[arg(value_parser = parse_owner)]
    assignee: Owner,

    /// Print the updated alert as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

/// Act on many alerts at once (admins only): by id or by the filters of `threatctl alerts`.
///
/// On a terminal it first shows what would change and asks; elsewhere it needs `--yes` (or
/// `--dry-run` to only count). Each changed alert gets one history row and one
/// alerts.updated message; at most 10,000 alerts a call.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkArgs {
    /// What to do: acknowledge, resolve, reopen or assign.
    #[arg(value_parser = ["acknowledge", "resolve", "reopen", "assign"])]
    action: String,

    /// The alerts, by id (comma-separated).
    #[arg(long, value_delimiter = ',', required_unless_present = "filter",
          conflicts_with = "filter", value_parser = clap::value_parser!(u64).range(1..))]
    ids: Vec<u64>,

    /// The alerts, by a filter of the alert list, NAME=VALUE (repeat to combine):
    /// status, severity, sourceName, eventType, assignee, created_at__gte, created_at__lte.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_filter)]
    filter: Vec<(String, String)>,

    /// With resolve: why (true_positive, false_positive, benign, duplicate, other).
    #[arg(long)]
    reason: Option<String>,

    /// Kept with each change in the history.
    #[arg(long)]
    note: Option<String>,

    /// With assign: the owner's user id, or `none`.
    #[arg(long, value_parser = parse_owner, required_if_eq("action", "assign"))]
    assignee: Option<Owner>,

    /// Only count what would change.
    #[arg(long, conflicts_with = "yes")]
    dry_run: bool,

    /// Apply without asking.
    #[arg(long)]
    yes: bool,

    /// Print the API's answer as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

/// Counts of alerts: per status and severity, the busiest sensors and types, all time and
/// for the last 24 hours.
#[derive(Debug, Clone, clap::Args)]
pub struct SummaryArgs {
    /// Print the API's answer as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

/// An owner: a user id, or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(Option<u64>);

impl Owner {
    fn json(self) -> Value {
        self.0.map_or(Value::Null, |id| json!(id))
    }
}

fn parse_owner(value: &str) -> Result<Owner, String> {
    match value.trim() {
        "none" => Ok(Owner(None)),
        id => id
            .parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .map(|id| Owner(Some(id)))
            .ok_or_else(|| "expected a user id or none".to_owned()),
    }
}

fn parse_filter(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err("expected NAME=VALUE".to_owned()),
    }
}

fn print_json(value: &Value) -> Result<(), Error> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::with_cause("printing", &e))?;
    println!("{text}");
    Ok(())
}

/// Runs `threatctl note`.
pub async fn note(args: NoteArgs) -> Result<(), Error> {
    let mut session = Session::open(&args.token_file)?;
    let body = json!({ "text": args.text });
    let note = session
        .call(
            Method::POST,
            &format!("/api/alerts/{}/notes/", args.id),
            &[],
            Some(&body),
        )
        .await?;
    if args.json {
        return print_json(&note);
    }
    println!(
        "note {} added to alert {}",
        note.get("id")
            .map_or_else(|| "-".to_owned(), Value::to_string),
        args.id
    );
    Ok(())
}

/// Runs `threatctl assign`.
pub async fn assign(args: AssignArgs) -> Result<(), Error> {
    let mut session = Session::open(&args.token_file)?;
    let body = json!({ "assignee": args.assignee.json() });
    let alert = session
        .call(
            Method::PATCH,
            &format!("/api/alerts/{}/", args.id),
            &[],
            Some(&body),
        )
        .await?;
    if args.json {
        return print_json(&alert);
    }
    match args.assignee.0 {
        Some(user) => println!("alert {} is assigned to user {user}", args.id),
        None => println!("alert {} has no owner", args.id),
    }
    Ok(())
}

/// Runs `threatctl bulk`: a dry run first on a terminal, then a prompt.
pub async fn bulk(args: BulkArgs) -> Result<(), Error> {
    let mut session = Session::open(&args.token_file)?;
    let mut body = Map::new();
    body.insert("action".into(), json!(args.action));
    if args.ids.is_empty() {
        let filter: Map<String, Value> = args
            .filter
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect();
        body.insert("filter".into(), Value::Object(filter));
    } else {
        body.insert("ids".into(), json!(args.ids));
    }
    if let Some(reason) = &args.reason {
        body.insert("close_reason".into(), json!(reason));
    }
    if let Some(note) = &args.note {
        body.insert("note".into(), json!(note));
    }
    if let Some(owner) = args.assignee {
        body.insert("assignee".into(), owner.json());
    }
    let interactive = std::io::stdin().is_terminal();
    if args.dry_run || !args.yes {
        let mut dry = body.clone();
        dry.insert("dry_run".into(), json!(true));
        let preview = session
            .call(
                Method::POST,
                "/api/alerts/bulk/",
                &[],
                Some(&Value::Object(dry)),
            )
            .await?;
        let matched = preview.get("matched").and_then(Value::as_i64).unwrap_or(0);
        if args.dry_run {
            return if args.json {
                print_json(&preview)
            } else {
                println!("this would {} {matched} alerts", args.action);
                Ok(())
            };
        }
        if !interactive {
            return Err(Error::new(format!(
                "this would {} {matched} alerts: pass --yes to apply (stdin is not a terminal)",
                args.action
            )));
        }
        eprint!(
            "this will {} {matched} alerts. Proceed? [y/N] ",
            args.action
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Error::with_cause("reading the answer", &e))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing changed");
            return Ok(());
        }
    }
    let done = session
        .call(
            Method::POST,
            "/api/alerts/bulk/",
            &[],
            Some(&Value::Object(body)),
        )
        .await?;
    if args.json {
        return print_json(&done);
    }
    let number = |name: &str| done.get(name).and_then(Value::as_i64).unwrap_or(0);
    let skipped = done
        .get("skipped")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    println!(
        "{} of {} alerts changed, {} skipped",
        number("changed"),
        number("matched"),
        skipped.len()
    );
    for skip in skipped {
        let reason = skip.get("reason").and_then(Value::as_str).unwrap_or("-");
        println!(
            "  alert {}: {}",
            skip.get("id")
                .map_or_else(|| "-".to_owned(), Value::to_string),
            one_line(reason)
        );
    }
    Ok(())
}

/// The summary as text: a status × severity table, then the top lists.
pub fn summary_text(summary: &Value) -> String {
    let mut out = String::new();
    for (title, counts) in [
        ("all alerts", summary),
        ("last 24 hours", &summary["last_24h"]),
    ] {
        out.push_str(&format!("{title}\n"));
        out.push_str(&format!(
            "  {:<13} {:>8} {:>8} {:>8} {:>8}\n",
            "STATUS", "LOW", "MEDIUM", "HIGH", "CRITICAL"
        ));
        for status in ["OPEN", "ACKNOWLEDGED", "RESOLVED"] {
            let row = &counts["by_status"][status];
            let n = |severity: &str| row[severity].as_i64().unwrap_or(0);
            out.push_str(&format!(
                "  {status:<13} {:>8} {:>8} {:>8} {:>8}\n",
                n("LOW"),
                n("MEDIUM"),
                n("HIGH"),
                n("CRITICAL")
            ));
        }
        for (label, list, key) in [
            ("top sensors (unresolved)", "top_sources", "sourceName"),
            ("top types (unresolved)", "top_event_types", "eventType"),
        ] {
            let items = counts[list]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let named: Vec<String> = items
                .iter()
                .map(|item| {
                    format!(
                        "{} {}",
                        one_line(item[key].as_str().unwrap_or("-")),
                        item["count"].as_i64().unwrap_or(0)
                    )
                })
                .collect();
            let named = if named.is_empty() {
                "-".to_owned()
            } else {
                named.join(", ")
            };
            out.push_str(&format!("  {label}: {named}\n"));
        }
    }
    out
}

/// Runs `threatctl summary`.
pub async fn summary(args: SummaryArgs) -> Result<(), Error> {
    let mut session = Session::open(&args.token_file)?;
    let summary = session
        .call(Method::GET, "/api/alerts/summary/", &[], None)
        .await?;
    if args.json {
        return print_json(&summary);
    }
    print!("{}", summary_text(&summary));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_filters_parse() {
        assert_eq!(parse_owner("7"), Ok(Owner(Some(7))));
        assert_eq!(parse_owner("none"), Ok(Owner(None)));
        assert!(parse_owner("0").is_err() && parse_owner("bob").is_err());
        assert_eq!(
            parse_filter("status=OPEN"),
            Ok(("status".to_owned(), "OPEN".to_owned()))
        );
        assert!(parse_filter("status").is_err() && parse_filter("=x").is_err());
    }

    #[test]
    fn the_summary_prints_a_table_and_the_top_lists() {
        let counts = json!({
            "by_status": {"OPEN": {"LOW": 0, "MEDIUM": 1, "HIGH": 12, "CRITICAL": 3}},
            "top_sources": [{"sourceName": "fw", "count": 16}],
            "top_event_types": [],
        });
        let mut summary = counts.clone();
        summary["last_24h"] = counts;
        let text = summary_text(&summary);
        assert!(
            text.contains("  OPEN                 0        1       12        3\n"),
            "{text}"
        );
        assert!(
            text.contains("  RESOLVED             0        0        0        0\n"),
            "{text}"
        );
        assert!(text.contains("top sensors (unresolved): fw 16\n"), "{text}");
        assert!(text.contains("top types (unresolved): -\n"), "{text}");
        assert!(text.contains("last 24 hours\n"), "{text}");
    }
}
