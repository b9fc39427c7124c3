//! `witness spool`: what clients kept in this user's spool for a daemon they could not
//! reach, listed, or delivered on demand.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};
use witness_client::{Client, spool_file};

use crate::present::printable;

/// Lists the spool files waiting for the daemon at `socket`, with their entries and state.
/// Needs no daemon: the files are this user's own.
pub fn list(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    if let Some(folder) = spool_file::folder(socket) {
        let mut names: Vec<_> = std::fs::read_dir(&folder)?
            .filter_map(|item| item.ok()?.file_name().into_string().ok())
            .filter(|name| !name.ends_with(".partial"))
            .collect();
        names.sort();
        for name in names {
            let path = folder.join(&name);
            let state = if name.ends_with(".spool") {
                "waiting"
            } else if name.ends_with(".bad") {
                "set aside"
            } else if name.ends_with(".claimed") {
                "being delivered"
            } else {
                continue;
            };
            let data = std::fs::read(&path)?;
            let (entries, problem) = match spool_file::decode(&data) {
                Ok(batches) => (
                    batches
                        .iter()
                        .map(|batch| batch.entries.len())
                        .sum::<usize>(),
                    None,
                ),
                Err(reason) => (0, Some(reason.to_string())),
            };
            files.push((path, state, entries, data.len(), problem));
        }
    }
    let mut out = crate::output::stdout();
    if json {
        let listed: Vec<Value> = files
            .iter()
            .map(|(path, state, entries, bytes, problem)| {
                json!({"path": path, "state": state, "entries": entries, "bytes": bytes,
                       "problem": problem})
            })
            .collect();
        writeln!(out, "{}", json!({ "socket": socket, "files": listed }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if files.is_empty() {
        writeln!(
            out,
            "nothing is kept for the daemon at {}",
            printable(&socket.display().to_string())
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let total: usize = files.iter().map(|file| file.2).sum();
    writeln!(
        out,
        "{} kept for the daemon at {} (`witness spool --deliver` delivers them):",
        crate::output::entries(total as u64),
        printable(&socket.display().to_string())
    )?;
    for (path, state, entries, bytes, problem) in &files {
        let problem = problem
            .as_ref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}  {entries} entries, {bytes} bytes, {state}{problem}",
            printable(&path.display().to_string())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Delivers the spool files for the client's daemon now. Exit 0 when every entry is
/// recorded, 1 when the daemon refused some or a file could not be read.
pub fn deliver(client: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let delivered = client.deliver_kept()?;
    let reason = delivered
        .first_refusal
        .as_ref()
        .map(|reply| reply.message.clone());
    let mut out = crate::output::stdout();
    if json {
        let set_aside: Vec<Value> = delivered
            .set_aside
            .iter()
            .map(|(path, reason)| json!({"path": path, "reason": reason}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"files": delivered.files, "entries": delivered.entries,
                   "refused": delivered.refused, "first_refusal": reason,
                   "set_aside": set_aside})
        )?;
    } else {
        writeln!(
            out,
            "delivered {} from {} spool file(s)",
            crate::output::entries(delivered.entries as u64),
            delivered.files
        )?;
        if let Some(reason) = &reason {
            writeln!(
                out,
                "the daemon refused {}: {}",
                crate::output::entries(delivered.refused as u64),
                printable(reason)
            )?;
        }
        for (path, reason) in &delivered.set_aside {
            writeln!(
                out,
                "{} cannot be delivered ({}); set aside",
                printable(&path.display().to_string()),
                printable(reason)
            )?;
        }
    }
    let whole = delivered.refused == 0 && delivered.set_aside.is_empty();
    Ok(if whole {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
