//! Shared parts of witness's benchmarks: realistic entries, the client-side workers, and
//! writing entries straight into a witness database (the ceiling, and fixtures).

pub mod generate;
pub mod load;
pub mod reads;
pub mod roundtrip;

use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use witness_daemon::format::chain::{GENESIS, hash_row_and_leaf};
use witness_daemon::format::row::{self, Origin};
use witness_daemon::format::tree::Tree;
use witness_protocol::{Entry, ProducerRef};

/// Writes `entries` into an empty witness database exactly as the writer would (same
/// statement, row, hash chain, Merkle tiles), `batch` entries per immediate transaction, calling
/// `on_commit` with each transaction's duration.
pub fn write_batches(
    connection: &mut Connection,
    entries: &[Entry],
    batch: usize,
    mut on_commit: impl FnMut(Duration),
) -> rusqlite::Result<()> {
    let origin = Origin {
        ts: 0,
        pid: Some(1),
        uid: Some(0),
        gid: Some(0),
    };
    let producer = ProducerRef {
        producer_id: 1,
        first_number: 1,
    };
    let mut scratch = Vec::new();
    let mut previous = GENESIS;
    let mut tree = Tree::default();
    let mut seq = 0;
    for chunk in entries.chunks(batch) {
        let started = Instant::now();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = transaction.prepare_cached(row::insert_sql())?;
            for entry in chunk {
                seq += 1;
                let origin = Origin {
                    ts: load::now_ns() as i64,
                    ..origin
                };
                let values = row::values(seq, entry, &origin, Some(producer), Some(seq));
                let (hash, leaf) = hash_row_and_leaf(&previous, &values, &mut scratch);
                previous = hash;
                tree.push(leaf);
                row::insert(&mut insert, &values, &previous)?;
            }
            tree.save(&transaction)?;
        }
        transaction.commit()?;
        on_commit(started.elapsed());
    }
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count), for reporting
/// several runs as one figure.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The release `witnessd` beside the running benchmark binary, which must have been built.
pub fn release_witnessd() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name("witnessd");
    anyhow::ensure!(
        path.exists(),
        "build it first: cargo build --release -p witness-daemon"
    );
    Ok(path)
}

/// Waits, at most ten seconds, until a daemon answers on `socket`.
pub fn wait_until_serving(socket: &std::path::Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while witness_client::Client::connect(socket).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "witnessd did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
