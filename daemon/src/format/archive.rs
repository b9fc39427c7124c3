//! Archive segments: the entries pruned from the live log, sealed into files of their own.
//!
//! A segment is an SQLite file holding a range of `seq` that starts and ends on a tile edge
//! (256 entries): its rows in the live log's `entries` table, unchanged and with no index,
//! the level-0 tiles of the range (its leaf hashes), the signed checkpoints that cover it,
//! and one `segment` row with its range and the chain hashes before its first entry and of
//! its last. Anyone can open it with `sqlite3`; `verify::verify_segment` checks it alone, and
//! the live log's `segments` table (with each file's SHA-256) and its level-1 tiles tie it to
//! the log. SQLite rather than compressed JSON lines: the same schema as the live log, so the
//! same queries, tools and verifier work on both.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::Digest;
use witness_protocol::merkle::Hash;

use crate::format::cost;
use crate::format::schema;
use crate::format::tree::PrunedTiles;

/// Leaves in a level-0 tile.
const TILE_WIDTH: u64 = crate::format::tree::TILE_WIDTH as u64;

/// Why a segment could not be written and sealed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The segment file, or the live log it copies from, could not be read or written.
    #[error("writing {}: {source}", .path.display())]
    Sqlite {
        /// The segment file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("{action} {}: {source}", .path.display())]
    File {
        /// What was being done: removing, syncing, renaming.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The live log no longer holds every entry of the range.
    #[error("the live log holds {copied} of the entries {first} to {last}")]
    Short {
        /// Entries copied.
        copied: u64,
        /// The range's first entry.
        first: u64,
        /// The range's last entry.
        last: u64,
    },
}

/// Why an archived entry or tile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// No segment the log recorded covers the entry.
    #[error("entry {seq} is in no archive segment")]
    Uncovered {
        /// The entry.
        seq: u64,
    },
    /// The entry was pruned with `archive = false`: its range was dropped.
    #[error("entry {seq} was pruned without an archive (entries {first} to {last} were dropped)")]
    Dropped {
        /// The entry.
        seq: u64,
        /// The dropped range's first entry.
        first: u64,
        /// The dropped range's last entry.
        last: u64,
    },
    /// The segment file the log recorded is not in the folder.
    #[error("entry {seq} is archived in {}, which is missing", .path.display())]
    Missing {
        /// The entry.
        seq: u64,
        /// Where the segment should be.
        path: PathBuf,
    },
    /// The segment file could not be read.
    #[error("{}: {source}", .path.display())]
    Sqlite {
        /// The segment file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// The `segment` table of an archive segment: one row.
pub const SEGMENT: &str = "
CREATE TABLE segment (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    previous  BLOB    NOT NULL,
    last_hash BLOB    NOT NULL,
    sealed    INTEGER NOT NULL
) STRICT;
";

/// The name of the segment file of `first..=last`: sorted by name, segments are in log order
/// (up to a trillion entries).
pub fn file_name(first: u64, last: u64) -> String {
    format!("segment-{first:012}-{last:012}.db")
}

/// The range a segment file's name gives, if it is one.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let range = name.strip_prefix("segment-")?.strip_suffix(".db")?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// A range pruned from the log, as its `segments` table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The first `seq` of the range.
    pub first_seq: u64,
    /// The last `seq` of the range.
    pub last_seq: u64,
    /// The chain hash of the entry before the first (the genesis hash for seq 1).
    pub previous: Hash,
    /// The chain hash of the last entry.
    pub last_hash: Hash,
    /// The segment file's name in the archive folder; `None` when the range was dropped.
    pub file: Option<String>,
    /// The file's SHA-256, as sealed.
    pub sha256: Option<Hash>,
    /// The file's size in bytes, as sealed.
    pub bytes: Option<u64>,
    /// When it was sealed, in nanoseconds since the epoch.
    pub sealed: i64,
}

impl Segment {
    /// Every range the log at `connection` pruned, oldest first; none for a file older than
    /// version 6.
    pub fn all(connection: &Connection) -> rusqlite::Result<Vec<Segment>> {
        let has_table: bool = connection.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'segments'",
            [],
            |row| row.get(0),
        )?;
        if !has_table {
            return Ok(Vec::new());
        }
        let mut statement = connection.prepare(
            "SELECT first_seq, last_seq, previous, last_hash, file, sha256, bytes, sealed \
             FROM segments ORDER BY first_seq",
        )?;
        let hash = |bytes: Vec<u8>| <[u8; 32]>::try_from(bytes.as_slice()).unwrap_or([0; 32]);
        statement
            .query_map([], |row| {
                Ok(Segment {
                    first_seq: row.get::<_, i64>(0)? as u64,
                    last_seq: row.get::<_, i64>(1)? as u64,
                    previous: hash(row.get(2)?),
                    last_hash: hash(row.get(3)?),
                    file: row.get(4)?,
                    sha256: row.get::<_, Option<Vec<u8>>>(5)?.map(hash),
                    bytes: row.get::<_, Option<i64>>(6)?.map(|bytes| bytes as u64),
                    sealed: row.get(7)?,
                })
            })?
            .collect()
    }

    /// Records the range in the live log's `segments` table.
    pub fn record(&self, connection: &Connection) -> rusqlite::Result<()> {
        connection.execute(
            "INSERT INTO segments (first_seq, last_seq, previous, last_hash, file, sha256, \
             bytes, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            (
                self.first_seq as i64,
                self.last_seq as i64,
                &self.previous[..],
                &self.last_hash[..],
                &self.file,
                self.sha256.as_ref().map(|hash| &hash[..]),
                self.bytes.map(|bytes| bytes as i64),
                self.sealed,
            ),
        )?;
        Ok(())
    }

    /// Entries in the range.
    pub fn entries(&self) -> u64 {
        self.last_seq + 1 - self.first_seq
    }
}

