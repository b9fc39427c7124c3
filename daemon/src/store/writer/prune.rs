//! Pruning, as the writer carries it out between batches: recording a sealed range in the
//! log (`witness.pruned`, then its `segments` row) before anything goes, then deleting it in
//! bounded steps, each in a transaction of its own that moves the log's start and takes the
//! range out of the derived tables.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;
use witness_protocol::Entry;

use super::Writer;
use crate::format::archive::{self, Segment};
use crate::format::cost;
use crate::format::schema;
use crate::store::job::{Job, Origin, PRUNE_STEP, PruneRefused};

/// A prune the writer is carrying out between batches.
pub(super) struct Pruning {
    /// The last `seq` to delete.
    pub(super) to: u64,
    /// Answered once the last is deleted; none for a prune resumed at start.
    pub(super) answer: Option<tokio::sync::oneshot::Sender<Result<(), PruneRefused>>>,
    /// The last failure said, so that a step failing again is not logged again.
    pub(super) failure: Option<String>,
    /// The cost sums of the steps to come, by their ranges, as the archiver found them; a
    /// step with none (a prune resumed at start) sums its range itself.
    pub(super) costs: std::collections::VecDeque<((u64, u64), cost::CostGroups)>,
}

impl Writer {
    /// Checks that `segment` is the next range to prune and records it: an entry
    /// `witness.pruned` in the log (so the chain itself says what left it), then the row of
    /// `segments`, before anything is deleted.
    pub(super) fn begin_prune(&mut self, segment: &Segment) -> Result<(), PruneRefused> {
        if let Some(reason) = &self.failure {
            return Err(PruneRefused::Failed(reason.clone()));
        }
        if self.pruning.is_some() {
            return Err(PruneRefused::Busy);
        }
        if segment.first_seq != self.start {
            return Err(PruneRefused::NotAtStart {
                start: self.start,
                first: segment.first_seq,
            });
        }
        if segment.last_seq >= self.head.seq as u64 {
            return Err(PruneRefused::Head(self.head.seq));
        }
        let (_, previous) = schema::log_start(&self.connection)?;
        let last_hash: Vec<u8> = self.connection.query_row(
            "SELECT hash FROM entries WHERE seq = ?1",
            [segment.last_seq as i64],
            |row| row.get(0),
        )?;
        if previous != segment.previous || last_hash != segment.last_hash {
            return Err(PruneRefused::OtherChain {
                first: segment.first_seq,
                last: segment.last_seq,
            });
        }
        let origin = Origin::daemon();
        let entry = Entry::new("witness.pruned", "witnessd").payload(json!({
            "first_seq": segment.first_seq,
            "last_seq": segment.last_seq,
            "last_hash": hex::encode(segment.last_hash),
            "archive": segment.file,
            "sha256": segment.sha256.map(hex::encode),
        }));
        let head = self.head.seq;
        self.commit(&mut vec![Job::internal(vec![entry], origin)]);
        if self.head.seq != head + 1 {
            return Err(PruneRefused::NotRecorded);
        }
        segment.record(&self.connection)?;
        crate::faults::crash_at("segment-recorded");
        match &segment.file {
            Some(file) => tracing::info!(
                first = segment.first_seq,
                last = segment.last_seq,
                %file,
                "archived; deleting the entries from the live log"
            ),
            None => tracing::warn!(
                first = segment.first_seq,
                last = segment.last_seq,
                "dropping entries without an archive, as configured"
            ),
        }
        Ok(())
    }

    /// Deletes the next step of the prune under way, moving the log's start in the same
    /// transaction, and takes the range's entries out of `cost_hourly` and `producer_runs`;
    /// after the last step, the range's level-0 tiles go too (the archive holds them).
    pub(super) fn prune_step(&mut self) {
        let Some(pruning) = &mut self.pruning else {
            return;
        };
        let from = self.start;
        let to = pruning.to.min(from + PRUNE_STEP - 1);
        let last = to == pruning.to;
        // A step that failed and is tried again sums its range itself: its sums were taken.
        let costs = match pruning.costs.front() {
            Some(&(range, _)) if range == (from, to) => {
                pruning.costs.pop_front().map(|(_, groups)| groups)
            }
            _ => None,
        };
        let started = Instant::now();
        // A step needs no fsync of its own: losing it to a power cut only brings back
        // entries already sealed in their segment, and the prune resumes at start. The WAL
        // is one file written in order, so the next batch's fsync makes the step durable
        // too, and a torn tail is cut at the first frame that does not check.
        let _ = self.connection.execute_batch("PRAGMA synchronous = OFF");
        let result = archive::delete_pruned(&mut self.connection, from, to, last, costs);
        let restored = if crate::faults::fails_at("restore-synchronous") {
            Err("a fault injected by the tests".to_owned())
        } else {
            self.connection
                .execute_batch(&format!(
                    "PRAGMA synchronous = {}",
                    self.config.durability.synchronous()
                ))
                .map_err(|error| error.to_string())
        };
        if let Err(error) = restored {
            // Every later commit would skip its fsync: a `Committed` answer would no longer
            // mean durable, so the writer acknowledges nothing more, as for a replaced file.
            let answer = pruning.answer.take();
            self.fail(format!(
                "cannot restore PRAGMA synchronous after a pruning step ({error})"
            ));
            if let Some(answer) = answer {
                let _ = answer.send(Err(PruneRefused::Failed(
                    "it could not restore its durability mid-prune".into(),
                )));
            }
            self.pruning = None;
            return;
        }
        self.stats
            .prune_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.start = to + 1;
                self.stats.first_seq.store(self.start, Ordering::Relaxed);
                self.stats
                    .entries_pruned
                    .fetch_add(to + 1 - from, Ordering::Relaxed);
                crate::faults::crash_at("mid-delete");
                if last {
                    tracing::info!(first_seq = self.start, "the live log now starts here");
                    if let Some(answer) = pruning.answer.take() {
                        let _ = answer.send(Ok(()));
                    }
                    self.pruning = None;
                }
            }
            Err(error) => {
                let reason = error.to_string();
                if pruning.failure.as_ref() != Some(&reason) {
                    tracing::error!(%reason, from, to, "a pruning step failed; it will be tried again");
                    pruning.failure = Some(reason);
                }
            }
        }
    }
}
