//! The listener: binding the socket, the accept loop, and the order of a clean stop.
//!
//! [`Server::run`] takes the shutdown signal as a future, so tests start and stop a daemon
//! in-process. On shutdown: stop accepting, let every connection finish the frames it has
//! read, close the queue, let the writer commit and acknowledge the rest, then give slow
//! clients a moment to take their answers.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;

use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{ErrorReply, Response, ResponseFrame, frame};

use super::connection::{self, Shared, Stop};
use crate::access::{self, Gate, Peer};
use crate::config::{Config, Limits};
use crate::fleet::forward::{Forwarder, Source};
use crate::fleet::redact;
use crate::format::schema::OpenError;
use crate::observe::budgets::Budgets;
use crate::observe::metrics::Metrics;
use crate::prices::{Book, Prices};
use crate::read::ReadPool;
use crate::stats::{ForwardStats, ServerStats};
use crate::store::admission::Admission;
use crate::store::checkpoint::{self, CheckpointError, Checkpointer};
use crate::store::dbfile::{DatabaseFile, TakeError};
use crate::store::job::Control;
use crate::store::queue::JobQueue;
use crate::store::retain::Archiver;
use crate::store::writer::WriterHandle;

/// How long a stop waits for the forwarder's batch in flight; one left over is shipped at the
/// next start.
const FORWARDER_STOP: Duration = Duration::from_secs(5);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The socket's folder could be written by another user, who could then impersonate the
    /// daemon.
    #[error(
        "will not serve a socket in {folder} (owner uid {owner}, mode {mode:o}): another user \
         could put their own socket there and receive every entry; use a folder only this \
         user (or root) owns and may write, such as $XDG_RUNTIME_DIR/witness"
    )]
    UnsafeFolder {
        /// The folder.
        folder: String,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// The OTLP receiver's tokens file cannot be used.
    #[error(transparent)]
    Tokens(#[from] crate::otlp::tokens::TokensError),
    /// The prices file or a configured price cannot be used.
    #[error(transparent)]
    Prices(#[from] crate::prices::LoadError),
    /// A configured budget cannot be watched.
    #[error("budget: {0}")]
    Budgets(crate::config::BadValue),
    /// Another daemon answers on the socket.
    #[error("another witnessd is already serving {0}: stop it first, or pick another --socket")]
    SocketInUse(String),
    /// Something other than a socket sits at the socket path.
    #[error("{0} exists and is not a socket: remove it or pick another --socket")]
    NotASocket(String),
    /// Binding or preparing the socket failed.
    #[error("cannot bind {path}: {source}")]
    Bind {
        /// The socket path.
        path: String,
        /// The system's reason.
        source: io::Error,
    },
    /// The database file could not be taken: missing where a log must exist, held by
    /// another daemon, or unreadable.
    #[error(transparent)]
    DatabaseFile(#[from] TakeError),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] OpenError),
    /// The signing key could not be read or made.
    #[error(transparent)]
    Key(#[from] CheckpointError),
}

/// Why a running daemon stopped other than when asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The writer failed for good (its database file was deleted or replaced): it
    /// acknowledged nothing from then on, and the daemon stopped.
    #[error("{0}")]
    WriterFailed(String),
}

/// Binds a listening socket at `path` with permission bits `mode`, creating its folder.
/// Refuses a path where a live daemon answers or that is not a socket, and replaces a
/// socket nobody serves (left by a daemon that was killed).
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, StartError> {
    let shown = || path.display().to_string();
    let bind_error = |source| StartError::Bind {
        path: shown(),
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        create_private_dir(parent).map_err(bind_error)?;
        check_socket_folder(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => {
            return Err(StartError::NotASocket(shown()));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(StartError::SocketInUse(shown())),
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "replacing a stale socket");
                std::fs::remove_file(path).map_err(bind_error)?;
            }
            Err(error) => return Err(bind_error(error)),
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(bind_error(error)),
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    Ok(listener)
}

/// Refuses to serve from a folder that another user owns or may write: anyone who can write
/// the folder can put their own socket at the path, and clients would hand them their
/// entries. Root's folders are fine (the system service's `/run/witness` is made by systemd).
fn check_socket_folder(folder: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::MetadataExt;
    let own = crate::format::row::own_uid();
    let metadata = std::fs::metadata(folder).map_err(|source| StartError::Bind {
        path: folder.display().to_string(),
        source,
    })?;
    let owner_ok = metadata.uid() == own || metadata.uid() == 0;
    if owner_ok && metadata.mode() & 0o022 == 0 {
        return Ok(());
    }
    Err(StartError::UnsafeFolder {
        folder: folder.display().to_string(),
        owner: metadata.uid(),
        mode: metadata.mode() & 0o7777,
    })
}

/// Creates a folder and its parents; a folder created here is private to the user (0700).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A daemon with its database open and its writer running, ready to serve a listener.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    writer: WriterHandle,
    _file: DatabaseFile,
    stats: Arc<ServerStats>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    limits: Arc<RwLock<Limits>>,
    gate: Arc<Gate>,
    verifier_key: String,
    forward: Option<Arc<ForwardStats>>,
    /// HTTP listeners to serve beside the socket.
    http: Vec<crate::http::Listener>,
    /// The OTLP receiver's settings, tokens and counters.
    otlp: Arc<crate::http::OtlpContext>,
    /// The prices in force.
    prices: Arc<Prices>,
    /// The budgets in force and their spend.
    budgets: Arc<Budgets>,
    /// The dashboard's logins.
    sessions: Arc<crate::http::web::Sessions>,
}

impl Server {
    /// Takes the database file (its lock, by identity), opens it and starts the writer. A
    /// missing log is created, and said to be, only when `config.create` allows.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let book = Book::load(&config.prices)?;
        let (models, configured) = book.sizes();
        let prices_loaded = book.name().to_owned();
        let prices = Arc::new(Prices::new(book));
        let budgets = Arc::new(Budgets::new(
            crate::config::check_budgets(&config.budgets).map_err(StartError::Budgets)?,
        ));
        let tokens = match &config.otlp.tokens_file {
            Some(path) => crate::otlp::tokens::Tokens::load(path)?,
            None => crate::otlp::tokens::Tokens::default(),
        };
        let otlp = Arc::new(crate::http::OtlpContext {
            listening: config.otlp.listen.is_some(),
            max_body: config.otlp.max_body,
            tokens: Arc::new(tokens),
            stats: Default::default(),
        });
        let db_path = &config.writer.db_path;
        if config.create
            && let Some(parent) = db_path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
        {
            create_private_dir(parent).map_err(|source| StartError::Bind {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let file = DatabaseFile::take(db_path, config.create)?;
        let (signer, new_key) = checkpoint::load_or_create_key(&config.checkpoints)?;
        let verifier_key = signer.verifier().to_string();
        let saved = new_key.then(|| signer.to_secret_text());
        let checkpointer = Checkpointer::new(signer, config.checkpoints.clone())
            .accepting_loss(config.accept_loss);
        let writer = WriterHandle::start(
            config.writer.clone(),
            Some(file.identity()),
            Some(checkpointer),
        )?;
        // Written only now that the database is open, and before anything is served or
        // signed: a start that fails leaves no key behind.
        if let Some(secret) = saved {
            let key = witness_protocol::note::SignerKey::parse(&secret)
                .expect("a key reads back from its own text");
            checkpoint::save_key(&config.checkpoints, &key)?;
            let said = format!(
                "created the log's signing key at {}; its verifier key, in {}, is {}",
                config.checkpoints.key_file.display(),
                checkpoint::verifier_file(&config.checkpoints.key_file).display(),
                verifier_key
            );
            // A first start makes both, as it should; a new key for a log that existed is
            // worth a warning: checkpoints signed before cannot be checked with it.
            if file.created() {
                tracing::info!("{said}");
            } else {
                tracing::warn!("{said}");
            }
        }
        if file.created() {
            tracing::info!("created a new log at {}", file.path().display());
        }
        tracing::info!(table = prices_loaded, models, configured, "prices loaded");
        let stats = Arc::<ServerStats>::default();
        let admission = Arc::new(Admission::new(config.queue_capacity));
        let gate = Arc::new(Gate::new(config.access.clone()));
        let forward = config
            .forward
            .as_ref()
            .map(|_| Arc::<ForwardStats>::default());
        let mut metrics = Metrics::new(Arc::clone(&stats), &writer, &admission, Arc::clone(&gate));
        if let Some(forward) = &forward {
            metrics = metrics.with_forward(Arc::clone(forward));
        }
        let metrics = Arc::new(metrics);
        Ok(Server {
            forward,
            limits: Arc::new(RwLock::new(config.limits())),
            config: Arc::new(config),
            writer,
            _file: file,
            stats,
            admission,
            metrics,
            gate,
            verifier_key,
            http: Vec::new(),
            otlp,
            prices,
            budgets,
            sessions: Arc::default(),
        })
    }

    /// Serves `listener` too, from `run` until the same stop: its routes reach the same
    /// intake, reads and access rules as the socket.
    pub fn serve_http(&mut self, listener: crate::http::Listener) {
        if listener.kind == crate::http::Kind::Web
            && let Ok(address) = listener.socket.local_addr()
        {
            self.sessions.serve_at(address);
        }
        self.http.push(listener);
    }

    /// The figures `witness stats`, the metrics endpoint and systemd's status line show.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// A handle that changes the reloadable settings while the daemon runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            limits: Arc::clone(&self.limits),
            writer: self.writer.queue(),
            gate: Arc::clone(&self.gate),
            prices: Arc::clone(&self.prices),
            budgets: Arc::clone(&self.budgets),
        }
    }

    /// Serves `listener` until `shutdown` resolves, then stops cleanly: every entry read from
    /// a socket is committed and acknowledged before this returns. It also stops, and says
    /// why, when the writer fails for good.
    pub async fn run(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        let Server {
            config,
            writer,
            _file,
            stats,
            admission,
            metrics,
            limits,
            gate,
            verifier_key,
            forward,
            http,
            otlp,
            prices,
            budgets,
            sessions,
        } = self;
        let forwarder = start_forwarder(&config, forward, &verifier_key, &writer);
        let archiver = Archiver::start(
            config.retain.clone(),
            config.writer.db_path.clone(),
            writer.queue(),
        );
        let stop = Stop::default();
        let readers = TaskTracker::new();
        let responders = TaskTracker::new();
        let shared = Arc::new(Shared {
            writer: writer.queue(),
            reads: Arc::new(ReadPool::new(
                config.writer.db_path.clone(),
                config.read_connections,
            )),
            committed: writer.committed(),
            intake: Arc::new(crate::intake::Intake {
                queue: writer.queue(),
                admission,
                gate: Arc::clone(&gate),
                stats: Arc::clone(&stats),
                prices,
            }),
            limits,
            metrics: Arc::clone(&metrics),
            stats: Arc::clone(&stats),
            gate: Arc::clone(&gate),
            verifier_key,
            archive_dir: config.retain.archive_dir.clone(),
            archiver: archiver.requests(),
            budgets: Arc::clone(&budgets),
            sessions: Arc::clone(&sessions),
            paths: witness_protocol::admin::PathsReport {
                socket: config.socket_path.display().to_string(),
                db: config.writer.db_path.display().to_string(),
                key_file: config.checkpoints.key_file.display().to_string(),
                verifier_file: checkpoint::verifier_file(&config.checkpoints.key_file)
                    .display()
                    .to_string(),
                checkpoint_file: config.checkpoints.state_file.display().to_string(),
                acked_file: crate::store::acked::mark_file(&config.checkpoints.state_file)
                    .display()
                    .to_string(),
                archive_dir: config
                    .retain
                    .archive_dir
                    .as_ref()
                    .map(|dir| dir.display().to_string()),
            },
        });
        let watcher = tokio::spawn(crate::observe::budgets::watch(
            Arc::clone(&budgets),
            Arc::clone(&shared.reads),
            writer.queue(),
            stop.cancel.clone(),
        ));
        let context = crate::http::Context {
            metrics: Arc::clone(&metrics),
            gate: Arc::clone(&gate),
            intake: Arc::clone(&shared.intake),
            otlp,
            budgets,
            web: Arc::new(crate::http::web::WebContext {
                sessions,
                reads: Arc::clone(&shared.reads),
                committed: shared.committed.clone(),
                read: crate::read::Context {
                    archive_dir: shared.archive_dir.clone(),
                    verifier_key: shared.verifier_key.clone(),
                },
                stall_timeout: config.limits().stall_timeout,
                shutdown: stop.cancel.clone(),
                verify: Default::default(),
                feeds: crate::http::web::feed::feeds(),
            }),
        };
        crate::http::serve_all(http, &context, &readers, &stop.cancel);
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                metrics.sample();
            }
        });
        let failed = writer.stats().failed.clone();
        tokio::pin!(shutdown);
        loop {
            // Every connection is accepted at once, so that no client waits unanswered in the
            // kernel's backlog: one the limits refuse hears why and is closed.
            let stream = tokio::select! {
                _ = &mut shutdown => break,
                _ = failed.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            stats.connections_total.fetch_add(1, Ordering::Relaxed);
            let peer = Peer::of(&stream);
            let access = gate.access();
            if let Err(reason) = access::admit(&access, &peer) {
                refuse_connection(stream, &stats, ErrorReply::from(reason));
                continue;
            }
            let place = match gate
                .connections
                .enter(&peer, config.max_connections, &access)
            {
                Ok(place) => place,
                Err(reason) => {
                    refuse_connection(stream, &stats, ErrorReply::from(reason));
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            let stop = stop.clone();
            let responders = responders.clone();
            readers.spawn(async move {
                connection::serve(stream, peer, shared, &stop, &responders).await;
                drop(place);
            });
        }
        tracing::info!("shutting down: finishing the frames already read");
        sampler.abort();
        watcher.abort();
        drop(listener);
        stop.cancel.cancel();
        // Clients get a grace period to let their connections finish what was read; then
        // nothing waits for them any more, so the stop takes a bounded time.
        let abandon = stop.abandon.clone();
        let grace = config.shutdown_grace;
        let give_up = tokio::time::Instant::now() + grace;
        let abandoning = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abandon.cancel();
        });
        readers.close();
        readers.wait().await;
        abandoning.abort();
        drop(shared);
        drop(context);
        tracing::info!("draining the queue");
        let writer_stats = Arc::clone(writer.stats());
        // The archiver stops first, after the step it is on; a range it handed the writer is
        // finished, or resumed at the next start.
        archiver.signal_stop();
        let _ = tokio::task::spawn_blocking(move || {
            writer.join();
            archiver.stop();
        })
        .await;
        if let Some(forwarder) = forwarder {
            let _ = tokio::task::spawn_blocking(move || forwarder.stop(FORWARDER_STOP)).await;
        }
        responders.close();
        // The same grace, not a second one: clients that read have had it to take their
        // answers, and the last commit's answers get a moment more.
        let last_answers = give_up.max(tokio::time::Instant::now() + Duration::from_millis(200));
        if tokio::time::timeout_at(last_answers, responders.wait())
            .await
            .is_err()
        {
            tracing::warn!("some clients did not take their last answers in time");
        }
        match writer_stats.failure() {
            Some(reason) => Err(RunError::WriterFailed(reason)),
            None => {
                truncate_wal(&config.writer.db_path);
                Ok(())
            }
        }
    }
}

/// Empties the WAL once the daemon's every connection is closed, as a clean stop promises
/// (FORMAT.md): the writer's last checkpoint cannot reset it while a follower still reads
/// the last commits, and a read-only connection that closes last cannot remove it. This
/// connection is the last, so closing it removes the file.
fn truncate_wal(db: &std::path::Path) {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let truncated = rusqlite::Connection::open_with_flags(db, flags).and_then(|connection| {
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        })
    });
    match truncated {
        Ok(0) => {}
        Ok(_) => tracing::warn!("the WAL could not be emptied at stop: a reader still holds it"),
        Err(error) => tracing::warn!(%error, "the WAL could not be emptied at stop"),
    }
}

