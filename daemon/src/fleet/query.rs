//! The fleet's read side: cost across hosts, a trace across hosts, and each host's state, as
//! `witness fleet cost|trace|hosts` show them. Entries are dated as a host dates them
//! (`schema::EVENT_TIME`).

use postgres::types::ToSql;
use witness_protocol::query::{CostRow, StoredEntry};

use super::{FleetError, event_columns, pg_values};
use crate::format::row;
use crate::format::schema::{EVENT_TIME, HOUR_NS, hour_of};

/// What a fleet cost report groups by (`witness fleet cost --by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CostBy {
    /// By host id.
    Host,
    /// By component.
    Component,
    /// By model (`""` for entries without one).
    Model,
    /// By event.
    Event,
}

impl CostBy {
    fn column(self) -> &'static str {
        match self {
            CostBy::Host => "host_id",
            CostBy::Component => "component",
            CostBy::Model => "coalesce(model, '')",
            CostBy::Event => "event",
        }
    }
}

/// Entries, tokens and money per group over `[since, until)` (nanoseconds; either open),
/// most money first, and their total; a group without a value (no model) has no key.
/// Whole hours come from the `cost_hourly` roll-up, the partial hours at either end from
/// `events` through the time index, so the answer is exact and reads a few thousand rows
/// however many events there are.
pub fn cost(
    client: &mut postgres::Client,
    by: CostBy,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<(Vec<CostRow>, CostRow), FleetError> {
    let key = by.column();
    let event_rows = |window: &str| {
        format!(
            "SELECT {key} AS key, 1 AS n, coalesce(tokens_in, 0) AS tin, \
             coalesce(tokens_out, 0) AS tout, coalesce(cache_read_tokens, 0) AS cache, \
             coalesce(cache_write_tokens, 0) AS write, coalesce(reasoning_tokens, 0) AS reason, \
             coalesce(cost_micro_usd, 0) AS usd, \
             (tokens_in IS NOT NULL AND cost_micro_usd IS NULL)::int AS unpriced \
             FROM events WHERE {window}"
        )
    };
    let rollup = |window: &str| {
        format!(
            "SELECT {} AS key, entries AS n, tokens_in AS tin, tokens_out AS tout, \
             cache_read_tokens AS cache, cache_write_tokens AS write, \
             reasoning_tokens AS reason, micro_usd AS usd, unpriced \
             FROM cost_hourly WHERE {window}",
            if by == CostBy::Model { "model" } else { key }
        )
    };
    // Hours wholly inside the window, [first, last), and the partial ends around them.
    let first = since.map(|since| hour_of(since) + i64::from(since % HOUR_NS != 0));
    let last = until.map(hour_of);
    let mut parts = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut param = |value: i64| {
        params.push(Box::new(value));
        format!("${}::bigint", params.len())
    };
    match (first, last) {
        (Some(first), Some(last)) if first >= last => {
            let window = format!(
                "{EVENT_TIME} >= {} AND {EVENT_TIME} < {}",
                param(since.unwrap_or_default()),
                param(until.unwrap_or_default())
            );
            parts.push(event_rows(&window));
        }
        _ => {
            let mut hours = Vec::new();
            if let Some(first) = first {
                hours.push(format!("hour >= {}", param(first)));
                parts.push(event_rows(&format!(
                    "{EVENT_TIME} >= {} AND {EVENT_TIME} < {}",
                    param(since.unwrap_or_default()),
                    param(first.saturating_mul(HOUR_NS))
                )));
            }
            if let Some(last) = last {
                hours.push(format!("hour < {}", param(last)));
                parts.push(event_rows(&format!(
                    "{EVENT_TIME} >= {} AND {EVENT_TIME} < {}",
                    param(last.saturating_mul(HOUR_NS)),
                    param(until.unwrap_or_default())
                )));
            }
            if hours.is_empty() {
                hours.push("true".into());
            }
            parts.push(rollup(&hours.join(" AND ")));
        }
    }
    const MAX: i64 = crate::format::cost::SATURATED;
    let sql = format!(
        "SELECT key, least(sum(n), {MAX})::bigint, least(sum(tin), {MAX})::bigint, \
         least(sum(tout), {MAX})::bigint, least(sum(cache), {MAX})::bigint, \
         least(sum(write), {MAX})::bigint, least(sum(reason), {MAX})::bigint, \
         least(sum(usd), {MAX})::bigint AS usd, least(sum(unpriced), {MAX})::bigint \
         FROM ({}) AS source GROUP BY key ORDER BY usd DESC, key",
        parts.join(" UNION ALL ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|param| param.as_ref()).collect();
    let rows = client.query(&sql, &params)?;
    let sum = |row: &postgres::Row, index: usize| row.get::<_, i64>(index) as u64;
    let rows: Vec<CostRow> = rows
        .iter()
        .map(|row| CostRow {
            key: Some(row.get::<_, String>(0)).filter(|key| !key.is_empty()),
            entries: sum(row, 1),
            tokens_in: sum(row, 2),
            tokens_out: sum(row, 3),
            cache_read_tokens: sum(row, 4),
            cache_write_tokens: sum(row, 5),
            reasoning_tokens: sum(row, 6),
            micro_usd: sum(row, 7),
            unpriced: sum(row, 8),
        })
        .collect();
    let total = rows.iter().fold(CostRow::default(), |total, row| CostRow {
        key: None,
        entries: total.entries.saturating_add(row.entries),
        tokens_in: total.tokens_in.saturating_add(row.tokens_in),
        tokens_out: total.tokens_out.saturating_add(row.tokens_out),
        cache_read_tokens: total
            .cache_read_tokens
            .saturating_add(row.cache_read_tokens),
        cache_write_tokens: total
            .cache_write_tokens
            .saturating_add(row.cache_write_tokens),
        reasoning_tokens: total.reasoning_tokens.saturating_add(row.reasoning_tokens),
        micro_usd: total.micro_usd.saturating_add(row.micro_usd),
        unpriced: total.unpriced.saturating_add(row.unpriced),
    });
    Ok((rows, total))
}

/// Up to `limit` entries of a trace from every host, in the order of their time (then host
/// and `seq`), each with its host.
pub fn trace(
    client: &mut postgres::Client,
    trace_id: &str,
    limit: i64,
) -> Result<Vec<(String, StoredEntry)>, FleetError> {
    let rows = client.query(
        &format!(
            "SELECT {} FROM events WHERE trace_id = $1 ORDER BY {EVENT_TIME}, host_id, seq \
             LIMIT $2",
            event_columns()
        ),
        &[&trace_id, &limit],
    )?;
    rows.iter()
        .map(|stored| {
            let (values, hash) = pg_values(stored)?;
            Ok((stored.get(0), row::entry_of(&values, hash)))
        })
        .collect()
}

/// A host as the centre knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its id.
    pub host_id: String,
    /// The last `seq` the centre holds.
    pub last_seq: i64,
    /// The host's last `seq` when it last forwarded.
    pub local_seq: i64,
    /// The receive time of its last entry at the centre, in nanoseconds.
    pub last_ts: Option<i64>,
    /// When it last forwarded a batch, in nanoseconds since the epoch.
    pub forwarded_at: Option<i64>,
    /// The size of its newest checkpoint at the centre.
    pub checkpoint_size: Option<i64>,
    /// Why the centre refuses it, if it does.
    pub refused: Option<String>,
    /// Other logs that asked to forward under its id, which the centre refused.
    pub conflicts: Vec<Conflict>,
}

/// A log that asked to forward under a host id pinned to another log's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Its key.
    pub verifier_key: String,
    /// When it first and last asked, in nanoseconds since the epoch.
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// How often it asked.
    pub attempts: i64,
}

/// The conflicts recorded for each host, by host id: none at a centre no host of this
/// build has reached yet, which has no `host_conflicts` table.
pub fn conflicts(
    client: &mut postgres::Client,
) -> Result<std::collections::BTreeMap<String, Vec<Conflict>>, FleetError> {
    let mut found = std::collections::BTreeMap::<String, Vec<Conflict>>::new();
    let exists: bool = client
        .query_one("SELECT to_regclass('host_conflicts') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(found);
    }
    for row in client.query(
        "SELECT host_id, verifier_key, (extract(epoch FROM first_seen) * 1e9)::bigint, \
         (extract(epoch FROM last_seen) * 1e9)::bigint, attempts \
         FROM host_conflicts ORDER BY host_id, first_seen",
        &[],
    )? {
        found.entry(row.get(0)).or_default().push(Conflict {
            verifier_key: row.get(1),
            first_seen: row.get(2),
            last_seen: row.get(3),
            attempts: row.get(4),
        });
    }
    Ok(found)
}

/// What `clear` cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    /// The refusal lifted, if the host had one.
    pub refusal: Option<String>,
    /// The conflicting logs forgotten.
    pub conflicts: u64,
}

