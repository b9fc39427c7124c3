//! Prices: dollars from tokens, for entries whose caller knew the model and the tokens but not
//! the money. The daemon ships a copy of the genai-prices v2 table (`daemon/prices/`, MIT,
//! its notice beside it); `prices_file` replaces it and `[[price]]` tables in the
//! configuration add or override models. The intake prices each entry before it is hashed,
//! by the entry's own date, and records which price it used in `priced_by`, inside the hashed
//! row. A model with no price stays unpriced: never $0.
//!
//! `docs/PRICES.md` states the rules, which tests check against an independent computation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use witness_protocol::Cost;
use witness_protocol::limits::MAX_INTEGER;
use witness_protocol::query::{PriceQuote, PriceRate};

mod table;

pub use table::{BadPrice, Clause, Constraint, Kind, RATE_SCALE, Rate, Rates, Table, Tiered};

/// The table built into the daemon: genai-prices v2 `data_slim.json` as of commit
/// 47df840a5ab1 (2026-08-21).
pub const BUILT_IN: &str = include_str!("../../prices/genai-prices.json");

/// The name of the built-in table in `priced_by`.
pub const BUILT_IN_NAME: &str = "genai-prices-47df840a5ab1";

/// The name of the configuration's own prices in `priced_by`.
pub const CONFIG_NAME: &str = "config";

/// How many distinct (provider, model) names a table remembers the match of; past it, it
/// forgets them all and starts again, so a flood of made-up model names costs a few matches
/// each and no memory.
const MEMO_CAPACITY: usize = 4096;

/// A `[[price]]` table of the configuration: the price of one model, in USD per million
/// tokens, checked before the first entry is priced by it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSettings {
    /// The model's name in `priced_by`; defaults to `model`.
    pub id: Option<String>,
    /// The model name it prices, exactly; or give `match`.
    pub model: Option<String>,
    /// A clause as the data writes one (`{ starts_with = "my-" }`), instead of `model`.
    #[serde(rename = "match")]
    pub matches: Option<Value>,
    /// Only when the entry's provider is this one, or is not known.
    pub provider: Option<String>,
    /// From this UTC date on (`YYYY-MM-DD`); a later `[[price]]` of the same model with a
    /// later date takes over on that date.
    pub since: Option<String>,
    /// Uncached input.
    pub input: Option<f64>,
    /// Output, reasoning included unless `reasoning` is given.
    pub output: Option<f64>,
    /// Input read from a cache; input's price if not given.
    pub cache_read: Option<f64>,
    /// Input written to a cache for five minutes; input's price if not given.
    pub cache_write: Option<f64>,
    /// Input written to a cache for an hour; `cache_write`'s price if not given.
    pub cache_write_1h: Option<f64>,
    /// Output spent reasoning; output's price if not given.
    pub reasoning: Option<f64>,
    /// Dearer rates past a number of input tokens.
    pub tiers: Option<Vec<TierSettings>>,
}

/// A tier of a `[[price]]`: past `start` input tokens, the rates it gives replace the base
/// ones for every token of their kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSettings {
    /// Total input tokens past which the tier applies.
    pub start: u64,
    /// See [`PriceSettings`].
    pub input: Option<f64>,
    /// See [`PriceSettings`].
    pub output: Option<f64>,
    /// See [`PriceSettings`].
    pub cache_read: Option<f64>,
    /// See [`PriceSettings`].
    pub cache_write: Option<f64>,
    /// See [`PriceSettings`].
    pub cache_write_1h: Option<f64>,
    /// See [`PriceSettings`].
    pub reasoning: Option<f64>,
}

impl PriceSettings {
    /// The rates it gives, by kind.
    fn rates(&self) -> [(Kind, Option<f64>); 6] {
        [
            (Kind::Input, self.input),
            (Kind::Output, self.output),
            (Kind::CacheRead, self.cache_read),
            (Kind::CacheWrite, self.cache_write),
            (Kind::CacheWrite1h, self.cache_write_1h),
            (Kind::Reasoning, self.reasoning),
        ]
    }
}

impl TierSettings {
    /// The rates it gives, by kind, as [`PriceSettings::rates`].
    fn rates(&self) -> [(Kind, Option<f64>); 6] {
        [
            (Kind::Input, self.input),
            (Kind::Output, self.output),
            (Kind::CacheRead, self.cache_read),
            (Kind::CacheWrite, self.cache_write),
            (Kind::CacheWrite1h, self.cache_write_1h),
            (Kind::Reasoning, self.reasoning),
        ]
    }
}

