//! The writer's upkeep between batches: signing checkpoints, `PRAGMA optimize`, WAL
//! checkpoints, and the checks that the file is still the log and that the disk has room.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Checkpoint, Copying, DISK_CHECK, DISK_CHECK_LOW, Writer};
use crate::format::schema;
use crate::store::dbfile;

/// Checkpoints the copier runs in a row before the writer copies the rest itself whatever
/// its size: a rate the copier cannot outrun would otherwise keep the WAL from ever
/// restarting.
const COPY_ROUNDS: u32 = 6;

/// The rest, as a fraction of `checkpoint_pages`, that the writer copies itself without
/// asking the copier to go again: a sixty-fourth, 64 pages by default, about a millisecond of
/// the writer's time here. An eighth (512 pages) left it 300–450 pages behind a flooder in
/// small batches, 7–11 ms during which every waiting client's entry waited, a dozen times a
/// second (BENCHMARKS.md, "Fairness, the wait for the waiting clients and the rest of a
/// checkpoint").
const REST_FRACTION: i64 = 64;

impl Writer {
    /// Signs a checkpoint of the committed tree when one is due (`now`: whatever the
    /// interval, at stop). A failure is the checkpointer's to log and retry: the entries stay
    /// committed, but the state file no longer vouches for them.
    pub(super) fn sign_checkpoint(&mut self, now: bool) {
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

    /// Copies the latest signed checkpoint to the daemon's log when a minute has passed since
    /// the last copy (`now`: at stop, whatever the time).
    pub(super) fn log_checkpoint(&mut self, now: bool) {
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.log_latest(now);
        }
    }

    /// Once a minute, forgets the OTLP keys received longer ago than their window, ten
    /// thousand at most each time, so that the step stays a few milliseconds.
    fn maybe_forget_keys(&mut self) {
        if self.last_forget.elapsed() < std::time::Duration::from_secs(60) {
            return;
        }
        self.last_forget = Instant::now();
        let before = crate::format::row::now_ns() - crate::format::schema::RECEIVED_KEYS_WINDOW_NS;
        if let Err(error) = self
            .connection
            .execute(crate::format::schema::FORGET_RECEIVED_KEYS, [before])
        {
            tracing::warn!(%error, "forgetting old OTLP keys failed; trying again in a minute");
        }
    }

