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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use witness_protocol::ErrorCode;

use crate::config::{Config, Limits};
use crate::connection::{self, Shared};
use crate::dbfile::{DatabaseFile, TakeError};
use crate::metrics::Metrics;
use crate::read::ReadPool;
use crate::schema::OpenError;
use crate::writer::{Control, WriterHandle, WriterStats};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
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

/// Creates a folder and its parents; a folder created here is private to the user (0700).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Every `ErrorCode`, in the order of `ServerStats::rejections_by_code`.
const ERROR_CODES: [ErrorCode; 11] = [
    ErrorCode::VersionMismatch,
    ErrorCode::ExpectedHello,
    ErrorCode::FrameTooLarge,
    ErrorCode::BadFrame,
    ErrorCode::BadRequest,
    ErrorCode::InvalidEntry,
    ErrorCode::Busy,
    ErrorCode::ShuttingDown,
    ErrorCode::Storage,
    ErrorCode::Forbidden,
    ErrorCode::TimedOut,
];

/// Counters of the connection side, for stats.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// The most connections open at once since start.
    pub connections_max: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Requests refused, by the index of their `ErrorCode`.
    rejections_by_code: [AtomicU64; ERROR_CODES.len()],
}

/// A daemon with its database open and its writer running, ready to serve a listener.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    writer: WriterHandle,
    _file: DatabaseFile,
    stats: Arc<ServerStats>,
    queue: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    limits: Arc<RwLock<Limits>>,
}

impl Server {
    /// Takes the database file (its lock, by identity), opens it and starts the writer. A
    /// missing log is created, and said to be, only when `config.create` allows.
    pub fn start(config: Config) -> Result<Server, StartError> {
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
        let writer = WriterHandle::start(
            config.writer.clone(),
            config.queue_capacity,
            Some(file.identity()),
        )?;
        if file.created() {
            tracing::warn!(path = %file.path().display(), "created a new log at {}", file.path().display());
        }
        let stats = Arc::<ServerStats>::default();
        let queue = Arc::new(Semaphore::new(config.queue_capacity));
        let metrics = Arc::new(Metrics::new(
            Arc::clone(&stats),
            Arc::clone(writer.stats()),
            Arc::clone(&queue),
            config.queue_capacity,
            config.writer.db_path.clone(),
        ));
        Ok(Server {
            limits: Arc::new(RwLock::new(config.limits())),
            config: Arc::new(config),
            writer,
            _file: file,
            stats,
            queue,
            metrics,
        })
    }

    /// The figures `witness stats`, the metrics endpoint and systemd's status line show.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// A handle that changes the reloadable settings while the daemon runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            limits: Arc::clone(&self.limits),
            writer: self.writer.control(),
        }
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        Arc::clone(self.writer.stats())
    }

    /// The connection counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
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
            queue,
            metrics,
            limits,
        } = self;
        let cancel = CancellationToken::new();
        let readers = TaskTracker::new();
        let responders = TaskTracker::new();
        let shared = Arc::new(Shared {
            sender: writer.sender(),
            reads: Arc::new(ReadPool::new(
                config.writer.db_path.clone(),
                config.read_connections,
            )),
            committed: writer.committed(),
            queue,
            limits,
            writer_control: writer.control(),
            metrics: Arc::clone(&metrics),
            stats: Arc::clone(&stats),
        });
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                metrics.sample();
            }
        });
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        let failed = writer.stats().failed.clone();
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                _ = &mut shutdown => break,
                _ = failed.cancelled() => break,
                slot = Arc::clone(&connection_slots).acquire_owned() => slot.expect("never closed"),
            };
            let stream = tokio::select! {
                _ = &mut shutdown => break,
                _ = failed.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            stats.connections_total.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::clone(&shared);
            let cancel = cancel.clone();
            let responders = responders.clone();
            readers.spawn(async move {
                connection::serve(stream, shared, cancel, &responders).await;
                drop(slot);
            });
        }
        tracing::info!("shutting down: finishing the frames already read");
        sampler.abort();
        drop(listener);
        cancel.cancel();
        readers.close();
        readers.wait().await;
        drop(shared);
        tracing::info!("draining the queue");
        let writer_stats = Arc::clone(writer.stats());
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        responders.close();
        if tokio::time::timeout(config.shutdown_grace, responders.wait())
            .await
            .is_err()
        {
            tracing::warn!("some clients did not take their last answers in time");
        }
        match writer_stats.failure() {
            Some(reason) => Err(RunError::WriterFailed(reason)),
            None => Ok(()),
        }
    }
}

impl ServerStats {
    /// Counts a refused request.
    pub(crate) fn reject(&self, code: ErrorCode) {
        if let Some(index) = ERROR_CODES.iter().position(|known| *known == code) {
            self.rejections_by_code[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refused requests since start, by reason, leaving out reasons never seen.
    pub fn rejections(&self) -> Vec<(String, u64)> {
        ERROR_CODES
            .iter()
            .zip(&self.rejections_by_code)
            .map(|(code, count)| (format!("{code:?}"), count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Counts a connection opened.
    pub(crate) fn connection_opened(&self) {
        let now = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_max.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Changes the settings of a running daemon that may change without a restart: the limits of
/// new connections, and batching. Cheap to clone; taken before [`Server::run`].
#[derive(Debug, Clone)]
pub struct Reloader {
    limits: Arc<RwLock<Limits>>,
    writer: crossbeam_channel::Sender<Control>,
}

impl Reloader {
    /// Applies the reloadable parts of `config`. What needs a restart is left as it was (see
    /// `Config::reloadable_differences`).
    pub fn apply(&self, config: &Config) {
        *self.limits.write().expect("never poisoned") = config.limits();
        let _ = self.writer.send(Control::Tune {
            max_batch_entries: config.writer.max_batch_entries,
            max_batch_delay: config.writer.max_batch_delay,
        });
    }
}
