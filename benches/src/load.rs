//! The client side of a workload, run in its own process: witness clients (`send`, `log`,
//! `log_batch`, open-loop `log` at a rate) and the direct baseline (a process that writes
//! SQLite itself, one transaction per entry, reading the last hash to extend the chain), and
//! the round trip to a server that only answers.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use rusqlite::{OptionalExtension, TransactionBehavior};
use witness_client::{Client, Options, Spool};
use witness_daemon::format::chain::{GENESIS, hash_row};
use witness_daemon::format::row::{self, Origin};
use witness_daemon::format::schema;

use crate::generate::Generator;

/// What a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Mode {
    /// `send` every entry, then `flush`; records the cost of each `send` call.
    Send,
    /// The same through a `Spool`, whose own thread does the socket I/O.
    Spool,
    /// `log_batch` of `--batch` entries, closed loop; records each call's latency.
    Batch,
    /// `log` one entry at a time as fast as answers come.
    Log,
    /// `log` at `--rate` entries per second; latency from the intended send time.
    Open,
    /// No daemon: write SQLite directly, one transaction per entry.
    Direct,
    /// No daemon: each entry as one frame to a server of [`crate::roundtrip`], waiting for
    /// its answer.
    RoundTrip,
    /// A flooder: `send` through a `Spool` as fast as it goes, cycling through `--count`
    /// entries, until it is killed. It reports nothing; it is the load others are measured
    /// beside.
    Flood,
}

/// A worker's orders.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// What to do.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The daemon's socket, or the database for `direct`.
    #[arg(long)]
    pub target: PathBuf,
    /// Entries to write.
    #[arg(long)]
    pub count: u64,
    /// Entries per `log_batch`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Entries per second, for `open`.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// For `open`: where in its interval this worker's schedule starts, from 0 to 1, so that
    /// many workers together offer a steady rate rather than all sending at the same instants.
    #[arg(long, default_value_t = 0.0)]
    pub phase: f64,
    /// Seed of the entry generator.
    #[arg(long)]
    pub seed: u64,
    /// When to start, in nanoseconds since the Unix epoch, so that all workers start together.
    #[arg(long)]
    pub start_at: u64,
}

/// What a worker reports, as one JSON line on standard output.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WorkerReport {
    /// Entries written.
    pub count: u64,
    /// When the last was acknowledged, ns since the epoch.
    pub end_ns: u64,
    /// Latencies in nanoseconds, HDR V2 serialised, hex.
    pub histogram: String,
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A histogram of nanoseconds from 100 ns to 100 s at three significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(100, 100_000_000_000, 3).unwrap()
}

fn wait_until(ns: u64) {
    let now = now_ns();
    if ns > now {
        std::thread::sleep(Duration::from_nanos(ns - now));
    }
}

fn record(histogram: &mut Histogram<u64>, nanos: u64) {
    histogram.saturating_record(nanos.clamp(100, 100_000_000_000));
}

