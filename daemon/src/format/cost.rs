//! Money and tokens: the one owner of the cost sums and of every statement on the
//! `cost_hourly` roll-up. The writer adds to it, pruning takes from it, verification checks it
//! against the entries and reports read it, all through the types and SQL here.
//!
//! Sums saturate at the largest integer rather than overflow: absurd figures from one client
//! must not fail the batch of everyone else, and since no value is negative the saturated total
//! is the same in any grouping, so the roll-up and a sum over the entries always agree.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction};
use witness_protocol::Cost;

use super::row::{CACHE_WRITE_VALUE, EVENT_TIME, Values, column};

/// Nanoseconds in an hour: the width of a `cost_hourly` bucket.
pub const HOUR_NS: i64 = 3_600_000_000_000;

/// The `cost_hourly` bucket of a time: hours since the epoch, floored (so that a time before
/// 1970 falls in the hour that holds it).
pub fn hour_of(time: i64) -> i64 {
    time.div_euclid(HOUR_NS)
}

/// The SQL expression of the `cost_hourly` bucket of the time `time`, floored as [`hour_of`]
/// floors it (SQLite's and PostgreSQL's `/` and `%` both truncate toward zero).
pub fn hour_sql(time: &str) -> String {
    format!("(({time}) - ((({time}) % {HOUR_NS}) + {HOUR_NS}) % {HOUR_NS}) / {HOUR_NS}")
}

/// The largest integer SQLite stores, where sums stop.
pub const SATURATED: i64 = i64::MAX;

/// Money as the log holds it: a whole number of micro-US-dollars, or no price at all. An
/// entry with tokens and no price is unpriced, which is not the same as free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Money {
    /// Nobody could say what it cost.
    Unpriced,
    /// This many micro-USD (zero for a call that really was free).
    MicroUsd(i64),
}

impl Money {
    /// The amount of a stored `cost_micro_usd` column, which is NULL when unpriced.
    pub fn from_column(value: Option<i64>) -> Money {
        value.map_or(Money::Unpriced, Money::MicroUsd)
    }

    /// The column's value.
    pub fn to_column(self) -> Option<i64> {
        match self {
            Money::Unpriced => None,
            Money::MicroUsd(amount) => Some(amount),
        }
    }
}

/// The sums of one group of entries, as a `cost_hourly` row holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostSums {
    /// Entries in the group.
    pub entries: i64,
    /// Input tokens (cached ones included).
    pub tokens_in: i64,
    /// Output tokens (reasoning ones included).
    pub tokens_out: i64,
    /// Input tokens read from a cache.
    pub cache_read_tokens: i64,
    /// Input tokens written to a cache.
    pub cache_write_tokens: i64,
    /// Output tokens spent reasoning.
    pub reasoning_tokens: i64,
    /// Money, in micro-USD; entries without a price add nothing.
    pub micro_usd: i64,
    /// Entries with tokens and no price.
    pub unpriced: i64,
}

/// How many sums a [`CostSums`] holds.
const SUMS: usize = 8;

/// `cost_hourly`'s sum columns, in [`CostSums`]'s order.
pub const HOURLY_SUMS: &str = "entries, tokens_in, tokens_out, cache_read_tokens, \
    cache_write_tokens, reasoning_tokens, micro_usd, unpriced";

/// The same sums over rows of `entries`, in the same order. An entry is unpriced when it has
/// tokens (`tokens_in` is set) and no money.
pub const ENTRY_SUMS: &str = "count(*), ssum(tokens_in), ssum(tokens_out), \
    ssum(cache_read_tokens), ssum(cache_write_tokens), ssum(reasoning_tokens), \
    ssum(cost_micro_usd), ssum(tokens_in IS NOT NULL AND cost_micro_usd IS NULL)";

impl CostSums {
    /// One entry's contribution.
    pub fn of_entry(cost: Option<&Cost>) -> CostSums {
        let mut sums = CostSums {
            entries: 1,
            ..CostSums::default()
        };
        if let Some(cost) = cost {
            sums.tokens_in = clamp(cost.tokens_in);
            sums.tokens_out = clamp(cost.tokens_out);
            sums.cache_read_tokens = clamp(cost.cache_read_tokens.unwrap_or(0));
            sums.cache_write_tokens = clamp(cost.cache_write_tokens.unwrap_or(0));
            sums.reasoning_tokens = clamp(cost.reasoning_tokens.unwrap_or(0));
            sums.micro_usd = clamp(cost.micro_usd.unwrap_or(0));
            sums.unpriced = i64::from(cost.micro_usd.is_none());
        }
        sums
    }

    /// One stored row's contribution, from its hashed values (NULL counts as nothing).
    pub fn of_values(values: &Values<'_>) -> CostSums {
        let integer = |index: usize| values[index].integer();
        let count = |index: usize| integer(index).unwrap_or(0);
        CostSums {
            entries: 1,
            tokens_in: count(column::TOKENS_IN),
            tokens_out: count(column::TOKENS_OUT),
            cache_read_tokens: count(column::CACHE_READ_TOKENS),
            cache_write_tokens: count(CACHE_WRITE_VALUE),
            reasoning_tokens: count(column::REASONING_TOKENS),
            micro_usd: count(column::COST_MICRO_USD),
            unpriced: i64::from(
                integer(column::TOKENS_IN).is_some() && integer(column::COST_MICRO_USD).is_none(),
            ),
        }
    }

