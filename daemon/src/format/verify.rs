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

use witness_protocol::note::{Checkpoint, Note, VerifierKey};

use std::path::Path;

use crate::format::archive::{self, Segment};
use crate::format::chain::{DOMAIN_TAG, GENESIS, hash_row, leaf_hash};
use crate::format::cost::{self, CostSums, HourKey};
use crate::format::row::{self, Values, column};
use crate::format::schema;
use crate::format::tree::{TILE_WIDTH, Tiles, Tree};

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
            Err(reason) => return Ok(inconsistent("tiles", reason, 0)),
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
        && let Some(reason) = walk.check_costs(connection)?
    {
        return Ok(inconsistent("cost_hourly", reason, checked));
    }
    if let Some(runs) = &walk.runs
        && let Some(reason) = runs.finish(connection)?
    {
        return Ok(inconsistent("producer_runs", reason, checked));
    }
    if let Some(reason) = walk.check_producers(connection)? {
        return Ok(inconsistent("producers", reason, checked));
    }
    if let Some(reason) = walk.check_tiles(connection)? {
        return Ok(inconsistent("tiles", reason, checked));
    }
    Ok(report)
}

/// What [`verify_segment`] found in an archive segment that holds together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The first and last `seq` it holds.
    pub first_seq: u64,
    /// The last `seq` it holds.
    pub last_seq: u64,
    /// The chain hash before its first entry, as it records it.
    pub previous: [u8; 32],
    /// The chain hash of its last entry.
    pub last_hash: [u8; 32],
    /// The leaf hashes of its entries, in order.
    pub leaves: Vec<[u8; 32]>,
}

