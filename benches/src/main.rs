//! `witness-bench`: starts a real `witnessd` on a temporary socket and database, drives it
//! with client processes, and measures every workload beside two baselines taken in the same
//! run: the single-thread rusqlite ceiling and processes writing SQLite directly.
//!
//! `cargo run --release -p witness-bench -- [--quick] [--runs N] [--out FILE]`

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

/// One thing measured.
#[derive(Debug, Clone)]
struct Workload {
    name: String,
    kind: Kind,
    processes: usize,
    entries_per_process: u64,
    batch: usize,
    rate_per_process: f64,
    /// Run a flooding `Spool` process beside the measured ones, for the whole workload.
    beside_flooder: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ceiling,
    Direct,
    Witness(Mode),
}

/// One measurement of one workload.
#[derive(Debug, Clone, serde::Serialize)]
struct Measurement {
    name: String,
    processes: usize,
    entries: u64,
    seconds: f64,
    entries_per_second: f64,
    latency_us: [f64; 5],
    daemon_cpu_percent: Option<f64>,
    daemon_peak_rss_mb: Option<f64>,
    vs_ceiling: Option<f64>,
    vs_direct: Option<f64>,
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

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = |full: u64| if quick { full / 10 } else { full };
    let witness = |name: &str, mode, processes: usize, total: u64, batch| Workload {
        name: name.to_owned(),
        kind: Kind::Witness(mode),
        processes,
        entries_per_process: (scale(total) / processes as u64).max(1),
        batch,
        rate_per_process: 0.0,
        beside_flooder: false,
    };
    let open = |name: &str, processes: usize, rate: f64| Workload {
        name: name.to_owned(),
        kind: Kind::Witness(Mode::Open),
        processes,
        entries_per_process: if rate > 0.0 {
            (rate / processes as f64 * if quick { 2.0 } else { 5.0 }) as u64
        } else {
            0
        },
        batch: 1,
        rate_per_process: if rate > 0.0 {
            rate / processes as f64
        } else {
            rate
        },
        beside_flooder: false,
    };
    let direct = |processes: usize, total: u64| Workload {
        name: format!(
            "direct, {processes} process{}",
            if processes == 1 { "" } else { "es" }
        ),
        kind: Kind::Direct,
        processes,
        entries_per_process: scale(total) / processes as u64,
        batch: 1,
        rate_per_process: 0.0,
        beside_flooder: false,
    };
    let mut list = vec![
        Workload {
            name: "ceiling: 1 thread, rusqlite, 1000/txn".into(),
            kind: Kind::Ceiling,
            processes: 1,
            entries_per_process: scale(800_000),
            batch: 1000,
            rate_per_process: 0.0,
            beside_flooder: false,
        },
        direct(8, 20_000),
    ];
    if !quick {
        list.push(direct(1, 5_000));
    }
    list.extend([
        witness("send, 1 process", Mode::Send, 1, 600_000, 1),
        witness("send, 8 processes", Mode::Send, 8, 800_000, 1),
        witness("send, 64 processes", Mode::Send, 64, 800_000, 1),
        Workload {
            rate_per_process: 5_000.0,
            ..witness(
                "send at 40000/s offered, 8 processes",
                Mode::Send,
                8,
                400_000,
                1,
            )
        },
        witness("spool send, 1 process", Mode::Spool, 1, 600_000, 1),
        witness("spool send, 8 processes", Mode::Spool, 8, 800_000, 1),
        Workload {
            rate_per_process: 5_000.0,
            ..witness(
                "spool send at 40000/s offered, 8 processes",
                Mode::Spool,
                8,
                400_000,
                1,
            )
        },
        witness("log_batch 10, 8 processes", Mode::Batch, 8, 200_000, 10),
        witness("log_batch 100, 8 processes", Mode::Batch, 8, 600_000, 100),
        witness("log_batch 1000, 8 processes", Mode::Batch, 8, 800_000, 1000),
        witness("log, 1 process", Mode::Log, 1, 10_000, 1),
        witness("log, 8 processes", Mode::Log, 8, 80_000, 1),
        witness("log, 64 processes", Mode::Log, 64, 160_000, 1),
        open("log at 20000/s offered, 8 processes", 8, 20_000.0),
        open("log at 50% of saturation, 8 processes", 8, -0.5),
        open("log at 90% of saturation, 8 processes", 8, -0.9),
        // Fairness: the same four well-behaved processes alone, then beside one process
        // that floods through a Spool as fast as it can.
        witness("log, 4 processes", Mode::Log, 4, 20_000, 1),
        Workload {
            name: "log, 4 processes, beside a spool flooder".into(),
            beside_flooder: true,
            ..witness("log, 4 processes", Mode::Log, 4, 20_000, 1)
        },
    ]);
    if !quick {
        list.push(open("log at 5000/s offered, 8 processes", 8, 5_000.0));
    }
    list
}