/// The SHA-256 of a file and its size.
pub fn sha256_file(path: &Path) -> std::io::Result<(Hash, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((hasher.finalize().into(), bytes))
}

/// Where a segment is written before it is sealed: a hidden name, so that a crash leaves
/// nothing that looks like a segment, and start-up removes it.
pub fn temporary_path(dir: &Path, first: u64, last: u64) -> PathBuf {
    dir.join(format!(".{}.tmp", file_name(first, last)))
}

/// Whether a file name in the archive folder is a segment left half written by a crash.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(".segment-") && name.ends_with(".db.tmp")
}

/// How many entries [`write`] copies per read of the live log.
const COPY_CHUNK: u64 = 4096;

/// Writes the entries `first..=last` of the live log at `live`, with their level-0 tiles, the
/// checkpoints that cover them and the `segment` row (`previous` and `last_hash` as the live
/// log gives them), to a new segment file at `path`, committed and fsynced.
pub fn write(
    live: &Connection,
    path: &Path,
    first: u64,
    last: u64,
    previous: Hash,
    last_hash: Hash,
    sealed: i64,
) -> Result<(), WriteError> {
    let sqlite = |source: rusqlite::Error| WriteError::Sqlite {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(WriteError::File {
                action: "removing",
                path: path.to_owned(),
                source,
            });
        }
        _ => {}
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut archive = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    archive
        .execute_batch("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;")
        .map_err(sqlite)?;
    let transaction = archive.transaction().map_err(sqlite)?;
    for table in [schema::ENTRIES, schema::TILES, schema::CHECKPOINTS, SEGMENT] {
        transaction.execute_batch(table).map_err(sqlite)?;
    }
    {
        let mut select = live
            .prepare("SELECT * FROM entries WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")
            .map_err(sqlite)?;
        let columns = select.column_count();
        let placeholders = vec!["?"; columns].join(", ");
        let mut insert = transaction
            .prepare(&format!("INSERT INTO entries VALUES ({placeholders})"))
            .map_err(sqlite)?;
        let mut values = Vec::with_capacity(columns);
        let mut copied = 0u64;
        // In chunks, each its own read: one statement over the whole range would hold a
        // snapshot of the live log for as long as the copy takes, and no checkpoint could
        // move the WAL past it meanwhile. The rows copied never change, so nothing is lost
        // by reading them in pieces.
        let mut from = first;
        while from <= last {
            let to = last.min(from + COPY_CHUNK - 1);
            let mut rows = select.query([from as i64, to as i64]).map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                values.clear();
                for index in 0..columns {
                    values.push(
                        row.get::<_, rusqlite::types::Value>(index)
                            .map_err(sqlite)?,
                    );
                }
                insert
                    .execute(rusqlite::params_from_iter(values.iter()))
                    .map_err(sqlite)?;
                copied += 1;
            }
            from = to + 1;
        }
        if copied != last + 1 - first {
            return Err(WriteError::Short {
                copied,
                first,
                last,
            });
        }
        let width = TILE_WIDTH;
        let mut tiles = live
            .prepare("SELECT idx, hashes FROM tiles WHERE level = 0 AND idx BETWEEN ?1 AND ?2")
            .map_err(sqlite)?;
        let mut tiles = tiles
            .query([((first - 1) / width) as i64, (last / width) as i64 - 1])
            .map_err(sqlite)?;
        while let Some(row) = tiles.next().map_err(sqlite)? {
            transaction
                .execute(
                    "INSERT INTO tiles (level, idx, hashes) VALUES (0, ?1, ?2)",
                    (
                        row.get::<_, i64>(0).map_err(sqlite)?,
                        row.get::<_, Vec<u8>>(1).map_err(sqlite)?,
                    ),
                )
                .map_err(sqlite)?;
        }
        let mut notes = live
            .prepare(
                "SELECT size, note FROM checkpoints WHERE size >= ?1 AND size <= \
                 coalesce((SELECT min(size) FROM checkpoints WHERE size >= ?2), ?2)",
            )
            .map_err(sqlite)?;
        let mut notes = notes.query([first as i64, last as i64]).map_err(sqlite)?;
        while let Some(row) = notes.next().map_err(sqlite)? {
            transaction
                .execute(
                    "INSERT INTO checkpoints (size, note) VALUES (?1, ?2)",
                    (
                        row.get::<_, i64>(0).map_err(sqlite)?,
                        row.get::<_, String>(1).map_err(sqlite)?,
                    ),
                )
                .map_err(sqlite)?;
        }
    }
    transaction
        .execute(
            "INSERT INTO segment (one, first_seq, last_seq, previous, last_hash, sealed) \
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            (
                first as i64,
                last as i64,
                &previous[..],
                &last_hash[..],
                sealed,
            ),
        )
        .map_err(sqlite)?;
    transaction
        .execute_batch(&format!("PRAGMA user_version = {}", schema::SCHEMA_VERSION))
        .map_err(sqlite)?;
    transaction.commit().map_err(sqlite)?;
    archive.close().map_err(|(_, error)| sqlite(error))?;
    Ok(())
}

