//! The client's errors: each says what failed and what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use witness_protocol::limits::LimitError;
use witness_protocol::{ErrorReply, FrameError};

/// An entry the daemon refused after `send` had returned; reported by `flush`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The number of the refused append's first entry among this client's sends, from 1.
    pub first_entry: u64,
    /// Entries in the refused append (all of them were refused).
    pub n_entries: usize,
    /// The daemon's reason.
    pub reply: ErrorReply,
}

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No daemon answered at the socket.
    #[error(
        "cannot connect to witnessd at {path}: {source}{}",
        connect_hint(source)
    )]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The connection broke and no daemon came back in time. Unacknowledged entries are
    /// still held and are re-sent by the next call that reconnects.
    #[error("lost witnessd at {path} and could not reconnect within {waited:?}: {source}")]
    Disconnected {
        /// The socket path.
        path: PathBuf,
        /// How long reconnection was tried.
        waited: Duration,
        /// The last failure.
        source: io::Error,
    },
    /// The daemon took too long to answer (or to take a request) on a live connection: it
    /// is overloaded or hung. Unanswered requests are still held and re-sent by the next
    /// call, on a new connection.
    #[error(
        "witnessd at {path} did not {what} within {waited:?}: it is overloaded or hung (see \
         `witness stats` and its log)"
    )]
    TimedOut {
        /// The socket path.
        path: PathBuf,
        /// How long the client waited.
        waited: Duration,
        /// What it waited for.
        what: &'static str,
    },
    /// The daemon refused the request; nothing of it was recorded.
    // The reply's message stands alone for people; its code, for programs, is in the value.
    #[error("witnessd refused the request: {}", .0.message)]
    Refused(ErrorReply),
    /// The daemon refused some of the entries sent with `send`; the others are recorded.
    #[error("witnessd refused {} append(s) sent earlier; first: {}", .0.len(), .0[0].reply.message)]
    Rejected(Vec<Rejection>),
    /// A spool's queue is full and the caller asked not to wait; the entry was not queued.
    #[error(
        "the spool's queue holds {capacity} entries and is full: the daemon is not keeping \
         up; the entry was not queued"
    )]
    QueueFull {
        /// The queue's capacity in entries.
        capacity: usize,
    },
    /// An entry breaks a limit; nothing was sent.
    #[error("invalid entry: {0}")]
    Invalid(#[from] LimitError),
    /// A batch does not fit in one append; split it.
    #[error("batch of {n_entries} entries does not fit in one append: {reason}")]
    BatchTooLarge {
        /// Entries in the batch.
        n_entries: usize,
        /// Which limit it breaks.
        reason: String,
    },
    /// The daemon answered something this client does not expect.
    #[error("unexpected answer from witnessd: {0}")]
    Protocol(String),
    /// Entries of `send` were not recorded, and could not be kept in the spool file either:
    /// they are lost to this process.
    #[error("{entries} entries sent were not recorded ({cause}) and could not be kept: {reason}")]
    NotKept {
        /// How many entries.
        entries: usize,
        /// Why they were not recorded.
        cause: Box<Error>,
        /// Why they could not be kept.
        reason: crate::spool_file::SpoolFileError,
    },
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// What to do about a failed connection, by its cause: a missing daemon and a socket this
/// user may not use call for different remedies.
fn connect_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            " (is it running? start it with `witnessd`, or set WITNESS_SOCKET to its socket)"
        }
        io::ErrorKind::PermissionDenied => {
            " (this user may not use that socket: the system service admits the group \
             `witness`; or set WITNESS_SOCKET to a socket of your own)"
        }
        _ => "",
    }
}
