//! The database schema, its version and its upgrades, the statements on the tables derived
//! from `entries`, and how connections are opened.
//!
//! The writer opens the only read-write connection; everyone else (queries, verification,
//! the offline `witness verify --db`) opens read-only ones. `docs/FORMAT.md` documents the
//! schema for people who query the file with `sqlite3`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::format::tree::Tree;
use crate::format::{chain, row};

mod migrate;
use migrate::migrate;

/// `PRAGMA user_version` of the schema this build writes. Version 1 lacked `cost_hourly`,
/// version 2 `producer_runs`, version 3 `tiles` and `checkpoints`; version 4 had no
/// `entries.imported`, indexed the receive time rather than the event's time, and kept no
/// cache-read or reasoning tokens in `cost_hourly`, which it bucketed by receive time;
/// version 5 had no `log_start` and `segments`, and could not be pruned; version 6 had no
/// `received_keys`; version 7 had no cache-write tokens and no `priced_by` in `entries`, and
/// counted no unpriced entries in `cost_hourly`. The writer adds and fills what is missing
/// when it opens such a file.
pub const SCHEMA_VERSION: i64 = 8;

pub use super::cost::{HOUR_NS, hour_of, hour_sql};
pub use super::row::EVENT_TIME;

/// The `entries` table: the log's rows, and the rows of an archive segment.
///
/// `STRICT` keeps every hashed column in the storage class the hash assumed. Indexes end in
/// `seq` so that each lookup returns rows in log order without a sort; the trace index skips
/// rows without a trace.
pub const ENTRIES: &str = "
CREATE TABLE entries (
    seq               INTEGER PRIMARY KEY,
    ts                INTEGER NOT NULL,
    client_ts         INTEGER,
    event             TEXT    NOT NULL,
    component         TEXT    NOT NULL,
    trace_id          TEXT,
    payload           TEXT    NOT NULL,
    tokens_in         INTEGER,
    tokens_out        INTEGER,
    cache_read_tokens INTEGER,
    reasoning_tokens  INTEGER,
    cost_micro_usd    INTEGER,
    model             TEXT,
    pid               INTEGER,
    uid               INTEGER,
    gid               INTEGER,
    producer_id       INTEGER,
    producer_number   INTEGER,
    hash              BLOB    NOT NULL,
    imported          TEXT,
    cache_write_tokens    INTEGER,
    cache_write_1h_tokens INTEGER,
    priced_by             TEXT
) STRICT;
";

/// The indexes of `entries` in the live log (an archive segment has none: it is read in
/// `seq` order, and whoever queries it can add them).
pub const ENTRY_INDEXES: &str = "
CREATE INDEX entries_by_trace ON entries (trace_id, seq) WHERE trace_id IS NOT NULL;
CREATE INDEX entries_by_component ON entries (component, seq);
CREATE INDEX entries_by_event ON entries (event, seq);
CREATE INDEX entries_by_time ON entries (coalesce(client_ts, ts));
";

/// Each producer's last number, which exactly-once holds re-sends to, and its last run.
pub const PRODUCERS: &str = "
CREATE TABLE producers (
    producer_id INTEGER PRIMARY KEY,
    last_number INTEGER NOT NULL,
    last_run    INTEGER
) STRICT;
";

/// Per hour (of the event's time, [`EVENT_TIME`]), component, event and model: entries,
/// tokens, money and the entries without a price, kept by the writer in the same transaction as the entries, so that a cost report over millions of entries reads
/// a few thousand rows. Derived data, outside the hash chain; `model` is `''` for entries
/// without one, because a `NULL` in a primary key would never conflict.
pub const COST_HOURLY: &str = "
CREATE TABLE cost_hourly (
    hour       INTEGER NOT NULL,
    component  TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    entries    INTEGER NOT NULL,
    tokens_in  INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    reasoning_tokens  INTEGER NOT NULL,
    micro_usd  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    unpriced   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, component, event, model)
) STRICT, WITHOUT ROWID;
";

/// Where each producer's entries are: one row for each stretch of consecutive `seq` holding
/// consecutive numbers of one producer (the writer writes one per append), linked to the
/// producer's run before, so that re-sent numbers are found by walking back from the
/// producer's last run (`producers.last_run`) a few rows. Keyed by `seq`, so that the writer
/// only ever appends to it: an index of `entries` by producer would take a page write per
/// producer per commit. Derived data, outside the hash chain.
pub const PRODUCER_RUNS: &str = "
CREATE TABLE producer_runs (
    first_seq    INTEGER PRIMARY KEY,
    producer_id  INTEGER NOT NULL,
    first_number INTEGER NOT NULL,
    entries      INTEGER NOT NULL,
    previous     INTEGER
) STRICT;
";

