//! One client connection: a reader that decodes and checks requests and hands appends to
//! the writer, and a responder task that writes answers back in whatever order they come.
//!
//! The reader holds one in-flight permit per request awaiting an answer; when a client stops
//! reading its answers the permits run out and the reader stops reading its requests, so a
//! slow client slows itself and nobody else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use witness_protocol::frame::FrameReader;
use witness_protocol::limits::MAX_ENTRIES_PER_APPEND;
use witness_protocol::{
    ErrorCode, ErrorReply, PROTOCOL_VERSION, Response, ResponseFrame, ServerHello,
};

use super::respond::respond;
use crate::access::{Gate, Peer};
use crate::config::Limits;
use crate::observe::metrics::Metrics;
use crate::read::ReadPool;
use crate::stats::ServerStats;
use crate::store::job::{Outgoing, ReplyTo};
use crate::store::queue::JobQueue;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The budgets and their spend, for `Budgets`.
    pub(crate) budgets: Arc<crate::observe::budgets::Budgets>,
    /// The writer's queue: appends and maintenance requests go there.
    pub(crate) writer: Arc<JobQueue>,
    /// Read-only connections for queries.
    pub(crate) reads: Arc<ReadPool>,
    /// The last committed `seq`; closes when the writer stops.
    pub(crate) committed: watch::Receiver<u64>,
    /// Where appends are admitted, for this transport and the others.
    pub(crate) intake: Arc<crate::intake::Intake>,
    /// The limits a new connection takes; a reload replaces them.
    pub(crate) limits: Arc<RwLock<Limits>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stats: Arc<ServerStats>,
    /// Who may do what, and how much; a reload replaces the policy.
    pub(crate) gate: Arc<Gate>,
    /// The log's verifier key, for those who ask for its checkpoint.
    pub(crate) verifier_key: String,
    /// Where archive segments are, for proofs of pruned entries.
    pub(crate) archive_dir: Option<std::path::PathBuf>,
    /// Where on-demand prunes go.
    pub(crate) archiver: std::sync::mpsc::Sender<crate::store::retain::PruneRequest>,
    /// The dashboard's logins, which `WebLogin` issues.
    pub(crate) sessions: Arc<crate::http::web::Sessions>,
    /// Where the log and its files are, for `Paths`.
    pub(crate) paths: witness_protocol::admin::PathsReport,
}

/// The two stages of a stop, which every connection task watches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    /// Stop reading new frames; finish those already read.
    pub(crate) cancel: CancellationToken,
    /// A grace period later: stop waiting for any client at all.
    pub(crate) abandon: CancellationToken,
}

/// Whether the reader goes on after a request.
pub(super) enum Next {
    Continue,
    Close,
}

/// One connection's state, shared by the files of this module that serve its requests.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: CancellationToken,
    /// Cancelled a grace period after shutdown began: from then on nothing waits for this
    /// client (for its share of the queue, or for it to read its answers), so that a stop
    /// ends in bounded time whatever clients do. What was not admitted by then was never
    /// acknowledged, and the client re-sends it.
    pub(super) abandon: CancellationToken,
    /// This connection's lane in the writer's queue, and its share of the queue's room.
    pub(super) lane: crate::intake::Lane,
    /// Tells this connection's streams that the client has gone.
    pub(super) client_gone: CancellationToken,
    /// Streams outlive the reader, like responders, so that a follower hears the last
    /// commits at shutdown.
    pub(super) streams: TaskTracker,
    pub(super) reply_to: ReplyTo,
    pub(super) in_flight: Arc<Semaphore>,
    /// The limits as they were when the connection opened.
    pub(super) limits: Limits,
    pub(super) peer: Peer,
    pub(super) greeted: bool,
    /// Streams of this connection still running: a follower is never idle.
    pub(super) streams_open: Arc<AtomicUsize>,
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
        lane: shared.intake.lane(),
        shared,
        cancel: cancel.clone(),
        abandon: stop.abandon.clone(),
        client_gone: CancellationToken::new(),
        streams: responders.clone(),
        reply_to,
        peer,
        greeted: false,
        streams_open: Arc::default(),
    };
    let mut reader = FrameReader::new(limits.max_frame_len);
    let accepted = Instant::now();
    let mut last_heard = accepted;
    // When the partial frame at the end of the buffer began to arrive.
    let mut frame_began: Option<Instant> = None;
    'connection: loop {
        loop {
            match reader.next_body() {
                Ok(Some(body)) => {
                    let next = connection.handle(body).await;
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
        if reader.buffered() > 0 {
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
            read = read_half.read_buf(reader.space()) => read,
        };
        last_heard = Instant::now();
        match read {
            Ok(0) if reader.buffered() == 0 => break,
            Ok(0) => {
                tracing::debug!(
                    bytes = reader.buffered(),
                    "client left in the middle of a frame"
                );
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

    pub(super) async fn hello(&mut self, id: u64, version: u32) -> Next {
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

    /// An in-flight permit for one more request; `None` once the connection is abandoned at
    /// shutdown (a client that does not read its answers holds them all).
    pub(super) async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            permit = Arc::clone(&self.in_flight).acquire_owned() => {
                Some(permit.expect("never closed"))
            }
            _ = self.abandon.cancelled() => None,
        }
    }

    pub(super) async fn answer(&self, id: u64, response: Response) {
        let Some(permit) = self.permit().await else {
            return;
        };
        let frame = ResponseFrame { id, response };
        let _ = self.reply_to.send(Outgoing {
            frame,
            permit: Some(permit),
        });
    }

    pub(super) async fn refuse(&self, id: u64, reply: ErrorReply) {
        tracing::debug!(id, code = ?reply.code, message = %reply.message, "request refused");
        self.shared.stats.reject(reply.code);
        self.answer(id, Response::Error(reply)).await;
    }
}
