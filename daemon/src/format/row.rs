//! The row of `entries`: its columns in their one order, how an entry and its origin become a
//! row, how a row is inserted, and how a stored row is read back.
//!
//! This file alone knows where each column sits. The writer, the read side, verification and
//! the benchmarks all build, insert and read rows through it, so that the row cannot mean one
//! thing to the writer and another to the verifier.

use std::sync::LazyLock;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Row, Statement};
use witness_protocol::query::StoredEntry;
use witness_protocol::{Cost, Entry, ProducerRef};

/// Every column of `entries`, in the order of the table and of every row this module reads or
/// writes: the hashed columns of the first format, then `hash`, then `imported`, which
/// version 5 added at the end of the table (where `ALTER TABLE` puts it), then the cache
/// writes and the price, which version 8 added. The hash encoding takes the hashed columns
/// in this order, `hash` left out.
pub const COLUMNS: [&str; 23] = [
    "seq",
    "ts",
    "client_ts",
    "event",
    "component",
    "trace_id",
    "payload",
    "tokens_in",
    "tokens_out",
    "cache_read_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
    "model",
    "pid",
    "uid",
    "gid",
    "producer_id",
    "producer_number",
    "hash",
    "imported",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "priced_by",
];

/// How many columns the hash covers: all but `hash` itself.
pub const HASHED: usize = 22;

/// Where the hashed value at `position` (of [`Values`]) sits among [`COLUMNS`]: the same
/// place, but for `imported`, which comes after `hash`.
pub const fn column_of(position: usize) -> usize {
    if position < column::HASH {
        position
    } else {
        position + 1
    }
}

/// The position of each column in [`COLUMNS`] and in a row read with [`select_columns`]; up
/// to `PRODUCER_NUMBER`, also its position in the hashed values, where the columns after
/// `hash` come one place earlier ([`IMPORTED_VALUE`] and after).
#[allow(missing_docs)]
pub mod column {
    pub const SEQ: usize = 0;
    pub const TS: usize = 1;
    pub const CLIENT_TS: usize = 2;
    pub const EVENT: usize = 3;
    pub const COMPONENT: usize = 4;
    pub const TRACE_ID: usize = 5;
    pub const PAYLOAD: usize = 6;
    pub const TOKENS_IN: usize = 7;
    pub const TOKENS_OUT: usize = 8;
    pub const CACHE_READ_TOKENS: usize = 9;
    pub const REASONING_TOKENS: usize = 10;
    pub const COST_MICRO_USD: usize = 11;
    pub const MODEL: usize = 12;
    pub const PID: usize = 13;
    pub const UID: usize = 14;
    pub const GID: usize = 15;
    pub const PRODUCER_ID: usize = 16;
    pub const PRODUCER_NUMBER: usize = 17;
    pub const HASH: usize = 18;
    pub const IMPORTED: usize = 19;
    pub const CACHE_WRITE_TOKENS: usize = 20;
    pub const CACHE_WRITE_1H_TOKENS: usize = 21;
    pub const PRICED_BY: usize = 22;
}

/// The position of `imported` in the hashed values: the first of the columns added after the
/// first format, which the hash encoding leaves out when they and all after them are NULL.
pub const IMPORTED_VALUE: usize = 18;
/// The position of `cache_write_tokens` in the hashed values.
pub const CACHE_WRITE_VALUE: usize = 19;
/// The position of `cache_write_1h_tokens` in the hashed values.
pub const CACHE_WRITE_1H_VALUE: usize = 20;
/// The position of `priced_by` in the hashed values.
pub const PRICED_BY_VALUE: usize = 21;

/// What a column holds, as other stores (the fleet's PostgreSQL) declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit signed integer.
    Integer,
    /// UTF-8 text.
    Text,
    /// Bytes (only `hash`).
    Blob,
}

/// Each column of [`COLUMNS`]: what it holds, and whether it may be NULL, as the schema
/// declares it.
pub const KINDS: [(Kind, bool); 23] = {
    use Kind::*;
    [
        (Integer, false),
        (Integer, false),
        (Integer, true),
        (Text, false),
        (Text, false),
        (Text, true),
        (Text, false),
        (Integer, true),
        (Integer, true),
        (Integer, true),
        (Integer, true),
        (Integer, true),
        (Text, true),
        (Integer, true),
        (Integer, true),
        (Integer, true),
        (Integer, true),
        (Integer, true),
        (Blob, false),
        (Text, true),
        (Integer, true),
        (Integer, true),
        (Text, true),
    ]
};

