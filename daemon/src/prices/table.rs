//! The genai-prices v2 data: its providers, their models, the clauses that match a model's
//! name, and each model's prices, which may change on a date, by the time of day, or past a
//! number of input tokens. Parsed from JSON into checked values, so that a bad regex or a
//! negative price is refused when the table loads, with the place in the file named, and
//! never when an entry is priced.

use serde_json::{Map, Value};

/// Why a price table, or a price in the configuration, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct BadPrice {
    /// Where: a path into the data such as `[3].models[12].prices.input_mtok`, or a key of
    /// the configuration such as `price[1].input`.
    pub at: String,
    /// What is wrong there.
    pub reason: String,
}

impl BadPrice {
    pub(super) fn new(at: &str, reason: impl Into<String>) -> BadPrice {
        BadPrice {
            at: at.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A rule that matches a model or provider name, as the data writes it.
#[derive(Debug, Clone)]
pub enum Clause {
    /// The whole name.
    Equals(String),
    /// A prefix.
    StartsWith(String),
    /// A suffix.
    EndsWith(String),
    /// A part.
    Contains(String),
    /// A regular expression found anywhere in the name.
    Regex(regex::Regex),
    /// Any of these.
    Or(Vec<Clause>),
    /// All of these.
    And(Vec<Clause>),
}

impl Clause {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Clause::Equals(text) => name == text,
            Clause::StartsWith(text) => name.starts_with(text.as_str()),
            Clause::EndsWith(text) => name.ends_with(text.as_str()),
            Clause::Contains(text) => name.contains(text.as_str()),
            Clause::Regex(regex) => regex.is_match(name),
            Clause::Or(clauses) => clauses.iter().any(|clause| clause.matches(name)),
            Clause::And(clauses) => clauses.iter().all(|clause| clause.matches(name)),
        }
    }

    /// A clause from the data's JSON: an object with exactly one of its keys.
    pub fn parse(value: &Value, at: &str) -> Result<Clause, BadPrice> {
        let object = value
            .as_object()
            .filter(|object| object.len() == 1)
            .ok_or_else(|| BadPrice::new(at, "a match clause is an object with one key"))?;
        let (key, inner) = object.iter().next().expect("one key");
        let at = format!("{at}.{key}");
        let text = || {
            inner
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| BadPrice::new(&at, "must be a string"))
        };
        let list = || -> Result<Vec<Clause>, BadPrice> {
            let items = inner
                .as_array()
                .filter(|items| !items.is_empty())
                .ok_or_else(|| BadPrice::new(&at, "must be a list of clauses"))?;
            items
                .iter()
                .enumerate()
                .map(|(index, item)| Clause::parse(item, &format!("{at}[{index}]")))
                .collect()
        };
        Ok(match key.as_str() {
            "equals" => Clause::Equals(text()?),
            "starts_with" => Clause::StartsWith(text()?),
            "ends_with" => Clause::EndsWith(text()?),
            "contains" => Clause::Contains(text()?),
            "regex" => Clause::Regex(regex::Regex::new(&text()?).map_err(|error| {
                BadPrice::new(&at, format!("not a regular expression: {error}"))
            })?),
            "or" => Clause::Or(list()?),
            "and" => Clause::And(list()?),
            other => {
                return Err(BadPrice::new(
                    &at,
                    format!(
                        "unknown clause {other:?}: equals, starts_with, ends_with, contains, \
                         regex, or, and"
                    ),
                ));
            }
        })
    }
}

/// Nanodollars per million tokens: USD per million tokens × 10⁹, an integer so that sums are
/// exact. `tokens × rate` is then the cost in micro-USD × 10⁹.
pub type Rate = i128;

/// The scale of a [`Rate`].
pub const RATE_SCALE: i128 = 1_000_000_000;

/// A price per million tokens of one kind, with its tiers: past a tier's `start` in total
/// input tokens, every token of the kind costs the tier's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiered {
    /// Below every tier.
    pub base: Rate,
    /// `(start, rate)`, by start.
    pub tiers: Vec<(u64, Rate)>,
}

