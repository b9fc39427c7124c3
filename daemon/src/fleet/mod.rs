//! The fleet: every host's log copied into one PostgreSQL database, where a cost report, a
//! trace across hosts and an audit of every host's chain can be had in one place.
//!
//! This module holds what the forwarder (in `witnessd`) and the `witness fleet` commands
//! share: how a PostgreSQL target is written and connected to (passwords from a password
//! file, TLS as libpq's `sslmode` asks), how it is shown without its password, and the
//! central schema. `forward` ships a host's entries; `query` and `audit` read the centre.
//! `docs/FLEET.md` is the specification.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::format::row::{self, Kind, Value};

pub mod audit;
pub mod forward;
pub mod query;

mod schema;
mod target;
mod tls;

pub use schema::{
    BadHostId, FLEET_SCHEMA_VERSION, check_host_id, check_schema, ensure_schema, event_columns,
    pg_values, schema_sql,
};
pub use target::{Target, redact};

/// Most entries one forwarded batch carries, unless configured.
pub const DEFAULT_BATCH: usize = 10_000;

/// Longest host id.
pub const MAX_HOST_ID_LEN: usize = 255;

/// The forwarder's settings (`forward.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The central database.
    pub target: Target,
    /// This host's name at the centre; unset: the log's origin.
    pub host_id: Option<String>,
    /// Most entries in one batch.
    pub batch_max: usize,
}

/// Why the centre could not be reached or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The connection string cannot be used.
    #[error("bad PostgreSQL connection string: {0}")]
    Target(String),
    /// Connecting, or a statement, failed; the message never holds the password.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The central schema is of a version this build does not know.
    #[error(
        "the central schema is version {found}; this witness knows version {FLEET_SCHEMA_VERSION}: \
         upgrade witness"
    )]
    Version {
        /// The version found.
        found: i32,
    },
}

impl From<postgres::Error> for FleetError {
    fn from(error: postgres::Error) -> Self {
        FleetError::Postgres(describe(&error))
    }
}

/// A PostgreSQL error in one line: the server's message and detail where it sent one, else
/// the client's account (a refused connection, a closed socket).
pub fn describe(error: &postgres::Error) -> String {
    use std::error::Error;
    if let Some(db) = error.as_db_error() {
        let mut text = db.message().to_owned();
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