/// Forces a written file to disk.
pub fn sync_file(path: &Path) -> Result<(), WriteError> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|source| WriteError::File {
            action: "syncing",
            path: path.to_owned(),
            source,
        })
}

/// Gives a written, synced and verified segment its name, and makes the name durable.
pub fn seal(temporary: &Path, sealed: &Path) -> Result<(), WriteError> {
    std::fs::rename(temporary, sealed).map_err(|source| WriteError::File {
        action: "renaming to its sealed name",
        path: temporary.to_owned(),
        source,
    })?;
    sync_file(sealed.parent().unwrap_or(Path::new(".")))
}

/// Opens a segment file for reading. A segment sealed before version 8 has no cache-write or
/// price columns; a temporary view shows its rows with them NULL, as they were.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let current: bool = connection.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('entries') WHERE name = 'priced_by'",
        [],
        |row| row.get(0),
    )?;
    if !current {
        connection.execute_batch(
            "CREATE TEMP VIEW entries AS SELECT *, NULL AS cache_write_tokens,
                 NULL AS cache_write_1h_tokens, NULL AS priced_by FROM main.entries",
        )?;
    }
    Ok(connection)
}

/// The archive segments of a pruned log, opened on demand: where proofs of archived entries
/// find their leaves.
pub struct Archives {
    dir: PathBuf,
    segments: Vec<Segment>,
    open: HashMap<u64, (PathBuf, Connection)>,
}

impl Archives {
    /// The segments the log at `live` recorded, in the folder `dir`.
    pub fn load(live: &Connection, dir: &Path) -> rusqlite::Result<Archives> {
        Ok(Archives {
            dir: dir.to_owned(),
            segments: Segment::all(live)?,
            open: HashMap::new(),
        })
    }

