//! Measuring one workload: the client processes, the flooder beside them, the daemon's CPU and memory, the ceiling measured with rusqlite alone, and the round trip to a server that only answers.

use super::*;

/// One measurement of one workload.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Measurement {
    pub(crate) name: String,
    pub(crate) processes: usize,
    pub(crate) entries: u64,
    pub(crate) seconds: f64,
    pub(crate) entries_per_second: f64,
    pub(crate) latency_us: [f64; 5],
    pub(crate) daemon_cpu_percent: Option<f64>,
    pub(crate) daemon_peak_rss_mb: Option<f64>,
    pub(crate) vs_ceiling: Option<f64>,
    pub(crate) vs_direct: Option<f64>,
    /// Beside a flooder: the entries/s the daemon committed for others than the measured
    /// processes (the flooder), over the same interval.
    pub(crate) flooder_per_second: Option<f64>,
    /// Beside a flooder: entries per committed transaction over the interval, all lanes.
    pub(crate) mean_batch: Option<f64>,
}

pub(crate) fn measure(
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
        Kind::RoundTrip(durable) => {
            let dir = tempfile::tempdir()?;
            let socket = dir.path().join("roundtrip.sock");
            let journal = dir.path().join("journal");
            let server =
                witness_bench::roundtrip::Server::start(&socket, durable.then_some(&*journal))?;
            let cpu_before = own_cpu_seconds();
            let workers = run_workers(workload, Mode::RoundTrip, &socket);
            let cpu = own_cpu_seconds() - cpu_before;
            drop(server);
            let (reports, started_ns) = workers?;
            let mut measurement = summarise(workload, &reports, started_ns, None);
            measurement.daemon_cpu_percent = Some(100.0 * cpu / measurement.seconds);
            Ok(measurement)
        }
        Kind::Witness(mode) => {
            let daemon = Daemon::start(witnessd, daemon_args)?;
            let mut flooder = match workload.beside_flooder {
                true => Some(start_flooder(&daemon.socket)?),
                false => None,
            };
            let cpu_before = daemon.cpu_seconds();
            let stop = std::sync::atomic::AtomicBool::new(false);
            let (workers, samples) = std::thread::scope(|scope| {
                let sampler = flooder
                    .is_some()
                    .then(|| scope.spawn(|| sample_stats(&daemon.socket, &stop)));
                let workers = run_workers(workload, mode, &daemon.socket);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let samples = sampler.map(|sampler| sampler.join().expect("the sampler"));
                (workers, samples)
            });
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
            if let Some(samples) = samples {
                let samples = samples?;
                let end_ns = started_ns + (measurement.seconds * 1e9) as u64;
                let first = samples.iter().find(|sample| sample.0 >= started_ns);
                let last = samples.iter().rev().find(|sample| sample.0 <= end_ns);
                if let (Some(first), Some(last)) = (first, last)
                    && last.0 > first.0
                {
                    let seconds = (last.0 - first.0) as f64 / 1e9;
                    let entries = (last.1 - first.1) as f64;
                    let own = measurement.entries_per_second * seconds;
                    measurement.flooder_per_second = Some((entries - own).max(0.0) / seconds);
                    measurement.mean_batch = Some(entries / (last.2 - first.2).max(1) as f64);
                }
            }
            daemon.stop()?;
            Ok(measurement)
        }
    }
}

/// Reads the daemon's counters every 50 ms until `stop`: (when, entries committed, batches
/// committed), so that what the flooder committed while the measured processes ran can be
/// told apart from what it committed alone before them.
fn sample_stats(
    socket: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let mut client = witness_client::Client::connect(socket)?;
    let mut samples = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let stats = client.stats()?;
        samples.push((now_ns(), stats.entries_total, stats.batches_total));
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(samples)
}

/// The CPU this process has used, in seconds: a round-trip server's, since nothing else in
/// it runs while the workers do.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Starts a process that floods the daemon through a `Spool` until it is killed; it is in
/// full flow before the measured workers start.
pub(crate) fn start_flooder(socket: &Path) -> anyhow::Result<Child> {
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
pub(crate) fn run_workers(
    workload: &Workload,
    mode: Mode,
    target: &Path,
) -> anyhow::Result<(Vec<WorkerReport>, u64)> {
    // Generating the entries takes each worker a moment; all start together after it.
    let start_at = now_ns() + 500_000_000 + workload.processes as u64 * 20_000_000;
    let me = std::env::current_exe()?;
    let mode_name = clap::ValueEnum::to_possible_value(&mode)
        .expect("every mode has a name")
        .get_name()
        .to_owned();
    let mode_name = mode_name.as_str();
    let children: Vec<Child> = (0..workload.processes)
        .map(|index| {
            Command::new(&me)
                .arg("worker")
                .args(["--mode", mode_name])
                .arg("--target")
                .arg(target)
                .args(["--count", &workload.entries_per_process.to_string()])
                .args(["--batch", &workload.batch.to_string()])
                .args(["--rate", &workload.rate_per_process.to_string()])
                // Spread over the interval: together the workers offer a steady rate.
                .args([
                    "--phase",
                    &(index as f64 / workload.processes as f64).to_string(),
                ])
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

pub(crate) fn summarise(
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
        flooder_per_second: None,
        mean_batch: None,
    }
}

pub(crate) fn percentiles(histogram: &Histogram<u64>) -> [f64; 5] {
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
pub(crate) fn ceiling(workload: &Workload) -> anyhow::Result<Measurement> {
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
