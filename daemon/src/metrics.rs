//! Health figures: what `witness stats`, the Prometheus endpoint and systemd's `STATUS=` line
//! show.
//!
//! Counters are atomics bumped where things happen. Distributions (batch size, commit time,
//! acknowledgement time) are HDR histograms the writer fills once per batch, under a lock no
//! one else takes on the hot path; they cover the last one to two minutes, because an
//! operator asks "how is it now", and a histogram since start would hide a bad minute. The
//! entries-per-second rate comes from a sample taken every second.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use witness_protocol::admin::{Percentiles, StatsReport};

use crate::access::Gate;
use crate::server::ServerStats;
use crate::writer::WriterStats;

/// How long a histogram fills before it becomes the previous one.
const WINDOW: Duration = Duration::from_secs(60);

/// Samples of the committed count kept for the rate: ten seconds at one a second.
const RATE_SAMPLES: usize = 11;

/// The writer's distributions over the current and the previous window.
#[derive(Debug)]
pub struct Timings {
    current: [Histogram<u64>; 3],
    previous: [Histogram<u64>; 3],
    rotated: Instant,
}

/// Which distribution of [`Timings`].
#[derive(Debug, Clone, Copy)]
pub enum Distribution {
    /// Entries per transaction.
    BatchEntries = 0,
    /// Microseconds to write and commit a transaction.
    CommitMicros = 1,
    /// Microseconds from reading an append to sending its answer.
    AckMicros = 2,
}

impl Default for Timings {
    fn default() -> Self {
        // Up to an hour in microseconds; anything above is recorded as an hour.
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds and precision");
        Timings {
            current: [histogram(), histogram(), histogram()],
            previous: [histogram(), histogram(), histogram()],
            rotated: Instant::now(),
        }
    }
}

impl Timings {
    /// Records one committed batch: its entries, its commit time and the acknowledgement time
    /// of each of its appends that asked for one.
    pub fn record_batch(
        &mut self,
        entries: u64,
        commit: Duration,
        acks: impl IntoIterator<Item = Duration>,
    ) {
        self.rotate();
        let [batch, commit_us, ack_us] = &mut self.current;
        batch.saturating_record(entries);
        commit_us.saturating_record(commit.as_micros() as u64);
        for ack in acks {
            ack_us.saturating_record(ack.as_micros() as u64);
        }
    }

    /// Percentiles of a distribution over the last one to two windows.
    pub fn percentiles(&mut self, which: Distribution) -> Percentiles {
        self.rotate();
        let index = which as usize;
        let mut merged = self.previous[index].clone();
        // Both have the same bounds, so adding cannot fail.
        let _ = merged.add(&self.current[index]);
        if merged.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: merged.len(),
            p50: merged.value_at_quantile(0.5),
            p90: merged.value_at_quantile(0.9),
            p99: merged.value_at_quantile(0.99),
            p999: merged.value_at_quantile(0.999),
            max: merged.max(),
        }
    }

    fn rotate(&mut self) {
        let age = self.rotated.elapsed();
        if age < WINDOW {
            return;
        }
        if age >= 2 * WINDOW {
            // Nothing recorded in the last window either: both are stale.
            self.previous.iter_mut().for_each(Histogram::reset);
        } else {
            std::mem::swap(&mut self.current, &mut self.previous);
        }
        self.current.iter_mut().for_each(Histogram::reset);
        self.rotated = Instant::now();
    }
}

