//! One batch, one transaction: how the writer turns a batch of jobs into rows, receipts and
//! refusals. Re-sent numbers of a producer are found here (exactly-once), the hash chain and
//! the Merkle tree are extended, and the tree's tiles and the derived tables (`producers`,
//! `producer_runs`, `cost_hourly`) change in the same transaction as the entries. Nothing here is kept unless the commit succeeds: the
//! writer (`writer`) decides that, and answers.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use witness_protocol::{Ack, ErrorCode, ErrorReply, ProducerRef, Receipt};

use crate::format::chain::hash_row_and_leaf;
use crate::format::cost::{self, CostSums};
use crate::format::tree::Tree;
use crate::format::{row, schema};
use crate::store::job::Job;

/// Runs the writer walks back, at most, to find re-sent numbers: a client re-sends only what
/// it has not seen acknowledged, which is its last few appends, so this bounds the work one
/// append can cost the writer (about a millisecond a thousand runs) without refusing any
/// real re-send. PROTOCOL.md states it.
pub const MAX_RESEND_RUNS: u32 = 65_536;

/// What the writer knows of a producer: its last committed number, and the first `seq` of
/// its last run (`None` for a producer with no entries stored since runs were kept).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Producer {
    last_number: i64,
    last_run: Option<i64>,
}

/// The head of the chain as committed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    /// The last `seq`, 0 for an empty log.
    pub(super) seq: i64,
    /// Its hash, or the genesis hash.
    pub(super) hash: [u8; 32],
}

/// What one job of a batch came to, before the commit decides whether it stands.
pub(super) enum Outcome {
    Written(Vec<Receipt>),
    Refused(ErrorReply),
}

/// What a batch's transaction came to, once committed.
pub(super) struct Written {
    /// Each job's outcome, in the batch's order.
    pub(super) outcomes: Vec<Outcome>,
    /// The new head of the chain.
    pub(super) head: Head,
    /// The Merkle tree over every entry, the batch's included.
    pub(super) tree: Tree,
    /// The producers whose numbers the batch moved, as they now stand.
    pub(super) producers: HashMap<i64, Producer>,
    /// Entries written (re-sent ones not counted).
    pub(super) n_written: u64,
    /// The costed entries' sums by component and model, for the spend counters.
    pub(super) spend: Vec<(String, String, CostSums)>,
}

/// Writes `batch` after `head` in one transaction, knowing `producers` as committed.
/// Nothing of the writer's state changes here: the new head and producer numbers are
/// returned and kept only if the commit succeeds.
pub(super) fn write(
    connection: &mut Connection,
    batch: &[Job],
    head: Head,
    tree: &Tree,
    producers: &HashMap<i64, Producer>,
    scratch: &mut Vec<u8>,
) -> rusqlite::Result<Written> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut head = head;
    let mut tree = tree.clone();
    let mut touched: HashMap<i64, Producer> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut n_written = 0u64;
    // Summed per batch so that `cost_hourly` takes a few upserts per commit, not one per
    // entry.
    let mut costs: HashMap<(i64, &str, &str, &str), CostSums> = HashMap::new();
    let spend;
    {
        let mut insert = transaction.prepare_cached(row::insert_sql())?;
        let mut add_run = transaction.prepare_cached(schema::ADD_PRODUCER_RUN)?;
        let mut keys = Keys::default();
        for job in batch {
            let (first_new, mut receipts) = match job.producer {
                None => (0, Vec::new()),
                Some(producer) => {
                    let id = producer.producer_id as i64;
                    let known = match touched.get(&id).or_else(|| producers.get(&id)) {
                        Some(&known) => known,
                        None => read_producer(&transaction, id)?,
                    };
                    let want_receipts = job.ack == Ack::Committed;
                    let n = job.entries.len();
                    match already_written(
                        &transaction,
                        producer,
                        n,
                        want_receipts,
                        known,
                        MAX_RESEND_RUNS,
                    )? {
                        Ok((first_new, receipts)) => {
                            let mut now = known;
                            if first_new < n {
                                let first_seq = head.seq + 1;
                                let first_number = producer.first_number as i64 + first_new as i64;
                                add_run.execute((
                                    first_seq,
                                    id,
                                    first_number,
                                    (n - first_new) as i64,
                                    known.last_run,
                                ))?;
                                now = Producer {
                                    last_number: first_number + (n - first_new) as i64 - 1,
                                    last_run: Some(first_seq),
                                };
                            }
                            touched.insert(id, now);
                            (first_new, receipts)
                        }
                        Err(reply) => {
                            outcomes.push(Outcome::Refused(reply));
                            continue;
                        }
                    }
                }
            };
            if job.ack == Ack::Committed {
                receipts.reserve(job.entries.len() - first_new);
            }
            for (index, entry) in job.entries.iter().enumerate().skip(first_new) {
                if let Some(key) = job.keys.get(index) {
                    if let Some(first) = keys.seen(&transaction, key)? {
                        if job.ack == Ack::Committed {
                            receipts.push(first);
                        }
                        continue;
                    }
                    keys.add(&transaction, key, head.seq + 1, job.origin.ts)?;
                }
                head.seq += 1;
                let number = job.producer.map(|p| p.first_number as i64 + index as i64);
                let values = row::values(head.seq, entry, &job.origin, job.producer, number);
                let (hash, leaf) = hash_row_and_leaf(&head.hash, &values, scratch);
                head.hash = hash;
                tree.push(leaf);
                row::insert(&mut insert, &values, &head.hash)?;
                n_written += 1;
                let cost = entry.cost.as_ref();
                let model = cost.and_then(|cost| cost.model.as_deref()).unwrap_or("");
                let key = (
                    schema::hour_of(entry.client_ts.unwrap_or(job.origin.ts)),
                    entry.component.as_str(),
                    entry.event.as_str(),
                    model,
                );
                costs.entry(key).or_default().add(&CostSums::of_entry(cost));
                if job.ack == Ack::Committed {
                    receipts.push(Receipt {
                        seq: head.seq as u64,
                        hash: head.hash,
                    });
                }
            }
            outcomes.push(Outcome::Written(receipts));
        }
        let mut save = transaction.prepare_cached(schema::SAVE_PRODUCER)?;
        for (&id, producer) in &touched {
            save.execute((id, producer.last_number, producer.last_run))?;
        }
        tree.save(&transaction)?;
        // The batch's costed entries by component and model, for the spend counters once
        // the commit holds.
        let mut by_model: HashMap<(&str, &str), CostSums> = HashMap::new();
        for (&(_, component, _, model), sums) in &costs {
            if sums.tokens_in != 0 || sums.micro_usd != 0 || sums.unpriced != 0 || !model.is_empty()
            {
                by_model.entry((component, model)).or_default().add(sums);
            }
        }
        spend = by_model
            .into_iter()
            .map(|((component, model), sums)| (component.to_owned(), model.to_owned(), sums))
            .collect();
        cost::add_to_hourly(&transaction, costs)?;
    }
    transaction.commit()?;
    Ok(Written {
        outcomes,
        head,
        tree,
        producers: touched,
        n_written,
        spend,
    })
}

