//! The read side: a small pool of read-only connections, and the queries behind `tail`,
//! `export`, `trace`, `traces` and `cost`.
//!
//! WAL lets these connections read a snapshot while the writer commits, so a heavy query
//! never stalls ingest. Queries run on tokio's blocking threads, at most `size` at once, so
//! they never stall the connection tasks either. Every query is paged and every page is
//! bounded in bytes as well as in rows, so no answer outgrows a frame.
//!
//! Each command has its file, in the spirit of mini-redis's `cmd/`: `entries` (tail, export,
//! follow), `traces` (trace, traces), `cost`, `verify`, `proof` (prove, consistency),
//! `checkpoint`, `backup`; each checks its request and runs it. `command` gathers those
//! answered in one response, for the socket and HTTP alike; `validation` holds the checks
//! they are made of, and `filter` turns a filter into SQL conditions for all of them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::format::schema::{self, OpenError};

mod backup;
mod checkpoint;
mod command;
mod cost;
mod entries;
mod filter;
mod line;
mod proof;
mod traces;
mod validation;
mod verify;

pub use backup::backup;
pub use command::{Command, Context};
pub use cost::{BUDGET_EVENT, budget_warnings, check_cost, cost, spend_since};
pub use entries::{check_entries, entries_page, last_seq, newest_cursor};
pub use line::{ExportLine, rfc3339};
pub use proof::{consistency, prove};
pub use traces::{check_trace, check_traces, trace, trace_summary, traces};
pub use validation::{check_backup_path, check_price};

/// A page stops growing once its entries hold this many bytes, whatever its row limit, so
/// that a page of large payloads still fits in a frame.
pub const PAGE_BYTES: usize = 1 << 20;

/// Read-only connections, opened on first use and kept for the next query.
#[derive(Debug)]
pub struct ReadPool {
    db_path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    slots: Arc<Semaphore>,
}

impl ReadPool {
    /// A pool of at most `size` connections to `db_path`.
    pub fn new(db_path: PathBuf, size: usize) -> Self {
        ReadPool {
            db_path,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// Runs `query` on a pooled connection on a blocking thread. Errors come back as text for
    /// the client: what failed and why.
    pub async fn run<T, F>(self: &Arc<Self>, query: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("never closed");
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let connection = pool.take().map_err(|error| error.to_string())?;
            let result = query(&connection).map_err(|error| format!("query failed: {error}"));
            pool.idle.lock().expect("not poisoned").push(connection);
            result
        })
        .await
        .map_err(|error| format!("query failed: {error}"))?
    }

    fn take(&self) -> Result<Connection, OpenError> {
        if let Some(connection) = self.idle.lock().expect("not poisoned").pop() {
            return Ok(connection);
        }
        let connection = schema::open_reader(&self.db_path)?;
        // A query's sort or temporary b-tree stays in memory, bounded by the page limits.
        let _ = connection.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -4096");
        Ok(connection)
    }
}
