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

use witness_client::Cost;

use crate::money::format_usd;
use crate::output::bold;
use crate::when::{duration, rfc3339, show};

/// An entry as one JSON object with every stored field: the line format of `export`, which
/// `import` reads back. The payload is written as stored, byte for byte.
#[derive(serde::Serialize)]
pub struct ExportLine<'a> {
    seq: u64,
    /// The entry's date (`client_ts`, else `ts`) in RFC 3339: for people; `import` ignores it.
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
    /// Set when the entry is itself a copy: the original's fields, as stored.
    imported: Option<&'a serde_json::value::RawValue>,
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
            time: rfc3339(date(stored)),
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
            imported: entry.imported.as_deref().map(raw_payload),
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

/// The date of a stored entry: the client's own time where it gave one, else the receive
/// time, as the daemon dates it in every read.
pub fn date(stored: &StoredEntry) -> i64 {
    stored.entry.client_ts.unwrap_or(stored.ts)
}

/// Input tokens for a table, with the cached ones: `1200 (800 cached)`.
pub fn tokens_in(cost: &Cost) -> String {
    match cost.cache_read_tokens {
        Some(cached) if cached > 0 => format!("{} ({cached} cached)", cost.tokens_in),
        _ => cost.tokens_in.to_string(),
    }
}

/// Output tokens for a table, with the reasoning ones: `300 (120 reasoning)`.
pub fn tokens_out(cost: &Cost) -> String {
    match cost.reasoning_tokens {
        Some(reasoning) if reasoning > 0 => format!("{} ({reasoning} reasoning)", cost.tokens_out),
        _ => cost.tokens_out.to_string(),
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
        cost.map_or(String::new(), |cost| format_usd(cost.micro_usd)),
        cost.and_then(|cost| cost.model.clone()).unwrap_or_default(),
        if entry.payload == "{}" {
            String::new()
        } else {
            entry.payload.clone()
        },
    ]
}

/// A table printed under a header, each column as wide as its widest cell so far. Rows can
/// be printed as they come (`tail -f`), in which case a column widens when a wider cell
/// arrives; or all at once, aligned to the widest of them.
struct Columns<'a> {
    headers: &'a [&'a str],
    right: &'a [bool],
    widths: Vec<usize>,
    header_shown: bool,
}

impl<'a> Columns<'a> {
    fn new(headers: &'a [&'a str], right: &'a [bool]) -> Self {
        Columns {
            headers,
            right,
            widths: headers
                .iter()
                .map(|header| header.chars().count())
                .collect(),
            header_shown: false,
        }
    }

    /// Prints `rows`, aligned with each other and with the rows printed before; the header
    /// first, once. `bold_last` sets the last row off (a total).
    fn print(
        &mut self,
        out: &mut impl Write,
        rows: &[Vec<String>],
        bold_last: bool,
    ) -> std::io::Result<()> {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|cell| printable(cell).into_owned())
                    .collect()
            })
            .collect();
        for row in &rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if !self.header_shown {
            self.header_shown = true;
            let header = self.line(self.headers.iter().copied());
            writeln!(out, "{}", bold(&header))?;
        }
        for (index, row) in rows.iter().enumerate() {
            let line = self.line(row.iter().map(String::as_str));
            if bold_last && index + 1 == rows.len() {
                writeln!(out, "{}", bold(&line))?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        Ok(())
    }

    fn line<'c>(&self, cells: impl ExactSizeIterator<Item = &'c str>) -> String {
        let n = cells.len();
        let mut text = String::new();
        for (index, cell) in cells.enumerate() {
            let pad = self.widths[index].saturating_sub(cell.chars().count());
            let last = index + 1 == n;
            if self.right[index] {
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
    }
}

/// Prints rows under headers, each column as wide as its widest cell; `right` marks the
/// numeric columns.
pub fn table(
    out: &mut impl Write,
    headers: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
    bold_last: bool,
) -> std::io::Result<()> {
    Columns::new(headers, right).print(out, rows, bold_last)
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
        format_usd(summary.micro_usd)
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
                format_usd(summary.micro_usd),
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
    cost_table(&mut out, name, &report.rows, &report.total)?;
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

/// A cost table: one row a group under `name` (`(none)` for a group without a value), then
/// the total in bold. `witness cost` and `witness fleet cost` print it.
pub fn cost_table(
    out: &mut impl Write,
    name: &str,
    rows: &[CostRow],
    total: &CostRow,
) -> std::io::Result<()> {
    let cells = |key: String, row: &CostRow| {
        vec![
            key,
            row.entries.to_string(),
            row.tokens_in.to_string(),
            row.cache_read_tokens.to_string(),
            row.tokens_out.to_string(),
            row.reasoning_tokens.to_string(),
            format_usd(row.micro_usd),
        ]
    };
    let mut lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| cells(row.key.clone().unwrap_or_else(|| "(none)".into()), row))
        .collect();
    lines.push(cells("TOTAL".into(), total));
    table(
        out,
        &[
            name,
            "ENTRIES",
            "TOKENS IN",
            "CACHED",
            "TOKENS OUT",
            "REASONING",
            "COST",
        ],
        &[false, true, true, true, true, true, true],
        &lines,
        true,
    )
}

/// One group of a cost report as JSON, as `cost --json` and `fleet cost --json` write it.
pub fn cost_row_json(row: &CostRow) -> Value {
    json!({
        "key": row.key,
        "entries": row.entries,
        "tokens_in": row.tokens_in,
        "tokens_out": row.tokens_out,
        "cache_read_tokens": row.cache_read_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_micro_usd": row.micro_usd,
        "cost_usd": format_usd(row.micro_usd).trim_start_matches('$'),
    })
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
