//! witnessd: a local daemon that records events from many processes into one hash-chained
//! SQLite log through a single writer.
//!
//! The library holds everything but the two binaries' argument parsing, so that tests can
//! run a daemon in-process: [`server::Server`] with a listener and a shutdown future.

pub mod access;
pub mod chain;
pub mod config;
mod connection;
pub mod dbfile;
pub mod http;
pub mod job;
pub mod metrics;
mod query;
pub mod queue;
pub mod read;
pub mod schema;
pub mod server;
pub mod service;
mod stream;
pub mod verify;
pub mod writer;
