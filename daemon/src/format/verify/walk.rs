//! One pass over the stored rows: the chain, and for a whole-log pass what the derived
//! tables must hold (`cost_hourly`, `producers`), recomputed from the entries, with the Merkle
//! tree rebuilt on a thread of its own and compared tile by tile.

use super::*;

/// The state of one pass over the rows: the chain, and (for a whole-log pass) what the
/// derived tables must hold, recomputed from the entries.
pub(super) struct Walk {
    derive: bool,
    pub(super) count: u64,
    /// Texts seen in `cost_hourly` keys, numbered, so that a key is four integers.
    names: HashMap<String, u32>,
    costs: HashMap<(i64, u32, u32, u32), CostSums>,
    producers: HashMap<i64, i64>,
    /// What `producer_runs` must hold, when the file has it and the whole log is walked.
    pub(super) runs: Option<Runs>,
    /// The Merkle tree recomputed from the entries, on a thread of its own, when the file
    /// has tiles and the whole log is walked; with the first tile found to differ.
    tree: Option<TreeWorker>,
    tile_problem: Option<String>,
    /// The log's first stored seq: tiles and producers before it were pruned.
    pub(super) start: u64,
    /// Every leaf hash walked, when a segment's tiles are to be checked.
    pub(super) leaves: Option<Vec<[u8; 32]>>,
}

/// A tile the tree's thread completed: level, index and hashes.
pub(super) type FullTile = (u32, u64, Vec<[u8; 32]>);

/// Rows in a batch sent to the tree's thread.
pub(super) const TREE_BATCH: usize = 4096;

/// The tree's thread: it takes the rows' encodings in batches, hashes the leaves, builds the
/// tree and sends back each full tile as it completes, so that the walk's own thread only
/// hashes the chain. Verification runs at the speed of the slower of the two.
pub(super) struct TreeWorker {
    batch: Vec<u8>,
    lengths: Vec<u32>,
    send: Option<std::sync::mpsc::SyncSender<(Vec<u8>, Vec<u32>)>>,
    tiles: std::sync::mpsc::Receiver<FullTile>,
    thread: Option<std::thread::JoinHandle<Tree>>,
}