/// The statements on `received_keys`, prepared once a batch and only for batches with keys.
#[derive(Default)]
struct Keys<'t> {
    find: Option<rusqlite::CachedStatement<'t>>,
    add: Option<rusqlite::CachedStatement<'t>>,
}

impl<'t> Keys<'t> {
    /// The receipt of the entry a key was received with before, if it was.
    fn seen(
        &mut self,
        transaction: &'t rusqlite::Transaction<'_>,
        key: &crate::store::job::ReceivedKey,
    ) -> rusqlite::Result<Option<Receipt>> {
        let find = match &mut self.find {
            Some(find) => find,
            None => self
                .find
                .insert(transaction.prepare_cached(schema::FIND_RECEIVED_KEY)?),
        };
        find.query_row([&key[..]], |row| {
            let hash: Vec<u8> = row.get(1)?;
            Ok(Receipt {
                seq: row.get::<_, i64>(0)? as u64,
                hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0; 32]),
            })
        })
        .optional()
    }

    /// Records that `key` became entry `seq`, received at `received`.
    fn add(
        &mut self,
        transaction: &'t rusqlite::Transaction<'_>,
        key: &crate::store::job::ReceivedKey,
        seq: i64,
        received: i64,
    ) -> rusqlite::Result<()> {
        let add = match &mut self.add {
            Some(add) => add,
            None => self
                .add
                .insert(transaction.prepare_cached(schema::ADD_RECEIVED_KEY)?),
        };
        add.execute((&key[..], seq, received))?;
        Ok(())
    }
}

/// Sends the answer a job's outcome calls for, releasing its permits.
pub(super) fn acknowledge(job: Job, outcome: Outcome) {
    let answer = match outcome {
        Outcome::Written(receipts) => Ok(receipts),
        Outcome::Refused(reply) => Err(reply),
    };
    job.reply.send(job.ack, answer);
}