fn measure(
    workload: &Workload,
    witnessd: &Path,
    daemon_args: &[String],
) -> anyhow::Result<Measurement> {
    match workload.kind {
        Kind::Ceiling => ceiling(workload),
        Kind::Direct => {
            let dir = tempfile::tempdir()?;
            let db = dir.path().join("direct.db");
            drop(schema::open_writer(&db, Durability::Full, 8192)?);
            let (reports, started_ns) = run_workers(workload, Mode::Direct, &db)?;
            Ok(summarise(workload, &reports, started_ns, None))
        }
        Kind::Witness(mode) => {
            let daemon = Daemon::start(witnessd, daemon_args)?;
            let mut flooder = match workload.beside_flooder {
                true => Some(start_flooder(&daemon.socket)?),
                false => None,
            };
            let cpu_before = daemon.cpu_seconds();
            let workers = run_workers(workload, mode, &daemon.socket);
            let cpu = daemon.cpu_seconds() - cpu_before;
            if let Some(flooder) = flooder.as_mut() {
                let _ = flooder.kill();
                let _ = flooder.wait();
            }
            let (reports, started_ns) = workers?;
            let peak_rss_mb = daemon.peak_rss_kib() as f64 / 1024.0;
            let mut measurement = summarise(workload, &reports, started_ns, None);
            measurement.daemon_cpu_percent = Some(100.0 * cpu / measurement.seconds);
            measurement.daemon_peak_rss_mb = Some(peak_rss_mb);
            daemon.stop()?;
            Ok(measurement)
        }
    }
}

/// Starts a process that floods the daemon through a `Spool` until it is killed; it is in
/// full flow before the measured workers start.
fn start_flooder(socket: &Path) -> anyhow::Result<Child> {
    let child = Command::new(std::env::current_exe()?)
        .arg("worker")
        .args(["--mode", "flood", "--count", "10000", "--seed", "99"])
        .arg("--target")
        .arg(socket)
        .args(["--start-at", &now_ns().to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the flooder")?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// Spawns the workers, waits for them, and returns their reports and the common start time.
fn run_workers(
    workload: &Workload,
    mode: Mode,
    target: &Path,
) -> anyhow::Result<(Vec<WorkerReport>, u64)> {
    // Generating the entries takes each worker a moment; all start together after it.
    let start_at = now_ns() + 500_000_000 + workload.processes as u64 * 20_000_000;
    let me = std::env::current_exe()?;
    let children: Vec<Child> = (0..workload.processes)
        .map(|index| {
            Command::new(&me)
                .arg("worker")
                .args(["--mode", &format!("{mode:?}").to_lowercase()])
                .arg("--target")
                .arg(target)
                .args(["--count", &workload.entries_per_process.to_string()])
                .args(["--batch", &workload.batch.to_string()])
                .args(["--rate", &workload.rate_per_process.to_string()])
                .args(["--seed", &(index as u64 * 7919 + 1).to_string()])
                .args(["--start-at", &start_at.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a worker")
        })
        .collect::<Result<_, _>>()?;
    let mut reports = Vec::new();
    for child in children {
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "a worker failed: {:?}",
            output.status
        );
        reports.push(serde_json::from_slice(&output.stdout).context("a worker's report")?);
    }
    Ok((reports, start_at))
}

fn summarise(
    workload: &Workload,
    reports: &[WorkerReport],
    started_ns: u64,
    latencies: Option<Histogram<u64>>,
) -> Measurement {
    let entries: u64 = reports.iter().map(|report| report.count).sum();
    let end_ns = reports
        .iter()
        .map(|report| report.end_ns)
        .max()
        .unwrap_or(started_ns);
    let seconds = (end_ns.saturating_sub(started_ns)) as f64 / 1e9;
    let mut merged = latencies.unwrap_or_else(histogram);
    for report in reports {
        merged
            .add(decode_histogram(&report.histogram).expect("a worker's histogram"))
            .unwrap();
    }
    Measurement {
        name: workload.name.clone(),
        processes: workload.processes,
        entries,
        seconds,
        entries_per_second: entries as f64 / seconds,
        latency_us: percentiles(&merged),
        daemon_cpu_percent: None,
        daemon_peak_rss_mb: None,
        vs_ceiling: None,
        vs_direct: None,
    }
}

fn percentiles(histogram: &Histogram<u64>) -> [f64; 5] {
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    [
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        histogram.max() as f64 / 1000.0,
    ]
}

/// The most SQLite can take on this machine with witness's schema, indexes and hash chain:
/// one thread, prepared statements, one transaction per 1000 entries, the same durability.
/// Automatic checkpoints every 4096 pages stand in for the daemon's own.
fn ceiling(workload: &Workload) -> anyhow::Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let mut connection =
        schema::open_writer(&dir.path().join("ceiling.db"), Durability::Full, 8192)?;
    connection.execute_batch("PRAGMA wal_autocheckpoint = 4096")?;
    let mut generator = Generator::new(1);
    let entries: Vec<_> = (0..workload.entries_per_process)
        .map(|_| generator.entry())
        .collect();
    let mut latencies = histogram();
    let started_ns = now_ns();
    witness_bench::write_batches(&mut connection, &entries, workload.batch, |elapsed| {
        latencies.saturating_record(elapsed.as_nanos() as u64);
    })?;
    let mut measurement = summarise(workload, &[], started_ns, Some(latencies));
    measurement.entries = entries.len() as u64;
    measurement.seconds = (now_ns() - started_ns) as f64 / 1e9;
    measurement.entries_per_second = measurement.entries as f64 / measurement.seconds;
    Ok(measurement)
}

/// A `witnessd` process on a temporary folder.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(binary: &Path, extra: &[String]) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("witness.sock");
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--db")
            .arg(dir.path().join("witness.db"))
            // Quiet by default; a --log-level among the extra flags replaces this one.
            .args(
                ["--log-level", "warn"]
                    .iter()
                    .filter(|_| !extra.iter().any(|arg| arg.starts_with("--log-level"))),
            )
            .args(extra)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while witness_client::Client::connect(&socket).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "witnessd did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Daemon {
            child,
            socket,
            _dir: dir,
        })
    }

    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
        });
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill with a valid pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "witnessd exited with {status:?}");
        Ok(())
    }
}

