//! `retain-bench`: what retention costs, beside a baseline measured in the same run.
//!
//! A release `witnessd` takes entries from client threads for a fixed time, once with no
//! retention and once under `max_bytes` with an archive folder, so that it prunes and seals
//! all the while. Reported: ingest with and without retention (medians of the runs), the
//! database's size (with its WAL) over the second half of the run, which should stay flat,
//! and the archive's bytes per entry.
//!
//! `cargo run --release -p witness-bench --bin retain-bench -- [--runs N] [--seconds N] [--max-mib N]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use witness_client::{Client, Cost, Entry};

/// The release `witnessd` beside this binary.
fn witnessd() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("witnessd");
    anyhow::ensure!(
        path.exists(),
        "build it first: cargo build --release -p witness-daemon"
    );
    Ok(path)
}

struct Run {
    ingest_per_sec: f64,
    /// Smallest and largest database + WAL over the second half.
    size: (u64, u64),
    archived_entries: u64,
    archive_bytes: u64,
}

fn size(db: &Path) -> u64 {
    let wal = db.with_extension("db-wal");
    std::fs::metadata(db).map_or(0, |meta| meta.len())
        + std::fs::metadata(wal).map_or(0, |meta| meta.len())
}

/// Ingests for `seconds` from four clients in batches of 100, under `max_bytes` or not.
fn ingest(max_bytes: Option<u64>, seconds: u64) -> anyhow::Result<Run> {
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
    let mut child = Command::new(witnessd()?)
        .arg("--socket")
        .arg(&socket)
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(&socket).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "witnessd did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|thread| {
            let (socket, stop, written) = (socket.clone(), Arc::clone(&stop), Arc::clone(&written));
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client = Client::connect(&socket)?;
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
                    client.log_batch(batch)?;
                    written.fetch_add(100, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (start, written_start) = (Instant::now(), written.load(Ordering::Relaxed));
    let mut sizes = (u64::MAX, 0u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        if start.elapsed() > Duration::from_secs(seconds / 2) {
            let now = size(&db);
            sizes = (sizes.0.min(now), sizes.1.max(now));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let written_end = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker")?;
    }
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
        size: sizes,
        archived_entries,
        archive_bytes,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut runs = 3;
    let mut seconds = 30;
    let mut max_mib = 64u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--max-mib" => max_mib = args.next().context("--max-mib N")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let (mut off, mut on) = (vec![], vec![]);
    for run in 0..runs {
        let plain = ingest(None, seconds)?;
        let retained = ingest(Some(max_mib << 20), seconds)?;
        eprintln!(
            "run {run}: ingest {:.0}/s without retention, {:.0}/s under max_bytes = {max_mib} MiB; \
             second half: database + WAL {:.1}..{:.1} MiB (without: {:.1}..{:.1}); archived {} \
             entries, {:.1} bytes an entry",
            plain.ingest_per_sec,
            retained.ingest_per_sec,
            retained.size.0 as f64 / 1048576.0,
            retained.size.1 as f64 / 1048576.0,
            plain.size.0 as f64 / 1048576.0,
            plain.size.1 as f64 / 1048576.0,
            retained.archived_entries,
            retained.archive_bytes as f64 / retained.archived_entries.max(1) as f64,
        );
        off.push(plain.ingest_per_sec);
        on.push(retained.ingest_per_sec);
    }
    let (off, on) = (median(off), median(on));
    println!(
        "ingest, no retention (baseline, same run)  {off:.0}/s\n\
         ingest, pruning under max_bytes            {on:.0}/s ({:+.1}%)",
        (on / off - 1.0) * 100.0
    );
    Ok(())
}
