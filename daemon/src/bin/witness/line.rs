//! The export line read back: `export` (and `tail --json`, `trace --json`, the archives' and
//! the fleet's exports, and the dashboard's API) write an entry as one JSON object with every
//! stored field, in the library's `ExportLine`; `import` reads such a line, or the shorter one
//! a client writes by hand, back into an entry.

use serde::Deserialize;
use serde_json::value::RawValue;
use witness_client::{Cost, Entry};

use crate::money::round_usd;

pub use witness_daemon::read::ExportLine;

/// One line of an import file: what a client sends, and what an export adds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    event: String,
    component: String,
    #[serde(default)]
    trace_id: Option<String>,
    /// Kept as written, so that an export imports back to the same payload text.
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    cost: Option<LineCost>,
    /// Integer nanoseconds since 1970, or an RFC 3339 string.
    #[serde(default)]
    client_ts: Option<serde_json::Value>,
    /// An export of a copy: the first original's fields, kept as they are.
    #[serde(default)]
    imported: Option<Box<RawValue>>,
    /// Derived from `client_ts` or `ts` by `export`, for people.
    #[serde(default, rename = "time")]
    _time: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    seq: Option<serde_json::Value>,
    #[serde(default)]
    ts: Option<serde_json::Value>,
    #[serde(default)]
    hash: Option<serde_json::Value>,
    #[serde(default)]
    pid: Option<serde_json::Value>,
    #[serde(default)]
    uid: Option<serde_json::Value>,
    #[serde(default)]
    gid: Option<serde_json::Value>,
    #[serde(default)]
    producer_id: Option<serde_json::Value>,
    #[serde(default)]
    producer_number: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineCost {
    #[serde(default)]
    tokens_in: u64,
    #[serde(default)]
    tokens_out: u64,
    #[serde(default)]
    cache_read_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    #[serde(default)]
    cache_write_1h_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    /// Which price the original's daemon used, kept with the money it gave.
    #[serde(default)]
    priced_by: Option<String>,
    /// Dollars as a JSON number or string, rounded to the micro-dollar.
    #[serde(default)]
    cost_usd: Option<serde_json::Value>,
    /// Or the integer the database stores.
    #[serde(default)]
    cost_micro_usd: Option<u64>,
    #[serde(default)]
    model: Option<String>,
}

/// The earliest `client_ts` taken as an integer: 1973-03-03 in nanoseconds. Below it, the
/// number is almost surely seconds, milliseconds or microseconds, which would date the
/// entry in the first days of 1970 without a word.
const EARLIEST_INTEGER_TS: i64 = 100_000_000_000_000_000;

/// `client_ts` as nanoseconds: an integer of them, or an RFC 3339 string.
fn client_ts(value: &serde_json::Value) -> Result<i64, String> {
    match value {
        serde_json::Value::Number(number) => {
            let ns = number.as_i64().ok_or_else(|| {
                format!("client_ts {number} is not a whole number of nanoseconds")
            })?;
            if ns < EARLIEST_INTEGER_TS {
                return Err(format!(
                    "client_ts {ns} as nanoseconds is {}, which looks like seconds, \
                     milliseconds or microseconds: give nanoseconds since 1970 or an RFC 3339 \
                     time such as \"2026-11-22T10:00:00Z\"",
                    crate::when::rfc3339(ns)
                ));
            }
            Ok(ns)
        }
        serde_json::Value::String(text) => {
            let time: jiff::Timestamp = text.parse().map_err(|_| {
                format!(
                    "client_ts {text:?} is not an RFC 3339 time such as \
                     \"2026-11-22T10:00:00Z\" (with a zone or offset)"
                )
            })?;
            i64::try_from(time.as_nanosecond())
                .map_err(|_| format!("client_ts {text:?} is out of range"))
        }
        other => Err(format!(
            "client_ts must be nanoseconds since 1970 or an RFC 3339 string, not {other}"
        )),
    }
}

