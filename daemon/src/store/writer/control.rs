//! What the writer does between batches besides upkeep: the `Control` requests of the rest of
//! the daemon (batching retuned, `ANALYZE`, a checkpoint signed now, a range to prune), and at
//! start the loss an operator accepted.

use std::time::Instant;

use serde_json::json;
use witness_protocol::Entry;

use super::Writer;
use super::prune::Pruning;
use crate::format::schema::OpenError;
use crate::store::checkpoint::Loss;
use crate::store::job::{Control, Job, Origin};

impl Writer {
    /// Handles a request other than an append, between batches.
    pub(super) fn control(&mut self, request: Control) {
        match request {
            Control::Tune {
                max_batch_entries,
                max_batch_delay,
            } => {
                self.config.max_batch_entries = max_batch_entries;
                self.config.max_batch_delay = max_batch_delay;
                tracing::info!(
                    max_batch_entries,
                    max_batch_delay_us = max_batch_delay.as_micros() as u64,
                    "batching retuned"
                );
            }
            Control::Analyze(answer) => {
                let started = Instant::now();
                let result = self
                    .connection
                    .execute_batch("ANALYZE")
                    .map(|()| started.elapsed());
                match &result {
                    Ok(elapsed) => tracing::info!(elapsed_ms = %millis(*elapsed), "analyze"),
                    Err(error) => tracing::warn!(%error, "analyze failed"),
                }
                let _ = answer.send(result);
            }
            Control::Sign(answer) => {
                if self.failure.is_none() {
                    self.sign_checkpoint(true);
                }
                let _ = answer.send(());
            }
            Control::Prune(segment, costs, answer) => match self.begin_prune(&segment) {
                Ok(()) => {
                    self.pruning = Some(Pruning {
                        to: segment.last_seq,
                        answer: Some(answer),
                        failure: None,
                        costs: costs.into(),
                    });
                }
                Err(reason) => {
                    tracing::warn!(%reason, "prune refused");
                    let _ = answer.send(Err(reason));
                }
            },
        }
    }

    /// Records a loss the operator accepted, before anything else is written: an entry
    /// `witness.lost` for every sequence number the lost tail had held, so that none is
    /// handed out twice, then one `witness.loss_accepted` that says what was lost and holds
    /// the checkpoint that showed it; then signs the new tree, which replaces the old
    /// checkpoint in the state file.
    pub(super) fn record_loss(&mut self, loss: Loss) -> Result<(), OpenError> {
        let origin = Origin::daemon();
        let mut entries = Vec::new();
        if let Some((from, to)) = loss.missing {
            entries.extend(
                (from..=to).map(|seq| {
                    Entry::new("witness.lost", "witnessd").payload(json!({ "seq": seq }))
                }),
            );
        }
        entries.push(
            Entry::new("witness.loss_accepted", "witnessd").payload(json!({
                "reason": loss.reason,
                "lost_from": loss.missing.map(|(from, _)| from),
                "lost_to": loss.missing.map(|(_, to)| to),
                "checkpoint": loss.note,
            })),
        );
        let expected = self.head.seq + entries.len() as i64;
        for chunk in entries.chunks(10_000) {
            let mut batch = vec![Job::internal(chunk.to_vec(), origin)];
            self.commit(&mut batch);
        }
        if self.head.seq != expected {
            return Err(OpenError::Forgotten(
                "could not record the accepted loss in the log; nothing else was written".into(),
            ));
        }
        tracing::warn!(
            lost = %loss
                .missing
                .map_or_else(String::new, |(first, last)| format!("{first} to {last}")),
            recorded_to = self.head.seq,
            "the loss is recorded in the log"
        );
        self.sign_checkpoint(true);
        Ok(())
    }
}

/// Milliseconds to three places, as the daemon's log says a short duration: `2.828`.
fn millis(elapsed: std::time::Duration) -> String {
    format!("{:.3}", elapsed.as_secs_f64() * 1000.0)
}
