//! The `[[budget]]` tables: a limit on spend per day, week or month, for all entries or a
//! component, a model or the traces under a prefix, and the fractions of it at which the
//! daemon records a warning. Checked here, as the configuration is read; watched by
//! `observe::budgets`.

use serde::{Deserialize, Serialize};

use super::BadValue;

/// A `[[budget]]` of the configuration, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// What the warnings and `witness budgets` call it; unique.
    pub name: String,
    /// `day`, `week` (from Monday) or `month`.
    pub period: String,
    /// The time zone periods begin in, such as `Europe/Paris`; UTC if not given.
    pub time_zone: Option<String>,
    /// The limit, in US dollars.
    pub limit_usd: f64,
    /// Only entries of this component.
    pub component: Option<String>,
    /// Only entries of this model.
    pub model: Option<String>,
    /// Only entries whose trace id starts with this.
    pub trace_prefix: Option<String>,
    /// The fractions of the limit at which to warn, each once a period; `[0.8, 1.0]` if not
    /// given.
    pub warn_at: Option<Vec<f64>>,
}

/// The fractions a budget warns at when none are given.
pub const DEFAULT_WARN_AT: [f64; 2] = [0.8, 1.0];

/// How long a budget's period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From midnight to midnight.
    Day,
    /// From Monday's midnight to the next.
    Week,
    /// From the first of the month to the next.
    Month,
}

impl Period {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// A budget, checked.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Its name.
    pub name: String,
    /// Its period.
    pub period: Period,
    /// The time zone its periods begin in.
    pub zone: jiff::tz::TimeZone,
    /// The zone's name, as configured (`UTC` by default).
    pub zone_name: String,
    /// The limit, in micro-USD.
    pub limit_micro_usd: u64,
    /// See [`BudgetSettings`].
    pub component: Option<String>,
    /// See [`BudgetSettings`].
    pub model: Option<String>,
    /// See [`BudgetSettings`].
    pub trace_prefix: Option<String>,
    /// The fractions it warns at, ascending.
    pub warn_at: Vec<f64>,
}

impl Budget {
    /// The period that holds `now` (nanoseconds since the epoch): its start and end.
    pub fn period_at(&self, now: i64) -> (i64, i64) {
        let instant = jiff::Timestamp::from_nanosecond(i128::from(now))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.zone.clone());
        let date = instant.date();
        let (first, step) = match self.period {
            Period::Day => (date, jiff::Span::new().days(1)),
            Period::Week => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                (
                    date.checked_sub(jiff::Span::new().days(back))
                        .unwrap_or(date),
                    jiff::Span::new().weeks(1),
                )
            }
            Period::Month => (date.first_of_month(), jiff::Span::new().months(1)),
        };
        let start = first.to_zoned(self.zone.clone()).ok();
        let end = start
            .as_ref()
            .and_then(|start| start.checked_add(step).ok());
        match (start, end) {
            (Some(start), Some(end)) => (
                start.timestamp().as_nanosecond() as i64,
                end.timestamp().as_nanosecond() as i64,
            ),
            _ => (now, now.saturating_add(1)),
        }
    }
}

/// Checks every `[[budget]]`: each budget's keys, and that names are unique.
pub fn check_budgets(settings: &[BudgetSettings]) -> Result<Vec<Budget>, BadValue> {
    let mut budgets: Vec<Budget> = Vec::with_capacity(settings.len());
    for (index, budget) in settings.iter().enumerate() {
        let checked = check_budget(budget, index)?;
        if budgets.iter().any(|other| other.name == checked.name) {
            return Err(rule(
                index,
                "name",
                format!("{:?} names two budgets", checked.name),
            ));
        }
        budgets.push(checked);
    }
    Ok(budgets)
}

fn rule(index: usize, key: &str, message: String) -> BadValue {
    BadValue::Meaning {
        text: format!("budget[{index}].{key}"),
        reason: message,
    }
}

