//! `witness ping` and `witness log`: the daemon's answer, and one entry recorded.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;
use witness_client::{Client, Cost, Entry};

use crate::args::LogArgs;
use crate::output::{self, Usage, print_json};

/// Checks that the daemon answers, and how fast.
pub fn ping(client: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let elapsed = client.ping()?;
    let server = client.server().server.clone();
    if json {
        print_json(&json!({"server": server, "round_trip_us": elapsed.as_micros() as u64}))?;
    } else {
        writeln!(
            output::stdout(),
            "{server} answered in {} µs",
            elapsed.as_micros()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Records one entry and prints its receipt once it is durable.
pub fn log(client: &mut Client, entry: Entry, json: bool) -> anyhow::Result<ExitCode> {
    let receipt = client.log(entry)?;
    if json {
        print_json(&json!({"seq": receipt.seq, "hash": hex::encode(receipt.hash)}))?;
    } else {
        let hash = hex::encode(receipt.hash);
        writeln!(output::stdout(), "seq {}  hash {hash}", receipt.seq)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The entry `witness log` was given; what is wrong with it is a usage error (exit 2).
pub fn entry_from(log: LogArgs) -> anyhow::Result<Entry> {
    let mut entry = Entry::new(log.event, log.component);
    entry.trace_id = log.trace;
    if let Some(payload) = log.payload {
        let value: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|error| Usage(format!("--payload is not valid JSON: {error}")))?;
        entry.payload = value.to_string();
    }
    let costed = log.tokens_in.is_some()
        || log.tokens_out.is_some()
        || log.cost_usd.is_some()
        || log.model.is_some()
        || log.cache_read_tokens.is_some()
        || log.cache_write_tokens.is_some()
        || log.reasoning_tokens.is_some();
    if costed {
        entry.cost = Some(Cost {
            tokens_in: log.tokens_in.unwrap_or(0),
            tokens_out: log.tokens_out.unwrap_or(0),
            cache_read_tokens: log.cache_read_tokens,
            cache_write_tokens: log.cache_write_tokens,
            cache_write_1h_tokens: log.cache_write_1h_tokens,
            reasoning_tokens: log.reasoning_tokens,
            micro_usd: log.cost_usd,
            model: log.model,
            priced_by: None,
        });
    }
    entry
        .check_limits()
        .map_err(|error| Usage(error.to_string()))?;
    Ok(entry)
}
