//! Size limits every daemon enforces and every client should respect.
//!
//! They live here, beside the types they bound, so that a client can check an entry before
//! sending it and get the same answer the daemon would give.

use crate::{Cost, Entry};

/// Largest frame body, in bytes (4 MiB). A daemon may be configured lower, never higher:
/// the decoder refuses any claimed length above it before allocating.
pub const MAX_FRAME_LEN: u32 = 4 << 20;
/// Most entries in one `Append`.
pub const MAX_ENTRIES_PER_APPEND: usize = 10_000;
/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 256;
/// Longest component name, in bytes.
pub const MAX_COMPONENT_LEN: usize = 256;
/// Longest trace id, in bytes.
pub const MAX_TRACE_ID_LEN: usize = 128;
/// Longest model name, in bytes.
pub const MAX_MODEL_LEN: usize = 128;
/// Longest `priced_by` (a price table's name, a provider and a model id), in bytes.
pub const MAX_PRICED_BY_LEN: usize = 256;
/// Longest JSON payload, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 64 << 10;
/// Longest `imported` object, in bytes.
pub const MAX_IMPORTED_LEN: usize = 4 << 10;
/// Largest integer a count, an amount of money or an id may hold: SQLite stores signed 64-bit
/// integers, and every stored integer must survive the round trip unchanged.
pub const MAX_INTEGER: u64 = i64::MAX as u64;

/// Why an entry breaks a limit. The daemon sends the `Display` text back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// A text field is empty where a value is required.
    #[error("{field} must not be empty")]
    Empty {
        /// The field's name.
        field: &'static str,
    },
    /// A text field is longer than its limit.
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An integer does not fit in SQLite's signed 64-bit integer.
    #[error("{field} is {value}; the largest value stored is {max}", max = MAX_INTEGER)]
    TooLarge {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: u64,
    },
    /// A time before 1970-01-01T00:00:00Z: reads and cost reports date entries from the
    /// epoch on, so such an entry would be stored and then missing from them.
    #[error(
        "{field} is {value} ns, before 1970-01-01T00:00:00Z; witness dates entries from the epoch on"
    )]
    BeforeEpoch {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: i64,
    },
    /// A text field holds a NUL character, which many SQLite tools truncate at.
    #[error("{field} contains a NUL character")]
    Nul {
        /// The field's name.
        field: &'static str,
    },
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if value.as_bytes().contains(&0) {
        return Err(LimitError::Nul { field });
    }
    Ok(())
}

fn check_required(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.is_empty() {
        return Err(LimitError::Empty { field });
    }
    check_text(field, value, max)
}

fn check_integer(field: &'static str, value: u64) -> Result<(), LimitError> {
    if value > MAX_INTEGER {
        return Err(LimitError::TooLarge { field, value });
    }
    Ok(())
}

impl Entry {
    /// Checks every field against its limit. It does not parse the payload: whether it is
    /// valid JSON is the daemon's judgement.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        check_required("event", &self.event, MAX_EVENT_LEN)?;
        check_required("component", &self.component, MAX_COMPONENT_LEN)?;
        if let Some(trace_id) = &self.trace_id {
            check_required("trace_id", trace_id, MAX_TRACE_ID_LEN)?;
        }
        if self.payload.len() > MAX_PAYLOAD_LEN {
            return Err(LimitError::TooLong {
                field: "payload",
                len: self.payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        if let Some(imported) = &self.imported
            && imported.len() > MAX_IMPORTED_LEN
        {
            return Err(LimitError::TooLong {
                field: "imported",
                len: imported.len(),
                max: MAX_IMPORTED_LEN,
            });
        }
        if let Some(cost) = &self.cost {
            cost.check_limits()?;
        }
        if let Some(value) = self.client_ts.filter(|&ts| ts < 0) {
            return Err(LimitError::BeforeEpoch {
                field: "client_ts",
                value,
            });
        }
        Ok(())
    }
}

impl Cost {
    /// Checks every field of the cost against its limit.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        check_integer("tokens_in", self.tokens_in)?;
        check_integer("tokens_out", self.tokens_out)?;
        for (field, value) in [
            ("cost_micro_usd", self.micro_usd),
            ("cache_read_tokens", self.cache_read_tokens),
            ("cache_write_tokens", self.cache_write_tokens),
            ("cache_write_1h_tokens", self.cache_write_1h_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
        ] {
            if let Some(value) = value {
                check_integer(field, value)?;
            }
        }
        if let Some(model) = &self.model {
            check_required("model", model, MAX_MODEL_LEN)?;
        }
        if let Some(priced_by) = &self.priced_by {
            check_required("priced_by", priced_by, MAX_PRICED_BY_LEN)?;
        }
        Ok(())
    }
}
