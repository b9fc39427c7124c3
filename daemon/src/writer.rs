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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use witness_protocol::{
    Ack, Entry, ErrorCode, ErrorReply, ProducerRef, Receipt, Response, ResponseFrame,
};

use crate::chain::{GENESIS, Value, hash_row};
use crate::dbfile::{self, Identity};
pub use crate::job::{Control, Job, Origin, Outgoing, ReplyTo};
use crate::metrics::Timings;
use crate::queue::{JobQueue, LaneId, Next, Shares};
use crate::schema::{self, OpenError, Sync};

/// How the writer batches, syncs and checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterConfig {
    /// The database file.
    pub db_path: PathBuf,
    /// Durability of each commit.
    pub sync: Sync,
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
}

impl WriterConfig {
    /// The defaults for a database at `db_path`.
    pub fn new(db_path: PathBuf) -> Self {
        WriterConfig {
            db_path,
            sync: Sync::Full,
            max_batch_entries: 4096,
            max_batch_delay: Duration::ZERO,
            checkpoint_pages: 4096,
            idle_checkpoint: Duration::from_secs(1),
            cache_kib: 8192,
            optimize_interval: Some(Duration::from_secs(3600)),
            heartbeat: Duration::from_millis(250),
        }
    }
}

/// Counters the writer publishes for metrics and the watchdog.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Entries committed since start (duplicates not counted).
    pub entries_committed: AtomicU64,
    /// Transactions committed since start.
    pub batches_committed: AtomicU64,
    /// Batches that failed and were rolled back.
    pub batches_failed: AtomicU64,
    /// Last committed `seq`.
    pub last_seq: AtomicU64,
    /// Bumped every time the writer loop turns, busy or idle; the watchdog reads it.
    pub heartbeat: AtomicU64,
    /// Batch size, commit and acknowledgement times.
    pub timings: std::sync::Mutex<Timings>,
    /// Why the writer stopped acknowledging for good, once it has.
    pub failure: std::sync::Mutex<Option<String>>,
    /// Cancelled when the writer fails for good: the server then stops the daemon.
    pub failed: tokio_util::sync::CancellationToken,
}

impl WriterStats {
    /// Why the writer stopped acknowledging, if it has.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("never poisoned").clone()
    }
}