/// Where prices come from: the configuration's `prices_file` and `[[price]]` tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricesConfig {
    /// A table that replaces the built-in one.
    pub file: Option<PathBuf>,
    /// Prices of the configuration, tried before the table.
    pub overrides: Vec<PriceSettings>,
}

/// A `[[price]]`, checked.
#[derive(Debug, Clone)]
struct Override {
    label: String,
    /// What the entries it prices record, worked out once.
    priced_by: String,
    provider: Option<String>,
    matches: Clause,
    since: Constraint,
    rates: Rates,
}

impl Override {
    /// Checks `settings`, the `index`th `[[price]]`; errors name the key.
    fn new(settings: &PriceSettings, index: usize) -> Result<Override, BadPrice> {
        let at = |key: &str| format!("price[{index}].{key}");
        let matches = match (&settings.model, &settings.matches) {
            (Some(model), None) if !model.is_empty() => Clause::Equals(model.clone()),
            (None, Some(clause)) => Clause::parse(clause, &at("match"))?,
            _ => {
                return Err(BadPrice::new(
                    &format!("price[{index}]"),
                    "give the model's name (model) or a clause (match), one of them",
                ));
            }
        };
        let label = settings
            .id
            .clone()
            .or_else(|| settings.model.clone())
            .ok_or_else(|| BadPrice::new(&at("id"), "a price by match needs an id"))?;
        if label.is_empty()
            || label.len() > table::MAX_ID_LEN
            || label.chars().any(char::is_control)
        {
            return Err(BadPrice::new(
                &at(if settings.id.is_some() { "id" } else { "model" }),
                format!(
                    "names the price in priced_by: 1 to {} bytes without control characters",
                    table::MAX_ID_LEN
                ),
            ));
        }
        if let Some(provider) = &settings.provider
            && !table::is_id(provider)
        {
            return Err(BadPrice::new(
                &at("provider"),
                format!(
                    "a provider is 1 to {} bytes without spaces",
                    table::MAX_ID_LEN
                ),
            ));
        }
        let since = match &settings.since {
            None => Constraint::Always,
            Some(date) => Constraint::From(table::start_of_date(date, &at("since"))?, date.clone()),
        };
        let base = settings.rates();
        if base.iter().all(|(_, usd)| usd.is_none()) {
            return Err(BadPrice::new(
                &format!("price[{index}]"),
                "a price needs at least one of input, output, cache_read, cache_write, \
                 cache_write_1h, reasoning",
            ));
        }
        let mut rates = Rates::default();
        for (kind, usd) in base {
            if let Some(usd) = usd {
                rates.0[kind as usize] = Some(Tiered {
                    base: table::rate_of_usd(usd, &at(kind.name()))?,
                    tiers: Vec::new(),
                });
            }
        }
        let mut last_start = None;
        for (number, tier) in settings.tiers.iter().flatten().enumerate() {
            if last_start.is_some_and(|last| tier.start <= last) {
                return Err(BadPrice::new(
                    &format!("price[{index}].tiers[{number}].start"),
                    "tiers must start in increasing order",
                ));
            }
            last_start = Some(tier.start);
            for (kind, usd) in tier.rates() {
                let Some(usd) = usd else { continue };
                let at = format!("price[{index}].tiers[{number}].{}", kind.name());
                let rate = table::rate_of_usd(usd, &at)?;
                match &mut rates.0[kind as usize] {
                    Some(tiered) => tiered.tiers.push((tier.start, rate)),
                    None => {
                        return Err(BadPrice::new(
                            &at,
                            format!("a tier of {} needs a base price of it", kind.name()),
                        ));
                    }
                }
            }
        }
        let provider = settings
            .provider
            .as_ref()
            .map(|name| name.to_ascii_lowercase());
        Ok(Override {
            priced_by: priced_by(
                CONFIG_NAME,
                provider.as_deref().unwrap_or(""),
                &label,
                &since,
            ),
            label,
            provider,
            matches,
            since,
            rates,
        })
    }
}

/// Checks every `[[price]]` of a configuration, as the configuration is read.
pub fn check_overrides(settings: &[PriceSettings]) -> Result<(), BadPrice> {
    for (index, price) in settings.iter().enumerate() {
        Override::new(price, index)?;
    }
    Ok(())
}

/// Why prices could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The prices file could not be read.
    #[error("reading the prices file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The prices file is not a table.
    #[error("the prices file {}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        source: BadPrice,
    },
    /// A `[[price]]` of the configuration is wrong.
    #[error("{0}")]
    Override(BadPrice),
}

