//! One client connection: a reader that decodes and checks requests and hands appends to
//! the writer, and a responder task that writes answers back in whatever order they come.
//!
//! The reader holds one in-flight permit per request awaiting an answer; when a client stops
//! reading its answers the permits run out and the reader stops reading its requests, so a
//! slow client slows itself and nobody else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use witness_protocol::limits::{MAX_ENTRIES_PER_APPEND, MAX_FRAME_LEN, MAX_INTEGER};
use witness_protocol::{
    Ack, Append, ErrorCode, ErrorReply, OnFull, PROTOCOL_VERSION, Request, RequestFrame, Response,
    ResponseFrame, ServerHello, frame,
};

use witness_protocol::admin::{MaintenanceReport, MaintenanceTask};

use crate::access::{self, Gate, Peer};
use crate::config::Limits;
use crate::job::{Control, Job, Origin, Outgoing, ReplyTo};
use crate::metrics::Metrics;
use crate::query;
use crate::queue::{Admission, JobQueue, LaneId};
use crate::read::{self, ReadPool};
use crate::server::{ServerStats, Stop};
use crate::verify::VerifyError;

/// Lane ids, one per connection since start.
static NEXT_LANE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The writer's queue: appends and maintenance requests go there.
    pub(crate) writer: Arc<JobQueue>,
    /// Read-only connections for queries.
    pub(crate) reads: Arc<ReadPool>,
    /// The last committed `seq`; closes when the writer stops.
    pub(crate) committed: watch::Receiver<u64>,
    /// Room in the writer's queue.
    pub(crate) admission: Arc<Admission>,
    /// The limits a new connection takes; a reload replaces them.
    pub(crate) limits: Arc<RwLock<Limits>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stats: Arc<ServerStats>,
    /// Who may do what, and how much; a reload replaces the policy.
    pub(crate) gate: Arc<Gate>,
}

/// Whether the reader goes on after a request.
enum Next {
    Continue,
    Close,
}

struct Connection {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// Cancelled a grace period after shutdown began: from then on nothing waits for this
    /// client (for its share of the queue, or for it to read its answers), so that a stop
    /// ends in bounded time whatever clients do. What was not admitted by then was never
    /// acknowledged, and the client re-sends it.
    abandon: CancellationToken,
    /// This connection's lane in the writer's queue, and its share of the queue's room.
    lane_id: LaneId,
    lane: Arc<Semaphore>,
    /// Tells this connection's streams that the client has gone.
    client_gone: CancellationToken,
    /// Streams outlive the reader, like responders, so that a follower hears the last
    /// commits at shutdown.
    streams: TaskTracker,
    reply_to: ReplyTo,
    in_flight: Arc<Semaphore>,
    /// The limits as they were when the connection opened.
    limits: Limits,
    peer: Peer,
    origin: Origin,
    greeted: bool,
    /// Streams of this connection still running: a follower is never idle.
    streams_open: Arc<AtomicUsize>,
}

/// What the read loop does when a deadline passes.
enum Deadline {
    /// Nothing was due after all (the connection is busy): wait again.
    Extend,
    /// Close the connection.
    Close,
}