    /// Runs `PRAGMA optimize` when its interval has passed. `analysis_limit` bounds it to
    /// milliseconds, so it runs between batches like a checkpoint.
    pub(super) fn maybe_optimize(&mut self) {
        self.maybe_forget_keys();
        let Some(interval) = self.config.optimize_interval else {
            return;
        };
        if self.last_optimize.elapsed() < interval {
            return;
        }
        let started = Instant::now();
        match self.connection.execute_batch("PRAGMA optimize") {
            Ok(()) => tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "PRAGMA optimize"
            ),
            Err(error) => tracing::warn!(%error, "PRAGMA optimize failed"),
        }
        self.last_optimize = Instant::now();
    }

    /// Checks that the database path still names the file this writer writes; on the first
    /// mismatch the writer fails for good: it says why, everywhere it can, and from then on
    /// refuses every append (the server stops the daemon).
    pub(super) fn check_file(&mut self) {
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
    pub(super) fn fail(&mut self, reason: String) {
        tracing::error!("{reason}: acknowledging nothing more, and stopping");
        *self.stats.failure.lock().expect("never poisoned") = Some(reason.clone());
        self.failure = Some(reason);
        self.stats.failed.cancel();
    }

    /// Looks at the free space on the database's file system (at most every `DISK_CHECK`,
    /// unless `now`), publishes it, and starts or stops refusing entries when it crosses
    /// `min_free_bytes`, saying so once each way.
    pub(super) fn check_disk(&mut self, now: bool) {
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

    /// Keeps the WAL near `checkpoint_pages`, between batches: once it holds that many, the
    /// copier copies them on its own thread while batches go on; then the writer copies the
    /// rest, what was appended meanwhile, itself, so that the next commit can restart the
    /// WAL from its beginning. While that rest is more than `REST_FRACTION` of the threshold
    /// (a copy under a high rate), the copier goes again first: at most `COPY_ROUNDS` times
    /// in a row, while each round leaves less behind than the one before, and only while
    /// the WAL holds less than twice `checkpoint_pages`. Past those the writer is appending
    /// faster than the copier copies, and only a copy between batches bounds the WAL.
    pub(super) fn upkeep_wal(&mut self) {
        let pages = i64::from(self.wal_pages.load(Ordering::Relaxed));
        let threshold = i64::from(self.config.checkpoint_pages);
        if pages < threshold {
            self.copying = None;
            return;
        }
        let Some(copier) = &self.copier else {
            return self.checkpoint(Checkpoint::Passive);
        };
        let Some(copying) = self.copying else {
            self.copying = Some(Copying {
                asked: copier.ask(),
                rounds: 1,
                rest: None,
            });
            return;
        };
        let Some(copied) = copier.finished(copying.asked) else {
            return;
        };
        let rest = copied.map_or(pages, |copied| pages - copied.done);
        if copier_goes_again(&copying, rest, pages, threshold) {
            self.copying = Some(Copying {
                asked: copier.ask(),
                rounds: copying.rounds + 1,
                rest: Some(rest),
            });
            return;
        }
        self.copying = None;
        self.checkpoint(Checkpoint::Passive);
    }

    pub(super) fn checkpoint(&mut self, mode: Checkpoint) {
        let started = Instant::now();
        let name = match mode {
            Checkpoint::Truncate => "TRUNCATE",
            Checkpoint::Passive => "PASSIVE",
        };
        // A TRUNCATE waits in SQLite's busy handler (5 s) for every reader to let go of the
        // WAL, and the writer thread waits with it: an append arriving meanwhile would not be
        // committed until then, and a reader polling every few milliseconds (a `tail -f`, the
        // dashboard, a test) made each idle turn such a wait. Without the handler it copies
        // what it can and reports busy at once; the next idle turn tries again.
        let would_wait = mode == Checkpoint::Truncate;
        if would_wait && let Err(error) = self.connection.busy_timeout(Duration::ZERO) {
            tracing::warn!(%error, "cannot turn off the busy wait for a checkpoint");
        }
        let result: rusqlite::Result<(i64, i64, i64)> =
            self.connection
                .query_row(&format!("PRAGMA wal_checkpoint({name})"), [], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                });
        if would_wait && let Err(error) = self.connection.busy_timeout(schema::BUSY_TIMEOUT) {
            tracing::warn!(%error, "cannot restore the busy timeout after a checkpoint");
        }
        match result {
            Ok((busy, log, done)) => {
                tracing::debug!(
                    mode = name,
                    busy,
                    log,
                    done,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "checkpoint"
                );
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

/// Whether, after the copier's round `copying` left `rest` of the WAL's `pages` uncopied,
/// the copier goes again rather than the writer copying the rest itself (see
/// `Writer::upkeep_wal`; `threshold` is `checkpoint_pages`).
fn copier_goes_again(copying: &Copying, rest: i64, pages: i64, threshold: i64) -> bool {
    let shrinking = copying.rest.is_none_or(|before| rest < before);
    rest > threshold / REST_FRACTION
        && shrinking
        && pages < 2 * threshold
        && copying.rounds < COPY_ROUNDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rounds: u32, rest: Option<i64>) -> Copying {
        Copying {
            asked: u64::from(rounds),
            rounds,
            rest,
        }
    }

    #[test]
    fn the_copier_goes_again_while_the_rest_is_large_and_shrinking() {
        // Beside a flooder in small batches: the first round leaves 350 of 4,096 pages.
        // The copier goes again (an eighth, 512 pages, once let the writer copy them).
        assert!(copier_goes_again(&round(1, None), 350, 4450, 4096));
        // The next leaves 90: still over a sixty-fourth, and less than before.
        assert!(copier_goes_again(&round(2, Some(350)), 90, 4540, 4096));
        // Under a sixty-fourth: the writer copies the rest itself.
        assert!(!copier_goes_again(&round(3, Some(90)), 60, 4600, 4096));
        // A rest that did not shrink: the copier is not outrunning the writer.
        assert!(!copier_goes_again(&round(2, Some(1190)), 1190, 5300, 4096));
        // The WAL at twice the threshold, or the rounds used up: the writer copies.
        assert!(!copier_goes_again(&round(1, None), 3000, 8192, 4096));
        assert!(!copier_goes_again(
            &round(COPY_ROUNDS, Some(500)),
            400,
            5000,
            4096
        ));
    }
}
