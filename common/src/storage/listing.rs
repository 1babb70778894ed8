//! What the event and alert lists share: a filter of one table, read a page at a time in a
//! given order, and counted from a counts table whenever one can answer (a few rows instead
//! of a scan).

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::sql::{Condition, any_of, condition, push_where};
use super::{Storage, StorageError, on_pool};
use crate::domain::{Severity, to_micros};

/// A filter of one listed table.
pub(super) trait ListFilter {
    /// `SELECT <the row's columns> FROM <table>`.
    const SELECT: &'static str;
    /// The table counted when no counts table can answer.
    const TABLE: &'static str;

    /// The filter as conditions, every one of which a row must meet.
    fn conditions(&self) -> Vec<Condition>;

    /// The counts table that can answer a count of this filter, if any.
    fn count_table(&self) -> Option<&'static str>;
}

/// The counts tables of one listed table (see migration 0007): by its own key columns, and
/// the same again per event type and per sensor.
pub(super) struct CountTables {
    pub(super) all: &'static str,
    pub(super) by_type: &'static str,
    pub(super) by_source: &'static str,
}

impl CountTables {
    /// The table that answers a count filtered by the key columns and, optionally, the type
    /// or the sensor (not both); none when the filter names both, or a time (counts are not
    /// kept per time).
    pub(super) fn answering(
        &self,
        by_type: bool,
        by_source: bool,
        by_time: bool,
    ) -> Option<&'static str> {
        match (by_type, by_source, by_time) {
            (_, _, true) | (true, true, _) => None,
            (false, false, false) => Some(self.all),
            (true, false, false) => Some(self.by_type),
            (false, true, false) => Some(self.by_source),
        }
    }
}

/// The conditions both lists take, in the order of their indexes' columns: severity, sensor,
/// type (each any of the values given), and an inclusive range of stored times.
pub(super) fn shared_conditions(
    severity: &[Severity],
    source_name: &[String],
    event_type: &[String],
    created_from: Option<DateTime<Utc>>,
    created_to: Option<DateTime<Utc>>,
) -> impl Iterator<Item = Condition> {
    let ranks: Vec<i16> = severity.iter().map(|s| s.rank()).collect();
    [
        any_of("severity", &ranks),
        any_of("source_name", source_name),
        any_of("event_type", event_type),
        condition("created_at", ">=", created_from.map(to_micros)),
        condition("created_at", "<=", created_to.map(to_micros)),
    ]
    .into_iter()
    .flatten()
}

impl Storage {
    /// How many rows match `filter`: from its counts table when one answers, else by
    /// counting the rows.
    pub(super) async fn count_matching<F: ListFilter>(
        &self,
        filter: &F,
    ) -> Result<i64, StorageError> {
        let select = match filter.count_table() {
            // SUM(BIGINT) is NUMERIC on Postgres: cast back to BIGINT.
            Some(table) => format!("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM {table}"),
            None => format!("SELECT COUNT(*) FROM {}", F::TABLE),
        };
        let conditions = filter.conditions();
        let count = on_pool!(self, |pool| {
            let mut query = QueryBuilder::<Db>::new(select);
            push_where(&mut query, &conditions);
            query.build_query_scalar::<i64>().fetch_one(pool).await?
        });
        Ok(count)
    }

    /// The rows matching `filter`, in the order of `order_by` (`ORDER BY …`), `limit` of
    /// them after skipping `offset` (a negative `limit` or `offset` counts as 0, on both
    /// engines).
    pub(super) async fn list_matching<F, R>(
        &self,
        filter: &F,
        order_by: &'static str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<R>, StorageError>
    where
        F: ListFilter,
        R: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let conditions = filter.conditions();
        let rows = on_pool!(self, |pool| {
            let mut query = QueryBuilder::<Db>::new(F::SELECT);
            push_where(&mut query, &conditions);
            query.push(format_args!(" {order_by} LIMIT "));
            query.push_bind(limit.max(0));
            query.push(" OFFSET ");
            query.push_bind(offset.max(0));
            query.build_query_as::<R>().fetch_all(pool).await?
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: CountTables = CountTables {
        all: "c",
        by_type: "c_by_type",
        by_source: "c_by_source",
    };

    #[test]
    fn a_count_is_answered_by_the_counts_table_of_its_filter_or_by_none() {
        assert_eq!(TABLES.answering(false, false, false), Some("c"));
        assert_eq!(TABLES.answering(true, false, false), Some("c_by_type"));
        assert_eq!(TABLES.answering(false, true, false), Some("c_by_source"));
        assert_eq!(TABLES.answering(true, true, false), None);
        assert_eq!(TABLES.answering(false, false, true), None);
    }
}
