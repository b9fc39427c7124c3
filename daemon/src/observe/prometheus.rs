//! A stats report in the Prometheus text exposition format (version 0.0.4), for the metrics
//! endpoint. Every series is named here, once, with its type and help text.

use std::fmt::Write as _;

use witness_protocol::admin::StatsReport;

/// A report in the Prometheus text exposition format. Distributions are summaries: quantiles
/// over the report's window, and the window's count.
pub fn prometheus(report: &StatsReport) -> String {
    let mut out = String::with_capacity(4096);
    let plain = |value: u64| vec![(String::new(), value.to_string())];
    metric(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        &[(
            String::new(),
            format!("{:.3}", report.uptime_ms as f64 / 1000.0),
        )],
    );
    metric(
        &mut out,
        "entries_committed_total",
        "counter",
        "Entries committed since start.",
        &plain(report.entries_total),
    );
    metric(
        &mut out,
        "entries_per_second",
        "gauge",
        "Entries committed per second over the last ten seconds.",
        &[(String::new(), format!("{:.1}", report.entries_per_sec))],
    );
    for (name, kind, help, value) in [
        (
            "last_seq",
            "gauge",
            "The last committed sequence number.",
            report.last_seq,
        ),
        (
            "batches_committed_total",
            "counter",
            "Transactions committed since start.",
            report.batches_total,
        ),
        (
            "batches_failed_total",
            "counter",
            "Transactions rolled back since start.",
            report.batches_failed,
        ),
        (
            "queue_depth",
            "gauge",
            "Entries accepted and not yet committed.",
            report.queue_depth,
        ),
        (
            "queue_capacity",
            "gauge",
            "Entries the queue holds before producers are slowed.",
            report.queue_capacity,
        ),
    ] {
        metric(&mut out, name, kind, help, &plain(value));
    }
    for (name, help, percentiles) in [
        (
            "batch_entries",
            "Entries per committed transaction, last one to two minutes.",
            &report.batch_entries,
        ),
        (
            "commit_microseconds",
            "Time to write and commit a transaction, last one to two minutes.",
            &report.commit_us,
        ),
        (
            "ack_microseconds",
            "Time from reading an append to sending Committed, last one to two minutes.",
            &report.ack_us,
        ),
    ] {
        let samples: Vec<(String, String)> = [
            ("0.5", percentiles.p50),
            ("0.9", percentiles.p90),
            ("0.99", percentiles.p99),
            ("0.999", percentiles.p999),
            ("1", percentiles.max),
        ]
        .into_iter()
        .map(|(quantile, value)| (format!("{{quantile=\"{quantile}\"}}"), value.to_string()))
        .collect();
        metric(&mut out, name, "summary", help, &samples);
        // The suffixed series of a summary belong to it, under no HELP or TYPE of their own.
        let _ = writeln!(out, "witness_{name}_count {}", percentiles.count);
    }
    for (name, kind, help, value) in [
        (
            "connections",
            "gauge",
            "Connections open now.",
            report.connections,
        ),
        (
            "connections_max",
            "gauge",
            "The most connections open at once since start.",
            report.connections_max,
        ),
        (
            "connections_accepted_total",
            "counter",
            "Connections accepted since start.",
            report.connections_total,
        ),
    ] {
        metric(&mut out, name, kind, help, &plain(value));
    }
    let rejections: Vec<(String, String)> = report
        .rejections
        .iter()
        .map(|(reason, count)| (format!("{{reason=\"{reason}\"}}"), count.to_string()))
        .collect();
    metric(
        &mut out,
        "rejections_total",
        "counter",
        "Requests refused since start, by reason.",
        &rejections,
    );
    for (name, help, value) in [
        (
            "database_bytes",
            "Size of the database file.",
            report.db_bytes,
        ),
        (
            "wal_bytes",
            "Size of the write-ahead log.",
            report.wal_bytes,
        ),
        (
            "resident_memory_bytes",
            "Resident memory of the daemon.",
            report.rss_bytes,
        ),
        (
            "resident_memory_peak_bytes",
            "Peak resident memory of the daemon.",
            report.rss_peak_bytes,
        ),
    ] {
        metric(&mut out, name, "gauge", help, &plain(value));
    }
    metric(
        &mut out,
        "disk_free_bytes",
        "gauge",
        "Bytes free on the file system that holds the database.",
        &plain(report.disk_free_bytes),
    );
    metric(
        &mut out,
        "disk_low",
        "gauge",
        "1 while new entries are refused because free space is under min_free_bytes, else 0.",
        &plain(u64::from(report.disk_low.is_some())),
    );
    metric(
        &mut out,
        "first_seq",
        "gauge",
        "The first seq the live log holds: 1 until retention pruned it.",
        &plain(report.first_seq),
    );
    metric(
        &mut out,
        "pruned_entries_total",
        "counter",
        "Entries pruned from the live log since start, archived or dropped.",
        &plain(report.entries_pruned),
    );
    metric(
        &mut out,
        "prune_seconds_total",
        "counter",
        "Seconds the writer spent deleting pruned entries since start.",
        &[(String::new(), format!("{:.3}", report.prune_seconds))],
    );
    if let Some(days) = report.disk_days_left {
        metric(
            &mut out,
            "disk_days_left",
            "gauge",
            "Days until free space falls to min_free_bytes at the current rate of entries.",
            &[(String::new(), format!("{days:.2}"))],
        );
    }
    if let Some(forward) = &report.forward {
        let state = forward.state.as_str();
        for (name, kind, help, value) in [
            (
                "forward_up",
                "gauge",
                "1 while the forwarder reaches the fleet's PostgreSQL and ships, else 0.",
                u64::from(state == "forwarding"),
            ),
            (
                "forward_refused",
                "gauge",
                "1 once the fleet's PostgreSQL refuses this host's log, else 0.",
                u64::from(state.starts_with("refused")),
            ),
            (
                "forward_seq",
                "gauge",
                "The last sequence number the fleet's PostgreSQL holds.",
                forward.forwarded_seq,
            ),
            (
                "forward_lag_entries",
                "gauge",
                "Entries committed here and not yet in the fleet's PostgreSQL.",
                forward.lag_entries,
            ),
            (
                "forward_entries_total",
                "counter",
                "Entries forwarded since start.",
                forward.entries_total,
            ),
            (
                "forward_batches_total",
                "counter",
                "Batches committed in the fleet's PostgreSQL since start.",
                forward.batches_total,
            ),
            (
                "forward_errors_total",
                "counter",
                "Failed connections or batches of the forwarder since start.",
                forward.errors_total,
            ),
        ] {
            metric(&mut out, name, kind, help, &plain(value));
        }
        metric(
            &mut out,
            "forward_lag_seconds",
            "gauge",
            "Seconds the oldest entry not yet forwarded has waited.",
            &[(String::new(), format!("{:.3}", forward.lag_seconds))],
        );
    }
    out
}

/// One metric family: its help and type lines, then its samples (labels, value).
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP witness_{name} {help}");
    let _ = writeln!(out, "# TYPE witness_{name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "witness_{name}{labels} {value}");
    }
}
