//! The read side against real daemons: every answer checked against the same figure computed
//! independently with SQL on the database file, streams that follow commits, followers that
//! stall, export and import, bad filters, and the query plans.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use witness_client::query::{
    CostQuery, EndReason, EntriesQuery, Filter, GroupBy, StoredEntry, TraceQuery, TracesQuery,
};
use witness_client::{Cost, Entry, Error};
use witness_protocol::{ErrorCode, Request, Response};

use crate::harness::{TestDaemon, Witnessd, read_db, witness};

const COMPONENTS: [&str; 4] = ["planner", "billing", "search", "agent.exec"];
const EVENTS: [&str; 3] = ["llm_call", "tool_call", "user_login"];
const MODELS: [Option<&str>; 3] = [Some("small-model"), Some("big-model"), None];

/// The `index`-th entry of a known, varied data set: 4 components, 3 events, traces of about
/// ten entries, a cost with or without a model on every third.
fn known_entry(index: usize) -> Entry {
    let mut entry = Entry::new(EVENTS[index * 7 % 3], COMPONENTS[index % 4])
        .payload(json!({"i": index, "text": "a few words"}));
    if !index.is_multiple_of(11) {
        entry = entry.trace(format!("req-{}", index / 10));
    }
    if index.is_multiple_of(3) {
        let mut cost = Cost::new(
            100 + index as u64 % 7,
            20 + index as u64 % 5,
            1000 + index as u64,
        );
        if let Some(model) = MODELS[index / 3 % 3] {
            cost = cost.model(model);
        }
        entry = entry.cost(cost);
    }
    entry
}

fn feed(daemon: &TestDaemon, n: usize) {
    let mut client = daemon.client();
    for index in 0..n {
        client.send(known_entry(index)).unwrap();
    }
    client.flush().unwrap();
}

fn sql_i64(db: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> i64 {
    db.query_row(sql, params, |row| row.get(0)).unwrap()
}

fn collect(stream: impl Iterator<Item = Result<StoredEntry, Error>>) -> Vec<StoredEntry> {
    stream.map(Result::unwrap).collect()
}

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
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
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
    let writer = WriterHandle::start(WriterConfig::new(db_path.clone()), None).unwrap();
    let base = 1_800_000_000 * 1_000_000_000 / HOUR_NS * HOUR_NS;
    let permits = Arc::new(tokio::sync::Semaphore::new(1 << 20));
    let (reply_to, _replies) = tokio::sync::mpsc::unbounded_channel();
    let mut state: u64 = 7;
    let mut random = move |below: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % below
    };
    let queue = writer.queue();
    let admission = witness_daemon::store::admission::Admission::new(1 << 20);
    let lane = admission.lane();
    for index in 0..1200 {
        let ts = base + random(6 * HOUR_NS as u64) as i64;
        let job = Job {
            request_id: index,
            ack: witness_protocol::Ack::None,
            producer: None,
            entries: vec![known_entry(index as usize)],
            origin: Origin {
                ts,
                ..Origin::default()
            },
            received: std::time::Instant::now(),
            reply_to: reply_to.clone(),
            connection_permit: Arc::clone(&permits).try_acquire_owned().unwrap(),
            admitted: admission.try_now(&lane, 1).unwrap(),
            alone: false,
        };
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
        for by in [GroupBy::Component, GroupBy::Model, GroupBy::Event] {
            let report = read::cost(
                &connection,
                &CostQuery {
                    by,
                    since,
                    until,
                    component: None,
                    offset: 0,
                    limit: 1000,
                },
            )
            .unwrap();
            let column = match by {
                GroupBy::Component => "component",
                GroupBy::Model => "model",
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
        }
    }
}

