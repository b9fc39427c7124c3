//! `witness trace | traces | tail | cost | export`: the read side, as readable tables or, with
//! `--json`, one JSON document (or one JSON line per entry for `tail` and `export`).

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use witness_client::Client;
use witness_client::query::{
    CostQuery, CostReport, EndReason, EntriesQuery, GroupBy, StoredEntry, StreamEnd, TraceQuery,
    TraceSummary, TracesQuery,
};

use crate::line::ExportLine;
use crate::money::{format_usd, show_money};
use crate::present::{
    Columns, cost_row_json, cost_table, date, printable, table, tokens_in, tokens_out,
};
use crate::when::{duration, rfc3339, show};

fn summary_json(summary: &TraceSummary) -> Value {
    json!({
        "trace_id": summary.trace_id,
        "entries": summary.entries,
        "first_seq": summary.first_seq,
        "last_seq": summary.last_seq,
        "first_time": rfc3339(summary.first_ts),
        "last_time": rfc3339(summary.last_ts),
        "duration_ms": (summary.last_ts - summary.first_ts) as f64 / 1e6,
        "components": summary.components,
        "tokens_in": summary.tokens_in,
        "tokens_out": summary.tokens_out,
        "cost_micro_usd": summary.micro_usd,
        "cost_usd": format_usd(summary.micro_usd).trim_start_matches('$'),
        "unpriced": summary.unpriced,
    })
}

/// A trace's money as a table shows it: the priced entries' sum, and how many entries it
/// leaves out for want of a price.
fn trace_money(summary: &TraceSummary) -> String {
    match summary.unpriced {
        0 => format_usd(summary.micro_usd),
        n => format!("{} + {n} unpriced", format_usd(summary.micro_usd)),
    }
}

/// The columns of `tail`.
const TAIL_HEADERS: [&str; 10] = [
    "TIME",
    "SEQ",
    "COMPONENT",
    "EVENT",
    "TRACE",
    "IN",
    "OUT",
    "COST",
    "MODEL",
    "PAYLOAD",
];

/// Which `tail` columns are numbers, set flush right.
const TAIL_RIGHT: [bool; 10] = [
    false, true, false, false, false, true, true, true, false, false,
];

/// One row of `tail`.
fn tail_row(stored: &StoredEntry) -> Vec<String> {
    let entry = &stored.entry;
    let cost = entry.cost.as_ref();
    vec![
        show(date(stored)),
        stored.seq.to_string(),
        entry.component.clone(),
        entry.event.clone(),
        entry.trace_id.clone().unwrap_or_default(),
        cost.map_or(String::new(), tokens_in),
        cost.map_or(String::new(), tokens_out),
        cost.map_or(String::new(), |cost| show_money(cost.micro_usd)),
        cost.and_then(|cost| cost.model.clone()).unwrap_or_default(),
        if entry.payload == "{}" {
            String::new()
        } else {
            entry.payload.clone()
        },
    ]
}

/// `witness trace ID`: the whole trace, page by page.
pub fn trace(client: &mut Client, trace_id: String, json: bool) -> anyhow::Result<bool> {
    let mut query = TraceQuery {
        trace_id: trace_id.clone(),
        after_seq: None,
        limit: 1000,
    };
    let mut summary = None;
    let mut entries = Vec::new();
    loop {
        let report = client.trace(query.clone())?;
        summary = summary.or(report.summary);
        entries.extend(report.entries);
        match report.next_after {
            Some(next) => query.after_seq = Some(next),
            None => break,
        }
    }
    let mut out = crate::output::stdout();
    let Some(summary) = summary else {
        if json {
            writeln!(out, "{}", json!({"summary": null, "entries": []}))?;
        } else {
            eprintln!("witness: no entry has trace id {trace_id:?}");
        }
        return Ok(false);
    };
    if json {
        let entries: Vec<ExportLine<'_>> = entries.iter().map(ExportLine::new).collect();
        let document = json!({"summary": summary_json(&summary), "entries": entries});
        writeln!(out, "{document}")?;
        return Ok(true);
    }
    writeln!(
        out,
        "trace {}: {}, {} to {} ({})",
        printable(&summary.trace_id),
        crate::output::entries(summary.entries),
        show(summary.first_ts),
        show(summary.last_ts),
        duration(summary.last_ts - summary.first_ts)
    )?;
    writeln!(
        out,
        "components: {}",
        printable(&summary.components.join(", "))
    )?;
    writeln!(
        out,
        "tokens: {} in, {} out; cost {}\n",
        summary.tokens_in,
        summary.tokens_out,
        trace_money(&summary)
    )?;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|stored| {
            let entry = &stored.entry;
            let cost = entry.cost.as_ref();
            vec![
                stored.seq.to_string(),
                show(date(stored)),
                entry.component.clone(),
                entry.event.clone(),
                cost.map_or(String::new(), tokens_in),
                cost.map_or(String::new(), tokens_out),
                cost.map_or(String::new(), |cost| show_money(cost.micro_usd)),
                cost.and_then(|cost| cost.model.clone()).unwrap_or_default(),
                entry.payload.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "SEQ",
            "TIME",
            "COMPONENT",
            "EVENT",
            "IN",
            "OUT",
            "COST",
            "MODEL",
            "PAYLOAD",
        ],
        &[true, false, false, false, true, true, true, false, false],
        &rows,
        false,
    )?;
    Ok(true)
}

