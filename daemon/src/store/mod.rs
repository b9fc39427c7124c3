//! The write side: the database file held by identity, room in the writer's queue, the jobs
//! that travel it, the queue itself, and the writer thread that group-commits them.
//!
//! It knows of a connection only where to send an answer (a reply handle in each job), and of
//! the log's format only what `format` exposes.

pub mod acked;
pub mod admission;
pub mod checkpoint;
pub mod dbfile;
pub mod job;
pub mod queue;
pub mod retain;
mod transaction;
pub mod writer;
