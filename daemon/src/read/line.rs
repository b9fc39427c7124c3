//! The export line, written in one place: `witness export` (and `tail --json`, `trace
//! --json`, the archives' and the fleet's exports) and the dashboard's API write an entry as
//! one JSON object with every stored field, which `witness import` reads back
//! (`docs/PROTOCOL.md`, "The export line").

use witness_protocol::query::StoredEntry;

/// RFC 3339 in UTC with all the digits stored, for JSON; the number itself should it be out
/// of the calendar's range.
pub fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map_or_else(|_| ns.to_string(), |t| t.to_string())
}

/// An entry as one JSON object with every stored field: the line format of `export`, which
/// `import` reads back. The payload is written as stored, byte for byte.
#[derive(serde::Serialize)]
pub struct ExportLine<'a> {
    seq: u64,
    /// The entry's date (`client_ts`, else `ts`) in RFC 3339: for people; `import` ignores it.
    time: String,
    ts: i64,
    event: &'a str,
    component: &'a str,
    trace_id: Option<&'a str>,
    payload: &'a serde_json::value::RawValue,
    cost: Option<ExportCost<'a>>,
    client_ts: Option<i64>,
    pid: Option<i64>,
    uid: Option<i64>,
    gid: Option<i64>,
    producer_id: Option<u64>,
    producer_number: Option<u64>,
    hash: String,
    /// Set when the entry is itself a copy: the original's fields, as stored.
    imported: Option<&'a serde_json::value::RawValue>,
}

/// The cost of an `ExportLine`, in the fields `import` reads.
#[derive(serde::Serialize)]
struct ExportCost<'a> {
    tokens_in: u64,
    tokens_out: u64,
    cache_read_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    cache_write_1h_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    /// `null` when unpriced.
    cost_micro_usd: Option<u64>,
    model: Option<&'a str>,
    priced_by: Option<&'a str>,
}

/// The stored payload, which the daemon checked as JSON; `null` should a file hold anything
/// else.
fn raw_payload(payload: &str) -> &serde_json::value::RawValue {
    serde_json::from_str(payload)
        .unwrap_or_else(|_| serde_json::from_str("null").expect("null is JSON"))
}

impl<'a> ExportLine<'a> {
    /// The line for one stored entry.
    pub fn new(stored: &'a StoredEntry) -> Self {
        let entry = &stored.entry;
        ExportLine {
            seq: stored.seq,
            time: rfc3339(entry.client_ts.unwrap_or(stored.ts)),
            ts: stored.ts,
            event: &entry.event,
            component: &entry.component,
            trace_id: entry.trace_id.as_deref(),
            payload: raw_payload(&entry.payload),
            cost: entry.cost.as_ref().map(|cost| ExportCost {
                tokens_in: cost.tokens_in,
                tokens_out: cost.tokens_out,
                cache_read_tokens: cost.cache_read_tokens,
                cache_write_tokens: cost.cache_write_tokens,
                cache_write_1h_tokens: cost.cache_write_1h_tokens,
                reasoning_tokens: cost.reasoning_tokens,
                cost_micro_usd: cost.micro_usd,
                model: cost.model.as_deref(),
                priced_by: cost.priced_by.as_deref(),
            }),
            client_ts: entry.client_ts,
            pid: stored.pid,
            uid: stored.uid,
            gid: stored.gid,
            producer_id: stored.producer_id,
            producer_number: stored.producer_number,
            hash: hex::encode(stored.hash),
            imported: entry.imported.as_deref().map(raw_payload),
        }
    }
}
