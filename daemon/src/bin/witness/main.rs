//! `witness`: the command line of witnessd, as journalctl is to journald. Every command
//! speaks to the daemon over its socket, except `verify --db`, which reads a database file
//! directly and read-only. Times are RFC 3339 or a span back from now (`15m`, `2h`, `7d`).

mod admin;
mod import;
mod money;
mod output;
mod read;
mod when;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde_json::json;
use witness_client::query::{CostQuery, EntriesQuery, Filter, GroupBy, TracesQuery};
use witness_client::{Client, Cost, Entry, VerifyRange, VerifyReport, paths};

/// Record and inspect events in a witnessd log.
#[derive(Debug, Parser)]
#[command(name = "witness", version)]
struct Args {
    /// The daemon's socket [default: $WITNESS_SOCKET, else the user's daemon's, else the
    /// system service's /run/witness/witness.sock].
    #[arg(long, global = true, value_name = "PATH", env = "WITNESS_SOCKET")]
    socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the daemon: to connect, for each answer, and for it to come
    /// back after a lost connection. `tail -f` waits for new entries without this bound.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    },
    /// Every entry of one trace, with a summary.
    Trace {
        /// The trace id.
        trace_id: String,
    },
    /// Traces (sessions), the most recently active first.
    Traces {
        /// Only traces active since this time.
        #[arg(long, value_name = "TIME", value_parser = when::parse_time)]
        since: Option<i64>,
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
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this seq instead of with the latest entries.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
    },
    /// Entries, tokens and money per group, with a total.
    Cost {
        /// What to group by.
        #[arg(long, value_enum, default_value = "component")]
        by: By,
        /// Only entries received since this time.
        #[arg(long, value_name = "TIME", value_parser = when::parse_time)]
        since: Option<i64>,
        /// Only entries received before this time.
        #[arg(long, value_name = "TIME", value_parser = when::parse_time)]
        until: Option<i64>,
        /// Only entries of this component.
        #[arg(long)]
        component: Option<String>,
        /// How many groups, the most expensive first.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Groups to skip, to see the next page.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// The daemon's health: throughput, queue, latencies, connections, sizes, memory.
    Stats {
        /// Print the Prometheus text format instead of a table.
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
    /// Work on the database while the daemon runs (as the daemon's user or root).
    #[command(subcommand)]
    Maintenance(Maintenance),
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
        /// Only entries received before this time.
        #[arg(long, value_name = "TIME", value_parser = when::parse_time)]
        until: Option<i64>,
        /// Stop after this many entries.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
}

/// `witness maintenance` tasks.
#[derive(Debug, Subcommand)]
enum Maintenance {
    /// Refresh the query planner's statistics (a bounded ANALYZE; ingest waits milliseconds).
    Analyze,
    /// Write a consistent, compacted copy of the database (VACUUM INTO) while ingest goes on.
    Backup {
        /// The new file; the daemon's user writes it, so it must be a place that user may
        /// write (under systemd: /var/lib/witness/). It must not exist.
        path: PathBuf,
    },
}

/// Narrows `tail` and `export`.
#[derive(Debug, ClapArgs)]
struct FilterArgs {
    /// Only entries of this component.
    #[arg(long)]
    component: Option<String>,
    /// Only entries of this event.
    #[arg(long)]
    event: Option<String>,
    /// Only entries of this trace.
    #[arg(long, value_name = "ID")]
    trace: Option<String>,
    /// Only entries received since this time.
    #[arg(long, value_name = "TIME", value_parser = when::parse_time)]
    since: Option<i64>,
}

impl FilterArgs {
    /// The query filter these flags and `until` select.
    fn into_filter(self, until: Option<i64>) -> Filter {
        Filter {
            component: self.component,
            event: self.event,
            trace_id: self.trace,
            since: self.since,
            until,
            ..Filter::default()
        }
    }
}

/// What `cost` groups by.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum By {
    Component,
    Model,
    Event,
    Trace,
}

#[derive(Debug, ClapArgs)]
struct LogArgs {
    /// What happened, such as llm_call.
    #[arg(long)]
    event: String,
    /// What did it, such as billing.
    #[arg(long)]
    component: String,
    /// The trace, request or session it belongs to.
    #[arg(long)]
    trace: Option<String>,
    /// JSON payload.
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Input tokens.
    #[arg(long, value_name = "N")]
    tokens_in: Option<u64>,
    /// Output tokens.
    #[arg(long, value_name = "N")]
    tokens_out: Option<u64>,
    /// Input tokens read from a prompt cache.
    #[arg(long, value_name = "N")]
    cache_read_tokens: Option<u64>,
    /// Output tokens spent reasoning.
    #[arg(long, value_name = "N")]
    reasoning_tokens: Option<u64>,
    /// Money spent, in dollars (exact to the micro-dollar), such as 0.0015.
    #[arg(long, value_name = "DOLLARS", value_parser = money::parse_usd)]
    cost_usd: Option<u64>,
    /// The model that answered.
    #[arg(long)]
    model: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            // Only a reader that stopped reading ends a command quietly; a broken socket to
            // the daemon never does, or a script would take a lost entry for a stored one.
            if output::is_stdout_closed(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("witness: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(paths::client_socket_path);
    let wait = std::time::Duration::from_secs(args.timeout);
    let options = witness_client::Options {
        reconnect_timeout: wait,
        connect_timeout: wait,
        answer_timeout: Some(wait),
        ..witness_client::Options::default()
    };
    let connect = || Client::connect_with(&socket, options.clone());
    let json = args.json;
    match args.command {
        Command::Ping => {
            let mut client = connect()?;
            let elapsed = client.ping()?;
            let server = client.server().server.clone();
            if json {
                print_json(
                    &json!({"server": server, "round_trip_us": elapsed.as_micros() as u64}),
                )?;
            } else {
                writeln!(
                    output::stdout(),
                    "{server} answered in {} µs",
                    elapsed.as_micros()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Log(log) => {
            let entry = entry_from(log)?;
            let receipt = connect()?.log(entry)?;
            if json {
                print_json(&json!({"seq": receipt.seq, "hash": hex::encode(receipt.hash)}))?;
            } else {
                let hash = hex::encode(receipt.hash);
                writeln!(output::stdout(), "seq {}  hash {hash}", receipt.seq)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { file, skip_invalid } => {
            import_command(connect()?, &file, skip_invalid, json)
        }
        Command::Verify { from, to, db } => {
            let range = VerifyRange { from, to };
            // 0 intact, 1 broken or inconsistent, 2 a bad range or a file that cannot be read.
            if let Err(reason) = witness_daemon::format::verify::check_range(range) {
                eprintln!("witness: {reason}");
                return Ok(ExitCode::from(2));
            }
            let report = match db {
                Some(path) => {
                    let verified = witness_daemon::format::schema::open_reader(&path)
                        .map_err(anyhow::Error::from)
                        .and_then(|connection| {
                            witness_daemon::format::verify::verify(&connection, range)
                                .with_context(|| format!("verifying {}", path.display()))
                        });
                    match verified {
                        Ok(report) => report,
                        Err(error) => {
                            eprintln!("witness: {error:#}");
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
                None => match connect()?.verify(range) {
                    Ok(report) => report,
                    Err(witness_client::Error::Refused(reply))
                        if reply.code == witness_client::ErrorCode::BadRequest =>
                    {
                        eprintln!("witness: {}", reply.message);
                        return Ok(ExitCode::from(2));
                    }
                    Err(error) => return Err(error.into()),
                },
            };
            print_verify(&report, json)
        }
        Command::Trace { trace_id } => Ok(exit(read::trace(&mut connect()?, trace_id, json)?)),
        Command::Traces {
            since,
            component,
            limit,
            before,
        } => {
            let query = TracesQuery {
                since,
                component,
                before_seq: before,
                limit,
            };
            read::traces(&mut connect()?, query, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            lines,
            follow,
            filter,
            after,
        } => {
            let mut query = EntriesQuery {
                filter: filter.into_filter(None),
                newest: Some(lines),
                limit: None,
                follow,
            };
            if after.is_some() {
                query.filter.after_seq = after;
                query.newest = None;
            }
            Ok(exit(read::stream(&mut connect()?, query, json)?))
        }
        Command::Cost {
            by,
            since,
            until,
            component,
            limit,
            offset,
        } => {
            let by = match by {
                By::Component => GroupBy::Component,
                By::Model => GroupBy::Model,
                By::Event => GroupBy::Event,
                By::Trace => GroupBy::Trace,
            };
            let query = CostQuery {
                by,
                since,
                until,
                component,
                offset,
                limit,
            };
            read::cost(&mut connect()?, query, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { prometheus } => {
            let format = match (json, prometheus) {
                (true, _) => admin::StatsFormat::Json,
                (_, true) => admin::StatsFormat::Prometheus,
                _ => admin::StatsFormat::Table,
            };
            admin::stats(&mut connect()?, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Maintenance(task) => {
            let task = match task {
                Maintenance::Analyze => witness_client::admin::MaintenanceTask::Analyze,
                Maintenance::Backup { path } => {
                    // The daemon resolves nothing against its own working folder.
                    let path = std::path::absolute(&path)
                        .with_context(|| format!("resolving {}", path.display()))?;
                    let path = path
                        .to_str()
                        .context("the backup path is not valid UTF-8")?
                        .to_owned();
                    witness_client::admin::MaintenanceTask::Backup { path }
                }
            };
            admin::maintenance(&mut connect()?, task, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            from,
            to,
            filter,
            until,
            limit,
        } => {
            let mut query = EntriesQuery {
                filter: filter.into_filter(until),
                newest: None,
                limit,
                follow: false,
            };
            query.filter.after_seq = from.map(|from| from.saturating_sub(1));
            query.filter.to_seq = to;
            Ok(exit(read::stream(&mut connect()?, query, true)?))
        }
    }
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn entry_from(log: LogArgs) -> anyhow::Result<Entry> {
    let mut entry = Entry::new(log.event, log.component);
    entry.trace_id = log.trace;
    if let Some(payload) = log.payload {
        let value: serde_json::Value =
            serde_json::from_str(&payload).context("--payload is not valid JSON")?;
        entry.payload = value.to_string();
    }
    let costed = log.tokens_in.is_some()
        || log.tokens_out.is_some()
        || log.cost_usd.is_some()
        || log.model.is_some()
        || log.cache_read_tokens.is_some()
        || log.reasoning_tokens.is_some();
    if costed {
        entry.cost = Some(Cost {
            tokens_in: log.tokens_in.unwrap_or(0),
            tokens_out: log.tokens_out.unwrap_or(0),
            cache_read_tokens: log.cache_read_tokens,
            reasoning_tokens: log.reasoning_tokens,
            micro_usd: log.cost_usd.unwrap_or(0),
            model: log.model,
        });
    }
    entry.check_limits()?;
    Ok(entry)
}

fn import_command(
    mut client: Client,
    file: &PathBuf,
    skip_invalid: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(opened))
    };
    match import::import(&mut client, input, skip_invalid) {
        Ok(report) => {
            if json {
                print_json(&report)?;
            } else {
                for bad in &report.bad_lines {
                    eprintln!("line {}: {} (not recorded)", bad.line, bad.error);
                }
                writeln!(
                    output::stdout(),
                    "imported {} entries in {:.2} s ({:.0} entries/s){}",
                    report.imported,
                    report.seconds,
                    report.rate,
                    match report.bad_lines.len() - report.refused {
                        0 => String::new(),
                        n => format!(", skipped {n} invalid lines"),
                    }
                )?;
            }
            if report.refused > 0 {
                // Valid entries the daemon did not record: the import did not do what was
                // asked, whatever else it did.
                eprintln!(
                    "witness: the daemon refused {} entries (listed above); the other {} were \
                     recorded",
                    report.refused, report.imported
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(import::Failure::Invalid(bad_lines)) => {
            if json {
                print_json(&json!({"imported": 0, "bad_lines": bad_lines}))?;
            }
            for bad in &bad_lines {
                eprintln!("line {}: {}", bad.line, bad.error);
            }
            eprintln!(
                "witness: {} invalid line(s); nothing was imported (use --skip-invalid to \
                 import the valid lines)",
                bad_lines.len()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(import::Failure::Other(error)) => Err(error),
    }
}

fn print_verify(report: &VerifyReport, json: bool) -> anyhow::Result<ExitCode> {
    match report {
        VerifyReport::Intact {
            count,
            first_seq,
            last_seq,
            head_hash,
        } => {
            let head = head_hash.map(hex::encode);
            if json {
                print_json(&json!({
                    "intact": true, "count": count, "first_seq": first_seq,
                    "last_seq": last_seq, "head_hash": head,
                }))?;
            } else if let (Some(first), Some(last), Some(head)) = (first_seq, last_seq, head) {
                writeln!(
                    output::stdout(),
                    "intact: {count} entries, seq {first} to {last}, head hash {head}"
                )?;
            } else {
                writeln!(output::stdout(), "intact: no entries in range")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        VerifyReport::Broken {
            seq,
            reason,
            checked,
        } => {
            if json {
                print_json(&json!({
                    "intact": false, "seq": seq, "reason": reason, "checked": checked,
                }))?;
            } else {
                writeln!(
                    output::stdout(),
                    "BROKEN at seq {seq}: {reason} ({checked} entries verified before it)"
                )?;
            }
            Ok(ExitCode::FAILURE)
        }
        VerifyReport::Inconsistent {
            table,
            reason,
            checked,
        } => {
            if json {
                print_json(&json!({
                    "intact": false, "table": table, "reason": reason, "checked": checked,
                }))?;
            } else {
                writeln!(
                    output::stdout(),
                    "INCONSISTENT {table}: {reason} (all {checked} entries verified)"
                )?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = output::stdout();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}
