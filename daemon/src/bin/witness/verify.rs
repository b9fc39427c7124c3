//! `witness verify`: the hash chain recomputed, by the daemon or from a database file with no
//! daemon, and the verdict in the exit status: 0 intact, 1 broken or inconsistent, 2 a bad
//! range or a file that cannot be read.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use witness_client::{Client, VerifyRange, VerifyReport};
use witness_daemon::format::{schema, verify};

use crate::output::{self, print_json};

/// Verifies `range` of the log at `db`, or of the daemon's log when `db` is `None`.
pub fn command(
    range: VerifyRange,
    db: Option<PathBuf>,
    connect: impl FnOnce() -> Result<Client, witness_client::Error>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // 0 intact, 1 broken or inconsistent, 2 a bad range or a file that cannot be read.
    if let Err(reason) = verify::check_range(range) {
        eprintln!("witness: {reason}");
        return Ok(ExitCode::from(2));
    }
    let report = match db {
        Some(path) => {
            let verified = schema::open_reader(&path)
                .map_err(anyhow::Error::from)
                .and_then(|connection| {
                    verify::verify(&connection, range)
                        .with_context(|| format!("verifying {}", path.display()))
                });
            match verified {
                Ok(report) => report,
                Err(error) => {
                    eprintln!("witness: {error:#}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        None => match connect()?.verify(range) {
            Ok(report) => report,
            Err(witness_client::Error::Refused(reply))
                if reply.code == witness_client::ErrorCode::BadRequest =>
            {
                eprintln!("witness: {}", reply.message);
                return Ok(ExitCode::from(2));
            }
            Err(error) => return Err(error.into()),
        },
    };
    print_verify(&report, json)
}

fn print_verify(report: &VerifyReport, json: bool) -> anyhow::Result<ExitCode> {
    match report {
        VerifyReport::Intact {
            count,
            first_seq,
            last_seq,
            head_hash,
        } => {
            let head = head_hash.map(hex::encode);
            if json {
                print_json(&json!({
                    "intact": true, "count": count, "first_seq": first_seq,
                    "last_seq": last_seq, "head_hash": head,
                }))?;
            } else if let (Some(first), Some(last), Some(head)) = (first_seq, last_seq, head) {
                writeln!(
                    output::stdout(),
                    "intact: {count} entries, seq {first} to {last}, head hash {head}"
                )?;
            } else {
                writeln!(output::stdout(), "intact: no entries in range")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        VerifyReport::Broken {
            seq,
            reason,
            checked,
        } => {
            if json {
                print_json(&json!({
                    "intact": false, "seq": seq, "reason": reason, "checked": checked,
                }))?;
            } else {
                writeln!(
                    output::stdout(),
                    "BROKEN at seq {seq}: {reason} ({checked} entries verified before it)"
                )?;
            }
            Ok(ExitCode::FAILURE)
        }
        VerifyReport::Inconsistent {
            table,
            reason,
            checked,
        } => {
            if json {
                print_json(&json!({
                    "intact": false, "table": table, "reason": reason, "checked": checked,
                }))?;
            } else {
                writeln!(
                    output::stdout(),
                    "INCONSISTENT {table}: {reason} (all {checked} entries verified)"
                )?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