/// A producer as stored, or a new one.
pub(super) fn read_producer(
    connection: &Connection,
    producer_id: i64,
) -> rusqlite::Result<Producer> {
    Ok(connection
        .prepare_cached(schema::READ_PRODUCER)?
        .query_row([producer_id], |row| {
            Ok(Producer {
                last_number: row.get(0)?,
                last_run: row.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// For an append of `n` entries whose first ones a producer already had committed (a re-send
/// after a lost acknowledgement), how many of them, with their receipts when the client wants
/// receipts. Numbers are consecutive within an append, so the duplicates are always a prefix.
///
/// Every number taken for a duplicate must really be stored, whatever the acknowledgement
/// mode: a number at or below the producer's last that was never stored (a client that
/// reused numbers, or a hand-edited `producers` table) is refused, never acknowledged. The
/// producer's runs, walked back from its last (at most `max_runs` of them), say where each
/// number is; the rows they point at are read to confirm it.
fn already_written(
    connection: &Connection,
    producer: ProducerRef,
    n: usize,
    want_receipts: bool,
    known: Producer,
    max_runs: u32,
) -> rusqlite::Result<Result<(usize, Vec<Receipt>), ErrorReply>> {
    let first = producer.first_number as i64;
    let last = known.last_number;
    if first > last {
        return Ok(Ok((0, Vec::new())));
    }
    let n_known = ((last - first + 1) as usize).min(n);
    let end = first + n_known as i64 - 1;
    let refuse = |number: i64, why: String| {
        let mut reply = ErrorReply::new(ErrorCode::BadRequest, why);
        reply.entry_index = Some((number - first) as u32);
        Ok(Err(reply))
    };
    // The runs that hold numbers in first..=end, newest first: (first_seq, first_number, entries).
    let mut runs: Vec<(i64, i64, i64)> = Vec::new();
    let mut find_run = connection.prepare_cached(schema::FIND_RUN)?;
    let mut cursor = known.last_run;
    let mut walked = 0u32;
    // A run the walk needs but the table no longer has was pruned with its entries.
    let mut pruned = false;
    while let Some(first_seq) = cursor {
        if walked == max_runs {
            return refuse(
                first,
                format!(
                    "entry number {first} of producer {} was committed more than {max_runs} \
                     appends of it ago: too old to re-send; start a new producer",
                    producer.producer_id
                ),
            );
        }
        walked += 1;
        let Some((first_number, entries, previous)) = find_run
            .query_row([first_seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?
        else {
            pruned = true;
            break;
        };
        if first_number <= end {
            runs.push((first_seq, first_number, entries));
        }
        if first_number <= first {
            break;
        }
        cursor = previous;
    }
    let mut receipts = Vec::new();
    let mut find = connection.prepare_cached(schema::FIND_PRODUCED)?;
    let mut expected = first;
    for &(first_seq, first_number, entries) in runs.iter().rev() {
        let from = expected.max(first_number);
        let to = end.min(first_number + entries - 1);
        if from != expected || to < from {
            break;
        }
        let seq = |number: i64| first_seq + (number - first_number);
        let mut rows = find.query((seq(from), seq(to)))?;
        while let Some(row) = rows.next()? {
            let stored = (
                row.get::<_, i64>(0)?,
                row.get::<_, Option<i64>>(1)?,
                row.get::<_, Option<i64>>(2)?,
            );
            let hash = <[u8; 32]>::try_from(row.get_ref(3)?.as_blob().unwrap_or_default());
            if stored
                != (
                    seq(expected),
                    Some(producer.producer_id as i64),
                    Some(expected),
                )
                || hash.is_err()
            {
                break;
            }
            if want_receipts {
                receipts.push(Receipt {
                    seq: stored.0 as u64,
                    hash: hash.expect("checked"),
                });
            }
            expected += 1;
        }
        if expected <= to {
            break;
        }
    }
    if expected > end {
        return Ok(Ok((n_known, receipts)));
    }
    if pruned {
        return refuse(
            expected,
            format!(
                "entry number {expected} of producer {} is at or below its last committed \
                 number {last}, among entries pruned from the live log: too old to re-send \
                 and confirm; it is not recorded twice",
                producer.producer_id
            ),
        );
    }
    refuse(
        expected,
        format!(
            "entry number {expected} of producer {} is at or below its last committed number \
             {last} but was never stored: numbers must increase, so start a new producer",
            producer.producer_id
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log in which producer 1 wrote numbers 1..=5, one append each, at seq 1..=5.
    fn five_runs() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection = schema::open_writer(
            &dir.path().join("witness.db"),
            schema::Durability::Normal,
            1024,
        )
        .unwrap();
        let mut previous: Option<i64> = None;
        for seq in 1..=5i64 {
            connection
                .execute(
                    "INSERT INTO entries (seq, ts, event, component, payload, producer_id, \
                     producer_number, hash) VALUES (?1, 1, 'e', 'c', '{}', 1, ?1, zeroblob(32))",
                    [seq],
                )
                .unwrap();
            connection
                .execute(schema::ADD_PRODUCER_RUN, (seq, 1, seq, 1, previous))
                .unwrap();
            previous = Some(seq);
        }
        (dir, connection)
    }

    #[test]
    fn a_re_send_is_looked_up_no_further_back_than_the_bound() {
        let (_dir, connection) = five_runs();
        let producer = ProducerRef {
            producer_id: 1,
            first_number: 1,
        };
        let known = Producer {
            last_number: 5,
            last_run: Some(5),
        };
        let found = already_written(&connection, producer, 2, true, known, 5).unwrap();
        let (n_known, receipts) = found.expect("within the bound");
        assert_eq!(n_known, 2);
        assert_eq!(
            receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let refused = already_written(&connection, producer, 2, true, known, 4).unwrap();
        let reply = refused.expect_err("past the bound");
        assert!(reply.message.contains("too old to re-send"), "{reply}");
        assert!(
            reply.message.contains("more than 4 appends of it ago"),
            "{reply}"
        );
        assert_eq!(reply.entry_index, Some(0));
        // Numbers near the end need only the last runs.
        let recent = ProducerRef {
            producer_id: 1,
            first_number: 4,
        };
        let found = already_written(&connection, recent, 3, false, known, 2).unwrap();
        assert_eq!(found.expect("recent").0, 2);
    }
}