/// Runs a worker and prints its report.
pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    let mut generator = Generator::new(args.seed);
    // Entries are made before the clock starts: the benchmark measures witness, not the
    // generator.
    let entries: Vec<_> = (0..args.count).map(|_| generator.entry()).collect();
    let mut latencies = histogram();
    if args.mode == Mode::Flood {
        let spool = Spool::connect(&args.target)?;
        wait_until(args.start_at);
        loop {
            for entry in &entries {
                spool.send(entry.clone())?;
            }
        }
    } else if args.mode == Mode::Direct {
        direct(args, entries, &mut latencies)?;
    } else if args.mode == Mode::RoundTrip {
        let mut stream = std::os::unix::net::UnixStream::connect(&args.target)?;
        let mut buffer = Vec::new();
        wait_until(args.start_at);
        for entry in &entries {
            let started = Instant::now();
            crate::roundtrip::call(&mut stream, entry, &mut buffer)?;
            record(&mut latencies, started.elapsed().as_nanos() as u64);
        }
    } else if args.mode == Mode::Spool {
        let options = Options {
            client_name: "witness-bench".into(),
            ..Options::default()
        };
        let spool = Spool::connect_with(
            &args.target,
            options,
            witness_client::spool::DEFAULT_CAPACITY,
        )?;
        wait_until(args.start_at);
        send_each(args, entries, &mut latencies, |entry| spool.send(entry))?;
        spool.flush()?;
    } else {
        let options = Options {
            client_name: "witness-bench".into(),
            ..Options::default()
        };
        let mut client = Client::connect_with(&args.target, options)?;
        wait_until(args.start_at);
        match args.mode {
            Mode::Send => {
                send_each(args, entries, &mut latencies, |entry| client.send(entry))?;
                client.flush()?;
            }
            Mode::Batch => {
                let mut entries = entries.into_iter().peekable();
                while entries.peek().is_some() {
                    let batch: Vec<_> = entries.by_ref().take(args.batch).collect();
                    let started = Instant::now();
                    client.log_batch(batch)?;
                    record(&mut latencies, started.elapsed().as_nanos() as u64);
                }
            }
            Mode::Log => {
                for entry in entries {
                    let started = Instant::now();
                    client.log(entry)?;
                    record(&mut latencies, started.elapsed().as_nanos() as u64);
                }
            }
            Mode::Open => {
                let interval = 1e9 / args.rate;
                for (index, entry) in entries.into_iter().enumerate() {
                    let intended = args.start_at + ((index as f64 + args.phase) * interval) as u64;
                    wait_until(intended);
                    client.log(entry)?;
                    record(&mut latencies, now_ns().saturating_sub(intended));
                }
            }
            Mode::Direct | Mode::RoundTrip | Mode::Spool | Mode::Flood => {
                unreachable!("handled above")
            }
        }
    }
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(&latencies, &mut bytes)?;
    let report = WorkerReport {
        count: args.count,
        end_ns: now_ns(),
        histogram: hex::encode(bytes),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Calls `send` on every entry, timing each call; with a rate, calls are paced so that the
/// daemon keeps up, and what is measured is the caller's own cost, not the wait of a
/// saturated pipeline.
fn send_each(
    args: &WorkerArgs,
    entries: Vec<witness_protocol::Entry>,
    latencies: &mut Histogram<u64>,
    mut send: impl FnMut(witness_protocol::Entry) -> Result<(), witness_client::Error>,
) -> anyhow::Result<()> {
    let interval = if args.rate > 0.0 {
        1e9 / args.rate
    } else {
        0.0
    };
    for (index, entry) in entries.into_iter().enumerate() {
        if interval > 0.0 {
            wait_until(args.start_at + (index as f64 * interval) as u64);
        }
        let started = Instant::now();
        send(entry)?;
        record(latencies, started.elapsed().as_nanos() as u64);
    }
    Ok(())
}

/// Decodes a worker's histogram.
pub fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = hex::decode(text)?;
    Ok(Deserializer::new().deserialize(&mut &bytes[..])?)
}

/// What applications do without witness: each process opens the database and, for every
/// entry, takes the write lock, reads the chain head, inserts and commits.
fn direct(
    args: &WorkerArgs,
    entries: Vec<witness_protocol::Entry>,
    latencies: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let mut connection = rusqlite::Connection::open(&args.target)?;
    connection.busy_timeout(Duration::from_secs(60))?;
    connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    let origin = Origin {
        ts: 0,
        pid: Some(i64::from(std::process::id())),
        uid: Some(0),
        gid: Some(0),
    };
    let mut scratch = Vec::new();
    wait_until(args.start_at);
    for entry in &entries {
        let started = Instant::now();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head: Option<(i64, Vec<u8>)> = transaction
            .prepare_cached(schema::HEAD)?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let (seq, previous) = match head {
            Some((seq, hash)) => (seq + 1, <[u8; 32]>::try_from(hash).unwrap()),
            None => (1, GENESIS),
        };
        let origin = Origin {
            ts: now_ns() as i64,
            ..origin
        };
        let values = row::values(seq, entry, &origin, None, None);
        let hash = hash_row(&previous, &values, &mut scratch);
        {
            let mut insert = transaction.prepare_cached(row::insert_sql())?;
            row::insert(&mut insert, &values, &hash)?;
        }
        transaction.commit()?;
        record(latencies, started.elapsed().as_nanos() as u64);
    }
    Ok(())
}
