//! `witness import`: JSON lines into the log, all or nothing by default.
//!
//! The whole input is checked before a single entry is sent, so a bad line leaves the log
//! untouched; `--skip-invalid` sends the good lines and lists the bad ones.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use witness_client::{Client, Cost, Entry, Error};

use crate::money::parse_usd;
use crate::output::{self, print_json};

/// One line of an import file. Fields an export adds (`seq`, `ts`, `hash`, credentials) are
/// accepted and ignored: the daemon assigns its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    event: String,
    component: String,
    #[serde(default)]
    trace_id: Option<String>,
    /// Kept as written, so that an export imports back to the same payload text.
    #[serde(default)]
    payload: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    cost: Option<LineCost>,
    #[serde(default)]
    client_ts: Option<i64>,
    #[serde(default, rename = "seq")]
    _seq: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "ts")]
    _ts: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "time")]
    _time: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "hash")]
    _hash: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "pid")]
    _pid: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "uid")]
    _uid: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "gid")]
    _gid: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "producer_id")]
    _producer_id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "producer_number")]
    _producer_number: Option<serde::de::IgnoredAny>,
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
    reasoning_tokens: Option<u64>,
    /// Dollars as a JSON number or string, converted exactly.
    #[serde(default)]
    cost_usd: Option<serde_json::Value>,
    /// Or the integer the database stores.
    #[serde(default)]
    cost_micro_usd: Option<u64>,
    #[serde(default)]
    model: Option<String>,
}

/// A line that could not be imported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadLine {
    /// Line number, from 1.
    pub line: usize,
    /// Why.
    pub error: String,
}

/// What an import did.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Entries recorded.
    pub imported: usize,
    /// Lines refused: invalid, or refused by the daemon.
    pub bad_lines: Vec<BadLine>,
    /// Entries the daemon refused (valid lines it did not record, such as for a full queue
    /// or a rate limit); any makes the import fail.
    pub refused: usize,
    /// Wall time.
    pub seconds: f64,
    /// Entries per second.
    pub rate: f64,
}

/// Why an import failed as a whole.
#[derive(Debug)]
pub enum Failure {
    /// Bad lines and no `--skip-invalid`: nothing was sent.
    Invalid(Vec<BadLine>),
    /// Reading the input or talking to the daemon failed.
    Other(anyhow::Error),
}

/// Parses one line into an entry.
fn parse_line(text: &str) -> Result<Entry, String> {
    let line: Line = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let mut entry = Entry::new(line.event, line.component);
    entry.trace_id = line.trace_id;
    entry.client_ts = line.client_ts;
    if let Some(payload) = line.payload {
        entry.payload = payload.get().to_owned();
    }
    if let Some(cost) = line.cost {
        let micro_usd = match (cost.cost_usd, cost.cost_micro_usd) {
            (Some(_), Some(_)) => return Err("cost has both cost_usd and cost_micro_usd".into()),
            (Some(serde_json::Value::Number(number)), None) => parse_usd(&number.to_string())?,
            (Some(serde_json::Value::String(text)), None) => parse_usd(&text)?,
            (Some(other), None) => return Err(format!("cost_usd must be a number, not {other}")),
            (None, micro) => micro.unwrap_or(0),
        };
        entry.cost = Some(Cost {
            tokens_in: cost.tokens_in,
            tokens_out: cost.tokens_out,
            cache_read_tokens: cost.cache_read_tokens,
            reasoning_tokens: cost.reasoning_tokens,
            micro_usd,
            model: cost.model,
        });
    }
    entry.check_limits().map_err(|error| error.to_string())?;
    Ok(entry)
}

