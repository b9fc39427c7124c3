//! Appends: checked, rate-limited, admitted to the writer's queue (waiting or refused as the
//! client asked), and handed to the writer as a job that carries its reply handle.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use witness_protocol::limits::{MAX_ENTRIES_PER_APPEND, MAX_INTEGER};
use witness_protocol::{Ack, Append, ErrorCode, ErrorReply, OnFull, Response, ResponseFrame};

use super::connection::Connection;
use crate::store::job::{Job, Origin, Outgoing};

impl Connection {
    /// Checks an append and hands it to the writer, which answers it; answers here only what
    /// the writer never sees (refusals, and `Queued`).
    pub(super) async fn append(&mut self, id: u64, append: Append, n_bytes: usize) {
        // Received now, whatever the wait for room below: `ts` is when the daemon read the
        // entry, and acknowledgement times count the wait.
        let (ts, received) = (now_ns(), std::time::Instant::now());
        if let Err(reply) = check_append(&append) {
            self.refuse(id, reply).await;
            return;
        }
        let n_entries = append.entries.len() as u32;
        let gate = &self.shared.gate;
        if let Err(reason) =
            gate.rates
                .take(&gate.access(), &self.peer, n_entries as usize, n_bytes)
        {
            return self
                .refuse(id, ErrorReply::new(ErrorCode::Busy, reason))
                .await;
        }
        let Some(connection_permit) = self.permit().await else {
            return;
        };
        let admission = Arc::clone(&self.shared.admission);
        let admitted = match append.on_full {
            // A connection waits on its own share first: one that floods waits behind its
            // own backlog, never in everyone's line.
            OnFull::Wait => tokio::select! {
                admitted = admission.wait(&self.lane, n_entries as usize) => admitted,
                _ = self.abandon.cancelled() => return,
            },
            OnFull::Busy => match admission.try_now(&self.lane, n_entries as usize) {
                Some(admitted) => admitted,
                None => {
                    drop(connection_permit);
                    let reply = ErrorReply::new(
                        ErrorCode::Busy,
                        format!(
                            "the queue has no room for {n_entries} entries; nothing was \
                             recorded: retry later, or send with OnFull::Wait to be slowed \
                             instead"
                        ),
                    );
                    self.refuse(id, reply).await;
                    return;
                }
            },
        };
        let ack = append.ack;
        let alone = self.in_flight.available_permits() + 1 == self.limits.max_in_flight;
        let job = Box::new(Job {
            request_id: id,
            ack,
            producer: append.producer,
            entries: append.entries,
            origin: Origin { ts, ..self.origin },
            received,
            reply_to: self.reply_to.clone(),
            connection_permit,
            admitted,
            alone,
        });
        if let Err(job) = self.shared.writer.push(self.lane_id, job) {
            // A closed queue means the writer is gone, and the client must hear that nothing
            // was recorded.
            let reply = ErrorReply::new(
                ErrorCode::ShuttingDown,
                "the writer has stopped; nothing was recorded",
            );
            self.shared.stats.reject(ErrorCode::ShuttingDown);
            let frame = ResponseFrame {
                id,
                response: Response::Error(reply),
            };
            let _ = self.reply_to.send(Outgoing {
                frame,
                permit: Some(job.connection_permit),
            });
            return;
        }
        if ack == Ack::Queued {
            self.answer(id, Response::Queued { count: n_entries }).await;
        }
    }
}

/// Checks an append before it takes room in the queue: the limits of every entry, that every
/// payload parses as JSON and every `imported` as a JSON object, and the producer numbers.
fn check_append(append: &Append) -> Result<(), ErrorReply> {
    let n_entries = append.entries.len();
    if n_entries == 0 {
        return Err(ErrorReply::new(
            ErrorCode::BadRequest,
            "an append needs at least one entry",
        ));
    }
    if n_entries > MAX_ENTRIES_PER_APPEND {
        return Err(ErrorReply::new(
            ErrorCode::BadRequest,
            format!(
                "an append may hold at most {MAX_ENTRIES_PER_APPEND} entries; this one has \
                 {n_entries}: split it"
            ),
        ));
    }
    if let Some(producer) = append.producer {
        let last = producer.first_number.checked_add(n_entries as u64 - 1);
        if producer.producer_id == 0
            || producer.producer_id > MAX_INTEGER
            || producer.first_number == 0
            || last.is_none_or(|last| last > MAX_INTEGER)
        {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "producer id and entry numbers must be between 1 and {MAX_INTEGER}; got \
                     producer {} numbering from {}",
                    producer.producer_id, producer.first_number
                ),
            ));
        }
    }
    for (index, entry) in append.entries.iter().enumerate() {
        let invalid = |message: String| ErrorReply {
            code: ErrorCode::InvalidEntry,
            message: format!("entry {index}: {message}; nothing of the append was recorded"),
            entry_index: Some(index as u32),
        };
        entry
            .check_limits()
            .map_err(|error| invalid(error.to_string()))?;
        serde_json::from_str::<serde::de::IgnoredAny>(&entry.payload)
            .map_err(|error| invalid(format!("payload is not valid JSON: {error}")))?;
        if let Some(imported) = &entry.imported {
            // An object, so that readers can rely on looking fields up in it.
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(imported)
                .map_err(|error| invalid(format!("imported is not a JSON object: {error}")))?;
        }
    }
    Ok(())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i64)
}
