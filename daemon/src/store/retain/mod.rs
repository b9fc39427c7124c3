//! Retention: the archiver thread, which keeps the live log within its policy (an age, a size)
//! and prunes on demand.
//!
//! It decides what goes and seals it, reading the log through a read connection of its own so
//! that ingest never waits on it: each range (whole level-0 tiles, at most `segment_entries`)
//! is written to a temporary file, fsynced, verified on its own and against the live log's
//! chain hashes, renamed into the archive folder and the folder fsynced. Only then does it hand
//! the range to the writer (`Control::Prune`), which records it and deletes its entries in
//! bounded steps between batches. A crash at any point leaves either a temporary file (removed
//! at start), a sealed file not yet recorded (sealed again, to the same name), or a recorded
//! range whose deletes the writer finishes at start: never a deleted entry without its sealed
//! archive.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::{ErrorCode, ErrorReply};

use crate::format::archive::{self, Segment};
use crate::format::{schema, verify};
use crate::store::job::{Control, PRUNE_STEP, PruneRefused, StepCosts};
use crate::store::queue::JobQueue;

mod seal;

use seal::clean_archive_dir;

/// Why the archiver could not prune.
#[derive(Debug, thiserror::Error)]
pub enum RetainError {
    /// Its read connection could not be opened.
    #[error("opening a reader: {0}")]
    Open(#[from] schema::OpenError),
    /// The live log could not be read.
    #[error("reading the log: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The live log is not what the archiver expected of it.
    #[error("{0} (entry {1})")]
    Unexpected(&'static str, u64),
    /// The segment could not be written, synced or given its name.
    #[error(transparent)]
    Write(#[from] archive::WriteError),
    /// The segment just written was read back and does not hold.
    #[error("the segment just written ({}) does not verify: {reason}", .path.display())]
    Unsealed {
        /// The temporary file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The segment could not be read back.
    #[error("reading back {}: {source}", .path.display())]
    ReadBack {
        /// The temporary file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The writer took no prune, or did not finish one.
    #[error(transparent)]
    Refused(#[from] PruneRefused),
    /// The writer stopped.
    #[error("the writer has stopped")]
    Stopped,
}

/// Leaves in a level-0 tile: ranges are pruned in whole tiles.
const TILE: u64 = crate::format::tree::TILE_WIDTH as u64;

/// What the live log keeps, and where what it lets go goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainConfig {
    /// Entries older than this (by their date or their receive time, whichever is older) are
    /// pruned.
    pub max_age: Option<Duration>,
    /// The database, WAL included, is kept under this many bytes in use.
    pub max_bytes: Option<u64>,
    /// Where pruned entries are archived; `None` drops them (the log records that it did).
    pub archive_dir: Option<PathBuf>,
    /// Most entries in one archive segment: a multiple of 256.
    pub segment_entries: u64,
}

impl Default for RetainConfig {
    fn default() -> Self {
        RetainConfig {
            max_age: None,
            max_bytes: None,
            archive_dir: None,
            segment_entries: DEFAULT_SEGMENT_ENTRIES,
        }
    }
}

/// Entries in a segment by default: one level-1 tile's worth, about 17 MB of typical entries.
pub const DEFAULT_SEGMENT_ENTRIES: u64 = 65_536;

/// How often the policy is looked at: a few queries, and a size bound is only as good as the
/// ingest it lets through between two looks.
const POLICY_INTERVAL: Duration = Duration::from_millis(250);

/// The share of `max_bytes` in use above which the policy prunes, and the share it prunes
/// down to: the gap keeps it from pruning a tile at a time.
const HIGH_WATER: f64 = 0.8;
const LOW_WATER: f64 = 0.65;

/// Both water marks move down by what arrives while a prune runs (the rate of entries times
/// the last prune's duration), so that at a high rate the database does not pass the bound
/// before the prune frees room; but never below these shares of `max_bytes`.
const HIGH_WATER_FLOOR: f64 = 0.4;
const LOW_WATER_FLOOR: f64 = 0.25;

/// What the first prune for size is taken to last until one has been timed: about what
/// sealing and deleting a segment of typical entries takes on a small machine.
const FIRST_CYCLE: Duration = Duration::from_millis(500);

/// Up to where an on-demand prune goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Entries with a smaller `seq`.
    Seq(u64),
    /// Entries dated (or received) before this time, in nanoseconds since the epoch.
    Time(i64),
}

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries pruned.
    pub entries: u64,
    /// Segments sealed (or ranges dropped).
    pub segments: u64,
    /// Bytes of the segments written.
    pub bytes: u64,
    /// The live log's first `seq` afterwards.
    pub first_seq: u64,
}

/// An on-demand prune, and where its answer goes.
#[derive(Debug)]
pub struct PruneRequest {
    /// Up to where.
    pub before: Before,
    /// Whether entries may be dropped when there is no archive folder.
    pub drop: bool,
    /// The answer.
    pub answer: tokio::sync::oneshot::Sender<Result<Pruned, ErrorReply>>,
}

/// The running archiver.
pub struct Archiver {
    stop: Arc<AtomicBool>,
    requests: mpsc::Sender<PruneRequest>,
    thread: Option<JoinHandle<()>>,
}

impl Archiver {
    /// Starts the archiver of the log at `db_path`, which hands ranges to the writer's
    /// `queue`.
    pub fn start(config: RetainConfig, db_path: PathBuf, queue: Arc<JobQueue>) -> Archiver {
        // Before anything is served, not on the thread: a client that sees the daemon up
        // sees no half-written segment of a sealing a crash cut short.
        if let Some(dir) = &config.archive_dir
            && let Err(error) = clean_archive_dir(dir)
        {
            tracing::error!(%error, dir = %dir.display(), "cannot prepare the archive folder");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, incoming) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("witness-archiver".into())
                .spawn(move || {
                    let mut worker = Worker {
                        config,
                        db_path,
                        queue,
                        stop,
                        reader: None,
                        failure: None,
                        aged: 0,
                        last_look: None,
                        rate: 0.0,
                        cycle: FIRST_CYCLE,
                    };
                    worker.run(&incoming);
                })
                .expect("spawning the archiver thread")
        };
        Archiver {
            stop,
            requests,
            thread: Some(thread),
        }
    }

    /// Where on-demand prunes go.
    pub fn requests(&self) -> mpsc::Sender<PruneRequest> {
        self.requests.clone()
    }

    /// Asks the thread to stop after the step it is on, and waits for it. Call it before the
    /// writer stops, or while the writer still answers: a range handed over is answered (or
    /// dropped with the writer) either way.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Tells the thread to stop, without waiting.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Worker {
    config: RetainConfig,
    db_path: PathBuf,
    queue: Arc<JobQueue>,
    stop: Arc<AtomicBool>,
    reader: Option<Connection>,
    /// The last failure of the policy, said once until it changes.
    failure: Option<String>,
    /// The last `seq` found older than `max_age`: it stays so, and the next look goes on
    /// from it instead of reading the same tiles again.
    aged: u64,
    /// The head at the last look at the policy, and when: for the rate of entries.
    last_look: Option<(Instant, u64)>,
    /// Entries a second, smoothed over the looks.
    rate: f64,
    /// How long the last prune for size took, sealing and deleting.
    cycle: Duration,
}

impl Worker {
    fn run(&mut self, incoming: &mpsc::Receiver<PruneRequest>) {
        let policy = self.config.max_age.is_some() || self.config.max_bytes.is_some();
        if policy && self.config.archive_dir.is_none() {
            tracing::warn!(
                "retention has no archive_dir: entries past the policy are dropped, and only \
                 the log's record of each prune remains"
            );
        }
        let mut next_policy = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            // With no policy there is nothing to look at: wait for requests alone (and look
            // at the stop flag as often), never with a timeout of zero.
            let wait = if policy {
                next_policy.saturating_duration_since(Instant::now())
            } else {
                POLICY_INTERVAL
            };
            match incoming.recv_timeout(wait.min(POLICY_INTERVAL)) {
                Ok(request) => {
                    let result = if self.config.archive_dir.is_none() && !request.drop {
                        Err(ErrorReply::new(
                            ErrorCode::BadRequest,
                            "there is no retain.archive_dir to archive to: configure one, or \
                             pass --drop to delete the entries with only the log's record of it",
                        ))
                    } else {
                        self.on_demand(request.before).map_err(|reason| {
                            ErrorReply::new(
                                ErrorCode::Storage,
                                format!("pruning failed: {}", crate::errors::one_line(&reason)),
                            )
                        })
                    };
                    let _ = request.answer.send(result);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait.min(POLICY_INTERVAL));
                }
            }
            if policy && Instant::now() >= next_policy {
                next_policy = Instant::now() + POLICY_INTERVAL;
                match self.apply_policy() {
                    // Under size pressure, look again at once: at a high rate of entries the
                    // interval alone lets the database grow by megabytes past the bound.
                    Ok(true) => next_policy = Instant::now(),
                    Ok(false) => {}
                    // Stopping cuts a prune short; the writer finishes it at the next start.
                    Err(_) if self.stop.load(Ordering::Relaxed) => {}
                    Err(reason) => {
                        let reason = crate::errors::one_line(&reason);
                        if self.failure.as_ref() != Some(&reason) {
                            tracing::error!(%reason, "retention failed; trying again");
                            self.failure = Some(reason);
                        }
                        continue;
                    }
                }
                if self.failure.take().is_some() {
                    tracing::info!("retention works again");
                }
            }
        }
    }

