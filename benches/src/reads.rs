//! `witness-bench --reads`: how fast the read side answers over the socket with a million
//! entries in the database, idle and while eight processes ingest at full speed, and how much
//! ingest slows while it answers.

use std::time::Instant;

use hdrhistogram::Histogram;
use witness_client::Client;
use witness_client::query::{CostQuery, EntriesQuery, Filter, GroupBy, TraceQuery, TracesQuery};

use crate::generate::Rng;
use crate::load::histogram;

/// One query measured many times.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryFigures {
    /// What was asked, as on the command line.
    pub name: String,
    /// Whether eight processes were ingesting meanwhile.
    pub under_ingest: bool,
    /// Calls made.
    pub calls: u64,
    /// p50, p90, p99 and max, in milliseconds.
    pub latency_ms: [f64; 4],
}

/// The queries, in the order measured: each takes a client and a random source, and says
/// how many times to run.
type Query = (
    &'static str,
    u64,
    Box<dyn Fn(&mut Client, &mut Rng, &[String]) -> anyhow::Result<()>>,
);

fn queries() -> Vec<Query> {
    vec![
        (
            "prove SEQ",
            1000,
            Box::new(|client, rng, _| {
                // Any entry of the first 90,000, which every run loads and a checkpoint
                // covers by the time queries start: a proof's cost depends on the tree's
                // size, not on the entry's place.
                let bundle = client.prove(1 + rng.below(90_000))?;
                anyhow::ensure!(bundle.starts_with("c2sp.org/tlog-proof@v1"), "{bundle}");
                Ok(())
            }),
        ),
        (
            "trace ID",
            200,
            Box::new(|client, rng, traces| {
                let trace_id = traces[rng.below(traces.len() as u64) as usize].clone();
                let report = client.trace(TraceQuery {
                    trace_id,
                    after_seq: None,
                    limit: 1000,
                })?;
                anyhow::ensure!(report.summary.is_some(), "trace not found");
                Ok(())
            }),
        ),
        (
            "tail -n 100",
            200,
            Box::new(|client, _, _| {
                let query = EntriesQuery {
                    newest: Some(100),
                    ..EntriesQuery::default()
                };
                let n = client.entries(query)?.count();
                anyhow::ensure!(n == 100, "{n} entries");
                Ok(())
            }),
        ),
        (
            "tail -n 100 --component planner",
            200,
            Box::new(|client, _, _| {
                let filter = Filter {
                    component: Some("planner".into()),
                    ..Filter::default()
                };
                let query = EntriesQuery {
                    filter,
                    newest: Some(100),
                    ..EntriesQuery::default()
                };
                let n = client.entries(query)?.count();
                anyhow::ensure!(n == 100, "{n} entries");
                Ok(())
            }),
        ),
        (
            "traces -n 20",
            100,
            Box::new(|client, _, _| {
                let query = TracesQuery {
                    until: None,
                    since: None,
                    component: None,
                    before_seq: None,
                    limit: 20,
                };
                client.traces(query)?;
                Ok(())
            }),
        ),
        (
            "cost --by component",
            50,
            Box::new(|client, _, _| {
                let query = cost(GroupBy::Component, None);
                client.cost(query)?;
                Ok(())
            }),
        ),
        (
            "cost --by model --since 30m",
            50,
            Box::new(|client, _, _| {
                let since = now_ns() - 30 * 60 * 1_000_000_000;
                client.cost(cost(GroupBy::Model, Some(since)))?;
                Ok(())
            }),
        ),
    ]
}

fn cost(by: GroupBy, since: Option<i64>) -> CostQuery {
    CostQuery {
        model: None,
        event: None,
        by,
        since,
        until: None,
        component: None,
        offset: 0,
        limit: 100,
    }
}

fn now_ns() -> i64 {
    crate::load::now_ns() as i64
}

/// Trace ids spread over the whole log, found by reading one entry at random places.
pub fn sample_traces(client: &mut Client, last_seq: u64, n: usize) -> anyhow::Result<Vec<String>> {
    let mut rng = Rng::new(99);
    let mut traces = Vec::new();
    while traces.len() < n {
        let after = rng.below(last_seq.max(1));
        let query = EntriesQuery {
            filter: Filter {
                after_seq: Some(after),
                ..Filter::default()
            },
            limit: Some(1),
            ..EntriesQuery::default()
        };
        if let Some(entry) = client.entries(query)?.next() {
            traces.extend(entry?.entry.trace_id);
        }
    }
    Ok(traces)
}

/// Runs every query its number of times and returns the figures.
pub fn measure(
    socket: &std::path::Path,
    traces: &[String],
    under_ingest: bool,
) -> anyhow::Result<Vec<QueryFigures>> {
    let mut client = Client::connect(socket)?;
    let mut rng = Rng::new(7);
    let mut figures = Vec::new();
    for (name, calls, query) in queries() {
        let mut latencies: Histogram<u64> = histogram();
        for _ in 0..calls {
            let started = Instant::now();
            query(&mut client, &mut rng, traces)?;
            latencies.record(started.elapsed().as_nanos() as u64).ok();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        figures.push(QueryFigures {
            name: name.to_owned(),
            under_ingest,
            calls,
            latency_ms: [
                ms(latencies.value_at_quantile(0.5)),
                ms(latencies.value_at_quantile(0.9)),
                ms(latencies.value_at_quantile(0.99)),
                ms(latencies.max()),
            ],
        });
    }
    Ok(figures)
}
