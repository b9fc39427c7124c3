//! The counters and distributions the daemon's parts share: the connection side's, the
//! writer's, and the writer's timings. They live on the ground floor, below every part that
//! bumps or reads them, so that the writer, the connections and the metrics import this file
//! instead of each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use witness_protocol::ErrorCode;
use witness_protocol::admin::Percentiles;

/// Every `ErrorCode`, in the order of `ServerStats::rejections_by_code`.
const ERROR_CODES: [ErrorCode; 11] = [
    ErrorCode::VersionMismatch,
    ErrorCode::ExpectedHello,
    ErrorCode::FrameTooLarge,
    ErrorCode::BadFrame,
    ErrorCode::BadRequest,
    ErrorCode::InvalidEntry,
    ErrorCode::Busy,
    ErrorCode::ShuttingDown,
    ErrorCode::Storage,
    ErrorCode::Forbidden,
    ErrorCode::TimedOut,
];

/// Counters of the connection side, for stats.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// The most connections open at once since start.
    pub connections_max: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Requests refused, by the index of their `ErrorCode`.
    rejections_by_code: [AtomicU64; ERROR_CODES.len()],
}

impl ServerStats {
    /// Counts a refused request.
    pub(crate) fn reject(&self, code: ErrorCode) {
        if let Some(index) = ERROR_CODES.iter().position(|known| *known == code) {
            self.rejections_by_code[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refused requests since start, by reason, leaving out reasons never seen.
    pub fn rejections(&self) -> Vec<(String, u64)> {
        ERROR_CODES
            .iter()
            .zip(&self.rejections_by_code)
            .map(|(code, count)| (format!("{code:?}"), count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Counts a connection opened.
    pub(crate) fn connection_opened(&self) {
        let now = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_max.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters the writer publishes for metrics and the watchdog.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Entries committed since start (duplicates not counted).
    pub entries_committed: AtomicU64,
    /// Transactions committed since start.
    pub batches_committed: AtomicU64,
    /// Batches that failed and were rolled back.
    pub batches_failed: AtomicU64,
    /// Bumped every time the writer loop turns, busy or idle; the watchdog reads it.
    pub heartbeat: AtomicU64,
    /// Batch size, commit and acknowledgement times.
    pub timings: std::sync::Mutex<Timings>,
    /// Why the writer stopped acknowledging for good, once it has.
    pub failure: std::sync::Mutex<Option<String>>,
    /// Cancelled when the writer fails for good: the server then stops the daemon.
    pub failed: tokio_util::sync::CancellationToken,
    /// Bytes free on the database's file system, as last looked at.
    pub disk_free_bytes: AtomicU64,
    /// The writer's `min_free_bytes`.
    pub min_free_bytes: AtomicU64,
    /// Why new entries are refused for want of disk space, while they are.
    pub disk_low: std::sync::Mutex<Option<String>>,
    /// The first `seq` the live log holds: 1 until it is pruned.
    pub first_seq: AtomicU64,
    /// Entries pruned from the live log since start (archived or dropped).
    pub entries_pruned: AtomicU64,
    /// Time the writer spent deleting pruned entries since start, in nanoseconds: what
    /// pruning takes from ingest on the writer's thread.
    pub prune_nanos: AtomicU64,
    /// Money and tokens committed since start, by component and model.
    pub spend: Spend,
}

/// Most (component, model) series the spend counters keep; the entries of any further pair
/// count under `(other)` for both labels, so that a flood of made-up names cannot grow the
/// exposition without bound.
pub const MAX_SPEND_SERIES: usize = 1000;

/// The label values of the series that holds every pair past [`MAX_SPEND_SERIES`].
pub const OTHER_SERIES: &str = "(other)";

/// Money and tokens of the committed entries that carry a cost, since start, by component
/// and model (`''` for none): the Prometheus spend series. Summed per batch by the writer
/// after its commit, so a counter never counts what was rolled back.
#[derive(Debug, Default)]
pub struct Spend {
    series: std::sync::Mutex<
        std::collections::BTreeMap<(String, String), crate::format::cost::CostSums>,
    >,
}

impl Spend {
    /// Adds a committed batch's sums, by (component, model).
    pub fn add<'a>(
        &self,
        batch: impl IntoIterator<Item = (&'a str, &'a str, crate::format::cost::CostSums)>,
    ) {
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (component, model, sums) in batch {
            let key = (component.to_owned(), model.to_owned());
            let key = if series.contains_key(&key) || series.len() < MAX_SPEND_SERIES {
                key
            } else {
                (OTHER_SERIES.to_owned(), OTHER_SERIES.to_owned())
            };
            series.entry(key).or_default().add(&sums);
        }
    }

    /// Every series and its sums, by component and model.
    pub fn snapshot(&self) -> Vec<((String, String), crate::format::cost::CostSums)> {
        let series = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        series
            .iter()
            .map(|(key, sums)| (key.clone(), *sums))
            .collect()
    }
}

impl WriterStats {
    /// Why the writer stopped acknowledging, if it has.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("never poisoned").clone()
    }
}

/// What the forwarder to the fleet's PostgreSQL publishes for metrics.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// This host's id at the centre.
    pub host_id: std::sync::Mutex<String>,
    /// The last `seq` the centre holds (its watermark), as last read or written.
    pub forwarded_seq: AtomicU64,
    /// Seconds the oldest entry not yet at the centre has waited, in milliseconds.
    pub lag_ms: AtomicU64,
    /// Entries forwarded since start.
    pub entries: AtomicU64,
    /// Batches committed at the centre since start.
    pub batches: AtomicU64,
    /// Batches or connections that failed since start.
    pub errors: AtomicU64,
    /// `forwarding`, or what keeps it from forwarding (`disconnected: …`, `refused: …`).
    pub state: std::sync::Mutex<String>,
}

impl ForwardStats {
    /// Sets the state; true when it changed, which is when it is worth a log line.
    pub fn set_state(&self, state: &str) -> bool {
        let mut current = self.state.lock().expect("never poisoned");
        if *current == state {
            return false;
        }
        state.clone_into(&mut current);
        true
    }

    /// The state now.
    pub fn state(&self) -> String {
        self.state.lock().expect("never poisoned").clone()
    }
}

/// How long a histogram fills before it becomes the previous one.
const WINDOW: Duration = Duration::from_secs(60);

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

/// The OTLP receiver's counters, since start.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Export requests received.
    pub requests: AtomicU64,
    /// Spans and log records in the requests that decoded.
    pub items: AtomicU64,
    /// Items refused one by one (`partial_success`).
    pub rejected: AtomicU64,
    /// Requests answered with anything but a 200.
    pub refused: AtomicU64,
}
