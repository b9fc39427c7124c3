//! Prices (docs/PRICES.md): each figure the daemon stores is checked against a computation
//! made here from the shipped JSON, not through the daemon's pricing code; a caller's money
//! wins; an unknown model stays unpriced through reports, export and import; configured
//! prices, a replaced table, reloads, and garbage tables and settings.

use std::path::Path;

use serde_json::Value;
use witness_client::query::{CostQuery, GroupBy, PriceQuery, TraceQuery};
use witness_client::{Cost, Entry};

use crate::harness::{TestDaemon, Witnessd, binary, read_db, witness};

/// The shipped table, as the data.
fn data() -> Value {
    serde_json::from_str(include_str!("../daemon/prices/genai-prices.json")).unwrap()
}

/// The prices object of `model` of `provider` in force on `date` (`YYYY-MM-DD`), by the
/// data's rule: the last conditional price whose start date has come, else the first.
fn prices_of(provider: &str, model: &str, date: &str) -> Value {
    let data = data();
    let provider = data
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == provider)
        .unwrap();
    let model = provider["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == model)
        .unwrap();
    match &model["prices"] {
        Value::Array(list) => list
            .iter()
            .rev()
            .find(|p| {
                p["constraint"]["start_date"]
                    .as_str()
                    .is_none_or(|start| start <= date)
            })
            .unwrap_or(&list[0])["prices"]
            .clone(),
        other => other.clone(),
    }
}

