//! The command line's grammar: every command, flag and argument, with the help text clap
//! prints. What each command does is in the file named for it.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use witness_client::query::{CostQuery, Filter, GroupBy};
use witness_daemon::fleet::query::CostBy;

use crate::{money, output, when};

/// The heading global options are listed under in every command's help, apart from the
/// command's own.
const GLOBAL: &str = "Global options";

/// Record and inspect events in a witnessd log.
#[derive(Debug, Parser)]
#[command(name = "witness", version)]
pub struct Args {
    /// The daemon's socket [default: $WITNESS_SOCKET, else the user's daemon's, else the
    /// system service's /run/witness/witness.sock].
    #[arg(long, global = true, value_name = "PATH", env = "WITNESS_SOCKET", help_heading = GLOBAL)]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// How tables show times: in the local time zone, in UTC, or relative to now ("5 min
    /// ago"). JSON always says RFC 3339 in UTC.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value = "local",
        value_name = "HOW"
    )]
    pub time: when::Shown,
    /// Show times in UTC: the same as --time utc.
    #[arg(long, global = true, conflicts_with = "time", help_heading = GLOBAL)]
    pub utc: bool,
    /// Colour in tables: on a terminal (unless NO_COLOR is set), always, or never.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: output::Color,
    /// Show every cell of a table whole. On a terminal, tables are otherwise cut to its
    /// width, a long cell ending in "…" (as journalctl does); to a pipe or a file, and with
    /// --json, everything is always whole.
    #[arg(long, short = 'l', global = true, help_heading = GLOBAL)]
    pub full: bool,
    /// Seconds a command may wait for the daemon in all, however often the connection breaks
    /// and comes back. `tail`, `export`, `import`, `verify` and `archive`, which run as long
    /// as their data, bound each wait instead; `tail -f` waits for new entries without it.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30, help_heading = GLOBAL,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the daemon answers, and how fast.
    Ping,
    /// Record one entry and print its receipt once it is durable.
    Log(LogArgs),
    /// Record JSON lines from a file, or from standard input with "-".
    Import {
        /// The file, or "-" for standard input.
        file: PathBuf,
        /// Record the valid lines and list the invalid ones, instead of recording nothing.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Recompute the hash chain and report the first entry that does not match.
    Verify {
        /// First sequence number to check.
        #[arg(long)]
        from: Option<u64>,
        /// Last sequence number to check.
        #[arg(long)]
        to: Option<u64>,
        /// Verify this database file directly, read-only, with no daemon.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Also hold the database (--db, or the default one) to this signed checkpoint: its
        /// first entries must be exactly the tree the checkpoint signed.
        #[arg(long, value_name = "FILE", requires = "key", conflicts_with_all = ["from", "to"])]
        checkpoint: Option<PathBuf>,
        /// The log's verifier key for --checkpoint, or a file holding it.
        #[arg(long, value_name = "KEY", requires = "checkpoint")]
        key: Option<String>,
        /// Verify the database (--db, or the default one) and the archive segments in this
        /// folder as one log from seq 1: each segment as sealed, unbroken from the one before,
        /// and hashing to the tree the live log kept. Names a missing or altered segment.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["from", "to"])]
        with_archives: Option<PathBuf>,
    },
    /// The archive segments retention sealed: list, verify, export (files read directly).
    #[command(subcommand)]
    Archive(Archive),
    /// Every entry of one trace, with a summary.
    Trace {
        /// The trace id.
        trace_id: String,
    },
    /// Traces (sessions), the most recently active first.
    Traces {
        #[command(flatten)]
        window: WindowArgs,
        /// Only traces in which this component took part.
        #[arg(long)]
        component: Option<String>,
        /// How many traces.
        #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// The next page: traces whose last entry is below this seq.
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
    },
    /// The latest entries; with -f, new entries as they are committed.
    Tail {
        /// How many of the latest entries to show first.
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: u32,
        /// Keep going: print entries as they are committed, until interrupted.
        #[arg(short = 'f', long, conflicts_with = "until")]
        follow: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this seq instead of with the latest entries.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
    },
    /// Entries, tokens and money per group, with a total.
    Cost(CostArgs),
    /// The price the daemon gives a model's calls (what matched, the rates and the date they
    /// hold from), or, with `--unpriced`, the models in the log that have no price.
    Prices(PricesArgs),
    /// The configured budgets: spend this period, limit, fraction used, and the spend the
    /// period will end at if it goes on at the rate so far.
    Budgets,
    /// A one-time link that logs this user in to the daemon's dashboard (`web_listen`),
    /// with what this user may read; it works once, within two minutes.
    Web {
        /// Open the link in the desktop's browser (`xdg-open`) as well as printing it.
        #[arg(long)]
        open: bool,
    },
    /// The latest checkpoint the daemon signed: a C2SP signed note of the log's size and
    /// Merkle root.
    Checkpoint,
    /// The log's verifier key, which checks its checkpoints: `<name>+<key id>+<key>`.
    Key,
    /// Print a completion script for a shell, such as
    /// `witness completions bash > /etc/bash_completion.d/witness`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), such as `witness man > witness.1`.
    Man,
    /// A proof bundle (C2SP tlog-proof) that an entry is in the log: its index, its inclusion
    /// proof and the signed checkpoint, checkable offline with `verify-proof`.
    Prove {
        /// The entry's sequence number.
        seq: u64,
        /// Write the bundle to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Prove that the log grew only by appends: from the tree of OLD_SIZE entries (or of a
    /// checkpoint you kept) to the signed checkpoint of NEW_SIZE (the latest by default).
    /// Exits 0 if consistent, 1 if not.
    Consistency {
        /// The older tree's size; taken from --checkpoint when given.
        #[arg(required_unless_present = "checkpoint")]
        old_size: Option<u64>,
        /// The size of a signed checkpoint to prove against [default: the latest].
        new_size: Option<u64>,
        /// A checkpoint you kept (the older tree): its size and root are what is proved.
        #[arg(
            long,
            value_name = "FILE",
            requires = "key",
            conflicts_with = "old_size"
        )]
        checkpoint: Option<PathBuf>,
        /// The log's verifier key, or a file holding it [default: the one the daemon
        /// reports].
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Check a proof bundle with no daemon and no database: the checkpoint is signed by the
    /// key, and the entry is in the tree it signed. Exits 0 if so, 1 if not, 2 for a file or
    /// key that cannot be read.
    VerifyProof {
        /// The bundle, or "-" for standard input.
        file: PathBuf,
        /// The log's verifier key, or a file holding it (such as witness.key.pub).
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The entry the bundle should prove, as JSON: its event, component, trace_id and
        /// payload (and seq, if given) must be the bundle's.
        #[arg(long, value_name = "JSON")]
        entry: Option<String>,
    },
    /// Where the daemon keeps the log and its files: all of them, or the one named, alone on
    /// a line for a shell: `witness verify --db "$(witness where db)"`.
    Where {
        /// The one file to print.
        #[arg(value_enum)]
        file: Option<WhereFile>,
    },
    /// What clients kept in this user's spool because the daemon could not be reached when
    /// they closed: the files waiting, or, with `--deliver`, deliver them now (each entry
    /// once, however often delivery is tried).
    Spool {
        /// Deliver the files to the daemon instead of listing them.
        #[arg(long)]
        deliver: bool,
    },
    /// The daemon's health: throughput, queue, latencies, connections, sizes, memory, and
    /// where the log is.
    Stats {
        /// Print the Prometheus text format instead of a table.
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
    /// Work on the database while the daemon runs (as the daemon's user or root).
    #[command(subcommand)]
    Maintenance(Maintenance),
    /// The fleet: every host's log in one PostgreSQL (see docs/FLEET.md).
    Fleet(FleetArgs),
    /// Entries as JSON lines with every stored field; `witness import` reads them back.
    Export {
        /// First seq to export.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// Last seq to export.
        #[arg(long, value_name = "SEQ")]
        to: Option<u64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Stop after this many entries.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
}

/// `witness fleet`: the fleet's PostgreSQL.
#[derive(Debug, ClapArgs)]
pub struct FleetArgs {
    /// The fleet's PostgreSQL (required): a postgresql:// URL or a libpq key=value string
    /// (sslmode and sslrootcert as libpq reads them).
    // Global, so that it may follow the subcommand as --json does; clap's global arguments
    // cannot be required, so `fleet::run` says when it is missing.
    #[arg(
        long,
        global = true,
        env = "WITNESS_POSTGRES",
        value_name = "URL",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
    /// A password file in libpq's .pgpass format [default: $PGPASSFILE, else ~/.pgpass].
    #[arg(long, global = true, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// The `witness fleet` commands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Entries, tokens and money per group across hosts, with a total.
    Cost {
        /// What to group by.
        #[arg(long, value_enum, default_value = "host")]
        by: CostBy,
        /// Only entries dated since this time.
        #[arg(long, value_name = "TIME", value_parser = when::parse_time, allow_hyphen_values = true)]
        since: Option<i64>,
        /// Only entries dated before this time.
        #[arg(long, value_name = "TIME", value_parser = when::parse_time, allow_hyphen_values = true)]
        until: Option<i64>,
    },
    /// One trace's entries from every host, in time order.
    Trace {
        /// The trace id.
        trace_id: String,
        /// Most entries shown.
        #[arg(long, short = 'n', default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        limit: i64,
    },
    /// Every host: the last seq the centre holds, how far behind it is, its latest
    /// checkpoint, whether the centre refuses it, and other logs that asked to forward
    /// under its id.
    Hosts,
    /// Check every host's copy from its rows: chain, tree, signed checkpoints, watermark.
    /// Fails naming each host that was refused, does not verify, or has a conflict.
    Verify {
        /// Only this host.
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
    },
    /// Lift a host's refusal and forget the logs that conflicted with it, once they are
    /// dealt with; a host still refused for cause is refused again at its next batch.
    Clear {
        /// The host.
        host: String,
    },
}

/// `witness archive` commands.
#[derive(Debug, Subcommand)]
pub enum Archive {
    /// Every range the log pruned: its segment file, range, size, when sealed, and whether
    /// the file is there as sealed.
    List {
        /// The archive folder (retain.archive_dir).
        dir: PathBuf,
        /// The live database; unset: the default one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Verify each segment file in the folder on its own: its chain from the hash it records
    /// before it, every entry of its range, and its tiles. For the segments and the live log
    /// as one log, use `witness verify --with-archives`.
    Verify {
        /// The archive folder.
        dir: PathBuf,
    },
    /// The entries of segment files as JSON lines, as `witness export` writes them.
    Export {
        /// Segment files, in the order wanted.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `witness maintenance` tasks.
#[derive(Debug, Subcommand)]
pub enum Maintenance {
    /// Refresh the query planner's statistics (a bounded ANALYZE; ingest waits milliseconds).
    Analyze,
    /// Write a consistent, compacted copy of the database (VACUUM INTO) while ingest goes on.
    Backup {
        /// The new file; the daemon's user writes it, so it must be a place that user may
        /// write (under systemd: /var/lib/witness/). It must not exist.
        path: PathBuf,
    },
    /// Prune the oldest entries from the live log now, sealing them into archive segments in
    /// retain.archive_dir first. Whole tiles of 256 entries go, and never the last entry.
    Prune {
        /// Prune entries before this seq, or dated (or received) before this time (RFC 3339,
        /// or a span back from now such as 30d).
        #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true)]
        before: String,
        /// With no archive folder configured, delete the entries anyway (the log records
        /// each range it drops).
        #[arg(long)]
        drop: bool,
    },
}

/// A window of dates, for the commands that take one.
#[derive(Debug, ClapArgs)]
pub struct WindowArgs {
    /// Only what is dated since this time.
    #[arg(long, value_name = "TIME", value_parser = when::parse_time, allow_hyphen_values = true)]
    pub since: Option<i64>,
    /// Only what is dated before this time.
    #[arg(long, value_name = "TIME", value_parser = when::parse_time, allow_hyphen_values = true)]
    pub until: Option<i64>,
}

/// What `witness prices` shows.
#[derive(Debug, ClapArgs)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["model", "unpriced"]))]
pub struct PricesArgs {
    /// The model's name, as entries carry it.
    pub model: Option<String>,
    /// The provider, when it matters (OpenTelemetry's `gen_ai.provider.name`).
    #[arg(long, requires = "model")]
    pub provider: Option<String>,
    /// The price on this date (default: now).
    #[arg(long, value_name = "TIME", value_parser = when::parse_time, allow_hyphen_values = true, requires = "model")]
    pub at: Option<i64>,
    /// List the models of the log's entries that have no price, with how many entries each.
    #[arg(long, conflicts_with = "model")]
    pub unpriced: bool,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// What `witness cost` reports.
#[derive(Debug, ClapArgs)]
pub struct CostArgs {
    /// What to group by: component, model, event, trace, or the UTC day or hour of each
    /// entry's date (those two in time order).
    #[arg(long, default_value = "component", value_parser = group_by())]
    by: GroupBy,
    #[command(flatten)]
    window: WindowArgs,
    /// Only entries of this component.
    #[arg(long)]
    component: Option<String>,
    /// Only entries of this event.
    #[arg(long)]
    event: Option<String>,
    /// Only entries of this model.
    #[arg(long)]
    model: Option<String>,
    /// How many groups, the most expensive first.
    #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Groups to skip, to see the next page.
    #[arg(long, default_value_t = 0)]
    offset: u64,
}

impl CostArgs {
    /// The request these flags make.
    pub fn into_query(self) -> CostQuery {
        CostQuery {
            by: self.by,
            since: self.window.since,
            until: self.window.until,
            component: self.component,
            event: self.event,
            model: self.model,
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// Narrows `tail` and `export`.
#[derive(Debug, ClapArgs)]
pub struct FilterArgs {
    /// Only entries of this component.
    #[arg(long)]
    pub component: Option<String>,
    /// Only entries of this event.
    #[arg(long)]
    pub event: Option<String>,
    /// Only entries of this trace.
    #[arg(long, value_name = "ID")]
    pub trace: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
}

impl FilterArgs {
    /// The query filter these flags select.
    pub fn into_filter(self) -> Filter {
        Filter {
            component: self.component,
            event: self.event,
            trace_id: self.trace,
            since: self.window.since,
            until: self.window.until,
            ..Filter::default()
        }
    }
}

/// The value parser of `--by`: the names `GroupBy` gives, listed in `--help` and
/// completions.
fn group_by() -> impl clap::builder::TypedValueParser<Value = GroupBy> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(GroupBy::ALL.map(GroupBy::name))
        .map(|name| name.parse::<GroupBy>().expect("a name GroupBy gave"))
}

/// The entry `witness log` records.
#[derive(Debug, ClapArgs)]
pub struct LogArgs {
    /// What happened, such as llm_call.
    #[arg(long)]
    pub event: String,
    /// What did it, such as billing.
    #[arg(long)]
    pub component: String,
    /// The trace, request or session it belongs to.
    #[arg(long)]
    pub trace: Option<String>,
    /// JSON payload.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// Input tokens.
    #[arg(long, value_name = "N")]
    pub tokens_in: Option<u64>,
    /// Output tokens.
    #[arg(long, value_name = "N")]
    pub tokens_out: Option<u64>,
    /// Input tokens read from a prompt cache.
    #[arg(long, value_name = "N")]
    pub cache_read_tokens: Option<u64>,
    /// Input tokens written to a prompt cache (of them, `--cache-write-1h-tokens` for an
    /// hour).
    #[arg(long, value_name = "N")]
    pub cache_write_tokens: Option<u64>,
    /// Of the cache-write tokens, those written for an hour.
    #[arg(long, value_name = "N", requires = "cache_write_tokens")]
    pub cache_write_1h_tokens: Option<u64>,
    /// Output tokens spent reasoning.
    #[arg(long, value_name = "N")]
    pub reasoning_tokens: Option<u64>,
    /// Money spent, in dollars, such as 0.0015, rounded half up to the micro-dollar as
    /// import rounds it (so a float printed by a program, 0.30000000000000004, is
    /// $0.300000); without it, the daemon prices the call from `--model` and the tokens, or
    /// records it unpriced.
    #[arg(long, value_name = "DOLLARS", value_parser = money::round_usd)]
    pub cost_usd: Option<u64>,
    /// The model that answered.
    #[arg(long)]
    pub model: Option<String>,
}

/// The files `witness where` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhereFile {
    /// The database.
    Db,
    /// The daemon's socket.
    Socket,
    /// The signing key.
    Key,
    /// The verifier key, for `verify-proof --key` and `verify --key`.
    VerifierKey,
    /// The latest signed checkpoint.
    Checkpoint,
    /// The acknowledged mark.
    Acked,
    /// The archive folder (an error when retention does not archive).
    Archives,
}