/// Starts the forwarder to the fleet when one is configured; a forwarder that cannot start
/// is logged, and the daemon serves without it.
fn start_forwarder(
    config: &Config,
    forward: Option<Arc<ForwardStats>>,
    verifier_key: &str,
    writer: &WriterHandle,
) -> Option<Forwarder> {
    match (&config.forward, forward) {
        (Some(settings), Some(stats)) => {
            let host_id = settings
                .host_id
                .clone()
                .unwrap_or_else(|| config.checkpoints.origin.clone());
            let source = Source {
                db_path: config.writer.db_path.clone(),
                verifier_key: verifier_key.to_owned(),
                committed: writer.committed(),
            };
            tracing::info!(
                host_id = %host_id,
                postgres = %redact(&settings.target.url),
                "forwarding to the fleet"
            );
            match Forwarder::start(settings.clone(), host_id, source, stats) {
                Ok(forwarder) => Some(forwarder),
                Err(error) => {
                    tracing::error!(%error, "cannot start the forwarder; serving without it");
                    None
                }
            }
        }
        _ => None,
    }
}

/// Answers a connection the limits refuse with one error frame (id 0), within a second, and
/// closes it: the client's handshake reads the reason instead of hanging.
fn refuse_connection(stream: tokio::net::UnixStream, stats: &ServerStats, reply: ErrorReply) {
    use tokio::io::AsyncWriteExt;
    tracing::debug!(code = ?reply.code, message = %reply.message, "connection refused");
    stats.reject(reply.code);
    let frame = ResponseFrame {
        id: 0,
        response: Response::Error(reply),
    };
    let mut bytes = Vec::new();
    if frame::encode(&frame, MAX_FRAME_LEN, &mut bytes).is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
    });
}

