//! The read requests as commands, each answered by its own file: checked before any
//! database is read, then run on a read connection. The socket's dispatch and the HTTP
//! reads both go through here, so a read means the same on either.

use std::path::PathBuf;

use rusqlite::Connection;
use witness_protocol::query::{CostQuery, TraceQuery, TracesQuery};
use witness_protocol::{ErrorReply, Response, VerifyRange};

/// A read that is answered in one response.
#[derive(Debug, Clone)]
pub enum Command {
    /// Re-verify a range of the log.
    Verify(VerifyRange),
    /// One trace, paged.
    Trace(TraceQuery),
    /// Traces by last activity, paged.
    Traces(TracesQuery),
    /// A cost report.
    Cost(CostQuery),
    /// A consistency proof between two tree sizes.
    Consistency {
        /// The older size.
        old: u64,
        /// The newer size; the latest checkpoint's when none.
        new: Option<u64>,
    },
    /// An inclusion proof of one entry.
    Prove(u64),
    /// The latest signed checkpoint.
    Checkpoint,
}

/// What a command needs besides the database.
#[derive(Debug, Clone)]
pub struct Context {
    /// The archive folder, where proofs of pruned entries find their leaves.
    pub archive_dir: Option<PathBuf>,
    /// The key that verifies the log's checkpoints, as a note verifier key.
    pub verifier_key: String,
}

impl Command {
    /// Whether the command reads entries back, which `read_uids` / `read_gids` decide.
    /// Consistency proofs and checkpoints carry hashes only, and anyone admitted may have
    /// them.
    pub fn reads_entries(&self) -> bool {
        !matches!(self, Command::Consistency { .. } | Command::Checkpoint)
    }

    /// Checks the command before any database is read.
    pub fn check(&self) -> Result<(), ErrorReply> {
        match self {
            Command::Verify(range) => super::verify::check_verify(*range),
            Command::Trace(query) => super::traces::check_trace(query),
            Command::Traces(query) => super::traces::check_traces(query),
            Command::Cost(query) => super::cost::check_cost(query),
            Command::Consistency { .. } | Command::Prove(_) | Command::Checkpoint => Ok(()),
        }
    }

    /// Runs the command on a read connection.
    pub fn run(self, connection: &Connection, context: &Context) -> rusqlite::Result<Response> {
        let archives = context.archive_dir.as_deref();
        match self {
            Command::Verify(range) => super::verify::verify(connection, range),
            Command::Trace(query) => super::trace(connection, &query).map(Response::Trace),
            Command::Traces(query) => super::traces(connection, &query).map(Response::Traces),
            Command::Cost(query) => super::cost(connection, &query).map(Response::Cost),
            Command::Consistency { old, new } => super::consistency(connection, old, new, archives),
            Command::Prove(seq) => super::prove(connection, seq, archives),
            Command::Checkpoint => {
                super::checkpoint::checkpoint(connection, context.verifier_key.clone())
                    .map(Response::Checkpoint)
            }
        }
    }
}
