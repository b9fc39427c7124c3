//! `witness prices`: which price the daemon gives a model's calls, and which models in the
//! log have none; the line under `witness cost` that names the models it could not price;
//! and `witness budgets`.

use std::io::Write;

use serde_json::json;
use witness_client::Client;
use witness_client::query::{CostQuery, CostRow, GroupBy, MAX_PAGE, PriceQuery};

use crate::args::PricesArgs;
use crate::present::{printable, table};

/// `witness prices MODEL` and `witness prices --unpriced`. Returns whether the model has a
/// price (always true for the listing).
pub fn prices(client: &mut Client, args: PricesArgs, json: bool) -> anyhow::Result<bool> {
    let mut out = crate::output::stdout();
    let Some(model) = args.model else {
        let unpriced = unpriced_models(client, args.window.since, args.window.until)?;
        if json {
            let models: Vec<_> = unpriced
                .iter()
                .map(|(model, entries)| json!({"model": model, "entries": entries}))
                .collect();
            writeln!(out, "{}", json!({ "unpriced": models }))?;
        } else if unpriced.is_empty() {
            writeln!(out, "every entry with tokens in the log has a price")?;
        } else {
            let rows: Vec<Vec<String>> = unpriced
                .iter()
                .map(|(model, entries)| {
                    vec![
                        model
                            .as_deref()
                            .map_or("(no model)".into(), |model| printable(model).into_owned()),
                        entries.to_string(),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["MODEL", "UNPRICED ENTRIES"],
                &[false, true],
                &rows,
                false,
            )?;
        }
        return Ok(true);
    };
    let answer = client.price(PriceQuery {
        model: model.clone(),
        provider: args.provider.clone(),
        at: args.at,
    })?;
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "model": model,
                "provider": args.provider,
                "table": answer.table,
                "price": answer.quote.as_ref().map(|quote| json!({
                    "priced_by": quote.priced_by,
                    "table": quote.table,
                    "provider": quote.provider,
                    "model": quote.model,
                    "since": quote.since,
                    "usd_per_mtok": quote.rates.iter().map(|rate| (rate.kind.clone(), json!({
                        "base": rate.usd_per_mtok,
                        "tiers": rate.tiers.iter().map(|(start, usd)| json!({"start": start, "usd_per_mtok": usd})).collect::<Vec<_>>(),
                    }))).collect::<serde_json::Map<_, _>>(),
                })),
            })
        )?;
        return Ok(answer.quote.is_some());
    }
    let Some(quote) = answer.quote else {
        writeln!(
            out,
            "{} has no price in {}: its calls are recorded unpriced (not as $0); add a \
             [[price]] to the configuration to price them",
            printable(&model),
            printable(&answer.table)
        )?;
        return Ok(false);
    };
    writeln!(
        out,
        "{} is priced as {}{}",
        printable(&model),
        printable(&quote.priced_by),
        quote
            .since
            .as_deref()
            .map_or(String::new(), |since| format!(
                " (the price from {})",
                printable(since)
            ))
    )?;
    let rows: Vec<Vec<String>> = quote
        .rates
        .iter()
        .map(|rate| {
            let tiers: Vec<String> = rate
                .tiers
                .iter()
                .map(|(start, usd)| format!("${usd} past {start} input tokens"))
                .collect();
            vec![
                rate.kind.replace('_', " "),
                format!("${}", rate.usd_per_mtok),
                tiers.join(", "),
            ]
        })
        .collect();
    table(
        &mut out,
        &["TOKENS", "USD PER MILLION", "TIERS"],
        &[false, true, false],
        &rows,
        false,
    )?;
    Ok(true)
}

/// The models of the entries dated in `[since, until)` that have no price, with how many
/// entries each, most first: from the cost report by model.
pub fn unpriced_models(
    client: &mut Client,
    since: Option<i64>,
    until: Option<i64>,
) -> anyhow::Result<Vec<(Option<String>, u64)>> {
    unpriced_of(
        client,
        CostQuery {
            by: GroupBy::Model,
            since,
            until,
            component: None,
            event: None,
            model: None,
            offset: 0,
            limit: MAX_PAGE,
        },
    )
}

/// [`unpriced_models`] of the entries `query` selects, whatever it groups by.
pub fn unpriced_of(
    client: &mut Client,
    mut query: CostQuery,
) -> anyhow::Result<Vec<(Option<String>, u64)>> {
    query.by = GroupBy::Model;
    query.offset = 0;
    query.limit = MAX_PAGE;
    let report = client.cost(query)?;
    let mut unpriced: Vec<(Option<String>, u64)> = report
        .rows
        .into_iter()
        .filter(|row: &CostRow| row.unpriced > 0)
        .map(|row| (row.key, row.unpriced))
        .collect();
    unpriced.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(unpriced)
}

/// The sentence under a cost report whose entries include unpriced ones: which models, and
/// that the money shown leaves them out.
pub fn unpriced_note(unpriced: &[(Option<String>, u64)]) -> Option<String> {
    if unpriced.is_empty() {
        return None;
    }
    let parts: Vec<String> = unpriced
        .iter()
        .map(|(model, entries)| {
            let of = model
                .as_deref()
                .map_or("no model".into(), |model| printable(model).into_owned());
            let noun = if *entries == 1 { "entry" } else { "entries" };
            let verb = if *entries == 1 { "has" } else { "have" };
            format!("{entries} {noun} of {of} {verb} no price")
        })
        .collect();
    Some(format!(
        "{}: COST leaves them out (`witness prices MODEL` says why)",
        parts.join("; ")
    ))
}

/// `witness budgets`: each budget's spend this period against its limit.
pub fn budgets(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let reports = client.budgets()?;
    let mut out = crate::output::stdout();
    if json {
        let list: Vec<_> = reports
            .iter()
            .map(|report| {
                json!({
                    "name": report.name,
                    "period": report.period,
                    "time_zone": report.time_zone,
                    "period_start": crate::when::rfc3339(report.period_start),
                    "period_end": crate::when::rfc3339(report.period_end),
                    "limit_micro_usd": report.limit_micro_usd,
                    "spent_micro_usd": report.spent_micro_usd,
                    "unpriced": report.unpriced,
                    "ratio": report.ratio,
                    "projected_micro_usd": report.projected_micro_usd,
                    "warn_at": report.warn_at,
                    "crossed": report.crossed,
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "budgets": list }))?;
        return Ok(());
    }
    if reports.is_empty() {
        writeln!(
            out,
            "no budgets are configured ([[budget]] in the daemon's configuration)"
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|report| {
            vec![
                printable(&report.name).into_owned(),
                format!("{} ({})", report.period, printable(&report.time_zone)),
                crate::money::format_usd(report.spent_micro_usd),
                crate::money::format_usd(report.limit_micro_usd),
                format!("{:.1}%", report.ratio * 100.0),
                crate::money::format_usd(report.projected_micro_usd),
                report.unpriced.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "BUDGET",
            "PERIOD",
            "SPENT",
            "LIMIT",
            "USED",
            "PROJECTED",
            "UNPRICED",
        ],
        &[false, false, true, true, true, true, true],
        &rows,
        false,
    )?;
    Ok(())
}