    /// Adds `other`, saturating.
    pub fn add(&mut self, other: &CostSums) {
        let mut mine = self.values();
        for (sum, value) in mine.iter_mut().zip(other.values()) {
            *sum = sum.saturating_add(value);
        }
        *self = CostSums::from_values(mine);
    }

    /// What is left once `other` is taken away; `None` when either side saturated, since a
    /// saturated sum no longer says what it was the sum of.
    pub fn minus(&self, other: &CostSums) -> Option<CostSums> {
        let (mine, theirs) = (self.values(), other.values());
        if mine.contains(&SATURATED) || theirs.contains(&SATURATED) {
            return None;
        }
        Some(CostSums::from_values(std::array::from_fn(|index| {
            mine[index] - theirs[index]
        })))
    }

    /// The sums from a row's columns at `first` on ([`HOURLY_SUMS`] or [`ENTRY_SUMS`]).
    pub fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<CostSums> {
        let mut values = [0i64; SUMS];
        for (index, value) in values.iter_mut().enumerate() {
            *value = row.get(first + index)?;
        }
        Ok(CostSums::from_values(values))
    }

    /// The sums as people read them in a message: names and numbers.
    pub fn describe(&self) -> String {
        format!(
            "{} entries, {} tokens in, {} tokens out, {} cache-read tokens, {} cache-write \
             tokens, {} reasoning tokens, {} micro-USD, {} unpriced",
            self.entries,
            self.tokens_in,
            self.tokens_out,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.micro_usd,
            self.unpriced
        )
    }

    /// The sums in [`HOURLY_SUMS`] order.
    pub fn values(&self) -> [i64; SUMS] {
        [
            self.entries,
            self.tokens_in,
            self.tokens_out,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.micro_usd,
            self.unpriced,
        ]
    }

    /// The inverse of [`CostSums::values`], in its order.
    fn from_values(values: [i64; SUMS]) -> CostSums {
        let [
            entries,
            tokens_in,
            tokens_out,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            micro_usd,
            unpriced,
        ] = values;
        CostSums {
            entries,
            tokens_in,
            tokens_out,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            micro_usd,
            unpriced,
        }
    }
}

/// A count from the protocol as SQLite's integer: counts above its largest saturate, as sums
/// of them do.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(SATURATED)
}

/// A `cost_hourly` key: the hour (since the epoch, floored) and the group's texts, `''` for
/// an entry with no model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourKey {
    /// Hours since the epoch, floored.
    pub hour: i64,
    /// The entries' component.
    pub component: String,
    /// The entries' event.
    pub event: String,
    /// The entries' model, `''` for none.
    pub model: String,
}

/// The sums of a range of entries by `cost_hourly` key: what pruning the range takes out.
pub type CostGroups = Vec<(HourKey, CostSums)>;

/// Fills `cost_hourly` from `entries`, when a file of version 4 or older is upgraded. The
/// hour is floored, as the writer floors it, for times before 1970 too.
pub fn fill_hourly() -> String {
    format!(
        "INSERT INTO cost_hourly (hour, component, event, model, {HOURLY_SUMS}) \
         SELECT {}, component, event, coalesce(model, ''), {ENTRY_SUMS} \
         FROM entries GROUP BY 1, 2, 3, 4;",
        hour_sql(EVENT_TIME)
    )
}

/// Adds a batch's sums to a `cost_hourly` row, saturating (an overflowing `+` yields a real,
/// which a STRICT column refuses and which would fail the batch).
fn add_hourly_sql() -> String {
    let sums: Vec<&str> = HOURLY_SUMS.split(", ").map(str::trim).collect();
    let parameters: Vec<String> = (1..=4 + SUMS).map(|n| format!("?{n}")).collect();
    let updates: Vec<String> = sums
        .iter()
        .map(|column| format!("{column} = min({column} + excluded.{column}, {SATURATED})"))
        .collect();
    format!(
        "INSERT INTO cost_hourly (hour, component, event, model, {HOURLY_SUMS}) VALUES ({}) \
         ON CONFLICT (hour, component, event, model) DO UPDATE SET {}",
        parameters.join(", "),
        updates.join(", ")
    )
}