/// Reads every line of `input`, then sends the good ones if there are no bad ones or if
/// `skip_invalid` says to.
pub fn import(
    client: &mut Client,
    input: Box<dyn BufRead>,
    skip_invalid: bool,
) -> Result<Report, Failure> {
    let started = Instant::now();
    let mut entries = Vec::new();
    let mut line_numbers = Vec::new();
    let mut bad_lines = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(|error| {
            Failure::Other(anyhow::anyhow!("reading line {}: {error}", index + 1))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(entry) => {
                entries.push(entry);
                line_numbers.push(index + 1);
            }
            Err(error) => bad_lines.push(BadLine {
                line: index + 1,
                error,
            }),
        }
    }
    if !bad_lines.is_empty() && !skip_invalid {
        return Err(Failure::Invalid(bad_lines));
    }
    let n_entries = entries.len();
    for entry in entries {
        client
            .send(entry)
            .map_err(|error| Failure::Other(error.into()))?;
    }
    let mut refused = 0;
    match client.flush() {
        Ok(()) => {}
        Err(Error::Rejected(rejections)) => {
            for rejection in rejections {
                refused += rejection.n_entries;
                let first = rejection.first_entry as usize - 1;
                for offset in 0..rejection.n_entries {
                    let index = first + offset;
                    let line = line_numbers.get(index).copied().unwrap_or(0);
                    bad_lines.push(BadLine {
                        line,
                        error: rejection.reply.message.clone(),
                    });
                }
            }
        }
        Err(other) => return Err(Failure::Other(other.into())),
    }
    bad_lines.sort_by_key(|bad| bad.line);
    let seconds = started.elapsed().as_secs_f64();
    let imported = n_entries - refused;
    Ok(Report {
        imported,
        bad_lines,
        refused,
        seconds,
        rate: imported as f64 / seconds.max(1e-9),
    })
}

/// Records the JSON lines of `file` (or standard input, for "-"), all or nothing unless
/// `skip_invalid`, and reports what was recorded.
pub fn command(
    client: &mut Client,
    file: &PathBuf,
    skip_invalid: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(opened))
    };
    match import(client, input, skip_invalid) {
        Ok(report) => {
            if json {
                print_json(&report)?;
            } else {
                for bad in &report.bad_lines {
                    eprintln!("line {}: {} (not recorded)", bad.line, bad.error);
                }
                writeln!(
                    output::stdout(),
                    "imported {} in {:.2} s ({:.0} entries/s){}",
                    output::entries(report.imported as u64),
                    report.seconds,
                    report.rate,
                    match report.bad_lines.len() - report.refused {
                        0 => String::new(),
                        n => format!(", skipped {n} invalid lines"),
                    }
                )?;
            }
            if report.refused > 0 {
                // Valid entries the daemon did not record: the import did not do what was
                // asked, whatever else it did.
                eprintln!(
                    "witness: the daemon refused {} entries (listed above); the other {} were \
                     recorded",
                    report.refused, report.imported
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(Failure::Invalid(bad_lines)) => {
            if json {
                print_json(&json!({"imported": 0, "bad_lines": bad_lines}))?;
            }
            for bad in &bad_lines {
                eprintln!("line {}: {}", bad.line, bad.error);
            }
            eprintln!(
                "witness: {} invalid line(s); nothing was imported (use --skip-invalid to \
                 import the valid lines)",
                bad_lines.len()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(Failure::Other(error)) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, &str>) {
        match (parse_line(text), expected) {
            (Ok(entry), Ok(event)) => assert_eq!(entry.event, event),
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn lines() {
        check(r#"{"event":"a","component":"c"}"#, Ok("a"));
        check(
            r#"{"event":"a","component":"c","trace_id":"t","payload":{"k":[1,2]},
               "cost":{"tokens_in":3,"tokens_out":4,"cost_usd":0.0015,"model":"m"}}"#,
            Ok("a"),
        );
        check(
            r#"{"event":"a","component":"c","seq":4,"hash":"ab","ts":"x"}"#,
            Ok("a"),
        );
        check(r#"{"event":"a"}"#, Err("missing field `component`"));
        check(
            r#"{"event":"a","component":"c","colour":1}"#,
            Err("unknown field `colour`"),
        );
        check(r#"{"event":"a","component":"c""#, Err("EOF"));
        check("not json", Err("expected"));
        check(
            r#"{"event":"","component":"c"}"#,
            Err("event must not be empty"),
        );
        check(r#"{"event":1,"component":"c"}"#, Err("invalid type"));
        check(
            r#"{"event":"a","component":"c","cost":{"cost_usd":-1}}"#,
            Err("invalid amount"),
        );
        check(
            r#"{"event":"a","component":"c","cost":{"cost_usd":"x"}}"#,
            Err("invalid amount"),
        );
        check(
            r#"{"event":"a","component":"c","cost":{"tokens_in":-5}}"#,
            Err("invalid value"),
        );
        let long = "x".repeat(300);
        check(
            &format!(r#"{{"event":"{long}","component":"c"}}"#),
            Err("limit is 256"),
        );
    }

    #[test]
    fn dollars_become_exact_micro_usd() {
        let entry =
            parse_line(r#"{"event":"a","component":"c","cost":{"cost_usd":0.0015,"tokens_in":1}}"#)
                .unwrap();
        assert_eq!(entry.cost.unwrap().micro_usd, 1500);
    }
}
