//! Statements built at run time, on sqlx's [`QueryBuilder`], which writes each backend's own
//! placeholders (`?` on SQLite, `$1, $2, …` on Postgres) as values are bound. Column names
//! and operators come from our code; values only ever reach the database as bound parameters.
//!
//! SQLite gets anonymous `?` placeholders this way, which matters for the pipeline's
//! multi-row statements: sqlx looks every numbered parameter up by name, which SQLite answers
//! by scanning the statement's parameter list (quadratic: a quarter of the ingestor's
//! database time with 4,000 parameters).

use sqlx::{Database, Encode, QueryBuilder, Type};

/// A value to bind, of a type both backends store.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// `BIGINT` (ids, timestamps in microseconds, counts).
    Int(i64),
    /// `SMALLINT` (severity ranks, count shards).
    SmallInt(i16),
    /// `TEXT`.
    Text(String),
    /// `BOOLEAN`.
    Bool(bool),
    /// `NULL`, written as such (for `IS NULL`), never bound.
    Null,
    /// A list, `(…, …)`, each item bound (for `IN`).
    List(Vec<Value>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<i16> for Value {
    fn from(value: i16) -> Self {
        Value::SmallInt(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

/// A backend that can bind every [`Value`]: both of ours. Lets one function build a
/// statement for either backend; it runs where the backend is known (inside `on_pool!`).
pub(super) trait BindValue: Database {
    /// Appends a placeholder for `value` and binds it.
    fn push_value(query: &mut QueryBuilder<Self>, value: Value);
}

impl<DB: Database> BindValue for DB
where
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    i16: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'q> Encode<'q, DB> + Type<DB>,
{
    fn push_value(query: &mut QueryBuilder<Self>, value: Value) {
        match value {
            Value::Int(v) => query.push_bind(v),
            Value::SmallInt(v) => query.push_bind(v),
            Value::Text(v) => query.push_bind(v),
            Value::Bool(v) => query.push_bind(v),
            Value::Null => query.push("NULL"),
            Value::List(items) => {
                push_tuple(query, items);
                query
            }
        };
    }
}

/// One condition of a filter: `column op value`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Condition {
    column: &'static str,
    op: &'static str,
    value: Value,
}

/// `column op value` when `value` is given.
pub(super) fn condition<T: Into<Value>>(
    column: &'static str,
    op: &'static str,
    value: Option<T>,
) -> Option<Condition> {
    value.map(|value| Condition {
        column,
        op,
        value: value.into(),
    })
}

/// `column = value` for one value, `column IN (…)` for several, nothing for none.
pub(super) fn any_of<T: Clone + Into<Value>>(
    column: &'static str,
    values: &[T],
) -> Option<Condition> {
    match values {
        [] => None,
        [one] => condition(column, "=", Some(one.clone())),
        many => condition(
            column,
            "IN",
            Some(Value::List(many.iter().cloned().map(Into::into).collect())),
        ),
    }
}

/// The operator of [`full_text`] conditions; written per backend by [`push_where`].
const FULL_TEXT: &str = "MATCHES";

/// An alert's search document holds every one of `words` (letters and digits only, so
/// nothing in them is query syntax): SQLite's FTS5 table `alert_search` (`MATCH`, each word
/// quoted), PostgreSQL's `alerts.search` (`@@ plainto_tsquery('simple', …)`); see migration
/// 0008.
pub(super) fn full_text(words: &[String]) -> Condition {
    Condition {
        column: "search",
        op: FULL_TEXT,
        value: Value::Text(words.join(" ")),
    }
}

/// An FTS5 query holding every one of `words` (space-separated, letters and digits only):
/// each quoted, so that none is an operator.
pub(super) fn fts5_query(words: &str) -> String {
    words
        .split(' ')
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `condition` is a [`full_text`] one.
pub(super) fn is_full_text(condition: &Condition) -> bool {
    condition.op == FULL_TEXT
}

/// Appends ` AND +alerts.a = … AND +alerts.b = …` for conditions on `alerts` (not a
/// [`full_text`] one, which is skipped): SQLite's unary `+` keeps the planner from driving
/// the statement from those columns' indexes, so that a search's matches drive it instead
/// (see `Storage::list_alerts`).
pub(super) fn push_and_unindexed_alerts<DB: BindValue>(
    query: &mut QueryBuilder<DB>,
    conditions: &[Condition],
) {
    for condition in conditions.iter().filter(|c| !is_full_text(c)) {
        query.push(format_args!(
            " AND +alerts.{} {} ",
            condition.column, condition.op
        ));
        DB::push_value(query, condition.value.clone());
    }
}

/// Appends ` WHERE a = … AND b = …`; nothing when there are no conditions.
pub(super) fn push_where<DB: BindValue>(query: &mut QueryBuilder<DB>, conditions: &[Condition]) {
    for (i, condition) in conditions.iter().enumerate() {
        query.push(if i == 0 { " WHERE " } else { " AND " });
        if condition.op == FULL_TEXT {
            let Value::Text(words) = &condition.value else {
                continue;
            };
            if DB::NAME == "SQLite" {
                query.push("id IN (SELECT rowid FROM alert_search WHERE alert_search MATCH ");
                DB::push_value(query, Value::Text(fts5_query(words)));
            } else {
                query.push("search @@ plainto_tsquery('simple', ");
                DB::push_value(query, Value::Text(words.clone()));
            }
            query.push(")");
            continue;
        }
        query.push(format_args!("{} {} ", condition.column, condition.op));
        DB::push_value(query, condition.value.clone());
    }
}

/// Appends ` SET a = …, b = …` for the `(column, value)` pairs (at least one).
pub(super) fn push_assignments<DB: BindValue>(
    query: &mut QueryBuilder<DB>,
    assignments: Vec<(&'static str, Value)>,
) {
    for (i, (column, value)) in assignments.into_iter().enumerate() {
        query.push(if i == 0 { " SET " } else { ", " });
        query.push(format_args!("{column} = "));
        DB::push_value(query, value);
    }
}

/// Appends `(…, …)`: a placeholder for each value, bound in order (one row of a multi-row
/// `VALUES`, or the list of an `IN`).
pub(super) fn push_tuple<DB: BindValue>(
    query: &mut QueryBuilder<DB>,
    values: impl IntoIterator<Item = Value>,
) {
    query.push("(");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        DB::push_value(query, value);
    }
    query.push(")");
}

/// `prefix (…)` once per run of `values` in the statement sizes of
/// [`fixed_shape_chunks`](super::fixed_shape_chunks), a placeholder per value: the `IN` lists of
/// look-ups by many keys, in few statement texts that stay prepared.
pub(super) fn in_list_chunks<DB: BindValue, T: Clone + Into<Value>>(
    prefix: &str,
    values: &[T],
) -> Vec<QueryBuilder<DB>> {
    super::fixed_shape_chunks(values)
        .map(|chunk| {
            let mut query = QueryBuilder::new(prefix);
            push_tuple(&mut query, chunk.iter().cloned().map(Into::into));
            query
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, Sqlite};

    use super::*;

    fn filter() -> Vec<Condition> {
        [
            condition("severity", "=", Some(3i16)),
            condition("source_name", "=", None::<String>),
            condition("created_at", ">=", Some(10i64)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    #[test]
    fn conditions_get_each_backends_placeholders_and_skip_what_is_not_given() {
        let mut sqlite = QueryBuilder::<Sqlite>::new("SELECT 1 FROM t");
        push_where(&mut sqlite, &filter());
        assert_eq!(
            sqlite.sql().as_str(),
            "SELECT 1 FROM t WHERE severity = ? AND created_at >= ?"
        );
        let mut postgres = QueryBuilder::<Postgres>::new("SELECT 1 FROM t");
        push_where(&mut postgres, &filter());
        postgres.push(" LIMIT ").push_bind(5i64);
        assert_eq!(
            postgres.sql().as_str(),
            "SELECT 1 FROM t WHERE severity = $1 AND created_at >= $2 LIMIT $3"
        );
    }

    #[test]
    fn in_lists_come_in_fixed_sizes() {
        let ids: Vec<i64> = (0..5).collect();
        let queries = in_list_chunks::<Sqlite, _>("SELECT 1 FROM t WHERE id IN ", &ids);
        let texts: Vec<String> = queries
            .iter()
            .map(|q| q.sql().as_str().to_owned())
            .collect();
        assert_eq!(
            texts,
            [
                "SELECT 1 FROM t WHERE id IN (?, ?, ?, ?)",
                "SELECT 1 FROM t WHERE id IN (?)"
            ]
        );
    }

    #[test]
    fn no_conditions_add_no_where() {
        let mut query = QueryBuilder::<Postgres>::new("SELECT 1 FROM t");
        push_where(&mut query, &[]);
        assert_eq!(query.sql().as_str(), "SELECT 1 FROM t");
    }

    #[test]
    fn assignments_and_tuples_are_joined_by_commas() {
        let mut query = QueryBuilder::<Postgres>::new("UPDATE users");
        push_assignments(
            &mut query,
            vec![("email", "a@b".into()), ("is_active", false.into())],
        );
        query.push(" WHERE id IN ");
        push_tuple(&mut query, [Value::Int(1), Value::Int(2)]);
        assert_eq!(
            query.sql().as_str(),
            "UPDATE users SET email = $1, is_active = $2 WHERE id IN ($3, $4)"
        );
    }
}
