//! Searches (`q=`) on SQLite that the search index answers without looking up each match:
//! a search alone is counted from what this process counted before plus the alerts created
//! since, and a search with other filters is driven by its matches in id order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::{AlertRow, SELECT_ALERT};
use crate::storage::StorageError;
use crate::storage::sql::{Condition, push_and_unindexed_alerts};

/// How many searches' counts a process keeps; past that it forgets them all (each distinct
/// `q=` adds one, so the bound is what stops a client from growing the map without end).
const SEARCH_COUNTS_KEPT: usize = 1024;

/// The counts of the searches alone (`q=` and no other filter) this process has made, each
/// as of an alert id, so that counting one again reads only the index entries of the alerts
/// created since (a common word's full count decodes every one of its matches: about 1 ms
/// for 28,000).
///
/// Exact, because on SQLite:
/// - alert ids are taken in commit order (one writer at a time, `AUTOINCREMENT`), so a
///   reader that sees the alert with the largest id sees every alert with a smaller one;
/// - an alert and its search document (sensor, type and first description, which never
///   change) are written in one transaction;
/// - alerts are never deleted. A purge of alerts must empty this (none exists).
///
/// PostgreSQL takes ids from a sequence ahead of commit, so a smaller id can appear later:
/// nothing is kept there.
#[derive(Debug, Clone, Default)]
pub struct SearchCounts(Arc<Mutex<HashMap<String, KnownCount>>>);

/// A search's count among the alerts with ids up to `up_to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KnownCount {
    up_to: i64,
    count: i64,
}

impl SearchCounts {
    fn known(&self, query: &str) -> Option<KnownCount> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(query).copied()
    }

    /// Keeps `known` unless a later count of the same search is kept already.
    fn remember(&self, query: &str, known: KnownCount) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= SEARCH_COUNTS_KEPT && !map.contains_key(query) {
            map.clear();
        }
        let kept = map.entry(query.to_owned()).or_default();
        if known.up_to >= kept.up_to {
            *kept = known;
        }
    }
}

/// How many alerts hold every word of the FTS5 query `query` (see `sql::fts5_query`).
pub(super) async fn count_search_alone(
    pool: &SqlitePool,
    counts: &SearchCounts,
    query: &str,
) -> Result<i64, StorageError> {
    let known = counts.known(query).unwrap_or_default();
    // One statement, so the largest id and the matches above the known ones are read in
    // one snapshot. The index is not read at all when no alert is new, and read newest
    // first when some are: FTS5 then stops at the known id, where an ascending read walks
    // the word's matches from the oldest (0.5 ms against 0.1 ms for a common word).
    let (more, up_to): (i64, i64) = sqlx::query_as(
        "SELECT CASE WHEN newest.id > $2 THEN (SELECT COUNT(*) FROM (SELECT rowid \
                 FROM alert_search WHERE alert_search MATCH $1 AND rowid > $2 \
                 AND rowid <= newest.id ORDER BY rowid DESC)) ELSE 0 END, newest.id \
         FROM (SELECT COALESCE(MAX(id), 0) AS id FROM alerts) AS newest",
    )
    .bind(query)
    .bind(known.up_to)
    .fetch_one(pool)
    .await?;
    let count = if up_to >= known.up_to {
        known.count + more
    } else {
        // Fewer alerts than when it was counted: another database behind the same path (a
        // restored copy). Count afresh.
        sqlx::query_scalar("SELECT COUNT(*) FROM alert_search WHERE alert_search MATCH $1")
            .bind(query)
            .fetch_one(pool)
            .await?
    };
    counts.remember(query, KnownCount { up_to, count });
    Ok(count)
}

/// One page of the alerts holding every word of `query` in id order (`direction` `ASC` or
/// `DESC`). `others`, the filter's other conditions, are checked on each match in that order
/// and never drive the statement: otherwise SQLite walks a broad filter's index (`status =
/// 'OPEN'`: every alert) and probes the search's matches for each row, where this stops at
/// the page's last alert.
pub(super) async fn page_of_search(
    pool: &SqlitePool,
    query: &str,
    others: &[Condition],
    direction: &'static str,
    limit: i64,
    offset: i64,
) -> Result<Vec<AlertRow>, StorageError> {
    let sql = if others.is_empty() {
        format!(
            "{SELECT_ALERT} WHERE id IN (SELECT rowid FROM alert_search \
             WHERE alert_search MATCH "
        )
    } else {
        format!(
            "{SELECT_ALERT} WHERE id IN (SELECT alert_search.rowid FROM alert_search \
             JOIN alerts ON alerts.id = alert_search.rowid WHERE alert_search MATCH "
        )
    };
    let mut statement = QueryBuilder::<Sqlite>::new(sql);
    statement.push_bind(query.to_owned());
    push_and_unindexed_alerts(&mut statement, others);
    statement.push(format_args!(
        " ORDER BY alert_search.rowid {direction} LIMIT "
    ));
    statement.push_bind(limit.max(0));
    statement.push(" OFFSET ");
    statement.push_bind(offset.max(0));
    statement.push(format_args!(") ORDER BY id {direction}"));
    let rows = statement
        .build_query_as::<AlertRow>()
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_count_is_kept_over_an_earlier_one_and_the_map_is_bounded() {
        let counts = SearchCounts::default();
        counts.remember(
            "\"a\"",
            KnownCount {
                up_to: 10,
                count: 3,
            },
        );
        counts.remember("\"a\"", KnownCount { up_to: 5, count: 1 });
        assert_eq!(
            counts.known("\"a\""),
            Some(KnownCount {
                up_to: 10,
                count: 3
            })
        );
        for i in 0..SEARCH_COUNTS_KEPT * 2 {
            counts.remember(&format!("\"w{i}\""), KnownCount::default());
        }
        let kept = counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(kept <= SEARCH_COUNTS_KEPT, "{kept}");
    }
}
