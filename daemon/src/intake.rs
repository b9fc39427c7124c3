//! The intake: the one place an append is admitted, whatever transport brought it. It checks
//! the entries, applies the principal's rate limits, takes room in the writer's queue (the
//! producer's share first, then the whole queue's) and hands the job to the writer. The Unix
//! socket and the HTTP listeners each say who is asking (a [`Principal`]) and where the
//! answer goes (a `Reply`); everything else is the same for both.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use witness_protocol::limits::{MAX_ENTRIES_PER_APPEND, MAX_INTEGER};
use witness_protocol::{Append, ErrorCode, ErrorReply, OnFull};

use crate::access::{Gate, Principal};
use crate::prices::Prices;
use crate::stats::ServerStats;
use crate::store::admission::{Admission, Admitted};
use crate::store::job::{Job, Origin, Reply};
use crate::store::queue::{JobQueue, LaneId};

/// The credentials stored with a principal's entries: a Unix peer's pid, uid and gid; none for
/// HTTP.
fn origin_of(principal: &Principal, ts: i64) -> Origin {
    match principal {
        Principal::Unix(peer) => Origin {
            ts,
            pid: peer.pid,
            uid: peer.uid.map(i64::from),
            gid: peer.gid.map(i64::from),
        },
        Principal::Http(_) => Origin {
            ts,
            ..Origin::default()
        },
    }
}

/// A producer's place in the writer's queue: its lane (taken in turn with the others) and its
/// share of the queue's room. A socket connection has one for its life; an HTTP principal
/// has one per request.
#[derive(Debug)]
pub struct Lane {
    /// The lane's id in the writer's queue.
    pub id: LaneId,
    /// The producer's share of the queue's room, in entries.
    room: Arc<Semaphore>,
}

/// Lane ids, one per producer since start.
static NEXT_LANE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What the intake needs from the rest of the daemon.
#[derive(Debug)]
pub struct Intake {
    /// The writer's queue.
    pub queue: Arc<JobQueue>,
    /// Room in the writer's queue.
    pub admission: Arc<Admission>,
    /// Who may do what, and how much; a reload replaces the policy.
    pub gate: Arc<Gate>,
    /// Refusals are counted here.
    pub stats: Arc<ServerStats>,
    /// The prices entries without money are priced by; a reload replaces them.
    pub prices: Arc<Prices>,
}

/// An append on its way in, with what the transport knows of it.
#[derive(Debug)]
pub struct Submission {
    /// The append, as decoded.
    pub append: Append,
    /// Its size on the wire, for the byte rate limit.
    pub n_bytes: usize,
    /// When it was read: its entries' receive time, before any wait for room.
    pub ts: i64,
    /// The same moment, for acknowledgement times in stats.
    pub received: Instant,
    /// The producer had nothing else in flight.
    pub alone: bool,
    /// One key an entry, for items stored once whatever the re-sends (`Job::keys`); empty
    /// for the socket's appends, whose producer numbers do that.
    pub keys: Vec<crate::store::job::ReceivedKey>,
    /// The provider of each entry's model call, where the transport knows it (OTLP's
    /// `gen_ai.provider.name`); empty when none is known, as on the socket.
    pub providers: Vec<Option<String>>,
}

impl Submission {
    /// An append read just now.
    pub fn now(append: Append, n_bytes: usize) -> Submission {
        Submission {
            append,
            n_bytes,
            ts: crate::format::row::now_ns(),
            received: Instant::now(),
            alone: false,
            keys: Vec::new(),
            providers: Vec::new(),
        }
    }
}

/// Why an append was not handed to the writer.
#[derive(Debug)]
pub enum Refusal {
    /// Refused with this answer; nothing of it was recorded.
    Refused(ErrorReply),
    /// The wait for room was abandoned (the daemon is stopping and no longer waits for this
    /// producer); nothing was recorded and nothing is said.
    Abandoned,
}

impl Intake {
    /// A new producer's lane and share of the queue.
    pub fn lane(&self) -> Lane {
        Lane {
            id: NEXT_LANE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            room: self.admission.lane(),
        }
    }

    /// Checks `submission` and the principal's rates. Cheap and synchronous: a transport
    /// calls it before taking anything of its own (an in-flight permit), then `admit`.
    pub fn check(&self, principal: &Principal, submission: &Submission) -> Result<(), ErrorReply> {
        check_append(&submission.append)?;
        self.charge(principal, submission)
    }

    /// Counts a submission whose entries were each checked already (OTLP's items, screened
    /// one by one so that one bad item does not cost the export the others) against the
    /// principal's rates.
    pub fn charge(&self, principal: &Principal, submission: &Submission) -> Result<(), ErrorReply> {
        let gate = &self.gate;
        let n_entries = submission.append.entries.len();
        gate.rates
            .take(&gate.access(), principal, n_entries, submission.n_bytes)
            .map_err(ErrorReply::from)
    }

