//! `witness maintenance backup`: a consistent copy of the log, taken from a read snapshot.

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::Response;
use witness_protocol::admin::{MaintenanceReport, MaintenanceTask};

use crate::format::schema;

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
        .query_row(schema::HEAD, [], |row| row.get(0))
        .optional()?;
    // Said as values, not as Rust's `Some(65536)`.
    let shown = |value: Option<String>| value.unwrap_or_else(|| "unknown".to_owned());
    tracing::info!(
        path,
        bytes = %shown(bytes.map(|bytes| bytes.to_string())),
        last_seq = %last_seq.map_or_else(|| "none (empty)".to_owned(), |seq| seq.to_string()),
        "backup written"
    );
    Ok(Response::Maintained(MaintenanceReport {
        task: MaintenanceTask::Backup {
            path: path.to_owned(),
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
        bytes,
        last_seq: last_seq.map(|seq| seq as u64),
    }))
}
