//! Re-verification of the log from what is stored, for the `Verify` request and for
//! `witness verify --db` on a file with no daemon running.
//!
//! Every row must be accounted for: the chain is recomputed over the range asked, a row with
//! a sequence number outside `1..=head` (which no chain covers, yet every read would show)
//! breaks the log whatever the range, and when the whole log is verified the tables derived
//! from it (`cost_hourly`, which `witness cost` reports, and `producers` and
//! `producer_runs`, which decide what a re-send skips) must agree with the entries.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::{VerifyRange, VerifyReport};

use witness_protocol::note::{Checkpoint, VerifierKey};

use std::path::Path;

use crate::format::archive::{self, Segment};
use crate::format::chain::{GENESIS, leaf_hash};
use crate::format::cost::{self, CostSums, HourKey};
use crate::format::cursor::{Break, Cursor};
use crate::format::row::{self, Values, column};
use crate::format::schema;
use crate::format::tree::{TILE_WIDTH, Tiles, Tree};

mod archives;
mod runs;
mod segment;
mod walk;

pub use archives::{ArchivesReport, SegmentState, verify_archives, verify_checkpoint};
use runs::Runs;
pub use segment::{SegmentCheck, verify_segment};
use walk::Walk;

/// What a check of stored data found, when it could run: the data holds (with what the
/// check learned on the way), or it does not, said in a sentence. Every check here answers
/// `Result<Verdict<T>, VerifyError>`, the error meaning that it could not run at all.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verdict<T> {
    /// The data holds.
    Holds(T),
    /// The data does not hold: where and how, for a person.
    Fails(String),
}

impl<T> Verdict<T> {
    /// The verdict as a `Result`, for `?` and `match` in the callers that turn a failure
    /// into their own report.
    pub fn into_result(self) -> Result<T, String> {
        match self {
            Verdict::Holds(value) => Ok(value),
            Verdict::Fails(reason) => Err(reason),
        }
    }
}

/// Why a verification could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The range asked for is not a range of this log.
    #[error("{0}")]
    Range(String),
    /// The database could not be read.
    #[error("reading the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Checks a range before any database is read: `from` at least 1, and not after `to`.
pub fn check_range(range: VerifyRange) -> Result<(), String> {
    if range.from == Some(0) {
        return Err("sequence numbers start at 1: --from must be at least 1".into());
    }
    if let (Some(from), Some(to)) = (range.from, range.to)
        && from > to
    {
        return Err(format!("the range from seq {from} to seq {to} is empty"));
    }
    Ok(())
}

/// Verifies `range` of the log: `from` (default, and at least, the log's first stored seq:
/// 1 unless it was pruned) through `to` (default, and at most, the head). A range that starts
/// past the head, or before the log's start, is an error, not a verdict.
pub fn verify(connection: &Connection, range: VerifyRange) -> Result<VerifyReport, VerifyError> {
    verify_from(connection, range, None)
}

/// [`verify`], with the tree of the entries before the log's start given (rebuilt from the
/// archives) instead of read from the tree hashes the live log keeps for them.
pub fn verify_from(
    connection: &Connection,
    range: VerifyRange,
    before: Option<Tree>,
) -> Result<VerifyReport, VerifyError> {
    check_range(range).map_err(VerifyError::Range)?;
    let _snapshot = schema::snapshot(connection)?;
    let (start, start_hash) = schema::log_start(connection)?;
    let (head, lowest): (Option<i64>, Option<i64>) =
        connection.query_row("SELECT max(seq), min(seq) FROM entries", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    if let Some(lowest) = lowest.filter(|&lowest| lowest < start as i64) {
        return Ok(broken(
            lowest.max(0) as u64,
            if start == 1 {
                format!(
                    "a row has seq {lowest}: sequence numbers start at 1, and no chain covers it \
                     (yet tail, export and cost would show it)"
                )
            } else {
                format!(
                    "a row has seq {lowest}, before the log's start at seq {start}: no chain \
                     covers it (yet tail, export and cost would show it)"
                )
            },
            0,
        ));
    }
    let head = head.unwrap_or(0) as u64;
    let from = range.from.unwrap_or(start);
    if from < start {
        return Err(VerifyError::Range(format!(
            "the log starts at seq {start}: the entries before it were pruned (see `witness \
             archive list`); verify them with `witness verify --with-archives`"
        )));
    }
    if from > head.max(start) {
        return Err(VerifyError::Range(format!(
            "the log ends at seq {head}: --from {from} is past it"
        )));
    }
    let to = range.to.map_or(head, |to| to.min(head));
    let whole = from == start && to == head;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    // Derived tables are checked only against the whole log, and only those the file's
    // version has.
    let tree = match (whole && version >= 4, before) {
        (false, _) => None,
        (true, Some(tree)) => Some(tree),
        (true, None) => match Tree::load_start(connection, start - 1) {
            Ok(tree) => Some(tree),
            Err(reason) => return Ok(inconsistent("tiles", reason.to_string(), 0)),
        },
    };
    let mut walk = Walk::new(whole, whole && version >= 3, tree);
    walk.start = start;
    if let Some(runs) = &mut walk.runs {
        runs.begin(connection, start)?;
    }
    let anchor = (from == start).then_some(start_hash);
    let report = walk.chain(connection, from, to, anchor)?;
    if !whole || !matches!(report, VerifyReport::Intact { .. }) {
        return Ok(report);
    }
    let checked = walk.count;
    // Before version 5, `cost_hourly` had other columns and hours of the receive time.
    if version >= 5
        && let Verdict::Fails(reason) = walk.check_costs(connection)?
    {
        return Ok(inconsistent("cost_hourly", reason, checked));
    }
    if let Some(runs) = &walk.runs
        && let Verdict::Fails(reason) = runs.finish(connection)?
    {
        return Ok(inconsistent("producer_runs", reason, checked));
    }
    if let Verdict::Fails(reason) = walk.check_producers(connection)? {
        return Ok(inconsistent("producers", reason, checked));
    }
    if let Verdict::Fails(reason) = walk.check_tiles(connection)? {
        return Ok(inconsistent("tiles", reason, checked));
    }
    Ok(report)
}

fn broken(seq: u64, reason: String, checked: u64) -> VerifyReport {
    VerifyReport::Broken {
        seq,
        reason,
        checked,
    }
}

fn inconsistent(table: &str, reason: String, checked: u64) -> VerifyReport {
    VerifyReport::Inconsistent {
        table: table.to_owned(),
        reason,
        checked,
    }
}

fn show_seq(seq: Option<i64>) -> String {
    seq.map_or("nothing".to_owned(), |seq| seq.to_string())
}

/// The stored hash of the row before `from` (entry `from - 1`), or why there is none.
fn anchor(connection: &Connection, from: u64) -> Result<Verdict<[u8; 32]>, VerifyError> {
    if from == 1 {
        return Ok(Verdict::Holds(GENESIS));
    }
    let stored: Option<Vec<u8>> = connection
        .query_row(
            "SELECT hash FROM entries WHERE seq = ?1",
            [from as i64 - 1],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match stored.map(<[u8; 32]>::try_from) {
        Some(Ok(hash)) => Verdict::Holds(hash),
        Some(Err(_)) => Verdict::Fails("its hash is not 32 bytes long".into()),
        None => Verdict::Fails("it is missing, so the range has no anchor".into()),
    })
}
