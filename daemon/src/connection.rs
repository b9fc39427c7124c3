//! One client connection: a reader that decodes and checks requests and hands appends to
//! the writer, and a responder task that writes answers back in whatever order they come.
//!
//! The reader holds one in-flight permit per request awaiting an answer; when a client stops
//! reading its answers the permits run out and the reader stops reading its requests, so a
//! slow client slows itself and nobody else.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
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

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::query;
use crate::read::{self, ReadPool};
use crate::server::ServerStats;
use crate::writer::{Control, Job, Origin, Outgoing, ReplyTo};

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sender: Sender<Box<Job>>,
    /// Read-only connections for queries.
    pub(crate) reads: Arc<ReadPool>,
    /// The last committed `seq`; closes when the writer stops.
    pub(crate) committed: watch::Receiver<u64>,
    /// One permit per entry the queue may hold.
    pub(crate) queue: Arc<Semaphore>,
    /// The limits a new connection takes; a reload replaces them.
    pub(crate) limits: Arc<RwLock<Limits>>,
    /// Maintenance requests go to the writer this way.
    pub(crate) writer_control: Sender<Control>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stats: Arc<ServerStats>,
}

/// Whether the reader goes on after a request.
enum Next {
    Continue,
    Close,
}

struct Connection {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// Tells this connection's streams that the client has gone.
    client_gone: CancellationToken,
    /// Streams outlive the reader, like responders, so that a follower hears the last
    /// commits at shutdown.
    streams: TaskTracker,
    reply_to: ReplyTo,
    in_flight: Arc<Semaphore>,
    /// The limits as they were when the connection opened.
    limits: Limits,
    origin: Origin,
    greeted: bool,
}

/// Serves one connection until the client leaves, a fatal error, or shutdown. The responder
/// is spawned on `responders` so that it outlives the reader and delivers the last answers.
pub(crate) async fn serve(
    stream: UnixStream,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    responders: &TaskTracker,
) {
    shared.stats.connection_opened();
    let limits = *shared.limits.read().expect("never poisoned");
    let credentials = stream.peer_cred().ok();
    let (mut read_half, write_half) = stream.into_split();
    let (reply_to, replies) = mpsc::unbounded_channel();
    responders.spawn(respond(replies, write_half));
    let mut connection = Connection {
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
        limits,
        shared,
        cancel: cancel.clone(),
        client_gone: CancellationToken::new(),
        streams: responders.clone(),
        reply_to,
        origin: Origin {
            ts: 0,
            pid: credentials.and_then(|c| c.pid()).map(i64::from),
            uid: credentials.map(|c| i64::from(c.uid())),
            gid: credentials.map(|c| i64::from(c.gid())),
        },
        greeted: false,
    };
    let max_frame_len = limits.max_frame_len;
    let mut buffer: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut start = 0;
    'connection: loop {
        loop {
            match frame::check(&buffer[start..], max_frame_len) {
                Ok(Some(total)) => {
                    let body = &buffer[start + frame::LEN_PREFIX..start + total];
                    let next = connection.handle(body).await;
                    start += total;
                    if let Next::Close = next {
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
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            read = read_half.read_buf(&mut buffer) => read,
        };
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
            Request::Verify(range) => {
                self.query(id, Ok(()), move |connection| {
                    crate::verify::verify(connection, range).map(Response::Verified)
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
                        self.streams.spawn(crate::stream::serve(
                            id,
                            query,
                            context,
                            self.reply_to.clone(),
                        ));
                    }
                    Err(reply) => self.refuse(id, reply).await,
                }
                Next::Continue
            }
            Request::Append(append) => {
                self.append(id, append).await;
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
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own_uid = i64::from(unsafe { libc::geteuid() });
        if !matches!(self.origin.uid, Some(uid) if uid == own_uid || uid == 0) {
            let reply = ErrorReply::new(
                ErrorCode::Forbidden,
                format!(
                    "maintenance is for the daemon's own user (uid {own_uid}) or root; this \
                     client runs as uid {}",
                    self.origin
                        .uid
                        .map_or("unknown".to_owned(), |uid| uid.to_string())
                ),
            );
            return self.refuse(id, reply).await;
        }
        let started = std::time::Instant::now();
        match task {
            MaintenanceTask::Analyze => {
                let permit = self.permit().await;
                let (answer, answered) = tokio::sync::oneshot::channel();
                let reply_to = self.reply_to.clone();
                let stats = Arc::clone(&self.shared.stats);
                if self
                    .shared
                    .writer_control
                    .send(Control::Analyze(answer))
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

    async fn append(&mut self, id: u64, append: Append) {
        if let Err(reply) = check_append(&append) {
            self.refuse(id, reply).await;
            return;
        }
        let n_entries = append.entries.len() as u32;
        let connection_permit = self.permit().await;
        let queue = Arc::clone(&self.shared.queue);
        let queue_permit = match append.on_full {
            OnFull::Wait => queue
                .acquire_many_owned(n_entries)
                .await
                .expect("never closed"),
            OnFull::Busy => match queue.try_acquire_many_owned(n_entries) {
                Ok(permit) => permit,
                Err(_) => {
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
        let job = Box::new(Job {
            request_id: id,
            ack,
            producer: append.producer,
            entries: append.entries,
            origin: Origin {
                ts: now_ns(),
                ..self.origin
            },
            received: std::time::Instant::now(),
            reply_to: self.reply_to.clone(),
            connection_permit,
            queue_permit,
        });
        if let Err(error) = self.shared.sender.try_send(job) {
            // The queue permits make a full channel impossible; a closed one means the writer
            // is gone, and the client must hear that nothing was recorded.
            let job = error.into_inner();
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
        let permit = self.permit().await;
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

    async fn permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .expect("never closed")
    }

    async fn answer(&self, id: u64, response: Response) {
        let permit = self.permit().await;
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
        if producer.producer_id > MAX_INTEGER
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