/// Everything a stats report is made from, shared by the daemon's parts.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    server: Arc<ServerStats>,
    writer: Arc<WriterStats>,
    queue: Arc<Semaphore>,
    queue_capacity: usize,
    gate: Arc<Gate>,
    db_path: PathBuf,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Metrics {
    /// Figures of a daemon whose queue is `queue` (of `queue_capacity` permits), whose access
    /// policy is `gate`, and whose database is at `db_path`.
    pub fn new(
        server: Arc<ServerStats>,
        writer: Arc<WriterStats>,
        queue: Arc<Semaphore>,
        queue_capacity: usize,
        gate: Arc<Gate>,
        db_path: PathBuf,
    ) -> Self {
        Metrics {
            started: Instant::now(),
            server,
            writer,
            queue,
            queue_capacity,
            gate,
            db_path,
            samples: Mutex::new(VecDeque::with_capacity(RATE_SAMPLES)),
        }
    }

    /// Takes the once-a-second sample the rate is computed from.
    pub fn sample(&self) {
        let committed = self.writer.entries_committed.load(Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("never poisoned");
        if samples.len() == RATE_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), committed));
    }

    /// Entries committed per second over the samples held (the last ten seconds).
    pub fn entries_per_sec(&self) -> f64 {
        let samples = self.samples.lock().expect("never poisoned");
        let committed = self.writer.entries_committed.load(Ordering::Relaxed);
        match samples.front() {
            Some(&(at, then)) if at.elapsed() > Duration::from_millis(100) => {
                committed.saturating_sub(then) as f64 / at.elapsed().as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Entries waiting for, or inside, a commit.
    pub fn queue_depth(&self) -> u64 {
        self.queue_capacity
            .saturating_sub(self.queue.available_permits()) as u64
    }

    /// The writer's heartbeat, which advances whenever its loop turns; the watchdog reads
    /// it.
    pub fn writer_heartbeat(&self) -> u64 {
        self.writer.heartbeat.load(Ordering::Relaxed)
    }

    /// A full report.
    pub fn report(&self) -> StatsReport {
        let (batch_entries, commit_us, ack_us) = {
            let mut timings = self.writer.timings.lock().expect("never poisoned");
            (
                timings.percentiles(Distribution::BatchEntries),
                timings.percentiles(Distribution::CommitMicros),
                timings.percentiles(Distribution::AckMicros),
            )
        };
        let file_size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut wal = self.db_path.as_os_str().to_owned();
        wal.push("-wal");
        let (rss_bytes, rss_peak_bytes) = resident_memory();
        StatsReport {
            server: concat!("witnessd ", env!("CARGO_PKG_VERSION")).to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            entries_total: self.writer.entries_committed.load(Ordering::Relaxed),
            entries_per_sec: self.entries_per_sec(),
            last_seq: self.writer.last_seq.load(Ordering::Relaxed),
            batches_total: self.writer.batches_committed.load(Ordering::Relaxed),
            batches_failed: self.writer.batches_failed.load(Ordering::Relaxed),
            queue_depth: self.queue_depth(),
            queue_capacity: self.queue_capacity as u64,
            batch_entries,
            commit_us,
            ack_us,
            connections: self.server.connections.load(Ordering::Relaxed),
            connections_max: self.server.connections_max.load(Ordering::Relaxed),
            connections_total: self.server.connections_total.load(Ordering::Relaxed),
            rejections: self.server.rejections(),
            db_bytes: file_size(&self.db_path),
            wal_bytes: file_size(std::path::Path::new(&wal)),
            rss_bytes,
            rss_peak_bytes,
            failure: self.writer.failure(),
            rate_limited: self.gate.rates.limited(),
        }
    }

    /// The one-line summary systemd shows in `systemctl status`.
    pub fn status_line(&self) -> String {
        format!(
            "{:.0} entries/s, queue {}/{}, {} connections, {} entries committed",
            self.entries_per_sec(),
            self.queue_depth(),
            self.queue_capacity,
            self.server.connections.load(Ordering::Relaxed),
            self.writer.entries_committed.load(Ordering::Relaxed),
        )
    }
}

/// Resident and peak resident memory of this process in bytes, from `/proc/self/status`
/// (zeros where that is unavailable).
fn resident_memory() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A report in the Prometheus text exposition format (version 0.0.4). Distributions are
/// summaries: quantiles over the report's window, and the window's count.
pub fn prometheus(report: &StatsReport) -> String {
    fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
        let _ = writeln!(out, "# HELP witness_{name} {help}");
        let _ = writeln!(out, "# TYPE witness_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "witness_{name}{labels} {value}");
        }
    }
    let mut out = String::with_capacity(4096);
    let plain = |value: u64| vec![(String::new(), value.to_string())];
    metric(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        &[(
            String::new(),
            format!("{:.3}", report.uptime_ms as f64 / 1000.0),
        )],
    );
    metric(
        &mut out,
        "entries_committed_total",
        "counter",
        "Entries committed since start.",
        &plain(report.entries_total),
    );
    metric(
        &mut out,
        "entries_per_second",
        "gauge",
        "Entries committed per second over the last ten seconds.",
        &[(String::new(), format!("{:.1}", report.entries_per_sec))],
    );
    metric(
        &mut out,
        "last_seq",
        "gauge",
        "The last committed sequence number.",
        &plain(report.last_seq),
    );
    metric(
        &mut out,
        "batches_committed_total",
        "counter",
        "Transactions committed since start.",
        &plain(report.batches_total),
    );
    metric(
        &mut out,
        "batches_failed_total",
        "counter",
        "Transactions rolled back since start.",
        &plain(report.batches_failed),
    );
    metric(
        &mut out,
        "queue_depth",
        "gauge",
        "Entries accepted and not yet committed.",
        &plain(report.queue_depth),
    );
    metric(
        &mut out,
        "queue_capacity",
        "gauge",
        "Entries the queue holds before producers are slowed.",
        &plain(report.queue_capacity),
    );
    for (name, help, percentiles) in [
        (
            "batch_entries",
            "Entries per committed transaction, last one to two minutes.",
            &report.batch_entries,
        ),
        (
            "commit_microseconds",
            "Time to write and commit a transaction, last one to two minutes.",
            &report.commit_us,
        ),
        (
            "ack_microseconds",
            "Time from reading an append to sending Committed, last one to two minutes.",
            &report.ack_us,
        ),
    ] {
        let samples: Vec<(String, String)> = [
            ("0.5", percentiles.p50),
            ("0.9", percentiles.p90),
            ("0.99", percentiles.p99),
            ("0.999", percentiles.p999),
            ("1", percentiles.max),
        ]
        .into_iter()
        .map(|(quantile, value)| (format!("{{quantile=\"{quantile}\"}}"), value.to_string()))
        .collect();
        metric(&mut out, name, "summary", help, &samples);
        // The suffixed series of a summary belong to it, under no HELP or TYPE of their own.
        let _ = writeln!(out, "witness_{name}_count {}", percentiles.count);
    }
    metric(
        &mut out,
        "connections",
        "gauge",
        "Connections open now.",
        &plain(report.connections),
    );
    metric(
        &mut out,
        "connections_max",
        "gauge",
        "The most connections open at once since start.",
        &plain(report.connections_max),
    );
    metric(
        &mut out,
        "connections_accepted_total",
        "counter",
        "Connections accepted since start.",
        &plain(report.connections_total),
    );
    let rejections: Vec<(String, String)> = report
        .rejections
        .iter()
        .map(|(reason, count)| (format!("{{reason=\"{reason}\"}}"), count.to_string()))
        .collect();
    metric(
        &mut out,
        "rejections_total",
        "counter",
        "Requests refused since start, by reason.",
        &rejections,
    );
    metric(
        &mut out,
        "database_bytes",
        "gauge",
        "Size of the database file.",
        &plain(report.db_bytes),
    );
    metric(
        &mut out,
        "wal_bytes",
        "gauge",
        "Size of the write-ahead log.",
        &plain(report.wal_bytes),
    );
    metric(
        &mut out,
        "resident_memory_bytes",
        "gauge",
        "Resident memory of the daemon.",
        &plain(report.rss_bytes),
    );
    metric(
        &mut out,
        "resident_memory_peak_bytes",
        "gauge",
        "Peak resident memory of the daemon.",
        &plain(report.rss_peak_bytes),
    );
    out
}
