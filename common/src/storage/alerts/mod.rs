//! Alerts: each escalated event counted in exactly one, repeats folded together, with every
//! change recorded. Creating and folding is in [`create`], changing alerts (one or in bulk)
//! and notifying the changes in [`status`], notes in [`notes`], the summary in [`summary`];
//! here are their types and reads.

mod create;
mod notes;
mod search;
mod status;
mod summary;

pub use create::Folding;
pub use notes::{MAX_NOTE_TEXT_CHARS, Note};
pub use search::SearchCounts;
pub use status::{AlertChange, AlertUpdate, BulkUpdate, Refusal};
pub use summary::{AlertSummary, SourceCount, StatusCounts, SummaryCounts, TypeCount};

use chrono::{DateTime, Utc};
use serde::Serialize;

use sqlx::AssertSqlSafe;

use super::listing::{CountTables, ListFilter, shared_conditions};
use super::sql::{Condition, Value, any_of, condition, fts5_query, full_text};
use super::{Storage, StorageError, on_pool};
use crate::domain::{Alert, AlertStatus, CloseReason, Severity, from_micros};
use serde_json::Map;

const STATUS_CHANGE_COLUMNS: &str = "id, alert_id, from_status, to_status, changed_by, note, \
     changed_at, reason, from_severity, to_severity, close_reason, from_assignee, to_assignee, \
     note_id";
const ALERT_COLUMNS: &str = "id, event_id, source_name, event_type, severity, status, \
     created_at, updated_at, event_count, first_seen_at, last_seen_at, last_event_id, fold_key, \
     version, close_reason, assignee";
const SELECT_ALERT: &str = "SELECT id, event_id, source_name, event_type, severity, status, \
     created_at, updated_at, event_count, first_seen_at, last_seen_at, last_event_id, fold_key, \
     version, close_reason, assignee FROM alerts";

/// What creating (or folding into) alerts for a batch of escalated events did.
#[derive(Debug, Clone, Default)]
pub struct CreatedAlerts {
    /// Every alert that an event of the batch opened, whether now or by an earlier delivery:
    /// what `alerts.created.*` announces (again, on a redelivery).
    pub alerts: Vec<Alert>,
    /// How many alerts were made now.
    pub newly_created: u64,
    /// How many events of the batch were counted now into alerts that already existed.
    pub folded: u64,
    /// The changes the pipeline made to existing alerts (a folded event of higher severity
    /// raised one, and reopened it if it was acknowledged), each with its alert after the
    /// change: what `alerts.updated.*` announces. Recorded as pending notifications.
    pub updates: Vec<(Alert, StatusChange)>,
}

/// One recorded status change of an alert. Creation is the first, from no status to `OPEN`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StatusChange {
    /// Database id.
    pub id: i64,
    /// The alert that changed.
    pub alert_id: i64,
    /// The status before; `None` for the creation.
    pub from_status: Option<AlertStatus>,
    /// The status after.
    pub to_status: AlertStatus,
    /// The user who changed it; `None` for the pipeline.
    pub changed_by: Option<i64>,
    /// Why, in the user's words.
    pub note: Option<String>,
    /// When (UTC).
    pub changed_at: DateTime<Utc>,
    /// Why the pipeline made this change (`changed_by` is `None`): a folded event of higher
    /// severity; `None` for a user's change and for the creation.
    pub reason: Option<String>,
    /// The severity before, when the change raised it.
    pub from_severity: Option<Severity>,
    /// The severity after, when the change raised it.
    pub to_severity: Option<Severity>,
    /// The close reason a resolution gave.
    pub close_reason: Option<CloseReason>,
    /// The owner before, when the change assigned the alert.
    pub from_assignee: Option<i64>,
    /// The owner after, when the change assigned the alert.
    pub to_assignee: Option<i64>,
    /// The note this row records, when it records one (see `/notes/`).
    pub note_id: Option<i64>,
    /// What the change was, from the fields above.
    pub kind: ChangeKind,
}

/// What one history row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The alert was made.
    Created,
    /// A folded event of higher severity raised its severity (and reopened it if it was
    /// acknowledged).
    SeverityRaised,
    /// It became ACKNOWLEDGED.
    Acknowledged,
    /// It became RESOLVED.
    Resolved,
    /// It became OPEN again.
    Reopened,
    /// Its owner changed.
    Assigned,
    /// A note was added.
    Note,
    /// Something else changed (the close reason of a resolved alert).
    Updated,
}