impl Tiered {
    /// The rate for a call of `total_input` input tokens: the last tier it is past.
    pub fn at(&self, total_input: u64) -> Rate {
        self.tiers
            .iter()
            .rev()
            .find(|(start, _)| total_input > *start)
            .map_or(self.base, |(_, rate)| *rate)
    }
}

/// The kinds of token a price names, in the data's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `input_mtok`: uncached input.
    Input,
    /// `output_mtok`.
    Output,
    /// `cache_read_mtok`.
    CacheRead,
    /// `cache_write_mtok`: any cache write without a price of its own lifetime.
    CacheWrite,
    /// `cache_write_5m_mtok`.
    CacheWrite5m,
    /// `cache_write_1h_mtok`.
    CacheWrite1h,
    /// `output_reasoning_mtok`.
    Reasoning,
}

impl Kind {
    /// Every kind, in the order of [`Rates`].
    pub const ALL: [Kind; 7] = [
        Kind::Input,
        Kind::Output,
        Kind::CacheRead,
        Kind::CacheWrite,
        Kind::CacheWrite5m,
        Kind::CacheWrite1h,
        Kind::Reasoning,
    ];

    /// The data's key.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Input => "input_mtok",
            Kind::Output => "output_mtok",
            Kind::CacheRead => "cache_read_mtok",
            Kind::CacheWrite => "cache_write_mtok",
            Kind::CacheWrite5m => "cache_write_5m_mtok",
            Kind::CacheWrite1h => "cache_write_1h_mtok",
            Kind::Reasoning => "output_reasoning_mtok",
        }
    }

    /// The name people and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Output => "output",
            Kind::CacheRead => "cache_read",
            Kind::CacheWrite => "cache_write",
            Kind::CacheWrite5m => "cache_write_5m",
            Kind::CacheWrite1h => "cache_write_1h",
            Kind::Reasoning => "reasoning",
        }
    }
}

/// One set of prices: a rate for each kind the data gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates(pub [Option<Tiered>; 7]);

impl Rates {
    /// The rate of `kind`, if the price names one.
    pub fn get(&self, kind: Kind) -> Option<&Tiered> {
        self.0[kind as usize].as_ref()
    }

    /// Prices of the data's `ModelPrice`. The keys witness counts tokens for are read; the
    /// schema's others (audio, images, requests, searches) are checked and left aside.
    pub fn parse(value: &Value, at: &str) -> Result<Rates, BadPrice> {
        let object = value
            .as_object()
            .ok_or_else(|| BadPrice::new(at, "prices are an object"))?;
        let mut rates = Rates::default();
        for (key, value) in object {
            let at = format!("{at}.{key}");
            let tiered = parse_tiered(value, &at)?;
            if let Some(kind) = Kind::ALL.into_iter().find(|kind| kind.key() == key) {
                rates.0[kind as usize] = Some(tiered);
            }
        }
        Ok(rates)
    }
}

/// A price in USD per million tokens as a [`Rate`]; refused when negative or not finite.
pub fn rate_of(value: &Value, at: &str) -> Result<Rate, BadPrice> {
    let usd = value
        .as_f64()
        .ok_or_else(|| BadPrice::new(at, "a price is a number of USD per million tokens"))?;
    rate_of_usd(usd, at)
}

/// [`rate_of`] for a number already read.
pub fn rate_of_usd(usd: f64, at: &str) -> Result<Rate, BadPrice> {
    if !usd.is_finite() || usd < 0.0 {
        return Err(BadPrice::new(
            at,
            format!("a price is 0 or more, not {usd}"),
        ));
    }
    if usd > 1e9 {
        return Err(BadPrice::new(
            at,
            format!("{usd} USD per million tokens is past any real price"),
        ));
    }
    Ok((usd * RATE_SCALE as f64).round() as Rate)
}