/// Verifies an archive segment on its own: its entries make an unbroken chain from the hash
/// it records before them to the one it records for the last, every `seq` of its range is
/// there, and its level-0 tiles are its entries' leaf hashes. `Err` says what is wrong, in a
/// sentence.
pub fn verify_segment(
    connection: &Connection,
) -> Result<Result<SegmentCheck, String>, VerifyError> {
    let segment: Option<(i64, i64, Vec<u8>, Vec<u8>)> = connection
        .query_row(
            "SELECT first_seq, last_seq, previous, last_hash FROM segment",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()
        .or_else(|error| match error {
            rusqlite::Error::SqliteFailure(_, Some(ref message))
                if message.starts_with("no such table") =>
            {
                Ok(None)
            }
            error => Err(error),
        })?;
    let Some((first, last, previous, last_hash)) = segment else {
        return Ok(Err(
            "it is not an archive segment: it has no segment row".into()
        ));
    };
    let (Ok(previous), Ok(last_hash)) = (
        <[u8; 32]>::try_from(previous.as_slice()),
        <[u8; 32]>::try_from(last_hash.as_slice()),
    ) else {
        return Ok(Err(
            "its segment row holds a hash that is not 32 bytes long".into(),
        ));
    };
    if first < 1 || last < first {
        return Ok(Err(format!("its segment row says seq {first} to {last}")));
    }
    let (first, last) = (first as u64, last as u64);
    let (lowest, highest): (Option<i64>, Option<i64>) =
        connection.query_row("SELECT min(seq), max(seq) FROM entries", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    if lowest.is_some_and(|lowest| lowest < first as i64)
        || highest.is_some_and(|highest| highest > last as i64)
    {
        return Ok(Err(format!(
            "it holds entries outside its range, seq {first} to {last}"
        )));
    }
    let mut walk = Walk::new(false, false, None);
    walk.leaves = Some(Vec::with_capacity((last - first + 1) as usize));
    match walk.chain(connection, first, last, Some(previous))? {
        VerifyReport::Intact { head_hash, .. } => {
            if head_hash != Some(last_hash) {
                return Ok(Err(format!(
                    "its last entry, {last}, hashes to {}, not to the {} its segment row records",
                    head_hash.map_or("nothing".into(), hex::encode),
                    hex::encode(last_hash)
                )));
            }
        }
        VerifyReport::Broken { seq, reason, .. } => {
            return Ok(Err(format!("BROKEN at seq {seq}: {reason}")));
        }
        VerifyReport::Inconsistent { table, reason, .. } => {
            return Ok(Err(format!("INCONSISTENT {table}: {reason}")));
        }
    }
    let leaves = walk.leaves.take().unwrap_or_default();
    let mut tiles = Tiles::new(connection);
    let width = crate::format::tree::TILE_WIDTH as u64;
    if (first - 1) % width != 0 || last % width != 0 {
        return Ok(Err(format!(
            "its range, seq {first} to {last}, does not start and end on tile edges"
        )));
    }
    for (n, chunk) in leaves.chunks(width as usize).enumerate() {
        let idx = (first - 1) / width + n as u64;
        if tiles.tile(0, idx)? != chunk {
            return Ok(Err(format!(
                "tile 0/{idx} (the leaves of entries {} to {}) is missing or differs from \
                 the entries' leaf hashes",
                idx * width + 1,
                (idx + 1) * width
            )));
        }
    }
    Ok(Ok(SegmentCheck {
        first_seq: first,
        last_seq: last,
        previous,
        last_hash,
        leaves,
    }))
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

/// The state of one pass over the rows: the chain, and (for a whole-log pass) what the
/// derived tables must hold, recomputed from the entries.
struct Walk {
    derive: bool,
    count: u64,
    /// Texts seen in `cost_hourly` keys, numbered, so that a key is four integers.
    names: HashMap<String, u32>,
    costs: HashMap<(i64, u32, u32, u32), CostSums>,
    producers: HashMap<i64, i64>,
    /// What `producer_runs` must hold, when the file has it and the whole log is walked.
    runs: Option<Runs>,
    /// The Merkle tree recomputed from the entries, on a thread of its own, when the file
    /// has tiles and the whole log is walked; with the first tile found to differ.
    tree: Option<TreeWorker>,
    tile_problem: Option<String>,
    /// The log's first stored seq: tiles and producers before it were pruned.
    start: u64,
    /// Every leaf hash walked, when a segment's tiles are to be checked.
    leaves: Option<Vec<[u8; 32]>>,
}

/// A tile the tree's thread completed: level, index and hashes.
type FullTile = (u32, u64, Vec<[u8; 32]>);

/// Rows in a batch sent to the tree's thread.
const TREE_BATCH: usize = 4096;

/// The tree's thread: it takes the rows' encodings in batches, hashes the leaves, builds the
/// tree and sends back each full tile as it completes, so that the walk's own thread only
/// hashes the chain. Verification runs at the speed of the slower of the two.
struct TreeWorker {
    batch: Vec<u8>,
    lengths: Vec<u32>,
    send: Option<std::sync::mpsc::SyncSender<(Vec<u8>, Vec<u32>)>>,
    tiles: std::sync::mpsc::Receiver<FullTile>,
    thread: Option<std::thread::JoinHandle<Tree>>,
}

impl TreeWorker {
    /// Starts the thread, extending `tree` (empty, or the tree before the log's start).
    fn start(mut tree: Tree) -> TreeWorker {
        let (send, batches) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<u32>)>(4);
        let (tiles_out, tiles) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            for (data, lengths) in batches {
                let mut at = 0usize;
                for length in lengths {
                    let end = at + length as usize;
                    tree.push(witness_protocol::merkle::leaf_hash(&data[at..end]));
                    at = end;
                    for tile in tree.take_full() {
                        if tiles_out.send(tile).is_err() {
                            return tree;
                        }
                    }
                }
            }
            tree
        });
        TreeWorker {
            batch: Vec::with_capacity(TREE_BATCH * 256),
            lengths: Vec::with_capacity(TREE_BATCH),
            send: Some(send),
            tiles,
            thread: Some(thread),
        }
    }

    /// Adds a row by its canonical encoding.
    fn push(&mut self, encoding: &[u8]) {
        self.batch.extend_from_slice(encoding);
        self.lengths.push(encoding.len() as u32);
        if self.lengths.len() == TREE_BATCH {
            self.send_batch();
        }
    }

    fn send_batch(&mut self) {
        let batch = (
            std::mem::replace(&mut self.batch, Vec::with_capacity(TREE_BATCH * 256)),
            std::mem::replace(&mut self.lengths, Vec::with_capacity(TREE_BATCH)),
        );
        if let Some(send) = &self.send {
            let _ = send.send(batch);
        }
    }

    /// Full tiles completed so far, taken.
    fn completed(&mut self) -> Vec<FullTile> {
        self.tiles.try_iter().collect()
    }

    /// Sends what is left, waits for the thread, and returns the tree and the last full
    /// tiles.
    fn finish(&mut self) -> (Tree, Vec<FullTile>) {
        self.send_batch();
        self.send = None;
        let tree = self
            .thread
            .take()
            .map(|thread| thread.join().expect("the tree's thread does not panic"))
            .unwrap_or_default();
        (tree, self.tiles.try_iter().collect())
    }
}

