//! The messages a client and a daemon exchange.
//!
//! Every type here is part of the IPC boundary: its field order is its encoding, so a field
//! is never reordered or removed without a new `PROTOCOL_VERSION` and a new
//! `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};

use crate::admin::{MaintenanceReport, MaintenanceTask, StatsReport};
use crate::query::{
    CostQuery, CostReport, EntriesQuery, StoredEntry, StreamEnd, TraceQuery, TraceReport,
    TracesPage, TracesQuery,
};

/// A request as it travels: a client-chosen id, echoed in the response, and the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client; the daemon echoes it so that requests may be pipelined.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// What a client can ask of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Must be the first request on a connection.
    Hello(Hello),
    /// Record entries.
    Append(Append),
    /// Recompute the hash chain over a range of the log.
    Verify(VerifyRange),
    /// A liveness check, answered with `Pong`.
    Ping,
    /// Entries, streamed: `Entries` frames, then one `End` (`tail`, `tail -f`, `export`).
    Entries(EntriesQuery),
    /// One trace with its summary, answered with `Trace`.
    Trace(TraceQuery),
    /// Traces by last activity, answered with `Traces`.
    Traces(TracesQuery),
    /// Money and tokens per group, answered with `Cost`.
    Cost(CostQuery),
    /// The daemon's health and load, answered with `Stats`.
    Stats,
    /// Work on the database, answered with `Maintained`; only the daemon's own user (or
    /// root) may ask.
    Maintenance(MaintenanceTask),
    /// The latest checkpoint the daemon signed and the key that checks it, answered with
    /// `Checkpoint`.
    Checkpoint,
    /// A proof bundle (C2SP `tlog-proof`) that the entry with this `seq` is in the tree of the
    /// latest signed checkpoint, answered with `Proof`.
    Prove(u64),
    /// A consistency proof from the tree of `old` entries to that of a signed checkpoint
    /// (`new`, or the latest), answered with `Consistency`.
    Consistency {
        /// The older tree's size.
        old: u64,
        /// The size of a signed checkpoint; the latest when `None`.
        new: Option<u64>,
    },
    /// The price the daemon would give a call of a model, answered with `Price`.
    Price(crate::query::PriceQuery),
    /// The configured budgets and their spend this period, answered with `Budgets`.
    Budgets,
    /// A one-time login link to the dashboard (`web_listen`) for the asking user, answered
    /// with `WebLogin`; for those who may read the log.
    WebLogin,
    /// Where the daemon keeps the log, its key and its state, answered with `Paths`; for those
    /// who may read the log.
    Paths,
}

/// Opens a connection and states the protocol version the client speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal the daemon's `PROTOCOL_VERSION`.
    pub version: u32,
    /// A free-form name for logs, such as `my-app/1.2`.
    pub client: String,
}

/// Entries to record, and how the client wants to hear about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Append {
    /// When, if ever, the daemon answers.
    pub ack: Ack,
    /// What to do when the daemon's queue is full.
    pub on_full: OnFull,
    /// Identifies the sender and numbers the entries so that a re-sent append is recorded once.
    pub producer: Option<ProducerRef>,
    /// One or more entries; all of one append get consecutive sequence numbers.
    pub entries: Vec<Entry>,
}

/// The acknowledgement an append asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    /// No answer unless something went wrong (fire and forget).
    None,
    /// Answer once the entries are in the writer's queue (not yet durable).
    Queued,
    /// Answer once the entries are committed with the configured durability.
    Committed,
    /// Answer once committed, like `Committed`, but without receipts (an empty list): for
    /// senders that need to know their entries are durable, not their `seq` and hash, and
    /// whose unread answers should not cost the daemon 40 bytes an entry.
    Durable,
}

/// What the daemon does with an append that finds its queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFull {
    /// Wait for room; the client is slowed, nothing is dropped.
    Wait,
    /// Refuse at once with `ErrorCode::Busy`; nothing of the append is recorded.
    Busy,
}

/// Names the producer of an append and the number of its first entry.
///
/// A producer numbers its entries 1, 2, 3, … across all its appends. The daemon remembers the
/// last number it committed for each producer, in the same transaction as the entries, and
/// acknowledges an entry whose number is not above it without inserting it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerRef {
    /// Chosen at random by the producer; at most `limits::MAX_INTEGER`.
    pub producer_id: u64,
    /// The number of the append's first entry; the others follow consecutively.
    pub first_number: u64,
}

