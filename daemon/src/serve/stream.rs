//! Streams of entries: `tail`, `tail -f` and `export`.
//!
//! A stream reads pages from the database, never from the writer: the writer only bumps a
//! watch value after each commit. So a follower that falls behind costs nothing but its own
//! position, catches up from the database, and can never hold up a commit. At most two pages
//! of a stream wait in memory for the client; a client that takes none for `stall_timeout`
//! is cut off and told where to resume.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use witness_protocol::query::{EndReason, EntriesQuery, StreamEnd};
use witness_protocol::{ErrorCode, ErrorReply, Response, ResponseFrame};

use crate::read::{self, ReadPool};
use crate::stats::ServerStats;
use crate::store::job::{Outgoing, ReplyTo};

/// What a stream needs of the daemon. Not the writer's queue: a follower waits for the writer
/// to stop, so holding a sender would keep it from ever stopping.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) reads: Arc<ReadPool>,
    pub(crate) committed: watch::Receiver<u64>,
    pub(crate) stall_timeout: std::time::Duration,
    pub(crate) stats: Arc<ServerStats>,
    /// Cancelled when the client has gone; not at shutdown, when a follower still hears the
    /// last commits.
    pub(crate) client_gone: CancellationToken,
    /// Cancelled at shutdown; a one-off stream stops there.
    pub(crate) shutdown: CancellationToken,
}

/// Rows per page of a stream.
const PAGE_ROWS: u32 = 1000;

/// Pages of one stream that may wait to be written to a slow client.
const PAGES_IN_FLIGHT: usize = 2;

/// Serves one `Entries` request to its end.
pub(crate) async fn serve(id: u64, mut query: EntriesQuery, context: Context, reply_to: ReplyTo) {
    let mut stream = Stream {
        id,
        context,
        reply_to,
        slots: Arc::new(Semaphore::new(PAGES_IN_FLIGHT)),
        next_after: query.filter.after_seq,
    };
    let mut committed = stream.context.committed.clone();
    if query.follow {
        // A follower ends at its `limit`, if it has one, and never at a bound of the log.
        query.filter.to_seq = None;
        query.filter.until = None;
    } else {
        // A one-off stream answers for the log as it was when asked: `tail -n 100` prints
        // 100 lines however fast entries arrive meanwhile.
        let head = *committed.borrow();
        query.filter.to_seq = Some(query.filter.to_seq.map_or(head, |to| to.min(head)));
    }
    if let Some(newest) = query.newest {
        let filter = query.filter.clone();
        match stream
            .context
            .reads
            .run(move |connection| read::newest_cursor(connection, &filter, newest))
            .await
        {
            Ok(Some(cursor)) => {
                let after = query.filter.after_seq.unwrap_or(0).max(cursor);
                query.filter.after_seq = Some(after);
            }
            Ok(None) => {}
            Err(message) => return stream.fail(message),
        }
    }
    let reason = stream.run(&mut query, &mut committed).await;
    stream.end(reason);
}

struct Stream {
    id: u64,
    context: Context,
    reply_to: ReplyTo,
    slots: Arc<Semaphore>,
    next_after: Option<u64>,
}

impl Stream {
    /// Sends pages until the query is answered, the client stalls, or the daemon stops.
    /// Returns why it ended, or `None` after an error was sent.
    async fn run(
        &mut self,
        query: &mut EntriesQuery,
        committed: &mut watch::Receiver<u64>,
    ) -> Option<EndReason> {
        let mut sent: u64 = 0;
        let mut writer_stopped = false;
        loop {
            if self.context.client_gone.is_cancelled() {
                return None;
            }
            if !query.follow && self.context.shutdown.is_cancelled() {
                return Some(EndReason::ShuttingDown);
            }
            let mut want = PAGE_ROWS;
            if let Some(limit) = query.limit {
                if sent >= limit {
                    return Some(EndReason::Limit);
                }
                want = want.min((limit - sent).min(u64::from(u32::MAX)) as u32);
            }
            // Marks every commit so far as seen, before reading, so that a commit after the
            // read wakes the wait below.
            committed.borrow_and_update();
            let filter = query.filter.clone();
            let (page, cut_short) = match self
                .context
                .reads
                .run(move |connection| read::entries_page(connection, &filter, want))
                .await
            {
                Ok(page) => page,
                Err(message) => {
                    self.fail(message);
                    return None;
                }
            };
            let caught_up = !cut_short && page.len() < want as usize;
            if let (Some(first), Some(last)) = (page.first(), page.last()) {
                let (first, last) = (first.seq, last.seq);
                let timeout = self.context.stall_timeout;
                let slot = tokio::select! {
                    slot = tokio::time::timeout(timeout, Arc::clone(&self.slots).acquire_owned()) => slot,
                    _ = self.context.client_gone.cancelled() => return None,
                };
                let Ok(slot) = slot else {
                    tracing::info!(
                        id = self.id,
                        timeout_secs = timeout.as_secs(),
                        "cutting off a stalled stream"
                    );
                    // This page was never sent: resume just before it.
                    self.next_after = Some(first - 1);
                    return Some(EndReason::CutOff);
                };
                let slot = slot.expect("never closed");
                query.filter.after_seq = Some(last);
                self.next_after = Some(last);
                sent += page.len() as u64;
                let frame = ResponseFrame {
                    id: self.id,
                    response: Response::Entries(page),
                };
                if self
                    .reply_to
                    .send(Outgoing {
                        frame,
                        permit: Some(slot),
                    })
                    .is_err()
                {
                    return None;
                }
            }
            if !caught_up {
                continue;
            }
            if !query.follow {
                return Some(EndReason::Complete);
            }
            if writer_stopped {
                return Some(EndReason::ShuttingDown);
            }
            let changed = tokio::select! {
                changed = committed.changed() => changed,
                _ = self.context.client_gone.cancelled() => return None,
            };
            if changed.is_err() {
                // The writer has made its last commit: one more pass sends it.
                writer_stopped = true;
            }
        }
    }

    fn end(&self, reason: Option<EndReason>) {
        let Some(reason) = reason else {
            return;
        };
        let frame = ResponseFrame {
            id: self.id,
            response: Response::End(StreamEnd {
                reason,
                next_after: self.next_after,
            }),
        };
        let _ = self.reply_to.send(Outgoing {
            frame,
            permit: None,
        });
    }

    fn fail(&self, message: String) {
        self.context.stats.reject(ErrorCode::Storage);
        let frame = ResponseFrame {
            id: self.id,
            response: Response::Error(ErrorReply::new(ErrorCode::Storage, message)),
        };
        let _ = self.reply_to.send(Outgoing {
            frame,
            permit: None,
        });
    }
}
