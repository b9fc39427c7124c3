//! The daemon's settings, with the defaults a user gets when they pass none.

use std::path::PathBuf;
use std::time::Duration;

use witness_protocol::limits::MAX_FRAME_LEN;

use crate::writer::WriterConfig;

/// Everything `server::Server` needs to know; `witnessd` fills it from flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the socket is bound (unused when the listener is inherited).
    pub socket_path: PathBuf,
    /// Permission bits of a socket the daemon binds itself.
    pub socket_mode: u32,
    /// Entries that may wait for the writer; a full queue slows producers.
    pub queue_capacity: usize,
    /// Largest frame body accepted, at most `limits::MAX_FRAME_LEN`.
    pub max_frame_len: u32,
    /// Requests one connection may have awaiting an answer before the daemon stops reading
    /// from it.
    pub max_in_flight: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// After shutdown starts and the writer has drained, how long to wait for slow clients
    /// to take their last answers.
    pub shutdown_grace: Duration,
    /// Read-only connections for queries; at most this many queries run at once.
    pub read_connections: usize,
    /// How long a stream of entries (`tail -f`, `export`) waits for a client that does not
    /// read before it cuts the stream off and tells the client where to resume.
    pub stall_timeout: Duration,
    /// Batching, durability and checkpoints.
    pub writer: WriterConfig,
}

impl Config {
    /// The defaults, for a socket and a database at the given paths.
    pub fn new(socket_path: PathBuf, db_path: PathBuf) -> Self {
        Config {
            socket_path,
            socket_mode: 0o660,
            // Two writer batches: one committing while the next fills. A deeper queue held
            // more memory (about 500 bytes an entry) and bought no throughput in witness-bench.
            queue_capacity: 8_192,
            max_frame_len: MAX_FRAME_LEN,
            max_in_flight: 1024,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
            read_connections: 4,
            stall_timeout: Duration::from_secs(300),
            writer: WriterConfig::new(db_path),
        }
    }
}