#[test]
fn a_version_1_database_gains_its_cost_table_on_open() {
    let daemon = TestDaemon::start();
    feed(&daemon, 700);
    let dir = daemon.stop();
    let db_path = dir.path().join("witness.db");
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        // As the files of version 1 were: no cost table, no producer runs.
        db.execute_batch(
            "DROP TABLE cost_hourly; DROP TABLE producer_runs;
             ALTER TABLE producers DROP COLUMN last_run; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let daemon = TestDaemon::start_in(dir, |_| {});
    let report = daemon
        .client()
        .cost(CostQuery {
            by: GroupBy::Component,
            since: None,
            until: None,
            component: None,
            offset: 0,
            limit: 100,
        })
        .unwrap();
    let db = read_db(&daemon.db);
    assert_eq!(sql_i64(&db, "PRAGMA user_version", []), 3);
    assert_eq!(report.total.entries, 700);
    let usd = sql_i64(
        &db,
        "SELECT sum(coalesce(cost_micro_usd, 0)) FROM entries",
        [],
    );
    assert_eq!(report.total.micro_usd as i64, usd);
}

#[test]
fn a_version_2_database_gains_its_producer_runs_on_open_and_still_knows_re_sends() {
    use crate::harness::numbered_append as append;
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    let mut sent = Vec::new();
    for (id, (producer, first, n)) in [(5, 1, 3), (6, 1, 2), (5, 4, 2), (5, 9, 1), (6, 3, 1)]
        .into_iter()
        .enumerate()
    {
        raw.send(id as u64, append(producer, first, n));
        match raw.recv().unwrap().response {
            Response::Committed { receipts } => sent.push(receipts),
            other => panic!("{other:?}"),
        }
    }
    drop(raw);
    let dir = daemon.stop();
    let db_path = dir.path().join("witness.db");
    let runs_of = |db: &rusqlite::Connection| -> Vec<(i64, i64, i64, i64, Option<i64>)> {
        db.prepare("SELECT * FROM producer_runs ORDER BY first_seq")
            .unwrap()
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let written = runs_of(&read_db(&db_path));
    {
        // As the files of version 2 were: no runs, and (in later builds) an index instead.
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch(
            "DROP TABLE producer_runs; ALTER TABLE producers DROP COLUMN last_run;
             CREATE INDEX entries_by_producer ON entries (producer_id, producer_number);
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let daemon = TestDaemon::start_in(dir, |_| {});
    let mut raw = daemon.raw();
    // 5's numbers 1..=5 were written in two appends at seq 1..=3 and 6..=7: two runs.
    raw.send(9, append(5, 2, 4));
    assert_eq!(
        raw.recv().unwrap().response,
        Response::Committed {
            receipts: [&sent[0][1..], &sent[2][..]].concat()
        }
    );
    let db = read_db(&daemon.db);
    assert_eq!(sql_i64(&db, "PRAGMA user_version", []), 3);
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'entries_by_producer'",
            []
        ),
        0
    );
    // What the upgrade derived is what the writer had written (no two appends of one
    // producer touch here, so the longest stretches are the appends).
    assert_eq!(runs_of(&db), written);
    drop(raw);
    let dir = daemon.stop();
    crate::harness::verify_file(&dir.path().join("witness.db"));
}

#[test]
fn a_follower_receives_every_entry_committed_after_it_subscribed() {
    let daemon = TestDaemon::start();
    feed(&daemon, 50);
    let mut follower = daemon.client();
    let mut stream = follower
        .entries(EntriesQuery {
            newest: Some(0),
            follow: true,
            ..EntriesQuery::default()
        })
        .unwrap();
    let committed = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let mut client = daemon.client();
            let committed = Arc::clone(&committed);
            std::thread::spawn(move || {
                for index in 0..200 {
                    let entry = Entry::new("live", format!("writer-{writer}"))
                        .payload(json!({ "index": index }));
                    if index % 2 == 0 {
                        let receipt = client.log(entry).unwrap();
                        committed.lock().unwrap().push(receipt.seq);
                    } else {
                        client.send(entry).unwrap();
                    }
                }
                client.flush().unwrap();
            })
        })
        .collect();
    let mut received = Vec::new();
    while received.len() < 600 {
        let entry = stream.next().unwrap().unwrap();
        received.push(entry);
    }
    for writer in writers {
        writer.join().unwrap();
    }
    let seqs: Vec<u64> = received.iter().map(|entry| entry.seq).collect();
    assert_eq!(
        seqs,
        (51..=650).collect::<Vec<u64>>(),
        "in order, none missing"
    );
    for seq in committed.lock().unwrap().iter() {
        assert!(seqs.contains(seq));
    }
    // Each writer's entries arrive in the order it wrote them.
    for writer in 0..3 {
        let indexes: Vec<i64> = received
            .iter()
            .filter(|entry| entry.entry.component == format!("writer-{writer}"))
            .map(|entry| {
                serde_json::from_str::<serde_json::Value>(&entry.entry.payload).unwrap()["index"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(indexes, (0..200).collect::<Vec<i64>>());
    }
}

#[test]
fn a_follower_hears_the_last_commits_when_the_daemon_stops() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    raw.send(
        9,
        Request::Entries(EntriesQuery {
            newest: Some(0),
            follow: true,
            ..EntriesQuery::default()
        }),
    );
    let mut client = daemon.client();
    for index in 0..100 {
        client
            .send(Entry::new("before-stop", "c").payload(json!({ "index": index })))
            .unwrap();
    }
    client.flush().unwrap();
    drop(client);
    let _dir = daemon.stop();
    let mut seqs = Vec::new();
    let end = loop {
        let frame = raw.recv().expect("a frame before the connection closes");
        assert_eq!(frame.id, 9);
        match frame.response {
            Response::Entries(entries) => seqs.extend(entries.iter().map(|entry| entry.seq)),
            Response::End(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    assert_eq!(end.reason, EndReason::ShuttingDown);
    assert_eq!(end.next_after, Some(100));
}

#[test]
fn a_stalled_follower_holds_up_nobody_and_is_cut_off_with_a_cursor() {
    let daemon = TestDaemon::start_with(|config| {
        config.stall_timeout = Duration::from_millis(300);
    });
    let mut stalled = daemon.raw();
    stalled.send(
        5,
        Request::Entries(EntriesQuery {
            newest: Some(0),
            follow: true,
            ..EntriesQuery::default()
        }),
    );
    // Far more than the socket buffers hold: 3000 entries of 2 KiB.
    let mut client = daemon.client();
    let padding = "x".repeat(2048);
    let started = Instant::now();
    for index in 0..3000 {
        client
            .send(Entry::new("bulk", "writer").payload(json!({ "index": index, "pad": padding })))
            .unwrap();
    }
    client.flush().unwrap();
    for _ in 0..20 {
        client.log(Entry::new("after", "writer")).unwrap();
    }
    let writing = started.elapsed();
    std::thread::sleep(Duration::from_millis(600));

    let mut seqs = Vec::new();
    let end = loop {
        let frame = stalled.recv().expect("frames, then the end");
        match frame.response {
            Response::Entries(entries) => seqs.extend(entries.iter().map(|entry| entry.seq)),
            Response::End(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        end.reason,
        EndReason::CutOff,
        "after {writing:?} of writing"
    );
    let resume = end.next_after.unwrap();
    assert!(resume < 3020, "cut off before the end: {resume}");
    assert_eq!(
        seqs,
        (1..=resume).collect::<Vec<u64>>(),
        "what it got is whole"
    );

    // Nothing is lost: the cursor picks up the rest.
    let rest = collect(
        daemon
            .client()
            .entries(EntriesQuery {
                filter: Filter {
                    after_seq: Some(resume),
                    ..Filter::default()
                },
                ..EntriesQuery::default()
            })
            .unwrap(),
    );
    let rest: Vec<u64> = rest.iter().map(|entry| entry.seq).collect();
    assert!(
        rest == (resume + 1..=3020).collect::<Vec<u64>>(),
        "the rest after {resume}: {} entries, last {:?}",
        rest.len(),
        rest.last()
    );
}

fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Peak resident memory of a fresh `witnessd` taking 40 MB of entries while `n_stalled`
/// followers read nothing, and whether each follower is still served afterwards.
fn peak_with_stalled_followers(n_stalled: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--queue", "1024"]);
    let mut stalled: Vec<_> = (0..n_stalled)
        .map(|_| {
            let mut raw = crate::harness::Raw::connect(&daemon.socket);
            raw.hello();
            raw.send(
                1,
                Request::Entries(EntriesQuery {
                    newest: Some(0),
                    follow: true,
                    ..EntriesQuery::default()
                }),
            );
            raw
        })
        .collect();
    let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
    let padding = "y".repeat(4000);
    for index in 0..10_000 {
        let payload = json!({ "index": index, "pad": padding });
        client
            .send(Entry::new("bulk", "writer").payload(payload))
            .unwrap();
    }
    client.flush().unwrap();
    let peak_kib = peak_rss_kib(daemon.pid());
    for raw in &mut stalled {
        match raw.recv().unwrap().response {
            Response::Entries(entries) => assert_eq!(entries[0].seq, 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    peak_kib
}

#[test]
fn stalled_followers_do_not_grow_the_daemons_memory() {
    let baseline_mib = peak_with_stalled_followers(0) / 1024;
    let stalled_mib = peak_with_stalled_followers(4) / 1024;
    // Four followers that buffered what they missed would hold 160 MB; each may hold two
    // pages (2 MiB) and what the socket takes.
    assert!(
        stalled_mib < baseline_mib + 24,
        "peak RSS {stalled_mib} MiB with stalled followers, {baseline_mib} MiB without"
    );
}

#[test]
fn export_then_import_restores_the_same_events() {
    let source = TestDaemon::start();
    feed(&source, 400);
    let mut client = source.client();
    client
        .log(Entry::new("odd", "c").payload_text(r#"{ "spaced" :  [1, 2.50, "é\u00e9"] }"#))
        .unwrap();
    let (code, exported, stderr) = witness(&source.socket, &["export"], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(exported.lines().count(), 401);

    let target = TestDaemon::start();
    let (code, _, stderr) = witness(&target.socket, &["import", "-"], Some(&exported));
    assert_eq!(code, 0, "{stderr}");
    let events = |daemon: &TestDaemon| -> Vec<Entry> {
        collect(daemon.client().entries(EntriesQuery::default()).unwrap())
            .into_iter()
            .map(|stored| stored.entry)
            .collect()
    };
    let before = events(&source);
    assert_eq!(before.len(), 401);
    assert_eq!(events(&target), before);
    assert_eq!(
        before.last().unwrap().payload,
        r#"{ "spaced" :  [1, 2.50, "é\u00e9"] }"#,
        "payload text kept byte for byte"
    );
    // Every stored field is in the export.
    let first: serde_json::Value = serde_json::from_str(exported.lines().next().unwrap()).unwrap();
    for field in [
        "seq",
        "time",
        "ts",
        "event",
        "component",
        "trace_id",
        "payload",
        "cost",
        "client_ts",
        "pid",
        "uid",
        "gid",
        "producer_id",
        "producer_number",
        "hash",
    ] {
        assert!(first.get(field).is_some(), "export lacks {field}: {first}");
    }
    let hash = read_db(&source.db)
        .query_row("SELECT hash FROM entries WHERE seq = 1", [], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .unwrap();
    assert_eq!(first["hash"], hex::encode(hash));

    let (code, part, _) = witness(
        &source.socket,
        &["export", "--from", "10", "--to", "19"],
        None,
    );
    assert_eq!(code, 0);
    let seqs: Vec<u64> = part
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (10..=19).collect::<Vec<u64>>());
}

#[test]
fn bad_filters_and_times_get_clear_errors() {
    let daemon = TestDaemon::start();
    feed(&daemon, 20);
    for (args, expected) in [
        (
            &["tail", "--since", "yesterday"][..],
            "invalid time \"yesterday\"",
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
            since: Some(-5),
            component: None,
            before_seq: None,
            limit: 5,
        }),
        Request::Cost(CostQuery {
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

#[test]
fn the_command_line_answers_readably_and_in_json() {
    let daemon = TestDaemon::start();
    let lines: String = (0..3000)
        .map(|index| {
            let entry = known_entry(index);
            let mut line = json!({
                "event": entry.event,
                "component": entry.component,
                "trace_id": entry.trace_id,
                "payload": serde_json::from_str::<serde_json::Value>(&entry.payload).unwrap(),
            });
            if let Some(cost) = entry.cost {
                line["cost"] = json!({
                    "tokens_in": cost.tokens_in,
                    "tokens_out": cost.tokens_out,
                    "cost_micro_usd": cost.micro_usd,
                    "model": cost.model,
                });
            }
            line.to_string() + "\n"
        })
        .collect();
    let (code, _, stderr) = witness(&daemon.socket, &["import", "-"], Some(&lines));
    assert_eq!(code, 0, "{stderr}");
    let db = read_db(&daemon.db);
    let total_usd = sql_i64(
        &db,
        "SELECT sum(coalesce(cost_micro_usd, 0)) FROM entries",
        [],
    );
    let dollars = format!("${}.{:06}", total_usd / 1_000_000, total_usd % 1_000_000);

    let run = |args: &[&str]| {
        let (code, stdout, stderr) = witness(&daemon.socket, args, None);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    let table = run(&["cost"]);
    assert!(table.starts_with("COMPONENT"), "{table}");
    let total_line = table
        .lines()
        .find(|line| line.starts_with("TOTAL"))
        .unwrap();
    assert!(
        total_line.contains("3000") && total_line.ends_with(&dollars),
        "{table}"
    );
    for component in COMPONENTS {
        assert!(table.contains(component), "{table}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&run(&["cost", "--by", "model", "--json"])).unwrap();
    assert_eq!(report["total"]["cost_micro_usd"], total_usd);
    assert_eq!(report["total"]["entries"], 3000);

    let in_trace = sql_i64(
        &db,
        "SELECT count(*) FROM entries WHERE trace_id = 'req-12'",
        [],
    );
    let trace = run(&["trace", "req-12"]);
    assert!(
        trace.starts_with(&format!("trace req-12: {in_trace} entries")),
        "{trace}"
    );
    assert!(
        trace.contains("SEQ") && trace.contains("PAYLOAD"),
        "{trace}"
    );
    assert_eq!(trace.lines().count() as i64, 5 + in_trace, "{trace}");
    let trace: serde_json::Value =
        serde_json::from_str(&run(&["trace", "req-12", "--json"])).unwrap();
    assert_eq!(trace["entries"].as_array().unwrap().len() as i64, in_trace);
    assert_eq!(trace["summary"]["entries"], in_trace);

    let traces = run(&["traces", "-n", "3"]);
    assert!(
        traces.starts_with("TRACE") && traces.contains("req-299"),
        "{traces}"
    );
    assert!(traces.contains("(more: --before"), "{traces}");
    let traces: serde_json::Value =
        serde_json::from_str(&run(&["traces", "--json", "--since", "1h"])).unwrap();
    assert_eq!(traces["traces"].as_array().unwrap().len(), 20);

    let tail = run(&["tail", "-n", "3"]);
    assert_eq!(tail.lines().count(), 3);
    assert!(tail.lines().last().unwrap().contains("#3000"), "{tail}");
    let tail = run(&["tail", "-n", "5", "--json", "--component", "billing"]);
    for line in tail.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["component"], "billing");
    }

    let (code, _, stderr) = witness(&daemon.socket, &["trace", "nope"], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no entry has trace id \"nope\""),
        "{stderr}"
    );
}

#[test]
fn tail_follow_from_the_command_line_prints_new_entries() {
    let daemon = TestDaemon::start();
    feed(&daemon, 5);
    let mut child = std::process::Command::new(crate::harness::binary("witness"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["tail", "-f", "-n", "2", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = daemon.client();
    std::thread::sleep(Duration::from_millis(200));
    for index in 0..10 {
        client
            .log(Entry::new("new", "c").payload(json!({ "index": index })))
            .unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seqs = Vec::new();
    while seqs.len() < 12 {
        let line = lines.next().unwrap().unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        seqs.push(entry["seq"].as_u64().unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seqs, (4..=15).collect::<Vec<u64>>());
}

#[test]
fn tail_follow_waits_out_a_restart_of_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut child = std::process::Command::new(crate::harness::binary("witness"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["tail", "-f", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = |socket: &std::path::Path, index: u64| {
        witness_client::Client::connect(socket)
            .unwrap()
            .log(Entry::new("e", "c").payload(json!({ "index": index })))
            .unwrap();
    };
    for index in 0..3 {
        log(&daemon.socket, index);
    }
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seqs = Vec::new();
    let mut read = |seqs: &mut Vec<u64>, until: usize| {
        while seqs.len() < until {
            let line = lines.next().unwrap().unwrap();
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
            seqs.push(entry["seq"].as_u64().unwrap());
        }
    };
    read(&mut seqs, 3);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let daemon = Witnessd::start(dir.path(), &[]);
    for index in 3..6 {
        log(&daemon.socket, index);
    }
    read(&mut seqs, 6);
    // Still following, and it said what happened.
    assert_eq!(child.try_wait().unwrap(), None);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
    assert!(
        stderr.contains("following again once it is back"),
        "{stderr}"
    );
}

#[test]
fn tail_counts_the_log_as_it_was_when_asked() {
    let daemon = TestDaemon::start();
    feed(&daemon, 200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let mut client = daemon.client();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut index = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.send(known_entry(index)).unwrap();
                index += 1;
            }
            client.flush().unwrap();
        })
    };
    let mut client = daemon.client();
    for _ in 0..30 {
        let query = EntriesQuery {
            newest: Some(50),
            ..EntriesQuery::default()
        };
        let entries = collect(client.entries(query).unwrap());
        assert_eq!(entries.len(), 50, "while entries keep arriving");
        assert!(
            entries
                .windows(2)
                .all(|pair| pair[1].seq == pair[0].seq + 1)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
}
