//! Pages and exports that select by event type, read from the by-type
//! tables (`events_by_type`, `events_by_type_time`; schema migration 11).
//!
//! The tables trail the events (`sqlite/deferred.rs`), so every query here
//! has two arms: the table, which covers the events up to the mark, and
//! the events past the mark, read from `events` itself by seq (at most a
//! few hundred, the newest; `NOT INDEXED`, so the planner never walks a
//! time window in `events_timestamp` instead). Both arms read one
//! snapshot, since they are one statement, and a compound `ORDER BY ...
//! LIMIT` merges them, each arm in its own order, so a page stops after
//! its rows.

use rusqlite::types::Value as SqlValue;

use super::schema::indexed_upto_sql;
use super::Conditions;
use crate::store::EventFilter;

/// The mark: events after it are stored, not yet in the by-type tables.
const MARK: &str = indexed_upto_sql!();

/// Whether a page or an export with this filter takes its seqs from the
/// by-type tables: it names types and no request id (whose index, on
/// `events`, is the more selective).
pub fn applies(filter: &EventFilter) -> bool {
    !filter.event_types.is_empty() && filter.request_id.is_none()
}

/// Which way seqs are walked, and where the walk starts.
#[derive(Debug, Clone, Copy)]
pub enum Walk {
    /// Newest first, below a cursor if any (a query page).
    Down { below: Option<i64> },
    /// Oldest first, above `after` and up to `head` (an export chunk).
    Up { after: i64, head: i64 },
}

/// SQL text with its `?` values, in order.
#[derive(Debug, Default)]
struct Sql {
    text: String,
    params: Vec<SqlValue>,
}

impl Sql {
    fn push(&mut self, text: &str, params: &[SqlValue]) -> &mut Self {
        self.text.push_str(text);
        self.params.extend_from_slice(params);
        self
    }
}

/// The filter without its types: conditions on the `events` columns.
fn other_conditions(filter: &EventFilter) -> Conditions {
    Conditions::from_filter(&EventFilter {
        event_types: Vec::new(),
        ..filter.clone()
    })
}

/// The seqs of at most `fetch` matching events, in the walk's order.
pub fn seqs_sql(filter: &EventFilter, walk: Walk, fetch: usize) -> (String, Vec<SqlValue>) {
    let fetch = SqlValue::Integer(fetch as i64);
    let windowed = filter.start_time.is_some() || filter.end_time.is_some();
    if let Walk::Down { below: None } = walk {
        if filter.event_types.len() == 1
            && windowed
            && filter.min_level.is_none()
            && filter.policy_name.is_none()
        {
            return type_in_window(filter, fetch);
        }
    }
    let (types_k, type_values) = Conditions::types_in("k.event_type", &filter.event_types);
    let (types_e, _) = Conditions::types_in("event_type", &filter.event_types);
    let others = other_conditions(filter);
    // Each arm's seq bounds. The events past the mark are walked from the
    // mark: one lower bound, `max`ed, so the walk never starts at an
    // export's older `after` and reads the whole table up to the mark.
    let (keys_bound, tail_bound, bound_values, order) = match walk {
        Walk::Down { below: None } => ("", format!("seq > {MARK}"), Vec::new(), "DESC"),
        Walk::Down { below: Some(b) } => (
            " AND k.seq < ?",
            format!("seq > {MARK} AND seq < ?"),
            vec![b.into()],
            "DESC",
        ),
        Walk::Up { after, head } => (
            " AND k.seq > ? AND k.seq <= ?",
            format!("seq > max({MARK}, ?) AND seq <= ?"),
            vec![after.into(), head.into()],
            "ASC",
        ),
    };
    let others_sql: String = others
        .fragments
        .iter()
        .map(|f| format!(" AND {f}"))
        .collect();
    let mut sql = Sql::default();
    // The table arm: the type's keys in seq order, each matched against
    // its event only when the filter asks more than the type.
    if others.fragments.is_empty() {
        sql.push("SELECT k.seq FROM events_by_type AS k WHERE ", &[]);
    } else {
        sql.push(
            "SELECT k.seq FROM events_by_type AS k CROSS JOIN events AS e ON e.seq = k.seq WHERE ",
            &[],
        );
    }
    sql.push(&types_k, &type_values)
        .push(&others_sql, &others.params)
        .push(keys_bound, &bound_values);
    sql.push(" UNION ALL SELECT seq FROM events NOT INDEXED WHERE ", &[])
        .push(&tail_bound, &bound_values)
        .push(" AND ", &[])
        .push(&types_e, &type_values)
        .push(&others_sql, &others.params)
        .push(&format!(" ORDER BY 1 {order} LIMIT ?"), &[fetch]);
    (sql.text, sql.params)
}

/// The newest page of one type in a time window, the common audit
/// question: the window is walked in `events_by_type_time`. As in
/// `page_sql` (`sqlite.rs`), the window's newest `fetch` keys by time give
/// a seq `m` at or above which at least `fetch` of its keys lie, and only
/// keys at or above `m` are sorted by seq. The events past the mark need
/// no threshold: there are few of them, and each has a higher seq than
/// any key, so the page is the newest `fetch` of both arms either way.
fn type_in_window(filter: &EventFilter, fetch: SqlValue) -> (String, Vec<SqlValue>) {
    let (types, type_values) = Conditions::types_in("event_type", &filter.event_types);
    let window = other_conditions(filter);
    let mut conditions = types;
    for f in &window.fragments {
        conditions.push_str(" AND ");
        conditions.push_str(f);
    }
    let mut values = type_values;
    values.extend(window.params);
    let keys =
        |columns: &str| format!("SELECT {columns} FROM events_by_type_time WHERE {conditions}");
    let mut sql = Sql::default();
    sql.push(&keys("seq"), &values)
        .push(" AND +seq >= (SELECT MIN(seq) FROM (", &[])
        .push(&keys("seq"), &values)
        .push(
            " ORDER BY timestamp DESC LIMIT ?))",
            std::slice::from_ref(&fetch),
        )
        .push(
            " UNION ALL SELECT seq FROM events NOT INDEXED WHERE seq > ",
            &[],
        )
        .push(MARK, &[])
        .push(" AND ", &[])
        .push(&conditions, &values)
        .push(" ORDER BY 1 DESC LIMIT ?", &[fetch]);
    (sql.text, sql.params)
}

/// Events by type: the table's counts and those of the events past the
/// mark, in one statement (one snapshot).
pub const COUNTS_SQL: &str = concat!(
    "SELECT event_type, SUM(n) FROM ( \
     SELECT event_type, COUNT(*) AS n FROM events_by_type GROUP BY event_type \
     UNION ALL SELECT event_type, COUNT(*) FROM events NOT INDEXED WHERE seq > ",
    indexed_upto_sql!(),
    " GROUP BY event_type) GROUP BY event_type"
);

/// The seqs of the stored compliance violations, for the stats.
pub const VIOLATION_SEQS_SQL: &str = concat!(
    "SELECT seq FROM events_by_type WHERE event_type = 'COMPLIANCE_VIOLATION' \
     UNION ALL SELECT seq FROM events NOT INDEXED WHERE seq > ",
    indexed_upto_sql!(),
    " AND event_type = 'COMPLIANCE_VIOLATION'"
);

#[cfg(test)]
mod tests;
