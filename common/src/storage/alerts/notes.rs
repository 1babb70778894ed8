//! Notes on alerts: written by admins, read by everyone, each also a row of the history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::domain::{from_micros, to_micros};
use crate::storage::{Storage, StorageError, in_write_transaction, on_pool};

/// Longest note, in characters.
pub const MAX_NOTE_TEXT_CHARS: usize = 10_000;

/// A note on an alert.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Note {
    /// Database id.
    pub id: i64,
    /// The alert it is on.
    pub alert_id: i64,
    /// The user who wrote it.
    pub author: i64,
    /// What it says (1–10,000 characters).
    pub text: String,
    /// When it was written (UTC).
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct NoteRow {
    id: i64,
    alert_id: i64,
    author: i64,
    text: String,
    created_at: i64,
}

impl From<NoteRow> for Note {
    fn from(row: NoteRow) -> Self {
        Note {
            id: row.id,
            alert_id: row.alert_id,
            author: row.author,
            text: row.text,
            created_at: from_micros(row.created_at),
        }
    }
}

const NOTE_COLUMNS: &str = "id, alert_id, author, text, created_at";

impl Storage {
    /// Adds a note to an alert and records it in the alert's history, in one transaction;
    /// `None` when there is no such alert. A note changes neither the alert nor its version,
    /// and is not announced on `alerts.updated.*`.
    pub async fn add_note(
        &self,
        alert_id: i64,
        author: i64,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Note>, StorageError> {
        self.retrying_while_busy(|| self.add_note_once(alert_id, author, text, now))
            .await
    }

    async fn add_note_once(
        &self,
        alert_id: i64,
        author: i64,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Note>, StorageError> {
        let now = to_micros(now);
        let insert_sql = format!(
            "INSERT INTO alert_notes (alert_id, author, text, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {NOTE_COLUMNS}"
        );
        in_write_transaction!(self, |tx| {
            // Locks the alert, so that the history row records its status as committed.
            let status = sqlx::query_as::<Db, (String,)>(
                "UPDATE alerts SET updated_at = updated_at WHERE id = $1 RETURNING status",
            )
            .bind(alert_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((status,)) = status else {
                return Ok(None);
            };
            let note = sqlx::query_as::<Db, NoteRow>(AssertSqlSafe(insert_sql))
                .bind(alert_id)
                .bind(author)
                .bind(text)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query::<Db>(
                "INSERT INTO alert_status_changes (alert_id, from_status, to_status, changed_by, \
                 note, changed_at, note_id) VALUES ($1, $2, $2, $3, $4, $5, $6)",
            )
            .bind(alert_id)
            .bind(status.as_str())
            .bind(author)
            .bind(text)
            .bind(now)
            .bind(note.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(Note::from(note)))
        })
    }

    /// An alert's notes, oldest first.
    pub async fn notes(&self, alert_id: i64) -> Result<Vec<Note>, StorageError> {
        let sql = format!("SELECT {NOTE_COLUMNS} FROM alert_notes WHERE alert_id = $1 ORDER BY id");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<Db, NoteRow>(AssertSqlSafe(sql))
                .bind(alert_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Note::from).collect())
    }
}