/// The Merkle tree over the entries, in C2SP tlog-tiles (see `tree`): tile `(level, idx)`
/// holds the concatenated 32-byte hashes of up to 256 nodes at height `8 × level`. Kept by
/// the writer in the same transaction as the entries; outside the hash chain, and checked
/// against the entries by `verify`.
pub const TILES: &str = "
CREATE TABLE tiles (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hashes BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT;
";

/// The checkpoints the daemon signed, as C2SP signed notes, by tree size. A history: the
/// latest is also in the state file outside the database, which is what the daemon holds
/// the database to at start.
pub const CHECKPOINTS: &str = "
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT    NOT NULL
) STRICT;
";

/// Where the stored log starts: the first `seq` still in `entries` and the chain hash of the
/// entry before it (the genesis hash for seq 1). A single row, moved in the same transaction
/// as each pruning delete, so that the chain always has an anchor. Absent from files older
/// than version 6, which start at seq 1.
pub const LOG_START: &str = "
CREATE TABLE log_start (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    first_seq INTEGER NOT NULL,
    previous  BLOB    NOT NULL
) STRICT;
";

/// The ranges pruned from the log, oldest first: each archived to `file` (an archive segment
/// in the archive folder, see `format::archive`, with its SHA-256) or dropped (`file` NULL).
/// `previous` is the chain hash before `first_seq`, `last_hash` that of `last_seq`. A row is
/// written before any entry of its range is deleted, so a range with a row and entries left
/// is a prune the writer has yet to finish.
pub const SEGMENTS: &str = "
CREATE TABLE segments (
    first_seq INTEGER PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    previous  BLOB    NOT NULL,
    last_hash BLOB    NOT NULL,
    file      TEXT,
    sha256    BLOB,
    bytes     INTEGER,
    sealed    INTEGER NOT NULL
) STRICT;
";

/// Where the stored log starts: `(first seq, chain hash before it)`; `(1, genesis)` for a log
/// never pruned or a file older than version 6.
pub fn log_start(connection: &Connection) -> rusqlite::Result<(u64, [u8; 32])> {
    use rusqlite::OptionalExtension;
    let has_table: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'log_start'",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok((1, chain::GENESIS));
    }
    let start: Option<(i64, Vec<u8>)> = connection
        .query_row("SELECT first_seq, previous FROM log_start", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    Ok(match start {
        Some((first, previous)) => (
            first.max(1) as u64,
            <[u8; 32]>::try_from(previous.as_slice()).unwrap_or([0; 32]),
        ),
        None => (1, chain::GENESIS),
    })
}