/// Serves one connection until the client leaves, a fatal error, or shutdown. The responder
/// is spawned on `responders` so that it outlives the reader and delivers the last answers.
pub(crate) async fn serve(
    stream: UnixStream,
    peer: Peer,
    shared: Arc<Shared>,
    stop: &Stop,
    responders: &TaskTracker,
) {
    let cancel = stop.cancel.clone();
    shared.stats.connection_opened();
    let limits = *shared.limits.read().expect("never poisoned");
    let (mut read_half, write_half) = stream.into_split();
    let (reply_to, replies) = mpsc::unbounded_channel();
    responders.spawn(respond(replies, write_half));
    let mut connection = Connection {
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
        limits,
        lane_id: NEXT_LANE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        lane: shared.admission.lane(),
        shared,
        cancel: cancel.clone(),
        abandon: stop.abandon.clone(),
        client_gone: CancellationToken::new(),
        streams: responders.clone(),
        reply_to,
        origin: Origin {
            ts: 0,
            pid: peer.pid,
            uid: peer.uid.map(i64::from),
            gid: peer.gid.map(i64::from),
        },
        peer,
        greeted: false,
        streams_open: Arc::default(),
    };
    let max_frame_len = limits.max_frame_len;
    let mut buffer: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut start = 0;
    let accepted = Instant::now();
    let mut last_heard = accepted;
    // When the partial frame at the end of the buffer began to arrive.
    let mut frame_began: Option<Instant> = None;
    'connection: loop {
        loop {
            match frame::check(&buffer[start..], max_frame_len) {
                Ok(Some(total)) => {
                    let body = &buffer[start + frame::LEN_PREFIX..start + total];
                    let next = connection.handle(body).await;
                    start += total;
                    frame_began = None;
                    if matches!(next, Next::Close) || connection.abandon.is_cancelled() {
                        break 'connection;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    connection
                        .refuse(
                            0,
                            ErrorReply::new(ErrorCode::FrameTooLarge, error.to_string()),
                        )
                        .await;
                    break 'connection;
                }
            }
        }
        buffer.drain(..start);
        start = 0;
        if !buffer.is_empty() {
            frame_began.get_or_insert(last_heard);
        }
        let deadline = connection.deadline(accepted, last_heard, frame_began);
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline.into()) => {
                match connection.deadline_passed(frame_began) {
                    Deadline::Extend => {
                        last_heard = Instant::now();
                        continue;
                    }
                    Deadline::Close => break,
                }
            }
            read = read_half.read_buf(&mut buffer) => read,
        };
        last_heard = Instant::now();
        match read {
            Ok(0) if buffer.is_empty() => break,
            Ok(0) => {
                tracing::debug!(bytes = buffer.len(), "client left in the middle of a frame");
                break;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "read failed");
                break;
            }
        }
    }
    if !cancel.is_cancelled() {
        connection.client_gone.cancel();
    }
    connection.shared.stats.connection_closed();
}

impl Connection {
    /// When the read loop must stop waiting for bytes: the handshake's deadline, a begun
    /// frame's, or the idle timeout.
    fn deadline(
        &self,
        accepted: Instant,
        last_heard: Instant,
        frame_began: Option<Instant>,
    ) -> Instant {
        if !self.greeted {
            return accepted + self.limits.handshake_timeout;
        }
        if let Some(began) = frame_began {
            return began + self.limits.frame_timeout;
        }
        match self.limits.idle_timeout {
            Some(idle) => last_heard + idle,
            None => last_heard + Duration::from_secs(365 * 86_400),
        }
    }

    /// A deadline passed: a client too slow to greet or to finish a frame is told so and
    /// closed; an idle one is closed without a word (its client reconnects when it next has
    /// something to say), unless it is waiting for answers or following a stream.
    fn deadline_passed(&self, frame_began: Option<Instant>) -> Deadline {
        let timed_out = |message: String| {
            tracing::debug!(uid = %self.peer.uid_text(), "{message}");
            self.shared.stats.reject(ErrorCode::TimedOut);
            let _ = self.reply_to.send(Outgoing {
                frame: ResponseFrame {
                    id: 0,
                    response: Response::Error(ErrorReply::new(ErrorCode::TimedOut, message)),
                },
                permit: None,
            });
            Deadline::Close
        };
        if !self.greeted {
            return timed_out(format!(
                "no Hello within {:?} of connecting; closing",
                self.limits.handshake_timeout
            ));
        }
        if frame_began.is_some() {
            return timed_out(format!(
                "a frame begun {:?} ago is still incomplete; closing",
                self.limits.frame_timeout
            ));
        }
        let answering = self.in_flight.available_permits() < self.limits.max_in_flight;
        if answering || self.streams_open.load(Ordering::Relaxed) > 0 {
            return Deadline::Extend;
        }
        tracing::debug!(uid = %self.peer.uid_text(), "closing an idle connection");
        Deadline::Close
    }

