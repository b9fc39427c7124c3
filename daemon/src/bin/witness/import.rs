//! `witness import`: JSON lines into the log, all or nothing by default.
//!
//! The input is read twice and never held whole: a first pass checks every line and sends
//! nothing, so a bad line leaves the log untouched; a second pass sends the lines the first
//! one checked. A file is read again through the same open descriptor, up to the length the
//! first pass saw; standard input is copied to an unnamed temporary file during the first
//! pass. `--skip-invalid` sends the good lines and lists the bad ones.
//!
//! A line written by `witness export` keeps everything it says: its own date
//! (`client_ts`, else `ts`, becomes the copy's `client_ts`), and the fields a copy cannot
//! hold as its own (`seq`, `ts`, `hash`, the credentials and producer) go into the copy's
//! `imported` object, which every entry from an import carries (`{}` for a line with none).
//! The daemon still records its own receive time and the importer's credentials.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use witness_client::{Client, Error};

use crate::line::parse_line;
use crate::output::{self, Usage, print_json};

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

/// Checks every line of `input` and sends none: the bad lines, the numbers of the lines
/// with nothing to send (blank or bad), and the bytes read.
fn check(input: &mut dyn BufRead, mut copy: Option<&mut dyn Write>) -> anyhow::Result<Checked> {
    let mut checked = Checked::default();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = input
            .read_line(&mut line)
            .with_context(|| format!("reading line {}", number + 1))?;
        if read == 0 {
            return Ok(checked);
        }
        number += 1;
        checked.bytes += read as u64;
        if let Some(copy) = copy.as_mut() {
            copy.write_all(line.as_bytes())
                .context("copying standard input to a temporary file")?;
        }
        if line.trim().is_empty() {
            checked.unsent.push(number);
            continue;
        }
        if let Err(error) = parse_line(&line) {
            checked.unsent.push(number);
            checked.bad_lines.push(BadLine {
                line: number,
                error,
            });
        } else {
            checked.good += 1;
        }
    }
}

/// What the first pass found.
#[derive(Debug, Default)]
struct Checked {
    bad_lines: Vec<BadLine>,
    /// Lines sent nothing for, in order: to number the entries the daemon refuses.
    unsent: Vec<usize>,
    good: usize,
    bytes: u64,
}

impl Checked {
    /// The line the `index`-th entry sent (from 1) came from.
    fn line_of(&self, index: usize) -> usize {
        let mut line = index;
        for &unsent in &self.unsent {
            if unsent <= line {
                line += 1;
            } else {
                break;
            }
        }
        line
    }
}