    fn reader(&mut self) -> Result<&Connection, RetainError> {
        if self.reader.is_none() {
            let connection = schema::open_reader(&self.db_path)?;
            self.reader = Some(connection);
        }
        Ok(self.reader.as_ref().expect("opened"))
    }

    /// Where the live log starts and ends: `(first seq, head)`.
    fn bounds(&mut self) -> Result<(u64, u64), RetainError> {
        let reader = self.reader()?;
        let (start, _) = schema::log_start(reader)?;
        let head: Option<i64> =
            reader.query_row("SELECT max(seq) FROM entries", [], |row| row.get(0))?;
        Ok((start, head.unwrap_or(0) as u64))
    }

    fn on_demand(&mut self, before: Before) -> Result<Pruned, RetainError> {
        let target = match before {
            Before::Seq(seq) => seq.saturating_sub(1),
            Before::Time(time) => self.last_before(time, u64::MAX, 0)?,
        };
        let (start, _) = self.bounds()?;
        let mut pruned = self.prune_to(target, usize::MAX)?;
        if pruned.segments == 0 {
            pruned.first_seq = start;
        }
        Ok(pruned)
    }

    /// The policy's verdict, carried out: what is older than `max_age`, and what takes the
    /// database over `max_bytes`. True when it pruned for size.
    fn apply_policy(&mut self) -> Result<bool, RetainError> {
        let (start, head) = self.bounds()?;
        if head <= TILE {
            return Ok(false);
        }
        let now = Instant::now();
        if let Some((then, before)) = self.last_look {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                let rate = head.saturating_sub(before) as f64 / seconds;
                self.rate = if self.rate == 0.0 {
                    rate
                } else {
                    0.7 * self.rate + 0.3 * rate
                };
            }
        }
        self.last_look = Some((now, head));
        let mut target = 0u64;
        let mut pressed = false;
        if let Some(max_bytes) = self.config.max_bytes {
            let (data, wal, per_entry) = self.used_bytes(start, head)?;
            let (data, used) = (data as f64, (data + wal) as f64);
            let bound = max_bytes as f64;
            let arriving = self.rate * self.cycle.as_secs_f64() * per_entry;
            let high = (bound * HIGH_WATER - arriving).max(bound * HIGH_WATER_FLOOR);
            let low = (bound * LOW_WATER - arriving).max(bound * LOW_WATER_FLOOR);
            // Pruning frees pages, not WAL: a WAL that a long reader holds back (a verify, a
            // backup) is not made smaller by emptying the live log into the archives, so
            // the entries kept never fall below the lower floor.
            let spare = data - bound * LOW_WATER_FLOOR;
            if used > high && per_entry > 0.0 && spare > 0.0 {
                let entries = ((used - low).min(spare) / per_entry).ceil() as u64;
                target = start - 1 + entries.div_ceil(TILE) * TILE;
                pressed = true;
            }
        }
        if let Some(max_age) = self.config.max_age {
            let cutoff = crate::format::row::now_ns().saturating_sub(max_age.as_nanos() as i64);
            let limit = if pressed {
                target
            } else {
                start - 1 + self.config.segment_entries
            };
            let aged =
                self.aged_before(cutoff, limit.max(start - 1 + self.config.segment_entries))?;
            // Unpressed, age prunes whole segments only, so that the archive is not a file
            // per tile.
            if pressed || aged + 1 - start >= self.config.segment_entries {
                target = target.max(aged);
            }
        }
        if target >= start {
            let started = Instant::now();
            let pruned = self.prune_to(target, if pressed { usize::MAX } else { 1 })?;
            if pressed && pruned.segments > 0 {
                self.cycle = started.elapsed();
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bytes of the database in use (pages not on the free list), of the WAL, and the
    /// average in use per live entry.
    fn used_bytes(&mut self, start: u64, head: u64) -> Result<(u64, u64, f64), RetainError> {
        let reader = self.reader()?;
        let pragma = |name: &str| -> Result<i64, RetainError> {
            Ok(reader.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))?)
        };
        let pages = pragma("page_count")? - pragma("freelist_count")?;
        let data = pages.max(0) as u64 * pragma("page_size")? as u64;
        let mut wal = self.db_path.clone().into_os_string();
        wal.push("-wal");
        let wal = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
        let live = (head + 1).saturating_sub(start).max(1);
        Ok((data, wal, data as f64 / live as f64))
    }

