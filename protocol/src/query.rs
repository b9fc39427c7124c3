//! The read side of the protocol: filters, trace and cost reports, and stored entries.
//!
//! Every list can be walked page by page: a query takes a cursor (a `seq`, or an offset for
//! reports sorted by money) and a limit, and each answer says where the next page starts.
//! Like `message.rs`, every type here is part of the IPC boundary.

use serde::{Deserialize, Serialize};

use crate::Entry;

/// Most entries, traces or groups one page may ask for.
pub const MAX_PAGE: u32 = 10_000;

/// Which entries a query looks at. Every field narrows the set; `None` leaves it open.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Only entries of this component.
    pub component: Option<String>,
    /// Only entries of this event.
    pub event: Option<String>,
    /// Only entries of this trace.
    pub trace_id: Option<String>,
    /// Only entries dated at or after this time (the event's time: `client_ts` if given,
    /// else `ts`), in nanoseconds since the Unix epoch.
    pub since: Option<i64>,
    /// Only entries dated before this time, in nanoseconds since the Unix epoch.
    pub until: Option<i64>,
    /// Only entries with a sequence number above this one: the cursor.
    pub after_seq: Option<u64>,
    /// Only entries with a sequence number at or below this one.
    pub to_seq: Option<u64>,
}

/// Asks for entries, streamed in pages: `Response::Entries` frames in `seq` order, then one
/// `Response::End`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EntriesQuery {
    /// Which entries.
    pub filter: Filter,
    /// Start with only the newest this many matching entries (`tail -n`); `None` starts at
    /// the oldest matching entry (`export`).
    pub newest: Option<u32>,
    /// Stop after this many entries; the `End` carries the cursor to go on from.
    pub limit: Option<u64>,
    /// Once caught up, keep streaming entries as they are committed, until the client
    /// leaves or the daemon stops (`tail -f`). Ignores `limit`, `to_seq` and `until`.
    pub follow: bool,
}

/// Why a stream of entries ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// Every matching entry was sent.
    Complete,
    /// The query's limit was reached; more may follow `next_after`.
    Limit,
    /// The daemon is stopping. Entries committed before it stopped were all sent.
    ShuttingDown,
    /// The client did not read for too long and the daemon stopped streaming to it; nothing
    /// is lost, resume from `next_after`.
    CutOff,
}

/// The last frame of a stream of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// Why the stream ended.
    pub reason: EndReason,
    /// The `seq` of the last entry looked at, to pass as `after_seq` to go on; `None` if the
    /// stream looked at nothing.
    pub next_after: Option<u64>,
}

/// An entry as stored: what the client sent and what the daemon added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Its position in the log.
    pub seq: u64,
    /// When the daemon received it, in nanoseconds since the Unix epoch.
    pub ts: i64,
    /// What the client sent.
    pub entry: Entry,
    /// The sender's process id, from the socket.
    pub pid: Option<i64>,
    /// The sender's user id, from the socket.
    pub uid: Option<i64>,
    /// The sender's group id, from the socket.
    pub gid: Option<i64>,
    /// The producer id the client gave, if any.
    pub producer_id: Option<u64>,
    /// The entry's number within its producer.
    pub producer_number: Option<u64>,
    /// Its chain hash.
    pub hash: [u8; 32],
}

/// Asks for one trace: its summary and a page of its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceQuery {
    /// The trace.
    pub trace_id: String,
    /// Only entries after this `seq`: the cursor.
    pub after_seq: Option<u64>,
    /// Most entries in the answer, at most `MAX_PAGE`; the daemon may send fewer to keep a
    /// frame small, and then sets `next_after`.
    pub limit: u32,
}

/// One trace, summed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// The trace id.
    pub trace_id: String,
    /// Its entries.
    pub entries: u64,
    /// Its first and last `seq`.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// The earliest date of its entries (`client_ts` if given, else `ts`), in nanoseconds
    /// since the Unix epoch.
    pub first_ts: i64,
    /// The latest date of its entries.
    pub last_ts: i64,
    /// The components that took part, sorted.
    pub components: Vec<String>,
    /// Input tokens, summed.
    pub tokens_in: u64,
    /// Output tokens, summed.
    pub tokens_out: u64,
    /// Money, summed, in micro-USD, over the priced entries.
    pub micro_usd: u64,
    /// Entries with tokens and no price: their money is not in `micro_usd`.
    pub unpriced: u64,
}

/// Answers `TraceQuery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReport {
    /// The whole trace summed up; `None` if no entry has this trace id.
    pub summary: Option<TraceSummary>,
    /// A page of its entries, in `seq` order.
    pub entries: Vec<StoredEntry>,
    /// Set when more entries follow: pass it as `after_seq`.
    pub next_after: Option<u64>,
}

/// Asks for traces, the most recently active first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracesQuery {
    /// Only traces with an entry dated at or after this time.
    pub since: Option<i64>,
    /// Only traces with an entry dated before this time.
    pub until: Option<i64>,
    /// Only traces in which this component took part.
    pub component: Option<String>,
    /// Only traces whose last entry is below this `seq`: the cursor.
    pub before_seq: Option<u64>,
    /// Most traces in the answer, at most `MAX_PAGE`.
    pub limit: u32,
}

