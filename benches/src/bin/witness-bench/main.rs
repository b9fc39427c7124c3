//! `witness-bench`: starts a real `witnessd` on a temporary socket and database, drives it
//! with client processes, and measures every workload beside two baselines taken in the same
//! run: the single-thread rusqlite ceiling and processes writing SQLite directly.
//!
//! `cargo run --release -p witness-bench -- [--quick] [--runs N] [--out FILE]`

mod daemon;
mod measure;
mod report;
mod workloads;

use daemon::*;
use measure::*;
use report::*;
use workloads::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use witness_daemon::format::schema::{self, Durability};

use witness_bench::generate::Generator;
use witness_bench::load::{
    self, Mode, WorkerArgs, WorkerReport, decode_histogram, histogram, now_ns,
};

/// Load generator for witness.
#[derive(Debug, Parser)]
#[command(name = "witness-bench")]
struct Args {
    /// A short run (under a minute) with smaller counts and one repetition.
    #[arg(long)]
    quick: bool,
    /// Repetitions of the whole set; medians are reported.
    #[arg(long)]
    runs: Option<usize>,
    /// Measure the read side instead: load a million entries (100,000 with --quick), then
    /// time each query idle and while eight processes ingest.
    #[arg(long)]
    reads: bool,
    /// Only the workloads whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Extra flags for every witnessd started, such as `--daemon-arg=--batch-delay-us=200`.
    #[arg(long, allow_hyphen_values = true)]
    daemon_arg: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/witness-bench.json")]
    out: PathBuf,
    #[command(subcommand)]
    worker: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Internal: one client process of a workload.
    Worker(WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Sub::Worker(worker)) = &args.worker {
        return load::run(worker);
    }
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
    let workloads = workloads(args.quick)
        .into_iter()
        .filter(|workload| {
            matches!(workload.kind, Kind::Ceiling | Kind::Direct)
                || args
                    .only
                    .as_ref()
                    .is_none_or(|only| workload.name.contains(only.as_str()))
        })
        .collect::<Vec<_>>();
    let witnessd = witnessd_binary()?;
    if args.reads {
        return run_reads(&args, &witnessd);
    }
    let started = Instant::now();
    let mut all_runs: Vec<Vec<Measurement>> = Vec::new();
    for run in 0..runs {
        eprintln!("run {} of {runs}", run + 1);
        let mut measured: Vec<Measurement> = Vec::new();
        let mut saturation = None;
        for workload in &workloads {
            let mut workload = workload.clone();
            if workload.kind == Kind::Witness(Mode::Open) && workload.rate_per_process < 0.0 {
                // A fraction of the saturation measured by `log` from the same processes.
                let Some(saturated) = saturation else {
                    continue;
                };
                let fraction = -workload.rate_per_process;
                workload.rate_per_process = saturated * fraction / workload.processes as f64;
                workload.name = format!("{} ({:.0}/s)", workload.name, saturated * fraction);
                workload.entries_per_process =
                    (workload.rate_per_process * if args.quick { 2.0 } else { 5.0 }) as u64;
            }
            let measurement = measure(&workload, &witnessd, &args.daemon_arg)
                .with_context(|| format!("workload {}", workload.name))?;
            eprintln!(
                "  {:<34} {:>10.0} entries/s",
                measurement.name, measurement.entries_per_second
            );
            if workload.name == "log, 8 processes" {
                saturation = Some(measurement.entries_per_second);
            }
            measured.push(measurement);
        }
        let ceiling = measured
            .iter()
            .find(|m| m.name.starts_with("ceiling"))
            .map(|m| m.entries_per_second);
        let direct = measured
            .iter()
            .find(|m| m.name == "direct, 8 processes")
            .map(|m| m.entries_per_second);
        for measurement in &mut measured {
            measurement.vs_ceiling = ceiling.map(|c| measurement.entries_per_second / c);
            measurement.vs_direct = direct.map(|d| measurement.entries_per_second / d);
        }
        all_runs.push(measured);
    }
    let medians = medians(&all_runs);
    let table = markdown(&medians, runs, args.quick);
    println!("{table}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "daemon_args": args.daemon_arg,
        "machine": machine(),
        "durability": "synchronous=FULL (WAL) for witness and both baselines",
        "runs": runs,
        "medians": medians,
        "all_runs": all_runs,
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)?;
    eprintln!(
        "results in {}, {:.0} s in all",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The read side: every query idle and under ingest, and ingest with and without readers.
fn run_reads(args: &Args, witnessd: &Path) -> anyhow::Result<()> {
    let total: u64 = if args.quick { 100_000 } else { 1_000_000 };
    let daemon = Daemon::start(witnessd, &args.daemon_arg)?;
    let sending = |name: &str, total: u64| Workload {
        name: name.to_owned(),
        kind: Kind::Witness(Mode::Send),
        processes: 8,
        entries_per_process: total / 8,
        batch: 1,
        rate_per_process: 0.0,
        beside_flooder: false,
    };
    let load = sending("load, 8 processes sending", total);
    let (reports, started_ns) = run_workers(&load, Mode::Send, &daemon.socket)?;
    let alone = summarise(&load, &reports, started_ns, None);
    eprintln!(
        "loaded {} entries at {:.0}/s",
        alone.entries, alone.entries_per_second
    );
    let mut client = witness_client::Client::connect(&daemon.socket)?;
    let traces = witness_bench::reads::sample_traces(&mut client, alone.entries, 200)?;
    let idle = witness_bench::reads::measure(&daemon.socket, &traces, false)?;

    // Long enough to outlast the queries: about ten seconds of sending.
    let more = sending("ingest while queries run", total.max(1_000_000));
    let (busy, with_reads) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let ingest = scope.spawn(|| run_workers(&more, Mode::Send, &daemon.socket));
        // The workers start together after a moment; the queries wait for them.
        std::thread::sleep(Duration::from_millis(500 + 8 * 20 + 300));
        let busy = witness_bench::reads::measure(&daemon.socket, &traces, true)?;
        let still_ingesting = !ingest.is_finished();
        let (reports, started_ns) = ingest.join().expect("ingest thread")?;
        if !still_ingesting {
            eprintln!("warning: ingest ended before the queries did");
        }
        Ok((busy, summarise(&more, &reports, started_ns, None)))
    })?;
    let peak_rss_mb = daemon.peak_rss_kib() as f64 / 1024.0;
    daemon.stop()?;