/// The keys of items received over OTLP (`docs/OTLP.md`), each with the entry it became,
/// so that an export sent again stores nothing twice. Not part of the log: a key is kept
/// for `RECEIVED_KEYS_WINDOW` after it arrived, and losing the table only narrows what a
/// re-send is recognised by.
pub const RECEIVED_KEYS: &str = "
CREATE TABLE received_keys (
    key      BLOB PRIMARY KEY,
    seq      INTEGER NOT NULL,
    received INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX received_keys_by_time ON received_keys (received);
";

/// The entry a received key became, with its hash, if the key was received before (and its
/// entry is still in the live log).
pub const FIND_RECEIVED_KEY: &str = "SELECT k.seq, e.hash FROM received_keys k \
     JOIN entries e ON e.seq = k.seq WHERE k.key = ?1";

/// Records a received key.
pub const ADD_RECEIVED_KEY: &str =
    "INSERT OR REPLACE INTO received_keys (key, seq, received) VALUES (?1, ?2, ?3)";

/// Forgets keys received before `?1`, a bounded number at a time.
pub const FORGET_RECEIVED_KEYS: &str = "DELETE FROM received_keys WHERE key IN \
     (SELECT key FROM received_keys WHERE received < ?1 ORDER BY received LIMIT 10000)";

/// How long a received key is remembered: a day, far past any exporter's retries.
pub const RECEIVED_KEYS_WINDOW_NS: i64 = 24 * 3_600 * 1_000_000_000;

/// The latest checkpoint in the history.
pub const LATEST_CHECKPOINT: &str = "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1";

/// The head of the chain: the last row's `seq` and hash.
pub const HEAD: &str = "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1";

/// A producer's last number and last run, as stored.
pub const READ_PRODUCER: &str =
    "SELECT last_number, last_run FROM producers WHERE producer_id = ?1";

/// Records a producer's last number and last run.
pub const SAVE_PRODUCER: &str = "INSERT INTO producers (producer_id, last_number, last_run) \
    VALUES (?1, ?2, ?3) ON CONFLICT (producer_id) DO UPDATE SET \
    last_number = excluded.last_number, last_run = excluded.last_run";

/// One run of a producer's entries, to walk back from its last run to the numbers re-sent.
pub const FIND_RUN: &str =
    "SELECT first_number, entries, previous FROM producer_runs WHERE first_seq = ?1";

/// The stored rows a run says hold a producer's numbers, read to confirm it.
pub const FIND_PRODUCED: &str = "SELECT seq, producer_id, producer_number, hash FROM entries \
    WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq";

/// Adds a run; `previous` is the producer's run before it.
pub const ADD_PRODUCER_RUN: &str = "INSERT INTO producer_runs \
    (first_seq, producer_id, first_number, entries, previous) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Bytes the WAL file is cut back to once a checkpoint has emptied it, so that one burst does
/// not leave a large file behind for good.
pub const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// Rows `ANALYZE` and `PRAGMA optimize` look at per index: enough for the planner, and it
/// keeps the writer (which runs them between batches) busy for milliseconds, not seconds.
pub const ANALYSIS_LIMIT: u32 = 1000;

/// How hard a commit works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a committed entry survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a committed entry survives a crash of the daemon, but the last
    /// commits before a power loss may be lost.
    Normal,
}

impl Durability {
    /// The value of `PRAGMA synchronous` that gives it.
    pub fn synchronous(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!(
                "unknown durability {other:?}: expected \"full\" or \"normal\""
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        })
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// SQLite refused.
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The file was written by a newer witness.
    #[error(
        "database {path} has schema version {found}; this witness understands up to \
         {SCHEMA_VERSION}: upgrade witness"
    )]
    NewerSchema {
        /// The database file.
        path: String,
        /// Its `user_version`.
        found: i64,
    },
    /// SQLite would not put the database in WAL mode (a file system without shared memory,
    /// for example).
    #[error("database {path} stays in journal mode {journal}: witness needs WAL")]
    NotWal {
        /// The database file.
        path: String,
        /// The journal mode SQLite kept.
        journal: String,
    },
    /// The path stopped naming the file the daemon locked while it opened it.
    #[error("{0}")]
    Moved(String),
    /// An older file could not be upgraded: a row the format does not allow, for example.
    #[error("cannot upgrade database {path}: {reason}")]
    Upgrade {
        /// The database file.
        path: String,
        /// What stood in the way.
        reason: String,
    },
    /// The database no longer holds what the daemon signed: see `store::checkpoint`.
    #[error("{0}")]
    Forgotten(String),
    /// The acknowledged mark (see `store::acked`) could not be opened.
    #[error("cannot open the acknowledged mark {path}: {source}")]
    Mark {
        /// The mark's file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The stored Merkle tree does not fit the entries: its tiles were cut or changed.
    #[error(
        "the Merkle tree of database {path} does not match its entries ({reason}); run \
         `witness verify --db` on it"
    )]
    Tree {
        /// The database file.
        path: String,
        /// What does not match.
        reason: crate::format::tree::TreeError,
    },
    /// The file is not a witness database.
    #[error("database {path} is not a witness database (it has tables but no witness schema)")]
    Foreign {
        /// The database file.
        path: String,
    },
}

pub(super) fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> OpenError + '_ {
    move |source| OpenError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// How long a connection waits for a lock another holds before SQLite answers busy.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the read-write connection of the writer, creating the file and the schema if need
/// be. Automatic checkpoints are off: the writer checkpoints between batches, so that no
/// commit pays for one.
pub fn open_writer(
    path: &Path,
    durability: Durability,
    cache_kib: u32,
) -> Result<Connection, OpenError> {
    let error = sqlite_error(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(&error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(&error)?;
    let journal: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(&error)?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal {
            path: path.display().to_string(),
            journal,
        });
    }
    let synchronous = durability.synchronous();
    connection
        .execute_batch(&format!(
            "PRAGMA synchronous = {synchronous};
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA cache_size = -{cache_kib};
             PRAGMA temp_store = MEMORY;
             PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};
             PRAGMA analysis_limit = {ANALYSIS_LIMIT};"
        ))
        .map_err(&error)?;
    add_saturating_sum(&connection).map_err(&error)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}

