//! `witness stats`, `witness maintenance`, `witness checkpoint`, `witness key` and `witness
//! web`: the operator's view of a running daemon.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};
use witness_client::Client;
use witness_client::admin::{
    MaintenanceReport, MaintenanceTask, PathsReport, Percentiles, StatsReport,
};

/// How `witness stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    Table,
    Json,
    Prometheus,
}

/// `witness stats`.
pub fn stats(client: &mut Client, format: StatsFormat) -> anyhow::Result<()> {
    let report = client.stats()?;
    // Where the log is, for those who may read it; a daemon from before `Paths` answers
    // BadFrame and a user who may only write is refused: the counters are shown all the same.
    let paths = match client.paths() {
        Ok(paths) => Some(paths),
        Err(witness_client::Error::Refused(reply))
            if matches!(
                reply.code,
                witness_client::ErrorCode::BadFrame | witness_client::ErrorCode::Forbidden
            ) =>
        {
            None
        }
        Err(error) => return Err(error.into()),
    };
    let mut out = crate::output::stdout();
    match format {
        StatsFormat::Json => {
            let mut value = stats_json(&report);
            value["paths"] = paths.as_ref().map_or(Value::Null, paths_json);
            writeln!(out, "{value}")?
        }
        StatsFormat::Prometheus => {
            write!(
                out,
                "{}",
                witness_daemon::observe::prometheus::prometheus(&report)
            )?;
        }
        StatsFormat::Table => {
            print_stats(&mut out, &report)?;
            if let Some(paths) = &paths {
                print_paths(&mut out, paths)?;
            }
        }
    }
    Ok(())
}

/// `witness where`: every path, or the one asked for alone on a line.
pub fn paths(
    client: &mut Client,
    file: Option<crate::args::WhereFile>,
    json: bool,
) -> anyhow::Result<()> {
    use crate::args::WhereFile;
    let paths = client.paths()?;
    let mut out = crate::output::stdout();
    let Some(file) = file else {
        if json {
            writeln!(out, "{}", paths_json(&paths))?;
        } else {
            print_paths(&mut out, &paths)?;
        }
        return Ok(());
    };
    let path = match file {
        WhereFile::Db => &paths.db,
        WhereFile::Socket => &paths.socket,
        WhereFile::Key => &paths.key_file,
        WhereFile::VerifierKey => &paths.verifier_file,
        WhereFile::Checkpoint => &paths.checkpoint_file,
        WhereFile::Acked => &paths.acked_file,
        WhereFile::Archives => paths
            .archive_dir
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the daemon does not archive (no archive_dir)"))?,
    };
    if json {
        writeln!(out, "{}", json!(path))?;
    } else {
        writeln!(out, "{path}")?;
    }
    Ok(())
}

fn paths_json(paths: &PathsReport) -> Value {
    json!({
        "socket": paths.socket,
        "db": paths.db,
        "key_file": paths.key_file,
        "verifier_file": paths.verifier_file,
        "checkpoint_file": paths.checkpoint_file,
        "acked_file": paths.acked_file,
        "archive_dir": paths.archive_dir,
    })
}

fn print_paths(out: &mut impl Write, paths: &PathsReport) -> std::io::Result<()> {
    let shown = |path: &str| crate::present::printable(path).into_owned();
    let mut rows = vec![
        (
            "database",
            format!("{} (and its -wal beside it)", shown(&paths.db)),
        ),
        ("socket", shown(&paths.socket)),
        ("key", shown(&paths.key_file)),
        ("verifier key", shown(&paths.verifier_file)),
        ("checkpoint", shown(&paths.checkpoint_file)),
        ("acked mark", shown(&paths.acked_file)),
    ];
    if let Some(archive) = &paths.archive_dir {
        rows.push(("archives", shown(archive)));
    }
    for (name, value) in rows {
        writeln!(out, "{name:<12} {value}")?;
    }
    Ok(())
}