impl Walk {
    fn new(derive: bool, runs: bool, tree: Option<Tree>) -> Walk {
        Walk {
            derive,
            count: 0,
            names: HashMap::new(),
            costs: HashMap::new(),
            producers: HashMap::new(),
            runs: runs.then(Runs::default),
            tree: tree.map(TreeWorker::start),
            tile_problem: None,
            start: 1,
            leaves: None,
        }
    }

    fn name(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.names.get(text) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.insert(text.to_owned(), id);
        id
    }

    /// Walks the rows of `from..=to` in order and recomputes each hash from `anchor`, else
    /// from the stored hash of the row before. Stops at the first row that does not match,
    /// or at a gap.
    fn chain(
        &mut self,
        connection: &Connection,
        from: u64,
        to: u64,
        anchor_hash: Option<[u8; 32]>,
    ) -> Result<VerifyReport, VerifyError> {
        let mut previous = match anchor_hash {
            Some(hash) => hash,
            None => match anchor(connection, from)? {
                Ok(hash) => hash,
                Err(report) => return Ok(report),
            },
        };
        let sql = format!(
            "SELECT {} FROM entries WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
            row::select_columns()
        );
        let mut statement = connection.prepare(&sql)?;
        let mut rows = statement.query([from as i64, to as i64])?;
        let mut find_run = match self.runs {
            Some(_) => Some(connection.prepare(
                "SELECT producer_id, first_number, entries, previous FROM producer_runs \
                 WHERE first_seq = ?1",
            )?),
            None => None,
        };
        let mut scratch = Vec::with_capacity(1024);
        let mut expected_seq = from as i64;
        let mut first_seq = None;
        let mut last_seq = None;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            if seq != expected_seq {
                return Ok(broken(
                    expected_seq as u64,
                    format!("it is missing: the next stored entry is {seq}"),
                    self.count,
                ));
            }
            let values = match row::read_values(row) {
                Ok(values) => values,
                Err(reason) => return Ok(broken(seq as u64, reason, self.count)),
            };
            let stored = row::stored_hash(row)?;
            let computed = hash_row(&previous, &values, &mut scratch);
            if stored != computed {
                return Ok(broken(
                    seq as u64,
                    format!(
                        "stored hash {} does not match {} computed from its fields and {}",
                        hex::encode(stored),
                        hex::encode(computed),
                        if seq == 1 {
                            "the genesis hash".to_owned()
                        } else if seq as u64 == from && anchor_hash.is_some() {
                            format!("the hash recorded for entry {} before the start", seq - 1)
                        } else {
                            format!("entry {}", seq - 1)
                        }
                    ),
                    self.count,
                ));
            }
            if self.derive {
                self.derive_from(&values);
            }
            if let (Some(runs), Some(find_run)) = (&mut self.runs, &mut find_run) {
                runs.add(find_run, seq, &values)?;
            }
            if let Some(leaves) = &mut self.leaves {
                leaves.push(witness_protocol::merkle::leaf_hash(
                    &scratch[DOMAIN_TAG.len() + 32..],
                ));
            }
            if let Some(tree) = &mut self.tree {
                // `hash_row` left the encoding after the tag and the previous hash.
                tree.push(&scratch[DOMAIN_TAG.len() + 32..]);
                for (level, idx, hashes) in tree.completed() {
                    if self.tile_problem.is_none() {
                        self.tile_problem = compare_tile(connection, level, idx, &hashes)?;
                    }
                }
            }
            previous = computed;
            first_seq.get_or_insert(seq as u64);
            last_seq = Some(seq as u64);
            self.count += 1;
            expected_seq += 1;
        }
        if expected_seq <= to as i64 {
            return Ok(broken(
                expected_seq as u64,
                "it is missing: the log ends before it".into(),
                self.count,
            ));
        }
        Ok(VerifyReport::Intact {
            count: self.count,
            first_seq,
            last_seq,
            head_hash: last_seq.map(|_| previous),
        })
    }

    /// Adds a verified row to what `cost_hourly` and `producers` must hold.
    fn derive_from(&mut self, values: &Values<'_>) {
        let integer = |index: usize| values[index].integer();
        let hour = schema::hour_of(
            integer(column::CLIENT_TS)
                .or(integer(column::TS))
                .unwrap_or(0),
        );
        let key = (
            hour,
            self.name(values[column::COMPONENT].text()),
            self.name(values[column::EVENT].text()),
            self.name(values[column::MODEL].text()),
        );
        self.costs
            .entry(key)
            .or_default()
            .add(&CostSums::of_columns([
                integer(column::TOKENS_IN),
                integer(column::TOKENS_OUT),
                integer(column::CACHE_READ_TOKENS),
                integer(column::REASONING_TOKENS),
                integer(column::COST_MICRO_USD),
            ]));
        if let (Some(producer), Some(number)) = (
            integer(column::PRODUCER_ID),
            integer(column::PRODUCER_NUMBER),
        ) {
            let last = self.producers.entry(producer).or_insert(number);
            *last = (*last).max(number);
        }
    }

    /// Compares `cost_hourly` with the sums of the entries; the first difference, if any.
    fn check_costs(&self, connection: &Connection) -> Result<Option<String>, VerifyError> {
        let mut names: Vec<&str> = vec![""; self.names.len()];
        for (name, &id) in &self.names {
            names[id as usize] = name;
        }
        let expected: BTreeMap<HourKey, CostSums> = self
            .costs
            .iter()
            .map(|(&(hour, component, event, model), &sums)| {
                let key = HourKey {
                    hour,
                    component: names[component as usize].to_owned(),
                    event: names[event as usize].to_owned(),
                    model: names[model as usize].to_owned(),
                };
                (key, sums)
            })
            .collect();
        let stored = cost::read_hourly(connection)?;
        let group = |key: &HourKey| {
            format!(
                "hour {}, component {:?}, event {:?}, model {:?}",
                key.hour, key.component, key.event, key.model
            )
        };
        for (key, sums) in &expected {
            let found = stored.get(key);
            if found != Some(sums) {
                return Ok(Some(format!(
                    "{}: the entries sum to {}, the table says {}",
                    group(key),
                    sums.describe(),
                    found.map_or("nothing".to_owned(), CostSums::describe)
                )));
            }
        }
        if let Some((key, sums)) = stored.iter().find(|(key, _)| !expected.contains_key(key)) {
            return Ok(Some(format!(
                "{}: the table says {}, but no entry is in that group",
                group(key),
                sums.describe()
            )));
        }
        Ok(None)
    }

    /// Compares `producers` with the highest number stored for each producer, and (with
    /// `producer_runs`) its last run with the last run of its entries.
    fn check_producers(&self, connection: &Connection) -> Result<Option<String>, VerifyError> {
        if let Some(runs) = &self.runs {
            let mut statement = connection
                .prepare("SELECT producer_id, last_run FROM producers ORDER BY producer_id")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let (producer, last_run): (i64, Option<i64>) = (row.get(0)?, row.get(1)?);
                let expected = runs.last_run.get(&producer).copied();
                // A producer whose runs were all pruned points at one before the start.
                let pruned =
                    expected.is_none() && last_run.is_some_and(|run| run < self.start as i64);
                if last_run != expected && !pruned {
                    return Ok(Some(format!(
                        "producer {producer}: its last run starts at seq {}, the table says {} \
                         (a wrong run makes the daemon refuse its re-sent entries)",
                        show_seq(expected),
                        show_seq(last_run)
                    )));
                }
            }
        }
        let mut statement = connection.prepare("SELECT producer_id, last_number FROM producers")?;
        let stored: HashMap<i64, i64> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut expected: Vec<_> = self.producers.iter().collect();
        expected.sort();
        for (producer, last) in expected {
            match stored.get(producer) {
                Some(found) if found == last => {}
                found => {
                    return Ok(Some(format!(
                        "producer {producer}: its highest stored number is {last}, the table \
                         says {} (a wrong number makes the daemon skip or refuse its entries)",
                        found.map_or("nothing".to_owned(), i64::to_string)
                    )));
                }
            }
        }
        // A producer whose entries were all pruned keeps its last number, which exactly-once
        // still holds re-sends to.
        let mut extra: Vec<_> = stored
            .iter()
            .filter(|(producer, _)| self.start == 1 && !self.producers.contains_key(producer))
            .collect();
        extra.sort();
        if let Some((producer, last)) = extra.first() {
            return Ok(Some(format!(
                "producer {producer}: the table says {last}, but no entry of it is stored"
            )));
        }
        Ok(None)
    }
}

