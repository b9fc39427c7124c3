//! The writer thread: the one connection that writes, and group commit.
//!
//! It blocks for the first job, drains whatever else is ready (up to the batch limit, or
//! until the batch delay has passed), writes the whole batch in one immediate transaction
//! with cached statements, assigns `seq`, extends the hash chain, commits, and only then
//! acknowledges. Checkpoints run between batches, never inside a commit. Dropping the
//! [`WriterHandle`] closes the queue and joins the thread, which commits what it holds first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use serde_json::json;
use witness_protocol::{Ack, Entry, ErrorCode, ErrorReply};

use crate::format::archive::Segment;
use crate::format::chain::GENESIS;
use crate::format::cost;
use crate::format::schema::{self, Durability, OpenError};
use crate::format::tree::Tree;
use crate::stats::WriterStats;
use crate::store::checkpoint::{Checkpointer, Loss};
use crate::store::dbfile::{self, Identity};
use crate::store::job::Origin;
use crate::store::job::{Control, Job, PRUNE_STEP};
use crate::store::queue::{JobQueue, LaneId, Next, Shares};
use crate::store::transaction::{self, Head, Outcome, Producer, Written, acknowledge};

/// How the writer batches, syncs and checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterConfig {
    /// The database file.
    pub db_path: PathBuf,
    /// Durability of each commit.
    pub durability: Durability,
    /// Most entries in one transaction.
    pub max_batch_entries: usize,
    /// How long to wait for more entries once a batch has started; zero commits whatever is
    /// ready at once, which already groups entries that arrive during the previous commit.
    pub max_batch_delay: Duration,
    /// Run a passive checkpoint between batches once the WAL holds this many pages.
    pub checkpoint_pages: u32,
    /// After this long without a job, truncate the WAL.
    pub idle_checkpoint: Duration,
    /// SQLite page cache of the writer, in KiB.
    pub cache_kib: u32,
    /// How often to run `PRAGMA optimize` between batches; `None` never does.
    pub optimize_interval: Option<Duration>,
    /// Longest the writer's loop goes without turning when idle, so that its heartbeat (which
    /// the systemd watchdog reads) advances while it is healthy.
    pub heartbeat: Duration,
    /// Free bytes the writer leaves on the database's file system: below them it refuses new
    /// entries (recording nothing of them) until space returns. SQLite needs room to
    /// checkpoint its WAL, and a disk filled to the last byte fails every other program too.
    pub min_free_bytes: u64,
}

impl Default for WriterConfig {
    /// The defaults, for a database path yet to be given.
    fn default() -> Self {
        WriterConfig::new(PathBuf::new())
    }
}

impl WriterConfig {
    /// The defaults for a database at `db_path`; `config` checks that they agree with its
    /// key table.
    pub fn new(db_path: PathBuf) -> Self {
        WriterConfig {
            db_path,
            durability: Durability::Full,
            max_batch_entries: 4096,
            max_batch_delay: Duration::ZERO,
            checkpoint_pages: 4096,
            idle_checkpoint: Duration::from_secs(1),
            cache_kib: 8192,
            optimize_interval: Some(Duration::from_secs(3600)),
            heartbeat: Duration::from_millis(250),
            min_free_bytes: 64 << 20,
        }
    }
}

/// How often the idle writer looks at the free space (a busy one looks before every batch):
/// every second, and ten times a second while it is refusing entries for want of it, so
/// that it resumes soon after space returns.
const DISK_CHECK: Duration = Duration::from_secs(1);
const DISK_CHECK_LOW: Duration = Duration::from_millis(100);

/// The running writer: its queue and its thread.
#[derive(Debug)]
pub struct WriterHandle {
    db_path: PathBuf,
    queue: Arc<JobQueue>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
    committed: tokio::sync::watch::Receiver<u64>,
}

