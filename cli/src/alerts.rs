//! `threatctl alerts`, `ack`, `resolve` and `reopen`: alerts over the REST API.

use chrono::{DateTime, Utc};
use common::config::parse_severity;
use common::domain::{AlertStatus, Severity};
use reqwest::Method;
use serde_json::{Value, json};

use crate::error::{Error, one_line};
use crate::session::{Session, TokenFileArgs};

/// List alerts, newest first, a page at a time, as a table or as the API's JSON page.
///
/// Filters combine. Uses the tokens saved by `threatctl login`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertsArgs {
    /// Only alerts in this status: OPEN, ACKNOWLEDGED or RESOLVED.
    #[arg(long, value_parser = parse_status)]
    status: Option<AlertStatus>,

    /// Only alerts of this severity: LOW, MEDIUM, HIGH or CRITICAL.
    #[arg(long, value_parser = parse_severity)]
    severity: Option<Severity>,

    /// Only alerts from this sensor (exact name).
    #[arg(long)]
    source: Option<String>,

    /// Only alerts of this event type (exact name).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,

    /// Which page.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    page: u64,

    /// Alerts a page.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    page_size: u64,

    /// Print the page as the API returns it (JSON).
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

/// Change an alert's status (admins only).
///
/// The change and the note are recorded in the alert's history and published on
/// alerts.updated.<status>. Prints the alert's new state.
#[derive(Debug, Clone, clap::Args)]
pub struct ChangeArgs {
    /// The alert's id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,

    /// Why; kept in the alert's history.
    #[arg(long)]
    note: Option<String>,

    /// With resolve: why it is closed (true_positive, false_positive, benign, duplicate,
    /// other).
    #[arg(long, value_name = "CLOSE_REASON")]
    reason: Option<String>,

    /// Print the updated alert as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    token_file: TokenFileArgs,
}

fn parse_status(value: &str) -> Result<AlertStatus, String> {
    value
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| "expected OPEN, ACKNOWLEDGED or RESOLVED".to_owned())
}

fn text(alert: &Value, name: &str) -> String {
    match alert.get(name) {
        Some(Value::String(s)) => one_line(s),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn time(alert: &Value, name: &str) -> String {
    alert
        .get(name)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|at| {
            at.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| text(alert, name))
}

/// A page of alerts as an aligned table, with a header.
pub fn table(alerts: &[Value]) -> String {
    let header = [
        "ID",
        "CREATED (UTC)",
        "LAST SEEN (UTC)",
        "COUNT",
        "SEVERITY",
        "STATUS",
        "TYPE",
        "SOURCE",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 8]> = alerts
        .iter()
        .map(|alert| {
            [
                text(alert, "id"),
                time(alert, "created_at"),
                time(alert, "last_seen_at"),
                text(alert, "count"),
                text(alert, "severity"),
                text(alert, "status"),
                text(alert, "eventType"),
                text(alert, "sourceName"),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs `threatctl alerts`.
pub async fn list(args: AlertsArgs) -> Result<(), Error> {
    let mut session = Session::open(&args.token_file)?;
    let mut query = vec![
        ("page", args.page.to_string()),
        ("page_size", args.page_size.to_string()),
    ];
    if let Some(status) = args.status {
        query.push(("status", status.as_str().to_owned()));
    }
    if let Some(severity) = args.severity {
        query.push(("severity", severity.as_str().to_owned()));
    }
    if let Some(source) = &args.source {
        query.push(("sourceName", source.clone()));
    }
    if let Some(event_type) = &args.event_type {
        query.push(("eventType", event_type.clone()));
    }
    let page = session
        .call(Method::GET, "/api/alerts/", &query, None)
        .await?;
    if args.json {
        let text = serde_json::to_string_pretty(&page)
            .map_err(|e| Error::with_cause("printing the page", &e))?;
        println!("{text}");
        return Ok(());
    }
    let count = page.get("count").and_then(Value::as_u64).unwrap_or(0);
    let alerts = page
        .get("results")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let pages = count.div_ceil(args.page_size).max(1);
    if alerts.is_empty() {
        println!("no alerts");
    } else {
        print!("{}", table(alerts));
    }
    println!("page {} of {pages} (count {count})", args.page);
    Ok(())
}

/// Runs `threatctl ack` (to ACKNOWLEDGED) or `threatctl resolve` (to RESOLVED).
pub async fn change(args: ChangeArgs, status: AlertStatus) -> Result<(), Error> {
    let mut session = Session::open(&args.token_file)?;
    let mut body = json!({ "status": status.as_str() });
    if let Some(note) = &args.note {
        body["note"] = json!(note);
    }
    if let Some(reason) = &args.reason {
        body["close_reason"] = json!(reason);
    }
    let alert = session
        .call(
            Method::PATCH,
            &format!("/api/alerts/{}/", args.id),
            &[],
            Some(&body),
        )
        .await?;
    if args.json {
        println!("{alert}");
    } else {
        println!(
            "alert {} is {} ({} {} from {}, updated {})",
            text(&alert, "id"),
            text(&alert, "status"),
            text(&alert, "severity"),
            text(&alert, "eventType"),
            text(&alert, "sourceName"),
            time(&alert, "updated_at"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_any_case() {
        assert_eq!(parse_status("open"), Ok(AlertStatus::Open));
        assert_eq!(parse_status("Resolved"), Ok(AlertStatus::Resolved));
        assert!(parse_status("closed").is_err());
    }

    #[test]
    fn alerts_print_as_an_aligned_table() {
        let alerts = [
            json!({"id": 7, "created_at": "2026-11-28T10:00:00.5Z", "severity": "HIGH",
                   "last_seen_at": "2026-11-28T10:30:00Z", "count": 41,
                   "status": "OPEN", "eventType": "port_scan", "sourceName": "fw-edge-01"}),
            json!({"id": 12, "created_at": "2026-11-28T11:00:00+01:00", "severity": "CRITICAL",
                   "last_seen_at": "2026-11-28T10:00:00Z", "count": 1,
                   "status": "ACKNOWLEDGED", "eventType": "c2_beacon", "sourceName": "ids-core-01"}),
        ];
        assert_eq!(
            table(&alerts),
            "ID  CREATED (UTC)        LAST SEEN (UTC)      COUNT  SEVERITY  STATUS        TYPE       SOURCE\n\
             7   2026-11-28 10:00:00  2026-11-28 10:30:00  41     HIGH      OPEN          port_scan  fw-edge-01\n\
             12  2026-11-28 10:00:00  2026-11-28 10:00:00  1      CRITICAL  ACKNOWLEDGED  c2_beacon  ids-core-01\n"
        );
    }
}
