//! The WAL copier: a thread of its own, with a connection of its own, that runs the passive
//! checkpoints a busy writer asks for.
//!
//! A passive checkpoint copies the WAL's pages into the database file and syncs it: some
//! 16 MiB and tens of milliseconds at the default `checkpoint_pages`. Run on the writer's
//! thread, every append arriving meanwhile waited for it, which made it the tail of every
//! latency under load (an export's p99 at half rate, a small commit's). SQLite lets a
//! checkpoint run on another connection while the writer goes on appending, so the copier
//! does the bulk of the copy there. What the writer appended during the copy is left in the
//! WAL; the writer copies that short rest itself between two batches (see
//! `Writer::upkeep_wal`), because the WAL can restart from its beginning only once every
//! frame in it has been copied, and only a checkpoint between the writer's batches sees the
//! WAL with nothing being added.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::format::schema::{Durability, OpenError};

/// What the copier's last checkpoint came to: the WAL's frames when it ran, and how many of
/// them are now in the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Copied {
    /// Frames in the WAL when the checkpoint ran.
    pub(super) log: i64,
    /// Frames copied into the database file (all of `log` unless a reader held some back).
    pub(super) done: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Checkpoints asked for, and the number of the last one finished.
    asked: u64,
    finished: u64,
    last: Option<Copied>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The running copier. Dropping it stops the thread (after the checkpoint under way) and
/// closes its connection.
#[derive(Debug)]
pub(super) struct Copier {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Copier {
    /// Opens a second read-write connection to the log at `path`, synced as `durability`
    /// says (a checkpoint syncs the WAL before it copies and the file after), and starts the
    /// thread.
    pub(super) fn start(path: &Path, durability: Durability) -> Result<Copier, OpenError> {
        let error = |source| OpenError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(error)?;
        connection
            .execute_batch(&format!(
                "PRAGMA synchronous = {}; PRAGMA wal_autocheckpoint = 0;",
                durability.synchronous()
            ))
            .map_err(error)?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("witness-copier".into())
                .spawn(move || run(&connection, &shared))
                .expect("spawning the WAL copier thread")
        };
        Ok(Copier {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint, unless one asked for is still to finish; the number to wait
    /// for with [`Copier::finished`].
    pub(super) fn ask(&self) -> u64 {
        let mut state = self.shared.state.lock().expect("never poisoned");
        if state.asked == state.finished {
            state.asked += 1;
            self.shared.wake.notify_one();
        }
        state.asked
    }

    /// The outcome of checkpoint `asked`, once it has finished (`Some(None)` when it failed).
    pub(super) fn finished(&self, asked: u64) -> Option<Option<Copied>> {
        let state = self.shared.state.lock().expect("never poisoned");
        (state.finished >= asked).then_some(state.last)
    }

    /// Stops the thread, waiting for the checkpoint under way, and closes its connection:
    /// the writer's last checkpoint at shutdown needs every other connection gone.
    pub(super) fn stop(&mut self) {
        self.shared.state.lock().expect("never poisoned").stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the WAL copier thread panicked");
        }
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Longest the copier sleeps without looking at its state, so that a stop is never missed.
const TURN: Duration = Duration::from_secs(1);

fn run(connection: &Connection, shared: &Shared) {
    loop {
        {
            let mut state = shared.state.lock().expect("never poisoned");
            while !state.stop && state.asked == state.finished {
                state = shared
                    .wake
                    .wait_timeout(state, TURN)
                    .expect("never poisoned")
                    .0;
            }
            if state.stop {
                return;
            }
        }
        let started = Instant::now();
        let copied = connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok(Copied {
                    log: row.get(1)?,
                    done: row.get(2)?,
                })
            })
            .inspect_err(|error| tracing::warn!(%error, "WAL checkpoint failed"))
            .ok();
        tracing::debug!(
            ?copied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "checkpoint on the copier's thread"
        );
        let mut state = shared.state.lock().expect("never poisoned");
        state.finished = state.asked;
        state.last = copied;
    }
}