impl Walk {
    /// Compares the tiles not yet compared (the partial ones) with the recomputed tree, and
    /// the number of tiles stored with the number the tree has.
    fn check_tiles(&mut self, connection: &Connection) -> Result<Option<String>, VerifyError> {
        let Some(worker) = &mut self.tree else {
            return Ok(None);
        };
        let (tree, last) = worker.finish();
        for (level, idx, hashes) in last {
            if self.tile_problem.is_none() {
                self.tile_problem = compare_tile(connection, level, idx, &hashes)?;
            }
        }
        if let Some(problem) = &self.tile_problem {
            return Ok(Some(problem.clone()));
        }
        for (level, idx, hashes) in tree.partial_tiles() {
            if let Some(problem) = compare_tile(connection, level, idx, hashes)? {
                return Ok(Some(problem));
            }
        }
        let stored: i64 =
            connection.query_row("SELECT count(*) FROM tiles", [], |row| row.get(0))?;
        // The level-0 tiles of pruned entries went with them.
        let expected = tree.tile_count() - (self.start - 1) / TILE_WIDTH as u64;
        if stored as u64 != expected {
            return Ok(Some(format!(
                "the table holds {stored} tiles; the tree of the {} entries has {expected}{}",
                tree.size(),
                if self.start > 1 {
                    " besides the leaf tiles of the pruned entries"
                } else {
                    ""
                }
            )));
        }
        Ok(None)
    }
}

