//! The forwarder: a thread that copies this host's committed entries, in `seq` order and in
//! batches, to the fleet's PostgreSQL, exactly once.
//!
//! It reads the database through a read connection of its own, never the writer's queue, so
//! it cannot slow ingest: when the centre is slow or away it falls behind and catches up.
//! Each batch is one PostgreSQL transaction that locks the host's row, checks that the
//! host's log still holds what the centre holds (the entry at the watermark has the
//! watermark's hash), recomputes the chain and the tree over the batch, checks the host's
//! signed checkpoints against that tree, copies the rows in (binary `COPY` into a temporary
//! table, then `INSERT … ON CONFLICT DO NOTHING`), adds them to the cost roll-up and moves
//! the watermark. A batch cut off half way leaves nothing behind, and the next resumes from
//! the watermark, so nothing is missing or doubled. A host whose log no longer extends what
//! the centre holds is refused, and the refusal is recorded at the centre.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::OptionalExtension;
use tokio::sync::watch;
use witness_protocol::note::VerifierKey;

use super::{FleetError, ForwardConfig, Target, ensure_schema, event_columns};
use crate::format::chain::{self, Decoded};
use crate::format::cursor::{Break, Cursor, Unheld};
use crate::format::row::{self, Kind, Value};
use crate::format::schema;
use crate::format::tree::Tree;
use crate::stats::ForwardStats;

/// How long the forwarder waits before trying the centre again, at most.
mod check;
mod copy;

use copy::{copy_rows, insert_sql, month_of, read_checkpoints, read_rows};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How often a refused host asks the centre whether the refusal still stands.
const REFUSED_RECHECK: Duration = Duration::from_secs(30);

/// How often an idle forwarder looks for new entries.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// A running forwarder; [`Forwarder::stop`] ends it.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the forwarder needs of the daemon.
#[derive(Debug)]
pub struct Source {
    /// The host's database, read through a connection of the forwarder's own.
    pub db_path: PathBuf,
    /// The host's verifier key, which its checkpoints must verify with at the centre.
    pub verifier_key: String,
    /// The last committed `seq`, from the writer.
    pub committed: watch::Receiver<u64>,
}