/// A rate of `prices` in USD per million tokens for a call of `total_in` input tokens: flat,
/// or the last tier whose start the call is past; `fallback` when the price has none.
fn rate(prices: &Value, key: &str, total_in: u64, fallback: f64) -> f64 {
    match &prices[key] {
        Value::Null => fallback,
        Value::Object(tiered) => tiered["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|tier| total_in > tier["start"].as_u64().unwrap())
            .map_or(tiered["base"].as_f64().unwrap(), |tier| {
                tier["price"].as_f64().unwrap()
            }),
        number => number.as_f64().unwrap(),
    }
}

/// Micro-USD of a call by the arithmetic of docs/PRICES.md, in decimal floats and rounded
/// once: counts are small enough that a float holds every product exactly to well below a
/// micro-dollar.
fn expected(prices: &Value, cost: &Cost) -> u64 {
    let read = cost.cache_read_tokens.unwrap_or(0);
    let write = cost.cache_write_tokens.unwrap_or(0);
    let hour = cost.cache_write_1h_tokens.unwrap_or(0);
    let reasoning = cost.reasoning_tokens.unwrap_or(0);
    let total = cost.tokens_in;
    let input = rate(prices, "input_mtok", total, 0.0);
    let write_rate = rate(prices, "cache_write_mtok", total, input);
    let output = rate(prices, "output_mtok", total, 0.0);
    let micro = (total - read - write) as f64 * input
        + read as f64 * rate(prices, "cache_read_mtok", total, input)
        + (write - hour) as f64 * write_rate
        + hour as f64 * rate(prices, "cache_write_1h_mtok", total, write_rate)
        + (cost.tokens_out - reasoning) as f64 * output
        + reasoning as f64 * rate(prices, "output_reasoning_mtok", total, output);
    (micro + 0.5).floor() as u64
}

/// Nanoseconds since the epoch at noon UTC of `date`.
fn noon(date: &str) -> i64 {
    let date: jiff::civil::Date = date.parse().unwrap();
    date.at(12, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_nanosecond() as i64
}

#[test]
fn each_price_the_daemon_stores_is_the_datas_and_a_callers_money_wins() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    // (what, provider in the data, model id in the data, date, the cost as sent)
    let cases: Vec<(&str, &str, &str, &str, Cost)> = vec![
        (
            "the issue's example: 1200 in of which 200 cached, 300 out",
            "openai",
            "gpt-4o-mini",
            "2026-06-01",
            Cost::tokens(1200, 300)
                .model("gpt-4o-mini")
                .cache_read_tokens(200),
        ),
        (
            "cached and reasoning tokens",
            "openai",
            "gpt-4o-mini",
            "2026-06-01",
            Cost::tokens(5000, 900)
                .model("gpt-4o-mini-2024-07-18")
                .cache_read_tokens(3000)
                .reasoning_tokens(600),
        ),
        (
            "cache reads and five-minute and hour-long cache writes",
            "anthropic",
            "claude-sonnet-4-5",
            "2026-06-01",
            Cost::tokens(10_000, 700)
                .model("claude-sonnet-4-5-20250929")
                .cache_read_tokens(3000)
                .cache_write_tokens(4000)
                .cache_write_1h_tokens(1500),
        ),
        (
            "past the 200k-token tier: every token at the tier's rate",
            "anthropic",
            "claude-sonnet-4-5",
            "2026-06-01",
            Cost::tokens(250_000, 2000)
                .model("claude-sonnet-4-5")
                .cache_read_tokens(100_000)
                .cache_write_tokens(20_000),
        ),
        (
            "claude-sonnet-4-6 before 2026-03-13: tiered",
            "anthropic",
            "claude-sonnet-4-6",
            "2026-03-12",
            Cost::tokens(250_000, 1000).model("claude-sonnet-4-6"),
        ),
        (
            "claude-sonnet-4-6 from 2026-03-13: one rate",
            "anthropic",
            "claude-sonnet-4-6",
            "2026-03-13",
            Cost::tokens(250_000, 1000).model("claude-sonnet-4-6"),
        ),
    ];
    let entries: Vec<Entry> = cases
        .iter()
        .map(|(what, _, _, date, cost)| {
            Entry::new("llm.call", "agent")
                .trace("t-prices")
                .payload(serde_json::json!({"what": what}))
                .client_time(noon(date))
                .cost(cost.clone())
        })
        .collect();
    let mut entries = entries;
    entries.push(
        Entry::new("llm.call", "agent")
            .trace("t-prices")
            .cost(Cost::new(1200, 300, 1).model("gpt-4o-mini")),
    );
    let receipts = client.log_batch(entries).unwrap();
    let db = read_db(&daemon.db);
    let stored = |seq: u64| -> (Option<i64>, Option<String>) {
        db.query_row(
            "SELECT cost_micro_usd, priced_by FROM entries WHERE seq = ?1",
            [seq as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    };
    for ((what, provider, model, date, cost), receipt) in cases.iter().zip(&receipts) {
        let want = expected(&prices_of(provider, model, date), cost);
        let (money, priced_by) = stored(receipt.seq);
        assert_eq!(money, Some(want as i64), "{what}");
        let dated = if *model == "claude-sonnet-4-6" && *date >= "2026-03-13" {
            "@2026-03-13"
        } else {
            ""
        };
        assert_eq!(
            priced_by.as_deref(),
            Some(format!("genai-prices-47df840a5ab1:{provider}/{model}{dated}").as_str()),
            "{what}"
        );
    }
    assert_eq!(stored(receipts[0].seq).0, Some(345));
    // The tiers bite: the same tokens cost more before the flat price.
    assert!(stored(receipts[4].seq).0 > stored(receipts[5].seq).0);
    // The caller's money wins, and names no price.
    assert_eq!(stored(receipts[6].seq), (Some(1), None));
    drop(db);
    crate::harness::verify_file(&daemon.db);
}

#[test]
fn an_unknown_model_is_unpriced_through_reports_export_and_import() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    client
        .log_batch(vec![
            Entry::new("llm.call", "agent")
                .trace("t-1")
                .cost(Cost::tokens(100, 10).model("my-finetune")),
            Entry::new("llm.call", "agent")
                .trace("t-1")
                .cost(Cost::tokens(100, 10).model("my-finetune")),
            Entry::new("llm.call", "agent").trace("t-1").cost(
                Cost::tokens(1200, 300)
                    .model("gpt-4o-mini")
                    .cache_read_tokens(200),
            ),
        ])
        .unwrap();
    let report = client
        .cost(CostQuery {
            by: GroupBy::Model,
            since: None,
            until: None,
            component: None,
            event: None,
            model: None,
            offset: 0,
            limit: 100,
        })
        .unwrap();
    assert_eq!((report.total.unpriced, report.total.micro_usd), (2, 345));
    let row = report
        .rows
        .iter()
        .find(|row| row.key.as_deref() == Some("my-finetune"))
        .unwrap();
    assert_eq!((row.entries, row.unpriced, row.micro_usd), (2, 2, 0));
    let trace = client
        .trace(TraceQuery {
            trace_id: "t-1".into(),
            after_seq: None,
            limit: 10,
        })
        .unwrap();
    let summary = trace.summary.unwrap();
    assert_eq!((summary.unpriced, summary.micro_usd), (2, 345));
    assert_eq!(
        trace.entries[0].entry.cost.as_ref().unwrap().micro_usd,
        None
    );

    // The command line says so, in words and in JSON.
    let (code, table, _) = witness(&daemon.socket, &["cost", "--by", "component"], None);
    assert_eq!(code, 0);
    assert!(
        table.contains("2 entries of my-finetune have no price"),
        "{table}"
    );
    let (code, traces, _) = witness(&daemon.socket, &["traces"], None);
    assert_eq!(code, 0);
    assert!(traces.contains("$0.000345 + 2 unpriced"), "{traces}");
    let (code, tail, _) = witness(&daemon.socket, &["tail", "-n", "3"], None);
    assert_eq!(code, 0);
    assert!(
        tail.contains("unpriced") && !tail.contains("$0.000000"),
        "{tail}"
    );
    let (code, listed, _) = witness(&daemon.socket, &["prices", "--unpriced", "--json"], None);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["unpriced"][0]["model"], "my-finetune");
    assert_eq!(listed["unpriced"][0]["entries"], 2);

    // Exported and imported elsewhere, still unpriced; the priced one keeps its price.
    let (code, export, _) = witness(&daemon.socket, &["export"], None);
    assert_eq!(code, 0);
    let other = TestDaemon::start();
    let (code, _, err) = witness(&other.socket, &["import", "-"], Some(&export));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<(Option<i64>, Option<String>)> = read_db(&other.db)
        .prepare("SELECT cost_micro_usd, priced_by FROM entries ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows[0], (None, None));
    assert_eq!(rows[1], (None, None));
    assert_eq!(
        rows[2],
        (
            Some(345),
            Some("genai-prices-47df840a5ab1:openai/gpt-4o-mini".into())
        )
    );
}

fn write_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("witnessd.toml");
    std::fs::write(&path, extra).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A table of one provider and one model at `input` and `output` USD per million tokens.
fn one_model_table(input: f64, output: f64) -> String {
    serde_json::json!([{
        "id": "acme", "name": "Acme", "api_pattern": "acme", "model_match": {"starts_with": "acme-"},
        "models": [{"id": "acme-1", "match": {"equals": "acme-1"},
                    "prices": {"input_mtok": input, "output_mtok": output}}]
    }])
    .to_string()
}

#[test]
fn configured_prices_and_a_replaced_table_apply_and_a_bad_reload_keeps_the_prices_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("prices.json");
    std::fs::write(&table, one_model_table(2.0, 8.0)).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "prices_file = {:?}\n\
             [[price]]\nmodel = \"my-finetune\"\ninput = 0.5\noutput = 1.5\n\
             [[price]]\nmodel = \"my-finetune\"\nsince = \"2026-06-01\"\ninput = 1.0\noutput = 3.0\n",
            table.to_str().unwrap()
        ),
    );
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    let log = |model: &str, date: &str| -> (Option<i64>, Option<String>) {
        let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
        let receipt = client
            .log(
                Entry::new("llm.call", "agent")
                    .client_time(noon(date))
                    .cost(Cost::tokens(1000, 1000).model(model)),
            )
            .unwrap();
        read_db(&daemon.db)
            .query_row(
                "SELECT cost_micro_usd, priced_by FROM entries WHERE seq = ?1",
                [receipt.seq as i64],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(
        log("my-finetune", "2026-05-31"),
        (Some(2000), Some("config:/my-finetune".into()))
    );
    assert_eq!(
        log("my-finetune", "2026-06-01"),
        (Some(4000), Some("config:/my-finetune@2026-06-01".into()))
    );
    let name = |text: &str| {
        use sha2::Digest;
        format!(
            "prices-{}",
            &hex::encode(sha2::Sha256::digest(text.as_bytes()))[..12]
        )
    };
    let first = name(&one_model_table(2.0, 8.0));
    assert_eq!(
        log("acme-1", "2026-06-01"),
        (Some(10_000), Some(format!("{first}:acme/acme-1")))
    );
    // The replaced table is the only one: the built-in's models are unpriced now.
    assert_eq!(log("gpt-4o-mini", "2026-06-01"), (None, None));

    // A garbage table on reload: refused, logged with the place, the prices stay.
    std::fs::write(&table, r#"[{"id":"acme","name":"A","api_pattern":"a","models":[{"id":"m","match":{"regex":"("},"prices":{}}]}]"#).unwrap();
    daemon.signal(libc::SIGHUP);
    crate::harness::wait_until(
        "the refusal is logged",
        std::time::Duration::from_secs(10),
        || daemon.log().contains("prices not reloaded"),
    );
    assert!(
        daemon.log().contains("[0].models[0].match.regex"),
        "{}",
        daemon.log()
    );
    assert_eq!(log("acme-1", "2026-06-01").0, Some(10_000));

    // A newer table on reload is taken in.
    std::fs::write(&table, one_model_table(4.0, 8.0)).unwrap();
    daemon.signal(libc::SIGHUP);
    let second = name(&one_model_table(4.0, 8.0));
    crate::harness::wait_until(
        "the new table is in force",
        std::time::Duration::from_secs(10),
        || log("acme-1", "2026-06-01").1 == Some(format!("{second}:acme/acme-1")),
    );
    assert_eq!(log("acme-1", "2026-06-01").0, Some(12_000));

    // `witness prices` says what matched, and exits 1 for a model without a price.
    let (code, out, _) = witness(&daemon.socket, &["prices", "acme-1"], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{second}:acme/acme-1")) && out.contains("$4"),
        "{out}"
    );
    let (code, out, _) = witness(&daemon.socket, &["prices", "nobody-knows", "--json"], None);
    assert_eq!(code, 1, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert!(answer["price"].is_null(), "{out}");
    let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
    let quote = client
        .price(PriceQuery {
            model: "my-finetune".into(),
            provider: None,
            at: Some(noon("2026-07-01")),
        })
        .unwrap()
        .quote
        .unwrap();
    assert_eq!(quote.since.as_deref(), Some("2026-06-01"));
    assert!(
        client
            .price(PriceQuery {
                model: String::new(),
                provider: None,
                at: None
            })
            .is_err()
    );
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
}

#[test]
fn garbage_prices_are_refused_at_start_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let long_name = format!("[[price]]\nmodel = \"{}\"\ninput = 1.0\n", "m".repeat(101));
    for (settings, named) in [
        ("[[price]]\nmodel = \"m\"\ninput = -1.0\n", "price[0].input"),
        (
            "[[price]]\nmatch = { regex = \"(\" }\nid = \"x\"\ninput = 1.0\n",
            "price[0].match.regex",
        ),
        (
            "[[price]]\nmodel = \"m\"\ninput = 1.0\ncolour = 2\n",
            "colour",
        ),
        ("[[price]]\nmodel = \"m\"\n", "price[0]"),
        (long_name.as_str(), "price[0].model"),
        (
            "[[price]]\nmodel = \"m\"\ninput = 1.0\ntiers = [{ start = 10, output = 2.0 }]\n",
            "price[0].tiers[0].output",
        ),
    ] {
        let config = write_config(dir.path(), settings);
        let output = std::process::Command::new(binary("witnessd"))
            .args(["--config", &config, "--check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{settings}");
        assert!(stderr.contains(named), "{settings}: {stderr}");
    }
    // A table that does not parse stops the start, naming the place.
    for (table, named) in [
        ("not json", "not JSON"),
        (r#"{"a":1}"#, "a list of providers"),
        (
            r#"[{"id":"x","name":"x","api_pattern":"x","models":[{"id":"m","match":{"equals":"m"},"prices":{"input_mtok":{"base":1,"tiers":[{"start":5}]}}}]}]"#,
            "[0].models[0].prices.input_mtok.tiers[0]",
        ),
    ] {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, table).unwrap();
        let config = write_config(
            dir.path(),
            &format!("prices_file = {:?}\n", path.to_str().unwrap()),
        );
        let daemon = Witnessd::spawn(dir.path(), &["--config", &config], &[]);
        let status = daemon.wait();
        assert!(!status.success(), "{table}");
        let log = std::fs::read_to_string(dir.path().join("witnessd.log")).unwrap_or_default();
        assert!(log.contains(named), "{table}: {log}");
    }
}

#[test]
fn a_client_may_not_say_the_daemon_priced_its_entry() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let mut cost = Cost::new(1, 1, 5).model("gpt-4o-mini");
    cost.priced_by = Some("genai-prices-47df840a5ab1:openai/gpt-4o-mini".into());
    let error = client
        .log(Entry::new("llm.call", "agent").cost(cost))
        .unwrap_err();
    assert!(error.to_string().contains("priced_by"), "{error}");
    let error = client
        .log(
            Entry::new("llm.call", "agent").cost(
                Cost::tokens(10, 1)
                    .cache_write_tokens(2)
                    .cache_write_1h_tokens(3),
            ),
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("cache_write_1h_tokens"),
        "{error}"
    );
    assert_eq!(crate::harness::count(&daemon.db), 0);
}

/// The metrics endpoint's address, from the daemon's log (the last start's).
fn metrics_url(daemon: &Witnessd) -> String {
    crate::harness::wait_until(
        "the metrics listener",
        std::time::Duration::from_secs(20),
        || daemon.log().contains("serving metrics at http://"),
    );
    daemon
        .log()
        .rsplit("serving metrics at ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned()
}

fn scrape(url: &str) -> prometheus_parse::Scrape {
    let body = ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, want)| sample.labels.get(key) == Some(*want))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match found.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

/// The daemon's budget warnings, as (budget, period start, threshold), in log order.
fn warnings(db: &Path) -> Vec<(String, i64, f64)> {
    read_db(db)
        .prepare(
            "SELECT json_extract(payload, '$.budget'), json_extract(payload, '$.period_start_ns'), \
             json_extract(payload, '$.threshold') FROM entries WHERE event = 'witness.budget' \
             AND component = 'witnessd' AND pid IS NOT NULL ORDER BY seq",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn budgets_json(daemon: &Witnessd) -> Value {
    let (code, out, err) = witness(&daemon.socket, &["budgets", "--json"], None);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_budget_warns_once_per_threshold_across_a_restart_and_anew_in_the_next_period() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[budget]]\nname = \"daily\"\nperiod = \"day\"\nlimit_usd = 0.001\nwarn_at = [0.5, 1.0]\n\
         [[budget]]\nname = \"other-model\"\nperiod = \"month\"\nlimit_usd = 5\nmodel = \"m-2\"\n",
    );
    let args = [
        "--config",
        config.as_str(),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let daemon = Witnessd::start(dir.path(), &args);
    let (today, _) =
        witness_daemon::config::check_budgets(&[witness_daemon::config::BudgetSettings {
            name: "x".into(),
            period: "day".into(),
            limit_usd: 1.0,
            ..Default::default()
        }])
        .unwrap()[0]
            .period_at(witness_daemon::format::row::now_ns());
    let spend = |daemon: &Witnessd, micro_usd: u64, date: Option<i64>| {
        let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
        let mut entry = Entry::new("llm.call", "agent").cost(
            Cost::new(10, 10, micro_usd)
                .model("m-1")
                .cache_write_tokens(4),
        );
        entry.client_ts = date;
        client.log(entry).unwrap();
    };
    let spent_seen = |daemon: &Witnessd, micro: u64| {
        crate::harness::wait_until(
            "the watcher sees the spend",
            std::time::Duration::from_secs(30),
            || budgets_json(daemon)["budgets"][0]["spent_micro_usd"] == micro,
        );
    };
    // Yesterday's spend is another period's: it counts for nothing today.
    spend(&daemon, 5000, Some(today - 3_600_000_000_000));
    // And a warning of yesterday's period does not silence today's.
    let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
    client
        .log(
            Entry::new("witness.budget", "witnessd").payload(serde_json::json!({
                "budget": "daily", "period_start_ns": today - 86_400_000_000_000, "threshold": 0.5
            })),
        )
        .unwrap();
    spend(&daemon, 300, None);
    spend(&daemon, 300, None);
    spent_seen(&daemon, 600);
    let today_warnings = |db: &Path| {
        warnings(db)
            .into_iter()
            .filter(|(_, start, _)| *start == today)
            .collect::<Vec<_>>()
    };
    crate::harness::wait_until(
        "the half-way warning",
        std::time::Duration::from_secs(30),
        || today_warnings(&daemon.db).len() == 1,
    );
    assert_eq!(
        today_warnings(&daemon.db),
        vec![("daily".into(), today, 0.5)]
    );
    spend(&daemon, 500, None);
    crate::harness::wait_until(
        "the limit's warning",
        std::time::Duration::from_secs(30),
        || today_warnings(&daemon.db).len() == 2,
    );
    // Another look after both: nothing more is said.
    spend(&daemon, 1, None);
    spent_seen(&daemon, 1101);
    assert_eq!(today_warnings(&daemon.db).len(), 2);
    let report = &budgets_json(&daemon)["budgets"][0];
    assert_eq!(report["crossed"], serde_json::json!([0.5, 1.0]));
    assert_eq!(report["limit_micro_usd"], 1000);
    assert!(
        daemon.log().contains("budget threshold crossed"),
        "{}",
        daemon.log()
    );

    // The metrics: spend by component and model, tokens by type, the budgets.
    let url = metrics_url(&daemon);
    let metrics = scrape(&url);
    assert_eq!(
        value(
            &metrics,
            "witness_llm_cost_usd_total",
            &[("component", "agent"), ("model", "m-1")]
        ),
        (5000 + 300 + 300 + 500 + 1) as f64 / 1e6
    );
    assert_eq!(
        value(
            &metrics,
            "witness_llm_tokens_total",
            &[("model", "m-1"), ("type", "cache_write")]
        ),
        20.0
    );
    assert_eq!(
        value(&metrics, "witness_budget_spent_usd", &[("budget", "daily")]),
        0.001101
    );
    assert_eq!(
        value(&metrics, "witness_budget_limit_usd", &[("budget", "daily")]),
        0.001
    );
    assert!(value(&metrics, "witness_budget_ratio", &[("budget", "daily")]) > 1.1);
    assert_eq!(
        value(
            &metrics,
            "witness_budget_spent_usd",
            &[("budget", "other-model")]
        ),
        0.0
    );

    // A restart says nothing again.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    std::fs::remove_file(dir.path().join("witnessd.log")).unwrap();
    let daemon = Witnessd::start(dir.path(), &args);
    spend(&daemon, 1, None);
    spent_seen(&daemon, 1102);
    assert_eq!(today_warnings(&daemon.db).len(), 2);
    // A name that would break the exposition is escaped there.
    let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
    client
        .log(Entry::new("llm.call", "agent").cost(Cost::new(1, 1, 1).model("evil\"} 1\nx")))
        .unwrap();
    let url = metrics_url(&daemon);
    let body = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        body.contains(
            r#"witness_llm_cost_usd_total{component="agent",model="evil\"} 1\nx"} 0.000001"#
        ),
        "{body}"
    );
    // Every line is still a comment or a sample of witness's own families.
    assert!(
        body.lines()
            .all(|line| line.starts_with("# ") || line.starts_with("witness_")),
        "{body}"
    );
    scrape(&url);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
}

#[test]
fn garbage_budgets_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    for (settings, named) in [
        (
            "[[budget]]\nname = \"b\"\nperiod = \"year\"\nlimit_usd = 1\n",
            "budget[0].period",
        ),
        (
            "[[budget]]\nname = \"b\"\nperiod = \"day\"\nlimit_usd = -1\n",
            "budget[0].limit_usd",
        ),
        ("[[budget]]\nname = \"b\"\nperiod = \"day\"\n", "limit_usd"),
        (
            "[[budget]]\nname = \"b\"\nperiod = \"day\"\nlimit_usd = 1\ntime_zone = \"Nowhere/Else\"\n",
            "budget[0].time_zone",
        ),
        (
            "[[budget]]\nname = \"b\"\nperiod = \"day\"\nlimit_usd = 1\ncolour = 1\n",
            "colour",
        ),
    ] {
        let config = write_config(dir.path(), settings);
        let output = std::process::Command::new(binary("witnessd"))
            .args(["--config", &config, "--check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{settings}");
        assert!(stderr.contains(named), "{settings}: {stderr}");
    }
}