/// The `imported` object of a line: the one it carries, or one made of the original's fields
/// it gives.
fn imported(line: &Line) -> Result<String, String> {
    if let Some(raw) = &line.imported {
        let value: serde_json::Value =
            serde_json::from_str(raw.get()).map_err(|error| error.to_string())?;
        if !value.is_object() {
            return Err(format!("imported must be a JSON object, not {value}"));
        }
        return Ok(raw.get().to_owned());
    }
    let mut original = serde_json::Map::new();
    for (name, value) in [
        ("seq", &line.seq),
        ("ts", &line.ts),
        ("pid", &line.pid),
        ("uid", &line.uid),
        ("gid", &line.gid),
        ("producer_id", &line.producer_id),
        ("producer_number", &line.producer_number),
    ] {
        match value {
            None | Some(serde_json::Value::Null) => {}
            Some(value) if value.is_i64() || value.is_u64() => {
                original.insert(name.to_owned(), value.clone());
            }
            Some(other) => return Err(format!("{name} must be an integer, not {other}")),
        }
    }
    match &line.hash {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(hash))
            if hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()) =>
        {
            original.insert("hash".to_owned(), hash.to_ascii_lowercase().into());
        }
        Some(other) => return Err(format!("hash must be 64 hex digits, not {other}")),
    }
    Ok(serde_json::Value::Object(original).to_string())
}

/// Parses one line into an entry.
/// serde_json's error as a person reads it of one line of a file: the field it concerns
/// (`cost.tokens_in`) and the column, without serde's "at line 1" (the file's line is said
/// by the caller) or its name for the end of input.
fn explain(error: &serde_json::Error, field: Option<String>) -> String {
    let said = error.to_string();
    let place = format!(" at line {} column {}", error.line(), error.column());
    let what = said.strip_suffix(&place).unwrap_or(&said);
    let what = if error.is_eof() {
        "the line ends before its JSON does (cut short, or an object spread over lines?)".to_owned()
    } else {
        what.replace("invalid type: ", "")
            .replace("expected u64", "expected a whole number, 0 or more")
            .replace("expected i64", "expected a whole number")
    };
    match field {
        Some(field) => format!("`{field}`: {what}, at column {}", error.column()),
        None => format!("{what}, at column {}", error.column()),
    }
}

pub fn parse_line(text: &str) -> Result<Entry, String> {
    let mut reader = serde_json::Deserializer::from_str(text);
    let line: Line = serde_path_to_error::deserialize(&mut reader).map_err(|error| {
        let path = error.path().to_string();
        explain(error.inner(), (path != ".").then_some(path))
    })?;
    reader.end().map_err(|error| explain(&error, None))?;
    let imported = imported(&line)?;
    let date = match (&line.client_ts, &line.ts) {
        (Some(value), _) if !value.is_null() => Some(client_ts(value)?),
        (_, Some(ts)) if !ts.is_null() => ts.as_i64(),
        _ => None,
    };
    let mut entry = Entry::new(line.event, line.component);
    entry.trace_id = line.trace_id;
    entry.client_ts = date;
    entry.imported = Some(imported);
    if let Some(payload) = line.payload {
        entry.payload = payload.get().to_owned();
    }
    if let Some(cost) = line.cost {
        let micro_usd = match (cost.cost_usd, cost.cost_micro_usd) {
            (Some(_), Some(_)) => return Err("cost has both cost_usd and cost_micro_usd".into()),
            (Some(serde_json::Value::Number(number)), None) => {
                Some(round_usd(&number.to_string())?)
            }
            (Some(serde_json::Value::String(text)), None) => Some(round_usd(&text)?),
            (Some(other), None) => return Err(format!("cost_usd must be a number, not {other}")),
            // No money: the daemon prices the copy from its table, or leaves it unpriced.
            (None, micro) => micro,
        };
        if cost.priced_by.is_some() && micro_usd.is_none() {
            return Err("cost has priced_by but no money".into());
        }
        entry.cost = Some(Cost {
            tokens_in: cost.tokens_in,
            tokens_out: cost.tokens_out,
            cache_read_tokens: cost.cache_read_tokens,
            cache_write_tokens: cost.cache_write_tokens,
            cache_write_1h_tokens: cost.cache_write_1h_tokens,
            reasoning_tokens: cost.reasoning_tokens,
            micro_usd,
            model: cost.model,
            priced_by: cost.priced_by,
        });
    }
    entry.check_limits().map_err(|error| error.to_string())?;
    Ok(entry)
}