/// One event, as a client states it. The daemon adds the sequence number, the receive time,
/// the sender's credentials and the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What happened, such as `llm_call` or `user_login`.
    pub event: String,
    /// What did it, such as `billing` or `agent.planner`.
    pub component: String,
    /// Groups the entries of one trace, request or session.
    pub trace_id: Option<String>,
    /// JSON text; the daemon checks that it parses and stores it as sent.
    pub payload: String,
    /// Tokens and money spent, for entries that record a model call.
    pub cost: Option<Cost>,
    /// When the client says the event happened, in nanoseconds since the Unix epoch. Reads
    /// date an entry by this time when it is given (see `docs/PROTOCOL.md`, "Time").
    pub client_ts: Option<i64>,
    /// Set when this entry is a copy of one recorded elsewhere (`witness import` of an
    /// export): the original's fields the copy cannot hold (its `seq`, `ts`, `hash` and
    /// credentials) as a JSON object. A claim of the sender, like `client_ts`: the daemon
    /// stores and hashes it, and still records its own receive time and the sender's
    /// credentials, so a copy never passes for an entry its original producer sent here.
    pub imported: Option<String>,
}

/// Tokens and money spent by a model call. Money is an integer in micro-USD so that sums are
/// exact and hashes are stable; `None` is unpriced, which is not free.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cost {
    /// Input tokens (OpenTelemetry `gen_ai.usage.input_tokens`), cache reads and cache
    /// writes included.
    pub tokens_in: u64,
    /// Output tokens (OpenTelemetry `gen_ai.usage.output_tokens`), reasoning included.
    pub tokens_out: u64,
    /// Input tokens served from a prompt cache, if the provider reports them.
    pub cache_read_tokens: Option<u64>,
    /// Input tokens written to a prompt cache (Anthropic's `cache_creation_input_tokens`),
    /// whatever their lifetime, if the provider reports them.
    pub cache_write_tokens: Option<u64>,
    /// Of `cache_write_tokens`, those written for an hour rather than five minutes, which
    /// cost more.
    pub cache_write_1h_tokens: Option<u64>,
    /// Output tokens spent on reasoning, if the provider reports them.
    pub reasoning_tokens: Option<u64>,
    /// Money spent, in millionths of a US dollar; `None` asks the daemon to price the call
    /// from its table, and stays `None` (unpriced) when it has no price for the model.
    pub micro_usd: Option<u64>,
    /// The model that answered (OpenTelemetry `gen_ai.response.model`).
    pub model: Option<String>,
    /// The price the daemon used, when it priced the call: `TABLE:PROVIDER/MODEL`, with
    /// `@DATE` when the price has a start date. Set by the daemon; a client may send it only
    /// on an imported entry, whose original says it.
    pub priced_by: Option<String>,
}

/// A range of sequence numbers to verify; `None` means the start or the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerifyRange {
    /// First sequence number to check.
    pub from: Option<u64>,
    /// Last sequence number to check.
    pub to: Option<u64>,
}

/// A response as it travels: the id of the request it answers, and the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request this answers; 0 for an error about the connection itself when
    /// the request's id could not be read.
    pub id: u64,
    /// The answer.
    pub response: Response,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answers `Hello`.
    Hello(ServerHello),
    /// The entries of an `Ack::Queued` append are in the writer's queue.
    Queued {
        /// How many entries were queued.
        count: u32,
    },
    /// The entries of an `Ack::Committed` append are durable; one receipt per entry, in order.
    Committed {
        /// Sequence number and hash of each entry.
        receipts: Vec<Receipt>,
    },
    /// Answers `Ping`.
    Pong,
    /// Answers `Verify`.
    Verified(VerifyReport),
    /// The request failed; nothing of it was recorded.
    Error(ErrorReply),
    /// A page of a stream of entries, in `seq` order.
    Entries(Vec<StoredEntry>),
    /// The last frame of a stream of entries.
    End(StreamEnd),
    /// Answers `Trace`.
    Trace(TraceReport),
    /// Answers `Traces`.
    Traces(TracesPage),
    /// Answers `Cost`.
    Cost(CostReport),
    /// Answer to `Stats`.
    Stats(Box<StatsReport>),
    /// Answer to `Maintenance`: the task is done.
    Maintained(MaintenanceReport),
    /// Answer to `Checkpoint`.
    Checkpoint(crate::admin::CheckpointReport),
    /// Answer to `Prove`: the bundle's text.
    Proof(String),
    /// Answer to `Consistency`.
    Consistency(crate::admin::ConsistencyReport),
    /// Answer to `Price`.
    Price(crate::query::PriceAnswer),
    /// Answer to `Budgets`, in the configuration's order.
    Budgets(Vec<crate::admin::BudgetReport>),
    /// Answer to `WebLogin`.
    WebLogin(crate::admin::WebLogin),
    /// Answer to `Paths`.
    Paths(crate::admin::PathsReport),
}

/// The daemon's side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The daemon's `PROTOCOL_VERSION`.
    pub version: u32,
    /// The daemon's name and version, such as `witnessd 0.1.0`.
    pub server: String,
    /// The largest frame body the daemon accepts.
    pub max_frame_len: u32,
    /// The most entries the daemon accepts in one append.
    pub max_entries_per_append: u32,
    /// Requests a connection may have awaiting an answer before the daemon stops reading it.
    /// A pipelining client keeps fewer than this in flight, so that the daemon always reads
    /// while the client writes.
    pub max_in_flight: u32,
}