    /// The last `seq`, on a tile edge and at most `limit`, such that every entry from the
    /// log's start to it is dated or was received before `time`; entries up to `known` are
    /// known to be.
    fn last_before(&mut self, time: i64, limit: u64, known: u64) -> Result<u64, RetainError> {
        let (start, head) = self.bounds()?;
        let known = known.max(start - 1).min(limit);
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(
            "SELECT count(*), max(min(coalesce(client_ts, ts), ts)) FROM entries \
                 WHERE seq BETWEEN ?1 AND ?2",
        )?;
        let mut last = known;
        while last + TILE < head && last + TILE <= limit {
            let (count, newest): (i64, Option<i64>) = statement
                .query_row([last as i64 + 1, (last + TILE) as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if count as u64 != TILE || newest.is_none_or(|newest| newest >= time) {
                break;
            }
            last += TILE;
        }
        Ok(last)
    }

    /// `last_before` for the policy's own cutoff, which only moves forward, so that what was
    /// found aged once is not read again.
    fn aged_before(&mut self, cutoff: i64, limit: u64) -> Result<u64, RetainError> {
        let aged = self.last_before(cutoff, limit, self.aged)?;
        self.aged = self.aged.max(aged);
        Ok(aged)
    }

    /// Prunes from the log's start through `target` (rounded down to a tile edge, and short
    /// of the head), at most `max_segments` segments of `segment_entries`.
    fn prune_to(&mut self, target: u64, max_segments: usize) -> Result<Pruned, RetainError> {
        let mut pruned = Pruned::default();
        // Pruning stops at the latest signed checkpoint: have one signed over what was just
        // written rather than prune less than asked (at a high rate, a second of entries
        // can be more than `max_bytes` holds).
        let (_, head) = self.bounds()?;
        if self
            .signed_size()?
            .is_some_and(|signed| signed < target.min(head.saturating_sub(1)))
        {
            let (answer, answered) = tokio::sync::oneshot::channel();
            if self.queue.control(Control::Sign(answer)).is_ok() {
                let _ = answered.blocking_recv();
            }
        }
        while pruned.segments < max_segments as u64 && !self.stop.load(Ordering::Relaxed) {
            if !self.writer_caught_up()? {
                continue;
            }
            let (start, head) = self.bounds()?;
            pruned.first_seq = start;
            // The last entry always stays: it is the head the writer continues from. And
            // nothing goes that no signed checkpoint covers yet, so that every segment holds
            // a signature over its last entry (a second's wait, at most, while signing works).
            let signed = self.signed_size()?;
            let cap = (head.saturating_sub(1).min(signed.unwrap_or(u64::MAX)) / TILE) * TILE;
            let last = (target.min(cap) / TILE) * TILE;
            let last = last.min(start - 1 + self.config.segment_entries);
            if last < start {
                break;
            }
            let segment = self.seal(start, last)?;
            pruned.bytes += segment.bytes.unwrap_or(0);
            let costs = self.step_costs(start, last)?;
            let (answer, answered) = tokio::sync::oneshot::channel();
            if self
                .queue
                .control(Control::Prune(Box::new(segment), costs, answer))
                .is_err()
            {
                return Err(RetainError::Stopped);
            }
            match answered.blocking_recv() {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(reason.into()),
                Err(_) => return Err(RetainError::Stopped),
            }
            pruned.entries += last + 1 - start;
            pruned.segments += 1;
            pruned.first_seq = last + 1;
        }
        Ok(pruned)
    }

    /// The cost sums of each step the writer will take through `first..=last`: summing them
    /// here, off the writer's thread, takes a third of each step's time from ingest.
    fn step_costs(&mut self, first: u64, last: u64) -> Result<StepCosts, RetainError> {
        let reader = self.reader()?;
        let mut steps = Vec::new();
        let mut from = first;
        while from <= last {
            let to = last.min(from + PRUNE_STEP - 1);
            let groups = crate::format::cost::range_costs(reader, from, to)?;
            steps.push(((from, to), groups));
            from = to + 1;
        }
        Ok(steps)
    }

    /// The size of the latest signed checkpoint; `None` when the log has none (it signs
    /// none, or not yet).
    fn signed_size(&mut self) -> Result<Option<u64>, RetainError> {
        let size: Option<i64> =
            self.reader()?
                .query_row("SELECT max(size) FROM checkpoints", [], |row| row.get(0))?;
        Ok(size.map(|size| size as u64))
    }

    /// Whether the writer has finished every prune recorded (one resumed at start may still be
    /// deleting); if not, waits a moment and says no, so that nothing is sealed from a range
    /// being deleted.
    fn writer_caught_up(&mut self) -> Result<bool, RetainError> {
        let (start, _) = self.bounds()?;
        let recorded: Option<i64> =
            self.reader()?
                .query_row("SELECT max(last_seq) FROM segments", [], |row| row.get(0))?;
        if recorded.is_some_and(|last| last as u64 >= start) {
            std::thread::sleep(Duration::from_millis(20));
            return Ok(false);
        }
        Ok(true)
    }
}