impl TreeWorker {
    /// Starts the thread, extending `tree` (empty, or the tree before the log's start).
    pub(super) fn start(mut tree: Tree) -> TreeWorker {
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
    pub(super) fn push(&mut self, encoding: &[u8]) {
        self.batch.extend_from_slice(encoding);
        self.lengths.push(encoding.len() as u32);
        if self.lengths.len() == TREE_BATCH {
            self.send_batch();
        }
    }

    pub(super) fn send_batch(&mut self) {
        let batch = (
            std::mem::replace(&mut self.batch, Vec::with_capacity(TREE_BATCH * 256)),
            std::mem::replace(&mut self.lengths, Vec::with_capacity(TREE_BATCH)),
        );
        if let Some(send) = &self.send {
            let _ = send.send(batch);
        }
    }

    /// Full tiles completed so far, taken.
    pub(super) fn completed(&mut self) -> Vec<FullTile> {
        self.tiles.try_iter().collect()
    }

    /// Sends what is left, waits for the thread, and returns the tree and the last full
    /// tiles.
    pub(super) fn finish(&mut self) -> (Tree, Vec<FullTile>) {
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
    pub(super) fn new(derive: bool, runs: bool, tree: Option<Tree>) -> Walk {
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

    pub(super) fn name(&mut self, text: &str) -> u32 {
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
    pub(super) fn chain(
        &mut self,
        connection: &Connection,
        from: u64,
        to: u64,
        anchor_hash: Option<[u8; 32]>,
    ) -> Result<VerifyReport, VerifyError> {
        let previous = match anchor_hash {
            Some(hash) => hash,
            None => match anchor(connection, from)? {
                Verdict::Holds(hash) => hash,
                Verdict::Fails(reason) => return Ok(broken(from - 1, reason, 0)),
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
        let mut cursor = Cursor::new(from, previous, None);
        let mut first_seq = None;
        let mut last_seq = None;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let values = match row::read_values(row) {
                Ok(values) => values,
                Err(reason) => return Ok(broken(seq as u64, reason.to_string(), self.count)),
            };
            match cursor.step(&values, row::stored_hash(row)?) {
                Ok(_) => {}
                Err(Break::Gap { expected, .. }) => {
                    return Ok(broken(
                        expected,
                        format!("it is missing: the next stored entry is {seq}"),
                        self.count,
                    ));
                }
                Err(Break::Altered {
                    stored, computed, ..
                }) => {
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
            }
            if self.derive {
                self.derive_from(&values);
            }
            if let (Some(runs), Some(find_run)) = (&mut self.runs, &mut find_run) {
                runs.add(find_run, seq, &values)?;
            }
            if let Some(leaves) = &mut self.leaves {
                leaves.push(witness_protocol::merkle::leaf_hash(cursor.encoding()));
            }
            if let Some(tree) = &mut self.tree {
                tree.push(cursor.encoding());
                for (level, idx, hashes) in tree.completed() {
                    if self.tile_problem.is_none() {
                        self.tile_problem = compare_tile(connection, level, idx, &hashes)?
                            .into_result()
                            .err();
                    }
                }
            }
            first_seq.get_or_insert(seq as u64);
            last_seq = Some(seq as u64);
            self.count += 1;
        }
        if cursor.next_seq() <= to {
            return Ok(broken(
                cursor.next_seq(),
                "it is missing: the log ends before it".into(),
                self.count,
            ));
        }
        Ok(VerifyReport::Intact {
            count: self.count,
            first_seq,
            last_seq,
            head_hash: last_seq.map(|_| cursor.previous()),
        })
    }

    /// Adds a verified row to what `cost_hourly` and `producers` must hold.
    pub(super) fn derive_from(&mut self, values: &Values<'_>) {
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
            .add(&CostSums::of_values(values));
        if let (Some(producer), Some(number)) = (
            integer(column::PRODUCER_ID),
            integer(column::PRODUCER_NUMBER),
        ) {
            let last = self.producers.entry(producer).or_insert(number);
            *last = (*last).max(number);
        }
    }

    /// Compares `cost_hourly` with the sums of the entries; the first difference, if any.
    pub(super) fn check_costs(&self, connection: &Connection) -> Result<Verdict<()>, VerifyError> {
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
                return Ok(Verdict::Fails(format!(
                    "{}: the entries sum to {}, the table says {}",
                    group(key),
                    sums.describe(),
                    found.map_or("nothing".to_owned(), CostSums::describe)
                )));
            }
        }
        if let Some((key, sums)) = stored.iter().find(|(key, _)| !expected.contains_key(key)) {
            return Ok(Verdict::Fails(format!(
                "{}: the table says {}, but no entry is in that group",
                group(key),
                sums.describe()
            )));
        }
        Ok(Verdict::Holds(()))
    }

    /// Compares `producers` with the highest number stored for each producer, and (with
    /// `producer_runs`) its last run with the last run of its entries.
    pub(super) fn check_producers(
        &self,
        connection: &Connection,
    ) -> Result<Verdict<()>, VerifyError> {
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
                    return Ok(Verdict::Fails(format!(
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
                    return Ok(Verdict::Fails(format!(
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
            return Ok(Verdict::Fails(format!(
                "producer {producer}: the table says {last}, but no entry of it is stored"
            )));
        }
        Ok(Verdict::Holds(()))
    }
}

impl Walk {
    /// Compares the tiles not yet compared (the partial ones) with the recomputed tree, and
    /// the number of tiles stored with the number the tree has.
    pub(super) fn check_tiles(
        &mut self,
        connection: &Connection,
    ) -> Result<Verdict<()>, VerifyError> {
        let Some(worker) = &mut self.tree else {
            return Ok(Verdict::Holds(()));
        };
        let (tree, last) = worker.finish();
        for (level, idx, hashes) in last {
            if self.tile_problem.is_none() {
                self.tile_problem = compare_tile(connection, level, idx, &hashes)?
                    .into_result()
                    .err();
            }
        }
        if let Some(problem) = &self.tile_problem {
            return Ok(Verdict::Fails(problem.clone()));
        }
        for (level, idx, hashes) in tree.partial_tiles() {
            if let Verdict::Fails(problem) = compare_tile(connection, level, idx, hashes)? {
                return Ok(Verdict::Fails(problem));
            }
        }
        // The level-0 tiles of pruned entries go with the last step of their prune; while one
        // is under way (the live log starts inside the last range recorded) those of the
        // steps already taken are still there, and not counted.
        let first_live_tile = (self.start - 1) / TILE_WIDTH as u64;
        let under_way: bool = connection
            .query_row(
                "SELECT coalesce(max(last_seq), 0) >= ?1 FROM segments",
                [self.start as i64],
                |row| row.get(0),
            )
            .unwrap_or(false);
        let stored: i64 = connection.query_row(
            "SELECT count(*) FROM tiles WHERE level > 0 OR idx >= ?1 OR NOT ?2",
            (first_live_tile as i64, under_way),
            |row| row.get(0),
        )?;
        let expected = tree.tile_count() - first_live_tile;
        if stored as u64 != expected {
            return Ok(Verdict::Fails(format!(
                "the table holds {stored} tiles; the tree of the {} entries has {expected}{}",
                tree.size(),
                if self.start > 1 {
                    " besides the leaf tiles of the pruned entries"
                } else {
                    ""
                }
            )));
        }
        Ok(Verdict::Holds(()))
    }
}

/// How a stored tile differs from the one recomputed from the entries, if it does.
pub(super) fn compare_tile(
    connection: &Connection,
    level: u32,
    idx: u64,
    expected: &[[u8; 32]],
) -> Result<Verdict<()>, VerifyError> {
    let mut tiles = Tiles::new(connection);
    let stored = tiles.tile(level, idx)?;
    if stored == expected {
        return Ok(Verdict::Holds(()));
    }
    let first = (level == 0).then(|| idx * 256 + 1);
    Ok(Verdict::Fails(match (stored.len(), first) {
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