fn parse_tiered(value: &Value, at: &str) -> Result<Tiered, BadPrice> {
    let Some(object) = value.as_object() else {
        return Ok(Tiered {
            base: rate_of(value, at)?,
            tiers: Vec::new(),
        });
    };
    only_keys(object, &["base", "tiers"], at)?;
    let base = rate_of(
        object
            .get("base")
            .ok_or_else(|| BadPrice::new(at, "tiered prices need a base"))?,
        &format!("{at}.base"),
    )?;
    let mut tiers = Vec::new();
    for (index, tier) in object
        .get("tiers")
        .and_then(Value::as_array)
        .ok_or_else(|| BadPrice::new(at, "tiered prices need a list of tiers"))?
        .iter()
        .enumerate()
    {
        let at = format!("{at}.tiers[{index}]");
        let tier = tier
            .as_object()
            .ok_or_else(|| BadPrice::new(&at, "a tier is an object"))?;
        only_keys(tier, &["start", "price"], &at)?;
        let start = tier
            .get("start")
            .and_then(Value::as_u64)
            .ok_or_else(|| BadPrice::new(&at, "a tier's start is a count of tokens"))?;
        let rate = rate_of(
            tier.get("price")
                .ok_or_else(|| BadPrice::new(&at, "a tier needs a price"))?,
            &format!("{at}.price"),
        )?;
        tiers.push((start, rate));
    }
    if tiers.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(BadPrice::new(at, "tiers must start in increasing order"));
    }
    Ok(Tiered { base, tiers })
}

/// Refuses any key of `object` that is not among `known`, naming it.
pub fn only_keys(object: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), BadPrice> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(BadPrice::new(
            &format!("{at}.{key}"),
            format!("unknown key; known here: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// When a price holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Always (the first price of a list, usually).
    Always,
    /// From a UTC date on: nanoseconds since the epoch, and the date as written.
    From(i64, String),
    /// Between two UTC times of day, in seconds since midnight (the end may be before the
    /// start, over midnight), and the interval as written.
    TimeOfDay(u32, u32, String),
}

impl Constraint {
    /// Whether the price holds for a call dated `date` (nanoseconds since the epoch).
    pub fn holds(&self, date: i64) -> bool {
        match self {
            Constraint::Always => true,
            Constraint::From(start, _) => date >= *start,
            Constraint::TimeOfDay(start, end, _) => {
                let second = (date.div_euclid(1_000_000_000)).rem_euclid(86_400) as u32;
                if start <= end {
                    (*start..*end).contains(&second)
                } else {
                    second >= *start || second < *end
                }
            }
        }
    }

    /// How the constraint appears in a `priced_by`: `@2026-03-13`, `@00:30-08:30`, or nothing.
    pub fn label(&self) -> String {
        match self {
            Constraint::Always => String::new(),
            Constraint::From(_, date) => format!("@{date}"),
            Constraint::TimeOfDay(_, _, interval) => format!("@{interval}"),
        }
    }

    /// A constraint from the data's JSON.
    pub fn parse(value: Option<&Value>, at: &str) -> Result<Constraint, BadPrice> {
        let Some(value) = value else {
            return Ok(Constraint::Always);
        };
        let object = value
            .as_object()
            .ok_or_else(|| BadPrice::new(at, "a constraint is an object"))?;
        if let Some(date) = object.get("start_date") {
            only_keys(object, &["start_date"], at)?;
            let date = date
                .as_str()
                .ok_or_else(|| BadPrice::new(&format!("{at}.start_date"), "must be a date"))?;
            return Ok(Constraint::From(
                start_of_date(date, &format!("{at}.start_date"))?,
                date.to_owned(),
            ));
        }
        only_keys(object, &["start_time", "end_time"], at)?;
        let time = |key: &str| -> Result<(u32, String), BadPrice> {
            let at = format!("{at}.{key}");
            let text = object
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| BadPrice::new(&at, "must be a time of day, HH:MM[:SS]"))?;
            let time: jiff::civil::Time = text
                .trim_end_matches('Z')
                .parse()
                .map_err(|error| BadPrice::new(&at, format!("not a time of day: {error}")))?;
            let seconds =
                time.hour() as u32 * 3600 + time.minute() as u32 * 60 + time.second() as u32;
            Ok((seconds, text.to_owned()))
        };
        let (start, start_text) = time("start_time")?;
        let (end, end_text) = time("end_time")?;
        Ok(Constraint::TimeOfDay(
            start,
            end,
            format!("{start_text}-{end_text}"),
        ))
    }
}

/// Midnight UTC at the start of `date` (`YYYY-MM-DD`), in nanoseconds since the epoch.
pub fn start_of_date(date: &str, at: &str) -> Result<i64, BadPrice> {
    let civil: jiff::civil::Date = date
        .parse()
        .map_err(|error| BadPrice::new(at, format!("not a date, YYYY-MM-DD: {error}")))?;
    let zoned = civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|error| BadPrice::new(at, error.to_string()))?;
    Ok(zoned.timestamp().as_nanosecond() as i64)
}

