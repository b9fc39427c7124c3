//! The read side: a small pool of read-only connections, and the queries behind `tail`,
//! `export`, `trace`, `traces` and `cost`.
//!
//! WAL lets these connections read a snapshot while the writer commits, so a heavy query
//! never stalls ingest. Queries run on tokio's blocking threads, at most `size` at once, so
//! they never stall the connection tasks either. Every query is paged and every page is
//! bounded in bytes as well as in rows, so no answer outgrows a frame.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};
use tokio::sync::Semaphore;
use witness_protocol::admin::{MaintenanceReport, MaintenanceTask};
use witness_protocol::query::{
    CostQuery, CostReport, CostRow, Filter, GroupBy, StoredEntry, TraceQuery, TraceReport,
    TraceSummary, TracesPage, TracesQuery,
};
use witness_protocol::{Cost, Entry, Response};

use crate::schema::{self, HOUR_NS, OpenError};

/// A page stops growing once its entries hold this many bytes, whatever its row limit, so
/// that a page of large payloads still fits in a frame.
pub const PAGE_BYTES: usize = 1 << 20;

/// Read-only connections, opened on first use and kept for the next query.
#[derive(Debug)]
pub struct ReadPool {
    db_path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    slots: Arc<Semaphore>,
}

impl ReadPool {
    /// A pool of at most `size` connections to `db_path`.
    pub fn new(db_path: PathBuf, size: usize) -> Self {
        ReadPool {
            db_path,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// Runs `query` on a pooled connection on a blocking thread. Errors come back as text for
    /// the client: what failed and why.
    pub async fn run<T, F>(self: &Arc<Self>, query: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("never closed");
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let connection = pool.take().map_err(|error| error.to_string())?;
            let result = query(&connection).map_err(|error| format!("query failed: {error}"));
            pool.idle.lock().expect("not poisoned").push(connection);
            result
        })
        .await
        .map_err(|error| format!("query failed: {error}"))?
    }

    fn take(&self) -> Result<Connection, OpenError> {
        if let Some(connection) = self.idle.lock().expect("not poisoned").pop() {
            return Ok(connection);
        }
        let connection = schema::open_reader(&self.db_path)?;
        // A query's sort or temporary b-tree stays in memory, bounded by the page limits.
        let _ = connection.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -4096");
        Ok(connection)
    }
}

/// The columns of `entries` that `stored_entry` reads, in its order.
const ENTRY_COLUMNS: &str = "seq, ts, client_ts, event, component, trace_id, payload, \
    tokens_in, tokens_out, cache_read_tokens, reasoning_tokens, cost_micro_usd, model, \
    pid, uid, gid, producer_id, producer_number, hash";

fn stored_entry(row: &Row<'_>) -> rusqlite::Result<StoredEntry> {
    let unsigned = |index: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row.get::<_, Option<i64>>(index)?.map(|value| value as u64))
    };
    let tokens_in = unsigned(7)?;
    let cost = tokens_in.map(|tokens_in| -> rusqlite::Result<Cost> {
        Ok(Cost {
            tokens_in,
            tokens_out: unsigned(8)?.unwrap_or(0),
            cache_read_tokens: unsigned(9)?,
            reasoning_tokens: unsigned(10)?,
            micro_usd: unsigned(11)?.unwrap_or(0),
            model: row.get(12)?,
        })
    });
    let hash: Vec<u8> = row.get(18)?;
    Ok(StoredEntry {
        seq: row.get::<_, i64>(0)? as u64,
        ts: row.get(1)?,
        entry: Entry {
            event: row.get(3)?,
            component: row.get(4)?,
            trace_id: row.get(5)?,
            payload: row.get(6)?,
            cost: cost.transpose()?,
            client_ts: row.get(2)?,
        },
        pid: row.get(13)?,
        uid: row.get(14)?,
        gid: row.get(15)?,
        producer_id: unsigned(16)?,
        producer_number: unsigned(17)?,
        hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0; 32]),
    })
}

/// Roughly what an entry takes in a frame.
fn entry_bytes(entry: &StoredEntry) -> usize {
    let inner = &entry.entry;
    160 + inner.event.len()
        + inner.component.len()
        + inner.payload.len()
        + inner.trace_id.as_ref().map_or(0, String::len)
}