/// Which alerts a list or count covers; every given field must match (`AND`), and the
/// default matches every alert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Any of these statuses (none given: any status).
    pub status: Vec<AlertStatus>,
    /// Any of these severities.
    pub severity: Vec<Severity>,
    /// Any of these event types (exact, case-sensitive).
    pub event_type: Vec<String>,
    /// Any of these sensors (exact, case-sensitive).
    pub source_name: Vec<String>,
    /// Raised at or after this time (inclusive).
    pub created_from: Option<DateTime<Utc>>,
    /// Raised at or before this time (inclusive).
    pub created_to: Option<DateTime<Utc>>,
    /// Owned by this user, or by nobody.
    pub assignee: Option<AssigneeFilter>,
    /// Words that must all be in the alert's sensor, event type or first event's description
    /// (whole words, any case); see [`search_words`].
    pub search: Option<Vec<String>>,
}

impl AlertFilter {
    /// The words of a search that is the filter's only condition (and has words).
    fn search_only(&self) -> Option<&[String]> {
        // Destructured so that a new field must be considered here.
        let AlertFilter {
            status,
            severity,
            event_type,
            source_name,
            created_from,
            created_to,
            assignee,
            search,
        } = self;
        let alone = status.is_empty()
            && severity.is_empty()
            && event_type.is_empty()
            && source_name.is_empty()
            && created_from.is_none()
            && created_to.is_none()
            && assignee.is_none();
        search.as_deref().filter(|words| alone && !words.is_empty())
    }
}

/// The words of a search (`q=`): runs of letters and digits, lower-cased. Anything else
/// separates words, so no input is query syntax.
pub fn search_words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whose alerts a list covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssigneeFilter {
    /// Alerts nobody owns.
    Nobody,
    /// Alerts this user (id) owns.
    User(i64),
}

const ALERT_COUNT_TABLES: CountTables = CountTables {
    all: "alert_counts",
    by_type: "alert_counts_by_type",
    by_source: "alert_counts_by_source",
};

impl ListFilter for AlertFilter {
    const SELECT: &'static str = SELECT_ALERT;
    const TABLE: &'static str = "alerts";

    fn conditions(&self) -> Vec<Condition> {
        let assignee = match self.assignee {
            None => None,
            Some(AssigneeFilter::Nobody) => condition("assignee", "IS", Some(Value::Null)),
            Some(AssigneeFilter::User(id)) => condition("assignee", "=", Some(id)),
        };
        let search = match &self.search {
            None => None,
            Some(words) if words.is_empty() => condition("id", "<", Some(0i64)),
            Some(words) => Some(full_text(words)),
        };
        let statuses: Vec<&str> = self.status.iter().map(|s| s.as_str()).collect();
        any_of("status", &statuses)
            .into_iter()
            .chain(assignee)
            .chain(search)
            .chain(shared_conditions(
                &self.severity,
                &self.source_name,
                &self.event_type,
                self.created_from,
                self.created_to,
            ))
            .collect()
    }

    /// `alert_counts` when nothing but the status and the severity are given,
    /// `alert_counts_by_type` or `alert_counts_by_source` when the type or the sensor is given
    /// as well (not both), none when a time is given.
    fn count_table(&self) -> Option<&'static str> {
        // Destructured so that a new field must be considered here.
        let AlertFilter {
            status: _,
            severity: _,
            event_type,
            source_name,
            created_from,
            created_to,
            assignee,
            search,
        } = self;
        // Owners and searches are not counted ahead: such a count walks the matching rows.
        ALERT_COUNT_TABLES.answering(
            !event_type.is_empty(),
            !source_name.is_empty(),
            created_from.is_some()
                || created_to.is_some()
                || assignee.is_some()
                || search.is_some(),
        )
    }
}