/// A model's prices: one, or a list of which the last whose constraint holds applies (the
/// first when none does).
#[derive(Debug, Clone)]
pub struct Versions(pub Vec<(Constraint, Rates)>);

impl Versions {
    /// Which price holds for a call dated `date`: its place in the list.
    pub fn at(&self, date: i64) -> usize {
        self.0
            .iter()
            .rposition(|(constraint, _)| constraint.holds(date))
            .unwrap_or(0)
    }

    fn parse(value: &Value, at: &str) -> Result<Versions, BadPrice> {
        let Some(list) = value.as_array() else {
            return Ok(Versions(vec![(
                Constraint::Always,
                Rates::parse(value, at)?,
            )]));
        };
        if list.is_empty() {
            return Err(BadPrice::new(at, "a list of prices needs at least one"));
        }
        let mut versions = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            let at = format!("{at}[{index}]");
            let object = item
                .as_object()
                .ok_or_else(|| BadPrice::new(&at, "a conditional price is an object"))?;
            only_keys(object, &["constraint", "prices"], &at)?;
            let constraint =
                Constraint::parse(object.get("constraint"), &format!("{at}.constraint"))?;
            let rates = Rates::parse(
                object
                    .get("prices")
                    .ok_or_else(|| BadPrice::new(&at, "a conditional price needs prices"))?,
                &format!("{at}.prices"),
            )?;
            versions.push((constraint, rates));
        }
        Ok(Versions(versions))
    }
}

/// A model of a provider.
#[derive(Debug, Clone)]
pub struct Model {
    /// The data's id for it.
    pub id: String,
    /// The names it answers to.
    pub matches: Clause,
    /// Its prices.
    pub prices: Versions,
}

/// A provider and its models.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The data's id, such as `openai`.
    pub id: String,
    /// Model names that tell this provider when none is given.
    pub model_match: Option<Clause>,
    /// Provider names (OpenTelemetry's `gen_ai.provider.name`, say) that mean this one.
    pub provider_match: Option<Clause>,
    /// Providers whose models this one also serves, tried after its own.
    pub fallback: Vec<String>,
    /// Its models, tried in order.
    pub models: Vec<Model>,
}

/// A whole table of providers.
#[derive(Debug, Clone)]
pub struct Table {
    /// Its providers, in the data's order.
    pub providers: Vec<Provider>,
}

impl Table {
    /// The table in genai-prices v2 JSON (`data_slim.json` or `data.json`'s shape).
    pub fn parse(json: &str) -> Result<Table, BadPrice> {
        let value: Value = serde_json::from_str(json)
            .map_err(|error| BadPrice::new("the file", format!("not JSON: {error}")))?;
        let list = value
            .as_array()
            .ok_or_else(|| BadPrice::new("the file", "a price table is a list of providers"))?;
        let mut providers = Vec::with_capacity(list.len());
        for (index, provider) in list.iter().enumerate() {
            providers.push(parse_provider(provider, &format!("[{index}]"))?);
        }
        Ok(Table { providers })
    }

