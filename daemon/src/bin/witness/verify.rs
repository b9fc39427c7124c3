//! `witness verify`: the hash chain recomputed, by the daemon or from a database file with no
//! daemon, and the database held to a signed checkpoint, and the verdict in the exit status: 0 intact, 1 broken or inconsistent, 2 a bad
//! range or a file that cannot be read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use witness_client::{Client, VerifyRange, VerifyReport};
use witness_daemon::format::{schema, verify};

use crate::output::{self, print_json};

/// Holds the database at `db` to the signed checkpoint in `checkpoint`, checked with `key`,
/// and verifies the whole log: 0 when both hold, 1 when either does not, 2 when a file or the
/// key cannot be read.
pub fn against_checkpoint(
    db: &Path,
    checkpoint: &Path,
    key: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let unusable = |message: String| -> anyhow::Result<ExitCode> {
        eprintln!("witness: {message}");
        Ok(ExitCode::from(2))
    };
    let key = match crate::proof::read_key(key) {
        Ok(key) => key,
        Err(message) => return unusable(message),
    };
    let note = match std::fs::read_to_string(checkpoint) {
        Ok(note) => note,
        Err(error) => return unusable(format!("cannot read {}: {error}", checkpoint.display())),
    };
    let connection = match schema::open_reader(db) {
        Ok(connection) => connection,
        Err(error) => return unusable(witness_daemon::errors::one_line(&error)),
    };
    let held = match verify::verify_checkpoint(&connection, &note, &key, None) {
        Ok(verdict) => verdict.into_result(),
        Err(error) => return unusable(format!("verifying {}: {error}", db.display())),
    };
    let report = match verify::verify(&connection, VerifyRange::default()) {
        Ok(report) => report,
        Err(error) => return unusable(format!("verifying {}: {error}", db.display())),
    };
    match held {
        Ok(size) => {
            if !json {
                writeln!(
                    output::stdout(),
                    "checkpoint: entries 1 to {size} are the tree it signed"
                )?;
            }
            print_verify(&report, json)
        }
        Err(reason) => {
            if json {
                print_json(&json!({"intact": false, "checkpoint": reason}))?;
            } else {
                writeln!(output::stdout(), "BROKEN against the checkpoint: {reason}")?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

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
                    eprintln!(
                        "witness: {}",
                        witness_daemon::errors::one_line(error.as_ref())
                    );
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
    if json {
        print_json(&report_json(report))?;
    } else {
        print_report(report)?;
    }
    Ok(match report {
        VerifyReport::Intact { .. } => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// A verification's verdict as the JSON object `witness verify --json` prints.
pub fn report_json(report: &VerifyReport) -> serde_json::Value {
    match report {
        VerifyReport::Intact {
            count,
            first_seq,
            last_seq,
            head_hash,
        } => json!({
            "intact": true, "count": count, "first_seq": first_seq,
            "last_seq": last_seq, "head_hash": head_hash.map(hex::encode),
        }),
        VerifyReport::Broken {
            seq,
            reason,
            checked,
        } => json!({"intact": false, "seq": seq, "reason": reason, "checked": checked}),
        VerifyReport::Inconsistent {
            table,
            reason,
            checked,
        } => json!({"intact": false, "table": table, "reason": reason, "checked": checked}),
    }
}

/// A verification's verdict as the line `witness verify` prints.
pub fn print_report(report: &VerifyReport) -> std::io::Result<()> {
    let mut out = output::stdout();
    match report {
        VerifyReport::Intact {
            count,
            first_seq: Some(first),
            last_seq: Some(last),
            head_hash: Some(head),
        } => writeln!(
            out,
            "intact: {}, seq {first} to {last}, head hash {}",
            output::entries(*count),
            hex::encode(head)
        ),
        VerifyReport::Intact { .. } => writeln!(out, "intact: no entries in range"),
        VerifyReport::Broken {
            seq,
            reason,
            checked,
        } => writeln!(
            out,
            "BROKEN at seq {seq}: {reason} ({checked} entries verified before it)"
        ),
        VerifyReport::Inconsistent {
            table,
            reason,
            checked,
        } => writeln!(
            out,
            "INCONSISTENT {table}: {reason} (all {checked} entries verified)"
        ),
    }
}
