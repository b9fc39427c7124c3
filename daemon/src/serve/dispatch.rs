//! What a connection does with each request once its frame is read: the handshake aside
//! (`connection`) and appends aside (`append`), every request is answered here: reads on the
//! read pool, streams on a task of their own, maintenance for operators.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use witness_protocol::admin::{MaintenanceReport, MaintenanceTask};
use witness_protocol::{
    ErrorCode, ErrorReply, Request, RequestFrame, Response, ResponseFrame, frame,
};

use super::connection::{Connection, Next};
use super::stream;
use crate::access;
use crate::read::{self, Command};
use crate::store::job::{Control, Outgoing};
use crate::store::retain::{Before, PruneRequest};

impl Connection {
    /// Refuses a read request to a user the configuration does not let read.
    async fn may_read(&self, id: u64) -> bool {
        let principal = access::Principal::Unix(self.peer.clone());
        match access::authorize(&self.shared.gate.access(), &principal, access::Need::Read) {
            Ok(()) => true,
            Err(reason) => {
                self.refuse(id, ErrorReply::from(reason)).await;
                false
            }
        }
    }

    /// Answers one request, whose frame body is `body`; says whether to read on.
    pub(super) async fn handle(&mut self, body: &[u8]) -> Next {
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
            Request::Verify(range) => self.read(id, Command::Verify(range)).await,
            Request::Trace(query) => self.read(id, Command::Trace(query)).await,
            Request::Traces(query) => self.read(id, Command::Traces(query)).await,
            Request::Cost(query) => self.read(id, Command::Cost(query)).await,
            Request::Consistency { old, new } => {
                self.read(id, Command::Consistency { old, new }).await
            }
            Request::Prove(seq) => self.read(id, Command::Prove(seq)).await,
            Request::Checkpoint => self.read(id, Command::Checkpoint).await,
            Request::Entries(_) if !self.may_read(id).await => Next::Continue,
            Request::Entries(query) => {
                match read::check_entries(&query) {
                    Ok(()) => {
                        let context = stream::Context {
                            reads: Arc::clone(&self.shared.reads),
                            committed: self.shared.committed.clone(),
                            stall_timeout: self.limits.stall_timeout,
                            stats: Arc::clone(&self.shared.stats),
                            client_gone: self.client_gone.clone(),
                            shutdown: self.cancel.clone(),
                        };
                        let open = Arc::clone(&self.streams_open);
                        open.fetch_add(1, Ordering::Relaxed);
                        let stream = stream::serve(id, query, context, self.reply_to.clone());
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
            Request::Price(query) => {
                self.price(id, query).await;
                Next::Continue
            }
            // Spend is read from the log: for those who may read it.
            Request::Budgets if !self.may_read(id).await => Next::Continue,
            Request::Budgets => {
                let reports = self.shared.budgets.reports();
                self.answer(id, Response::Budgets(reports)).await;
                Next::Continue
            }
            // Where the log is says which files hold it: for those who may read it.
            Request::Paths if !self.may_read(id).await => Next::Continue,
            Request::Paths => {
                self.answer(id, Response::Paths(self.shared.paths.clone()))
                    .await;
                Next::Continue
            }
            Request::WebLogin if !self.may_read(id).await => Next::Continue,
            Request::WebLogin => {
                match self.shared.sessions.issue(self.peer.clone()) {
                    Ok(login) => self.answer(id, Response::WebLogin(login)).await,
                    Err(error) => {
                        let code = match error {
                            crate::http::web::session::IssueError::Full => ErrorCode::Busy,
                            _ => ErrorCode::BadRequest,
                        };
                        self.refuse(id, ErrorReply::new(code, error.to_string()))
                            .await;
                    }
                }
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

    /// Answers which price a model's calls get. Prices are the configuration's, not the
    /// log's: anyone connected may ask.
    async fn price(&self, id: u64, query: witness_protocol::query::PriceQuery) {
        if let Err(reply) = read::check_price(&query) {
            self.shared.stats.reject(reply.code);
            return self.refuse(id, reply).await;
        }
        let book = self.shared.intake.prices.current();
        let at = query.at.unwrap_or_else(crate::format::row::now_ns);
        let answer = witness_protocol::query::PriceAnswer {
            table: book.name().to_owned(),
            quote: book.quote(query.provider.as_deref(), &query.model, at),
        };
        self.answer(id, Response::Price(answer)).await;
    }

    /// Runs a maintenance task for the daemon's own user or root: `ANALYZE` on the writer
    /// (it writes), a backup on a read connection (it only reads, so ingest goes on).
    async fn maintenance(&self, id: u64, task: MaintenanceTask) {
        if !self.peer.is_operator() {
            let own_uid = crate::format::row::own_uid();
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
                        Ok(Err(error)) => {
                            stats.reject(ErrorCode::Storage);
                            Response::Error(ErrorReply::new(
                                ErrorCode::Storage,
                                format!("ANALYZE failed: {error}"),
                            ))
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
                let checked = read::check_backup_path(&path);
                self.query(id, checked, move |connection| {
                    read::backup(connection, &path, started)
                })
                .await;
            }
            MaintenanceTask::Prune {
                before_seq,
                before_time,
                drop,
            } => {
                let before = match (before_seq, before_time) {
                    (Some(seq), None) => Before::Seq(seq),
                    (None, Some(time)) => Before::Time(time),
                    _ => {
                        let reply = ErrorReply::new(
                            ErrorCode::BadRequest,
                            "a prune needs one of before_seq and before_time",
                        );
                        return self.refuse(id, reply).await;
                    }
                };
                let Some(permit) = self.permit().await else {
                    return;
                };
                let (answer, answered) = tokio::sync::oneshot::channel();
                let request = PruneRequest {
                    before,
                    drop,
                    answer,
                };
                if self.shared.archiver.send(request).is_err() {
                    std::mem::drop(permit);
                    let reply =
                        ErrorReply::new(ErrorCode::ShuttingDown, "the archiver has stopped");
                    return self.refuse(id, reply).await;
                }
                let reply_to = self.reply_to.clone();
                let stats = Arc::clone(&self.shared.stats);
                let task = MaintenanceTask::Prune {
                    before_seq,
                    before_time,
                    drop,
                };
                tokio::spawn(async move {
                    let response = match answered.await {
                        Ok(Ok(pruned)) => Response::Maintained(MaintenanceReport {
                            task,
                            elapsed_ms: started.elapsed().as_millis() as u64,
                            bytes: Some(pruned.bytes),
                            last_seq: pruned.first_seq.checked_sub(1).filter(|&seq| seq > 0),
                        }),
                        Ok(Err(reply)) => {
                            stats.reject(reply.code);
                            Response::Error(reply)
                        }
                        Err(_) => {
                            stats.reject(ErrorCode::ShuttingDown);
                            Response::Error(ErrorReply::new(
                                ErrorCode::ShuttingDown,
                                "the daemon stopped before the prune finished",
                            ))
                        }
                    };
                    let _ = reply_to.send(Outgoing {
                        frame: ResponseFrame { id, response },
                        permit: Some(permit),
                    });
                });
            }
        }
    }

    /// Answers a read command: who may read, the command's own check, then the query on
    /// the read pool, on a task of its own so that the connection reads on meanwhile.
    async fn read(&self, id: u64, command: Command) -> Next {
        if command.reads_entries() && !self.may_read(id).await {
            return Next::Continue;
        }
        if let Err(reply) = command.check() {
            self.refuse(id, reply).await;
            return Next::Continue;
        }
        let context = read::Context {
            archive_dir: self.shared.archive_dir.clone(),
            verifier_key: self.shared.verifier_key.clone(),
        };
        self.query(id, Ok(()), move |connection| {
            command.run(connection, &context)
        })
        .await;
        Next::Continue
    }

    /// Runs `query` on the read pool, once `checked` passes, on a task of its own so that
    /// the connection reads on meanwhile; the answer goes out with the request's permit.
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
                Ok(response) => {
                    // A refusal found by the query itself (a proof of an entry that is not
                    // there) is counted as one found before it.
                    if let Response::Error(reply) = &response {
                        stats.reject(reply.code);
                    }
                    response
                }
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
}