/// The order of an alert list. Ids grow with creation time, so "newest" is the highest id.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertOrdering {
    /// Newest first.
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
    /// Least severe first; newest first within a severity.
    SeverityAscending,
    /// Most severe first; newest first within a severity.
    SeverityDescending,
    /// Longest quiet first (oldest `last_seen_at`); newest first within a time.
    LastSeenAscending,
    /// Most recently seen first.
    LastSeenDescending,
    /// Fewest events first; newest first within a count.
    CountAscending,
    /// Most events first (the loudest repeats); newest first within a count.
    CountDescending,
}

impl AlertOrdering {
    fn sql(self) -> &'static str {
        match self {
            AlertOrdering::NewestFirst => "ORDER BY id DESC",
            AlertOrdering::OldestFirst => "ORDER BY id ASC",
            AlertOrdering::SeverityAscending => "ORDER BY severity ASC, id DESC",
            AlertOrdering::SeverityDescending => "ORDER BY severity DESC, id DESC",
            AlertOrdering::LastSeenAscending => "ORDER BY last_seen_at ASC, id DESC",
            AlertOrdering::LastSeenDescending => "ORDER BY last_seen_at DESC, id DESC",
            AlertOrdering::CountAscending => "ORDER BY event_count ASC, id DESC",
            AlertOrdering::CountDescending => "ORDER BY event_count DESC, id DESC",
        }
    }
}

/// What [`Storage::change_alert_status`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusUpdate {
    /// The alert after the change.
    pub alert: Alert,
    /// The change recorded; `None` when the alert already had the status asked for, in which
    /// case nothing was changed or recorded.
    pub change: Option<StatusChange>,
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: i64,
    event_id: i64,
    source_name: String,
    event_type: String,
    severity: i16,
    status: String,
    created_at: i64,
    updated_at: i64,
    event_count: i64,
    first_seen_at: i64,
    last_seen_at: i64,
    last_event_id: i64,
    fold_key: Option<String>,
    version: i64,
    close_reason: Option<String>,
    assignee: Option<i64>,
}

impl TryFrom<AlertRow> for Alert {
    type Error = StorageError;

    fn try_from(row: AlertRow) -> Result<Self, Self::Error> {
        let severity = Severity::from_rank(row.severity).ok_or_else(|| {
            StorageError::Corrupt(format!("alert {}: severity {}", row.id, row.severity))
        })?;
        let status = row.status.parse().map_err(|_| {
            StorageError::Corrupt(format!("alert {}: status {}", row.id, row.status))
        })?;
        let corrupt = |what: &str| StorageError::Corrupt(format!("alert {}: {what}", row.id));
        let fold_key = match &row.fold_key {
            None => Map::new(),
            Some(json) => serde_json::from_str(json).map_err(|_| corrupt("fold_key"))?,
        };
        let close_reason = match &row.close_reason {
            None => None,
            Some(reason) => Some(reason.parse().map_err(|_| corrupt("close_reason"))?),
        };
        Ok(Alert {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            severity,
            source_name: row.source_name,
            status,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
            count: row.event_count,
            first_seen_at: from_micros(row.first_seen_at),
            last_seen_at: from_micros(row.last_seen_at),
            last_event_id: row.last_event_id,
            fold_key,
            version: row.version,
            close_reason,
            assignee: row.assignee,
        })
    }
}

#[derive(sqlx::FromRow)]
struct StatusChangeRow {
    id: i64,
    alert_id: i64,
    from_status: Option<String>,
    to_status: String,
    changed_by: Option<i64>,
    note: Option<String>,
    changed_at: i64,
    reason: Option<String>,
    from_severity: Option<i16>,
    to_severity: Option<i16>,
    close_reason: Option<String>,
    from_assignee: Option<i64>,
    to_assignee: Option<i64>,
    note_id: Option<i64>,
}

impl TryFrom<StatusChangeRow> for StatusChange {
    type Error = StorageError;

