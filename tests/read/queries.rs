//! Every query of the read side checked against the same figure computed with SQL on the database file, and bad filters refused.

use super::*;

#[test]
fn trace_matches_sql_and_pages_with_its_cursor() {
    let daemon = TestDaemon::start();
    feed(&daemon, 600);
    // One long trace, to need several pages.
    let mut client = daemon.client();
    let long: Vec<Entry> = (0..2500)
        .map(|index| Entry::new("step", COMPONENTS[index % 2]).trace("long"))
        .collect();
    client.log_batch(long).unwrap();
    let db = read_db(&daemon.db);

    let report = client
        .trace(TraceQuery {
            trace_id: "req-7".into(),
            after_seq: None,
            limit: 1000,
        })
        .unwrap();
    let summary = report.summary.unwrap();
    let (count, first_seq, last_seq, usd, tokens_in): (i64, i64, i64, i64, i64) = db
        .query_row(
            "SELECT count(*), min(seq), max(seq), sum(coalesce(cost_micro_usd, 0)),
                    sum(coalesce(tokens_in, 0))
             FROM entries WHERE trace_id = 'req-7'",
            [],
            |row| row.try_into(),
        )
        .unwrap();
    assert_eq!(summary.entries, count as u64);
    assert_eq!(
        (summary.first_seq, summary.last_seq),
        (first_seq as u64, last_seq as u64)
    );
    assert_eq!(summary.micro_usd, usd as u64);
    assert_eq!(summary.tokens_in, tokens_in as u64);
    let components: Vec<String> = db
        .prepare("SELECT DISTINCT component FROM entries WHERE trace_id = 'req-7' ORDER BY 1")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(summary.components, components);
    assert!(summary.first_ts <= summary.last_ts);
    let seqs: Vec<u64> = report.entries.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs.len() as i64, count);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(report.next_after, None);

    let mut query = TraceQuery {
        trace_id: "long".into(),
        after_seq: None,
        limit: 1000,
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.trace(query.clone()).unwrap();
        pages += 1;
        seen.extend(page.entries.iter().map(|entry| entry.seq));
        match page.next_after {
            Some(next) => query.after_seq = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<u64> = (601..=3100).collect();
    assert_eq!(seen, expected);

    let missing = client
        .trace(TraceQuery {
            trace_id: "no-such-trace".into(),
            after_seq: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(missing.summary, None);
    assert!(missing.entries.is_empty());
}

#[test]
fn traces_come_by_last_activity_and_page_without_gaps_or_repeats() {
    let daemon = TestDaemon::start();
    feed(&daemon, 1000);
    let mut client = daemon.client();
    // Revive an old trace: it must move to the front.
    client
        .log(Entry::new("late", "billing").trace("req-3"))
        .unwrap();
    let db = read_db(&daemon.db);
    let expected: Vec<(String, u64)> = db
        .prepare(
            "SELECT trace_id, max(seq) AS last FROM entries WHERE trace_id IS NOT NULL
             GROUP BY trace_id ORDER BY last DESC",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(expected[0].0, "req-3");

    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let page = client
            .traces(TracesQuery {
                until: None,
                since: None,
                component: None,
                before_seq: before,
                limit: 7,
            })
            .unwrap();
        walked.extend(page.traces.iter().map(|t| (t.trace_id.clone(), t.last_seq)));
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, expected);

    let page = client
        .traces(TracesQuery {
            until: None,
            since: None,
            component: Some("search".into()),
            before_seq: None,
            limit: 10_000,
        })
        .unwrap();
    let with_search = sql_i64(
        &db,
        "SELECT count(DISTINCT trace_id) FROM entries WHERE component = 'search'",
        [],
    );
    assert_eq!(page.traces.len() as i64, with_search);
    assert!(
        page.traces
            .iter()
            .all(|t| t.components.contains(&"search".to_owned()))
    );
    let first = &page.traces[0];
    let usd = sql_i64(
        &db,
        "SELECT coalesce(sum(cost_micro_usd), 0) FROM entries WHERE trace_id = ?1",
        [&first.trace_id],
    );
    assert_eq!(first.micro_usd, usd as u64);

    let future = client
        .traces(TracesQuery {
            until: None,
            since: Some(i64::MAX / 2),
            component: None,
            before_seq: None,
            limit: 10,
        })
        .unwrap();
    assert!(future.traces.is_empty());
}

#[test]
fn tail_gives_the_newest_matching_entries_in_order() {
    let daemon = TestDaemon::start();
    feed(&daemon, 500);
    let mut client = daemon.client();
    let db = read_db(&daemon.db);
    let query = EntriesQuery {
        filter: Filter {
            event: Some("tool_call".into()),
            ..Filter::default()
        },
        newest: Some(25),
        ..EntriesQuery::default()
    };
    let entries = collect(client.entries(query).unwrap());
    let mut expected: Vec<u64> = db
        .prepare("SELECT seq FROM entries WHERE event = 'tool_call' ORDER BY seq DESC LIMIT 25")
        .unwrap()
        .query_map([], |row| Ok(row.get::<_, i64>(0)? as u64))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    expected.reverse();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), expected);
    assert!(entries.iter().all(|e| e.entry.event == "tool_call"));
    // What is stored comes back whole.
    let last = entries.last().unwrap();
    assert_eq!(last.entry, known_entry(last.seq as usize - 1));

    let everything = collect(
        client
            .entries(EntriesQuery {
                newest: Some(10_000),
                ..EntriesQuery::default()
            })
            .unwrap(),
    );
    assert_eq!(everything.len(), 500);

    let mut stream = client
        .entries(EntriesQuery {
            filter: Filter {
                after_seq: Some(100),
                ..Filter::default()
            },
            limit: Some(50),
            ..EntriesQuery::default()
        })
        .unwrap();
    let page = collect(stream.by_ref());
    assert_eq!(page.first().unwrap().seq, 101);
    assert_eq!(page.len(), 50);
    let end = stream.end().unwrap();
    assert_eq!(end.reason, EndReason::Limit);
    assert_eq!(end.next_after, Some(150));
}

#[test]
fn cost_by_every_grouping_matches_sql() {
    let daemon = TestDaemon::start();
    feed(&daemon, 3000);
    let mut client = daemon.client();
    let db = read_db(&daemon.db);
    for (by, column) in [
        (GroupBy::Component, "component"),
        (GroupBy::Model, "model"),
        (GroupBy::Event, "event"),
        (GroupBy::Trace, "trace_id"),
    ] {
        for component in [None, Some("billing")] {
            let report = client
                .cost(CostQuery {
                    model: None,
                    event: None,
                    by,
                    since: None,
                    until: None,
                    component: component.map(str::to_owned),
                    offset: 0,
                    limit: 10_000,
                })
                .unwrap();
            let filter = component.map_or(String::new(), |c| format!("WHERE component = '{c}'"));
            let expected: BTreeMap<Option<String>, [i64; 4]> = db
                .prepare(&format!(
                    "SELECT {column}, count(*), sum(coalesce(tokens_in, 0)),
                            sum(coalesce(tokens_out, 0)), sum(coalesce(cost_micro_usd, 0))
                     FROM entries {filter} GROUP BY 1"
                ))
                .unwrap()
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        [row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?],
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let got: BTreeMap<Option<String>, [i64; 4]> = report
                .rows
                .iter()
                .map(|row| {
                    let sums = [row.entries, row.tokens_in, row.tokens_out, row.micro_usd];
                    (row.key.clone(), sums.map(|n| n as i64))
                })
                .collect();
            assert_eq!(got, expected, "{by:?} {component:?}");
            assert_eq!(report.groups as usize, expected.len());
            let total: i64 = expected.values().map(|sums| sums[3]).sum();
            assert_eq!(report.total.micro_usd as i64, total);
            let entries: i64 = expected.values().map(|sums| sums[0]).sum();
            assert_eq!(report.total.entries as i64, entries);
            // Most expensive first.
            assert!(
                report
                    .rows
                    .windows(2)
                    .all(|w| w[0].micro_usd >= w[1].micro_usd)
            );
        }
    }
    // Paging by offset walks every group once.
    let mut keys = Vec::new();
    let mut offset = 0;
    loop {
        let page = client
            .cost(CostQuery {
                model: None,
                event: None,
                by: GroupBy::Trace,
                since: None,
                until: None,
                component: None,
                offset,
                limit: 40,
            })
            .unwrap();
        if page.rows.is_empty() {
            break;
        }
        offset += page.rows.len() as u64;
        keys.extend(page.rows.into_iter().map(|row| row.key));
    }
    let distinct = sql_i64(
        &db,
        "SELECT count(DISTINCT coalesce(trace_id, '')) FROM entries",
        [],
    );
    assert_eq!(keys.len() as i64, distinct);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len() as i64, distinct);
}

