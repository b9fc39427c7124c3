//! A query's filter as SQL conditions, shared by every read query.

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use witness_protocol::query::Filter;

use crate::format::schema::EVENT_TIME;

/// A `WHERE` clause and its parameters, built from a filter.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    pub(super) clauses: Vec<String>,
    pub(super) params: Vec<SqlValue>,
}

impl Conditions {
    pub(super) fn add(&mut self, clause: &str, value: impl Into<SqlValue>) {
        self.params.push(value.into());
        self.clauses
            .push(clause.replace('?', &format!("?{}", self.params.len())));
    }

    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The conditions of a filter. Times are the event's ([`EVENT_TIME`]). `since` becomes a
/// lower bound on `seq` as well, found through the time index, so that a recent window is read
/// from its start rather than by walking the whole log in `seq` order.
pub(super) fn filter_conditions(
    connection: &Connection,
    filter: &Filter,
) -> rusqlite::Result<Conditions> {
    let mut conditions = Conditions::default();
    if let Some(component) = &filter.component {
        conditions.add("component = ?", component.clone());
    }
    if let Some(event) = &filter.event {
        conditions.add("event = ?", event.clone());
    }
    if let Some(trace_id) = &filter.trace_id {
        conditions.add("trace_id = ?", trace_id.clone());
    }
    if let Some(since) = filter.since {
        // The unary `+` keeps the planner on the index the other conditions chose.
        conditions.add(&format!("+{EVENT_TIME} >= ?"), since);
        match first_seq_since(connection, since)? {
            Some(first) => conditions.add("seq >= ?", first),
            None => conditions.add("seq > ?", i64::MAX),
        }
    }
    if let Some(until) = filter.until {
        conditions.add(&format!("+{EVENT_TIME} < ?"), until);
    }
    if let Some(after) = filter.after_seq {
        conditions.add("seq > ?", clamp(after));
    }
    if let Some(to) = filter.to_seq {
        conditions.add("seq <= ?", clamp(to));
    }
    Ok(conditions)
}

/// The smallest `seq` dated at or after `since`. Times and sequence numbers agree only
/// roughly (entries from two connections pass each other in the queue, clients' clocks
/// differ, imports bring old times), so this is a minimum over the time index, not a lookup.
fn first_seq_since(connection: &Connection, since: i64) -> rusqlite::Result<Option<i64>> {
    connection
        // Without INDEXED BY, SQLite's min() shortcut walks `seq` from the start until it
        // meets a recent row: the whole log for a recent `since`.
        .prepare_cached(&format!(
            "SELECT min(seq) FROM entries INDEXED BY entries_by_time WHERE {EVENT_TIME} >= ?1"
        ))?
        .query_row([since], |row| row.get(0))
}

pub(super) fn clamp(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}