/// The release `witnessd` beside this binary, built first if need be.
fn witnessd_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let profile_dir = me.parent().context("binary folder")?;
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => "release".to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "witness-daemon",
            "--bin",
            "witnessd",
            "--profile",
            &profile,
        ])
        .arg("--target-dir")
        .arg(profile_dir.parent().context("target folder")?)
        .status()?;
    anyhow::ensure!(status.success(), "building witnessd");
    Ok(profile_dir.join("witnessd"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Per workload, the median of each figure over the runs (ratios are taken within a run,
/// then their median).
fn medians(runs: &[Vec<Measurement>]) -> Vec<Measurement> {
    let first = &runs[0];
    first
        .iter()
        .enumerate()
        .map(|(index, template)| {
            let of = |pick: &dyn Fn(&Measurement) -> Option<f64>| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|run| run.get(index))
                    .filter_map(pick)
                    .collect();
                (!values.is_empty()).then(|| median(values))
            };
            Measurement {
                name: template.name.clone(),
                processes: template.processes,
                entries: template.entries,
                seconds: of(&|m| Some(m.seconds)).unwrap_or(0.0),
                entries_per_second: of(&|m| Some(m.entries_per_second)).unwrap_or(0.0),
                latency_us: std::array::from_fn(|q| of(&|m| Some(m.latency_us[q])).unwrap_or(0.0)),
                daemon_cpu_percent: of(&|m| m.daemon_cpu_percent),
                daemon_peak_rss_mb: of(&|m| m.daemon_peak_rss_mb),
                vs_ceiling: of(&|m| m.vs_ceiling),
                vs_direct: of(&|m| m.vs_direct),
            }
        })
        .collect()
}

fn markdown(rows: &[Measurement], runs: usize, quick: bool) -> String {
    let mut out = format!(
        "Medians of {runs} run(s){}; durability synchronous=FULL everywhere; latency in µs \
         (per call; open loop from the intended send time).\n\n\
         | workload | entries | entries/s | × ceiling | × direct-8 | p50 | p90 | p99 | p99.9 | max | daemon CPU | daemon peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        if quick { ", --quick" } else { "" }
    );
    let ratio = |value: Option<f64>| value.map_or("".into(), |v| format!("{v:.2}"));
    for row in rows {
        let [p50, p90, p99, p999, max] = row.latency_us;
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {p50:.1} | {p90:.1} | {p99:.1} | {p999:.1} | {max:.0} | {} | {} |\n",
            row.name,
            row.entries,
            row.entries_per_second,
            ratio(row.vs_ceiling),
            ratio(row.vs_direct),
            row.daemon_cpu_percent.map_or("".into(), |v| format!("{v:.0}%")),
            row.daemon_peak_rss_mb.map_or("".into(), |v| format!("{v:.1} MB")),
        ));
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
