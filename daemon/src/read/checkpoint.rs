//! `Checkpoint`: the latest signed checkpoint, with the key that verifies it.

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::admin::CheckpointReport;

use crate::format::schema;

/// The latest checkpoint note (none before the first is signed) and `verifier_key`.
pub fn checkpoint(
    connection: &Connection,
    verifier_key: String,
) -> rusqlite::Result<CheckpointReport> {
    let note = connection
        .query_row(schema::LATEST_CHECKPOINT, [], |row| row.get(0))
        .optional()?;
    Ok(CheckpointReport { note, verifier_key })
}
