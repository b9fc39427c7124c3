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

use crate::format::chain::{DOMAIN_TAG, GENESIS, hash_row, leaf_hash};
use crate::format::row::{self, Values, column};
use crate::format::schema;
use crate::format::tree::{Tiles, Tree};

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

/// Verifies `range` of the log: `from` (default 1) through `to` (default, and at most, the
/// head). A range that starts past the head is an error, not a verdict.
pub fn verify(connection: &Connection, range: VerifyRange) -> Result<VerifyReport, VerifyError> {
    check_range(range).map_err(VerifyError::Range)?;
    let (head, lowest): (Option<i64>, Option<i64>) =
        connection.query_row("SELECT max(seq), min(seq) FROM entries", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    if let Some(lowest) = lowest.filter(|&lowest| lowest < 1) {
        return Ok(broken(
            0,
            format!(
                "a row has seq {lowest}: sequence numbers start at 1, and no chain covers it \
                 (yet tail, export and cost would show it)"
            ),
            0,
        ));
    }
    let head = head.unwrap_or(0) as u64;
    let from = range.from.unwrap_or(1);
    if from > head.max(1) {
        return Err(VerifyError::Range(format!(
            "the log ends at seq {head}: --from {from} is past it"
        )));
    }
    let to = range.to.map_or(head, |to| to.min(head));
    let whole = from == 1 && to == head;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    // Derived tables are checked only against the whole log, and only those the file's
    // version has.
    let mut walk = Walk::new(whole, whole && version >= 3, whole && version >= 4);
    let report = walk.chain(connection, from, to)?;
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

/// Sums of one `cost_hourly` row: entries, tokens in, tokens out, cache-read tokens,
/// reasoning tokens, micro-USD.
type Sums = [i64; 6];

/// The state of one pass over the rows: the chain, and (for a whole-log pass) what the
/// derived tables must hold, recomputed from the entries.
struct Walk {
    derive: bool,
    count: u64,
    /// Texts seen in `cost_hourly` keys, numbered, so that a key is four integers.
    names: HashMap<String, u32>,
    costs: HashMap<(i64, u32, u32, u32), Sums>,
    producers: HashMap<i64, i64>,
    /// What `producer_runs` must hold, when the file has it and the whole log is walked.
    runs: Option<Runs>,
    /// The Merkle tree recomputed from the entries, on a thread of its own, when the file
    /// has tiles and the whole log is walked; with the first tile found to differ.
    tree: Option<TreeWorker>,
    tile_problem: Option<String>,
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
    fn start() -> TreeWorker {
        let (send, batches) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<u32>)>(4);
        let (tiles_out, tiles) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut tree = Tree::default();
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
    fn new(derive: bool, runs: bool, tree: bool) -> Walk {
        Walk {
            derive,
            count: 0,
            names: HashMap::new(),
            costs: HashMap::new(),
            producers: HashMap::new(),
            runs: runs.then(Runs::default),
            tree: tree.then(TreeWorker::start),
            tile_problem: None,
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

    /// Walks the rows of `from..=to` in order and recomputes each hash from the stored hash
    /// of the row before. Stops at the first row that does not match, or at a gap.
    fn chain(
        &mut self,
        connection: &Connection,
        from: u64,
        to: u64,
    ) -> Result<VerifyReport, VerifyError> {
        let mut previous = match anchor(connection, from)? {
            Ok(hash) => hash,
            Err(report) => return Ok(report),
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
        let sums = self.costs.entry(key).or_default();
        // The writer saturates these sums at the largest integer rather than overflow; the
        // values are never negative, so the saturated total is the same in any grouping.
        for (sum, value) in sums.iter_mut().zip([
            Some(1),
            integer(column::TOKENS_IN),
            integer(column::TOKENS_OUT),
            integer(column::CACHE_READ_TOKENS),
            integer(column::REASONING_TOKENS),
            integer(column::COST_MICRO_USD),
        ]) {
            *sum = sum.saturating_add(value.unwrap_or(0));
        }
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
        let expected: BTreeMap<(i64, &str, &str, &str), Sums> = self
            .costs
            .iter()
            .map(|(&(hour, component, event, model), &sums)| {
                let key = (
                    hour,
                    names[component as usize],
                    names[event as usize],
                    names[model as usize],
                );
                (key, sums)
            })
            .collect();
        let mut statement = connection.prepare(
            "SELECT hour, component, event, model, entries, tokens_in, tokens_out, \
             cache_read_tokens, reasoning_tokens, micro_usd FROM cost_hourly",
        )?;
        let mut rows = statement.query([])?;
        let mut stored: BTreeMap<(i64, String, String, String), Sums> = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let key = (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let mut sums = Sums::default();
            for (index, sum) in sums.iter_mut().enumerate() {
                *sum = row.get(4 + index)?;
            }
            stored.insert(key, sums);
        }
        for (key, sums) in &expected {
            let (hour, component, event, model) = *key;
            let found = stored.get(&(
                hour,
                component.to_owned(),
                event.to_owned(),
                model.to_owned(),
            ));
            if found != Some(sums) {
                return Ok(Some(format!(
                    "hour {hour}, component {component:?}, event {event:?}, model {model:?}: \
                     the entries sum to {} (entries, tokens in, tokens out, cache-read tokens, \
                     reasoning tokens, micro-USD), the \
                     table says {}",
                    show(Some(sums)),
                    show(found)
                )));
            }
        }
        if let Some(((hour, component, event, model), sums)) = stored.iter().find(|(key, _)| {
            !expected.contains_key(&(key.0, key.1.as_str(), key.2.as_str(), key.3.as_str()))
        }) {
            return Ok(Some(format!(
                "hour {hour}, component {component:?}, event {event:?}, model {model:?}: the \
                 table says {}, but no entry is in that group",
                show(Some(sums))
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
                if last_run != expected {
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
        let mut extra: Vec<_> = stored
            .iter()
            .filter(|(producer, _)| !self.producers.contains_key(producer))
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
        if stored as u64 != tree.tile_count() {
            return Ok(Some(format!(
                "the table holds {stored} tiles; the tree of the {} entries has {}",
                tree.size(),
                tree.tile_count()
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
                if link != previous {
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

fn show(sums: Option<&Sums>) -> String {
    sums.map_or("nothing".to_owned(), |sums| {
        sums.map(|sum| sum.to_string()).join(", ")
    })
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
/// be read.
pub fn verify_checkpoint(
    connection: &Connection,
    note: &str,
    key: &VerifierKey,
) -> Result<u64, Result<String, VerifyError>> {
    let checkpoint = Note::parse(note)
        .and_then(|note| note.verify(key).map(str::to_owned))
        .and_then(|text| Checkpoint::parse(&text))
        .map_err(|error| {
            Ok(format!(
                "the checkpoint does not verify with the key: {error}"
            ))
        })?;
    let mut statement = connection
        .prepare(&format!(
            "SELECT {} FROM entries WHERE seq BETWEEN 1 AND ?1 ORDER BY seq",
            row::select_columns()
        ))
        .map_err(|error| Err(error.into()))?;
    let mut rows = statement
        .query([checkpoint.size as i64])
        .map_err(|error| Err(error.into()))?;
    let mut tree = Tree::default();
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