/// Where a committed entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// Its sequence number.
    pub seq: u64,
    /// Its chain hash, as stored in the `hash` column.
    pub hash: [u8; 32],
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerifyReport {
    /// Every entry in the range has the hash its content and its predecessor give.
    Intact {
        /// Entries checked.
        count: u64,
        /// First sequence number checked, if any entry was.
        first_seq: Option<u64>,
        /// Last sequence number checked, if any entry was.
        last_seq: Option<u64>,
        /// The hash of the last entry checked.
        head_hash: Option<[u8; 32]>,
    },
    /// The first entry that does not verify.
    Broken {
        /// Its sequence number.
        seq: u64,
        /// What is wrong with it.
        reason: String,
        /// Entries checked and found intact before it.
        checked: u64,
    },
    /// Every entry verifies, but data derived from them does not agree with them: a roll-up
    /// that reports other money, or producer numbers that would make the daemon skip or
    /// refuse entries.
    Inconsistent {
        /// The derived table, such as `cost_hourly` or `producers`.
        table: String,
        /// The first disagreement found.
        reason: String,
        /// Entries checked (all intact).
        checked: u64,
    },
}

/// A failed request: a code to branch on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
    /// For an invalid entry, its index within the append.
    pub entry_index: Option<u32>,
}

/// The kinds of failure a daemon reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The client's protocol version is not the daemon's. The connection is closed.
    VersionMismatch,
    /// The first request was not `Hello`. The connection is closed.
    ExpectedHello,
    /// A frame's length is above the limit. The connection is closed.
    FrameTooLarge,
    /// A frame's body could not be decoded. The connection stays open.
    BadFrame,
    /// A request is well formed but not acceptable (say, an empty append).
    BadRequest,
    /// An entry breaks a limit or its payload is not JSON; `entry_index` says which.
    InvalidEntry,
    /// The queue is full and the append asked for `OnFull::Busy`.
    Busy,
    /// The daemon is stopping and takes no new entries.
    ShuttingDown,
    /// The database refused the write; nothing of the batch was committed.
    Storage,
    /// The request needs a privilege the client's user lacks: maintenance from another user
    /// than the daemon's, or a user the configuration does not admit (to the daemon, or to
    /// reading).
    Forbidden,
    /// The client took too long: to say `Hello`, or to finish a frame it had begun. The
    /// connection is closed.
    TimedOut,
}

impl Entry {
    /// An entry with an event name, a component, and the empty JSON object as payload.
    pub fn new(event: impl Into<String>, component: impl Into<String>) -> Self {
        Entry {
            event: event.into(),
            component: component.into(),
            trace_id: None,
            payload: "{}".to_owned(),
            cost: None,
            client_ts: None,
            imported: None,
        }
    }

    /// Sets the trace id.
    pub fn trace(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Sets the payload from a JSON value.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload.to_string();
        self
    }

    /// Sets the payload from JSON text, which the daemon will check.
    pub fn payload_text(mut self, payload: impl Into<String>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets the cost.
    pub fn cost(mut self, cost: Cost) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Sets the client's own timestamp, in nanoseconds since the Unix epoch.
    pub fn client_time(mut self, ns_since_epoch: i64) -> Self {
        self.client_ts = Some(ns_since_epoch);
        self
    }
}

impl Cost {
    /// A cost of the given tokens and money, in micro-USD.
    pub fn new(tokens_in: u64, tokens_out: u64, micro_usd: u64) -> Self {
        Cost {
            tokens_in,
            tokens_out,
            micro_usd: Some(micro_usd),
            ..Cost::default()
        }
    }

    /// A cost of the given tokens with no money: the daemon prices it from the model.
    pub fn tokens(tokens_in: u64, tokens_out: u64) -> Self {
        Cost {
            tokens_in,
            tokens_out,
            ..Cost::default()
        }
    }

    /// Sets the model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the cache-read input tokens.
    pub fn cache_read_tokens(mut self, tokens: u64) -> Self {
        self.cache_read_tokens = Some(tokens);
        self
    }

    /// Sets the cache-write input tokens.
    pub fn cache_write_tokens(mut self, tokens: u64) -> Self {
        self.cache_write_tokens = Some(tokens);
        self
    }

    /// Sets how many of the cache-write tokens were written for an hour.
    pub fn cache_write_1h_tokens(mut self, tokens: u64) -> Self {
        self.cache_write_1h_tokens = Some(tokens);
        self
    }

    /// Sets the reasoning output tokens.
    pub fn reasoning_tokens(mut self, tokens: u64) -> Self {
        self.reasoning_tokens = Some(tokens);
        self
    }
}

impl ErrorReply {
    /// An error with no entry index.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
            entry_index: None,
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
