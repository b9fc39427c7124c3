//! `witness archive` and `witness verify --with-archives`: the segments that retention sealed,
//! listed, verified alone or as one log with the live database, and exported. Everything here
//! reads files directly and read-only; the daemon need not run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use witness_client::VerifyRange;
use witness_daemon::format::archive::{self, Segment};
use witness_daemon::format::verify::{self, SegmentState};
use witness_daemon::format::{row, schema};

use crate::line::ExportLine;
use crate::output::{self, print_json};
use crate::present::table;

/// Exits 2 with `message`: a file that cannot be read is not a verdict.
fn unusable(message: String) -> anyhow::Result<ExitCode> {
    eprintln!("witness: {message}");
    Ok(ExitCode::from(2))
}

/// The segment files in `dir`, sorted (that is, in log order).
fn segment_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|item| archive::parse_name(&item.file_name().to_string_lossy()).is_some())
        .map(|item| item.path())
        .collect();
    files.sort();
    Ok(files)
}

/// The live log at `db`, read-only, and its archives in `dir` checked against it; `Err` says
/// why the database cannot be read.
fn with_archives(
    db: &Path,
    dir: &Path,
) -> Result<(rusqlite::Connection, verify::ArchivesReport), String> {
    let live = schema::open_reader(db).map_err(|error| witness_daemon::errors::one_line(&error))?;
    // One snapshot for the archives, the live log and the checkpoint: a prune committed
    // between them would move the log's start under the tree rebuilt from the archives.
    live.execute_batch("BEGIN")
        .map_err(|error| format!("reading {}: {error}", db.display()))?;
    let report = verify::verify_archives(&live, dir)
        .map_err(|error| format!("reading {}: {error}", db.display()))?;
    Ok((live, report))
}

