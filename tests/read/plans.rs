//! Query plans: every query of the read side uses an index.

use super::*;

/// Runs `operation` and returns the query plans of the statements it ran on `entries`.
fn plans(
    connection: &mut rusqlite::Connection,
    operation: impl FnOnce(&rusqlite::Connection),
) -> Vec<(String, String)> {
    use rusqlite::trace::{TraceEvent, TraceEventCodes};
    let traced = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&traced);
    connection
        .trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(move |event: TraceEvent<'_>| {
                if let TraceEvent::Stmt(statement, _) = event {
                    // With the parameters written in, so that the plan is of the real values.
                    let sql = statement
                        .expanded_sql()
                        .unwrap_or_else(|| statement.sql().into());
                    sink.lock().unwrap().push(sql);
                }
            }),
        )
        .unwrap();
    operation(connection);
    connection
        .trace_v2(TraceEventCodes::empty(), None::<fn(TraceEvent<'_>)>)
        .unwrap();
    let statements = std::mem::take(&mut *traced.lock().unwrap());
    statements
        .into_iter()
        .filter(|sql| sql.contains("FROM entries") || sql.contains("FROM cost_hourly"))
        .map(|sql| {
            let plan: Vec<String> = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |row| row.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (sql, plan.join(" | "))
        })
        .collect()
}

#[test]
fn every_query_uses_an_index_rather_than_a_full_scan() {
    use witness_daemon::read;
    let daemon = TestDaemon::start();
    feed(&daemon, 2000);
    let mut connection = witness_daemon::format::schema::open_reader(&daemon.db).unwrap();
    let entries = |filter: Filter| {
        move |connection: &rusqlite::Connection| {
            read::newest_cursor(connection, &filter, 100).unwrap();
            read::entries_page(connection, &filter, 100).unwrap();
        }
    };
    let cost = |by, since: Option<i64>| {
        move |connection: &rusqlite::Connection| {
            let query = CostQuery {
                model: None,
                event: None,
                by,
                since,
                until: since.map(|since| since + 5_000_000_000_000),
                component: None,
                offset: 0,
                limit: 10,
            };
            read::cost(connection, &query).unwrap();
        }
    };
    let now = 1_800_000_000_000_000_000;
    // (what, operation, the index each statement on entries must name)
    type Operation = Box<dyn FnOnce(&rusqlite::Connection)>;
    let cases: Vec<(&str, Operation, &str)> = vec![
        (
            "tail",
            Box::new(entries(Filter::default())),
            "INTEGER PRIMARY KEY",
        ),
        (
            "tail --component",
            Box::new(entries(Filter {
                component: Some("billing".into()),
                ..Filter::default()
            })),
            "entries_by_component",
        ),
        (
            "tail --event",
            Box::new(entries(Filter {
                event: Some("llm_call".into()),
                ..Filter::default()
            })),
            "entries_by_event",
        ),
        (
            "tail --trace",
            Box::new(entries(Filter {
                trace_id: Some("req-5".into()),
                ..Filter::default()
            })),
            "entries_by_trace",
        ),
        (
            "tail --since",
            Box::new(entries(Filter {
                since: Some(now),
                ..Filter::default()
            })),
            "entries_by_ts",
        ),
        (
            "trace",
            Box::new(|connection: &rusqlite::Connection| {
                let query = TraceQuery {
                    trace_id: "req-5".into(),
                    after_seq: None,
                    limit: 100,
                };
                read::trace(connection, &query).unwrap();
            }),
            "entries_by_trace",
        ),
        (
            "traces --component",
            Box::new(|connection: &rusqlite::Connection| {
                let query = TracesQuery {
                    until: None,
                    since: None,
                    component: Some("search".into()),
                    before_seq: None,
                    limit: 10,
                };
                read::traces(connection, &query).unwrap();
            }),
            "entries_by_",
        ),
        (
            "cost --by component",
            Box::new(cost(GroupBy::Component, None)),
            "cost_hourly",
        ),
        (
            "cost --by model --since",
            Box::new(cost(GroupBy::Model, Some(now + 17))),
            "entries_by_ts",
        ),
    ];
    for (what, operation, index) in cases {
        let plans = plans(&mut connection, operation);
        assert!(!plans.is_empty(), "{what}: no statement traced");
        for (sql, plan) in plans {
            // A scan in `seq` order under a LIMIT reads only what it returns; the only other
            // scan allowed is of the small cost_hourly table.
            let scans_entries = plan
                .split(" | ")
                .any(|step| step.starts_with("SCAN entries") && !step.contains("INDEX"));
            let bounded = sql.contains("ORDER BY seq") && sql.contains("LIMIT");
            let traced_walk = sql.contains("SELECT trace_id FROM entries");
            assert!(
                !scans_entries || bounded || traced_walk,
                "{what}: full scan\n{sql}\n{plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE FOR ORDER BY")
                    || sql.contains("cost_hourly")
                    || sql.contains("GROUP BY"),
                "{what}: sorts\n{sql}\n{plan}"
            );
            if sql.contains("FROM entries WHERE")
                && !sql.contains("ORDER BY seq DESC LIMIT")
                && index != "cost_hourly"
            {
                assert!(
                    plan.contains(index)
                        || plan.contains("INTEGER PRIMARY KEY")
                        || plan.contains("entries_by_"),
                    "{what}: expected {index}\n{sql}\n{plan}"
                );
            }
            if index == "cost_hourly" {
                assert!(
                    !sql.contains("FROM entries") || sql.contains("ts >="),
                    "{what}: reads entries\n{sql}"
                );
            }
        }
    }
}
