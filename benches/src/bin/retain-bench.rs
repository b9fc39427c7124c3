//! `retain-bench`: what retention costs, beside a baseline measured in the same run.
//!
//! A release `witnessd` takes entries from client threads for a fixed time, once with no
//! retention and once under `max_bytes` with an archive folder, so that it prunes and seals
//! all the while. Reported: ingest with and without retention and the latency of a batch's
//! acknowledgement at p50, p99 and p99.9 (medians of the runs), the database's size (with its WAL) over the second half of the run, which should stay flat,
//! and the archive's bytes per entry.
//!
//! With `--rate N`, the clients offer N entries a second in all instead of as many as the
//! daemon takes: below saturation, retention's cost shows in latency and in the daemon's CPU
//! time an entry, which is reported in both modes.
//!
//! `cargo run --release -p witness-bench --bin retain-bench -- [--runs N] [--seconds N] [--max-mib N] [--rate N]`

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use witness_client::{Client, Cost, Entry};

struct Run {
    ingest_per_sec: f64,
    /// Microseconds from sending a batch to its acknowledgement, over the measured span.
    latency: Histogram<u64>,
    /// Smallest and largest database + WAL over the second half.
    size: (u64, u64),
    /// The largest WAL over the second half.
    wal: u64,
    archived_entries: u64,
    archive_bytes: u64,
    /// The writer's seconds spent deleting pruned entries, over the whole run.
    prune_seconds: f64,
    /// Seconds from the daemon's start to the end of the measured span.
    uptime: f64,
    /// The daemon's CPU time an entry over the measured span, in microseconds.
    cpu_us_per_entry: f64,
}

fn size(db: &Path) -> u64 {
    let wal = db.with_extension("db-wal");
    std::fs::metadata(db).map_or(0, |meta| meta.len())
        + std::fs::metadata(wal).map_or(0, |meta| meta.len())
}

/// Ingests for `seconds` from four clients in batches of 100, under `max_bytes` or not.
/// The CPU time `pid` has used, user and system, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a /proc stat line")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second)
}