fn print_stats(out: &mut impl Write, report: &StatsReport) -> std::io::Result<()> {
    let percent = |part: u64, whole: u64| part as f64 * 100.0 / whole.max(1) as f64;
    let spread = |p: &Percentiles, show: &dyn Fn(u64) -> String| {
        if p.count == 0 {
            "(none in the last minutes)".to_owned()
        } else {
            format!(
                "p50 {}  p90 {}  p99 {}  max {}  ({} recorded)",
                show(p.p50),
                show(p.p90),
                show(p.p99),
                show(p.max),
                p.count
            )
        }
    };
    let rejections = if report.rejections.is_empty() {
        "none".to_owned()
    } else {
        report
            .rejections
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = [
        ("server", report.server.clone()),
        ("uptime", uptime(report.uptime_ms)),
        (
            "entries",
            format!(
                "{} committed, {:.1}/s over the last 10 s, last seq {}",
                report.entries_total, report.entries_per_sec, report.last_seq
            ),
        ),
        (
            "batches",
            format!(
                "{} committed, {} failed",
                report.batches_total, report.batches_failed
            ),
        ),
        (
            "queue",
            format!(
                "{} of {} ({:.0}%)",
                report.queue_depth,
                report.queue_capacity,
                percent(report.queue_depth, report.queue_capacity)
            ),
        ),
        (
            "batch size",
            spread(&report.batch_entries, &|n| n.to_string()),
        ),
        ("commit time", spread(&report.commit_us, &micros)),
        ("ack time", spread(&report.ack_us, &micros)),
        (
            "connections",
            format!(
                "{} open, at most {}, {} since start",
                report.connections, report.connections_max, report.connections_total
            ),
        ),
        ("rejections", rejections),
        (
            "database",
            format!(
                "{} (WAL {})",
                bytes(report.db_bytes),
                bytes(report.wal_bytes)
            ),
        ),
        (
            "memory",
            format!(
                "{} resident, peak {}",
                bytes(report.rss_bytes),
                bytes(report.rss_peak_bytes)
            ),
        ),
    ];
    if let Some(failure) = &report.failure {
        writeln!(out, "{:<12} {failure}", "FAILED")?;
    }
    for (name, value) in rows {
        writeln!(out, "{name:<12} {value}")?;
    }
    let days = match report.disk_days_left {
        Some(days) if days < 3650.0 => format!(", about {days:.1} days left at this rate"),
        Some(_) => ", years left at this rate".to_owned(),
        None => String::new(),
    };
    writeln!(
        out,
        "{:<12} {} free{days}",
        "disk",
        bytes(report.disk_free_bytes)
    )?;
    if let Some(low) = &report.disk_low {
        writeln!(out, "{:<12} {low}", "REFUSING")?;
    }
    if report.first_seq > 1 || report.entries_pruned > 0 {
        writeln!(
            out,
            "{:<12} the live log starts at seq {}; {} pruned since start, {:.1} s of the \
             writer's time",
            "retention",
            report.first_seq,
            crate::output::entries(report.entries_pruned),
            report.prune_seconds
        )?;
    }
    if let Some(forward) = &report.forward {
        writeln!(
            out,
            "{:<12} {}: {}, at the centre up to seq {}, {} behind ({:.1} s)",
            "fleet",
            forward.host_id,
            forward.state,
            forward.forwarded_seq,
            crate::output::entries(forward.lag_entries),
            forward.lag_seconds
        )?;
    }
    if !report.rate_limited.is_empty() {
        let limited: Vec<String> = report
            .rate_limited
            .iter()
            .map(|(uid, count)| format!("uid {uid}: {count}"))
            .collect();
        writeln!(out, "{:<12} {}", "rate limited", limited.join(", "))?;
    }
    Ok(())
}

fn stats_json(report: &StatsReport) -> Value {
    let spread = |p: &Percentiles| json!({"count": p.count, "p50": p.p50, "p90": p.p90, "p99": p.p99, "p999": p.p999, "max": p.max});
    let rejections: serde_json::Map<String, Value> = report
        .rejections
        .iter()
        .map(|(reason, count)| (reason.clone(), json!(count)))
        .collect();
    json!({
        "server": report.server,
        "uptime_ms": report.uptime_ms,
        "entries_total": report.entries_total,
        "entries_per_sec": report.entries_per_sec,
        "last_seq": report.last_seq,
        "batches_total": report.batches_total,
        "batches_failed": report.batches_failed,
        "queue_depth": report.queue_depth,
        "queue_capacity": report.queue_capacity,
        "batch_entries": spread(&report.batch_entries),
        "commit_us": spread(&report.commit_us),
        "ack_us": spread(&report.ack_us),
        "connections": report.connections,
        "connections_max": report.connections_max,
        "connections_total": report.connections_total,
        "rejections": rejections,
        "db_bytes": report.db_bytes,
        "wal_bytes": report.wal_bytes,
        "rss_bytes": report.rss_bytes,
        "rss_peak_bytes": report.rss_peak_bytes,
        "failure": report.failure,
        "rate_limited": report.rate_limited.iter()
            .map(|(uid, count)| (uid.to_string(), json!(count)))
            .collect::<serde_json::Map<String, Value>>(),
        "disk_free_bytes": report.disk_free_bytes,
        "disk_days_left": report.disk_days_left,
        "disk_low": report.disk_low,
        "first_seq": report.first_seq,
        "entries_pruned": report.entries_pruned,
        "prune_seconds": report.prune_seconds,
        "forward": report.forward.as_ref().map(|forward| json!({
            "host_id": forward.host_id,
            "state": forward.state,
            "forwarded_seq": forward.forwarded_seq,
            "lag_entries": forward.lag_entries,
            "lag_seconds": forward.lag_seconds,
            "entries_total": forward.entries_total,
            "batches_total": forward.batches_total,
            "errors_total": forward.errors_total,
        })),
    })
}

/// `witness maintenance`.
pub fn maintenance(client: &mut Client, task: MaintenanceTask, json: bool) -> anyhow::Result<()> {
    let report = client.maintenance(task)?;
    let mut out = crate::output::stdout();
    if json {
        writeln!(out, "{}", maintenance_json(&report))?;
        return Ok(());
    }
    match &report.task {
        MaintenanceTask::Analyze => {
            writeln!(out, "ANALYZE done in {} ms", report.elapsed_ms)?;
        }
        MaintenanceTask::Backup { path } => writeln!(
            out,
            "backup written to {path}: {}, up to seq {}, in {} ms",
            bytes(report.bytes.unwrap_or(0)),
            report
                .last_seq
                .map_or("(empty log)".to_owned(), |seq| seq.to_string()),
            report.elapsed_ms
        )?,
        MaintenanceTask::Prune { .. } => match report.last_seq {
            Some(last) => writeln!(
                out,
                "pruned: the live log now starts at seq {}; {} of archive written, in {} ms",
                last + 1,
                bytes(report.bytes.unwrap_or(0)),
                report.elapsed_ms
            )?,
            None => writeln!(
                out,
                "nothing to prune: no whole tile of 256 entries is before it"
            )?,
        },
    }
    Ok(())
}

fn maintenance_json(report: &MaintenanceReport) -> Value {
    match &report.task {
        MaintenanceTask::Analyze => json!({"task": "analyze", "elapsed_ms": report.elapsed_ms}),
        MaintenanceTask::Backup { path } => json!({
            "task": "backup",
            "path": path,
            "bytes": report.bytes,
            "last_seq": report.last_seq,
            "elapsed_ms": report.elapsed_ms,
        }),
        MaintenanceTask::Prune { .. } => json!({
            "task": "prune",
            "first_seq": report.last_seq.map_or(1, |last| last + 1),
            "archive_bytes": report.bytes,
            "elapsed_ms": report.elapsed_ms,
        }),
    }
}

/// Microseconds, for people: `850 µs`, `4.2 ms`, `1.25 s`.
fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

fn uptime(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Prints the latest signed checkpoint as the note it is (or, with `--json`, with the
/// verifier key); exits 1 when none is signed yet.
pub fn checkpoint(client: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let report = client.checkpoint()?;
    if json {
        crate::output::print_json(&json!({
            "note": report.note,
            "verifier_key": report.verifier_key,
        }))?;
    } else if let Some(note) = &report.note {
        write!(crate::output::stdout(), "{note}")?;
    }
    if report.note.is_none() {
        eprintln!("witness: the daemon has signed no checkpoint yet");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a one-time login link to the dashboard and, with `open`, opens it; exits 1 when
/// the browser could not be started (the link is printed all the same).
pub fn web(client: &mut Client, open: bool, json: bool) -> anyhow::Result<ExitCode> {
    let login = client.web_login()?;
    if json {
        crate::output::print_json(&json!({
            "url": login.url,
            "expires_in_secs": login.expires_in_secs,
        }))?;
    } else {
        writeln!(crate::output::stdout(), "{}", login.url)?;
        eprintln!(
            "witness: this link logs in once, within {} s, as the user running this command",
            login.expires_in_secs
        );
    }
    if !open {
        return Ok(ExitCode::SUCCESS);
    }
    let opened = std::process::Command::new("xdg-open")
        .arg(&login.url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match opened {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!(
                "witness: could not start a browser (xdg-open: {error}): open the link yourself"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints the log's verifier key.
pub fn key(client: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let report = client.checkpoint()?;
    if json {
        crate::output::print_json(&json!({ "verifier_key": report.verifier_key }))?;
    } else {
        writeln!(crate::output::stdout(), "{}", report.verifier_key)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_the_unit_that_fits() {
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(4_200), "4.2 ms");
        assert_eq!(micros(1_250_000), "1.25 s");
    }
}
