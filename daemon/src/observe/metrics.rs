//! Health figures: what `witness stats`, the Prometheus endpoint and systemd's `STATUS=` line
//! show.
//!
//! Counters are atomics bumped where things happen. Distributions (batch size, commit time,
//! acknowledgement time) are HDR histograms the writer fills once per batch, under a lock no
//! one else takes on the hot path; they cover the last one to two minutes, because an
//! operator asks "how is it now", and a histogram since start would hide a bad minute. The
//! entries-per-second rate comes from a sample taken every second. The counters themselves
//! live in `stats`; `prometheus` writes a report in Prometheus's text format.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use witness_protocol::admin::{ForwardReport, StatsReport};

use crate::access::Gate;
use crate::stats::{Distribution, ForwardStats, ServerStats, WriterStats};
use crate::store::admission::Admission;
use crate::store::writer::WriterHandle;

/// Samples of the committed count kept for the rate: ten seconds at one a second.
const RATE_SAMPLES: usize = 11;

/// Everything a stats report is made from, shared by the daemon's parts.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    server: Arc<ServerStats>,
    writer: Arc<WriterStats>,
    committed: watch::Receiver<u64>,
    queue: Arc<Semaphore>,
    queue_capacity: usize,
    gate: Arc<Gate>,
    db_path: PathBuf,
    samples: Mutex<VecDeque<(Instant, u64)>>,
    forward: Option<Arc<ForwardStats>>,
}

impl Metrics {
    /// Figures of a daemon whose connections count into `server`, with `writer` and its
    /// queue's `admission`, and whose access policy is `gate`.
    pub fn new(
        server: Arc<ServerStats>,
        writer: &WriterHandle,
        admission: &Admission,
        gate: Arc<Gate>,
    ) -> Self {
        Metrics {
            started: Instant::now(),
            server,
            writer: Arc::clone(writer.stats()),
            committed: writer.committed(),
            queue: Arc::clone(&admission.queue),
            queue_capacity: admission.capacity(),
            gate,
            db_path: writer.db_path().to_owned(),
            samples: Mutex::new(VecDeque::with_capacity(RATE_SAMPLES)),
            forward: None,
        }
    }

    /// These figures with the forwarder's, for a daemon that forwards to a fleet.
    pub fn with_forward(mut self, forward: Arc<ForwardStats>) -> Self {
        self.forward = Some(forward);
        self
    }

    /// How far the forwarder has come, if there is one.
    pub fn forward(&self) -> Option<ForwardReport> {
        let forward = self.forward.as_ref()?;
        let forwarded_seq = forward.forwarded_seq.load(Ordering::Relaxed);
        let lag_entries = self.committed.borrow().saturating_sub(forwarded_seq);
        Some(ForwardReport {
            host_id: forward.host_id.lock().expect("never poisoned").clone(),
            state: forward.state(),
            forwarded_seq,
            lag_entries,
            lag_seconds: if lag_entries == 0 {
                0.0
            } else {
                forward.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
            },
            entries_total: forward.entries.load(Ordering::Relaxed),
            batches_total: forward.batches.load(Ordering::Relaxed),
            errors_total: forward.errors.load(Ordering::Relaxed),
        })
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

    /// Money and tokens committed since start, by component and model.
    pub fn spend(&self) -> Vec<((String, String), crate::format::cost::CostSums)> {
        self.writer.spend.snapshot()
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
        let mut report = StatsReport {
            server: concat!("witnessd ", env!("CARGO_PKG_VERSION")).to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            entries_total: self.writer.entries_committed.load(Ordering::Relaxed),
            entries_per_sec: self.entries_per_sec(),
            last_seq: *self.committed.borrow(),
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
            forward: self.forward(),
            disk_free_bytes: self.writer.disk_free_bytes.load(Ordering::Relaxed),
            disk_days_left: None,
            disk_low: self.writer.disk_low.lock().expect("never poisoned").clone(),
            first_seq: self.writer.first_seq.load(Ordering::Relaxed).max(1),
            entries_pruned: self.writer.entries_pruned.load(Ordering::Relaxed),
            prune_seconds: self.writer.prune_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        };
        report.disk_days_left = self.days_left(&report);
        report
    }

    /// Days until the free space falls to `min_free_bytes` at the current rate: the rate of
    /// entries times the bytes an entry takes in this database (file and WAL over the
    /// entries it holds, which after pruning are fewer than `last_seq`).
    fn days_left(&self, report: &StatsReport) -> Option<f64> {
        let live = (report.last_seq + 1).saturating_sub(report.first_seq);
        let bytes_per_entry = (report.db_bytes + report.wal_bytes) as f64 / live.max(1) as f64;
        let growth = report.entries_per_sec * bytes_per_entry;
        if growth <= 0.0 || report.disk_free_bytes == 0 {
            return None;
        }
        let room = report
            .disk_free_bytes
            .saturating_sub(self.writer.min_free_bytes.load(Ordering::Relaxed));
        Some(room as f64 / growth / 86_400.0)
    }

    /// The one-line summary systemd shows in `systemctl status`.
    pub fn status_line(&self) -> String {
        let mut line = format!(
            "{:.0} entries/s, queue {}/{}, {} connections, {} entries committed",
            self.entries_per_sec(),
            self.queue_depth(),
            self.queue_capacity,
            self.server.connections.load(Ordering::Relaxed),
            self.writer.entries_committed.load(Ordering::Relaxed),
        );
        if self
            .writer
            .disk_low
            .lock()
            .expect("never poisoned")
            .is_some()
        {
            line.push_str(", REFUSING ENTRIES: disk low");
        }
        if let Some(forward) = self.forward() {
            let state = forward.state.split(':').next().unwrap_or_default();
            let entries = if forward.lag_entries == 1 {
                "entry"
            } else {
                "entries"
            };
            line.push_str(&format!(
                ", fleet {state}, {} {entries} behind ({:.0} s)",
                forward.lag_entries, forward.lag_seconds
            ));
        }
        line
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
