//! witnessd: a local daemon that records events from many processes into one hash-chained
//! SQLite log through a single writer.
//!
//! The library holds everything but the two binaries' argument parsing, so that tests can
//! run a daemon in-process: [`serve::server::Server`] with a listener and a shutdown future.
//!
//! The modules form layers, each importing only those below it:
//!
//! 1. [`format`](mod@format): the log's format (row, hash chain, schema, verification),
//!    [`stats`]: the counters every part shares, [`errors`]: errors as people read them, and
//!    [`faults`]: the crash tests' fault points (empty without the `faults` feature), and
//!    [`prices`]: the price table that turns tokens into dollars.
//! 2. [`store`]: the writer and its queue; [`read`]: the read-only queries; [`fleet`]: the
//!    forwarder to the fleet's PostgreSQL and the fleet's queries.
//! 3. [`config`]: the settings; [`access`]: who may connect, write and read, and how much;
//!    [`intake`]: where every transport's appends are checked and admitted; [`otlp`]:
//!    OpenTelemetry's requests decoded and mapped to entries.
//! 4. [`observe`]: metrics and systemd.
//! 5. [`serve`]: the socket and its connections; [`http`]: the TCP listeners, beside it.

pub mod access;
pub mod config;
pub mod errors;
pub mod faults;
pub mod fleet;
pub mod format;
pub mod http;
pub mod intake;
pub mod observe;
pub mod otlp;
pub mod prices;
pub mod read;
pub mod serve;
pub mod stats;
pub mod store;