/// Adds each group's sums to its `cost_hourly` row, inside the batch's transaction.
pub fn add_to_hourly<'a>(
    transaction: &Transaction<'_>,
    groups: impl IntoIterator<Item = ((i64, &'a str, &'a str, &'a str), CostSums)>,
) -> rusqlite::Result<()> {
    static ADD: std::sync::LazyLock<String> = std::sync::LazyLock::new(add_hourly_sql);
    let mut add = transaction.prepare_cached(&ADD)?;
    for ((hour, component, event, model), sums) in groups {
        let [a, b, c, d, e, f, g, h] = sums.values();
        add.execute(rusqlite::params![
            hour, component, event, model, a, b, c, d, e, f, g, h
        ])?;
    }
    Ok(())
}

/// Sums the entries `from..=to` by `cost_hourly` key.
pub fn range_costs(connection: &Connection, from: u64, to: u64) -> rusqlite::Result<CostGroups> {
    connection
        .prepare_cached(&format!(
            "SELECT {}, component, event, coalesce(model, ''), {ENTRY_SUMS} \
             FROM entries WHERE seq BETWEEN ?1 AND ?2 GROUP BY 1, 2, 3, 4",
            hour_sql(EVENT_TIME)
        ))?
        .query_map([from as i64, to as i64], |row| {
            let key = HourKey {
                hour: row.get(0)?,
                component: row.get(1)?,
                event: row.get(2)?,
                model: row.get(3)?,
            };
            Ok((key, CostSums::from_row(row, 4)?))
        })?
        .collect()
}

/// Takes `groups` (the sums of entries being deleted in the same transaction) out of
/// `cost_hourly`: a row left with no entries goes, and a saturated one is summed again from
/// the entries that remain.
pub fn subtract_from_hourly(
    transaction: &Transaction<'_>,
    groups: CostGroups,
) -> rusqlite::Result<()> {
    for (key, sums) in groups {
        let params = (key.hour, &key.component, &key.event, &key.model);
        let stored: Option<CostSums> = transaction
            .prepare_cached(&format!(
                "SELECT {HOURLY_SUMS} FROM cost_hourly WHERE hour = ?1 AND component = ?2 \
                 AND event = ?3 AND model = ?4"
            ))?
            .query_row(params, |row| CostSums::from_row(row, 0))
            .optional()?;
        let Some(stored) = stored else {
            continue;
        };
        let left = match stored.minus(&sums) {
            Some(left) => left,
            None => transaction
                .prepare_cached(&format!(
                    "SELECT {ENTRY_SUMS} FROM entries \
                     WHERE {EVENT_TIME} BETWEEN ?1 * {HOUR_NS} AND ?1 * {HOUR_NS} + {HOUR_NS} - 1 \
                     AND component = ?2 AND event = ?3 AND coalesce(model, '') = ?4"
                ))?
                .query_row(params, |row| CostSums::from_row(row, 0))?,
        };
        if left.entries <= 0 {
            transaction
                .prepare_cached(
                    "DELETE FROM cost_hourly WHERE hour = ?1 AND component = ?2 AND event = ?3 \
                     AND model = ?4",
                )?
                .execute(params)?;
        } else {
            static SET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                let sets: Vec<String> = HOURLY_SUMS
                    .split(", ")
                    .map(str::trim)
                    .enumerate()
                    .map(|(index, column)| format!("{column} = ?{}", index + 5))
                    .collect();
                format!(
                    "UPDATE cost_hourly SET {} WHERE hour = ?1 AND component = ?2 AND event = ?3 \
                     AND model = ?4",
                    sets.join(", ")
                )
            });
            let [a, b, c, d, e, f, g, h] = left.values();
            transaction
                .prepare_cached(&SET)?
                .execute(rusqlite::params![
                    key.hour,
                    key.component,
                    key.event,
                    key.model,
                    a,
                    b,
                    c,
                    d,
                    e,
                    f,
                    g,
                    h
                ])?;
        }
    }
    Ok(())
}

/// Every `cost_hourly` row, by key, for verification.
pub fn read_hourly(connection: &Connection) -> rusqlite::Result<BTreeMap<HourKey, CostSums>> {
    let mut statement = connection.prepare(&format!(
        "SELECT hour, component, event, model, {HOURLY_SUMS} FROM cost_hourly"
    ))?;
    let mut rows = statement.query([])?;
    let mut stored = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let key = HourKey {
            hour: row.get(0)?,
            component: row.get(1)?,
            event: row.get(2)?,
            model: row.get(3)?,
        };
        stored.insert(key, CostSums::from_row(row, 4)?);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_and_a_saturated_sum_cannot_be_taken_from() {
        let mut sums = CostSums::of_entry(Some(&Cost::new(u64::MAX, 3, 7)));
        assert_eq!(sums.tokens_in, SATURATED);
        sums.add(&CostSums::of_entry(Some(&Cost::new(5, 3, 7))));
        assert_eq!(
            (sums.entries, sums.tokens_in, sums.tokens_out),
            (2, SATURATED, 6)
        );
        assert_eq!(sums.minus(&CostSums::of_entry(None)), None);
        let plain = CostSums::of_entry(Some(&Cost::new(5, 3, 7)));
        let mut two = plain;
        two.add(&plain);
        assert_eq!(two.minus(&plain), Some(plain));
    }

    #[test]
    fn unpriced_is_not_free() {
        assert_ne!(Money::from_column(None), Money::MicroUsd(0));
        assert_eq!(Money::from_column(Some(0)).to_column(), Some(0));
        assert_eq!(Money::Unpriced.to_column(), None);
    }
}
