//! Socket-level tests of witness: a real daemon (in-process, or the `witnessd` binary) on a
//! temporary socket and database, spoken to over the real socket.

mod harness;

mod access;
mod bounds;
mod checkpoints;
mod cli;
mod contract;
mod crash;
mod disk;
mod docs;
mod fleet;
mod format;
mod ingest;
mod layers;
mod notes;
mod prices;
mod proofs;
mod protocol_abuse;
mod read;
mod reconnect;
mod retain;
pub(crate) mod service;
mod spool;
mod startup;
mod verify;
mod web;
