//! Standard output, and the one failure of it that is not an error: a reader that has gone
//! (`witness tail | head`). Every other failure, a broken socket to the daemon above all,
//! must fail the command, so a closed stdout is marked where it happens rather than guessed
//! from an error's kind afterwards.

use std::io::{self, Write};

/// Standard output, locked, whose broken-pipe errors say that stdout was closed.
pub struct Stdout(io::StdoutLock<'static>);

/// Marks an error as standard output having been closed by its reader.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Marks an error as the command being unusable as given (an argument's value that is not
/// one, a file that cannot be read): it exits 2, as clap's own usage errors do, and not the 1
/// of a command that ran and failed.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// True when `error` says the command could not be run as given.
pub fn is_usage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Usage>())
}

/// Standard output for the command's results.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

fn mark(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        error
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

/// True when `error` is standard output closed by its reader, which ends the command quietly
/// and successfully, as `cat` does; nothing else does.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// Prints `value` as one line of JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = stdout();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Whether tables are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Color {
    /// When standard output is a terminal and `NO_COLOR` is not set (no-color.org).
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

static COLORED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Decides, once, whether tables are coloured.
pub fn set_color(color: Color) {
    use std::io::IsTerminal;
    let on = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
                && std::env::var_os("TERM").is_none_or(|term| term != "dumb")
        }
    };
    let _ = COLORED.set(on);
}

static WIDTH: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();

/// Decides, once, how wide a table's line may be: on a terminal, its width (`COLUMNS` when
/// set, as `less` and journalctl read it, else the terminal's own; 80 if neither says),
/// unless `full`; to a pipe or a file, or with `full`, no limit, so that what a script reads
/// is always whole.
pub fn set_width(full: bool) {
    use std::io::IsTerminal;
    let width = if full || !io::stdout().is_terminal() {
        None
    } else {
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .filter(|columns| *columns > 0);
        Some(columns.or_else(terminal_columns).unwrap_or(80))
    };
    let _ = WIDTH.set(width);
}

/// The terminal's width in columns, as the kernel knows it for standard output.
fn terminal_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given, and only that.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let asked = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (asked == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// How wide a table's line may be, as [`set_width`] decided: `None` for no limit.
pub fn width() -> Option<usize> {
    *WIDTH.get().unwrap_or(&None)
}

/// `text` in bold, when tables are coloured.
pub fn bold(text: &str) -> String {
    paint(text, "1")
}

/// `text` with the SGR attribute `code`, when tables are coloured. The text is the table's,
/// already made printable, so no escape of the log's own can reach the terminal.
pub fn paint(text: &str, code: &str) -> String {
    if *COLORED.get().unwrap_or(&false) && !text.is_empty() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// `n` entries, said as a person would: `1 entry`, `2 entries`.
pub fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".to_owned()
    } else {
        format!("{n} entries")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_is_not_one_entries() {
        assert_eq!(entries(1), "1 entry");
        assert_eq!(entries(0), "0 entries");
        assert_eq!(entries(2), "2 entries");
    }

    #[test]
    fn only_a_closed_stdout_is_quiet() {
        let closed = anyhow::Error::from(mark(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(is_stdout_closed(&closed.context("writing a line")));
        // The daemon's socket breaking while a receipt is awaited is an error, whatever kind
        // of I/O error carried it.
        let socket = witness_client::Error::Disconnected {
            path: "/run/witness/witness.sock".into(),
            waited: std::time::Duration::from_secs(1),
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        };
        assert!(!is_stdout_closed(&anyhow::Error::from(socket)));
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!is_stdout_closed(&other));
    }
}