/// What matched a (provider, model) name, remembered.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// Nothing: unpriced, unless an override with a date holds.
    Nothing,
    /// Provider and model of the table.
    Table(usize, usize),
}

/// A price that applies to one call: where it came from and its rates.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// The table's name: [`BUILT_IN_NAME`], `prices-` and a file's hash, or [`CONFIG_NAME`].
    pub table: &'a str,
    /// The provider's id (empty for a configured price without one).
    pub provider: &'a str,
    /// The model's id.
    pub model: &'a str,
    /// When the price holds.
    pub constraint: &'a Constraint,
    /// Its rates.
    pub rates: &'a Rates,
    /// What an entry priced by it records (see [`priced_by`]).
    pub priced_by: &'a str,
}

/// What an entry priced at a price records: `TABLE:PROVIDER/MODEL`, with `@DATE` (or the
/// times of day) when the price is one of several.
pub fn priced_by(table: &str, provider: &str, model: &str, constraint: &Constraint) -> String {
    format!("{table}:{provider}/{model}{}", constraint.label())
}

/// The prices in force: a table and the configuration's own, with what names matched.
#[derive(Debug)]
pub struct Book {
    name: String,
    table: Table,
    /// Each price's `priced_by`, by provider, model and version: worked out once at load,
    /// not per entry.
    labels: Vec<Vec<Vec<String>>>,
    overrides: Vec<Override>,
    memo: Mutex<HashMap<String, Found>>,
}