    /// Refuses a read request to a user the configuration does not let read.
    async fn may_read(&self, id: u64) -> bool {
        match access::may_read(&self.shared.gate.access(), &self.peer) {
            Ok(()) => true,
            Err(reason) => {
                self.refuse(id, ErrorReply::new(ErrorCode::Forbidden, reason))
                    .await;
                false
            }
        }
    }

    async fn handle(&mut self, body: &[u8]) -> Next {
        let request: RequestFrame = match frame::decode_body(body) {
            Ok(request) => request,
            Err(error) => {
                let id = frame::peek_request_id(body).unwrap_or(0);
                let reply = ErrorReply::new(ErrorCode::BadFrame, error.to_string());
                self.refuse(id, reply).await;
                return if self.greeted {
                    Next::Continue
                } else {
                    Next::Close
                };
            }
        };
        let id = request.id;
        match request.request {
            Request::Hello(hello) => self.hello(id, hello.version).await,
            _ if !self.greeted => {
                let reply = ErrorReply::new(
                    ErrorCode::ExpectedHello,
                    "the first request on a connection must be Hello",
                );
                self.refuse(id, reply).await;
                Next::Close
            }
            Request::Ping => {
                self.answer(id, Response::Pong).await;
                Next::Continue
            }
            Request::Verify(_)
            | Request::Trace(_)
            | Request::Traces(_)
            | Request::Cost(_)
            | Request::Entries(_)
                if !self.may_read(id).await =>
            {
                Next::Continue
            }
            Request::Verify(range) => {
                let checked = crate::verify::check_range(range)
                    .map_err(|reason| ErrorReply::new(ErrorCode::BadRequest, reason));
                self.query(id, checked, move |connection| {
                    match crate::verify::verify(connection, range) {
                        Ok(report) => Ok(Response::Verified(report)),
                        Err(VerifyError::Range(reason)) => Ok(Response::Error(ErrorReply::new(
                            ErrorCode::BadRequest,
                            reason,
                        ))),
                        Err(VerifyError::Sqlite(error)) => Err(error),
                    }
                })
                .await;
                Next::Continue
            }
            Request::Trace(query) => {
                let checked = query::check_trace(&query);
                self.query(id, checked, move |connection| {
                    read::trace(connection, &query).map(Response::Trace)
                })
                .await;
                Next::Continue
            }
            Request::Traces(query) => {
                let checked = query::check_traces(&query);
                self.query(id, checked, move |connection| {
                    read::traces(connection, &query).map(Response::Traces)
                })
                .await;
                Next::Continue
            }
            Request::Cost(query) => {
                let checked = query::check_cost(&query);
                self.query(id, checked, move |connection| {
                    read::cost(connection, &query).map(Response::Cost)
                })
                .await;
                Next::Continue
            }
            Request::Entries(query) => {
                match query::check_entries(&query) {
                    Ok(()) => {
                        let context = crate::stream::Context {
                            reads: Arc::clone(&self.shared.reads),
                            committed: self.shared.committed.clone(),
                            stall_timeout: self.limits.stall_timeout,
                            stats: Arc::clone(&self.shared.stats),
                            client_gone: self.client_gone.clone(),
                            shutdown: self.cancel.clone(),
                        };
                        let open = Arc::clone(&self.streams_open);
                        open.fetch_add(1, Ordering::Relaxed);
                        let stream =
                            crate::stream::serve(id, query, context, self.reply_to.clone());
                        self.streams.spawn(async move {
                            stream.await;
                            open.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Err(reply) => self.refuse(id, reply).await,
                }
                Next::Continue
            }
            Request::Append(append) => {
                self.append(id, append, body.len()).await;
                Next::Continue
            }
            Request::Stats => {
                let report = self.shared.metrics.report();
                self.answer(id, Response::Stats(Box::new(report))).await;
                Next::Continue
            }
            Request::Maintenance(task) => {
                self.maintenance(id, task).await;
                Next::Continue
            }
        }
    }

    /// Runs a maintenance task for the daemon's own user or root: `ANALYZE` on the writer
    /// (it writes), a backup on a read connection (it only reads, so ingest goes on).
    async fn maintenance(&self, id: u64, task: MaintenanceTask) {
        if !self.peer.is_operator() {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let own_uid = unsafe { libc::geteuid() };
            let reply = ErrorReply::new(
                ErrorCode::Forbidden,
                format!(
                    "maintenance is for the daemon's own user (uid {own_uid}) or root; this \
                     client runs as uid {}",
                    self.peer.uid_text()
                ),
            );
            return self.refuse(id, reply).await;
        }
        let started = std::time::Instant::now();
        match task {
            MaintenanceTask::Analyze => {
                let Some(permit) = self.permit().await else {
                    return;
                };
                let (answer, answered) = tokio::sync::oneshot::channel();
                let reply_to = self.reply_to.clone();
                let stats = Arc::clone(&self.shared.stats);
                if self
                    .shared
                    .writer
                    .control(Control::Analyze(answer))
                    .is_err()
                {
                    drop(permit);
                    let reply = ErrorReply::new(ErrorCode::ShuttingDown, "the writer has stopped");
                    return self.refuse(id, reply).await;
                }
                tokio::spawn(async move {
                    let response = match answered.await {
                        Ok(Ok(elapsed)) => Response::Maintained(MaintenanceReport {
                            task: MaintenanceTask::Analyze,
                            elapsed_ms: elapsed.as_millis() as u64,
                            bytes: None,
                            last_seq: None,
                        }),
                        Ok(Err(message)) => {
                            stats.reject(ErrorCode::Storage);
                            Response::Error(ErrorReply::new(ErrorCode::Storage, message))
                        }
                        Err(_) => {
                            stats.reject(ErrorCode::ShuttingDown);
                            Response::Error(ErrorReply::new(
                                ErrorCode::ShuttingDown,
                                "the writer stopped before it ran ANALYZE",
                            ))
                        }
                    };
                    let _ = reply_to.send(Outgoing {
                        frame: ResponseFrame { id, response },
                        permit: Some(permit),
                    });
                });
            }
            MaintenanceTask::Backup { path } => {
                let checked = query::check_backup_path(&path);
                self.query(id, checked, move |connection| {
                    read::backup(connection, &path, started)
                })
                .await;
            }
        }
    }

    async fn hello(&mut self, id: u64, version: u32) -> Next {
        if version != PROTOCOL_VERSION {
            let reply = ErrorReply::new(
                ErrorCode::VersionMismatch,
                format!(
                    "client speaks protocol version {version}, this daemon speaks version \
                     {PROTOCOL_VERSION}: use a client and daemon of matching versions"
                ),
            );
            self.refuse(id, reply).await;
            return Next::Close;
        }
        self.greeted = true;
        let server_hello = ServerHello {
            version: PROTOCOL_VERSION,
            server: concat!("witnessd ", env!("CARGO_PKG_VERSION")).to_owned(),
            max_frame_len: self.limits.max_frame_len,
            max_entries_per_append: MAX_ENTRIES_PER_APPEND as u32,
            max_in_flight: self.limits.max_in_flight as u32,
        };
        self.answer(id, Response::Hello(server_hello)).await;
        Next::Continue
    }

    async fn append(&mut self, id: u64, append: Append, n_bytes: usize) {
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

    /// Answers a request with a query run on the read pool, or with the refusal `checked`
    /// carries; the request holds an in-flight permit until its answer is written.
    async fn query<F>(&self, id: u64, checked: Result<(), ErrorReply>, query: F)
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Response> + Send + 'static,
    {
        if let Err(reply) = checked {
            return self.refuse(id, reply).await;
        }
        let Some(permit) = self.permit().await else {
            return;
        };
        let reads = Arc::clone(&self.shared.reads);
        let reply_to = self.reply_to.clone();
        let stats = Arc::clone(&self.shared.stats);
        tokio::spawn(async move {
            let response = match reads.run(query).await {
                Ok(response) => response,
                Err(message) => {
                    stats.reject(ErrorCode::Storage);
                    Response::Error(ErrorReply::new(ErrorCode::Storage, message))
                }
            };
            let _ = reply_to.send(Outgoing {
                frame: ResponseFrame { id, response },
                permit: Some(permit),
            });
        });
    }

    /// An in-flight permit for one more request; `None` once the connection is abandoned at
    /// shutdown (a client that does not read its answers holds them all).
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            permit = Arc::clone(&self.in_flight).acquire_owned() => {
                Some(permit.expect("never closed"))
            }
            _ = self.abandon.cancelled() => None,
        }
    }

    async fn answer(&self, id: u64, response: Response) {
        let Some(permit) = self.permit().await else {
            return;
        };
        let frame = ResponseFrame { id, response };
        let _ = self.reply_to.send(Outgoing {
            frame,
            permit: Some(permit),
        });
    }

    async fn refuse(&self, id: u64, reply: ErrorReply) {
        tracing::debug!(id, code = ?reply.code, message = %reply.message, "request refused");
        self.shared.stats.reject(reply.code);
        self.answer(id, Response::Error(reply)).await;
    }
}

/// Checks an append before it takes room in the queue: the limits of every entry, that every
/// payload parses as JSON, and the producer numbers.
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
    }
    Ok(())
}

