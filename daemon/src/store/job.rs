//! The contract between connections and the writer: a job (one checked append), where its
//! answer goes, and the other requests the writer takes between batches.
//!
//! These types sit below both the connection side and the writer, so that neither needs the
//! other: the writer knows of a connection only its reply handle.

use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use witness_protocol::{Ack, Entry, ProducerRef, ResponseFrame};

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

/// One validated append, on its way to the writer.
#[derive(Debug)]
pub struct Job {
    /// The request id to answer.
    pub request_id: u64,
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
    pub reply_to: ReplyTo,
    /// The connection's in-flight permit for this request.
    pub connection_permit: OwnedSemaphorePermit,
    /// Room in the queue (the connection's share and the whole queue's), released once the
    /// batch is committed so that the queue bounds what the writer holds too.
    pub admitted: Admitted,
    /// The connection had nothing else in flight when it sent this: its client waits on
    /// this answer alone (a `log` call), where a pipelining client has others coming.
    pub alone: bool,
}

/// Entries one pruning step deletes: a few milliseconds of the writer's time, so that a
/// batch waits no longer than that behind it.
pub const PRUNE_STEP: u64 = 2048;

/// The cost sums of each step of a prune, by the step's range (`PRUNE_STEP` entries from the
/// range's start), summed by the archiver off the writer's thread. The entries below the
/// head never change, so the sums hold when the writer deletes them.
pub type StepCosts = Vec<((u64, u64), crate::format::schema::CostGroups)>;

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
    Analyze(tokio::sync::oneshot::Sender<Result<Duration, String>>),
    /// Prune a range from the start of the live log: record it (archived, or dropped), then
    /// delete its entries in bounded steps between batches. Answered once the last is
    /// deleted, or with why the range was not taken.
    Prune(
        Box<Segment>,
        StepCosts,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    ),
    /// Sign a checkpoint of the committed tree now, whatever the interval, and answer once
    /// done (or failed, which the writer logs): a prune asked for on demand then covers what
    /// was just written instead of waiting for the next interval.
    Sign(tokio::sync::oneshot::Sender<()>),
}
