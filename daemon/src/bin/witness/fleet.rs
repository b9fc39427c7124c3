//! `witness fleet`: the fleet's PostgreSQL, where every host's forwarder ships its log, read
//! and audited. These commands speak to PostgreSQL, not to a daemon.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};
use witness_daemon::fleet::audit::{self, Problem};
use witness_daemon::fleet::query;
use witness_daemon::fleet::{Target, check_schema};

use crate::args::{FleetArgs, FleetCommand};
use crate::line::ExportLine;
use crate::money::show_money;
use crate::present::{cost_row_json, cost_table, date, printable, table, tokens_in, tokens_out};
use crate::when::{rfc3339, show};

/// Runs one `witness fleet` command.
pub fn run(args: FleetArgs, json: bool) -> anyhow::Result<ExitCode> {
    let Some(url) = args.postgres else {
        <crate::args::Args as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "witness fleet needs --postgres URL (or WITNESS_POSTGRES in the environment)",
            )
            .exit()
    };
    let target = Target {
        url,
        password_file: args.password_file,
    };
    let mut client = target.connect()?;
    check_schema(&mut client)?;
    let mut out = crate::output::stdout();
    match args.command {
        FleetCommand::Cost { by, since, until } => {
            let (rows, total) = query::cost(&mut client, by, since, until)?;
            if json {
                let document = json!({
                    "by": format!("{by:?}").to_lowercase(),
                    "rows": rows.iter().map(cost_row_json).collect::<Vec<_>>(),
                    "total": cost_row_json(&total),
                });
                writeln!(out, "{document}")?;
            } else {
                cost_table(&mut out, &format!("{by:?}").to_uppercase(), &rows, &total)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Trace { trace_id, limit } => {
            let entries = query::trace(&mut client, &trace_id, limit)?;
            if json {
                let lines: Vec<Value> = entries
                    .iter()
                    .map(|(host, stored)| {
                        let mut line = serde_json::to_value(ExportLine::new(stored))
                            .expect("an export line is JSON");
                        line["host_id"] = json!(host);
                        line
                    })
                    .collect();
                writeln!(out, "{}", json!({"trace_id": trace_id, "entries": lines}))?;
                return Ok(if entries.is_empty() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
            if entries.is_empty() {
                eprintln!("witness: no host has forwarded an entry with trace id {trace_id:?}");
                return Ok(ExitCode::FAILURE);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|(host, stored)| {
                    let entry = &stored.entry;
                    let cost = entry.cost.as_ref();
                    vec![
                        show(date(stored)),
                        host.clone(),
                        stored.seq.to_string(),
                        entry.component.clone(),
                        entry.event.clone(),
                        cost.map_or(String::new(), tokens_in),
                        cost.map_or(String::new(), tokens_out),
                        cost.map_or(String::new(), |cost| show_money(cost.micro_usd)),
                        entry.payload.clone(),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "TIME",
                    "HOST",
                    "SEQ",
                    "COMPONENT",
                    "EVENT",
                    "IN",
                    "OUT",
                    "COST",
                    "PAYLOAD",
                ],
                &[false, false, true, false, false, true, true, true, false],
                &rows,
                false,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Hosts => {
            let hosts = query::hosts(&mut client)?;
            if json {
                let hosts: Vec<Value> = hosts
                    .iter()
                    .map(|host| {
                        json!({
                            "host_id": host.host_id,
                            "last_seq": host.last_seq,
                            "local_seq": host.local_seq,
                            "lag_entries": (host.local_seq - host.last_seq).max(0),
                            "last_time": host.last_ts.map(rfc3339),
                            "forwarded_at": host.forwarded_at.map(rfc3339),
                            "checkpoint_size": host.checkpoint_size,
                            "refused": host.refused,
                            "conflicts": host.conflicts.iter().map(|conflict| json!({
                                "verifier_key": conflict.verifier_key,
                                "first_seen": rfc3339(conflict.first_seen),
                                "last_seen": rfc3339(conflict.last_seen),
                                "attempts": conflict.attempts,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", json!({ "hosts": hosts }))?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = hosts
                .iter()
                .map(|host| {
                    vec![
                        host.host_id.clone(),
                        host.last_seq.to_string(),
                        (host.local_seq - host.last_seq).max(0).to_string(),
                        host.forwarded_at
                            .map(show)
                            .unwrap_or_else(|| "never".into()),
                        host.checkpoint_size
                            .map_or_else(|| "none".into(), |size| size.to_string()),
                        match (&host.refused, host.conflicts.first()) {
                            (Some(reason), _) => format!("REFUSED: {reason}"),
                            (None, Some(other)) => format!(
                                "ok; CONFLICT: another log (key {}) asks to forward as this \
                                 host, refused {} times since {}",
                                other.verifier_key,
                                other.attempts,
                                show(other.first_seen)
                            ),
                            (None, None) => "ok".into(),
                        },
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "HOST",
                    "LAST SEQ",
                    "LAG",
                    "FORWARDED",
                    "CHECKPOINT",
                    "STATE",
                ],
                &[false, true, true, false, true, false],
                &rows,
                false,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Clear { host } => {
            let Some(cleared) = query::clear(&mut client, &host)? else {
                eprintln!("witness: no host {host:?} has forwarded to this database");
                return Ok(ExitCode::FAILURE);
            };
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "host_id": host,
                        "refusal": cleared.refusal,
                        "conflicts": cleared.conflicts,
                    })
                )?;
            } else {
                match &cleared.refusal {
                    Some(reason) => writeln!(
                        out,
                        "{}: lifted the refusal ({})",
                        printable(&host),
                        printable(reason)
                    )?,
                    None => writeln!(out, "{}: was not refused", printable(&host))?,
                }
                writeln!(
                    out,
                    "{}: forgot {} conflicting log{}",
                    printable(&host),
                    cleared.conflicts,
                    if cleared.conflicts == 1 { "" } else { "s" }
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Verify { host } => {
            let audits = audit::verify(&mut client, host.as_deref())?;
            let failed = audits.iter().any(|audit| audit.problem.is_some());
            if json {
                let hosts: Vec<Value> = audits
                    .iter()
                    .map(|audit| {
                        let (verdict, reason) = match &audit.problem {
                            None => ("intact", None),
                            Some(Problem::Refused(reason)) => ("refused", Some(reason)),
                            Some(Problem::Broken(reason)) => ("broken", Some(reason)),
                            Some(Problem::Conflict(reason)) => ("conflict", Some(reason)),
                        };
                        json!({
                            "host_id": audit.host_id,
                            "verdict": verdict,
                            "reason": reason,
                            "entries": audit.entries,
                            "checkpoints": audit.checkpoints,
                        })
                    })
                    .collect();
                writeln!(out, "{}", json!({ "hosts": hosts }))?;
            } else {
                for audit in &audits {
                    match &audit.problem {
                        None => writeln!(
                            out,
                            "{}: intact, {}, {} checkpoint{}",
                            printable(&audit.host_id),
                            crate::output::entries(audit.entries),
                            audit.checkpoints,
                            if audit.checkpoints == 1 { "" } else { "s" }
                        )?,
                        Some(problem) => writeln!(
                            out,
                            "{}: {} ({} checked)",
                            printable(&audit.host_id),
                            printable(&problem.to_string()),
                            crate::output::entries(audit.entries)
                        )?,
                    }
                }
                if audits.is_empty() {
                    writeln!(out, "no host has forwarded to this database")?;
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