/// Answers `TracesQuery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracesPage {
    /// The traces, the most recently active first.
    pub traces: Vec<TraceSummary>,
    /// Set when more traces may follow: pass it as `before_seq`.
    pub next_before: Option<u64>,
}

/// What a cost report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBy {
    /// The entry's component.
    Component,
    /// The model of the cost; entries without one form their own group.
    Model,
    /// The entry's event.
    Event,
    /// The entry's trace; entries without one form their own group.
    Trace,
    /// The UTC day the entry is dated, `YYYY-MM-DD`; rows come in time order.
    Day,
    /// The UTC hour the entry is dated, `YYYY-MM-DDTHH:00Z`; rows come in time order.
    Hour,
}

impl GroupBy {
    /// Every grouping, in the order a list of them is shown.
    pub const ALL: [GroupBy; 6] = [
        GroupBy::Component,
        GroupBy::Model,
        GroupBy::Event,
        GroupBy::Trace,
        GroupBy::Day,
        GroupBy::Hour,
    ];

    /// The grouping's name, as a command line or a URL writes it: `component`, `model`,
    /// `event`, `trace`, `day`, `hour`.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Component => "component",
            GroupBy::Model => "model",
            GroupBy::Event => "event",
            GroupBy::Trace => "trace",
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    /// The grouping [`GroupBy::name`] names.
    fn from_str(text: &str) -> Result<GroupBy, String> {
        GroupBy::ALL
            .into_iter()
            .find(|by| by.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = GroupBy::ALL.iter().map(|by| by.name()).collect();
                format!(
                    "{text:?} is not a grouping; use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Asks what was spent, per group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostQuery {
    /// The grouping.
    pub by: GroupBy,
    /// Only entries dated at or after this time.
    pub since: Option<i64>,
    /// Only entries dated before this time.
    pub until: Option<i64>,
    /// Only entries of this component.
    pub component: Option<String>,
    /// Only entries of this event.
    pub event: Option<String>,
    /// Only entries of this model.
    pub model: Option<String>,
    /// Groups to skip, in the report's order: the cursor.
    pub offset: u64,
    /// Most groups in the answer, at most `MAX_PAGE`.
    pub limit: u32,
}

/// One group of a cost report, or the total.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CostRow {
    /// The group's value; `None` for the total, and for entries without a model or trace.
    pub key: Option<String>,
    /// Entries in the group.
    pub entries: u64,
    /// Input tokens, summed.
    pub tokens_in: u64,
    /// Output tokens, summed.
    pub tokens_out: u64,
    /// Input tokens read from a prompt cache, summed.
    pub cache_read_tokens: u64,
    /// Input tokens written to a prompt cache, summed.
    pub cache_write_tokens: u64,
    /// Output tokens spent reasoning, summed.
    pub reasoning_tokens: u64,
    /// Money, summed exactly, in micro-USD, over the priced entries.
    pub micro_usd: u64,
    /// Entries with tokens and no price: their money is not in `micro_usd`, which is
    /// therefore a floor while this is above zero.
    pub unpriced: u64,
}

/// Answers `CostQuery`: groups by money spent, most first (then by key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostReport {
    /// The grouping asked for.
    pub by: GroupBy,
    /// A page of groups.
    pub rows: Vec<CostRow>,
    /// All the groups, not only this page.
    pub groups: u64,
    /// The sum over every matching entry.
    pub total: CostRow,
}

/// Asks which price the daemon would give a call of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceQuery {
    /// The model's name, as an entry would carry it.
    pub model: String,
    /// The provider, when known (OpenTelemetry's `gen_ai.provider.name`).
    pub provider: Option<String>,
    /// The call's date, in nanoseconds since the Unix epoch; now when not given.
    pub at: Option<i64>,
}

/// Answers `PriceQuery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceAnswer {
    /// The name of the table in force (`priced_by`'s first part).
    pub table: String,
    /// The price that applies; `None` when the model has none: its calls are unpriced.
    pub quote: Option<PriceQuote>,
}

/// A price that applies to a model's calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceQuote {
    /// What entries priced by it record.
    pub priced_by: String,
    /// The table it is from.
    pub table: String,
    /// The provider's id in the table (empty for a configured price without one).
    pub provider: String,
    /// The model's id in the table.
    pub model: String,
    /// The date (`YYYY-MM-DD`) or times of day (`HH:MM-HH:MM`) it holds from, when the model
    /// has several prices.
    pub since: Option<String>,
    /// Its rates.
    pub rates: Vec<PriceRate>,
}

/// One rate of a price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceRate {
    /// `input`, `output`, `cache_read`, `cache_write`, `cache_write_5m`, `cache_write_1h` or
    /// `reasoning`.
    pub kind: String,
    /// USD per million tokens.
    pub usd_per_mtok: f64,
    /// `(start, usd_per_mtok)`: past `start` input tokens in the call, every token of this
    /// kind costs the tier's rate.
    pub tiers: Vec<(u64, f64)>,
}
