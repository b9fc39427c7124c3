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
use witness_protocol::{Ack, ErrorCode, ErrorReply};

use crate::format::chain::GENESIS;
use crate::format::schema::{self, Durability, OpenError};
use crate::format::tree::Tree;
use crate::stats::WriterStats;
use crate::store::acked::{Acked, Mark};
use crate::store::checkpoint::Checkpointer;
use crate::store::dbfile::{self, Identity};
use crate::store::job::Job;
use crate::store::queue::{Contention, JobQueue, LaneId, Next, Shares};
use crate::store::transaction::{self, Head, Outcome, Producer, Written, acknowledge};

mod control;
mod copier;
mod prune;
mod upkeep;

use copier::Copier;
use prune::Pruning;

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
        let mark = match &checkpointer {
            Some(checkpointer) => {
                let path = checkpointer.mark_file();
                Some(Mark::open(&path).map_err(|source| OpenError::Mark {
                    path: path.display().to_string(),
                    source,
                })?)
            }
            None => None,
        };
        let copier = Copier::start(&config.db_path, config.durability)?;
        let mut writer = Writer::new(connection, config, Arc::clone(&stats), committed_sender)
            .map(|writer| Writer {
                identity,
                checkpointer,
                mark,
                copier: Some(copier),
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

    /// The writer's queue, where connections put jobs and [`Control`](crate::store::job::Control) requests.
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

/// While lanes contend, the lanes with a backlog (a flooder) join one bounded batch in this
/// many; the others hold only the light lanes' entries. A flooder's part of a batch is at
/// least one whole append (64 entries for a `Spool`), which on two cores makes the commit
/// about three times as long as the four single entries beside it; leaving it out of four
/// batches in five gave four waiting clients beside a full-speed flooder 4,664 entries/s
/// where they had 2,173 (solo 8,400), p99 4.3 ms, and the flooder 21,900 entries/s where it
/// had 40,400 (one in two: 2,897 for the clients; one in three: 3,696 and 27,600; one
/// in six: 4,831 and 19,800; BENCHMARKS.md, "Fairness, the flooder rested").
const HEAVY_TURN: u64 = 5;

/// How long a batch that rests the heavy lanes waits for a light lane's first entry before
/// it takes whatever is queued: the light clients re-send some 150 µs (Rust) to 400 µs
/// (Python) after their answer, and a batch started without them would be the flooder's.
const LIGHT_HEAD_START: Duration = Duration::from_millis(1);

/// How long batches stay bounded (see `queue::Shares`) after a client waiting on its commit
/// last shared one with a lane that had a backlog. Bounding only the batch after let a
/// flooder fill the next whole batch whenever the waiting clients' next appends had not
/// arrived yet, a commit of 4,096 entries that each of them then waited behind; a tenth of
/// a second spans a waiting client's round trips on a busy machine many times over.
const CONTENTION_MEMORY: Duration = Duration::from_millis(100);

/// The checkpoints the writer runs: passive between busy batches (copies what no reader
/// still needs, after the copier has copied the bulk), truncate when idle and at shutdown
/// (empties the WAL file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    Passive,
    Truncate,
}

/// A checkpoint asked of the copier: its number, how many the writer has asked in a row
/// without copying the rest itself, and the rest the round before left (none in the first).
#[derive(Debug, Clone, Copy)]
struct Copying {
    asked: u64,
    rounds: u32,
    rest: Option<i64>,
}

struct Writer {
    connection: Connection,
    config: WriterConfig,
    /// The database file's identity, checked after each commit.
    identity: Option<Identity>,
    /// Set once the file is no longer the log: nothing more is written or acknowledged.
    failure: Option<String>,
    /// Whether batches start bounded: a light lane met a heavy one in a batch less than
    /// `CONTENTION_MEMORY` before.
    contention: Contention,
    /// Lanes that had a backlog, and the number of the last batch in which they had one.
    heavy: HashMap<LaneId, u64>,
    stats: Arc<WriterStats>,
    committed: tokio::sync::watch::Sender<u64>,
    head: Head,
    /// The Merkle tree's right edge, as committed.
    tree: Tree,
    /// Signs checkpoints of the tree, when the log has a key.
    checkpointer: Option<Checkpointer>,
    /// The last entry acknowledged, rewritten before each batch's answers, when the log
    /// has a key.
    mark: Option<Mark>,
    /// Every producer seen since start, as committed; others are read on demand.
    producers: HashMap<i64, Producer>,
    wal_pages: Arc<AtomicU32>,
    /// Runs the bulk of the passive checkpoints on a thread of its own; `None` once stopped.
    copier: Option<Copier>,
    /// The copier's checkpoint asked for and not yet followed by the writer's own.
    copying: Option<Copying>,
    scratch: Vec<u8>,
    dirty_since_truncate: bool,
    /// Entries in the last batch and how long its commit took, for adaptive batching.
    last_batch_entries: usize,
    last_commit: Duration,
    /// Light lanes (see `queue::Shares::light_waiting`) in the last batch.
    last_light: usize,
    /// Bounded batches started, which decides the ones that leave the heavy lanes out.
    bounded_batches: u64,
    last_job: Instant,
    last_optimize: Instant,
    /// When received keys past their window were last forgotten.
    last_forget: Instant,
    /// When the free space was last looked at, and why entries are refused, while they are.
    disk_checked: Option<Instant>,
    disk_low: Option<String>,
    /// The first `seq` the live log holds.
    start: u64,
    /// The prune under way: entries up to this `seq` go, a step at a time, and who waits.
    pruning: Option<Pruning>,
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
            contention: Contention::new(CONTENTION_MEMORY),
            heavy: HashMap::new(),
            stats,
            committed,
            head,
            tree,
            checkpointer: None,
            mark: None,
            producers: HashMap::new(),
            wal_pages,
            copier: None,
            copying: None,
            scratch: Vec::with_capacity(4096),
            dirty_since_truncate: true,
            last_batch_entries: 0,
            last_light: 0,
            bounded_batches: 0,
            last_commit: Duration::ZERO,
            last_job: Instant::now(),
            last_optimize: Instant::now(),
            last_forget: Instant::now(),
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
            let bounded = self.contention.bounded(Instant::now());
            let mut shares = Shares::new(
                self.lane_quantum(),
                bounded,
                self.heavy.keys().copied().collect(),
            );
            if bounded {
                self.bounded_batches += 1;
                if !self.bounded_batches.is_multiple_of(HEAVY_TURN) {
                    // The light lanes' turn: their first entry is usually a moment away.
                    shares.rest_heavy(true);
                    match queue.next_job(Instant::now() + LIGHT_HEAD_START, &mut shares) {
                        Some(job) => batch.push(*job),
                        None => shares.rest_heavy(false),
                    }
                }
            }
            if batch.is_empty() {
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
                        self.log_checkpoint(false);
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
            }
            self.fill(&mut batch, queue, &mut shares);
            self.remember_heavy(&shares);
            // Before every batch: a statvfs costs a microsecond, a commit milliseconds, and a
            // burst writes megabytes a second, which a check once a second would miss.
            self.check_disk(true);
            self.last_light = shares.light_waiting();
            self.commit(&mut batch);
            self.last_job = Instant::now();
            if self.failure.is_none() {
                self.sign_checkpoint(false);
            }
            if self.failure.is_none() && self.pruning.is_some() {
                self.prune_step();
            }
            if self.failure.is_none() {
                self.upkeep_wal();
            }
            self.maybe_optimize();
        }
        // Its connection closed first: the last checkpoint needs every other one gone.
        if let Some(mut copier) = self.copier.take() {
            copier.stop();
        }
        if self.failure.is_none() {
            self.sign_checkpoint(true);
            self.log_checkpoint(true);
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
            mean_batch = %format!("{:.1}", entries as f64 / batches.max(1) as f64),
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
    /// commit's duration. A lone client (previous batch no larger) never waits. In a bounded
    /// batch (see `queue::Shares`) smaller means fewer light lanes than the last batch had:
    /// counted in entries, one that rests the flooder would never reach the size of one that
    /// held its append, and would wait out the whole delay.
    fn fill(&self, batch: &mut Vec<Job>, queue: &JobQueue, shares: &mut Shares) {
        let mut n_entries: usize = batch.iter().map(|job| job.entries.len()).sum();
        let started = Instant::now();
        let fixed_deadline = started + self.config.max_batch_delay;
        let adaptive_deadline = started + (self.last_commit / 2).min(Duration::from_millis(2));
        while n_entries < self.config.max_batch_entries {
            let mut deadline = fixed_deadline;
            let short = match shares.is_bounded() {
                true => shares.light_waiting() < self.last_light,
                false => n_entries < self.last_batch_entries,
            };
            if short {
                deadline = deadline.max(adaptive_deadline);
            }
            let Some(next) = queue.next_job(deadline, shares) else {
                return;
            };
            n_entries += next.entries.len();
            batch.push(*next);
        }
    }

    /// Notes whether the batch just filled met a waiting client beside a backlog (which keeps
    /// the next batches bounded for `CONTENTION_MEMORY`) and which lanes had a backlog,
    /// forgetting those that have had none for `HEAVY_MEMORY` batches.
    fn remember_heavy(&mut self, shares: &Shares) {
        self.contention.note(shares, Instant::now());
        let batch = self.stats.batches_committed.load(Ordering::Relaxed);
        for lane in shares.backlogged() {
            self.heavy.insert(lane, batch);
        }
        self.heavy
            .retain(|_, last| batch.saturating_sub(*last) < HEAVY_MEMORY);
    }

    /// Entries one lane may put into a batch while lanes contend (see `queue::Shares`): a
    /// sixty-fourth of the batch, 64 entries by default, so that a flooder's part of a
    /// waiting client's commit is about one of its appends. A sixteenth (256) made that
    /// commit 3 ms on this machine's two cores beside a full-speed flooder (BENCHMARKS.md,
    /// "Fairness").
    fn lane_quantum(&self) -> usize {
        (self.config.max_batch_entries / 64).max(1)
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
                spend,
            }) => {
                // Committed, but to the file the path names? Checked before any answer goes
                // out, so that nothing written to a deleted or replaced file is acknowledged.
                self.check_file();
                if let Some(reason) = self.failure.clone() {
                    return self.refuse_all(batch, &reason, true);
                }
                // Before any answer, so that the start check reaches every entry answered.
                if let Some(mark) = &mut self.mark {
                    mark.record(Acked {
                        seq: head.seq as u64,
                        hash: head.hash,
                    });
                }
                self.head = head;
                self.tree = tree;
                self.producers.extend(producers);
                self.dirty_since_truncate = true;
                self.stats
                    .entries_committed
                    .fetch_add(n_written, Ordering::Relaxed);
                self.stats.batches_committed.fetch_add(1, Ordering::Relaxed);
                if !spend.is_empty() {
                    self.stats
                        .spend
                        .add(spend.iter().map(|(component, model, sums)| {
                            (component.as_str(), model.as_str(), *sums)
                        }));
                }
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
}
