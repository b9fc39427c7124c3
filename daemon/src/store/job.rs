//! The contract between connections and the writer: a job (one checked append), where its
//! answer goes, and the other requests the writer takes between batches.
//!
//! These types sit below both the connection side and the writer, so that neither needs the
//! other: the writer knows of a connection only its reply handle.

use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use witness_protocol::{Ack, Entry, ErrorReply, ProducerRef, Receipt, Response, ResponseFrame};

use crate::format::archive::Segment;
pub use crate::format::row::Origin;
use crate::store::admission::Admitted;

/// A response on its way to a connection, with the connection's in-flight permit, which is
/// released once the response is written.
#[derive(Debug)]
pub struct Outgoing {
    /// The response.
    pub frame: ResponseFrame,
    /// Released after the write; `None` for responses that hold no permit.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Where a connection receives its responses. Unbounded so that the writer never waits for a
/// client; the connection's in-flight permits bound what it can hold.
pub type ReplyTo = tokio::sync::mpsc::UnboundedSender<Outgoing>;

/// What a committed or refused append comes to, for a caller that waits on it alone: its
/// receipts (none unless the acknowledgement asked for them), or why nothing was recorded.
pub type Answer = Result<Vec<Receipt>, ErrorReply>;

/// Where a job's answer goes: the transports differ, the writer does not care which.
#[derive(Debug)]
pub enum Reply {
    /// A socket connection: the answer goes back as a frame with the request's id, and the
    /// connection's in-flight permit is released once it is written.
    Frame {
        /// The request id to answer.
        request_id: u64,
        /// The connection's responder.
        to: ReplyTo,
        /// The connection's in-flight permit for this request.
        permit: OwnedSemaphorePermit,
    },
    /// One caller waiting on this append alone (an HTTP request): the answer, once.
    Once(tokio::sync::oneshot::Sender<Answer>),
    /// Nobody waits: the daemon's own entries, which it checks by the head it reads after.
    Nobody,
}

impl Reply {
    /// Sends the answer for an append acknowledged as `ack`. A `Queued` or fire-and-forget
    /// append hears only of a refusal; a caller that went away no longer needs its answer.
    pub fn send(self, ack: Ack, answer: Answer) {
        match self {
            Reply::Frame {
                request_id,
                to,
                permit,
            } => {
                let response = match (answer, ack) {
                    (Ok(receipts), Ack::Committed | Ack::Durable) => {
                        Response::Committed { receipts }
                    }
                    (Ok(_), Ack::Queued | Ack::None) => return,
                    (Err(reply), _) => Response::Error(reply),
                };
                let frame = ResponseFrame {
                    id: request_id,
                    response,
                };
                let _ = to.send(Outgoing {
                    frame,
                    permit: Some(permit),
                });
            }
            Reply::Once(sender) => {
                let _ = sender.send(answer);
            }
            Reply::Nobody => {}
        }
    }
}

/// One validated append, on its way to the writer.
#[derive(Debug)]
pub struct Job {
    /// The acknowledgement asked for.
    pub ack: Ack,
    /// Producer id and number of the first entry, for exactly-once.
    pub producer: Option<ProducerRef>,
    /// The entries, already checked.
    pub entries: Vec<Entry>,
    /// Receive time and credentials.
    pub origin: Origin,
    /// When the append was read, for the acknowledgement time in stats.
    pub received: Instant,
    /// Where the answer goes.
    pub reply: Reply,
    /// Room in the queue (the producer's share and the whole queue's), released once the
    /// batch is committed so that the queue bounds what the writer holds too; `None` for
    /// the daemon's own entries, which the writer makes and commits at once.
    pub admitted: Option<Admitted>,
    /// The producer had nothing else in flight when it sent this: its client waits on this
    /// answer alone (a `log` call), where a pipelining client has others coming.
    pub alone: bool,
    /// One key an entry, for items that say themselves what makes them the same item (OTLP
    /// spans and log records): an entry whose key was received before is not stored again,
    /// and its receipt is the first one's. Empty for appends over the socket.
    pub keys: Vec<ReceivedKey>,
}

/// What makes a received item the same item when it is sent again (`docs/OTLP.md`,
/// "Exactly once across retries"): the item's own time, 8 bytes big-endian, then a SHA-256 of
/// what identifies it. The time leads so that a batch's keys, whose items are all about now,
/// land together at the end of `received_keys`' B-tree: random SHA-256 keys dirtied a page of
/// it per item, half of the writer's time for OTLP.
pub type ReceivedKey = [u8; 40];

/// The key of an item dated `time` (nanoseconds) whose identity hashes to `digest`.
pub fn received_key(time: u64, digest: [u8; 32]) -> ReceivedKey {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&time.to_be_bytes());
    key[8..].copy_from_slice(&digest);
    key
}

