//! The log's format, and its one owner: the row of `entries` and its columns, the canonical
//! encoding and the hash chain, the Merkle tree in tiles, the schema and its upgrades, money
//! and the cost roll-up, and verification of a stored log.
//!
//! Everything that writes, reads or checks a log goes through this module (the writer, the
//! read side, `witness verify --db`, the benchmarks), so that `docs/FORMAT.md` describes one
//! thing. It knows nothing of sockets, connections or the writer's batching.

pub mod archive;
pub mod chain;
pub mod cost;
pub mod cursor;
pub mod row;
pub mod schema;
pub mod tree;
pub mod verify;
