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
    /// Batching, durability and checkpoints.
    pub writer: WriterConfig,
}

impl Config {
    /// The defaults, for a socket and a database at the given paths.
    pub fn new(socket_path: PathBuf, db_path: PathBuf) -> Self {
        Config {
            socket_path,
            socket_mode: 0o660,
            queue_capacity: 16_384,
            max_frame_len: MAX_FRAME_LEN,
            max_in_flight: 1024,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
            writer: WriterConfig::new(db_path),
        }
    }
}