impl Job {
    /// A job of the daemon's own entries, which the writer commits itself.
    pub fn internal(entries: Vec<Entry>, origin: Origin) -> Job {
        Job {
            ack: Ack::None,
            producer: None,
            entries,
            origin,
            received: Instant::now(),
            reply: Reply::Nobody,
            admitted: None,
            alone: false,
            keys: Vec::new(),
        }
    }
}

/// Entries one pruning step deletes: a few milliseconds of the writer's time, so that a
/// batch waits no longer than that behind it.
pub const PRUNE_STEP: u64 = 2048;

/// The cost sums of each step of a prune, by the step's range (`PRUNE_STEP` entries from the
/// range's start), summed by the archiver off the writer's thread. The entries below the
/// head never change, so the sums hold when the writer deletes them.
pub type StepCosts = Vec<((u64, u64), crate::format::cost::CostGroups)>;

/// Requests to the writer other than appends, handled between batches.
#[derive(Debug)]
pub enum Control {
    /// New batching settings (a configuration reload).
    Tune {
        /// The writer's new `max_batch_entries`.
        max_batch_entries: usize,
        /// The writer's new `max_batch_delay`.
        max_batch_delay: Duration,
    },
    /// Run a bounded `ANALYZE` and answer with how long it took, or why it failed.
    Analyze(tokio::sync::oneshot::Sender<rusqlite::Result<Duration>>),
    /// Prune a range from the start of the live log: record it (archived, or dropped), then
    /// delete its entries in bounded steps between batches. Answered once the last is
    /// deleted, or with why the range was not taken.
    Prune(
        Box<Segment>,
        StepCosts,
        tokio::sync::oneshot::Sender<Result<(), PruneRefused>>,
    ),
    /// Sign a checkpoint of the committed tree now, whatever the interval, and answer once
    /// done (or failed, which the writer logs): a prune asked for on demand then covers what
    /// was just written instead of waiting for the next interval.
    Sign(tokio::sync::oneshot::Sender<()>),
}

/// Why the writer did not take a prune, or did not finish it.
#[derive(Debug, thiserror::Error)]
pub enum PruneRefused {
    /// The writer has failed for good and takes nothing more.
    #[error("the writer has failed: {0}")]
    Failed(String),
    /// Another prune is being carried out.
    #[error("a prune is already under way")]
    Busy,
    /// The range does not start where the live log does.
    #[error("the live log starts at seq {start}, not at {first}")]
    NotAtStart {
        /// Where the live log starts.
        start: u64,
        /// Where the range starts.
        first: u64,
    },
    /// The range reaches the log's last entry, which the writer continues from.
    #[error("the log's last entry, {0}, is never pruned")]
    Head(i64),
    /// The sealed range's chain hashes are not the live log's.
    #[error(
        "the segment of entries {first} to {last} does not hold the chain hashes of the live log"
    )]
    OtherChain {
        /// The range's first entry.
        first: u64,
        /// The range's last entry.
        last: u64,
    },
    /// The `witness.pruned` entry that records the prune could not be committed.
    #[error("could not record the prune in the log")]
    NotRecorded,
    /// The database could not be read or written.
    #[error("the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
