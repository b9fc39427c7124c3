//! A stats report in the Prometheus text exposition format (version 0.0.4), for the metrics
//! endpoint. Every series is named here, once, with its type and help text.
//!
//! Written here rather than through the `prometheus-client` crate: that crate has no summary
//! type (its `MetricType` lists Summary as not yet supported) and writes only OpenMetrics, so
//! the latency series, which are summaries over the writer's window, could not keep their
//! names and types. What is hand-written is the exposition's syntax alone, in `Families`.

use std::fmt::Write as _;

use witness_protocol::admin::{Percentiles, StatsReport};

/// A report in the Prometheus text exposition format. Distributions are summaries: quantiles
/// over the report's window, and the window's count.
pub fn prometheus(report: &StatsReport) -> String {
    let mut out = Families::default();
    out.gauge_f(
        "uptime_seconds",
        "Seconds since the daemon started.",
        report.uptime_ms as f64 / 1000.0,
        3,
    );
    out.counter(
        "entries_committed_total",
        "Entries committed since start.",
        report.entries_total,
    );
    out.gauge_f(
        "entries_per_second",
        "Entries committed per second over the last ten seconds.",
        report.entries_per_sec,
        1,
    );
    out.gauge(
        "last_seq",
        "The last committed sequence number.",
        report.last_seq,
    );
    out.counter(
        "batches_committed_total",
        "Transactions committed since start.",
        report.batches_total,
    );
    out.counter(
        "batches_failed_total",
        "Transactions rolled back since start.",
        report.batches_failed,
    );
    out.gauge(
        "queue_depth",
        "Entries accepted and not yet committed.",
        report.queue_depth,
    );
    out.gauge(
        "queue_capacity",
        "Entries the queue holds before producers are slowed.",
        report.queue_capacity,
    );
    out.summary(
        "batch_entries",
        "Entries per committed transaction, last one to two minutes.",
        &report.batch_entries,
    );
    out.summary(
        "commit_microseconds",
        "Time to write and commit a transaction, last one to two minutes.",
        &report.commit_us,
    );
    out.summary(
        "ack_microseconds",
        "Time from reading an append to sending Committed, last one to two minutes.",
        &report.ack_us,
    );
    out.gauge("connections", "Connections open now.", report.connections);
    out.gauge(
        "connections_max",
        "The most connections open at once since start.",
        report.connections_max,
    );
    out.counter(
        "connections_accepted_total",
        "Connections accepted since start.",
        report.connections_total,
    );
    out.family(
        "rejections_total",
        "counter",
        "Requests refused since start, by reason.",
    );
    for (reason, count) in &report.rejections {
        out.sample(
            "rejections_total",
            &format!("{{reason=\"{reason}\"}}"),
            count,
        );
    }
    out.gauge(
        "database_bytes",
        "Size of the database file.",
        report.db_bytes,
    );
    out.gauge(
        "wal_bytes",
        "Size of the write-ahead log.",
        report.wal_bytes,
    );
    out.gauge(
        "resident_memory_bytes",
        "Resident memory of the daemon.",
        report.rss_bytes,
    );
    out.gauge(
        "resident_memory_peak_bytes",
        "Peak resident memory of the daemon.",
        report.rss_peak_bytes,
    );
    out.gauge(
        "disk_free_bytes",
        "Bytes free on the file system that holds the database.",
        report.disk_free_bytes,
    );
    out.gauge(
        "disk_low",
        "1 while new entries are refused because free space is under min_free_bytes, else 0.",
        u64::from(report.disk_low.is_some()),
    );
    out.gauge(
        "first_seq",
        "The first seq the live log holds: 1 until retention pruned it.",
        report.first_seq,
    );
    out.counter(
        "pruned_entries_total",
        "Entries pruned from the live log since start, archived or dropped.",
        report.entries_pruned,
    );
    out.family(
        "prune_seconds_total",
        "counter",
        "Seconds the writer spent deleting pruned entries since start.",
    );
    out.sample(
        "prune_seconds_total",
        "",
        format!("{:.3}", report.prune_seconds),
    );
    if let Some(days) = report.disk_days_left {
        out.gauge_f(
            "disk_days_left",
            "Days until free space falls to min_free_bytes at the current rate of entries.",
            days,
            2,
        );
    }
    if let Some(forward) = &report.forward {
        let state = forward.state.as_str();
        out.gauge(
            "forward_up",
            "1 while the forwarder reaches the fleet's PostgreSQL and ships, else 0.",
            u64::from(state == "forwarding"),
        );
        out.gauge(
            "forward_refused",
            "1 once the fleet's PostgreSQL refuses this host's log, else 0.",
            u64::from(state.starts_with("refused")),
        );
        out.gauge(
            "forward_seq",
            "The last sequence number the fleet's PostgreSQL holds.",
            forward.forwarded_seq,
        );
        out.gauge(
            "forward_lag_entries",
            "Entries committed here and not yet in the fleet's PostgreSQL.",
            forward.lag_entries,
        );
        out.counter(
            "forward_entries_total",
            "Entries forwarded since start.",
            forward.entries_total,
        );
        out.counter(
            "forward_batches_total",
            "Batches committed in the fleet's PostgreSQL since start.",
            forward.batches_total,
        );
        out.counter(
            "forward_errors_total",
            "Failed connections or batches of the forwarder since start.",
            forward.errors_total,
        );
        out.gauge_f(
            "forward_lag_seconds",
            "Seconds the oldest entry not yet forwarded has waited.",
            forward.lag_seconds,
            3,
        );
    }
    out.text
}