/// How a stored tile differs from the one recomputed from the entries, if it does.
fn compare_tile(
    connection: &Connection,
    level: u32,
    idx: u64,
    expected: &[[u8; 32]],
) -> Result<Option<String>, VerifyError> {
    let mut tiles = Tiles::new(connection);
    let stored = tiles.tile(level, idx)?;
    if stored == expected {
        return Ok(None);
    }
    let first = (level == 0).then(|| idx * 256 + 1);
    Ok(Some(match (stored.len(), first) {
        (0, _) => format!("tile {level}/{idx} is missing"),
        (n, _) if n != expected.len() => format!(
            "tile {level}/{idx} holds {n} hashes; the entries make {}",
            expected.len()
        ),
        (_, Some(first)) => format!(
            "tile 0/{idx} (the leaves of entries {first} to {}) differs from the entries' leaf \
             hashes",
            first + expected.len() as u64 - 1
        ),
        _ => format!("tile {level}/{idx} differs from the tree of the entries"),
    }))
}

fn show_seq(seq: Option<i64>) -> String {
    seq.map_or("nothing".to_owned(), |seq| seq.to_string())
}

/// The check of `producer_runs` during a whole-log walk: each producer's row either continues
/// the run open at the row before (same producer, next number) or starts a run that the
/// table holds under its `seq`, linked to the producer's run before.
#[derive(Default)]
struct Runs {
    /// The log's first stored seq.
    start: i64,
    /// The run being walked through: its start, producer, next number and entries left.
    open: Option<(i64, i64, i64, i64)>,
    /// First `seq` of each producer's last run so far.
    last_run: HashMap<i64, i64>,
    /// First `seq` of every run found, in order, to find table rows that start no run.
    starts: Vec<i64>,
    /// The first disagreement.
    problem: Option<String>,
}