    /// The provider and model that price `model`, given the provider when it is known: the
    /// provider by its id or its `provider_match`, else the first whose `model_match` takes
    /// the model; then its first model whose `match` takes the name, then its fallback
    /// providers'. `None` when no provider or model is found: unpriced.
    pub fn find(&self, provider: Option<&str>, model: &str) -> Option<(&Provider, &Model)> {
        let given = provider.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.providers.iter().find(|provider| {
                provider.id == name
                    || provider
                        .provider_match
                        .as_ref()
                        .is_some_and(|clause| clause.matches(&name))
            })
        });
        let provider = given.or_else(|| {
            self.providers.iter().find(|provider| {
                provider
                    .model_match
                    .as_ref()
                    .is_some_and(|clause| clause.matches(model))
            })
        })?;
        fn own<'a>(provider: &'a Provider, model: &str) -> Option<&'a Model> {
            provider
                .models
                .iter()
                .find(|candidate| candidate.matches.matches(model))
        }
        if let Some(found) = own(provider, model) {
            return Some((provider, found));
        }
        provider.fallback.iter().find_map(|id| {
            let other = self.providers.iter().find(|other| &other.id == id)?;
            own(other, model).map(|found| (other, found))
        })
    }
}

fn parse_provider(value: &Value, at: &str) -> Result<Provider, BadPrice> {
    let object = value
        .as_object()
        .ok_or_else(|| BadPrice::new(at, "a provider is an object"))?;
    only_keys(
        object,
        &[
            "id",
            "name",
            "api_pattern",
            "model_match",
            "provider_match",
            "extractors",
            "fallback_model_providers",
            "models",
            "pricing_urls",
            "description",
            "price_comments",
        ],
        at,
    )?;
    let id = required_text(object, "id", at)?;
    let clause = |key: &str| {
        object
            .get(key)
            .map(|value| Clause::parse(value, &format!("{at}.{key}")))
            .transpose()
    };
    let fallback = match object.get("fallback_model_providers") {
        None => Vec::new(),
        Some(list) => list
            .as_array()
            .and_then(|list| {
                list.iter()
                    .map(|id| id.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                BadPrice::new(
                    &format!("{at}.fallback_model_providers"),
                    "must be a list of provider ids",
                )
            })?,
    };
    let mut models = Vec::new();
    for (index, model) in object
        .get("models")
        .and_then(Value::as_array)
        .ok_or_else(|| BadPrice::new(at, "a provider needs a list of models"))?
        .iter()
        .enumerate()
    {
        let at = format!("{at}.models[{index}]");
        let model = model
            .as_object()
            .ok_or_else(|| BadPrice::new(&at, "a model is an object"))?;
        only_keys(
            model,
            &[
                "id",
                "match",
                "prices",
                "context_window",
                "deprecated",
                "name",
                "description",
                "price_comments",
            ],
            &at,
        )?;
        models.push(Model {
            id: required_text(model, "id", &at)?,
            matches: Clause::parse(
                model
                    .get("match")
                    .ok_or_else(|| BadPrice::new(&at, "a model needs a match"))?,
                &format!("{at}.match"),
            )?,
            prices: Versions::parse(
                model
                    .get("prices")
                    .ok_or_else(|| BadPrice::new(&at, "a model needs prices"))?,
                &format!("{at}.prices"),
            )?,
        });
    }
    Ok(Provider {
        id,
        model_match: clause("model_match")?,
        provider_match: clause("provider_match")?,
        fallback,
        models,
    })
}

/// The longest provider or model id: the schema's 100 bytes for a model, the same for a
/// provider, so that every `priced_by` fits its limit.
pub const MAX_ID_LEN: usize = 100;

/// An id: 1 to [`MAX_ID_LEN`] bytes without whitespace or control characters (the schema's
/// `^\S+$`).
fn required_text(object: &Map<String, Value>, key: &str, at: &str) -> Result<String, BadPrice> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|text| is_id(text))
        .map(str::to_owned)
        .ok_or_else(|| {
            BadPrice::new(
                &format!("{at}.{key}"),
                format!("an id is 1 to {MAX_ID_LEN} bytes without spaces or control characters"),
            )
        })
}

/// Whether `text` may be a provider's or a model's id.
pub fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_ID_LEN
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}
