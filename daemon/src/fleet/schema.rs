//! The central schema, generated from the row's columns so that the centre stores every field
//! a host hashed, in the same order: its DDL, its version, and the host ids it accepts.

use super::*;

/// The version of the central schema this build creates and reads. Version 1 had no
/// cache-write tokens and no `priced_by` in `events`, and counted no unpriced entries in
/// `cost_hourly`; the first host of a newer build to connect adds them.
pub const FLEET_SCHEMA_VERSION: i32 = 2;

/// Why a text cannot be a host id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHostId {
    /// Empty or too long.
    #[error("a host id is 1 to {MAX_HOST_ID_LEN} bytes, not {0}")]
    Length(usize),
    /// It holds a control character, which no table or terminal shows plainly.
    #[error("host id {0:?} holds a control character")]
    Control(String),
}

/// Checks a host id: what names a host at the centre.
pub fn check_host_id(host_id: &str) -> Result<(), BadHostId> {
    if host_id.is_empty() || host_id.len() > MAX_HOST_ID_LEN {
        return Err(BadHostId::Length(host_id.len()));
    }
    if host_id.chars().any(char::is_control) {
        return Err(BadHostId::Control(host_id.to_owned()));
    }
    Ok(())
}

/// The PostgreSQL type of a column of `entries`.
fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Integer => "bigint",
        Kind::Text => "text",
        Kind::Blob => "bytea",
    }
}

/// The columns of `events`: `host_id`, then a host's `entries` columns in their order.
pub fn event_columns() -> String {
    let mut columns = vec!["host_id"];
    columns.extend(row::COLUMNS);
    columns.join(", ")
}

/// The hashed values and the stored hash of an `events` row read with [`event_columns`]
/// (`host_id` first), borrowed from the row.
pub fn pg_values(stored: &postgres::Row) -> Result<(row::Values<'_>, &[u8]), FleetError> {
    let mut values = [Value::Null; row::HASHED];
    for (position, value) in values.iter_mut().enumerate() {
        let column = row::column_of(position);
        *value = match row::KINDS[column].0 {
            Kind::Integer => Value::from(stored.try_get::<_, Option<i64>>(column + 1)?),
            _ => Value::from(stored.try_get::<_, Option<&str>>(column + 1)?),
        };
    }
    let hash: &[u8] = stored.try_get(row::column::HASH + 1)?;
    Ok((values, hash))
}

/// The central schema, version [`FLEET_SCHEMA_VERSION`], created if missing. `events` holds
/// every host's entries, the same columns as a host's `entries` after `host_id`, partitioned
/// by month of `ts` (the receive time, which a host's clock sets once and never again); its
/// key includes `ts` because PostgreSQL requires a partitioned table's key to hold the
/// partition key, and the watermark keeps `(host_id, seq)` unique. `cost_hourly` is the
/// roll-up that `witness fleet cost` reads, kept in the same transaction as the rows.
pub fn schema_sql() -> String {
    let mut columns = vec!["    host_id text NOT NULL".to_owned()];
    for (name, (kind, nullable)) in row::COLUMNS.iter().zip(row::KINDS) {
        columns.push(format!(
            "    {name} {}{}",
            pg_type(kind),
            if nullable { "" } else { " NOT NULL" }
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS witness_fleet (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    host_id         text PRIMARY KEY,
    verifier_key    text NOT NULL,
    last_seq        bigint NOT NULL DEFAULT 0,
    last_hash       bytea NOT NULL,
    last_ts         bigint,
    tree_edge       bytea NOT NULL,
    local_seq       bigint NOT NULL DEFAULT 0,
    checkpoint_size bigint,
    checkpoint      text,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    forwarded_at    timestamptz,
    refused_at      timestamptz,
    refused         text
);
CREATE TABLE IF NOT EXISTS events (
{},
    PRIMARY KEY (host_id, seq, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS events_by_trace ON events (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_time ON events ((coalesce(client_ts, ts)));
CREATE INDEX IF NOT EXISTS events_by_component ON events (component, (coalesce(client_ts, ts)));
CREATE TABLE IF NOT EXISTS checkpoints (
    host_id text   NOT NULL,
    size    bigint NOT NULL,
    note    text   NOT NULL,
    PRIMARY KEY (host_id, size)
);
CREATE TABLE IF NOT EXISTS host_conflicts (
    host_id      text        NOT NULL,
    verifier_key text        NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    attempts     bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (host_id, verifier_key)
);
CREATE TABLE IF NOT EXISTS cost_hourly (
    host_id           text   NOT NULL,
    hour              bigint NOT NULL,
    component         text   NOT NULL,
    event             text   NOT NULL,
    model             text   NOT NULL,
    entries           bigint NOT NULL,
    tokens_in         bigint NOT NULL,
    tokens_out        bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    reasoning_tokens  bigint NOT NULL,
    micro_usd         bigint NOT NULL,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    unpriced          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (host_id, hour, component, event, model)
);
",
        columns.join(",\n")
    )
}

/// Creates the central schema if it is missing (under a lock, so that hosts starting
/// together do not race), and checks its version.
pub fn ensure_schema(client: &mut postgres::Client) -> Result<(), FleetError> {
    let mut transaction = client.transaction()?;
    // `IF NOT EXISTS` tells of every table it skips; that is not news.
    transaction.batch_execute("SET LOCAL client_min_messages = warning")?;
    transaction.execute("SELECT pg_advisory_xact_lock(7395847385)", &[])?;
    transaction.batch_execute(&schema_sql())?;
    let version: Option<i32> = transaction
        .query_opt("SELECT max(version) FROM witness_fleet", &[])?
        .and_then(|row| row.get(0));
    match version {
        None => {
            transaction.execute(
                "INSERT INTO witness_fleet (version) VALUES ($1)",
                &[&FLEET_SCHEMA_VERSION],
            )?;
        }
        Some(FLEET_SCHEMA_VERSION) => {}
        Some(1) => {
            // Columns at the end, as the host's own upgrade adds them; NULL or zero in every
            // row there already, which is what those rows held.
            transaction.batch_execute(&format!(
                "ALTER TABLE events ADD COLUMN IF NOT EXISTS cache_write_tokens bigint,
                     ADD COLUMN IF NOT EXISTS cache_write_1h_tokens bigint,
                     ADD COLUMN IF NOT EXISTS priced_by text;
                 ALTER TABLE cost_hourly
                     ADD COLUMN IF NOT EXISTS cache_write_tokens bigint NOT NULL DEFAULT 0,
                     ADD COLUMN IF NOT EXISTS unpriced bigint NOT NULL DEFAULT 0;
                 UPDATE witness_fleet SET version = {FLEET_SCHEMA_VERSION};"
            ))?;
        }
        Some(found) => return Err(FleetError::Version { found }),
    }
    transaction.commit()?;
    Ok(())
}

/// Checks that the centre has a schema this build reads, without creating one: what the
/// read commands do.
pub fn check_schema(client: &mut postgres::Client) -> Result<(), FleetError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('witness_fleet') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Err(FleetError::Postgres(
            "this database holds no fleet: no host has forwarded to it yet".into(),
        ));
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM witness_fleet", &[])?
        .get(0);
    match version {
        Some(FLEET_SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(FleetError::Version { found }),
        None => Err(FleetError::Postgres(
            "the fleet schema has no version row".into(),
        )),
    }
}