    let mut table = format!(
        "{} entries loaded; every query over the socket, one client, one call at a time; \
         latency in ms.\n\n| query | calls | idle p50 | idle p99 | under ingest p50 | \
         under ingest p99 | under ingest max |\n|---|---:|---:|---:|---:|---:|---:|\n",
        alone.entries
    );
    for (quiet, loaded) in idle.iter().zip(&busy) {
        table += &format!(
            "| `{}` | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            quiet.name,
            quiet.calls,
            quiet.latency_ms[0],
            quiet.latency_ms[2],
            loaded.latency_ms[0],
            loaded.latency_ms[2],
            loaded.latency_ms[3],
        );
    }
    table += &format!(
        "\nIngest, 8 processes sending: {:.0} entries/s alone, {:.0} entries/s while the \
         queries ran ({:.0}%). Daemon peak RSS {peak_rss_mb:.1} MB.\n",
        alone.entries_per_second,
        with_reads.entries_per_second,
        100.0 * with_reads.entries_per_second / alone.entries_per_second
    );
    println!("{table}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine(),
        "entries": alone.entries,
        "idle": idle,
        "under_ingest": busy,
        "ingest_alone_per_second": alone.entries_per_second,
        "ingest_with_queries_per_second": with_reads.entries_per_second,
        "daemon_peak_rss_mb": peak_rss_mb,
    });
    let out = args.out.with_file_name("witness-bench-reads.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    eprintln!("results in {}", out.display());
    Ok(())
}
