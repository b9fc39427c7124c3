//! `witness trace | traces | tail | cost | export`: the read side, as readable tables or, with
//! `--json`, one JSON document (or one JSON line per entry for `tail` and `export`).

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use witness_client::Client;
use witness_client::query::{
    CostQuery, CostReport, CostRow, EndReason, EntriesQuery, GroupBy, StoredEntry, StreamEnd,
    TraceQuery, TraceSummary, TracesQuery,
};

use crate::money::format_usd;
use crate::when::{duration, rfc3339, rfc3339_millis};

/// An entry as one JSON object with every stored field: the line format of `export`, which
/// `import` reads back. The payload is written as stored, byte for byte.
#[derive(serde::Serialize)]
pub struct ExportLine<'a> {
    seq: u64,
    time: String,
    ts: i64,
    event: &'a str,
    component: &'a str,
    trace_id: Option<&'a str>,
    payload: &'a serde_json::value::RawValue,
    cost: Option<ExportCost<'a>>,
    client_ts: Option<i64>,
    pid: Option<i64>,
    uid: Option<i64>,
    gid: Option<i64>,
    producer_id: Option<u64>,
    producer_number: Option<u64>,
    hash: String,
}

/// The cost of an `ExportLine`, in the fields `import` reads.
#[derive(serde::Serialize)]
struct ExportCost<'a> {
    tokens_in: u64,
    tokens_out: u64,
    cache_read_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    cost_micro_usd: u64,
    model: Option<&'a str>,
}

/// The stored payload, which the daemon checked as JSON; `null` should a file hold anything
/// else.
fn raw_payload(payload: &str) -> &serde_json::value::RawValue {
    serde_json::from_str(payload)
        .unwrap_or_else(|_| serde_json::from_str("null").expect("null is JSON"))
}

impl<'a> ExportLine<'a> {
    /// The line for one stored entry.
    pub fn new(stored: &'a StoredEntry) -> Self {
        let entry = &stored.entry;
        ExportLine {
            seq: stored.seq,
            time: rfc3339(stored.ts),
            ts: stored.ts,
            event: &entry.event,
            component: &entry.component,
            trace_id: entry.trace_id.as_deref(),
            payload: raw_payload(&entry.payload),
            cost: entry.cost.as_ref().map(|cost| ExportCost {
                tokens_in: cost.tokens_in,
                tokens_out: cost.tokens_out,
                cache_read_tokens: cost.cache_read_tokens,
                reasoning_tokens: cost.reasoning_tokens,
                cost_micro_usd: cost.micro_usd,
                model: cost.model.as_deref(),
            }),
            client_ts: entry.client_ts,
            pid: stored.pid,
            uid: stored.uid,
            gid: stored.gid,
            producer_id: stored.producer_id,
            producer_number: stored.producer_number,
            hash: hex::encode(stored.hash),
        }
    }
}

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
    })
}

/// Text from the log as it may be shown on a terminal: control characters (which could move
/// the cursor, recolour or retitle the operator's terminal) and the invisible marks that
/// reorder or hide text are written as `\u{…}` escapes; everything else as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            shown += &format!("\\u{{{:x}}}", c as u32);
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// One line of `tail` for people.
fn entry_line(stored: &StoredEntry) -> String {
    printable(&raw_entry_line(stored)).into_owned()
}

fn raw_entry_line(stored: &StoredEntry) -> String {
    let entry = &stored.entry;
    let mut line = format!(
        "{}  #{}  {}  {}",
        rfc3339_millis(stored.ts),
        stored.seq,
        entry.component,
        entry.event
    );
    if let Some(trace) = &entry.trace_id {
        line += &format!("  trace={trace}");
    }
    if let Some(cost) = &entry.cost {
        line += &format!(
            "  tokens={}/{} {}",
            cost.tokens_in,
            cost.tokens_out,
            format_usd(cost.micro_usd)
        );
        if let Some(model) = &cost.model {
            line += &format!(" {model}");
        }
    }
    if entry.payload != "{}" {
        line += "  ";
        line += &entry.payload;
    }
    line
}

