//! Messages for operating the daemon: its health (`Stats`) and maintenance of its database.
//!
//! Like every message type, field order is encoding: new fields go at the end of a new
//! protocol version, never in between.

use serde::{Deserialize, Serialize};

/// The daemon's health and load, answered to `Request::Stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The daemon's name and version, as in its `Hello`.
    pub server: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Entries committed since start (re-sent duplicates not counted).
    pub entries_total: u64,
    /// Entries committed per second over the last ten seconds.
    pub entries_per_sec: f64,
    /// The last committed `seq`.
    pub last_seq: u64,
    /// Transactions committed since start.
    pub batches_total: u64,
    /// Transactions that failed and were rolled back since start.
    pub batches_failed: u64,
    /// Entries accepted and waiting for (or inside) a commit.
    pub queue_depth: u64,
    /// Entries the queue holds before producers are slowed.
    pub queue_capacity: u64,
    /// Entries per committed transaction, over the last one to two minutes.
    pub batch_entries: Percentiles,
    /// Microseconds to write and commit a transaction, fsync included, same window.
    pub commit_us: Percentiles,
    /// Microseconds from reading an append to sending its `Committed`, same window.
    pub ack_us: Percentiles,
    /// Connections open now.
    pub connections: u64,
    /// The most connections open at once since start.
    pub connections_max: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Requests refused since start, by `ErrorCode` name, only those counted at least once.
    pub rejections: Vec<(String, u64)>,
    /// Size of the database file in bytes.
    pub db_bytes: u64,
    /// Size of its write-ahead log in bytes.
    pub wal_bytes: u64,
    /// Resident memory of the daemon in bytes.
    pub rss_bytes: u64,
    /// Peak resident memory in bytes.
    pub rss_peak_bytes: u64,
    /// Set once the daemon has stopped acknowledging entries for good (its database file was
    /// deleted or replaced under it): why. The daemon then stops, with a non-zero status.
    pub failure: Option<String>,
    /// Appends refused with `Busy` because their user went past a configured rate, by uid.
    pub rate_limited: Vec<(u32, u64)>,
    /// The forwarder to the fleet's PostgreSQL, when one is configured.
    pub forward: Option<ForwardReport>,
    /// Bytes free on the file system that holds the database.
    pub disk_free_bytes: u64,
    /// Days until the free space falls to `min_free_bytes` at the current rate of entries;
    /// `None` while no entries arrive.
    pub disk_days_left: Option<f64>,
    /// Set while new entries are refused for want of disk space: why.
    pub disk_low: Option<String>,
    /// The first `seq` the live log holds: 1 until retention pruned it.
    pub first_seq: u64,
    /// Entries pruned from the live log since start, archived or dropped.
    pub entries_pruned: u64,
    /// Seconds the writer spent deleting pruned entries since start: what pruning took from
    /// ingest on the writer's thread.
    pub prune_seconds: f64,
}

/// How far the forwarder to the fleet's PostgreSQL has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardReport {
    /// This host's id at the centre.
    pub host_id: String,
    /// `forwarding`, `connecting`, or why it is not forwarding (`disconnected: …`,
    /// `refused: …`).
    pub state: String,
    /// The last `seq` the centre holds.
    pub forwarded_seq: u64,
    /// Entries committed here and not yet at the centre.
    pub lag_entries: u64,
    /// Seconds the oldest of them has waited.
    pub lag_seconds: f64,
    /// Entries forwarded since start.
    pub entries_total: u64,
    /// Batches committed at the centre since start.
    pub batches_total: u64,
    /// Failed connections or batches since start.
    pub errors_total: u64,
}

/// A distribution summarised: how many values, their sum, and points of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded in the window.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