fn check_budget(settings: &BudgetSettings, index: usize) -> Result<Budget, BadValue> {
    if settings.name.is_empty()
        || settings.name.len() > 128
        || settings.name.chars().any(char::is_control)
    {
        return Err(rule(
            index,
            "name",
            "a budget's name is 1 to 128 bytes without control characters".into(),
        ));
    }
    let period = match settings.period.as_str() {
        "day" => Period::Day,
        "week" => Period::Week,
        "month" => Period::Month,
        other => {
            return Err(rule(
                index,
                "period",
                format!("{other:?} is not day, week or month"),
            ));
        }
    };
    let zone_name = settings.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let zone = jiff::tz::TimeZone::get(&zone_name).map_err(|error| {
        rule(
            index,
            "time_zone",
            format!("{zone_name:?} is not a time zone: {error}"),
        )
    })?;
    let limit = settings.limit_usd;
    if !limit.is_finite() || limit <= 0.0 || limit > 1e12 {
        return Err(rule(
            index,
            "limit_usd",
            format!("a limit is a number of dollars above 0, not {limit}"),
        ));
    }
    let warn_at = settings
        .warn_at
        .clone()
        .unwrap_or_else(|| DEFAULT_WARN_AT.to_vec());
    if warn_at.is_empty()
        || warn_at
            .iter()
            .any(|fraction| !fraction.is_finite() || *fraction <= 0.0 || *fraction > 100.0)
        || warn_at.windows(2).any(|pair| pair[0] >= pair[1])
    {
        return Err(rule(
            index,
            "warn_at",
            format!(
                "warn_at is a list of fractions of the limit above 0, ascending, such as \
                 [0.5, 0.8, 1.0]; not {warn_at:?}"
            ),
        ));
    }
    for (key, value) in [
        ("component", &settings.component),
        ("model", &settings.model),
        ("trace_prefix", &settings.trace_prefix),
    ] {
        if value.as_deref() == Some("") {
            return Err(rule(
                index,
                key,
                "an empty filter selects nothing; leave it out".into(),
            ));
        }
    }
    Ok(Budget {
        name: settings.name.clone(),
        period,
        zone,
        zone_name,
        limit_micro_usd: (limit * 1e6).round() as u64,
        component: settings.component.clone(),
        model: settings.model.clone(),
        trace_prefix: settings.trace_prefix.clone(),
        warn_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(period: &str, zone: Option<&str>) -> Budget {
        check_budgets(&[BudgetSettings {
            name: "b".into(),
            period: period.into(),
            time_zone: zone.map(str::to_owned),
            limit_usd: 1.0,
            ..BudgetSettings::default()
        }])
        .unwrap()
        .remove(0)
    }

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64
    }

    #[test]
    fn periods_begin_at_midnight_monday_and_the_first_in_their_zone() {
        // 2026-12-02 is a Wednesday.
        let now = at("2026-12-02T15:00:00Z");
        assert_eq!(
            budget("day", None).period_at(now),
            (at("2026-12-02T00:00:00Z"), at("2026-12-03T00:00:00Z"))
        );
        assert_eq!(
            budget("week", None).period_at(now),
            (at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            budget("month", None).period_at(now),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            budget("day", Some("Asia/Tokyo")).period_at(now),
            (at("2026-12-02T15:00:00Z"), at("2026-12-03T15:00:00Z"))
        );
    }

    #[test]
    fn garbage_budgets_are_refused_naming_the_key() {
        let base = BudgetSettings {
            name: "b".into(),
            period: "day".into(),
            limit_usd: 1.0,
            ..BudgetSettings::default()
        };
        for (settings, key) in [
            (
                BudgetSettings {
                    period: "year".into(),
                    ..base.clone()
                },
                "period",
            ),
            (
                BudgetSettings {
                    limit_usd: -1.0,
                    ..base.clone()
                },
                "limit_usd",
            ),
            (
                BudgetSettings {
                    time_zone: Some("Mars/Olympus".into()),
                    ..base.clone()
                },
                "time_zone",
            ),
            (
                BudgetSettings {
                    warn_at: Some(vec![1.0, 0.5]),
                    ..base.clone()
                },
                "warn_at",
            ),
            (
                BudgetSettings {
                    name: String::new(),
                    ..base.clone()
                },
                "name",
            ),
            (
                BudgetSettings {
                    model: Some(String::new()),
                    ..base.clone()
                },
                "model",
            ),
        ] {
            let error = check_budgets(&[settings]).unwrap_err().to_string();
            assert!(error.contains(&format!("budget[0].{key}")), "{error}");
        }
        let error = check_budgets(&[base.clone(), base])
            .unwrap_err()
            .to_string();
        assert!(error.contains("names two budgets"), "{error}");
    }
}