/// One column value as the format sees it: SQLite's NULL, INTEGER or TEXT. The hash encoding
/// (`chain`) and the insert statement both take rows of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Encoded as the byte `0x00`.
    Null,
    /// Encoded as `0x01` then the eight bytes of the big-endian two's complement.
    Integer(i64),
    /// Encoded as `0x02`, the byte length as a big-endian `u32`, then the UTF-8 bytes.
    Text(&'a str),
}

impl<'a> Value<'a> {
    /// The integer, if this is one.
    pub fn integer(self) -> Option<i64> {
        match self {
            Value::Integer(value) => Some(value),
            _ => None,
        }
    }

    /// The text, or `""` if this is not text.
    pub fn text(self) -> &'a str {
        match self {
            Value::Text(text) => text,
            _ => "",
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Value::Null, Value::Integer)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Value::Null, Value::Text)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Integer(integer) => ValueRef::Integer(integer),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
        }))
    }
}

/// The hashed columns of one row, in [`COLUMNS`] order.
pub type Values<'a> = [Value<'a>; HASHED];

/// The time an entry is dated by in every read: the client's own `client_ts` where it gave
/// one, else the receive time `ts`. `entries_by_time` indexes exactly this expression, which
/// SQLite uses only when a query spells it the same way.
pub const EVENT_TIME: &str = "coalesce(client_ts, ts)";

/// What the daemon knows of the sender, from the socket, not from the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// Receive time, nanoseconds since the Unix epoch.
    pub ts: i64,
    /// Peer process id, when the kernel reports it.
    pub pid: Option<i64>,
    /// Peer user id.
    pub uid: Option<i64>,
    /// Peer group id.
    pub gid: Option<i64>,
}

impl Origin {
    /// The daemon itself, now: for the entries it writes of its own (a prune, a loss).
    pub fn daemon() -> Origin {
        Origin {
            ts: now_ns(),
            pid: Some(i64::from(std::process::id())),
            uid: Some(i64::from(own_uid())),
            // SAFETY: getegid has no preconditions and cannot fail.
            gid: Some(i64::from(unsafe { libc::getegid() })),
        }
    }
}

/// Now, in nanoseconds since the epoch: the daemon's one clock for receive times.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i64)
}

/// The daemon's effective uid: with root, the operators' uid.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The hashed columns of an entry received from `origin`, stored at `seq`: `producer` and
/// `number` say which producer sent it under which number, if it was numbered.
pub fn values<'a>(
    seq: i64,
    entry: &'a Entry,
    origin: &Origin,
    producer: Option<ProducerRef>,
    number: Option<i64>,
) -> Values<'a> {
    let cost = entry.cost.as_ref();
    let integer = |value: Option<u64>| Value::from(value.map(|value| value as i64));
    [
        Value::Integer(seq),
        Value::Integer(origin.ts),
        Value::from(entry.client_ts),
        Value::Text(&entry.event),
        Value::Text(&entry.component),
        Value::from(entry.trace_id.as_deref()),
        Value::Text(&entry.payload),
        integer(cost.map(|cost| cost.tokens_in)),
        integer(cost.map(|cost| cost.tokens_out)),
        integer(cost.and_then(|cost| cost.cache_read_tokens)),
        integer(cost.and_then(|cost| cost.reasoning_tokens)),
        integer(cost.and_then(|cost| cost.micro_usd)),
        Value::from(cost.and_then(|cost| cost.model.as_deref())),
        Value::from(origin.pid),
        Value::from(origin.uid),
        Value::from(origin.gid),
        Value::from(producer.map(|producer| producer.producer_id as i64)),
        Value::from(number),
        Value::from(entry.imported.as_deref()),
        integer(cost.and_then(|cost| cost.cache_write_tokens)),
        integer(cost.and_then(|cost| cost.cache_write_1h_tokens)),
        Value::from(cost.and_then(|cost| cost.priced_by.as_deref())),
    ]
}

/// Every column, comma-separated in [`COLUMNS`] order: the select list of a query whose rows
/// [`stored_entry`] or [`read_values`] read.
pub fn select_columns() -> &'static str {
    static LIST: LazyLock<String> = LazyLock::new(|| COLUMNS.join(", "));
    &LIST
}

/// The statement that inserts one row: [`insert`] binds it.
pub fn insert_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let parameters: Vec<String> = (1..=COLUMNS.len()).map(|n| format!("?{n}")).collect();
        format!(
            "INSERT INTO entries ({}) VALUES ({})",
            select_columns(),
            parameters.join(", ")
        )
    });
    &SQL
}