/// Drives the writer directly with chosen receive times spread over six hours, so that
/// windows cut hours at every kind of edge, and compares each report with a sum over the
/// raw entries.
#[test]
fn cost_windows_split_hours_exactly() {
    use witness_daemon::format::schema::HOUR_NS;
    use witness_daemon::read;
    use witness_daemon::store::job::{Job, Origin};
    use witness_daemon::store::writer::{WriterConfig, WriterHandle};

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("witness.db");
    let writer = WriterHandle::start(WriterConfig::new(db_path.clone()), None, None).unwrap();
    let base = 1_800_000_000 * 1_000_000_000 / HOUR_NS * HOUR_NS;
    let mut state: u64 = 7;
    let mut random = move |below: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % below
    };
    let queue = writer.queue();
    for index in 0..1200 {
        let ts = base + random(6 * HOUR_NS as u64) as i64;
        let job = Job::internal(
            vec![known_entry(index as usize)],
            Origin {
                ts,
                ..Origin::default()
            },
        );
        queue.push(1, Box::new(job)).unwrap();
    }
    writer.join();

    let connection = witness_daemon::format::schema::open_reader(&db_path).unwrap();
    let mut windows = vec![
        (None, None),
        (Some(base + HOUR_NS), Some(base + 3 * HOUR_NS)),
        (Some(base + HOUR_NS / 2), None),
        (None, Some(base + 4 * HOUR_NS + 17)),
        (
            Some(base + 2 * HOUR_NS + 5),
            Some(base + 2 * HOUR_NS + HOUR_NS / 3),
        ),
    ];
    for _ in 0..30 {
        let since = base + random(6 * HOUR_NS as u64) as i64;
        let until = since + 1 + random(4 * HOUR_NS as u64) as i64;
        windows.push((Some(since), Some(until)));
    }
    for (since, until) in windows {
        for by in [
            GroupBy::Component,
            GroupBy::Model,
            GroupBy::Event,
            GroupBy::Day,
            GroupBy::Hour,
        ] {
            let report = read::cost(
                &connection,
                &CostQuery {
                    model: None,
                    event: None,
                    by,
                    since,
                    until,
                    component: None,
                    offset: 0,
                    limit: 1000,
                },
            )
            .unwrap();
            // Periods computed with other SQLite functions than the daemon's.
            let column = match by {
                GroupBy::Component => "component",
                GroupBy::Model => "model",
                GroupBy::Day => "date(ts / 1000000000, 'unixepoch')",
                GroupBy::Hour => {
                    "replace(substr(datetime(ts / 1000000000, 'unixepoch'), 1, 13), ' ', 'T') \
                     || ':00Z'"
                }
                _ => "event",
            };
            let expected: BTreeMap<Option<String>, (i64, i64)> = connection
                .prepare(&format!(
                    "SELECT {column}, count(*), sum(coalesce(cost_micro_usd, 0)) FROM entries
                     WHERE ts >= ?1 AND ts < ?2 GROUP BY 1"
                ))
                .unwrap()
                .query_map([since.unwrap_or(0), until.unwrap_or(i64::MAX)], |row| {
                    Ok((row.get(0)?, (row.get(1)?, row.get(2)?)))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let got: BTreeMap<Option<String>, (i64, i64)> = report
                .rows
                .iter()
                .map(|row| (row.key.clone(), (row.entries as i64, row.micro_usd as i64)))
                .collect();
            assert_eq!(got, expected, "{by:?} from {since:?} to {until:?}");
            if matches!(by, GroupBy::Day | GroupBy::Hour) {
                let keys: Vec<&Option<String>> = report.rows.iter().map(|row| &row.key).collect();
                assert!(keys.is_sorted(), "{by:?} in time order: {keys:?}");
            }
        }
    }
}

#[test]
fn every_field_of_traces_and_cost_is_checked_as_the_protocol_says() {
    let daemon = TestDaemon::start();
    feed(&daemon, 5);
    let traces = |since, until| {
        Request::Traces(TracesQuery {
            since,
            until,
            component: None,
            before_seq: None,
            limit: 5,
        })
    };
    let cost = |event: Option<String>, model: Option<String>| {
        Request::Cost(CostQuery {
            model,
            event,
            by: GroupBy::Model,
            since: None,
            until: None,
            component: None,
            offset: 0,
            limit: 20,
        })
    };
    let long = "m".repeat(300);
    let requests = [
        (traces(None, Some(-1)), "until is before 1970"),
        (traces(Some(5), Some(5)), "since must be before until"),
        (traces(Some(9), Some(5)), "since must be before until"),
        (cost(Some(String::new()), None), "event filter is empty"),
        (cost(Some(long.clone()), None), "no stored event is longer"),
        (cost(None, Some(String::new())), "model filter is empty"),
        (cost(None, Some(long)), "no stored model is longer"),
    ];
    let mut raw = daemon.raw();
    for (id, (request, expected)) in requests.into_iter().enumerate() {
        raw.send(id as u64 + 1, request);
        match raw.recv().unwrap().response {
            Response::Error(reply) => {
                assert_eq!(reply.code, ErrorCode::BadRequest, "{expected}");
                assert!(reply.message.contains(expected), "{}", reply.message);
            }
            other => panic!("{expected}: answered {other:?}"),
        }
    }
}

#[test]
fn refused_proofs_are_counted_among_the_rejections() {
    let daemon = TestDaemon::start();
    feed(&daemon, 3);
    let mut raw = daemon.raw();
    raw.send(1, Request::Prove(999_999));
    raw.send(
        2,
        Request::Consistency {
            old: 50,
            new: Some(7),
        },
    );
    for _ in 0..2 {
        match raw.recv().unwrap().response {
            Response::Error(reply) => assert_eq!(reply.code, ErrorCode::BadRequest),
            other => panic!("answered {other:?}"),
        }
    }
    let stats = daemon.client().stats().unwrap();
    let bad = stats
        .rejections
        .iter()
        .find(|(code, _)| code == "BadRequest")
        .map_or(0, |(_, count)| *count);
    assert_eq!(bad, 2, "{:?}", stats.rejections);
}

#[test]
fn bad_filters_and_times_get_clear_errors() {
    let daemon = TestDaemon::start();
    feed(&daemon, 20);
    for (args, expected) in [
        (
            &["tail", "--since", "the day before"][..],
            "invalid time \"the day before\"",
        ),
        (&["tail", "--since", "5parsecs"], "unknown unit"),
        (
            &["cost", "--since", "1h", "--until", "2h"],
            "since must be before until",
        ),
        (&["cost", "--by", "colour"], "invalid value 'colour'"),
        (&["tail", "--component", ""], "component filter is empty"),
        (&["traces", "-n", "0"], "0 is not in 1..=10000"),
        (&["export", "--from", "9", "--to", "3"], "is empty"),
        (&["export", "--limit", "0"], "invalid value '0'"),
        (&["trace", ""], "trace id is empty"),
        (&["tail", "-n", "-3"], "unexpected argument"),
        (&["cost", "--since", "1960-01-01T00:00:00Z"], "before 1970"),
    ] {
        let (code, stdout, stderr) = witness(&daemon.socket, args, None);
        assert_ne!(code, 0, "{args:?} succeeded: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Periods group as people ask for them.
    for by in ["day", "hour"] {
        let (code, out, stderr) = witness(&daemon.socket, &["cost", "--by", by], None);
        assert_eq!(code, 0, "{by}: {stderr}");
        assert!(out.contains("(UTC)"), "{by}: {out}");
    }
    // What journalctl takes is taken.
    for since in [
        "yesterday",
        "today",
        "-5m",
        "2026-01-01",
        "2026-01-01 10:00",
    ] {
        let (code, _, stderr) = witness(&daemon.socket, &["tail", "--since", since], None);
        assert_eq!(code, 0, "{since}: {stderr}");
    }
    let long = "c".repeat(300);
    let (code, _, stderr) = witness(&daemon.socket, &["tail", "--component", &long], None);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no stored component is longer than 256"),
        "{stderr}"
    );

    // The same over the socket, with what the command line cannot send.
    let mut raw = daemon.raw();
    let requests = [
        Request::Trace(TraceQuery {
            trace_id: "t".into(),
            after_seq: None,
            limit: 0,
        }),
        Request::Traces(TracesQuery {
            until: None,
            since: Some(-5),
            component: None,
            before_seq: None,
            limit: 5,
        }),
        Request::Cost(CostQuery {
            model: None,
            event: None,
            by: GroupBy::Model,
            since: None,
            until: None,
            component: None,
            offset: 0,
            limit: 20_000,
        }),
        Request::Entries(EntriesQuery {
            limit: Some(0),
            ..EntriesQuery::default()
        }),
    ];
    for (id, request) in requests.into_iter().enumerate() {
        raw.send(id as u64 + 1, request);
        let frame = raw.recv().unwrap();
        assert_eq!(frame.id, id as u64 + 1);
        match frame.response {
            Response::Error(reply) => assert_eq!(reply.code, ErrorCode::BadRequest),
            other => panic!("request {id} answered {other:?}"),
        }
    }
    // The connection and the daemon are fine afterwards.
    raw.send(99, Request::Ping);
    assert_eq!(raw.recv().unwrap().response, Response::Pong);
    assert_eq!(
        daemon
            .client()
            .log(Entry::new("still", "fine"))
            .unwrap()
            .seq,
        21
    );
}

#[test]
fn an_empty_log_verifies_as_intact_and_a_stream_that_sends_nothing_resumes_where_it_was_asked() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    // PROTOCOL.md §4: an empty log is intact, with nothing checked.
    let report = client
        .verify(witness_client::VerifyRange::default())
        .unwrap();
    assert_eq!(
        report,
        witness_client::VerifyReport::Intact {
            count: 0,
            first_seq: None,
            last_seq: None,
            head_hash: None,
        }
    );
    feed(&daemon, 3);
    // PROTOCOL.md §6: with nothing sent, `next_after` is the request's `after_seq`.
    for after_seq in [None, Some(2)] {
        let mut stream = client
            .entries(EntriesQuery {
                filter: Filter {
                    component: Some("no such component".into()),
                    after_seq,
                    ..Filter::default()
                },
                ..EntriesQuery::default()
            })
            .unwrap();
        assert_eq!(stream.by_ref().count(), 0);
        let end = stream.end().expect("the stream ended");
        assert_eq!(end.reason, EndReason::Complete);
        assert_eq!(end.next_after, after_seq);
    }
}
