//! Moving rows: a batch read from the host's log, COPYed into a staging table, then moved into
//! `events` with the central roll-up, in the month partitions it needs.

use super::*;

/// The month of `events` a receive time falls in: its first and last-plus-one nanosecond,
/// and its partition's name.
pub(super) fn month_of(ts: i64) -> (i64, i64, String) {
    use jiff::civil::Date;
    use jiff::tz::TimeZone;
    let time =
        jiff::Timestamp::from_nanosecond(i128::from(ts)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let date = time.to_zoned(TimeZone::UTC).date();
    let first = Date::new(date.year(), date.month(), 1).expect("the first of a month");
    let next = first
        .checked_add(jiff::Span::new().months(1))
        .unwrap_or(first);
    let nanos = |date: Date| {
        date.to_zoned(TimeZone::UTC)
            .map(|zoned| zoned.timestamp().as_nanosecond())
            .unwrap_or(0)
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    };
    (
        nanos(first),
        nanos(next),
        format!("events_{:04}_{:02}", first.year(), first.month()),
    )
}

/// Up to `limit` rows after `watermark`, in `seq` order.
pub(super) fn read_rows(
    local: &rusqlite::Connection,
    watermark: i64,
    limit: usize,
) -> Result<Vec<Stored>, Trouble> {
    let mut statement = local.prepare_cached(&format!(
        "SELECT {} FROM entries WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        row::select_columns()
    ))?;
    let mut rows = statement.query((watermark, limit as i64))?;
    let mut batch = Vec::with_capacity(limit.min(16_384));
    while let Some(stored) = rows.next()? {
        let values = row::read_values(stored).map_err(|bad| Trouble::Local(bad.to_string()))?;
        let values = values
            .iter()
            .map(|value| match *value {
                Value::Null => Decoded::Null,
                Value::Integer(integer) => Decoded::Integer(integer),
                Value::Text(text) => Decoded::Text(text.to_owned()),
            })
            .collect();
        batch.push(Stored {
            values,
            hash: row::stored_hash(stored)?.to_vec(),
        });
    }
    Ok(batch)
}

/// The host's signed checkpoints of sizes after `watermark` up to `last`.
pub(super) fn read_checkpoints(
    local: &rusqlite::Connection,
    watermark: i64,
    last: i64,
) -> Result<Vec<(i64, String)>, Trouble> {
    let mut statement = local.prepare_cached(
        "SELECT size, note FROM checkpoints WHERE size > ?1 AND size <= ?2 ORDER BY size",
    )?;
    let rows = statement.query_map((watermark, last), |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Copies the rows into the staging table, in PostgreSQL's binary `COPY` format.
pub(super) fn copy_rows(
    transaction: &mut postgres::Transaction<'_>,
    host_id: &str,
    rows: &[Stored],
) -> Result<(), Trouble> {
    let mut types = vec![Type::TEXT];
    types.extend(row::KINDS.iter().map(|(kind, _)| match kind {
        Kind::Integer => Type::INT8,
        Kind::Text => Type::TEXT,
        Kind::Blob => Type::BYTEA,
    }));
    let sink = transaction.copy_in(&format!(
        "COPY incoming ({}) FROM STDIN (FORMAT binary)",
        event_columns()
    ))?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut integers = [None::<i64>; row::COLUMNS.len()];
    let mut texts = [None::<&str>; row::COLUMNS.len()];
    for stored in rows {
        for (position, value) in stored.values.iter().enumerate() {
            let column = row::column_of(position);
            (integers[column], texts[column]) = match value {
                Decoded::Integer(integer) => (Some(*integer), None),
                Decoded::Text(text) => (None, Some(text.as_str())),
                Decoded::Null => (None, None),
            };
        }
        let hash = stored.hash.as_slice();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(types.len());
        params.push(&host_id);
        for (column, (kind, _)) in row::KINDS.iter().enumerate() {
            params.push(match kind {
                Kind::Integer => &integers[column],
                Kind::Text => &texts[column],
                Kind::Blob => &hash,
            });
        }
        writer.write(&params)?;
    }
    writer.finish()?;
    Ok(())
}

/// Moves the staged rows into `events` and adds them to `cost_hourly`, giving how many rows
/// went in. Sums saturate at the largest `bigint`, as a host's roll-up does.
pub(super) fn insert_sql() -> String {
    const MAX: i64 = crate::format::cost::SATURATED;
    let hour = schema::hour_sql(schema::EVENT_TIME);
    let sum = |column: &str| format!("least(coalesce(sum({column}), 0), {MAX})::bigint");
    let add = |column: &str| {
        format!(
            "{column} = least(cost_hourly.{column}::numeric + excluded.{column}, {MAX})::bigint"
        )
    };
    format!(
        "WITH inserted AS (
            INSERT INTO events SELECT * FROM incoming ON CONFLICT DO NOTHING RETURNING *
         ), rolled AS (
            INSERT INTO cost_hourly (host_id, hour, component, event, model, entries,
                tokens_in, tokens_out, cache_read_tokens, cache_write_tokens, reasoning_tokens,
                micro_usd, unpriced)
            SELECT host_id, {hour}, component, event, coalesce(model, ''), count(*),
                   {}, {}, {}, {}, {}, {}, {}
            FROM inserted GROUP BY 1, 2, 3, 4, 5
            ON CONFLICT (host_id, hour, component, event, model) DO UPDATE SET
                entries = cost_hourly.entries + excluded.entries,
                {}, {}, {}, {}, {}, {}, {}
         )
         SELECT count(*) FROM inserted",
        sum("tokens_in"),
        sum("tokens_out"),
        sum("cache_read_tokens"),
        sum("cache_write_tokens"),
        sum("reasoning_tokens"),
        sum("cost_micro_usd"),
        "count(*) FILTER (WHERE tokens_in IS NOT NULL AND cost_micro_usd IS NULL)",
        add("tokens_in"),
        add("tokens_out"),
        add("cache_read_tokens"),
        add("cache_write_tokens"),
        add("reasoning_tokens"),
        add("micro_usd"),
        add("unpriced"),
    )
}
