//! Upgrades of older files to this build's schema, in place and in one transaction: each
//! version's step, and the derived tables a step fills from `entries`.

use super::*;

pub(super) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let error = sqlite_error(path);
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&error)?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&error)?;
    let started = std::time::Instant::now();
    if (5..SCHEMA_VERSION).contains(&version) {
        add_entry_columns(&transaction, path).map_err(&error)?;
    }
    match version {
        0 => {
            let tables: i64 = transaction
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(&error)?;
            if tables != 0 {
                return Err(OpenError::Foreign {
                    path: path.display().to_string(),
                });
            }
            for table in [
                ENTRIES,
                ENTRY_INDEXES,
                PRODUCERS,
                COST_HOURLY,
                PRODUCER_RUNS,
                TILES,
                CHECKPOINTS,
                LOG_START,
                SEGMENTS,
                RECEIVED_KEYS,
            ] {
                transaction.execute_batch(table).map_err(&error)?;
            }
        }
        7 => add_hourly_columns(&transaction).map_err(&error)?,
        6 => {
            tracing::info!(path = %path.display(), "adding received_keys (schema version 7)");
            transaction.execute_batch(RECEIVED_KEYS).map_err(&error)?;
            add_hourly_columns(&transaction).map_err(&error)?;
        }
        5 => {
            tracing::info!(path = %path.display(), "adding log_start and segments (schema version 6)");
            transaction.execute_batch(LOG_START).map_err(&error)?;
            transaction.execute_batch(SEGMENTS).map_err(&error)?;
            transaction.execute_batch(RECEIVED_KEYS).map_err(&error)?;
            add_hourly_columns(&transaction).map_err(&error)?;
        }
        1..=4 => {
            tracing::info!(path = %path.display(),
                "dating entries by their own time, adding entries.imported (schema version 5)");
            transaction
                .execute_batch(
                    "ALTER TABLE entries ADD COLUMN imported TEXT;
                     DROP INDEX IF EXISTS entries_by_ts;
                     CREATE INDEX entries_by_time ON entries (coalesce(client_ts, ts));
                     DROP TABLE IF EXISTS cost_hourly;",
                )
                .map_err(&error)?;
            add_entry_columns(&transaction, path).map_err(&error)?;
            transaction.execute_batch(COST_HOURLY).map_err(&error)?;
            transaction
                .execute_batch(&crate::format::cost::fill_hourly())
                .map_err(&error)?;
            if version <= 2 {
                tracing::info!(path = %path.display(), "adding producer_runs (schema version 3)");
                // Builds between versions 2 and 3 indexed `entries` by producer instead.
                transaction
                    .execute_batch(
                        "DROP INDEX IF EXISTS entries_by_producer;
                         ALTER TABLE producers ADD COLUMN last_run INTEGER;",
                    )
                    .map_err(&error)?;
                transaction.execute_batch(PRODUCER_RUNS).map_err(&error)?;
                transaction
                    .execute_batch(FILL_PRODUCER_RUNS)
                    .map_err(&error)?;
            }
            if version <= 3 {
                tracing::info!(path = %path.display(), "adding the Merkle tree (schema version 4)");
                transaction.execute_batch(TILES).map_err(&error)?;
                transaction.execute_batch(CHECKPOINTS).map_err(&error)?;
                fill_tiles(&transaction).map_err(|reason| OpenError::Upgrade {
                    path: path.display().to_string(),
                    reason: reason.to_string(),
                })?;
            }
            transaction.execute_batch(LOG_START).map_err(&error)?;
            transaction.execute_batch(SEGMENTS).map_err(&error)?;
            transaction.execute_batch(RECEIVED_KEYS).map_err(&error)?;
        }
        SCHEMA_VERSION => return Ok(()),
        found => {
            return Err(OpenError::NewerSchema {
                path: path.display().to_string(),
                found,
            });
        }
    }
    transaction
        .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .map_err(&error)?;
    transaction.commit().map_err(&error)?;
    if version != 0 {
        tracing::info!(path = %path.display(), from = version, to = SCHEMA_VERSION,
            elapsed_ms = started.elapsed().as_millis() as u64, "upgraded the database");
    }
    Ok(())
}

/// Adds `entries`' columns of version 8, after `imported` as the table of a new file has
/// them: at the end of the table and NULL in every row already there, which is instant
/// whatever the size of the log and changes no row's hash.
fn add_entry_columns(transaction: &rusqlite::Transaction<'_>, path: &Path) -> rusqlite::Result<()> {
    tracing::info!(path = %path.display(),
        "adding cache-write tokens and priced_by to entries (schema version 8)");
    transaction.execute_batch(
        "ALTER TABLE entries ADD COLUMN cache_write_tokens INTEGER;
         ALTER TABLE entries ADD COLUMN cache_write_1h_tokens INTEGER;
         ALTER TABLE entries ADD COLUMN priced_by TEXT;",
    )
}

/// Adds `cost_hourly`'s columns of version 8 to a file of version 5 to 7. Before version 8
/// every entry with tokens carried money (the protocol had no way to leave it out), so no
/// entry is unpriced and no cache writes were recorded: zero is the truth for every row.
fn add_hourly_columns(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "ALTER TABLE cost_hourly ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE cost_hourly ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;",
    )
}

/// Fills `tiles` from `entries`, in `seq` order, when a file written before they existed is
/// upgraded.
fn fill_tiles(connection: &Connection) -> Result<(), row::BadRow> {
    let mut rows = connection.prepare(&format!(
        "SELECT {} FROM entries ORDER BY seq",
        row::select_columns()
    ))?;
    let mut rows = rows.query([])?;
    let mut tree = Tree::default();
    let mut scratch = Vec::with_capacity(1024);
    while let Some(stored) = rows.next()? {
        let values = row::read_values(stored)?;
        tree.push(chain::leaf_hash(&values, &mut scratch));
        if tree.size() % (1 << 16) == 0 {
            tree.save(connection)?;
        }
    }
    Ok(tree.save(connection)?)
}

/// Fills `producer_runs` and `producers.last_run` from `entries`, when a file written before
/// they existed is upgraded: each maximal stretch of a producer's rows whose `seq` and numbers
/// both go up by one is a run.
const FILL_PRODUCER_RUNS: &str = "
INSERT INTO producer_runs (first_seq, producer_id, first_number, entries, previous)
SELECT first_seq, producer_id, first_number, entries,
       lag(first_seq) OVER (PARTITION BY producer_id ORDER BY first_seq)
FROM (SELECT producer_id, min(seq) AS first_seq, min(producer_number) AS first_number,
             count(*) AS entries
      FROM (SELECT seq, producer_id, producer_number,
                   seq - row_number() OVER w AS seq_stretch,
                   producer_number - row_number() OVER w AS number_stretch
            FROM entries WHERE producer_id IS NOT NULL
            WINDOW w AS (PARTITION BY producer_id ORDER BY seq))
      GROUP BY producer_id, seq_stretch, number_stretch);
UPDATE producers SET last_run = runs.last
FROM (SELECT producer_id, max(first_seq) AS last FROM producer_runs GROUP BY producer_id) AS runs
WHERE runs.producer_id = producers.producer_id;
";
