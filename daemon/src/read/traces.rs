//! One trace with its summary, and pages of traces newest first.

use std::collections::HashSet;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use witness_protocol::query::{
    Filter, TraceQuery, TraceReport, TraceSummary, TracesPage, TracesQuery,
};

use super::entries::entries_page;
use super::filter::{clamp, filter_conditions};
use crate::format::schema::EVENT_TIME;
use witness_protocol::ErrorReply;
use witness_protocol::limits::{MAX_COMPONENT_LEN, MAX_TRACE_ID_LEN};

use super::validation::{bad, check_limit, check_text, check_window};

/// A trace's summary and a page of its entries.
pub fn trace(connection: &Connection, query: &TraceQuery) -> rusqlite::Result<TraceReport> {
    let Some(summary) = trace_summary(connection, &query.trace_id)? else {
        return Ok(TraceReport {
            summary: None,
            entries: Vec::new(),
            next_after: None,
        });
    };
    let filter = Filter {
        trace_id: Some(query.trace_id.clone()),
        after_seq: query.after_seq,
        ..Filter::default()
    };
    let (entries, _) = entries_page(connection, &filter, query.limit)?;
    let next_after = entries
        .last()
        .map(|last| last.seq)
        .filter(|&last| last < summary.last_seq);
    Ok(TraceReport {
        summary: Some(summary),
        entries,
        next_after,
    })
}

/// Sums up one trace through its index.
pub fn trace_summary(
    connection: &Connection,
    trace_id: &str,
) -> rusqlite::Result<Option<TraceSummary>> {
    let sums = connection
        .prepare_cached(&format!(
            "SELECT count(*), min(seq), max(seq), min({EVENT_TIME}), max({EVENT_TIME}), \
             ssum(tokens_in), ssum(tokens_out), ssum(cost_micro_usd), \
             ssum(tokens_in IS NOT NULL AND cost_micro_usd IS NULL) \
             FROM entries WHERE trace_id = ?1"
        ))?
        .query_row([trace_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Option<i64>>(1)?,
                row.get::<_, Option<i64>>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, i64>(7)?,
                row.get::<_, i64>(8)?,
            ))
        })?;
    let (
        count,
        Some(first_seq),
        Some(last_seq),
        Some(first_ts),
        Some(last_ts),
        tin,
        tout,
        usd,
        unpriced,
    ) = sums
    else {
        return Ok(None);
    };
    let components = connection
        .prepare_cached(
            "SELECT DISTINCT component FROM entries WHERE trace_id = ?1 ORDER BY component",
        )?
        .query_map([trace_id], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(TraceSummary {
        trace_id: trace_id.to_owned(),
        entries: count as u64,
        first_seq: first_seq as u64,
        last_seq: last_seq as u64,
        first_ts,
        last_ts,
        components,
        tokens_in: tin as u64,
        tokens_out: tout as u64,
        micro_usd: usd as u64,
        unpriced: unpriced as u64,
    }))
}

/// Traces by their last entry that matches the query (with no component, their last entry),
/// newest first. Walks matching entries backwards from the cursor, taking each trace the first
/// time it is met, which is at its last matching entry below the cursor; a trace with a
/// matching entry at or above the cursor was on an earlier page and is skipped. A page's
/// `next_before` is the last matching entry of its last trace, so paging is by the same key
/// as the order, and every trace appears on exactly one page.
pub fn traces(connection: &Connection, query: &TracesQuery) -> rusqlite::Result<TracesPage> {
    let filter = Filter {
        component: query.component.clone(),
        since: query.since,
        until: query.until,
        ..Filter::default()
    };
    let mut conditions = filter_conditions(connection, &filter)?;
    conditions.clauses.push("trace_id IS NOT NULL".into());
    if let Some(before) = query.before_seq {
        conditions.add("seq < ?", clamp(before));
    }
    let sql = format!(
        "SELECT trace_id, seq FROM entries {} ORDER BY seq DESC",
        conditions.sql()
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(params_from_iter(conditions.params.iter()))?;
    let mut seen = HashSet::new();
    let mut traces = Vec::new();
    let mut cursor = None;
    let limit = query.limit.max(1) as usize;
    while let Some(row) = rows.next()? {
        let trace_id: String = row.get(0)?;
        if !seen.insert(trace_id.clone()) {
            continue;
        }
        if let Some(before) = query.before_seq
            && matches_from(connection, &trace_id, &filter, before)?
        {
            continue;
        }
        let Some(summary) = trace_summary(connection, &trace_id)? else {
            continue;
        };
        traces.push(summary);
        cursor = Some(row.get::<_, i64>(1)? as u64);
        if traces.len() == limit {
            break;
        }
    }
    let next_before = (traces.len() == limit).then_some(cursor).flatten();
    Ok(TracesPage {
        traces,
        next_before,
    })
}

/// Whether a trace has an entry matching `filter` at or after `seq`.
fn matches_from(
    connection: &Connection,
    trace_id: &str,
    filter: &Filter,
    seq: u64,
) -> rusqlite::Result<bool> {
    let mut sql = String::from("SELECT 1 FROM entries WHERE trace_id = ?1 AND seq >= ?2");
    let mut params: Vec<SqlValue> = vec![trace_id.to_owned().into(), clamp(seq).into()];
    if let Some(component) = &filter.component {
        params.push(component.clone().into());
        sql += &format!(" AND component = ?{}", params.len());
    }
    if let Some(since) = filter.since {
        params.push(since.into());
        sql += &format!(" AND {EVENT_TIME} >= ?{}", params.len());
    }
    if let Some(until) = filter.until {
        params.push(until.into());
        sql += &format!(" AND {EVENT_TIME} < ?{}", params.len());
    }
    sql += " LIMIT 1";
    connection
        .prepare_cached(&sql)?
        .query_row(params_from_iter(params.iter()), |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Checks a request for one trace.
pub fn check_trace(query: &TraceQuery) -> Result<(), ErrorReply> {
    if query.trace_id.is_empty() {
        return Err(bad("trace id is empty".into()));
    }
    check_text("trace id", Some(&query.trace_id), MAX_TRACE_ID_LEN)?;
    check_limit(query.limit)
}

/// Checks a request for the list of traces.
pub fn check_traces(query: &TracesQuery) -> Result<(), ErrorReply> {
    check_text("component", query.component.as_deref(), MAX_COMPONENT_LEN)?;
    check_window(query.since, query.until)?;
    check_limit(query.limit)
}