impl WriterHandle {
    /// Opens the database and starts the writer thread. Fails, with nothing started, if the
    /// database cannot be opened. With `identity`, the writer checks after every commit, and
    /// when idle, that the path still names that file, and fails for good (acknowledging
    /// nothing more) once it does not.
    ///
    /// With `checkpointer`, the database must first still hold the tree of the last
    /// checkpoint signed (see `checkpoint::check_against_state`), and the writer signs
    /// checkpoints as it commits.
    pub fn start(
        config: WriterConfig,
        identity: Option<Identity>,
        checkpointer: Option<Checkpointer>,
    ) -> Result<Self, OpenError> {
        let connection = schema::open_writer(&config.db_path, config.durability, config.cache_kib)?;
        if let Some(identity) = identity
            && let Err(reason) = dbfile::check(&config.db_path, identity)
        {
            return Err(OpenError::Moved(reason));
        }
        let queue = JobQueue::new();
        let stats = Arc::new(WriterStats::default());
        let (committed_sender, committed) = tokio::sync::watch::channel(0);
        let db_path = config.db_path.clone();
        let mut loss = None;
        if let Some(checkpointer) = &checkpointer {
            let size: Option<i64> = connection
                .query_row("SELECT max(seq) FROM entries", [], |row| row.get(0))
                .map_err(|source| OpenError::Sqlite {
                    path: config.db_path.display().to_string(),
                    source,
                })?;
            if let Err(found) =
                checkpointer.check_against_state(&connection, size.unwrap_or(0) as u64)
            {
                if !checkpointer.accepts_loss() {
                    return Err(OpenError::Forgotten(format!(
                        "{}. To go on, accepting the loss (the log records it), start once \
                         with --accept-loss",
                        found.reason
                    )));
                }
                tracing::warn!(reason = %found.reason, "accepting the loss, as asked");
                loss = Some(found);
            }
        }
        let mut writer = Writer::new(connection, config, Arc::clone(&stats), committed_sender)
            .map(|writer| Writer {
                identity,
                checkpointer,
                ..writer
            })?;
        if let Some(loss) = loss {
            writer.record_loss(loss)?;
        }
        let thread = {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("witness-writer".into())
                .spawn(move || writer.run(&queue))
                .expect("spawning the writer thread")
        };
        Ok(WriterHandle {
            db_path,
            queue,
            thread: Some(thread),
            stats,
            committed,
        })
    }

    /// The writer's queue, where connections put jobs and [`Control`] requests.
    pub fn queue(&self) -> Arc<JobQueue> {
        Arc::clone(&self.queue)
    }