/// Writes answers as they come, batching whatever is ready into one write. On a write error
/// it keeps draining, so that the permits of a departed client are still released.
///
/// Answers are sized against the protocol's frame limit, not the connection's: the
/// connection's `max_frame_len` bounds what the daemon reads, and a client always accepts
/// frames up to `MAX_FRAME_LEN`, so a small request whose receipts outgrow it is still
/// answered. Every query's answer is paged below that limit; should one still not fit, the
/// client hears why instead of waiting forever.
async fn respond(mut replies: mpsc::UnboundedReceiver<Outgoing>, mut write_half: OwnedWriteHalf) {
    let mut buffer = Vec::with_capacity(16 << 10);
    let mut permits = Vec::new();
    let mut broken = false;
    while let Some(first) = replies.recv().await {
        let mut next = Some(first);
        while let Some(outgoing) = next {
            encode_answer(&outgoing.frame, &mut buffer);
            permits.extend(outgoing.permit);
            next = if buffer.len() < (256 << 10) {
                replies.try_recv().ok()
            } else {
                None
            };
        }
        if !broken && let Err(error) = write_half.write_all(&buffer).await {
            tracing::debug!(%error, "client stopped taking answers");
            broken = true;
        }
        buffer.clear();
        permits.clear();
    }
    let _ = write_half.shutdown().await;
}

/// Appends the frame of an answer to `buffer`, or, if it cannot be encoded within the
/// protocol's limit, an error that says so under the same id.
fn encode_answer(frame: &ResponseFrame, buffer: &mut Vec<u8>) {
    let Err(error) = frame::encode(frame, MAX_FRAME_LEN, buffer) else {
        return;
    };
    tracing::error!(%error, id = frame.id, "cannot encode an answer");
    let reply = ErrorReply::new(
        ErrorCode::Storage,
        format!("the answer could not be sent ({error}); ask for a smaller page"),
    );
    let refusal = ResponseFrame {
        id: frame.id,
        response: Response::Error(reply),
    };
    frame::encode(&refusal, MAX_FRAME_LEN, buffer).expect("a short error always encodes");
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i64)
}