/// Opens a read-only connection, for queries and verification. It never creates the file and
/// cannot write to it, so it cannot upgrade one either: for a file older than version 5, a
/// temporary view (in the connection's own temporary schema, which names search first)
/// shows `entries` with the `imported` column those files lack, NULL in every row, which is
/// what the upgrade would add; likewise the cache writes and `priced_by` for a file older
/// than version 8, and `cost_hourly`'s zero cache writes and unpriced entries from version 5.
/// The `cost_hourly` of a file older than version 5 is of an older shape; `verify` leaves it
/// unchecked.
pub fn open_reader(path: &Path) -> Result<Connection, OpenError> {
    /// The columns of `entries` that version 8 added, as a file older than it reads.
    const VERSION_8_COLUMNS: &str =
        "NULL AS cache_write_tokens, NULL AS cache_write_1h_tokens, NULL AS priced_by";
    let error = sqlite_error(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(&error)?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(&error)?;
    add_saturating_sum(&connection).map_err(&error)?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&error)?;
    match version {
        SCHEMA_VERSION => Ok(connection),
        5..SCHEMA_VERSION => {
            connection
                .execute_batch(&format!(
                    "CREATE TEMP VIEW entries AS SELECT *, {VERSION_8_COLUMNS} FROM main.entries;
                     CREATE TEMP VIEW cost_hourly AS
                         SELECT *, 0 AS cache_write_tokens, 0 AS unpriced FROM main.cost_hourly;"
                ))
                .map_err(&error)?;
            Ok(connection)
        }
        1..5 => {
            connection
                .execute_batch(&format!(
                    "CREATE TEMP VIEW entries AS
                         SELECT *, NULL AS imported, {VERSION_8_COLUMNS} FROM main.entries"
                ))
                .map_err(&error)?;
            Ok(connection)
        }
        0 => Err(OpenError::Foreign {
            path: path.display().to_string(),
        }),
        found => Err(OpenError::NewerSchema {
            path: path.display().to_string(),
            found,
        }),
    }
}

/// Registers `ssum(x)`: the sum of the non-NULL integers `x`, 0 for none, stopping at the
/// largest integer instead of failing. SQLite's `sum` raises "integer overflow", so two
/// entries with absurd token counts from one client would break every report that adds
/// them up; the writer's roll-up saturates the same way, so reports agree with it.
fn add_saturating_sum(connection: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::{Aggregate, Context, FunctionFlags};
    struct SaturatingSum;
    impl Aggregate<i64, i64> for SaturatingSum {
        fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<i64> {
            Ok(0)
        }
        fn step(&self, context: &mut Context<'_>, sum: &mut i64) -> rusqlite::Result<()> {
            if let Some(value) = context.get::<Option<i64>>(0)? {
                *sum = sum.saturating_add(value);
            }
            Ok(())
        }
        fn finalize(&self, _: &mut Context<'_>, sum: Option<i64>) -> rusqlite::Result<i64> {
            Ok(sum.unwrap_or(0))
        }
    }
    connection.create_aggregate_function(
        "ssum",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        SaturatingSum,
    )
}

/// Begins a read transaction on `connection` unless one is open, so that every statement
/// until it is dropped reads the same snapshot. For a reader that puts several statements
/// together (a verification, a proof): read one by one, the log moves under it, an entry
/// committed after the walk counts in `cost_hourly` and not in the walk, and a prune step
/// removes tiles after `log_start` was read. A caller that checks several things against one
/// state begins the transaction itself and holds it throughout. The price: while it lasts,
/// the WAL cannot be checkpointed past the snapshot.
pub fn snapshot(connection: &Connection) -> rusqlite::Result<Option<rusqlite::Transaction<'_>>> {
    if !connection.is_autocommit() {
        return Ok(None);
    }
    connection.unchecked_transaction().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::row::COLUMNS;

    #[test]
    fn the_table_has_the_columns_of_the_row_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let connection =
            open_writer(&dir.path().join("witness.db"), Durability::Normal, 1024).unwrap();
        let names: Vec<String> = connection
            .prepare("SELECT name FROM pragma_table_info('entries') ORDER BY cid")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(names, COLUMNS);
    }
}