/// `witness archive list`: every range the log at `db` pruned, and what is in `dir`.
pub fn list(dir: &Path, db: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (live, report) = match with_archives(db, dir) {
        Ok(found) => found,
        Err(message) => return unusable(message),
    };
    let (start, _) = schema::log_start(&live)?;
    let state_name = |state: &SegmentState| match state {
        SegmentState::Intact => "sealed",
        SegmentState::Dropped => "dropped",
        SegmentState::Missing => "MISSING",
        SegmentState::Altered(_) => "ALTERED",
    };
    let mut out = output::stdout();
    if json {
        let segments: Vec<_> = report
            .segments
            .iter()
            .map(|(segment, state)| {
                json!({
                    "first_seq": segment.first_seq,
                    "last_seq": segment.last_seq,
                    "entries": segment.entries(),
                    "file": segment.file,
                    "bytes": segment.bytes,
                    "sha256": segment.sha256.map(hex::encode),
                    "sealed": crate::when::rfc3339(segment.sealed),
                    "state": state_name(state).to_lowercase(),
                })
            })
            .collect();
        print_json(&json!({
            "live_first_seq": start,
            "segments": segments,
            "unrecorded": report.unrecorded,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if report.segments.is_empty() {
        writeln!(out, "nothing pruned: the live log starts at seq {start}")?;
    } else {
        let rows: Vec<Vec<String>> = report
            .segments
            .iter()
            .map(|(segment, state)| {
                vec![
                    segment.file.clone().unwrap_or_else(|| "-".into()),
                    segment.first_seq.to_string(),
                    segment.last_seq.to_string(),
                    segment.entries().to_string(),
                    segment.bytes.map_or("-".into(), |bytes| bytes.to_string()),
                    crate::when::show(segment.sealed),
                    state_name(state).into(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "FILE", "FIRST", "LAST", "ENTRIES", "BYTES", "SEALED", "STATE",
            ],
            &[false, true, true, true, true, false, false],
            &rows,
            false,
        )?;
        writeln!(out, "the live log starts at seq {start}")?;
    }
    for name in &report.unrecorded {
        writeln!(
            out,
            "not recorded by the log: {name} (left by an interrupted prune; sealed again by the next)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `witness archive verify`: each segment file in `dir` on its own. 0 when all verify, 1 when
/// one does not, 2 when the folder cannot be read.
pub fn verify_alone(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let files = match segment_files(dir) {
        Ok(files) => files,
        Err(error) => return unusable(format!("cannot read {}: {error}", dir.display())),
    };
    let mut out = output::stdout();
    let mut results = Vec::new();
    let mut failed = false;
    for path in &files {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let verdict = archive::open(path)
            .map_err(|error| error.to_string())
            .and_then(|connection| {
                verify::verify_segment(&connection)
                    .map_err(|error| error.to_string())?
                    .into_result()
            });
        match verdict {
            Ok(check) => {
                let entries = check.last_seq + 1 - check.first_seq;
                if json {
                    results.push(
                        json!({"file": name, "intact": true, "first_seq": check.first_seq,
                        "last_seq": check.last_seq, "last_hash": hex::encode(check.last_hash)}),
                    );
                } else {
                    writeln!(
                        out,
                        "{name}: intact, {} (seq {} to {}), last hash {}",
                        output::entries(entries),
                        check.first_seq,
                        check.last_seq,
                        hex::encode(check.last_hash)
                    )?;
                }
            }
            Err(reason) => {
                failed = true;
                if json {
                    results.push(json!({"file": name, "intact": false, "reason": reason}));
                } else {
                    writeln!(out, "{name}: BROKEN: {reason}")?;
                }
            }
        }
    }
    if json {
        print_json(&json!({"segments": results}))?;
    } else if files.is_empty() {
        writeln!(out, "no archive segments in {}", dir.display())?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `witness verify --with-archives`: the live log at `db` and its archives in `dir` as one log,
/// from seq 1; with `checkpoint` and `key`, held to that signed checkpoint too.
pub fn verify_with(
    db: &Path,
    dir: &Path,
    checkpoint: Option<(&Path, &str)>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (live, report) = match with_archives(db, dir) {
        Ok(found) => found,
        Err(message) => return unusable(message),
    };
    let mut held = None;
    if let Some((checkpoint, key)) = checkpoint {
        let key = match crate::proof::read_key(key) {
            Ok(key) => key,
            Err(message) => return unusable(message),
        };
        let note = match std::fs::read_to_string(checkpoint) {
            Ok(note) => note,
            Err(error) => {
                return unusable(format!("cannot read {}: {error}", checkpoint.display()));
            }
        };
        held = Some(
            match verify::verify_checkpoint(&live, &note, &key, report.tree.clone()) {
                Ok(verdict) => verdict.into_result(),
                Err(error) => return unusable(format!("verifying {}: {error}", db.display())),
            },
        );
    }
    let live_report = match verify::verify_from(&live, VerifyRange::default(), report.tree.clone())
    {
        Ok(live_report) => live_report,
        Err(error) => return unusable(format!("verifying {}: {error}", db.display())),
    };
    let archived: u64 = report
        .segments
        .iter()
        .filter(|(_, state)| *state == SegmentState::Intact)
        .map(|(segment, _)| segment.entries())
        .sum();
    let dropped: u64 = report
        .segments
        .iter()
        .filter(|(_, state)| *state == SegmentState::Dropped)
        .map(|(segment, _)| segment.entries())
        .sum();
    let intact_live = matches!(live_report, witness_client::VerifyReport::Intact { .. });
    let held_ok = held.as_ref().is_none_or(Result::is_ok);
    let ok = report.problems.is_empty() && intact_live && held_ok;
    if json {
        print_json(&json!({
            "intact": ok,
            "archived_entries": archived,
            "dropped_entries": dropped,
            "segments": report.segments.len(),
            "problems": report.problems,
            "checkpoint": held.as_ref().map(|held| match held {
                Ok(size) => json!({"size": size}),
                Err(reason) => json!({"problem": reason}),
            }),
            "live": crate::verify::report_json(&live_report),
        }))?;
    } else {
        let mut out = output::stdout();
        for problem in &report.problems {
            writeln!(out, "{problem}")?;
        }
        let pruned: u64 = report
            .segments
            .iter()
            .map(|(segment, _)| segment.entries())
            .sum();
        writeln!(
            out,
            "archives: {} in {}, {} of the {pruned} pruned verified{}",
            if report.segments.len() == 1 {
                "1 segment".to_owned()
            } else {
                format!("{} segments", report.segments.len())
            },
            dir.display(),
            output::entries(archived),
            if dropped > 0 {
                format!(
                    " ({} dropped, as the log records)",
                    output::entries(dropped)
                )
            } else {
                String::new()
            }
        )?;
        match &held {
            Some(Ok(size)) => writeln!(
                out,
                "checkpoint: entries 1 to {size} are the tree it signed"
            )?,
            Some(Err(reason)) => writeln!(out, "BROKEN against the checkpoint: {reason}")?,
            None => {}
        }
        write!(out, "live log: ")?;
        crate::verify::print_report(&live_report)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `witness archive export`: the entries of segment files as JSON lines, as `witness export`
/// writes them (and `witness import` reads them back).
pub fn export(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut out = output::stdout();
    for path in files {
        let connection = match archive::open(path) {
            Ok(connection) => connection,
            Err(error) => return unusable(format!("{}: {error}", path.display())),
        };
        let is_segment = Segment::all(&connection).is_ok()
            && connection
                .query_row("SELECT count(*) FROM segment", [], |row| {
                    row.get::<_, i64>(0)
                })
                .is_ok();
        if !is_segment {
            return unusable(format!("{} is not an archive segment", path.display()));
        }
        let mut statement = connection.prepare(&format!(
            "SELECT {} FROM entries ORDER BY seq",
            row::select_columns()
        ))?;
        let mut rows = statement.query([])?;
        while let Some(stored) = rows.next()? {
            let entry = row::stored_entry(stored)?;
            serde_json::to_writer(&mut out, &ExportLine::new(&entry))?;
            out.write_all(b"\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