/// Changes the settings of a running daemon that may change without a restart: the limits of
/// new connections, and batching. Cheap to clone; taken before [`Server::run`].
#[derive(Debug, Clone)]
pub struct Reloader {
    limits: Arc<RwLock<Limits>>,
    writer: Arc<JobQueue>,
    gate: Arc<Gate>,
    prices: Arc<Prices>,
    budgets: Arc<Budgets>,
}

impl Reloader {
    /// Applies the reloadable parts of `config`. What needs a restart is left as it was (see
    /// `Config::reloadable_differences`).
    pub fn apply(&self, config: &Config) {
        *self.limits.write().expect("never poisoned") = config.limits();
        self.gate.replace(config.access.clone());
        let _ = self.writer.control(Control::Tune {
            max_batch_entries: config.writer.max_batch_entries,
            max_batch_delay: config.writer.max_batch_delay,
        });
        // The configuration was checked whole before it got here.
        if let Ok(budgets) = crate::config::check_budgets(&config.budgets) {
            self.budgets.replace(budgets);
        }
        // Read again whether or not the configuration changed: a reload is how a newer
        // prices file is taken in. One that does not load leaves the prices as they were.
        match Book::load(&config.prices) {
            Ok(book) => {
                let (models, configured) = book.sizes();
                tracing::info!(table = book.name(), models, configured, "prices reloaded");
                self.prices.replace(book);
            }
            Err(error) => {
                tracing::error!(%error, "prices not reloaded; the prices in force stay");
            }
        }
    }
}