impl Forwarder {
    /// Starts forwarding `source` as `host_id` to the centre `config` names.
    pub fn start(
        config: ForwardConfig,
        host_id: String,
        source: Source,
        stats: Arc<ForwardStats>,
    ) -> std::io::Result<Forwarder> {
        let stop = Arc::new(AtomicBool::new(false));
        host_id.clone_into(&mut stats.host_id.lock().expect("never poisoned"));
        stats.set_state("connecting");
        let key = VerifierKey::parse(&source.verifier_key)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        let worker = Worker {
            target: config.target,
            batch_max: config.batch_max,
            host_id,
            source,
            key,
            stats,
            stop: Arc::clone(&stop),
            partitions: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("witness-forward".into())
            .spawn(move || worker.run())?;
        Ok(Forwarder {
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the forwarder to stop and waits for it, at most `within`: a batch in flight is
    /// either committed at the centre or left out whole, and the next start resumes from the
    /// watermark either way.
    pub fn stop(mut self, within: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!(
                "the forwarder did not stop in time; its batch is left to the next start"
            );
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Why a step did not ship a batch.
enum Trouble {
    /// The centre failed or went away: reconnect.
    Centre(FleetError),
    /// The host's own database could not be read: try again later.
    Local(String),
}

impl From<postgres::Error> for Trouble {
    fn from(error: postgres::Error) -> Self {
        Trouble::Centre(error.into())
    }
}

impl From<rusqlite::Error> for Trouble {
    fn from(error: rusqlite::Error) -> Self {
        Trouble::Local(error.to_string())
    }
}

/// What one step did.
enum Step {
    /// A batch of this many entries is at the centre.
    Shipped,
    /// Nothing new to ship.
    Idle,
    /// The centre refuses this host, for this reason.
    Refused(String),
}

/// A host's signed checkpoint and the tree size it signs.
type SignedAt = (i64, String);

/// One row of `entries`, owned, for the time between reading it and shipping it.
struct Stored {
    values: Vec<Decoded>,
    hash: Vec<u8>,
}

impl Stored {
    fn values(&self) -> row::Values<'_> {
        let mut values = [Value::Null; row::HASHED];
        for (value, decoded) in values.iter_mut().zip(&self.values) {
            *value = match decoded {
                Decoded::Null => Value::Null,
                Decoded::Integer(integer) => Value::Integer(*integer),
                Decoded::Text(text) => Value::Text(text),
            };
        }
        values
    }
}

struct Worker {
    target: Target,
    batch_max: usize,
    host_id: String,
    source: Source,
    key: VerifierKey,
    stats: Arc<ForwardStats>,
    stop: Arc<AtomicBool>,
    /// Months of `events` known to have a partition, by their first nanosecond.
    partitions: HashSet<i64>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `duration`, or less if asked to stop.
    fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }

    /// Sets the state, logging it only when it changed: a centre that stays away for an hour
    /// is one line, not one a retry.
    fn state(&self, state: &str, error: bool) {
        if self.stats.set_state(state) {
            if error {
                tracing::error!(host_id = %self.host_id, "forwarding: {state}");
            } else {
                tracing::info!(host_id = %self.host_id, "forwarding: {state}");
            }
        }
    }

    fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        let mut local: Option<rusqlite::Connection> = None;
        while !self.stopping() {
            let mut client = match self.connect() {
                Ok(client) => client,
                Err(error) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.state(&format!("disconnected: {error}"), true);
                    self.pause(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            self.partitions.clear();
            while !self.stopping() {
                let connection = match &local {
                    Some(connection) => connection,
                    None => match schema::open_reader(&self.source.db_path) {
                        Ok(connection) => local.insert(connection),
                        Err(error) => {
                            self.state(&format!("cannot read the local log: {error}"), true);
                            self.pause(Duration::from_secs(1));
                            continue;
                        }
                    },
                };
                match self.step(&mut client, connection) {
                    Ok(Step::Shipped) => {
                        backoff = Duration::from_millis(200);
                        self.state("forwarding", false);
                    }
                    Ok(Step::Idle) => {
                        backoff = Duration::from_millis(200);
                        self.state("forwarding", false);
                        self.pause(IDLE_POLL);
                    }
                    Ok(Step::Refused(reason)) => {
                        self.state(&format!("refused: {reason}"), true);
                        self.pause(REFUSED_RECHECK);
                    }
                    Err(Trouble::Centre(error)) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        self.state(&format!("disconnected: {error}"), true);
                        self.pause(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                    Err(Trouble::Local(error)) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        self.state(&format!("cannot read the local log: {error}"), true);
                        local = None;
                        self.pause(Duration::from_secs(1));
                    }
                }
            }
        }
    }

    /// Connects, creates the schema if missing, makes the staging table and registers the
    /// host (pinning its verifier key) at first contact.
    fn connect(&self) -> Result<postgres::Client, FleetError> {
        let mut client = self.target.connect()?;
        ensure_schema(&mut client)?;
        client.batch_execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS incoming (LIKE events) ON COMMIT DELETE ROWS",
        )?;
        client.execute(
            "INSERT INTO hosts (host_id, verifier_key, last_hash, tree_edge) \
             VALUES ($1, $2, $3, '\\x') ON CONFLICT (host_id) DO NOTHING",
            &[
                &self.host_id,
                &self.key.to_string(),
                &chain::GENESIS.as_slice(),
            ],
        )?;
        Ok(client)
    }

    /// Ships one batch, or finds nothing to ship, or finds the host refused.
    fn step(
        &mut self,
        client: &mut postgres::Client,
        local: &rusqlite::Connection,
    ) -> Result<Step, Trouble> {
        let head = *self.source.committed.borrow();
        let known = self.stats.forwarded_seq.load(Ordering::Relaxed);
        if head <= known && self.stats.batches.load(Ordering::Relaxed) > 0 {
            self.stats.lag_ms.store(0, Ordering::Relaxed);
            return Ok(Step::Idle);
        }
        let mut transaction = client.transaction()?;
        let host = transaction.query_one(
            "SELECT last_seq, last_hash, tree_edge, verifier_key, refused \
             FROM hosts WHERE host_id = $1 FOR UPDATE",
            &[&self.host_id],
        )?;
        let watermark: i64 = host.get(0);
        let watermark_hash: Vec<u8> = host.get(1);
        let edge: Vec<u8> = host.get(2);
        let pinned: String = host.get(3);
        let refused: Option<String> = host.get(4);
        self.stats
            .forwarded_seq
            .store(watermark as u64, Ordering::Relaxed);
        if let Some(reason) = refused {
            return Ok(Step::Refused(reason));
        }
        if pinned != self.key.to_string() {
            // Another log holds this id (a copied configuration, a re-imaged machine, a
            // second daemon on the host): this one is refused, the pinned host goes on.
            let reason = format!(
                "the centre holds host id {:?} for another log, whose key is {pinned}; this \
                 log's key is {}: give it a host_id of its own",
                self.host_id, self.key
            );
            return conflict(transaction, &self.host_id, &self.key.to_string(), reason);
        }
        let watermark_hash: [u8; 32] = watermark_hash.try_into().map_err(|_| {
            Trouble::Centre(FleetError::Postgres(format!(
                "the centre's watermark hash for {} is not 32 bytes",
                self.host_id
            )))
        })?;
        if let Some(reason) = self.check_continuity(local, watermark, &watermark_hash)? {
            return refuse(transaction, &self.host_id, reason);
        }
        let rows = read_rows(local, watermark, self.batch_max)?;
        let Some(last) = rows.last() else {
            transaction.execute(
                "UPDATE hosts SET local_seq = $2 WHERE host_id = $1 AND local_seq <> $2",
                &[&self.host_id, &watermark],
            )?;
            transaction.commit()?;
            self.stats.batches.fetch_max(1, Ordering::Relaxed);
            self.stats.lag_ms.store(0, Ordering::Relaxed);
            return Ok(Step::Idle);
        };
        let last_seq = last.values[row::column::SEQ].clone();
        let Decoded::Integer(last_seq) = last_seq else {
            return Err(Trouble::Local("a row without an integer seq".into()));
        };
        let checkpoints = read_checkpoints(local, watermark, last_seq)?;
        let mut tree = Tree::from_edge(watermark as u64, &edge).map_err(|error| {
            Trouble::Centre(FleetError::Postgres(format!(
                "the centre's tree edge for {}: {error}",
                self.host_id
            )))
        })?;
        let (last_hash, newest_checkpoint) =
            match self.check_batch(&rows, watermark, watermark_hash, &mut tree, &checkpoints) {
                Ok(checked) => checked,
                Err(reason) => return refuse(transaction, &self.host_id, reason),
            };
        self.ensure_partitions(&mut transaction, &rows)?;
        let beyond: bool = transaction
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM events WHERE host_id = $1 AND seq > $2)",
                &[&self.host_id, &watermark],
            )?
            .get(0);
        if beyond {
            let reason = format!(
                "the centre holds entries of this host past its watermark (seq {watermark}): \
                 something other than the forwarder wrote them"
            );
            return refuse(transaction, &self.host_id, reason);
        }
        copy_rows(&mut transaction, &self.host_id, &rows)?;
        let inserted: i64 = transaction.query_one(&insert_sql(), &[])?.get(0);
        if inserted != rows.len() as i64 {
            return Err(Trouble::Centre(FleetError::Postgres(format!(
                "the centre took {inserted} of {} entries; the batch was rolled back",
                rows.len()
            ))));
        }
        for (size, note) in &checkpoints {
            transaction.execute(
                "INSERT INTO checkpoints (host_id, size, note) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&self.host_id, size, note],
            )?;
        }
        let last_ts = last.values[row::column::TS].clone();
        let last_ts = match last_ts {
            Decoded::Integer(ts) => Some(ts),
            _ => None,
        };
        let (checkpoint_size, checkpoint) = match newest_checkpoint {
            Some((size, note)) => (Some(size), Some(note)),
            None => (None, None),
        };
        transaction.execute(
            "UPDATE hosts SET last_seq = $2, last_hash = $3, last_ts = $4, tree_edge = $5, \
             local_seq = greatest($6::bigint, $2::bigint), forwarded_at = now(), \
             checkpoint_size = coalesce($7, checkpoint_size), \
             checkpoint = coalesce($8, checkpoint) WHERE host_id = $1",
            &[
                &self.host_id,
                &last_seq,
                &last_hash.as_slice(),
                &last_ts,
                &tree.edge_bytes(),
                &(head as i64),
                &checkpoint_size,
                &checkpoint,
            ],
        )?;
        transaction.commit()?;
        self.stats
            .forwarded_seq
            .store(last_seq as u64, Ordering::Relaxed);
        self.stats
            .entries
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.update_lag(local, last_seq)?;
        Ok(Step::Shipped)
    }

    /// Creates the monthly partitions of `events` a batch's rows fall in, under a lock so
    /// that hosts do not race to create the same one.
    fn ensure_partitions(
        &mut self,
        transaction: &mut postgres::Transaction<'_>,
        rows: &[Stored],
    ) -> Result<(), Trouble> {
        let mut months: Vec<(i64, i64, String)> = Vec::new();
        for stored in rows {
            if let Decoded::Integer(ts) = stored.values[row::column::TS] {
                // Receive times run in order but for clock steps: a month is worked out
                // once a batch, not once a row.
                if months
                    .iter()
                    .any(|(start, end, _)| (*start..*end).contains(&ts))
                {
                    continue;
                }
                months.push(month_of(ts));
            }
        }
        months.retain(|(start, _, _)| !self.partitions.contains(start));
        if months.is_empty() {
            return Ok(());
        }
        transaction.execute("SELECT pg_advisory_xact_lock(7395847386)", &[])?;
        for (start, end, name) in months {
            transaction.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF events \
                 FOR VALUES FROM ({start}) TO ({end})"
            ))?;
            self.partitions.insert(start);
        }
        Ok(())
    }

