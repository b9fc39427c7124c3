//! Shared parts of witness's benchmarks: realistic entries, the client-side workers, and
//! writing entries straight into a witness database (the ceiling, and fixtures).

pub mod generate;
pub mod load;
pub mod reads;

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