impl Book {
    /// `table` under `name`, with no overrides.
    fn new(name: String, table: Table) -> Book {
        let labels = table
            .providers
            .iter()
            .map(|provider| {
                provider
                    .models
                    .iter()
                    .map(|model| {
                        model
                            .prices
                            .0
                            .iter()
                            .map(|(constraint, _)| {
                                priced_by(&name, &provider.id, &model.id, constraint)
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Book {
            name,
            table,
            labels,
            overrides: Vec::new(),
            memo: Mutex::default(),
        }
    }

    /// The built-in table with no overrides.
    pub fn built_in() -> Book {
        Book::new(
            BUILT_IN_NAME.to_owned(),
            Table::parse(BUILT_IN).expect("the built-in price table parses"),
        )
    }

    /// The prices `config` says: its file or the built-in table, and its `[[price]]`s.
    pub fn load(config: &PricesConfig) -> Result<Book, LoadError> {
        let mut book = match &config.file {
            None => Book::built_in(),
            Some(path) => Book::from_file(path)?,
        };
        book.overrides = config
            .overrides
            .iter()
            .enumerate()
            .map(|(index, settings)| Override::new(settings, index))
            .collect::<Result<_, _>>()
            .map_err(LoadError::Override)?;
        Ok(book)
    }

    fn from_file(path: &Path) -> Result<Book, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table = Table::parse(&text).map_err(|source| LoadError::File {
            path: path.to_owned(),
            source,
        })?;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        Ok(Book::new(
            format!("prices-{}", &hex::encode(digest)[..12]),
            table,
        ))
    }

    /// The table's name, as `priced_by` gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many models the table prices, and how many the configuration adds.
    pub fn sizes(&self) -> (usize, usize) {
        let models = self
            .table
            .providers
            .iter()
            .map(|provider| provider.models.len())
            .sum();
        (models, self.overrides.len())
    }

    /// The price that applies to a call of `model` (by `provider`, if known) dated `date`:
    /// the last configured price that matches and holds on the date, else the table's.
    pub fn find(&self, provider: Option<&str>, model: &str, date: i64) -> Option<Applied<'_>> {
        let provider = provider.filter(|name| !name.is_empty());
        if let Some(price) = self.overrides.iter().rev().find(|price| {
            price.matches.matches(model)
                && price.since.holds(date)
                && match (&price.provider, provider) {
                    (Some(wanted), Some(given)) => wanted.eq_ignore_ascii_case(given),
                    _ => true,
                }
        }) {
            return Some(Applied {
                table: CONFIG_NAME,
                provider: price.provider.as_deref().unwrap_or(""),
                model: &price.label,
                constraint: &price.since,
                rates: &price.rates,
                priced_by: &price.priced_by,
            });
        }
        let found = self.found(provider, model);
        let Found::Table(p, m) = found else {
            return None;
        };
        let provider = &self.table.providers[p];
        let model = &provider.models[m];
        let version = model.prices.at(date);
        let (constraint, rates) = &model.prices.0[version];
        Some(Applied {
            table: &self.name,
            provider: &provider.id,
            model: &model.id,
            constraint,
            rates,
            priced_by: &self.labels[p][m][version],
        })
    }

    fn found(&self, provider: Option<&str>, model: &str) -> Found {
        // Looked up without allocating: a name seen before (nearly every call) costs a hash.
        let composite;
        let key = match provider {
            None => model,
            Some(provider) => {
                composite = format!("{provider}\u{0}{model}");
                composite.as_str()
            }
        };
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = memo.get(key) {
            return *found;
        }
        let found = self
            .table
            .find(provider, model)
            .map_or(Found::Nothing, |(provider, model)| {
                let p = self
                    .table
                    .providers
                    .iter()
                    .position(|candidate| std::ptr::eq(candidate, provider))
                    .expect("a provider of the table");
                let m = provider
                    .models
                    .iter()
                    .position(|candidate| std::ptr::eq(candidate, model))
                    .expect("a model of the provider");
                Found::Table(p, m)
            });
        if memo.len() >= MEMO_CAPACITY {
            memo.clear();
        }
        memo.insert(key.to_owned(), found);
        found
    }

    /// Prices `cost` in place when it has a model and no money, as of `date`: sets
    /// `micro_usd` and `priced_by`, or leaves both unset (unpriced) when no price applies or
    /// the counts contradict each other.
    pub fn price(&self, cost: &mut Cost, provider: Option<&str>, date: i64) {
        if cost.micro_usd.is_some() {
            return;
        }
        let Some(model) = cost.model.as_deref() else {
            return;
        };
        let Some(applied) = self.find(provider, model, date) else {
            return;
        };
        if let Some(micro_usd) = charge(applied.rates, cost) {
            cost.micro_usd = Some(micro_usd);
            cost.priced_by = Some(applied.priced_by.to_owned());
        }
    }

    /// What `witness prices MODEL` shows: the price a call of `model` dated `date` would get.
    pub fn quote(&self, provider: Option<&str>, model: &str, date: i64) -> Option<PriceQuote> {
        let applied = self.find(provider, model, date)?;
        let usd = |rate: Rate| rate as f64 / RATE_SCALE as f64;
        Some(PriceQuote {
            priced_by: applied.priced_by.to_owned(),
            table: applied.table.to_owned(),
            provider: applied.provider.to_owned(),
            model: applied.model.to_owned(),
            since: match applied.constraint {
                Constraint::Always => None,
                Constraint::From(_, date) => Some(date.clone()),
                Constraint::TimeOfDay(_, _, interval) => Some(interval.clone()),
            },
            rates: Kind::ALL
                .into_iter()
                .filter_map(|kind| {
                    let tiered = applied.rates.get(kind)?;
                    Some(PriceRate {
                        kind: kind.name().to_owned(),
                        usd_per_mtok: usd(tiered.base),
                        tiers: tiered
                            .tiers
                            .iter()
                            .map(|&(start, rate)| (start, usd(rate)))
                            .collect(),
                    })
                })
                .collect(),
        })
    }
}

/// The money of a call at `rates`, in micro-USD, rounded half up once at the end. Input
/// tokens include the cache reads and writes, which have their own rates (the input rate
/// where the price names none; an hour's write falls back to a write's rate first); output
/// tokens include the reasoning ones, at the reasoning rate where there is one. Every tiered
/// rate is chosen by the call's total input tokens. `None` when the counts contradict each
/// other (more cached than input) or the price has neither an input nor an output rate.
pub fn charge(rates: &Rates, cost: &Cost) -> Option<u64> {
    if rates.get(Kind::Input).is_none() && rates.get(Kind::Output).is_none() {
        return None;
    }
    let total_in = cost.tokens_in;
    let read = cost.cache_read_tokens.unwrap_or(0);
    let written = cost.cache_write_tokens.unwrap_or(0);
    let hour = cost.cache_write_1h_tokens.unwrap_or(0);
    let reasoning = cost.reasoning_tokens.unwrap_or(0);
    let uncached = total_in.checked_sub(read)?.checked_sub(written)?;
    let five_minutes = written.checked_sub(hour)?;
    let plain_out = cost.tokens_out.checked_sub(reasoning)?;
    let rate = |kinds: &[Kind]| -> Rate {
        kinds
            .iter()
            .find_map(|kind| rates.get(*kind))
            .map_or(0, |tiered| tiered.at(total_in))
    };
    let sum = i128::from(uncached) * rate(&[Kind::Input])
        + i128::from(read) * rate(&[Kind::CacheRead, Kind::Input])
        + i128::from(five_minutes) * rate(&[Kind::CacheWrite5m, Kind::CacheWrite, Kind::Input])
        + i128::from(hour) * rate(&[Kind::CacheWrite1h, Kind::CacheWrite, Kind::Input])
        + i128::from(plain_out) * rate(&[Kind::Output])
        + i128::from(reasoning) * rate(&[Kind::Reasoning, Kind::Output]);
    let micro_usd = (sum + RATE_SCALE / 2) / RATE_SCALE;
    Some(
        u64::try_from(micro_usd)
            .unwrap_or(u64::MAX)
            .min(MAX_INTEGER),
    )
}

/// The prices in force, replaced whole on a reload; readers take the current book and keep it
/// for as long as they price one append.
#[derive(Debug)]
pub struct Prices {
    book: RwLock<Arc<Book>>,
}

impl Prices {
    /// Prices from `book`.
    pub fn new(book: Book) -> Prices {
        Prices {
            book: RwLock::new(Arc::new(book)),
        }
    }

    /// The book in force.
    pub fn current(&self) -> Arc<Book> {
        Arc::clone(
            &self
                .book
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Puts `book` in force.
    pub fn replace(&self, book: Book) {
        *self
            .book
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(book);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> i64 {
        table::start_of_date(text, "test").unwrap()
    }

    #[test]
    fn the_built_in_table_loads_and_prices_the_example_of_the_issue() {
        let book = Book::built_in();
        let mut cost = Cost::tokens(1200, 300)
            .model("gpt-4o-mini")
            .cache_read_tokens(200);
        book.price(&mut cost, None, date("2026-06-01"));
        assert_eq!(cost.micro_usd, Some(345));
        assert_eq!(
            cost.priced_by.as_deref(),
            Some("genai-prices-47df840a5ab1:openai/gpt-4o-mini")
        );
    }

    #[test]
    fn a_known_provider_chooses_among_prices() {
        let book = Book::built_in();
        let by = |provider: Option<&str>, model: &str| {
            let mut cost = Cost::tokens(1000, 100).model(model);
            book.price(&mut cost, provider, date("2026-06-01"));
            cost.priced_by
        };
        assert_eq!(
            by(Some("openai"), "gpt-4o-mini").as_deref(),
            Some("genai-prices-47df840a5ab1:openai/gpt-4o-mini")
        );
        // Azure serves OpenAI's models, tried after its own.
        let azure = by(Some("azure"), "gpt-4o-mini").unwrap();
        assert!(azure.ends_with("/gpt-4o-mini"), "{azure}");
        // A provider the table does not know: the model's name decides, as with none.
        assert_eq!(by(Some("nobody"), "gpt-4o-mini"), by(None, "gpt-4o-mini"));
    }

    #[test]
    fn an_unknown_model_stays_unpriced() {
        let book = Book::built_in();
        let mut cost = Cost::tokens(10, 10).model("my-finetune");
        book.price(&mut cost, None, 0);
        assert_eq!((cost.micro_usd, cost.priced_by), (None, None));
    }

    #[test]
    fn contradicting_counts_stay_unpriced() {
        let book = Book::built_in();
        let mut cost = Cost::tokens(10, 10)
            .model("gpt-4o-mini")
            .cache_read_tokens(11);
        book.price(&mut cost, None, 0);
        assert_eq!(cost.micro_usd, None);
    }

    #[test]
    fn garbage_prices_are_refused_with_the_place_named() {
        for (json, at) in [
            ("{}", "the file"),
            (
                r#"[{"id":"x","name":"x","api_pattern":"x","models":[],"colour":1}]"#,
                "[0].colour",
            ),
            (
                r#"[{"id":"x","name":"x","api_pattern":"x","models":[{"id":"m","match":{"regex":"("},"prices":{}}]}]"#,
                "[0].models[0].match.regex",
            ),
            (
                r#"[{"id":"x","name":"x","api_pattern":"x","models":[{"id":"m","match":{"equals":"m"},"prices":{"input_mtok":-1}}]}]"#,
                "[0].models[0].prices.input_mtok",
            ),
        ] {
            let error = Table::parse(json).unwrap_err();
            assert_eq!(error.at, at, "{json}: {error}");
        }
        let bad = PriceSettings {
            model: Some("m".into()),
            input: Some(-2.0),
            ..PriceSettings::default()
        };
        assert_eq!(check_overrides(&[bad]).unwrap_err().at, "price[0].input");
    }
}
