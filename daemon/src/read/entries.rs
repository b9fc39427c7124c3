//! Pages of entries in `seq` order, for `tail`, `export` and followers.

use rusqlite::{Connection, OptionalExtension, params_from_iter};
use witness_protocol::query::{Filter, StoredEntry};

use super::PAGE_BYTES;
use super::filter::filter_conditions;
use crate::format::row;
use witness_protocol::ErrorReply;
use witness_protocol::query::EntriesQuery;

use super::validation::{bad, check_filter};

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
        "SELECT {} FROM entries {} ORDER BY seq LIMIT {}",
        row::select_columns(),
        conditions.sql(),
        limit.max(1)
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(params_from_iter(conditions.params.iter()))?;
    let mut page = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let entry = row::stored_entry(row)?;
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

/// Roughly what an entry takes in a frame.
fn entry_bytes(entry: &StoredEntry) -> usize {
    let inner = &entry.entry;
    160 + inner.event.len()
        + inner.component.len()
        + inner.payload.len()
        + inner.trace_id.as_ref().map_or(0, String::len)
}

/// Checks a request for a stream of entries.
pub fn check_entries(query: &EntriesQuery) -> Result<(), ErrorReply> {
    check_filter(&query.filter)?;
    if query.limit == Some(0) {
        return Err(bad("limit is 0; leave it out for no limit".into()));
    }
    Ok(())
}