/// Checks every line of `input`, then, if none is bad or `skip_invalid` says to, reads it
/// again from the start and sends the good lines.
pub fn import(
    client: &mut Client,
    input: &mut File,
    stdin: Option<&mut dyn Read>,
    skip_invalid: bool,
) -> Result<Report, Failure> {
    let started = Instant::now();
    let start = input
        .stream_position()
        .map_err(|error| Failure::Other(error.into()))?;
    let checked = match stdin {
        Some(stdin) => {
            let mut copy = BufWriter::new(&mut *input);
            let checked = check(&mut BufReader::new(stdin), Some(&mut copy));
            copy.flush()
                .context("copying standard input to a temporary file")
                .map_err(Failure::Other)?;
            checked
        }
        None => check(&mut BufReader::new(&mut *input), None),
    }
    .map_err(Failure::Other)?;
    if !checked.bad_lines.is_empty() && !skip_invalid {
        return Err(Failure::Invalid(checked.bad_lines));
    }
    input
        .seek(SeekFrom::Start(start))
        .map_err(|error| Failure::Other(error.into()))?;
    let mut again = BufReader::new(input.take(checked.bytes));
    let mut line = String::new();
    let mut sent = 0;
    for number in 1.. {
        line.clear();
        let read = again
            .read_line(&mut line)
            .map_err(|error| Failure::Other(error.into()))?;
        if read == 0 {
            break;
        }
        if checked.unsent.binary_search(&number).is_ok() {
            continue;
        }
        // A line that passed the first pass fails only if the file changed under us.
        let entry = parse_line(&line).map_err(|error| {
            Failure::Other(anyhow::anyhow!(
                "line {number} changed while it was imported ({error}); {sent} entries before \
                 it were sent"
            ))
        })?;
        client
            .send(entry)
            .map_err(|error| Failure::Other(error.into()))?;
        sent += 1;
    }
    if sent != checked.good {
        return Err(Failure::Other(anyhow::anyhow!(
            "the input changed while it was imported: {} good lines checked, {sent} sent",
            checked.good
        )));
    }
    let mut bad_lines = checked.bad_lines.clone();
    let mut refused = 0;
    match client.flush() {
        Ok(()) => {}
        Err(Error::Rejected(rejections)) => {
            for rejection in rejections {
                refused += rejection.n_entries;
                for offset in 0..rejection.n_entries {
                    bad_lines.push(BadLine {
                        line: checked.line_of(rejection.first_entry as usize + offset),
                        error: rejection.reply.message.clone(),
                    });
                }
            }
        }
        Err(other) => return Err(Failure::Other(other.into())),
    }
    bad_lines.sort_by_key(|bad| bad.line);
    let seconds = started.elapsed().as_secs_f64();
    let imported = sent - refused;
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
    let outcome = if file.as_os_str() == "-" {
        let mut spool =
            tempfile::tempfile().context("cannot make a temporary file to hold standard input")?;
        import(
            client,
            &mut spool,
            Some(&mut std::io::stdin().lock()),
            skip_invalid,
        )
    } else {
        let mut opened = File::open(file)
            .map_err(|error| Usage(format!("cannot open {}: {error}", file.display())))?;
        import(client, &mut opened, None, skip_invalid)
    };
    match outcome {
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
            if report.imported == 0 && report.refused == 0 && !report.bad_lines.is_empty() {
                // --skip-invalid over a file with no valid line: nothing asked for was done.
                eprintln!("witness: no line is a valid entry; nothing was imported");
                return Ok(ExitCode::FAILURE);
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
            r#"{"event":"a","component":"c","seq":4,"ts":1700000000000000000,"pid":7}"#,
            Ok("a"),
        );
        check(
            r#"{"event":"a","component":"c","seq":4,"ts":"x"}"#,
            Err("ts must be an integer"),
        );
        check(
            r#"{"event":"a","component":"c","hash":"ab"}"#,
            Err("hash must be 64 hex digits"),
        );
        check(
            r#"{"event":"a","component":"c","imported":[1]}"#,
            Err("imported must be a JSON object"),
        );
        check(
            r#"{"event":"a","component":"c","client_ts":1700000000}"#,
            Err("looks like seconds"),
        );
        check(
            r#"{"event":"a","component":"c","client_ts":1.5e18}"#,
            Err("not a whole number"),
        );
        check(
            r#"{"event":"a","component":"c","client_ts":"yesterday"}"#,
            Err("not an RFC 3339 time"),
        );
        check(
            r#"{"event":"a","component":"c","client_ts":true}"#,
            Err("must be nanoseconds"),
        );
        check(r#"{"event":"a"}"#, Err("missing field `component`"));
        check(
            r#"{"event":"a","component":"c","colour":1}"#,
            Err("unknown field `colour`"),
        );
        check(
            r#"{"event":"a","component":"c""#,
            Err("the line ends before its JSON does"),
        );
        check("not json", Err("expected"));
        check(
            r#"{"event":"","component":"c"}"#,
            Err("event must not be empty"),
        );
        check(
            r#"{"event":1,"component":"c"}"#,
            Err("`event`: integer `1`, expected a string, at column 10"),
        );
        // Issue 28, item 18: the field is named and serde's "at line 1" is gone.
        check(
            r#"{"event":"a","component":"c","cost":{"tokens_in":"ten","tokens_out":1}}"#,
            Err("`cost.tokens_in`: string \"ten\", expected a whole number, 0 or more, at column"),
        );
        check(
            r#"{"event":"a","component":"c"} extra"#,
            Err("trailing characters, at column 31"),
        );
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
    fn an_export_line_keeps_its_date_and_its_original_fields() {
        let entry = parse_line(
            r#"{"seq":9,"time":"2023-11-14T22:13:20Z","ts":1700000000000000000,"event":"a",
               "component":"c","client_ts":null,"pid":7,"uid":1000,"gid":1000,
               "producer_id":null,"producer_number":null,"hash":"AB"}"#
                .replace("\"AB\"", &format!("\"{}\"", "AB".repeat(32)))
                .as_str(),
        )
        .unwrap();
        assert_eq!(entry.client_ts, Some(1_700_000_000_000_000_000));
        let original: serde_json::Value =
            serde_json::from_str(entry.imported.as_deref().unwrap()).unwrap();
        assert_eq!(
            original,
            json!({"seq": 9, "ts": 1_700_000_000_000_000_000_i64, "pid": 7, "uid": 1000,
                   "gid": 1000, "hash": "ab".repeat(32)})
        );
        // An RFC 3339 client_ts wins over ts, and a copy's own `imported` is kept as it is.
        let entry = parse_line(
            r#"{"event":"a","component":"c","client_ts":"2026-11-22T10:00:00+01:00",
               "ts":1,"imported":{"seq":1, "from":"elsewhere"}}"#,
        )
        .unwrap();
        assert_eq!(entry.client_ts, Some(1_795_338_000_000_000_000));
        assert_eq!(
            entry.imported.as_deref(),
            Some(r#"{"seq":1, "from":"elsewhere"}"#)
        );
        // A line written by hand is marked as imported all the same.
        let entry = parse_line(r#"{"event":"a","component":"c"}"#).unwrap();
        assert_eq!(entry.imported.as_deref(), Some("{}"));
        assert_eq!(entry.client_ts, None);
    }

    #[test]
    fn float_noise_in_dollars_is_rounded_to_the_micro_dollar() {
        let entry =
            parse_line(r#"{"event":"a","component":"c","cost":{"cost_usd":0.30000000000000004}}"#)
                .unwrap();
        assert_eq!(entry.cost.unwrap().micro_usd, Some(300_000));
    }

    #[test]
    fn dollars_become_exact_micro_usd() {
        let entry =
            parse_line(r#"{"event":"a","component":"c","cost":{"cost_usd":0.0015,"tokens_in":1}}"#)
                .unwrap();
        assert_eq!(entry.cost.unwrap().micro_usd, Some(1500));
    }

    #[test]
    fn a_cost_without_money_is_left_to_the_daemon_and_a_price_needs_money() {
        let entry = parse_line(
            r#"{"event":"a","component":"c","cost":{"tokens_in":5,"model":"m","cache_write_tokens":2}}"#,
        )
        .unwrap();
        let cost = entry.cost.unwrap();
        assert_eq!((cost.micro_usd, cost.cache_write_tokens), (None, Some(2)));
        assert!(
            parse_line(
                r#"{"event":"a","component":"c","cost":{"tokens_in":5,"priced_by":"t:p/m"}}"#
            )
            .is_err()
        );
        assert!(
            parse_line(r#"{"event":"a","component":"c","cost":{"tokens_in":5,"colour":1}}"#)
                .is_err()
        );
    }
}