/// Lifts a host's refusal and forgets the logs that conflicted with it, once the operator
/// has dealt with them: a host still refused for cause is refused again at its next batch.
/// `None` when no such host has forwarded.
pub fn clear(client: &mut postgres::Client, host_id: &str) -> Result<Option<Cleared>, FleetError> {
    let mut transaction = client.transaction()?;
    let Some(host) = transaction.query_opt(
        "SELECT refused FROM hosts WHERE host_id = $1 FOR UPDATE",
        &[&host_id],
    )?
    else {
        return Ok(None);
    };
    let refusal: Option<String> = host.get(0);
    transaction.execute(
        "UPDATE hosts SET refused = NULL, refused_at = NULL WHERE host_id = $1",
        &[&host_id],
    )?;
    let exists: bool = transaction
        .query_one("SELECT to_regclass('host_conflicts') IS NOT NULL", &[])?
        .get(0);
    let conflicts = if exists {
        transaction.execute("DELETE FROM host_conflicts WHERE host_id = $1", &[&host_id])?
    } else {
        0
    };
    transaction.commit()?;
    Ok(Some(Cleared { refusal, conflicts }))
}

/// Every host, by id, with its conflicts.
pub fn hosts(client: &mut postgres::Client) -> Result<Vec<Host>, FleetError> {
    let mut conflicts = conflicts(client)?;
    let rows = client.query(
        "SELECT host_id, last_seq, local_seq, last_ts, \
         (extract(epoch FROM forwarded_at) * 1e9)::bigint, checkpoint_size, refused \
         FROM hosts ORDER BY host_id",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|row| Host {
            host_id: row.get(0),
            last_seq: row.get(1),
            local_seq: row.get(2),
            last_ts: row.get(3),
            forwarded_at: row.get(4),
            checkpoint_size: row.get(5),
            refused: row.get(6),
            conflicts: conflicts.remove(row.get::<_, &str>(0)).unwrap_or_default(),
        })
        .collect())
}