/// Prints rows under headers, each column as wide as its widest cell; `right` marks the
/// numeric columns.
fn table(
    out: &mut impl Write,
    headers: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| printable(cell).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows[..];
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            let pad = widths[index].saturating_sub(cell.chars().count());
            let last = index + 1 == cells.len();
            if right[index] {
                text += &" ".repeat(pad);
                text += cell;
            } else {
                text += cell;
                if !last {
                    text += &" ".repeat(pad);
                }
            }
            if !last {
                text += "  ";
            }
        }
        text
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
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
        rfc3339_millis(summary.first_ts),
        rfc3339_millis(summary.last_ts),
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
        format_usd(summary.micro_usd)
    )?;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|stored| {
            let entry = &stored.entry;
            let cost = entry.cost.as_ref();
            vec![
                stored.seq.to_string(),
                rfc3339_millis(stored.ts),
                entry.component.clone(),
                entry.event.clone(),
                cost.map_or(String::new(), |cost| cost.tokens_in.to_string()),
                cost.map_or(String::new(), |cost| cost.tokens_out.to_string()),
                cost.map_or(String::new(), |cost| format_usd(cost.micro_usd)),
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
                rfc3339_millis(summary.first_ts),
                rfc3339_millis(summary.last_ts),
                duration(summary.last_ts - summary.first_ts),
                format_usd(summary.micro_usd),
            ]
        })
        .collect();
    table(
        &mut out,
        &["TRACE", "ENTRIES", "FIRST", "LAST", "DURATION", "COST"],
        &[false, true, false, false, true, true],
        &rows,
    )?;
    if let Some(before) = page.next_before {
        writeln!(out, "(more: --before {before})")?;
    }
    Ok(())
}

/// `witness cost`.
pub fn cost(client: &mut Client, query: CostQuery, json: bool) -> anyhow::Result<()> {
    let report = client.cost(query)?;
    let mut out = crate::output::stdout();
    if json {
        writeln!(out, "{}", cost_json(&report))?;
        return Ok(());
    }
    let name = match report.by {
        GroupBy::Component => "COMPONENT",
        GroupBy::Model => "MODEL",
        GroupBy::Event => "EVENT",
        GroupBy::Trace => "TRACE",
        GroupBy::Day => "DAY (UTC)",
        GroupBy::Hour => "HOUR (UTC)",
    };
    let cells = |key: String, row: &CostRow| {
        vec![
            key,
            row.entries.to_string(),
            row.tokens_in.to_string(),
            row.tokens_out.to_string(),
            format_usd(row.micro_usd),
        ]
    };
    let mut rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|row| cells(row.key.clone().unwrap_or_else(|| "(none)".into()), row))
        .collect();
    rows.push(cells("TOTAL".into(), &report.total));
    table(
        &mut out,
        &[name, "ENTRIES", "TOKENS IN", "TOKENS OUT", "COST"],
        &[false, true, true, true, true],
        &rows,
    )?;
    let shown = report.rows.len() as u64;
    if shown < report.groups {
        writeln!(
            out,
            "({} of {} groups shown; the total covers all: page with --offset)",
            shown, report.groups
        )?;
    }
    Ok(())
}

fn cost_json(report: &CostReport) -> Value {
    let row = |row: &CostRow| {
        json!({
            "key": row.key,
            "entries": row.entries,
            "tokens_in": row.tokens_in,
            "tokens_out": row.tokens_out,
            "cost_micro_usd": row.micro_usd,
            "cost_usd": format_usd(row.micro_usd).trim_start_matches('$'),
        })
    };
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
    let end = loop {
        let mut stream = client.entries(query.clone())?;
        for stored in stream.by_ref() {
            let stored = stored?;
            if as_json {
                serde_json::to_writer(&mut out, &ExportLine::new(&stored))?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", entry_line(&stored))?;
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

#[cfg(test)]
mod tests {
    use super::printable;

    fn check(text: &str, shown: &str) {
        assert_eq!(printable(text), shown, "{text:?}");
    }

    #[test]
    fn control_and_reordering_characters_are_escaped() {
        check("plain text, é ü 日本", "plain text, é ü 日本");
        check("a\u{1b}[2Jb", "a\\u{1b}[2Jb");
        check("title\u{1b}]0;pwned\u{7}", "title\\u{1b}]0;pwned\\u{7}");
        check("tab\there\r\n", "tab\\u{9}here\\u{d}\\u{a}");
        check("\u{202e}gnp.exe", "\\u{202e}gnp.exe");
        check("zero\u{200b}width", "zero\\u{200b}width");
        check("del\u{7f} c1\u{9b}", "del\\u{7f} c1\\u{9b}");
    }
}
