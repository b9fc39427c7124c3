//! The command line's presentation: tables fitted to their columns, every value from an
//! entry escaped before it reaches a terminal (an entry can move no cursor and retitle no
//! window), token counts and the cost table that `cost` and `fleet cost` share.

use std::io::Write;

use serde_json::{Value, json};
use witness_client::Cost;
use witness_client::query::{CostRow, StoredEntry};

use crate::money::format_usd;
use crate::output::bold;

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

/// A table printed under a header, each column as wide as its widest cell so far. Rows can
/// be printed as they come (`tail -f`), in which case a column widens when a wider cell
/// arrives; or all at once, aligned to the widest of them.
pub struct Columns<'a> {
    headers: &'a [&'a str],
    right: &'a [bool],
    widths: Vec<usize>,
    header_shown: bool,
}

impl<'a> Columns<'a> {
    pub fn new(headers: &'a [&'a str], right: &'a [bool]) -> Self {
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
    pub fn print(
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
        let widths = match crate::output::width() {
            Some(limit) => fit(&self.widths, self.headers, limit),
            None => self.widths.clone(),
        };
        let mut text = String::new();
        for (index, cell) in cells.enumerate() {
            let cell = &*cut(cell, widths[index]);
            let pad = widths[index].saturating_sub(cell.chars().count());
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
        match crate::output::width() {
            Some(limit) => cut(text.trim_end(), limit).into_owned(),
            None => text,
        }
    }
}

/// Column widths for a line of `limit` characters. The last column, a table's free text (a
/// payload, a reason), gives way first, down to its header's width; then any other column
/// wider than [`WIDE`] (a long trace id or component), widest first, down to that. Columns
/// of times, numbers and short names are never cut inside: when they alone are wider than
/// the terminal, [`Columns::line`] cuts the line's end instead, so that what shows stays
/// aligned and whole.
fn fit(widths: &[usize], headers: &[&str], limit: usize) -> Vec<usize> {
    let mut fitted = widths.to_vec();
    let Some(last) = fitted.len().checked_sub(1) else {
        return fitted;
    };
    let gaps = 2 * last;
    let line = |fitted: &[usize]| fitted.iter().sum::<usize>() + gaps;
    if line(&fitted) <= limit {
        return fitted;
    }
    let rest = line(&fitted) - fitted[last];
    let floor = headers[last].chars().count().min(widths[last]);
    fitted[last] = limit.saturating_sub(rest).max(floor);
    if line(&fitted) <= limit {
        return fitted;
    }
    // The highest level at which the wide columns, capped to it, fit; no lower than WIDE.
    let capped = |level: usize| -> Vec<usize> {
        let mut capped = fitted.clone();
        for width in &mut capped[..last] {
            if *width > WIDE {
                *width = (*width).min(level.max(WIDE));
            }
        }
        capped
    };
    let widest = fitted[..last].iter().copied().max().unwrap_or(0);
    let (mut low, mut high) = (WIDE, widest.max(WIDE));
    while low < high {
        let middle = (low + high).div_ceil(2);
        if line(&capped(middle)) <= limit {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    capped(low)
}

/// How wide a column other than the last may be when a line must be fitted.
const WIDE: usize = 32;

/// `cell` cut to `width` characters, its end replaced by "…" when anything was cut.
fn cut(cell: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if cell.chars().count() <= width {
        return std::borrow::Cow::Borrowed(cell);
    }
    let mut shown: String = cell.chars().take(width.saturating_sub(1)).collect();
    shown.push('…');
    std::borrow::Cow::Owned(shown)
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

/// A cost table: one row a group under `name` (`(none)` for a group without a value), then
/// the total in bold. `witness cost` and `witness fleet cost` print it. `UNPRICED` counts the
/// entries with tokens and no price, whose money `COST` cannot include.
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
            row.cache_write_tokens.to_string(),
            row.tokens_out.to_string(),
            row.reasoning_tokens.to_string(),
            format_usd(row.micro_usd),
            row.unpriced.to_string(),
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
            "CACHE WRITE",
            "TOKENS OUT",
            "REASONING",
            "COST",
            "UNPRICED",
        ],
        &[false, true, true, true, true, true, true, true, true],
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
        "cache_write_tokens": row.cache_write_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_micro_usd": row.micro_usd,
        "cost_usd": format_usd(row.micro_usd).trim_start_matches('$'),
        "unpriced": row.unpriced,
    })
}

#[cfg(test)]
mod tests {
    use super::{cut, fit, printable};

    fn check(text: &str, shown: &str) {
        assert_eq!(printable(text), shown, "{text:?}");
    }

    #[test]
    fn the_free_text_then_wide_columns_give_way_to_fit_a_line() {
        let headers = ["TIME", "TRACE", "PAYLOAD"];
        // Fits already: unchanged.
        assert_eq!(fit(&[8, 5, 20], &headers, 80), vec![8, 5, 20]);
        // 8 + 2 + 5 + 2 + 1000 into 40: the payload takes what is left.
        assert_eq!(fit(&[8, 5, 1000], &headers, 40), vec![8, 5, 23]);
        // A 128-character trace id gives way too, once the payload is at its header's width.
        assert_eq!(fit(&[8, 128, 1000], &headers, 60), vec![8, 41, 7]);
        // Never below WIDE, nor a short column at all: the line's end is cut instead.
        assert_eq!(fit(&[23, 128, 1000], &headers, 40), vec![23, 32, 7]);
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
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