    /// Publishes how long the oldest entry not yet forwarded has waited.
    fn update_lag(&self, local: &rusqlite::Connection, forwarded: i64) -> Result<(), Trouble> {
        let waiting: Option<i64> = local
            .query_row(
                "SELECT ts FROM entries WHERE seq = ?1",
                [forwarded + 1],
                |row| row.get(0),
            )
            .optional()?;
        let lag = waiting.map_or(0, |ts| {
            let now = jiff::Timestamp::now().as_nanosecond() as i64;
            (now.saturating_sub(ts).max(0) / 1_000_000) as u64
        });
        self.stats.lag_ms.store(lag, Ordering::Relaxed);
        Ok(())
    }
}

/// Records at the centre that a log whose key is `key` asks to forward under the id of
/// another, leaving the host itself alone, and refuses this log.
fn conflict(
    mut transaction: postgres::Transaction<'_>,
    host_id: &str,
    key: &str,
    reason: String,
) -> Result<Step, Trouble> {
    transaction.execute(
        "INSERT INTO host_conflicts (host_id, verifier_key) VALUES ($1, $2) \
         ON CONFLICT (host_id, verifier_key) DO UPDATE \
         SET last_seen = now(), attempts = host_conflicts.attempts + 1",
        &[&host_id, &key],
    )?;
    transaction.commit()?;
    Ok(Step::Refused(reason))
}

/// Records the refusal at the centre (once: the first reason stands) and commits it.
fn refuse(
    mut transaction: postgres::Transaction<'_>,
    host_id: &str,
    reason: String,
) -> Result<Step, Trouble> {
    transaction.execute(
        "UPDATE hosts SET refused = $2, refused_at = now() WHERE host_id = $1 AND refused IS NULL",
        &[&host_id, &reason],
    )?;
    transaction.commit()?;
    Ok(Step::Refused(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_whole_and_named_by_utc() {
        let (start, end, name) = month_of(1_764_000_000_000_000_000);
        assert_eq!(name, "events_2025_11");
        assert_eq!(start, 1_761_955_200_000_000_000);
        assert_eq!(end, 1_764_547_200_000_000_000);
        let (_, _, december) = month_of(end);
        assert_eq!(december, "events_2025_12");
        assert_eq!(month_of(end - 1).2, "events_2025_11");
        assert_eq!(month_of(0).2, "events_1970_01");
    }
}
