//! `witness`: the command line of witnessd, as journalctl is to journald. Every command
//! speaks to the daemon over its socket, except `verify --db`, which reads a database file
//! directly and read-only. Times are RFC 3339 or a span back from now (`15m`, `2h`, `7d`).
//!
//! `args.rs` is the grammar; this file connects and dispatches; each command lives in the
//! file named for it (`record`, `import`, `verify`, `read`, `admin`).

mod admin;
mod archive;
mod args;
mod fleet;
mod import;
mod kept;
mod line;
mod money;
mod output;
mod present;
mod prices;
mod proof;
mod read;
mod record;
mod verify;
mod when;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use witness_client::query::{EntriesQuery, TracesQuery};
use witness_client::{Client, VerifyRange, paths};

use crate::args::{Archive, Args, Command, Maintenance};

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
            eprintln!(
                "witness: {}",
                witness_daemon::errors::one_line(error.as_ref())
            );
            // README "Exit status": 2 when the command could not be run as given.
            if output::is_usage(&error) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(paths::client_socket_path);
    let wait = std::time::Duration::from_secs(args.timeout);
    // A command of one request ends within --timeout in all, however often the connection
    // breaks and comes back; commands that run as long as their data bound each wait.
    let streams = matches!(
        args.command,
        Command::Tail { .. }
            | Command::Export { .. }
            | Command::Import { .. }
            | Command::Verify { .. }
            | Command::Archive(_)
    );
    let options = witness_client::Options {
        reconnect_timeout: wait,
        connect_timeout: wait,
        answer_timeout: Some(wait),
        deadline: (!streams).then(|| std::time::Instant::now() + wait),
        // An import that failed is said so and run again: keeping its entries for a later
        // delivery would record them twice. `witness spool --deliver` delivers the spool on
        // demand, rather than in a thread that a short command would cut short.
        keep_unsent: !matches!(args.command, Command::Import { .. }),
        deliver_kept: false,
        ..witness_client::Options::default()
    };
    let connect = || Client::connect_with(&socket, options.clone());
    let json = args.json;
    when::set_shown(if args.utc {
        when::Shown::Utc
    } else {
        args.time
    });
    output::set_color(args.color);
    output::set_width(args.full);
    match args.command {
        Command::Ping => record::ping(&mut connect()?, json),
        Command::Log(log) => {
            // Checked before connecting: a bad argument is said as such, daemon or not.
            let entry = record::entry_from(log)?;
            record::log(&mut connect()?, entry, json)
        }
        Command::Import { file, skip_invalid } => {
            import::command(&mut connect()?, &file, skip_invalid, json)
        }
        Command::Verify {
            from,
            to,
            db,
            checkpoint,
            key,
            with_archives,
        } => match (checkpoint, key) {
            (checkpoint, key) if with_archives.is_some() => archive::verify_with(
                &db.unwrap_or_else(paths::default_db_path),
                with_archives.as_deref().expect("checked"),
                checkpoint.as_deref().zip(key.as_deref()),
                json,
            ),
            (Some(checkpoint), Some(key)) => verify::against_checkpoint(
                &db.unwrap_or_else(paths::default_db_path),
                &checkpoint,
                &key,
                json,
            ),
            _ => verify::command(VerifyRange { from, to }, db, connect, json),
        },
        Command::Trace { trace_id } => Ok(exit(read::trace(&mut connect()?, trace_id, json)?)),
        Command::Traces {
            window,
            component,
            limit,
            before,
        } => {
            let query = TracesQuery {
                since: window.since,
                until: window.until,
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
                filter: filter.into_filter(),
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
        Command::Cost(cost) => {
            read::cost(&mut connect()?, cost.into_query(), json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prices(prices) => Ok(exit(prices::prices(&mut connect()?, prices, json)?)),
        Command::Budgets => {
            prices::budgets(&mut connect()?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet(fleet) => fleet::run(fleet, json),
        Command::Archive(Archive::List { dir, db }) => {
            archive::list(&dir, &db.unwrap_or_else(paths::default_db_path), json)
        }
        Command::Archive(Archive::Verify { dir }) => archive::verify_alone(&dir, json),
        Command::Archive(Archive::Export { files }) => archive::export(&files),
        Command::Web { open } => admin::web(&mut connect()?, open, json),
        Command::Checkpoint => admin::checkpoint(&mut connect()?, json),
        Command::Key => admin::key(&mut connect()?, json),
        Command::Completions { shell } => {
            let mut command = <Args as clap::CommandFactory>::command();
            // clap_complete panics on a failed write: the script goes to a buffer, and the
            // buffer to stdout, whose closing by its reader ends the command quietly.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "witness", &mut script);
            output::stdout().write_all(&script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let command = <Args as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut output::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prove { seq, out } => proof::prove(&mut connect()?, seq, out.as_deref(), json),
        Command::Consistency {
            old_size,
            new_size,
            checkpoint,
            key,
        } => proof::consistency(
            &mut connect()?,
            old_size,
            new_size,
            checkpoint.as_deref(),
            key.as_deref(),
            json,
        ),
        Command::VerifyProof { file, key, entry } => {
            proof::verify(&file, &key, entry.as_deref(), json)
        }
        Command::Spool { deliver: false } => kept::list(&socket, json),
        Command::Spool { deliver: true } => kept::deliver(&mut connect()?, json),
        Command::Where { file } => {
            admin::paths(&mut connect()?, file, json)?;
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
                Maintenance::Prune { before, drop } => {
                    let (before_seq, before_time) = if before.bytes().all(|b| b.is_ascii_digit()) {
                        let seq = before.parse::<u64>().map_err(|_| {
                            anyhow::anyhow!("--before {before}: not a sequence number")
                        });
                        match seq {
                            Ok(seq) => (Some(seq), None),
                            Err(error) => {
                                eprintln!("witness: {error}");
                                return Ok(ExitCode::from(2));
                            }
                        }
                    } else {
                        match when::parse_time(&before) {
                            Ok(time) => (None, Some(time)),
                            Err(reason) => {
                                eprintln!("witness: --before {before}: {reason}");
                                return Ok(ExitCode::from(2));
                            }
                        }
                    };
                    witness_client::admin::MaintenanceTask::Prune {
                        before_seq,
                        before_time,
                        drop,
                    }
                }
            };
            admin::maintenance(&mut connect()?, task, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            from,
            to,
            filter,
            limit,
        } => {
            let mut query = EntriesQuery {
                filter: filter.into_filter(),
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