impl Runs {
    /// Starts the walk at `start`, the log's first stored seq: a run that began before it,
    /// in the pruned entries, and goes on past it is open.
    fn begin(&mut self, connection: &Connection, start: u64) -> rusqlite::Result<()> {
        self.start = start as i64;
        if start == 1 {
            return Ok(());
        }
        let straddling: Option<(i64, i64, i64, i64)> = connection
            .query_row(
                "SELECT first_seq, producer_id, first_number, entries FROM producer_runs \
                 WHERE first_seq < ?1 ORDER BY first_seq DESC LIMIT 1",
                [start as i64],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        if let Some((first_seq, producer, first_number, entries)) = straddling
            && first_seq + entries > start as i64
        {
            let done = start as i64 - first_seq;
            self.open = Some((first_seq, producer, first_number + done, entries - done));
            self.last_run.insert(producer, first_seq);
            self.starts.push(first_seq);
        }
        Ok(())
    }

    fn add(
        &mut self,
        find_run: &mut rusqlite::Statement<'_>,
        seq: i64,
        values: &Values<'_>,
    ) -> rusqlite::Result<()> {
        if self.problem.is_some() {
            return Ok(());
        }
        let row = values[column::PRODUCER_ID]
            .integer()
            .zip(values[column::PRODUCER_NUMBER].integer());
        if let Some((start, producer, next, left)) = self.open
            && left > 0
        {
            if row == Some((producer, next)) {
                self.open = Some((start, producer, next + 1, left - 1));
            } else {
                self.problem = Some(format!(
                    "the run at seq {start} says entry {seq} is number {next} of producer \
                     {producer}, but it is not"
                ));
            }
            return Ok(());
        }
        let Some((producer, number)) = row else {
            return Ok(());
        };
        let stored: Option<(i64, i64, i64, Option<i64>)> = find_run
            .query_row([seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let previous = self.last_run.get(&producer).copied();
        match stored {
            Some((p, n, entries, link)) if (p, n) == (producer, number) && entries >= 1 => {
                // The first kept run of a producer may link to a pruned one.
                let pruned = previous.is_none() && link.is_some_and(|link| link < self.start);
                if link != previous && !pruned {
                    self.problem = Some(format!(
                        "the run at seq {seq} links to a run at seq {}, but producer \
                         {producer}'s run before it starts at seq {}",
                        show_seq(link),
                        show_seq(previous)
                    ));
                }
                self.open = Some((seq, producer, number + 1, entries - 1));
                self.last_run.insert(producer, seq);
                self.starts.push(seq);
            }
            _ => {
                self.problem = Some(format!(
                    "entry {seq} (number {number} of producer {producer}) starts a run, but \
                     no row of the table says so"
                ));
            }
        }
        Ok(())
    }

    /// The first disagreement, once every entry has been walked.
    fn finish(&self, connection: &Connection) -> Result<Option<String>, VerifyError> {
        if let Some(problem) = &self.problem {
            return Ok(Some(problem.clone()));
        }
        if let Some((start, _, _, left)) = self.open
            && left > 0
        {
            return Ok(Some(format!(
                "the run at seq {start} counts {left} entries more than the log holds"
            )));
        }
        let mut statement = connection.prepare("SELECT first_seq FROM producer_runs ORDER BY 1")?;
        let mut rows = statement.query([])?;
        let mut starts = self.starts.iter();
        while let Some(row) = rows.next()? {
            let first_seq: i64 = row.get(0)?;
            if starts.next() != Some(&first_seq) {
                return Ok(Some(format!(
                    "the table has a run at seq {first_seq}, where no run of the entries starts"
                )));
            }
        }
        Ok(None)
    }
}

/// The stored hash of the row before `from`, or the report of why there is none.
fn anchor(
    connection: &Connection,
    from: u64,
) -> Result<Result<[u8; 32], VerifyReport>, VerifyError> {
    if from == 1 {
        return Ok(Ok(GENESIS));
    }
    let stored: Option<Vec<u8>> = connection
        .query_row(
            "SELECT hash FROM entries WHERE seq = ?1",
            [from as i64 - 1],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match stored.map(<[u8; 32]>::try_from) {
        Some(Ok(hash)) => Ok(hash),
        Some(Err(_)) => Err(broken(from - 1, "its hash is not 32 bytes long".into(), 0)),
        None => Err(broken(
            from - 1,
            "it is missing, so the range has no anchor".into(),
            0,
        )),
    })
}

/// Holds a database to a signed checkpoint: the note must verify with `key`, and the first
/// `size` entries it signed must be, recomputed from the stored rows (not from the tiles),
/// the tree whose root it signed. With the chain intact over the whole log, this proves the
/// log is the one signed, grown since by appends only. `Ok` carries the checkpoint's size;
/// `Err(Ok(reason))` says how the log differs; `Err(Err(_))` that the database could not
/// be read. For a pruned log, the tree of the entries before its start is `before` (rebuilt
/// from the archives), else the one the tree hashes it kept for them give.
pub fn verify_checkpoint(
    connection: &Connection,
    note: &str,
    key: &VerifierKey,
    before: Option<Tree>,
) -> Result<u64, Result<String, VerifyError>> {
    let checkpoint = Note::parse(note)
        .and_then(|note| note.verify(key).map(str::to_owned))
        .and_then(|text| Checkpoint::parse(&text))
        .map_err(|error| {
            Ok(format!(
                "the checkpoint does not verify with the key: {error}"
            ))
        })?;
    let _snapshot = schema::snapshot(connection).map_err(|error| Err(error.into()))?;
    let (start, _) = schema::log_start(connection).map_err(|error| Err(error.into()))?;
    let mut tree = match before {
        Some(tree) => tree,
        None => Tree::load_start(connection, start - 1)
            .map_err(|reason| Ok(format!("the tree hashes kept for pruned entries: {reason}")))?,
    };
    if checkpoint.size < tree.size() {
        return Err(Ok(format!(
            "the checkpoint signs {} entries, all pruned from the log (which starts at seq \
             {start}): check it with the archives",
            checkpoint.size
        )));
    }
    let mut statement = connection
        .prepare(&format!(
            "SELECT {} FROM entries WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
            row::select_columns()
        ))
        .map_err(|error| Err(error.into()))?;
    let mut rows = statement
        .query([tree.size() as i64 + 1, checkpoint.size as i64])
        .map_err(|error| Err(error.into()))?;
    let mut scratch = Vec::with_capacity(1024);
    while let Some(stored) = rows.next().map_err(|error| Err(error.into()))? {
        let seq: i64 = stored.get(column::SEQ).map_err(|error| Err(error.into()))?;
        if seq as u64 != tree.size() + 1 {
            break;
        }
        let values =
            row::read_values(stored).map_err(|reason| Ok(format!("entry {seq}: {reason}")))?;
        tree.push(leaf_hash(&values, &mut scratch));
        // Only the leaf hashes are kept, not the tiles a database would store.
        let _ = tree.take_full();
    }
    if tree.size() < checkpoint.size {
        return Err(Ok(format!(
            "the checkpoint signs {} entries, but entries {} to {} are missing",
            checkpoint.size,
            tree.size() + 1,
            checkpoint.size
        )));
    }
    if tree.root() != checkpoint.root {
        return Err(Ok(format!(
            "the first {} entries are not those the checkpoint signed: their tree has another \
             root (the log was rewritten, or this is another log)",
            checkpoint.size
        )));
    }
    Ok(checkpoint.size)
}

/// What became of one pruned range, as [`verify_archives`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentState {
    /// Its file is there, unchanged, and verifies.
    Intact,
    /// It was dropped without an archive, as the log records.
    Dropped,
    /// Its file is not in the folder.
    Missing,
    /// Its file is there but is not what was sealed, or does not verify: why.
    Altered(String),
}

/// The archives of a pruned log checked against it: each range the log records, what became
/// of it, and every problem, in a sentence each.
#[derive(Debug, Clone)]
pub struct ArchivesReport {
    /// Each pruned range and its state, oldest first.
    pub segments: Vec<(Segment, SegmentState)>,
    /// Segment files in the folder that the log does not record (a prune interrupted
    /// between sealing and recording leaves one; the next prune seals it again).
    pub unrecorded: Vec<String>,
    /// What is wrong; empty when the archives and the live log are one unbroken log.
    pub problems: Vec<String>,
    /// The tree of every entry before the live log's start, rebuilt from the archives' leaves,
    /// when every pruned range was archived and verifies.
    pub tree: Option<Tree>,
}

/// Checks the archive segments in `dir` against the live log at `live`: every range the log
/// pruned must be there as sealed (its SHA-256), verify on its own, follow the range before it
/// in the chain, and hash to the tree hashes the live log kept for it; the last must end where
/// the live log starts. The tree rebuilt from them lets `verify_from` check the whole log.
pub fn verify_archives(live: &Connection, dir: &Path) -> Result<ArchivesReport, VerifyError> {
    let _snapshot = schema::snapshot(live)?;
    let segments = Segment::all(live)?;
    let (start, start_hash) = schema::log_start(live)?;
    let mut report = ArchivesReport {
        segments: Vec::new(),
        unrecorded: Vec::new(),
        problems: Vec::new(),
        tree: Some(Tree::default()),
    };
    let recorded: std::collections::HashSet<&str> = segments
        .iter()
        .filter_map(|segment| segment.file.as_deref())
        .collect();
    if let Ok(items) = std::fs::read_dir(dir) {
        let mut names: Vec<String> = items
            .filter_map(Result::ok)
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .filter(|name| archive::parse_name(name).is_some() && !recorded.contains(name.as_str()))
            .collect();
        names.sort();
        report.unrecorded = names;
    } else if !segments.is_empty() {
        report.problems.push(format!(
            "the archive folder {} cannot be read",
            dir.display()
        ));
    }
    let mut next = (1u64, GENESIS);
    let mut stored = Tiles::new(live);
    for segment in segments {
        let range = format!("entries {} to {}", segment.first_seq, segment.last_seq);
        if (segment.first_seq, segment.previous) != next {
            report.problems.push(format!(
                "the log records {range} as pruned, but they do not follow the range before \
                 (expected seq {} after chain hash {})",
                next.0,
                hex::encode(next.1)
            ));
            report.tree = None;
        }
        next = (segment.last_seq + 1, segment.last_hash);
        let state = match &segment.file {
            None => {
                report.tree = None;
                SegmentState::Dropped
            }
            Some(name) => check_archived(&segment, &dir.join(name), &mut report, &mut stored)?,
        };
        if state != SegmentState::Intact {
            let name = segment.file.as_deref().unwrap_or("");
            match &state {
                SegmentState::Missing => report.problems.push(format!(
                    "MISSING: {name} ({range}) is not in {}",
                    dir.display()
                )),
                SegmentState::Altered(reason) => {
                    report
                        .problems
                        .push(format!("ALTERED: {name} ({range}): {reason}"));
                }
                _ => {}
            }
        }
        report.segments.push((segment, state));
    }
    if !report.segments.is_empty() {
        if start < next.0 {
            report.problems.push(format!(
                "a prune is unfinished: the live log starts at seq {start}, inside the last \
                 pruned range; start the daemon to finish it"
            ));
            report.tree = None;
        } else if (start, start_hash) != next {
            report.problems.push(format!(
                "the live log starts at seq {start}, which does not follow the last pruned range \
                 (it ends at seq {})",
                next.0 - 1
            ));
            report.tree = None;
        }
    }
    Ok(report)
}

/// Checks one archived range's file, adding its leaves to the rebuilt tree and comparing the
/// tiles above them with those the live log kept.
fn check_archived(
    segment: &Segment,
    path: &Path,
    report: &mut ArchivesReport,
    stored: &mut Tiles<'_>,
) -> Result<SegmentState, VerifyError> {
    if !path.exists() {
        report.tree = None;
        return Ok(SegmentState::Missing);
    }
    let altered = |report: &mut ArchivesReport, reason: String| {
        report.tree = None;
        Ok(SegmentState::Altered(reason))
    };
    match archive::sha256_file(path) {
        Ok((sha256, _)) if Some(sha256) == segment.sha256 => {}
        Ok(_) => return altered(report, "its SHA-256 is not the one sealed".into()),
        Err(error) => return altered(report, format!("it cannot be read: {error}")),
    }
    let connection = match archive::open(path) {
        Ok(connection) => connection,
        Err(error) => return altered(report, error.to_string()),
    };
    let check = match verify_segment(&connection)? {
        Ok(check) => check,
        Err(reason) => return altered(report, reason),
    };
    if (
        check.first_seq,
        check.last_seq,
        check.previous,
        check.last_hash,
    ) != (
        segment.first_seq,
        segment.last_seq,
        segment.previous,
        segment.last_hash,
    ) {
        return altered(
            report,
            "it holds another range or other chain hashes than the log recorded".into(),
        );
    }
    if let Some(tree) = &mut report.tree {
        for leaf in &check.leaves {
            tree.push(*leaf);
        }
        for (level, idx, hashes) in tree.take_full() {
            if level > 0 && stored.tile(level, idx)? != hashes.as_slice() {
                report.problems.push(format!(
                    "tile {level}/{idx}, kept by the live log, differs from the tree of the \
                     archived entries"
                ));
                report.tree = None;
                break;
            }
        }
    }
    Ok(SegmentState::Intact)
}