/// A `WHERE` clause and its parameters, built from a filter.
#[derive(Debug, Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<SqlValue>,
}

impl Conditions {
    fn add(&mut self, clause: &str, value: impl Into<SqlValue>) {
        self.params.push(value.into());
        self.clauses
            .push(clause.replace('?', &format!("?{}", self.params.len())));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The conditions of a filter. `since` becomes a lower bound on `seq` as well, found through
/// the time index, so that a recent window is read from its start rather than by walking the
/// whole log in `seq` order.
fn filter_conditions(connection: &Connection, filter: &Filter) -> rusqlite::Result<Conditions> {
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
        // `+ts` keeps the planner on the index the other conditions chose.
        conditions.add("+ts >= ?", since);
        match first_seq_since(connection, since)? {
            Some(first) => conditions.add("seq >= ?", first),
            None => conditions.add("seq > ?", i64::MAX),
        }
    }
    if let Some(until) = filter.until {
        conditions.add("+ts < ?", until);
    }
    if let Some(after) = filter.after_seq {
        conditions.add("seq > ?", clamp(after));
    }
    if let Some(to) = filter.to_seq {
        conditions.add("seq <= ?", clamp(to));
    }
    Ok(conditions)
}

/// The smallest `seq` received at or after `since`. Receive times and sequence numbers agree
/// only roughly (entries from two connections can pass each other in the queue), so this is
/// a minimum over the time index, not a lookup.
fn first_seq_since(connection: &Connection, since: i64) -> rusqlite::Result<Option<i64>> {
    connection
        // Without INDEXED BY, SQLite's min() shortcut walks `seq` from the start until it
        // meets a recent row: the whole log for a recent `since`.
        .prepare_cached("SELECT min(seq) FROM entries INDEXED BY entries_by_ts WHERE ts >= ?1")?
        .query_row([since], |row| row.get(0))
}

fn clamp(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

/// The next page of entries matching `filter` in `seq` order, at most `limit` rows and about
/// `PAGE_BYTES` (at least one row). The flag says the page was cut short by its size, so
/// that a short page does not pass for the end.
pub fn entries_page(
    connection: &Connection,
    filter: &Filter,
    limit: u32,
) -> rusqlite::Result<(Vec<StoredEntry>, bool)> {
    let conditions = filter_conditions(connection, filter)?;
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries {} ORDER BY seq LIMIT {}",
        conditions.sql(),
        limit.max(1)
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(params_from_iter(conditions.params.iter()))?;
    let mut page = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let entry = stored_entry(row)?;
        bytes += entry_bytes(&entry);
        page.push(entry);
        if bytes >= PAGE_BYTES {
            return Ok((page, true));
        }
    }
    Ok((page, false))
}

/// Where `tail -n newest` starts: the cursor just below the oldest of the newest `newest`
/// matching entries, or `None` when fewer match (start at the beginning).
pub fn newest_cursor(
    connection: &Connection,
    filter: &Filter,
    newest: u32,
) -> rusqlite::Result<Option<u64>> {
    if newest == 0 {
        return Ok(Some(
            last_seq(connection)?.max(filter.after_seq.unwrap_or(0)),
        ));
    }
    let conditions = filter_conditions(connection, filter)?;
    let sql = format!(
        "SELECT seq FROM entries {} ORDER BY seq DESC LIMIT 1 OFFSET {}",
        conditions.sql(),
        newest - 1
    );
    let oldest: Option<i64> = connection
        .prepare_cached(&sql)?
        .query_row(params_from_iter(conditions.params.iter()), |row| row.get(0))
        .optional()?;
    Ok(oldest.map(|seq| seq as u64 - 1))
}

/// The last committed `seq`, 0 for an empty log.
pub fn last_seq(connection: &Connection) -> rusqlite::Result<u64> {
    let seq: Option<i64> =
        connection.query_row("SELECT max(seq) FROM entries", [], |row| row.get(0))?;
    Ok(seq.unwrap_or(0) as u64)
}

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
        .prepare_cached(
            "SELECT count(*), min(seq), max(seq), min(ts), max(ts), \
             ssum(tokens_in), ssum(tokens_out), ssum(cost_micro_usd) \
             FROM entries WHERE trace_id = ?1",
        )?
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
            ))
        })?;
    let (count, Some(first_seq), Some(last_seq), Some(first_ts), Some(last_ts), tin, tout, usd) =
        sums
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
        sql += &format!(" AND ts >= ?{}", params.len());
    }
    sql += " LIMIT 1";
    connection
        .prepare_cached(&sql)?
        .query_row(params_from_iter(params.iter()), |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Entries, tokens and money per group. Whole hours come from `cost_hourly`, the partial
/// hours at either end of the window from `entries` through the time index; grouping by
/// trace reads `entries` alone.
pub fn cost(connection: &Connection, query: &CostQuery) -> rusqlite::Result<CostReport> {
    let (source, params) = cost_source(query);
    let grouped = format!(
        "SELECT key, ssum(n) AS n, ssum(tin) AS tin, ssum(tout) AS tout, ssum(usd) AS usd \
         FROM ({source}) GROUP BY key"
    );
    let (groups, total) = connection
        .prepare_cached(&format!(
            "SELECT count(*), ssum(n), ssum(tin), ssum(tout), ssum(usd) FROM ({grouped})"
        ))?
        .query_row(params_from_iter(params.iter()), |row| {
            Ok((row.get::<_, i64>(0)? as u64, cost_row(None, row, 1)?))
        })?;
    let rows = connection
        .prepare_cached(&format!(
            "SELECT key, n, tin, tout, usd FROM ({grouped}) \
             ORDER BY usd DESC, key ASC NULLS LAST LIMIT {} OFFSET {}",
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
        micro_usd: row.get::<_, i64>(first + 3)? as u64,
    })
}

/// The rows a cost report sums, as `key, n, tin, tout, usd`, and their parameters.
fn cost_source(query: &CostQuery) -> (String, Vec<SqlValue>) {
    let mut params: Vec<SqlValue> = Vec::new();
    let mut param = |value: SqlValue| {
        params.push(value);
        format!("?{}", params.len())
    };
    let component = query
        .component
        .as_ref()
        .map(|component| format!(" AND component = {}", param(component.clone().into())))
        .unwrap_or_default();
    let raw_key = match query.by {
        GroupBy::Component => "component",
        GroupBy::Model => "model",
        GroupBy::Event => "event",
        GroupBy::Trace => "trace_id",
    };
    let raw = |params: &mut dyn FnMut(SqlValue) -> String, from: Option<i64>, to: Option<i64>| {
        let mut window = String::new();
        if let Some(from) = from {
            window += &format!(" AND ts >= {}", params(from.into()));
        }
        if let Some(to) = to {
            window += &format!(" AND ts < {}", params(to.into()));
        }
        format!(
            "SELECT {raw_key} AS key, 1 AS n, coalesce(tokens_in, 0) AS tin, \
             coalesce(tokens_out, 0) AS tout, coalesce(cost_micro_usd, 0) AS usd \
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
        _ => raw_key,
    };
    let mut parts = Vec::new();
    if first_hour < end_hour {
        parts.push(format!(
            "SELECT {hourly_key} AS key, entries AS n, tokens_in AS tin, tokens_out AS tout, \
             micro_usd AS usd FROM cost_hourly WHERE hour >= {} AND hour < {}{component}",
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

/// Writes a consistent, compacted copy of the database to `path` with `VACUUM INTO`. It runs
/// on a read connection, from one read snapshot: the writer goes on committing meanwhile
/// (the WAL grows until the copy is done, since the snapshot's pages must stay).
pub fn backup(
    connection: &Connection,
    path: &str,
    started: std::time::Instant,
) -> rusqlite::Result<Response> {
    connection.execute("VACUUM INTO ?1", [path])?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).ok();
    let copy = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let last_seq: Option<i64> = copy
        .query_row(
            "SELECT seq FROM entries ORDER BY seq DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    tracing::info!(path, ?bytes, ?last_seq, "backup written");
    Ok(Response::Maintained(MaintenanceReport {
        task: MaintenanceTask::Backup {
            path: path.to_owned(),
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
        bytes,
        last_seq: last_seq.map(|seq| seq as u64),
    }))
}