    /// The segment that holds `seq`, opened.
    fn holding(&mut self, seq: u64) -> Result<&(PathBuf, Connection), ArchiveError> {
        let Some(segment) = self
            .segments
            .iter()
            .find(|segment| (segment.first_seq..=segment.last_seq).contains(&seq))
        else {
            return Err(ArchiveError::Uncovered { seq });
        };
        let Some(file) = &segment.file else {
            return Err(ArchiveError::Dropped {
                seq,
                first: segment.first_seq,
                last: segment.last_seq,
            });
        };
        let first = segment.first_seq;
        if !self.open.contains_key(&first) {
            let path = self.dir.join(file);
            if !path.exists() {
                return Err(ArchiveError::Missing { seq, path });
            }
            let connection = open(&path).map_err(|source| ArchiveError::Sqlite {
                path: path.clone(),
                source,
            })?;
            self.open.insert(first, (path, connection));
        }
        Ok(&self.open[&first])
    }

    /// The level-0 tile `idx` (the leaf hashes of entries `256 × idx + 1` on), from the
    /// segment that holds it.
    pub fn tile(&mut self, idx: u64) -> Result<Vec<Hash>, ArchiveError> {
        let blob: Option<Vec<u8>> = self.with_entry(idx * TILE_WIDTH + 1, |connection| {
            connection
                .query_row(
                    "SELECT hashes FROM tiles WHERE level = 0 AND idx = ?1",
                    [idx as i64],
                    |row| row.get(0),
                )
                .optional()
        })?;
        Ok(blob
            .unwrap_or_default()
            .chunks_exact(32)
            .map(|chunk| chunk.try_into().expect("32 bytes"))
            .collect())
    }

    /// Runs `read` on the segment that holds `seq`.
    pub fn with_entry<T>(
        &mut self,
        seq: u64,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ArchiveError> {
        let (path, connection) = self.holding(seq)?;
        read(connection).map_err(|source| ArchiveError::Sqlite {
            path: path.clone(),
            source,
        })
    }
}

impl PrunedTiles for Archives {
    fn leaf_tile(&mut self, idx: u64) -> Option<Vec<Hash>> {
        self.tile(idx).ok()
    }
}

/// Deletes the entries `from..=to` (the first the live log holds) in one transaction: their
/// sums (`costs`, when the archiver summed them already) leave `cost_hourly`, runs wholly
/// among them leave `producer_runs`, the log's start moves past them, and with `last` the
/// level-0 tiles up to `to` go.
pub fn delete_pruned(
    connection: &mut Connection,
    from: u64,
    to: u64,
    last: bool,
    costs: Option<cost::CostGroups>,
) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let hash: Vec<u8> = transaction.query_row(
        "SELECT hash FROM entries WHERE seq = ?1",
        [to as i64],
        |row| row.get(0),
    )?;
    let groups = match costs {
        Some(groups) => groups,
        None => cost::range_costs(&transaction, from, to)?,
    };
    transaction.execute(
        "DELETE FROM entries WHERE seq BETWEEN ?1 AND ?2",
        [from as i64, to as i64],
    )?;
    cost::subtract_from_hourly(&transaction, groups)?;
    transaction.execute(
        "DELETE FROM producer_runs WHERE first_seq <= ?1 AND first_seq + entries - 1 <= ?1",
        [to as i64],
    )?;
    transaction.execute(
        "INSERT OR REPLACE INTO log_start (one, first_seq, previous) VALUES (1, ?1, ?2)",
        (to as i64 + 1, hash),
    )?;
    if last {
        transaction.execute(
            "DELETE FROM tiles WHERE level = 0 AND idx < ?1",
            [(to / crate::format::tree::TILE_WIDTH as u64) as i64],
        )?;
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_read_back() {
        assert_eq!(file_name(1, 65_536), "segment-000000000001-000000065536.db");
        assert_eq!(parse_name(&file_name(257, 512)), Some((257, 512)));
        for garbage in [
            "segment-1.db",
            "segment-a-b.db",
            "x-1-2.db",
            "segment-1-2.sqlite",
            "",
        ] {
            assert_eq!(parse_name(garbage), None, "{garbage}");
        }
        assert!(file_name(1, 256) < file_name(257, 512));
        assert!(is_temporary(".segment-000000000001-000000000256.db.tmp"));
        assert!(!is_temporary("segment-000000000001-000000000256.db"));
    }
}
