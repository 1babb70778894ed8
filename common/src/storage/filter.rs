//! `WHERE` clauses built at run time from list filters, with every value bound as a numbered
//! parameter: column names and operators come from our code, values never enter the SQL.

/// A value to bind, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    /// `BIGINT` (ids, timestamps in microseconds, limits).
    Int(i64),
    /// `SMALLINT` (severity ranks).
    SmallInt(i16),
    /// `TEXT`.
    Text(String),
    /// `BOOLEAN`.
    Bool(bool),
}

/// SQL fragments joined by `separator`, with the parameters their `$N` placeholders number.
#[derive(Debug)]
pub(super) struct Clauses {
    separator: &'static str,
    parts: Vec<String>,
    params: Vec<Param>,
}

impl Clauses {
    /// Conditions for a `WHERE`, joined by `AND`.
    pub(super) fn conditions() -> Clauses {
        Clauses {
            separator: " AND ",
            parts: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Assignments for an `UPDATE … SET`, joined by commas.
    pub(super) fn assignments() -> Clauses {
        Clauses {
            separator: ", ",
            parts: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Binds `value` and returns its placeholder (`$3`), for parts of the statement built
    /// outside the clauses (`LIMIT`, `OFFSET`, `WHERE id = …`).
    pub(super) fn bind(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// Adds `column op $N` with `value` bound to the new placeholder.
    pub(super) fn push(&mut self, column: &'static str, op: &'static str, value: Param) {
        let placeholder = self.bind(value);
        self.parts.push(format!("{column} {op} {placeholder}"));
    }

    /// Adds `column op $N` when `value` is given.
    pub(super) fn push_some<T>(
        &mut self,
        column: &'static str,
        op: &'static str,
        value: Option<T>,
        to_param: impl FnOnce(T) -> Param,
    ) {
        if let Some(value) = value {
            self.push(column, op, to_param(value));
        }
    }

    /// The parts joined, prefixed by `keyword` and a space (`" WHERE a = $1 AND b = $2"`);
    /// empty when there are none.
    pub(super) fn sql(&self, keyword: &str) -> String {
        if self.parts.is_empty() {
            String::new()
        } else {
            format!(" {keyword} {}", self.parts.join(self.separator))
        }
    }

    /// The values to bind, in placeholder order.
    pub(super) fn params(&self) -> &[Param] {
        &self.params
    }
}

/// Binds every [`Param`] of a slice to a `sqlx` query, in order. A macro rather than a
/// function so that, inside [`on_pool!`](super::on_pool), it compiles against each backend.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                $crate::storage::filter::Param::Int(v) => query.bind(*v),
                $crate::storage::filter::Param::SmallInt(v) => query.bind(*v),
                $crate::storage::filter::Param::Text(v) => query.bind(v.as_str()),
                $crate::storage::filter::Param::Bool(v) => query.bind(*v),
            };
        }
        query
    }};
}
pub(super) use bind_params;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_their_placeholders_in_order() {
        let mut clauses = Clauses::conditions();
        assert_eq!(clauses.sql("WHERE"), "");
        clauses.push_some("severity", "=", Some(3), Param::SmallInt);
        clauses.push_some("source_name", "=", None::<String>, Param::Text);
        clauses.push("created_at", ">=", Param::Int(10));
        let limit = clauses.bind(Param::Int(5));
        assert_eq!(
            clauses.sql("WHERE"),
            " WHERE severity = $1 AND created_at >= $2"
        );
        assert_eq!(limit, "$3");
        assert_eq!(
            clauses.params(),
            [Param::SmallInt(3), Param::Int(10), Param::Int(5)]
        );
    }

    #[test]
    fn assignments_are_joined_by_commas() {
        let mut clauses = Clauses::assignments();
        clauses.push("email", "=", Param::Text("a@b".into()));
        clauses.push("is_active", "=", Param::Bool(false));
        assert_eq!(clauses.sql("SET"), " SET email = $1, is_active = $2");
    }
}