    /// Takes room for a checked submission in `lane` (waiting, or refusing at once, as the
    /// append asks; a wait ends when `abandon` is cancelled) and hands it to the writer,
    /// whose answer goes to `reply`. A refusal's reply is the caller's to send; it is counted
    /// in stats here.
    pub async fn admit(
        &self,
        principal: &Principal,
        lane: &Lane,
        submission: Submission,
        reply: Reply,
        abandon: &CancellationToken,
    ) -> Result<(), Refusal> {
        let n_entries = submission.append.entries.len();
        let admitted: Admitted = match submission.append.on_full {
            // A producer waits on its own share first: one that floods waits behind its own
            // backlog, never in everyone's line.
            OnFull::Wait => tokio::select! {
                admitted = self.admission.wait(&lane.room, n_entries) => admitted,
                _ = abandon.cancelled() => return Err(Refusal::Abandoned),
            },
            OnFull::Busy => match self.admission.try_now(&lane.room, n_entries) {
                Some(admitted) => admitted,
                None => {
                    return Err(self.refused(ErrorReply::new(
                        ErrorCode::Busy,
                        format!(
                            "the queue has no room for {n_entries} entries; nothing was \
                             recorded: retry later, or send with OnFull::Wait to be slowed \
                             instead"
                        ),
                    )));
                }
            },
        };
        let mut append = submission.append;
        self.price(&mut append.entries, &submission.providers, submission.ts);
        let job = Box::new(Job {
            ack: append.ack,
            producer: append.producer,
            entries: append.entries,
            origin: origin_of(principal, submission.ts),
            received: submission.received,
            reply,
            admitted: Some(admitted),
            alone: submission.alone,
            keys: submission.keys,
        });
        if let Err(job) = self.queue.push(lane.id, job) {
            // A closed queue means the writer is gone, and the producer must hear that
            // nothing was recorded.
            let reply = ErrorReply::new(
                ErrorCode::ShuttingDown,
                "the writer has stopped; nothing was recorded",
            );
            self.stats.reject(ErrorCode::ShuttingDown);
            job.reply.send(job.ack, Err(reply));
        }
        Ok(())
    }

    /// Prices the entries that carry a model and tokens and no money, each by its own date
    /// (the client's time, else the receive time `ts`), before the writer hashes them.
    fn price(
        &self,
        entries: &mut [witness_protocol::Entry],
        providers: &[Option<String>],
        ts: i64,
    ) {
        if !entries.iter().any(|entry| {
            entry
                .cost
                .as_ref()
                .is_some_and(|cost| cost.micro_usd.is_none())
        }) {
            return;
        }
        let book = self.prices.current();
        for (index, entry) in entries.iter_mut().enumerate() {
            let date = entry.client_ts.unwrap_or(ts);
            if let Some(cost) = &mut entry.cost {
                let provider = providers.get(index).and_then(Option::as_deref);
                book.price(cost, provider, date);
            }
        }
    }

    /// Counts a refusal and gives it back.
    fn refused(&self, reply: ErrorReply) -> Refusal {
        self.stats.reject(reply.code);
        Refusal::Refused(reply)
    }
}

/// Checks an append before it takes room in the queue: the limits of every entry, that every
/// payload parses as JSON and every `imported` as a JSON object, and the producer numbers.
pub fn check_append(append: &Append) -> Result<(), ErrorReply> {
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
        if let Some(cost) = &entry.cost {
            // `priced_by` says the daemon priced the call: a client's word for it only
            // holds on a copy, whose original the daemon that priced it wrote.
            if cost.priced_by.is_some() && entry.imported.is_none() {
                return Err(invalid(
                    "priced_by is set by the daemon when it prices an entry; send the cost \
                     without it (an imported copy may keep its original's)"
                        .into(),
                ));
            }
            if cost.priced_by.is_some() && cost.micro_usd.is_none() {
                return Err(invalid(
                    "priced_by names the price of micro_usd, which is missing".into(),
                ));
            }
            if let (Some(write), Some(hour)) = (cost.cache_write_tokens, cost.cache_write_1h_tokens)
                && hour > write
            {
                return Err(invalid(format!(
                    "cache_write_1h_tokens ({hour}) is a part of cache_write_tokens ({write}) \
                     and cannot exceed it"
                )));
            }
            if cost.cache_write_1h_tokens.is_some() && cost.cache_write_tokens.is_none() {
                return Err(invalid(
                    "cache_write_1h_tokens is a part of cache_write_tokens, which is missing"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}
