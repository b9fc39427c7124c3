//! Cost reports: entries, tokens and money per group, from the hourly roll-up where whole
//! hours allow and from the entries elsewhere. Entries are dated by the event's own time
//! (`schema::EVENT_TIME`), which is also what the roll-up's hours are of.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params_from_iter};
use witness_protocol::query::{CostQuery, CostReport, CostRow, GroupBy};

use super::filter::clamp;
use crate::format::schema::{EVENT_TIME, HOUR_NS};
use witness_protocol::ErrorReply;
use witness_protocol::limits::{MAX_COMPONENT_LEN, MAX_EVENT_LEN, MAX_MODEL_LEN};

use super::validation::{check_limit, check_text, check_window};

/// Entries, tokens and money per group. Whole hours come from `cost_hourly`, the partial
/// hours at either end of the window from `entries` through the time index; grouping by
/// trace reads `entries` alone.
pub fn cost(connection: &Connection, query: &CostQuery) -> rusqlite::Result<CostReport> {
    let (source, params) = cost_source(query);
    let grouped = format!(
        "SELECT key, ssum(n) AS n, ssum(tin) AS tin, ssum(tout) AS tout, ssum(cache) AS cache, \
         ssum(write) AS write, ssum(reason) AS reason, ssum(usd) AS usd, \
         ssum(unpriced) AS unpriced FROM ({source}) GROUP BY key"
    );
    let (groups, total) = connection
        .prepare_cached(&format!(
            "SELECT count(*), ssum(n), ssum(tin), ssum(tout), ssum(cache), ssum(write), \
             ssum(reason), ssum(usd), ssum(unpriced) FROM ({grouped})"
        ))?
        .query_row(params_from_iter(params.iter()), |row| {
            Ok((row.get::<_, i64>(0)? as u64, cost_row(None, row, 1)?))
        })?;
    // Money first, except for periods, which read best in time order.
    let order = match query.by {
        GroupBy::Day | GroupBy::Hour => "key ASC",
        _ => "usd DESC, key ASC NULLS LAST",
    };
    let rows = connection
        .prepare_cached(&format!(
            "SELECT key, n, tin, tout, cache, write, reason, usd, unpriced FROM ({grouped}) \
             ORDER BY {order} LIMIT {} OFFSET {}",
            query.limit,
            clamp(query.offset)
        ))?
        .query_map(params_from_iter(params.iter()), |row| {
            cost_row(row.get(0)?, row, 1)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(CostReport {
        by: query.by,
        rows,
        groups,
        total,
    })
}

fn cost_row(key: Option<String>, row: &Row<'_>, first: usize) -> rusqlite::Result<CostRow> {
    Ok(CostRow {
        key,
        entries: row.get::<_, i64>(first)? as u64,
        tokens_in: row.get::<_, i64>(first + 1)? as u64,
        tokens_out: row.get::<_, i64>(first + 2)? as u64,
        cache_read_tokens: row.get::<_, i64>(first + 3)? as u64,
        cache_write_tokens: row.get::<_, i64>(first + 4)? as u64,
        reasoning_tokens: row.get::<_, i64>(first + 5)? as u64,
        micro_usd: row.get::<_, i64>(first + 6)? as u64,
        unpriced: row.get::<_, i64>(first + 7)? as u64,
    })
}

/// The rows a cost report sums, as `key, n, tin, tout, cache, write, reason, usd, unpriced`,
/// and their parameters.
fn cost_source(query: &CostQuery) -> (String, Vec<SqlValue>) {
    let mut params: Vec<SqlValue> = Vec::new();
    let mut param = |value: SqlValue| {
        params.push(value);
        format!("?{}", params.len())
    };
    // The roll-up keeps `''` for no model, as the entries keep NULL; a filter on a model
    // names a model, so `model = ?` holds in both.
    let mut narrow = String::new();
    for (column, value) in [
        ("component", &query.component),
        ("event", &query.event),
        ("model", &query.model),
    ] {
        if let Some(value) = value {
            narrow += &format!(" AND {column} = {}", param(value.clone().into()));
        }
    }
    let component = narrow;
    let raw_key = match query.by {
        GroupBy::Component => "component",
        GroupBy::Model => "model",
        GroupBy::Event => "event",
        GroupBy::Trace => "trace_id",
        GroupBy::Day => &format!("strftime('%Y-%m-%d', {EVENT_TIME} / 1000000000, 'unixepoch')"),
        GroupBy::Hour => {
            &format!("strftime('%Y-%m-%dT%H:00Z', {EVENT_TIME} / 1000000000, 'unixepoch')")
        }
    };
    let raw = |params: &mut dyn FnMut(SqlValue) -> String, from: Option<i64>, to: Option<i64>| {
        let mut window = String::new();
        if let Some(from) = from {
            window += &format!(" AND {EVENT_TIME} >= {}", params(from.into()));
        }
        if let Some(to) = to {
            window += &format!(" AND {EVENT_TIME} < {}", params(to.into()));
        }
        format!(
            "SELECT {raw_key} AS key, 1 AS n, coalesce(tokens_in, 0) AS tin, \
             coalesce(tokens_out, 0) AS tout, coalesce(cache_read_tokens, 0) AS cache, \
             coalesce(cache_write_tokens, 0) AS write, coalesce(reasoning_tokens, 0) AS reason, \
             coalesce(cost_micro_usd, 0) AS usd, \
             (tokens_in IS NOT NULL AND cost_micro_usd IS NULL) AS unpriced \
             FROM entries WHERE 1{window}{component}"
        )
    };
    if query.by == GroupBy::Trace {
        let sql = raw(&mut param, query.since, query.until);
        return (sql, params);
    }
    // Whole hours inside [since, until): from the first hour starting at or after `since` to
    // the last hour ending at or before `until`.
    let first_hour = query.since.map_or(0, |since| {
        since.div_euclid(HOUR_NS) + i64::from(since % HOUR_NS != 0)
    });
    let end_hour = query
        .until
        .map_or(i64::MAX / HOUR_NS, |until| until.div_euclid(HOUR_NS));
    let hourly_key = match query.by {
        GroupBy::Model => "nullif(model, '')",
        GroupBy::Day => "strftime('%Y-%m-%d', hour * 3600, 'unixepoch')",
        GroupBy::Hour => "strftime('%Y-%m-%dT%H:00Z', hour * 3600, 'unixepoch')",
        _ => raw_key,
    };
    let mut parts = Vec::new();
    if first_hour < end_hour {
        parts.push(format!(
            "SELECT {hourly_key} AS key, entries AS n, tokens_in AS tin, tokens_out AS tout, \
             cache_read_tokens AS cache, cache_write_tokens AS write, \
             reasoning_tokens AS reason, micro_usd AS usd, unpriced \
             FROM cost_hourly WHERE hour >= {} AND hour < {}{component}",
            param(first_hour.into()),
            param(end_hour.into()),
        ));
        if let Some(since) = query.since.filter(|&since| since < first_hour * HOUR_NS) {
            parts.push(raw(&mut param, Some(since), Some(first_hour * HOUR_NS)));
        }
        if let Some(until) = query.until.filter(|&until| until > end_hour * HOUR_NS) {
            parts.push(raw(&mut param, Some(end_hour * HOUR_NS), Some(until)));
        }
    } else {
        parts.push(raw(&mut param, query.since, query.until));
    }
    (parts.join(" UNION ALL "), params)
}

/// Checks a request for a cost report.
pub fn check_cost(query: &CostQuery) -> Result<(), ErrorReply> {
    check_text("component", query.component.as_deref(), MAX_COMPONENT_LEN)?;
    // An empty model would select the entries that have none (the roll-up's own `''`):
    // refused, as every empty filter is.
    check_text("event", query.event.as_deref(), MAX_EVENT_LEN)?;
    check_text("model", query.model.as_deref(), MAX_MODEL_LEN)?;
    check_window(query.since, query.until)?;
    check_limit(query.limit)
}

/// Money and unpriced entries dated from `since` on, of `component` and `model` when given,
/// and of the traces whose id starts with `trace_prefix`: a budget's spend. Without a prefix
/// it is the cost report's total (from the roll-up where whole hours allow); with one, the
/// trace index's range of the prefix.
pub fn spend_since(
    connection: &Connection,
    since: i64,
    component: Option<&str>,
    model: Option<&str>,
    trace_prefix: Option<&str>,
) -> rusqlite::Result<(u64, u64)> {
    let Some(prefix) = trace_prefix else {
        let report = cost(
            connection,
            &CostQuery {
                by: GroupBy::Component,
                since: Some(since),
                until: None,
                component: component.map(str::to_owned),
                event: None,
                model: model.map(str::to_owned),
                offset: 0,
                limit: 1,
            },
        )?;
        return Ok((report.total.micro_usd, report.total.unpriced));
    };
    // Every id with the prefix sorts at or after it and before it followed by the last
    // character there is.
    let end = format!("{prefix}\u{10FFFF}");
    let (usd, unpriced): (i64, i64) = connection
        .prepare_cached(&format!(
            "SELECT ssum(cost_micro_usd), ssum(tokens_in IS NOT NULL AND cost_micro_usd IS NULL) \
             FROM entries WHERE trace_id >= ?1 AND trace_id < ?2 AND {EVENT_TIME} >= ?3 \
             AND (?4 IS NULL OR component = ?4) AND (?5 IS NULL OR model = ?5)"
        ))?
        .query_row(
            rusqlite::params![prefix, end, since, component, model],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
    Ok((usd as u64, unpriced as u64))
}

/// The event of the entries the daemon records when a budget crosses a threshold.
pub const BUDGET_EVENT: &str = "witness.budget";

/// The payloads of the budget warnings dated from `since` on: what has already been said
/// this period, restarts included. Only the daemon's own (its uid, from the socket) count,
/// so that no client can silence a warning by writing one first.
pub fn budget_warnings(connection: &Connection, since: i64) -> rusqlite::Result<Vec<String>> {
    connection
        .prepare_cached(&format!(
            "SELECT payload FROM entries WHERE event = ?1 AND component = 'witnessd' \
             AND uid = ?3 AND {EVENT_TIME} >= ?2"
        ))?
        .query_map(
            rusqlite::params![BUDGET_EVENT, since, crate::format::row::own_uid()],
            |row| row.get(0),
        )?
        .collect()
}