/// `witness traces`: one page of traces by last activity.
pub fn traces(client: &mut Client, query: TracesQuery, json: bool) -> anyhow::Result<()> {
    let page = client.traces(query)?;
    let mut out = crate::output::stdout();
    if json {
        let traces: Vec<Value> = page.traces.iter().map(summary_json).collect();
        writeln!(
            out,
            "{}",
            json!({"traces": traces, "next_before": page.next_before})
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .traces
        .iter()
        .map(|summary| {
            vec![
                summary.trace_id.clone(),
                summary.entries.to_string(),
                show(summary.first_ts),
                show(summary.last_ts),
                duration(summary.last_ts - summary.first_ts),
                trace_money(summary),
            ]
        })
        .collect();
    table(
        &mut out,
        &["TRACE", "ENTRIES", "FIRST", "LAST", "DURATION", "COST"],
        &[false, true, false, false, true, true],
        &rows,
        false,
    )?;
    if let Some(before) = page.next_before {
        writeln!(out, "(more: --before {before})")?;
    }
    Ok(())
}

/// `witness cost`.
pub fn cost(client: &mut Client, query: CostQuery, json: bool) -> anyhow::Result<()> {
    let report = client.cost(query.clone())?;
    let unpriced = if report.total.unpriced > 0 {
        crate::prices::unpriced_of(client, query)?
    } else {
        Vec::new()
    };
    let mut out = crate::output::stdout();
    if json {
        let mut value = cost_json(&report);
        value["unpriced_models"] = unpriced
            .iter()
            .map(|(model, entries)| json!({"model": model, "entries": entries}))
            .collect();
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let mut name = report.by.name().to_uppercase();
    if matches!(report.by, GroupBy::Day | GroupBy::Hour) {
        name.push_str(" (UTC)");
    }
    cost_table(&mut out, &name, &report.rows, &report.total)?;
    let shown = report.rows.len() as u64;
    if shown < report.groups {
        writeln!(
            out,
            "({} of {} groups shown; the total covers all: page with --offset)",
            shown, report.groups
        )?;
    }
    if let Some(note) = crate::prices::unpriced_note(&unpriced) {
        writeln!(out, "{note}")?;
    }
    Ok(())
}

fn cost_json(report: &CostReport) -> Value {
    let row = cost_row_json;
    json!({
        "by": format!("{:?}", report.by).to_lowercase(),
        "rows": report.rows.iter().map(row).collect::<Vec<_>>(),
        "groups": report.groups,
        "total": row(&report.total),
    })
}

/// `witness tail` and `witness export`: entries as lines, as they arrive. Returns whether the
/// stream ended as asked (a cut-off or a stop of the daemon is reported and fails).
pub fn stream(client: &mut Client, mut query: EntriesQuery, as_json: bool) -> anyhow::Result<bool> {
    let follow = query.follow;
    let mut out = std::io::BufWriter::new(crate::output::stdout());
    let mut columns = Columns::new(&TAIL_HEADERS, &TAIL_RIGHT);
    // A one-off listing is aligned as a whole; a follower prints each row as it comes.
    let mut rows = Vec::new();
    let end = loop {
        let mut stream = client.entries(query.clone())?;
        for stored in stream.by_ref() {
            let stored = stored?;
            if as_json {
                serde_json::to_writer(&mut out, &ExportLine::new(&stored))?;
                out.write_all(b"\n")?;
            } else if follow {
                columns.print(&mut out, &[tail_row(&stored)], false)?;
            } else {
                rows.push(tail_row(&stored));
            }
            // A follower shows each entry as it comes; a one-off listing writes in bulk.
            if follow {
                out.flush()?;
            }
        }
        let end = stream.end();
        drop(stream);
        match end {
            // Like journalctl -f across a restart of journald: wait for the daemon (the
            // client reconnects, and under socket activation the socket never went away)
            // and go on from the last entry shown.
            Some(StreamEnd {
                reason: EndReason::ShuttingDown,
                next_after,
            }) if follow => {
                out.flush()?;
                eprintln!(
                    "witness: the daemon is stopping; following again once it is back \
                     (or resume later with --after {})",
                    next_after.unwrap_or(0)
                );
                query.filter.after_seq = next_after.or(query.filter.after_seq);
                query.newest = None;
            }
            end => break end,
        }
    };
    if !as_json && !follow && !rows.is_empty() {
        columns.print(&mut out, &rows, false)?;
    }
    out.flush().context("writing to standard output")?;
    match end.map(|end| (end.reason, end.next_after)) {
        Some((EndReason::Complete | EndReason::Limit, _)) | None => Ok(true),
        Some((EndReason::ShuttingDown, next)) => {
            eprintln!(
                "witness: the daemon is stopping; resume with --after {}",
                next.unwrap_or(0)
            );
            Ok(false)
        }
        Some((EndReason::CutOff, next)) => {
            eprintln!(
                "witness: the daemon cut this stream off because it did not read for too \
                 long; nothing is lost, resume with --after {}",
                next.unwrap_or(0)
            );
            Ok(false)
        }
    }
}