    fn try_from(row: StatusChangeRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StorageError::Corrupt(format!("status change {}: {what}", row.id));
        let from_status = match &row.from_status {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| corrupt("from_status"))?),
        };
        let to_status = row.to_status.parse().map_err(|_| corrupt("to_status"))?;
        let severity = |rank: Option<i16>, what: &str| match rank {
            None => Ok(None),
            Some(rank) => Severity::from_rank(rank)
                .map(Some)
                .ok_or_else(|| corrupt(what)),
        };
        let from_severity = severity(row.from_severity, "from_severity")?;
        let to_severity = severity(row.to_severity, "to_severity")?;
        let close_reason = match &row.close_reason {
            None => None,
            Some(reason) => Some(reason.parse().map_err(|_| corrupt("close_reason"))?),
        };
        let kind = match (from_status, to_status) {
            (None, _) => ChangeKind::Created,
            _ if row.note_id.is_some() => ChangeKind::Note,
            _ if to_severity > from_severity => ChangeKind::SeverityRaised,
            (Some(from), to) if from != to => match to {
                AlertStatus::Open => ChangeKind::Reopened,
                AlertStatus::Acknowledged => ChangeKind::Acknowledged,
                AlertStatus::Resolved => ChangeKind::Resolved,
            },
            _ if row.from_assignee != row.to_assignee => ChangeKind::Assigned,
            _ => ChangeKind::Updated,
        };
        Ok(StatusChange {
            id: row.id,
            alert_id: row.alert_id,
            from_status,
            to_status,
            changed_by: row.changed_by,
            note: row.note,
            changed_at: from_micros(row.changed_at),
            reason: row.reason,
            from_severity,
            to_severity,
            close_reason,
            from_assignee: row.from_assignee,
            to_assignee: row.to_assignee,
            note_id: row.note_id,
            kind,
        })
    }
}

impl Storage {
    /// One alert by id.
    pub async fn alert_by_id(&self, id: i64) -> Result<Option<Alert>, StorageError> {
        let sql = format!("{SELECT_ALERT} WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Alert::try_from).transpose()
    }

    /// The alert raised for an event, if any.
    pub async fn alert_by_event_id(&self, event_id: i64) -> Result<Option<Alert>, StorageError> {
        let sql = format!("{SELECT_ALERT} WHERE event_id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<Db, AlertRow>(AssertSqlSafe(sql))
                .bind(event_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Alert::try_from).transpose()
    }

    /// How many alerts exist (from `alert_counts`: no scan).
    pub async fn count_alerts(&self) -> Result<i64, StorageError> {
        self.count_alerts_matching(&AlertFilter::default()).await
    }

    /// How many alerts match `filter`. A filter on the status, the severity, and the type or
    /// the sensor (not both) is answered from a counts table (a few rows); any other counts
    /// the matching rows.
    pub async fn count_alerts_matching(&self, filter: &AlertFilter) -> Result<i64, StorageError> {
        // A search alone on SQLite: the FTS index counts its matches (every alert has one
        // search document, written with it) without looking up each alert, and only those
        // created since this process last counted the same search.
        if let (Storage::Sqlite(pool, _, counts), Some(words)) = (self, filter.search_only()) {
            return search::count_search_alone(pool, counts, &fts5_query(&words.join(" "))).await;
        }
        self.count_matching(filter).await
    }

    /// The alerts matching `filter` in `ordering`, `limit` of them after skipping `offset`
    /// (a negative `limit` or `offset` counts as 0, on both engines).
    pub async fn list_alerts(
        &self,
        filter: &AlertFilter,
        ordering: AlertOrdering,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Alert>, StorageError> {
        // A search on SQLite, in id order: the FTS index holds its matches by rowid (the
        // alert id), so they drive the statement and it stops at the page's last alert,
        // instead of every match being looked up and sorted to keep one page.
        let by_id = match ordering {
            AlertOrdering::NewestFirst => Some("DESC"),
            AlertOrdering::OldestFirst => Some("ASC"),
            _ => None,
        };
        if let (Storage::Sqlite(pool, ..), Some(words), Some(direction)) = (
            self,
            filter.search.as_deref().filter(|w| !w.is_empty()),
            by_id,
        ) {
            let others = AlertFilter {
                search: None,
                ..filter.clone()
            }
            .conditions();
            let query = fts5_query(&words.join(" "));
            let rows =
                search::page_of_search(pool, &query, &others, direction, limit, offset).await?;
            return rows.into_iter().map(Alert::try_from).collect();
        }
        let rows: Vec<AlertRow> = self
            .list_matching(filter, ordering.sql(), limit, offset)
            .await?;
        rows.into_iter().map(Alert::try_from).collect()
    }
}