fn ingest(max_bytes: Option<u64>, seconds: u64, rate: Option<u64>) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("w.sock");
    let db = dir.path().join("w.db");
    let archive = dir.path().join("archive");
    let config = dir.path().join("w.toml");
    let mut text = "log_level = \"warn\"\n".to_owned();
    if let Some(max_bytes) = max_bytes {
        text += &format!(
            "[retain]\nmax_bytes = {max_bytes}\narchive_dir = {:?}\n",
            archive.display().to_string()
        );
    }
    std::fs::write(&config, text)?;
    let mut child = Command::new(witness_bench::release_witnessd()?)
        .arg("--socket")
        .arg(&socket)
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .spawn()?;
    witness_bench::wait_until_serving(&socket)?;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|thread| {
            let (socket, stop, written) = (socket.clone(), Arc::clone(&stop), Arc::clone(&written));
            let measuring = Arc::clone(&measuring);
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let mut latency = Histogram::<u64>::new(3)?;
                let mut client = Client::connect(&socket)?;
                // Each of the four clients sends a batch of 100 every `every`, when paced.
                let every = rate.map(|rate| Duration::from_secs_f64(400.0 / rate as f64));
                let mut due = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Entry> = (0..100)
                        .map(|k| {
                            i += 1;
                            let entry = Entry::new("llm.call", format!("worker-{thread}"))
                                .trace(format!("t-{}", i / 50))
                                .payload_text(format!(
                                    "{{\"i\":{i},\"k\":{k},\"note\":\"a typical payload of some length\"}}"
                                ));
                            if k % 4 == 0 {
                                entry.cost(Cost::new(1200, 300, 4200).model("model-a"))
                            } else {
                                entry
                            }
                        })
                        .collect();
                    if let Some(every) = every {
                        due += every;
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let sent = Instant::now();
                    client.log_batch(batch)?;
                    if measuring.load(Ordering::Relaxed) {
                        latency.record(sent.elapsed().as_micros() as u64)?;
                    }
                    written.fetch_add(100, Ordering::Relaxed);
                }
                Ok(latency)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (start, written_start) = (Instant::now(), written.load(Ordering::Relaxed));
    let cpu_start = cpu_seconds(child.id())?;
    measuring.store(true, Ordering::Relaxed);
    let mut sizes = (u64::MAX, 0u64);
    let mut wal = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        if start.elapsed() > Duration::from_secs(seconds / 2) {
            let now = size(&db);
            sizes = (sizes.0.min(now), sizes.1.max(now));
            wal = wal.max(std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let written_end = written.load(Ordering::Relaxed);
    let cpu = cpu_seconds(child.id())? - cpu_start;
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new(3)?;
    for worker in workers {
        latency.add(worker.join().expect("worker")?)?;
    }
    let stats = Client::connect(&socket)?.stats()?;
    // SAFETY: kill with a valid pid has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    let (mut archived_entries, mut archive_bytes) = (0, 0);
    if let Ok(items) = std::fs::read_dir(&archive) {
        for item in items {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some((first, last)) = witness_daemon::format::archive::parse_name(&name) {
                archived_entries += last + 1 - first;
                archive_bytes += item.metadata()?.len();
            }
        }
    }
    Ok(Run {
        ingest_per_sec: (written_end - written_start) as f64 / elapsed,
        cpu_us_per_entry: cpu * 1e6 / (written_end - written_start).max(1) as f64,
        latency,
        size: sizes,
        wal,
        archived_entries,
        archive_bytes,
        prune_seconds: stats.prune_seconds,
        uptime: stats.uptime_ms as f64 / 1000.0,
    })
}

fn main() -> anyhow::Result<()> {
    let mut runs = 3;
    let mut seconds = 30;
    let mut max_mib = 64u64;
    let mut rate = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--max-mib" => max_mib = args.next().context("--max-mib N")?.parse()?,
            "--rate" => rate = Some(args.next().context("--rate N")?.parse()?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let (mut off, mut on) = (vec![], vec![]);
    let (mut off_cpu, mut on_cpu) = (vec![], vec![]);
    let percentiles = [50.0, 99.0, 99.9];
    let (mut off_latency, mut on_latency) = (vec![vec![]; 3], vec![vec![]; 3]);
    for run in 0..runs {
        let plain = ingest(None, seconds, rate)?;
        let retained = ingest(Some(max_mib << 20), seconds, rate)?;
        eprintln!(
            "run {run}: ingest {:.0}/s without retention, {:.0}/s under max_bytes = {max_mib} MiB; \
             second half: database + WAL {:.1}..{:.1} MiB, WAL at most {:.1} MiB (without: {:.1}..{:.1}, WAL {:.1}); archived {} \
             entries, {:.1} bytes an entry; the writer spent {:.1} s of {:.0} s deleting",
            plain.ingest_per_sec,
            retained.ingest_per_sec,
            retained.size.0 as f64 / 1048576.0,
            retained.size.1 as f64 / 1048576.0,
            retained.wal as f64 / 1048576.0,
            plain.size.0 as f64 / 1048576.0,
            plain.size.1 as f64 / 1048576.0,
            plain.wal as f64 / 1048576.0,
            retained.archived_entries,
            retained.archive_bytes as f64 / retained.archived_entries.max(1) as f64,
            retained.prune_seconds,
            retained.uptime,
        );
        off.push(plain.ingest_per_sec);
        on.push(retained.ingest_per_sec);
        off_cpu.push(plain.cpu_us_per_entry);
        on_cpu.push(retained.cpu_us_per_entry);
        for (index, &percentile) in percentiles.iter().enumerate() {
            off_latency[index].push(plain.latency.value_at_percentile(percentile) as f64);
            on_latency[index].push(retained.latency.value_at_percentile(percentile) as f64);
        }
    }
    let (off, on) = (witness_bench::median(off), witness_bench::median(on));
    let show = |latency: Vec<Vec<f64>>| {
        latency
            .into_iter()
            .map(|values| format!("{:.1}", witness_bench::median(values) / 1000.0))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let offered = rate.map_or("as fast as the daemon takes them".to_owned(), |rate| {
        format!("{rate} entries/s offered")
    });
    println!(
        "medians of {runs} runs of {seconds} s, 4 clients, batches of 100, {offered}\n\
         ingest, no retention (baseline, same run)  {off:.0}/s, batch p50 / p99 / p99.9 {} ms, \
         daemon CPU {:.2} µs an entry\n\
         ingest, pruning under max_bytes = {max_mib} MiB {on:.0}/s ({:+.1}%), batch p50 / p99 / \
         p99.9 {} ms, daemon CPU {:.2} µs an entry",
        show(off_latency),
        witness_bench::median(off_cpu),
        (on / off - 1.0) * 100.0,
        show(on_latency),
        witness_bench::median(on_cpu),
    );
    Ok(())
}