/// Inserts one row with `statement`, prepared from [`insert_sql`]: its hashed values and the
/// hash that chains it. Binding by position, without a parameter list, keeps this at the cost
/// of the insert itself on the writer's hot path.
pub fn insert(
    statement: &mut Statement<'_>,
    values: &Values<'_>,
    hash: &[u8; 32],
) -> rusqlite::Result<()> {
    for (position, value) in values.iter().enumerate() {
        statement.raw_bind_parameter(column_of(position) + 1, value)?;
    }
    statement.raw_bind_parameter(column::HASH + 1, &hash[..])?;
    statement.raw_execute()?;
    Ok(())
}

/// A row read with [`select_columns`], as the protocol shows a stored entry.
pub fn stored_entry(row: &Row<'_>) -> rusqlite::Result<StoredEntry> {
    let values = read_values(row).map_err(|message| {
        rusqlite::Error::FromSqlConversionFailure(
            column::SEQ,
            rusqlite::types::Type::Null,
            Box::new(message),
        )
    })?;
    Ok(entry_of(&values, stored_hash(row)?))
}

/// The hashed values of a row and its stored hash, as the protocol shows a stored entry:
/// what a host's `entries` and the fleet's `events` both read into.
pub fn entry_of(values: &Values<'_>, hash: &[u8]) -> StoredEntry {
    use column::*;
    let unsigned = |index: usize| values[index].integer().map(|value| value as u64);
    let text = |index: usize| match values[index] {
        Value::Text(text) => Some(text.to_owned()),
        _ => None,
    };
    let cost = unsigned(TOKENS_IN).map(|tokens_in| Cost {
        tokens_in,
        tokens_out: unsigned(TOKENS_OUT).unwrap_or(0),
        cache_read_tokens: unsigned(CACHE_READ_TOKENS),
        cache_write_tokens: unsigned(CACHE_WRITE_VALUE),
        cache_write_1h_tokens: unsigned(CACHE_WRITE_1H_VALUE),
        reasoning_tokens: unsigned(REASONING_TOKENS),
        micro_usd: unsigned(COST_MICRO_USD),
        model: text(MODEL),
        priced_by: text(PRICED_BY_VALUE),
    });
    StoredEntry {
        seq: unsigned(SEQ).unwrap_or(0),
        ts: values[TS].integer().unwrap_or(0),
        entry: Entry {
            event: values[EVENT].text().to_owned(),
            component: values[COMPONENT].text().to_owned(),
            trace_id: text(TRACE_ID),
            payload: values[PAYLOAD].text().to_owned(),
            cost,
            client_ts: values[CLIENT_TS].integer(),
            imported: text(IMPORTED_VALUE),
        },
        pid: values[PID].integer(),
        uid: values[UID].integer(),
        gid: values[GID].integer(),
        producer_id: unsigned(PRODUCER_ID),
        producer_number: unsigned(PRODUCER_NUMBER),
        hash: <[u8; 32]>::try_from(hash).unwrap_or([0; 32]),
    }
}

/// Why a stored row cannot be read as the format's values.
#[derive(Debug, thiserror::Error)]
pub enum BadRow {
    /// SQLite could not give a column.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A text column holds bytes that are not UTF-8.
    #[error("column {0} is not valid UTF-8")]
    Utf8(&'static str),
    /// A column holds a storage class the format has no place for.
    #[error("column {column} holds a {class:?} value, which the format does not allow")]
    Class {
        /// The column.
        column: &'static str,
        /// The storage class it holds.
        class: rusqlite::types::Type,
    },
}

/// The hashed values of a row read with [`select_columns`], refusing a value of a storage
/// class the column cannot hold (which `STRICT` prevents, but a hand-edited file may still
/// contain).
pub fn read_values<'row>(row: &'row Row<'_>) -> Result<Values<'row>, BadRow> {
    let mut values = [Value::Null; HASHED];
    for (position, value) in values.iter_mut().enumerate() {
        let index = column_of(position);
        let raw = row.get_ref(index)?;
        *value = match raw {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(integer) => Value::Integer(integer),
            ValueRef::Text(bytes) => {
                Value::Text(std::str::from_utf8(bytes).map_err(|_| BadRow::Utf8(COLUMNS[index]))?)
            }
            ValueRef::Real(_) | ValueRef::Blob(_) => {
                return Err(BadRow::Class {
                    column: COLUMNS[index],
                    class: raw.data_type(),
                });
            }
        };
    }
    Ok(values)
}

/// The stored hash of a row read with [`select_columns`]: empty when it is not a blob.
pub fn stored_hash<'row>(row: &'row Row<'_>) -> rusqlite::Result<&'row [u8]> {
    Ok(row
        .get_ref(column::HASH)?
        .as_blob_or_null()
        .ok()
        .flatten()
        .unwrap_or_default())
}