/// The OTLP receiver's families, for a daemon with an OTLP listener: requests, the items
/// they held, the items refused one by one, and the requests answered with anything but a
/// 200.
pub fn otlp(stats: &crate::stats::OtlpStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Families::default();
    out.counter(
        "otlp_requests_total",
        "OTLP export requests received since start.",
        stats.requests.load(Relaxed),
    );
    out.counter(
        "otlp_items_total",
        "Spans and log records in the OTLP requests that decoded, since start.",
        stats.items.load(Relaxed),
    );
    out.counter(
        "otlp_items_rejected_total",
        "Spans and log records refused one by one (partial_success) since start.",
        stats.rejected.load(Relaxed),
    );
    out.counter(
        "otlp_requests_refused_total",
        "OTLP requests answered with a status other than 200 since start.",
        stats.refused.load(Relaxed),
    );
    out.text
}

/// The spend families: money and tokens of the committed entries that carry a cost, since
/// start, by component and model (at most `stats::MAX_SPEND_SERIES` pairs; the rest under
/// `(other)`). Money counts the priced entries; `llm_unpriced_entries_total` the others.
pub fn spend(series: &[((String, String), crate::format::cost::CostSums)]) -> String {
    let mut out = Families::default();
    let labels = |component: &str, model: &str| {
        format!(
            "component=\"{}\",model=\"{}\"",
            label_value(component),
            label_value(model)
        )
    };
    out.family(
        "llm_cost_usd_total",
        "counter",
        "US dollars of the priced model calls committed since start.",
    );
    for ((component, model), sums) in series {
        let usd = format!(
            "{}.{:06}",
            sums.micro_usd / 1_000_000,
            sums.micro_usd % 1_000_000
        );
        out.sample(
            "llm_cost_usd_total",
            &format!("{{{}}}", labels(component, model)),
            usd,
        );
    }
    out.family(
        "llm_tokens_total",
        "counter",
        "Tokens of the model calls committed since start, by type: input (cache reads and \
         writes included), output (reasoning included), cache_read, cache_write, reasoning.",
    );
    for ((component, model), sums) in series {
        for (kind, value) in [
            ("input", sums.tokens_in),
            ("output", sums.tokens_out),
            ("cache_read", sums.cache_read_tokens),
            ("cache_write", sums.cache_write_tokens),
            ("reasoning", sums.reasoning_tokens),
        ] {
            out.sample(
                "llm_tokens_total",
                &format!("{{{},type=\"{kind}\"}}", labels(component, model)),
                value,
            );
        }
    }
    out.family(
        "llm_unpriced_entries_total",
        "counter",
        "Model calls committed since start that have tokens and no price.",
    );
    for ((component, model), sums) in series {
        out.sample(
            "llm_unpriced_entries_total",
            &format!("{{{}}}", labels(component, model)),
            sums.unpriced,
        );
    }
    out.text
}

/// The budget families: each budget's spend this period, its limit and their ratio, as the
/// watcher last found them; none without budgets.
pub fn budgets(reports: &[witness_protocol::admin::BudgetReport]) -> String {
    let mut out = Families::default();
    if reports.is_empty() {
        return out.text;
    }
    let usd = |micro: u64| format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    for (name, help, value) in [
        (
            "budget_spent_usd",
            "US dollars spent in the budget's current period (priced entries).",
            &(|report: &witness_protocol::admin::BudgetReport| usd(report.spent_micro_usd))
                as &dyn Fn(&witness_protocol::admin::BudgetReport) -> String,
        ),
        (
            "budget_limit_usd",
            "The budget's limit for its period, in US dollars.",
            &|report: &witness_protocol::admin::BudgetReport| usd(report.limit_micro_usd),
        ),
        (
            "budget_ratio",
            "Spent over limit in the budget's current period.",
            &|report: &witness_protocol::admin::BudgetReport| format!("{:.6}", report.ratio),
        ),
    ] {
        out.family(name, "gauge", help);
        for report in reports {
            out.sample(
                name,
                &format!("{{budget=\"{}\"}}", label_value(&report.name)),
                value(report),
            );
        }
    }
    out.text
}

/// A label value as the exposition format writes it: backslash, double quote and line feed
/// escaped, so that no name from an entry can end a label or a line.
fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// The exposition being written: metric families, each a HELP and a TYPE line and then its
/// samples, every name under the `witness_` prefix.
#[derive(Default)]
struct Families {
    text: String,
}

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP witness_{name} {help}");
        let _ = writeln!(self.text, "# TYPE witness_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "witness_{name}{labels} {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, "", value);
    }

    /// A gauge of a real number, with `decimals` after the point.
    fn gauge_f(&mut self, name: &str, help: &str, value: f64, decimals: usize) {
        self.family(name, "gauge", help);
        self.sample(name, "", format!("{value:.decimals$}"));
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, "", value);
    }

    /// A summary: quantiles of the writer's window, then its count, which belongs to the
    /// family under no HELP or TYPE of its own.
    fn summary(&mut self, name: &str, help: &str, percentiles: &Percentiles) {
        self.family(name, "summary", help);
        for (quantile, value) in [
            ("0.5", percentiles.p50),
            ("0.9", percentiles.p90),
            ("0.99", percentiles.p99),
            ("0.999", percentiles.p999),
            ("1", percentiles.max),
        ] {
            self.sample(name, &format!("{{quantile=\"{quantile}\"}}"), value);
        }
        let _ = writeln!(self.text, "witness_{name}_count {}", percentiles.count);
    }
}