    /// The database file the writer writes.
    pub fn db_path(&self) -> &std::path::Path {
        &self.db_path
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// The last committed `seq`, updated after every commit; followers wait on it. It closes
    /// when the writer stops, after its last commit.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Closes the queue and waits until the writer has committed every job queued and
    /// stopped.
    pub fn join(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.queue.close();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Batches for which a lane that had a backlog counts as heavy (see `queue::Shares`): long
/// enough that a pipelining client, between two bursts, is not taken for a waiting one.
const HEAVY_MEMORY: u64 = 16;

/// The checkpoints the writer runs: passive between busy batches (copies what no reader
/// still needs), truncate when idle and at shutdown (empties the WAL file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    Passive,
    Truncate,
}

struct Writer {
    connection: Connection,
    config: WriterConfig,
    /// The database file's identity, checked after each commit.
    identity: Option<Identity>,
    /// Set once the file is no longer the log: nothing more is written or acknowledged.
    failure: Option<String>,
    /// Whether a light lane met a heavy one in the last batch: the next starts bounded.
    contended: bool,
    /// Lanes that had a backlog, and the number of the last batch in which they had one.
    heavy: HashMap<LaneId, u64>,
    stats: Arc<WriterStats>,
    committed: tokio::sync::watch::Sender<u64>,
    head: Head,
    /// The Merkle tree's right edge, as committed.
    tree: Tree,
    /// Signs checkpoints of the tree, when the log has a key.
    checkpointer: Option<Checkpointer>,
    /// Every producer seen since start, as committed; others are read on demand.
    producers: HashMap<i64, Producer>,
    wal_pages: Arc<AtomicU32>,
    scratch: Vec<u8>,
    dirty_since_truncate: bool,
    /// Entries in the last batch and how long its commit took, for adaptive batching.
    last_batch_entries: usize,
    last_commit: Duration,
    last_job: Instant,
    last_optimize: Instant,
    /// When the free space was last looked at, and why entries are refused, while they are.
    disk_checked: Option<Instant>,
    disk_low: Option<String>,
    /// The first `seq` the live log holds.
    start: u64,
    /// The prune under way: entries up to this `seq` go, a step at a time, and who waits.
    pruning: Option<Pruning>,
}

/// A prune the writer is carrying out between batches.
struct Pruning {
    /// The last `seq` to delete.
    to: u64,
    /// Answered once the last is deleted; none for a prune resumed at start.
    answer: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    /// The last failure said, so that a step failing again is not logged again.
    failure: Option<String>,
    /// The cost sums of the steps to come, by their ranges, as the archiver found them; a
    /// step with none (a prune resumed at start) sums its range itself.
    costs: std::collections::VecDeque<((u64, u64), cost::CostGroups)>,
}

impl Writer {
    fn new(
        mut connection: Connection,
        config: WriterConfig,
        stats: Arc<WriterStats>,
        committed: tokio::sync::watch::Sender<u64>,
    ) -> Result<Self, OpenError> {
        let path = config.db_path.display().to_string();
        let sqlite = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        let head = connection
            .query_row(schema::HEAD, [], |row| {
                Ok(Head {
                    seq: row.get(0)?,
                    hash: row.get(1)?,
                })
            })
            .optional()
            .map_err(sqlite)?
            .unwrap_or(Head {
                seq: 0,
                hash: GENESIS,
            });
        let tree = Tree::load(&connection, head.seq as u64).map_err(|reason| OpenError::Tree {
            path: path.clone(),
            reason,
        })?;
        committed.send_replace(head.seq as u64);
        stats
            .min_free_bytes
            .store(config.min_free_bytes, Ordering::Relaxed);
        let (start, _) = schema::log_start(&connection).map_err(sqlite)?;
        stats.first_seq.store(start, Ordering::Relaxed);
        // A prune recorded but not finished (the daemon stopped mid-delete) goes on.
        let recorded: Option<i64> = connection
            .query_row("SELECT max(last_seq) FROM segments", [], |row| row.get(0))
            .map_err(sqlite)?;
        let pruning = recorded.filter(|&last| last as u64 >= start).map(|last| {
            tracing::warn!(
                from = start,
                to = last,
                "finishing a prune begun before the stop"
            );
            Pruning {
                to: last as u64,
                answer: None,
                failure: None,
                costs: Default::default(),
            }
        });
        let wal_pages = Arc::new(AtomicU32::new(0));
        let hook_pages = Arc::clone(&wal_pages);
        // Set after `wal_autocheckpoint`, which would replace it.
        connection
            .wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                    hook_pages.store(pages.max(0) as u32, Ordering::Relaxed);
                    Ok(())
                },
            ))
            .map_err(sqlite)?;
        Ok(Writer {
            connection,
            config,
            identity: None,
            failure: None,
            contended: false,
            heavy: HashMap::new(),
            stats,
            committed,
            head,
            tree,
            checkpointer: None,
            producers: HashMap::new(),
            wal_pages,
            scratch: Vec::with_capacity(4096),
            dirty_since_truncate: true,
            last_batch_entries: 0,
            last_commit: Duration::ZERO,
            last_job: Instant::now(),
            last_optimize: Instant::now(),
            disk_checked: None,
            disk_low: None,
            start,
            pruning,
        })
    }

    fn run(&mut self, queue: &JobQueue) {
        let mut batch: Vec<Job> = Vec::new();
        loop {
            // A failed writer stops its heartbeat, so the watchdog stops pinging too.
            if self.failure.is_none() {
                self.stats.heartbeat.fetch_add(1, Ordering::Relaxed);
            }
            let mut shares = Shares::new(
                self.lane_quantum(),
                self.contended,
                self.heavy.keys().copied().collect(),
            );
            // A prune under way takes its steps whenever no batch is waiting.
            let wait = if self.pruning.is_some() {
                Duration::ZERO
            } else {
                self.config.heartbeat
            };
            match queue.next(wait) {
                Next::Job(lane, job, more) => {
                    shares.record(lane, &job, more);
                    batch.push(*job);
                }
                Next::Control(request) => {
                    self.control(request);
                    continue;
                }
                Next::Idle => {
                    self.check_disk(false);
                    self.check_file();
                    if self.failure.is_some() {
                        continue;
                    }
                    if self.pruning.is_some() {
                        self.prune_step();
                        self.dirty_since_truncate = true;
                        self.last_job = Instant::now();
                    }
                    self.sign_checkpoint(false);
                    if self.dirty_since_truncate
                        && self.last_job.elapsed() >= self.config.idle_checkpoint
                    {
                        self.checkpoint(Checkpoint::Truncate);
                    }
                    self.maybe_optimize();
                    continue;
                }
                Next::Closed => break,
            }
            self.fill(&mut batch, queue, &mut shares);
            self.remember_heavy(&shares);
            // Before every batch: a statvfs costs a microsecond, a commit milliseconds, and a
            // burst writes megabytes a second, which a check once a second would miss.
            self.check_disk(true);
            self.commit(&mut batch);
            self.last_job = Instant::now();
            if self.failure.is_none() {
                self.sign_checkpoint(false);
            }
            if self.failure.is_none() && self.pruning.is_some() {
                self.prune_step();
            }
            if self.failure.is_none()
                && self.wal_pages.load(Ordering::Relaxed) >= self.config.checkpoint_pages
            {
                self.checkpoint(Checkpoint::Passive);
            }
            self.maybe_optimize();
        }
        if self.failure.is_none() {
            self.sign_checkpoint(true);
            self.checkpoint(Checkpoint::Truncate);
            // SQLite's advice for a connection about to close: cheap, and keeps the planner's
            // statistics current for readers.
            if let Err(error) = self.connection.execute_batch("PRAGMA optimize") {
                tracing::warn!(%error, "PRAGMA optimize failed");
            }
        }
        let entries = self.stats.entries_committed.load(Ordering::Relaxed);
        let batches = self.stats.batches_committed.load(Ordering::Relaxed);
        tracing::info!(
            entries,
            batches,
            mean_batch = entries as f64 / batches.max(1) as f64,
            last_seq = self.head.seq,
            "writer stopped"
        );
    }

    /// Adds to `batch` what is ready, by turn across connections, up to the entry limit or
    /// the delay.
    ///
    /// Adaptive batching: synchronous clients re-send only after their answer, so right after
    /// a commit the first of them arrives alone and, committed at once, would split the rest
    /// into a second commit: two fsyncs per round instead of one. So while the batch is smaller
    /// than the previous one, the writer waits for the others, at most half the previous
    /// commit's duration. A lone client (previous batch no larger) never waits.
    fn fill(&self, batch: &mut Vec<Job>, queue: &JobQueue, shares: &mut Shares) {
        let mut n_entries: usize = batch.iter().map(|job| job.entries.len()).sum();
        let started = Instant::now();
        let fixed_deadline = started + self.config.max_batch_delay;
        let adaptive_deadline = started + (self.last_commit / 2).min(Duration::from_millis(2));
        while n_entries < self.config.max_batch_entries {
            let mut deadline = fixed_deadline;
            if n_entries < self.last_batch_entries {
                deadline = deadline.max(adaptive_deadline);
            }
            let Some(next) = queue.next_job(deadline, shares) else {
                return;
            };
            n_entries += next.entries.len();
            batch.push(*next);
        }
    }

    /// Notes which lanes had a backlog in the batch just filled, forgetting those that have
    /// had none for `HEAVY_MEMORY` batches.
    fn remember_heavy(&mut self, shares: &Shares) {
        self.contended = shares.light_beside_heavy();
        let batch = self.stats.batches_committed.load(Ordering::Relaxed);
        for lane in shares.backlogged() {
            self.heavy.insert(lane, batch);
        }
        self.heavy
            .retain(|_, last| batch.saturating_sub(*last) < HEAVY_MEMORY);
    }

    /// Entries one lane may put into a batch while lanes contend (see `queue::Shares`).
    fn lane_quantum(&self) -> usize {
        (self.config.max_batch_entries / 16).max(1)
    }

    /// Handles a request other than an append, between batches.
    fn control(&mut self, request: Control) {
        match request {
            Control::Tune {
                max_batch_entries,
                max_batch_delay,
            } => {
                self.config.max_batch_entries = max_batch_entries;
                self.config.max_batch_delay = max_batch_delay;
                tracing::info!(max_batch_entries, ?max_batch_delay, "batching retuned");
            }
            Control::Analyze(answer) => {
                let started = Instant::now();
                let result = self
                    .connection
                    .execute_batch("ANALYZE")
                    .map(|()| started.elapsed())
                    .map_err(|error| format!("ANALYZE failed: {error}"));
                tracing::info!(?result, "analyze");
                let _ = answer.send(result);
            }
            Control::Sign(answer) => {
                if self.failure.is_none() {
                    self.sign_checkpoint(true);
                }
                let _ = answer.send(());
            }
            Control::Prune(segment, costs, answer) => match self.begin_prune(&segment) {
                Ok(()) => {
                    self.pruning = Some(Pruning {
                        to: segment.last_seq,
                        answer: Some(answer),
                        failure: None,
                        costs: costs.into(),
                    });
                }
                Err(reason) => {
                    tracing::warn!(%reason, "prune refused");
                    let _ = answer.send(Err(reason));
                }
            },
        }
    }

    /// Checks that `segment` is the next range to prune and records it: an entry
    /// `witness.pruned` in the log (so the chain itself says what left it), then the row of
    /// `segments`, before anything is deleted.
    fn begin_prune(&mut self, segment: &Segment) -> Result<(), String> {
        if let Some(reason) = &self.failure {
            return Err(reason.clone());
        }
        if self.pruning.is_some() {
            return Err("a prune is already under way".into());
        }
        if segment.first_seq != self.start {
            return Err(format!(
                "the live log starts at seq {}, not at {}",
                self.start, segment.first_seq
            ));
        }
        if segment.last_seq >= self.head.seq as u64 {
            return Err(format!(
                "the log's last entry, {}, is never pruned",
                self.head.seq
            ));
        }
        let sqlite = |error: rusqlite::Error| format!("the database: {error}");
        let (_, previous) = schema::log_start(&self.connection).map_err(sqlite)?;
        let last_hash: Vec<u8> = self
            .connection
            .query_row(
                "SELECT hash FROM entries WHERE seq = ?1",
                [segment.last_seq as i64],
                |row| row.get(0),
            )
            .map_err(sqlite)?;
        if previous != segment.previous || last_hash != segment.last_hash {
            return Err(format!(
                "the segment of entries {} to {} does not hold the chain hashes of the live log",
                segment.first_seq, segment.last_seq
            ));
        }
        let origin = Origin::daemon();
        let entry = Entry::new("witness.pruned", "witnessd").payload(json!({
            "first_seq": segment.first_seq,
            "last_seq": segment.last_seq,
            "last_hash": hex::encode(segment.last_hash),
            "archive": segment.file,
            "sha256": segment.sha256.map(hex::encode),
        }));
        let head = self.head.seq;
        self.commit(&mut vec![Job::internal(vec![entry], origin)]);
        if self.head.seq != head + 1 {
            return Err("could not record the prune in the log".into());
        }
        segment.record(&self.connection).map_err(sqlite)?;
        crate::faults::crash_at("segment-recorded");
        match &segment.file {
            Some(file) => tracing::info!(
                first = segment.first_seq,
                last = segment.last_seq,
                %file,
                "archived; deleting the entries from the live log"
            ),
            None => tracing::warn!(
                first = segment.first_seq,
                last = segment.last_seq,
                "dropping entries without an archive, as configured"
            ),
        }
        Ok(())
    }

    /// Deletes the next step of the prune under way, moving the log's start in the same
    /// transaction, and takes the range's entries out of `cost_hourly` and `producer_runs`;
    /// after the last step, the range's level-0 tiles go too (the archive holds them).
    fn prune_step(&mut self) {
        let Some(pruning) = &mut self.pruning else {
            return;
        };
        let from = self.start;
        let to = pruning.to.min(from + PRUNE_STEP - 1);
        let last = to == pruning.to;
        // A step that failed and is tried again sums its range itself: its sums were taken.
        let costs = match pruning.costs.front() {
            Some(&(range, _)) if range == (from, to) => {
                pruning.costs.pop_front().map(|(_, groups)| groups)
            }
            _ => None,
        };
        let started = Instant::now();
        // A step needs no fsync of its own: losing it to a power cut only brings back
        // entries already sealed in their segment, and the prune resumes at start. The WAL
        // is one file written in order, so the next batch's fsync makes the step durable
        // too, and a torn tail is cut at the first frame that does not check.
        let _ = self.connection.execute_batch("PRAGMA synchronous = OFF");
        let result = delete_range(&mut self.connection, from, to, last, costs);
        let restored = if crate::faults::fails_at("restore-synchronous") {
            Err("a fault injected by the tests".to_owned())
        } else {
            self.connection
                .execute_batch(&format!(
                    "PRAGMA synchronous = {}",
                    self.config.durability.synchronous()
                ))
                .map_err(|error| error.to_string())
        };
        if let Err(error) = restored {
            // Every later commit would skip its fsync: a `Committed` answer would no longer
            // mean durable, so the writer acknowledges nothing more, as for a replaced file.
            let answer = pruning.answer.take();
            self.fail(format!(
                "cannot restore PRAGMA synchronous after a pruning step ({error})"
            ));
            if let Some(answer) = answer {
                let _ = answer.send(Err("the writer failed mid-prune".into()));
            }
            self.pruning = None;
            return;
        }
        self.stats
            .prune_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.start = to + 1;
                self.stats.first_seq.store(self.start, Ordering::Relaxed);
                self.stats
                    .entries_pruned
                    .fetch_add(to + 1 - from, Ordering::Relaxed);
                crate::faults::crash_at("mid-delete");
                if last {
                    tracing::info!(first_seq = self.start, "the live log now starts here");
                    if let Some(answer) = pruning.answer.take() {
                        let _ = answer.send(Ok(()));
                    }
                    self.pruning = None;
                }
            }
            Err(error) => {
                let reason = error.to_string();
                if pruning.failure.as_ref() != Some(&reason) {
                    tracing::error!(%reason, from, to, "a pruning step failed; it will be tried again");
                    pruning.failure = Some(reason);
                }
            }
        }
    }

    /// Records a loss the operator accepted, before anything else is written: an entry
    /// `witness.lost` for every sequence number the lost tail had held, so that none is
    /// handed out twice, then one `witness.loss_accepted` that says what was lost and holds
    /// the checkpoint that showed it; then signs the new tree, which replaces the old
    /// checkpoint in the state file.
    fn record_loss(&mut self, loss: Loss) -> Result<(), OpenError> {
        let origin = Origin::daemon();
        let mut entries = Vec::new();
        if let Some((from, to)) = loss.missing {
            entries.extend(
                (from..=to).map(|seq| {
                    Entry::new("witness.lost", "witnessd").payload(json!({ "seq": seq }))
                }),
            );
        }
        entries.push(
            Entry::new("witness.loss_accepted", "witnessd").payload(json!({
                "reason": loss.reason,
                "lost_from": loss.missing.map(|(from, _)| from),
                "lost_to": loss.missing.map(|(_, to)| to),
                "checkpoint": loss.note,
            })),
        );
        let expected = self.head.seq + entries.len() as i64;
        for chunk in entries.chunks(10_000) {
            let mut batch = vec![Job::internal(chunk.to_vec(), origin)];
            self.commit(&mut batch);
        }
        if self.head.seq != expected {
            return Err(OpenError::Forgotten(
                "could not record the accepted loss in the log; nothing else was written".into(),
            ));
        }
        tracing::warn!(
            lost = ?loss.missing,
            recorded_to = self.head.seq,
            "the loss is recorded in the log"
        );
        self.sign_checkpoint(true);
        Ok(())
    }

    /// Signs a checkpoint of the committed tree when one is due (`now`: whatever the
    /// interval, at stop). A failure is the checkpointer's to log and retry: the entries stay
    /// committed, but the state file no longer vouches for them.
    fn sign_checkpoint(&mut self, now: bool) {
        let size = self.head.seq as u64;
        let Some(checkpointer) = &mut self.checkpointer else {
            return;
        };
        if !checkpointer.due(size, now) {
            return;
        }
        // Logged there, once per failure.
        let _ = checkpointer.sign(&self.connection, size, self.tree.root());
    }

    /// Runs `PRAGMA optimize` when its interval has passed. `analysis_limit` bounds it to
    /// milliseconds, so it runs between batches like a checkpoint.
    fn maybe_optimize(&mut self) {
        let Some(interval) = self.config.optimize_interval else {
            return;
        };
        if self.last_optimize.elapsed() < interval {
            return;
        }
        let started = Instant::now();
        match self.connection.execute_batch("PRAGMA optimize") {
            Ok(()) => tracing::debug!(elapsed = ?started.elapsed(), "PRAGMA optimize"),
            Err(error) => tracing::warn!(%error, "PRAGMA optimize failed"),
        }
        self.last_optimize = Instant::now();
    }

    /// Checks that the database path still names the file this writer writes; on the first
    /// mismatch the writer fails for good: it says why, everywhere it can, and from then on
    /// refuses every append (the server stops the daemon).
    fn check_file(&mut self) {
        let Some(identity) = self.identity else {
            return;
        };
        if self.failure.is_some() {
            return;
        }
        if let Err(reason) = dbfile::check(&self.config.db_path, identity) {
            self.fail(reason);
        }
    }

    /// Fails for good: says why, everywhere it can, and from then on refuses every append
    /// (the server stops the daemon).
    fn fail(&mut self, reason: String) {
        tracing::error!("{reason}: acknowledging nothing more, and stopping");
        *self.stats.failure.lock().expect("never poisoned") = Some(reason.clone());
        self.failure = Some(reason);
        self.stats.failed.cancel();
    }

    /// Looks at the free space on the database's file system (at most every `DISK_CHECK`,
    /// unless `now`), publishes it, and starts or stops refusing entries when it crosses
    /// `min_free_bytes`, saying so once each way.
    fn check_disk(&mut self, now: bool) {
        let every = if self.disk_low.is_some() {
            DISK_CHECK_LOW
        } else {
            DISK_CHECK
        };
        if !now && self.disk_checked.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.disk_checked = Some(Instant::now());
        let free = match dbfile::free_bytes(&self.config.db_path) {
            Ok(free) => free,
            Err(error) => {
                tracing::debug!(%error, "cannot read the free space");
                return;
            }
        };
        self.stats.disk_free_bytes.store(free, Ordering::Relaxed);
        let minimum = self.config.min_free_bytes;
        match (&self.disk_low, free < minimum) {
            (None, true) => {
                let reason = format!(
                    "the disk holding the log has {free} bytes free, less than min_free_bytes \
                     ({minimum}): refusing new entries until space returns"
                );
                tracing::error!("{reason}");
                *self.stats.disk_low.lock().expect("never poisoned") = Some(reason.clone());
                self.disk_low = Some(reason);
            }
            (Some(_), false) => {
                tracing::warn!(free, "disk space is back: accepting entries again");
                *self.stats.disk_low.lock().expect("never poisoned") = None;
                self.disk_low = None;
            }
            _ => {}
        }
    }

    /// Refuses every job of `batch`: the writer has failed for good.
    fn refuse_all(&self, batch: &mut Vec<Job>, reason: &str, written: bool) {
        let message = if written {
            format!(
                "{reason}; these entries went to that file, which is no longer the log, and \
                 are not acknowledged: send them again once the daemon is back"
            )
        } else {
            format!("{reason}; nothing was recorded: send it again once the daemon is back")
        };
        for job in batch.drain(..) {
            let reply = ErrorReply::new(ErrorCode::Storage, message.clone());
            acknowledge(job, Outcome::Refused(reply));
        }
    }

    /// Writes, commits and acknowledges `batch`, leaving it empty.
    fn commit(&mut self, batch: &mut Vec<Job>) {
        if let Some(reason) = self.failure.clone() {
            return self.refuse_all(batch, &reason, false);
        }
        if let Some(reason) = &self.disk_low {
            let message = format!("{reason}; nothing of this append was recorded");
            for job in batch.drain(..) {
                let reply = ErrorReply::new(ErrorCode::Storage, message.clone());
                acknowledge(job, Outcome::Refused(reply));
            }
            return;
        }
        let started = Instant::now();
        self.last_batch_entries = batch.iter().map(|job| job.entries.len()).sum();
        let written = transaction::write(
            &mut self.connection,
            batch,
            self.head,
            &self.tree,
            &self.producers,
            &mut self.scratch,
        );
        self.last_commit = started.elapsed();
        match written {
            Ok(Written {
                outcomes,
                head,
                tree,
                producers,
                n_written,
            }) => {
                // Committed, but to the file the path names? Checked before any answer goes
                // out, so that nothing written to a deleted or replaced file is acknowledged.
                self.check_file();
                if let Some(reason) = self.failure.clone() {
                    return self.refuse_all(batch, &reason, true);
                }
                self.head = head;
                self.tree = tree;
                self.producers.extend(producers);
                self.dirty_since_truncate = true;
                self.stats
                    .entries_committed
                    .fetch_add(n_written, Ordering::Relaxed);
                self.stats.batches_committed.fetch_add(1, Ordering::Relaxed);
                self.committed.send_replace(head.seq as u64);
                let now = Instant::now();
                let acks: Vec<Duration> = batch
                    .iter()
                    .filter(|job| matches!(job.ack, Ack::Committed | Ack::Durable))
                    .map(|job| now.saturating_duration_since(job.received))
                    .collect();
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    acknowledge(job, outcome);
                }
                self.stats
                    .timings
                    .lock()
                    .expect("never poisoned")
                    .record_batch(n_written, self.last_commit, acks);
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "batch rolled back");
                self.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                let message =
                    format!("the database refused the batch, nothing was written: {error}");
                for job in batch.drain(..) {
                    let reply = ErrorReply::new(ErrorCode::Storage, message.clone());
                    acknowledge(job, Outcome::Refused(reply));
                }
                // A full disk is the likeliest cause: look now, so that the next appends
                // hear why.
                self.check_disk(true);
            }
        }
    }

    fn checkpoint(&mut self, mode: Checkpoint) {
        let started = Instant::now();
        let name = match mode {
            Checkpoint::Truncate => "TRUNCATE",
            Checkpoint::Passive => "PASSIVE",
        };
        let result: rusqlite::Result<(i64, i64, i64)> =
            self.connection
                .query_row(&format!("PRAGMA wal_checkpoint({name})"), [], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                });
        match result {
            Ok((busy, log, done)) => {
                tracing::debug!(mode = name, busy, log, done, elapsed = ?started.elapsed(), "checkpoint");
                if mode == Checkpoint::Truncate && busy == 0 {
                    self.dirty_since_truncate = false;
                    self.wal_pages.store(0, Ordering::Relaxed);
                }
                if busy == 0 && log == done {
                    // The next commit restarts the WAL from its start.
                    self.wal_pages.store(0, Ordering::Relaxed);
                }
            }
            Err(error) => tracing::warn!(%error, mode = name, "checkpoint failed"),
        }
    }
}

/// Deletes the entries `from..=to` (the first the live log holds) in one transaction: their
/// sums (`costs`, when the archiver summed them already) leave `cost_hourly`, runs wholly
/// among them leave `producer_runs`, the log's start moves past them, and with `last` the
/// level-0 tiles up to `to` go.
fn delete_range(
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