/// Work on the database that an operator asks for, answered with `Maintained`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaintenanceTask {
    /// Refresh the query planner's statistics (`ANALYZE`, bounded so that ingest waits
    /// milliseconds, not seconds).
    Analyze,
    /// Write a consistent, compacted copy of the database to a new file (`VACUUM INTO`),
    /// from a read snapshot, so ingest goes on meanwhile. The path is absolute, is written by
    /// the daemon's user, and must not exist yet.
    Backup {
        /// Where the copy goes.
        path: String,
    },
    /// Prune the oldest entries from the live log, sealing them into archive segments first
    /// (or, with `drop` and no archive folder configured, deleting them with only the log's
    /// record of it). Whole tiles of 256 entries go; the last entry always stays. Answered
    /// once done, with `last_seq` the last entry pruned and `bytes` the archive bytes written.
    Prune {
        /// Entries with a smaller `seq` go.
        before_seq: Option<u64>,
        /// Entries dated (or received) before this time go, in nanoseconds since the epoch.
        before_time: Option<i64>,
        /// Whether entries may be deleted without an archive.
        drop: bool,
    },
}

/// The latest signed checkpoint of a log, and its verifier key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The C2SP signed note of the latest checkpoint (origin, size, root); `None` before the
    /// first is signed.
    pub note: Option<String>,
    /// The log's verifier key, `<name>+<key id>+<base64 key>`.
    pub verifier_key: String,
}

/// A consistency proof between two trees of a log, with the signed checkpoint of the newer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// The older tree's size.
    pub old_size: u64,
    /// The older tree's root, as the daemon computes it from its tiles (check it against a
    /// checkpoint of your own).
    pub old_root: [u8; 32],
    /// The checkpoint the daemon signed at the older size, if it signed one there.
    pub old_note: Option<String>,
    /// The signed checkpoint of the newer tree.
    pub new_note: String,
    /// The proof (RFC 9162 §2.1.4), from the older tree to the newer.
    pub proof: Vec<[u8; 32]>,
}

/// What a maintenance task did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    /// The task, as asked.
    pub task: MaintenanceTask,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// For a backup, the size of the copy in bytes; for a prune, the bytes of the archive
    /// segments written.
    pub bytes: Option<u64>,
    /// For a backup, the last `seq` the copy holds; for a prune, the last `seq` the log no
    /// longer holds (the live log starts after it), `None` when it was never pruned.
    pub last_seq: Option<u64>,
}

/// One budget of the daemon's configuration and its spend in the current period, as
/// `witness budgets` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// The budget's name.
    pub name: String,
    /// `day`, `week` (from Monday) or `month`.
    pub period: String,
    /// The time zone periods are counted in (`UTC` unless configured).
    pub time_zone: String,
    /// The current period's start and end, in nanoseconds since the Unix epoch.
    pub period_start: i64,
    /// See `period_start`.
    pub period_end: i64,
    /// The limit, in micro-USD.
    pub limit_micro_usd: u64,
    /// Money of the priced entries the budget covers, dated in the period so far.
    pub spent_micro_usd: u64,
    /// Entries the budget covers that have tokens and no price: not in `spent_micro_usd`.
    pub unpriced: u64,
    /// `spent / limit`.
    pub ratio: f64,
    /// The spend at the period's end if it goes on at the rate so far.
    pub projected_micro_usd: u64,
    /// The fractions of the limit at which the daemon records a `witness.budget` entry.
    pub warn_at: Vec<f64>,
    /// Of those, the ones this period has crossed (and recorded).
    pub crossed: Vec<f64>,
}

/// A one-time login to the dashboard: the browser that opens `url` trades the token in its
/// fragment for a session of the user who asked, with that user's read rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebLogin {
    /// The dashboard's login address with the token after `#`, such as
    /// `http://127.0.0.1:7319/login#token=…`; the fragment never reaches a server's log.
    pub url: String,
    /// Seconds until the token expires unused.
    pub expires_in_secs: u64,
}

/// Where a daemon keeps what it serves, as it opened them: so that a person or a script can
/// find the database, the key and the state files without knowing the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathsReport {
    /// The socket it listens on (`(passed by the service manager)` when inherited).
    pub socket: String,
    /// The database file (its WAL is beside it, with `-wal`).
    pub db: String,
    /// The signing key (`key_file`).
    pub key_file: String,
    /// The verifier key, beside the signing key with `.pub`.
    pub verifier_file: String,
    /// The latest signed checkpoint (`checkpoint_file`).
    pub checkpoint_file: String,
    /// The last acknowledged entry's mark, beside the checkpoint with `.acked`.
    pub acked_file: String,
    /// Where archive segments go, when retention archives.
    pub archive_dir: Option<String>,
}