/// The running writer: its queue and its thread.
#[derive(Debug)]
pub struct WriterHandle {
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
    pub fn start(config: WriterConfig, identity: Option<Identity>) -> Result<Self, OpenError> {
        let connection = schema::open_writer(&config.db_path, config.sync, config.cache_kib)?;
        if let Some(identity) = identity
            && let Err(reason) = dbfile::check(&config.db_path, identity)
        {
            return Err(OpenError::Moved(reason));
        }
        let queue = JobQueue::new();
        let stats = Arc::new(WriterStats::default());
        let (committed_sender, committed) = tokio::sync::watch::channel(0);
        let mut writer = Writer::new(connection, config, Arc::clone(&stats), committed_sender)
            .map(|writer| Writer { identity, ..writer })
            .map_err(|source| OpenError::Sqlite {
                path: "database".into(),
                source,
            })?;
        let thread = {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("witness-writer".into())
                .spawn(move || writer.run(&queue))
                .expect("spawning the writer thread")
        };
        Ok(WriterHandle {
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

/// One run of a producer's entries, to walk back from its last run to the numbers re-sent.
const FIND_RUN: &str =
    "SELECT first_number, entries, previous FROM producer_runs WHERE first_seq = ?1";

/// The stored rows a run says hold a producer's numbers, read to confirm it.
const FIND_PRODUCED: &str = "SELECT seq, producer_id, producer_number, hash FROM entries \
    WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq";

const SAVE_PRODUCER: &str = "INSERT INTO producers (producer_id, last_number, last_run) \
    VALUES (?1, ?2, ?3) ON CONFLICT (producer_id) DO UPDATE SET \
    last_number = excluded.last_number, last_run = excluded.last_run";

/// Runs the writer walks back, at most, to find re-sent numbers: a client re-sends only what
/// it has not seen acknowledged, which is its last few appends, so this bounds the work one
/// append can cost the writer (about a millisecond a thousand runs) without refusing any
/// real re-send. PROTOCOL.md states it.
pub const MAX_RESEND_RUNS: u32 = 65_536;

/// What the writer knows of a producer: its last committed number, and the first `seq` of
/// its last run (`None` for a producer with no entries stored since runs were kept).
#[derive(Debug, Clone, Copy, Default)]
struct Producer {
    last_number: i64,
    last_run: Option<i64>,
}

/// The checkpoints the writer runs: passive between busy batches (copies what no reader
/// still needs), truncate when idle and at shutdown (empties the WAL file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    Passive,
    Truncate,
}

/// The head of the chain as committed.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: i64,
    hash: [u8; 32],
}

/// What one job of a batch came to, before the commit decides whether it stands.
enum Outcome {
    Written(Vec<Receipt>),
    Refused(ErrorReply),
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
}

impl Writer {
    fn new(
        mut connection: Connection,
        config: WriterConfig,
        stats: Arc<WriterStats>,
        committed: tokio::sync::watch::Sender<u64>,
    ) -> rusqlite::Result<Self> {
        let head = connection
            .query_row(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1",
                [],
                |row| {
                    Ok(Head {
                        seq: row.get(0)?,
                        hash: row.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or(Head {
                seq: 0,
                hash: GENESIS,
            });
        stats.last_seq.store(head.seq as u64, Ordering::Relaxed);
        committed.send_replace(head.seq as u64);
        let wal_pages = Arc::new(AtomicU32::new(0));
        let hook_pages = Arc::clone(&wal_pages);
        // Set after `wal_autocheckpoint`, which would replace it.
        connection.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                hook_pages.store(pages.max(0) as u32, Ordering::Relaxed);
                Ok(())
            },
        ))?;
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
            producers: HashMap::new(),
            wal_pages,
            scratch: Vec::with_capacity(4096),
            dirty_since_truncate: true,
            last_batch_entries: 0,
            last_commit: Duration::ZERO,
            last_job: Instant::now(),
            last_optimize: Instant::now(),
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
            match queue.next(self.config.heartbeat) {
                Next::Job(lane, job, more) => {
                    shares.record(lane, &job, more);
                    batch.push(*job);
                }
                Next::Control(request) => {
                    self.control(request);
                    continue;
                }
                Next::Idle => {
                    self.check_file();
                    if self.failure.is_some() {
                        continue;
                    }
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
            self.commit(&mut batch);
            self.last_job = Instant::now();
            if self.failure.is_none()
                && self.wal_pages.load(Ordering::Relaxed) >= self.config.checkpoint_pages
            {
                self.checkpoint(Checkpoint::Passive);
            }
            self.maybe_optimize();
        }
        if self.failure.is_none() {
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
        }
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
            tracing::error!("{reason}: acknowledging nothing more, and stopping");
            *self.stats.failure.lock().expect("never poisoned") = Some(reason.clone());
            self.failure = Some(reason);
            self.stats.failed.cancel();
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
        let started = Instant::now();
        self.last_batch_entries = batch.iter().map(|job| job.entries.len()).sum();
        let written = self.write(batch);
        self.last_commit = started.elapsed();
        match written {
            Ok((outcomes, head, producers, n_written)) => {
                // Committed, but to the file the path names? Checked before any answer goes
                // out, so that nothing written to a deleted or replaced file is acknowledged.
                self.check_file();
                if let Some(reason) = self.failure.clone() {
                    return self.refuse_all(batch, &reason, true);
                }
                self.head = head;
                self.producers.extend(producers);
                self.dirty_since_truncate = true;
                self.stats
                    .entries_committed
                    .fetch_add(n_written, Ordering::Relaxed);
                self.stats.batches_committed.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_seq
                    .store(head.seq as u64, Ordering::Relaxed);
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
            }
        }
    }

    /// One transaction for the whole batch. Nothing of the writer's state changes here: the
    /// new head and producer numbers are returned and kept only if the commit succeeds.
    #[allow(clippy::type_complexity)]
    fn write(
        &mut self,
        batch: &[Job],
    ) -> rusqlite::Result<(Vec<Outcome>, Head, HashMap<i64, Producer>, u64)> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut head = self.head;
        let mut touched: HashMap<i64, Producer> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut n_written = 0u64;
        // Summed per batch so that `cost_hourly` takes a few upserts per commit, not one per
        // entry.
        let mut costs: HashMap<(i64, &str, &str, &str), [i64; 4]> = HashMap::new();
        {
            let mut insert = transaction.prepare_cached(schema::INSERT_ENTRY)?;
            let mut add_run = transaction.prepare_cached(schema::ADD_PRODUCER_RUN)?;
            for job in batch {
                let (first_new, mut receipts) = match job.producer {
                    None => (0, Vec::new()),
                    Some(producer) => {
                        let id = producer.producer_id as i64;
                        let known = match touched.get(&id).or_else(|| self.producers.get(&id)) {
                            Some(&known) => known,
                            None => read_producer(&transaction, id)?,
                        };
                        let want_receipts = job.ack == Ack::Committed;
                        let n = job.entries.len();
                        match already_written(
                            &transaction,
                            producer,
                            n,
                            want_receipts,
                            known,
                            MAX_RESEND_RUNS,
                        )? {
                            Ok((first_new, receipts)) => {
                                let mut now = known;
                                if first_new < n {
                                    let first_seq = head.seq + 1;
                                    let first_number =
                                        producer.first_number as i64 + first_new as i64;
                                    add_run.execute((
                                        first_seq,
                                        id,
                                        first_number,
                                        (n - first_new) as i64,
                                        known.last_run,
                                    ))?;
                                    now = Producer {
                                        last_number: first_number + (n - first_new) as i64 - 1,
                                        last_run: Some(first_seq),
                                    };
                                }
                                touched.insert(id, now);
                                (first_new, receipts)
                            }
                            Err(reply) => {
                                outcomes.push(Outcome::Refused(reply));
                                continue;
                            }
                        }
                    }
                };
                if job.ack == Ack::Committed {
                    receipts.reserve(job.entries.len() - first_new);
                }
                for (index, entry) in job.entries.iter().enumerate().skip(first_new) {
                    head.seq += 1;
                    let number = job.producer.map(|p| p.first_number as i64 + index as i64);
                    let values = row_values(head.seq, entry, &job.origin, job.producer, number);
                    head.hash = hash_row(&head.hash, &values, &mut self.scratch);
                    for (position, value) in values.iter().enumerate() {
                        insert.raw_bind_parameter(position + 1, value)?;
                    }
                    insert.raw_bind_parameter(19, &head.hash[..])?;
                    insert.raw_execute()?;
                    n_written += 1;
                    let cost = entry.cost.as_ref();
                    let model = cost.and_then(|cost| cost.model.as_deref()).unwrap_or("");
                    let key = (
                        job.origin.ts / schema::HOUR_NS,
                        entry.component.as_str(),
                        entry.event.as_str(),
                        model,
                    );
                    let sums = costs.entry(key).or_default();
                    sums[0] += 1;
                    if let Some(cost) = cost {
                        // Saturating: absurd figures from one client must not fail the batch
                        // of everyone else.
                        sums[1] = sums[1].saturating_add(cost.tokens_in as i64);
                        sums[2] = sums[2].saturating_add(cost.tokens_out as i64);
                        sums[3] = sums[3].saturating_add(cost.micro_usd as i64);
                    }
                    if job.ack == Ack::Committed {
                        receipts.push(Receipt {
                            seq: head.seq as u64,
                            hash: head.hash,
                        });
                    }
                }
                outcomes.push(Outcome::Written(receipts));
            }
            let mut save = transaction.prepare_cached(SAVE_PRODUCER)?;
            for (&id, producer) in &touched {
                save.execute((id, producer.last_number, producer.last_run))?;
            }
            let mut add_cost = transaction.prepare_cached(schema::ADD_COST_HOURLY)?;
            for ((hour, component, event, model), sums) in costs {
                add_cost.execute((
                    hour, component, event, model, sums[0], sums[1], sums[2], sums[3],
                ))?;
            }
        }
        transaction.commit()?;
        Ok((outcomes, head, touched, n_written))
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

/// Sends the answer a job's outcome calls for, releasing its permits.
fn acknowledge(job: Job, outcome: Outcome) {
    let response = match (outcome, job.ack) {
        (Outcome::Written(receipts), Ack::Committed | Ack::Durable) => {
            Response::Committed { receipts }
        }
        (Outcome::Written(_), Ack::Queued | Ack::None) => return,
        (Outcome::Refused(reply), _) => Response::Error(reply),
    };
    let frame = ResponseFrame {
        id: job.request_id,
        response,
    };
    // A connection that has gone away no longer needs its answer.
    let _ = job.reply_to.send(Outgoing {
        frame,
        permit: Some(job.connection_permit),
    });
}

/// A producer as stored, or a new one.
fn read_producer(connection: &Connection, producer_id: i64) -> rusqlite::Result<Producer> {
    Ok(connection
        .prepare_cached("SELECT last_number, last_run FROM producers WHERE producer_id = ?1")?
        .query_row([producer_id], |row| {
            Ok(Producer {
                last_number: row.get(0)?,
                last_run: row.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// For an append of `n` entries whose first ones a producer already had committed (a re-send
/// after a lost acknowledgement), how many of them, with their receipts when the client wants
/// receipts. Numbers are consecutive within an append, so the duplicates are always a prefix.
///
/// Every number taken for a duplicate must really be stored, whatever the acknowledgement
/// mode: a number at or below the producer's last that was never stored (a client that
/// reused numbers, or a hand-edited `producers` table) is refused, never acknowledged. The
/// producer's runs, walked back from its last (at most `max_runs` of them), say where each
/// number is; the rows they point at are read to confirm it.
fn already_written(
    connection: &Connection,
    producer: ProducerRef,
    n: usize,
    want_receipts: bool,
    known: Producer,
    max_runs: u32,
) -> rusqlite::Result<Result<(usize, Vec<Receipt>), ErrorReply>> {
    let first = producer.first_number as i64;
    let last = known.last_number;
    if first > last {
        return Ok(Ok((0, Vec::new())));
    }
    let n_known = ((last - first + 1) as usize).min(n);
    let end = first + n_known as i64 - 1;
    let refuse = |number: i64, why: String| {
        let mut reply = ErrorReply::new(ErrorCode::BadRequest, why);
        reply.entry_index = Some((number - first) as u32);
        Ok(Err(reply))
    };
    // The runs that hold numbers in first..=end, newest first: (first_seq, first_number, entries).
    let mut runs: Vec<(i64, i64, i64)> = Vec::new();
    let mut find_run = connection.prepare_cached(FIND_RUN)?;
    let mut cursor = known.last_run;
    let mut walked = 0u32;
    while let Some(first_seq) = cursor {
        if walked == max_runs {
            return refuse(
                first,
                format!(
                    "entry number {first} of producer {} was committed more than {max_runs}                      appends of it ago: too old to re-send; start a new producer",
                    producer.producer_id
                ),
            );
        }
        walked += 1;
        let Some((first_number, entries, previous)) = find_run
            .query_row([first_seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?
        else {
            break;
        };
        if first_number <= end {
            runs.push((first_seq, first_number, entries));
        }
        if first_number <= first {
            break;
        }
        cursor = previous;
    }
    let mut receipts = Vec::new();
    let mut find = connection.prepare_cached(FIND_PRODUCED)?;
    let mut expected = first;
    for &(first_seq, first_number, entries) in runs.iter().rev() {
        let from = expected.max(first_number);
        let to = end.min(first_number + entries - 1);
        if from != expected || to < from {
            break;
        }
        let seq = |number: i64| first_seq + (number - first_number);
        let mut rows = find.query((seq(from), seq(to)))?;
        while let Some(row) = rows.next()? {
            let stored = (
                row.get::<_, i64>(0)?,
                row.get::<_, Option<i64>>(1)?,
                row.get::<_, Option<i64>>(2)?,
            );
            let hash = <[u8; 32]>::try_from(row.get_ref(3)?.as_blob().unwrap_or_default());
            if stored
                != (
                    seq(expected),
                    Some(producer.producer_id as i64),
                    Some(expected),
                )
                || hash.is_err()
            {
                break;
            }
            if want_receipts {
                receipts.push(Receipt {
                    seq: stored.0 as u64,
                    hash: hash.expect("checked"),
                });
            }
            expected += 1;
        }
        if expected <= to {
            break;
        }
    }
    if expected > end {
        return Ok(Ok((n_known, receipts)));
    }
    refuse(
        expected,
        format!(
            "entry number {expected} of producer {} is at or below its last committed number \
             {last} but was never stored: numbers must increase, so start a new producer",
            producer.producer_id
        ),
    )
}

/// The stored columns of an entry, in `chain::HASHED_COLUMNS` order: what is hashed and, with
/// the hash as parameter 19, what `schema::INSERT_ENTRY` binds.
pub fn row_values<'a>(
    seq: i64,
    entry: &'a Entry,
    origin: &Origin,
    producer: Option<ProducerRef>,
    number: Option<i64>,
) -> [Value<'a>; 18] {
    let cost = entry.cost.as_ref();
    let integer = |value: Option<u64>| Value::from(value.map(|value| value as i64));
    [
        Value::Integer(seq),
        Value::Integer(origin.ts),
        Value::from(entry.client_ts),
        Value::Text(&entry.event),
        Value::Text(&entry.component),
        Value::from(entry.trace_id.as_deref()),
        Value::Text(&entry.payload),
        integer(cost.map(|cost| cost.tokens_in)),
        integer(cost.map(|cost| cost.tokens_out)),
        integer(cost.and_then(|cost| cost.cache_read_tokens)),
        integer(cost.and_then(|cost| cost.reasoning_tokens)),
        integer(cost.map(|cost| cost.micro_usd)),
        Value::from(cost.and_then(|cost| cost.model.as_deref())),
        Value::from(origin.pid),
        Value::from(origin.uid),
        Value::from(origin.gid),
        Value::from(producer.map(|producer| producer.producer_id as i64)),
        Value::from(number),
    ]
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Integer(integer) => ValueRef::Integer(integer),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log in which producer 1 wrote numbers 1..=5, one append each, at seq 1..=5.
    fn five_runs() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection =
            schema::open_writer(&dir.path().join("witness.db"), schema::Sync::Normal, 1024)
                .unwrap();
        let mut previous: Option<i64> = None;
        for seq in 1..=5i64 {
            connection
                .execute(
                    "INSERT INTO entries (seq, ts, event, component, payload, producer_id, \
                     producer_number, hash) VALUES (?1, 1, 'e', 'c', '{}', 1, ?1, zeroblob(32))",
                    [seq],
                )
                .unwrap();
            connection
                .execute(schema::ADD_PRODUCER_RUN, (seq, 1, seq, 1, previous))
                .unwrap();
            previous = Some(seq);
        }
        (dir, connection)
    }

    #[test]
    fn a_re_send_is_looked_up_no_further_back_than_the_bound() {
        let (_dir, connection) = five_runs();
        let producer = ProducerRef {
            producer_id: 1,
            first_number: 1,
        };
        let known = Producer {
            last_number: 5,
            last_run: Some(5),
        };
        let found = already_written(&connection, producer, 2, true, known, 5).unwrap();
        let (n_known, receipts) = found.expect("within the bound");
        assert_eq!(n_known, 2);
        assert_eq!(
            receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let refused = already_written(&connection, producer, 2, true, known, 4).unwrap();
        let reply = refused.expect_err("past the bound");
        assert!(reply.message.contains("too old to re-send"), "{reply}");
        assert_eq!(reply.entry_index, Some(0));
        // Numbers near the end need only the last runs.
        let recent = ProducerRef {
            producer_id: 1,
            first_number: 4,
        };
        let found = already_written(&connection, recent, 3, false, known, 2).unwrap();
        assert_eq!(found.expect("recent").0, 2);
    }
}
