//! Medians of several runs, and the Markdown table of BENCHMARKS.md.

use super::*;

pub(crate) use witness_bench::median;

/// Per workload, the median of each figure over the runs (ratios are taken within a run,
/// then their median).
pub(crate) fn medians(runs: &[Vec<Measurement>]) -> Vec<Measurement> {
    let first = &runs[0];
    first
        .iter()
        .enumerate()
        .map(|(index, template)| {
            let of = |pick: &dyn Fn(&Measurement) -> Option<f64>| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|run| run.get(index))
                    .filter_map(pick)
                    .collect();
                (!values.is_empty()).then(|| median(values))
            };
            Measurement {
                name: template.name.clone(),
                processes: template.processes,
                entries: template.entries,
                seconds: of(&|m| Some(m.seconds)).unwrap_or(0.0),
                entries_per_second: of(&|m| Some(m.entries_per_second)).unwrap_or(0.0),
                latency_us: std::array::from_fn(|q| of(&|m| Some(m.latency_us[q])).unwrap_or(0.0)),
                daemon_cpu_percent: of(&|m| m.daemon_cpu_percent),
                daemon_peak_rss_mb: of(&|m| m.daemon_peak_rss_mb),
                vs_ceiling: of(&|m| m.vs_ceiling),
                vs_direct: of(&|m| m.vs_direct),
                flooder_per_second: of(&|m| m.flooder_per_second),
                mean_batch: of(&|m| m.mean_batch),
            }
        })
        .collect()
}

pub(crate) fn markdown(rows: &[Measurement], runs: usize, quick: bool) -> String {
    let mut out = format!(
        "Medians of {runs} run(s){}; durability synchronous=FULL everywhere; latency in µs \
         (per call; open loop from the intended send time).\n\n\
         | workload | entries | entries/s | × ceiling | × direct-8 | p50 | p90 | p99 | p99.9 | max | daemon CPU | daemon peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        if quick { ", --quick" } else { "" }
    );
    let ratio = |value: Option<f64>| value.map_or("".into(), |v| format!("{v:.2}"));
    for row in rows {
        let [p50, p90, p99, p999, max] = row.latency_us;
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {p50:.1} | {p90:.1} | {p99:.1} | {p999:.1} | {max:.0} | {} | {} |\n",
            row.name,
            row.entries,
            row.entries_per_second,
            ratio(row.vs_ceiling),
            ratio(row.vs_direct),
            row.daemon_cpu_percent.map_or("".into(), |v| format!("{v:.0}%")),
            row.daemon_peak_rss_mb.map_or("".into(), |v| format!("{v:.1} MB")),
        ));
    }
    for row in rows {
        if let (Some(flooder), Some(batch)) = (row.flooder_per_second, row.mean_batch) {
            out.push_str(&format!(
                "\n`{}`: the flooder committed {flooder:.0} entries/s meanwhile, in \
                 transactions of {batch:.1} entries on average (all lanes).\n",
                row.name
            ));
        }
    }
    out
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
