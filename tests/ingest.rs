//! The ingest path against an in-process daemon: round trips, batches, fire-and-forget
//! streams and concurrent clients.

use serde_json::json;
use witness_client::{Cost, Entry, Error};
use witness_protocol::{Ack, Append, ErrorCode, OnFull, Request, Response};

use crate::harness::{TestDaemon, count, read_db, verify_file};

#[test]
fn one_entry_round_trips_into_plain_columns() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let entry = Entry::new("llm_call", "planner")
        .trace("trace-1")
        .payload(json!({"prompt": "hello", "n": 3}))
        .client_time(1_700_000_000_000_000_000)
        .cost(
            Cost::new(120, 30, 1500)
                .model("small")
                .cache_read_tokens(100)
                .reasoning_tokens(7),
        );
    let receipt = client.log(entry).unwrap();
    assert_eq!(receipt.seq, 1);

    let db = read_db(&daemon.db);
    let row = db
        .query_row(
            "SELECT seq, event, component, trace_id, json_extract(payload, '$.prompt'), tokens_in,
                    tokens_out, cache_read_tokens, reasoning_tokens, cost_micro_usd, model,
                    client_ts, pid, uid, gid, hash, ts
             FROM entries",
            [],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    [
                        row.get::<_, i64>(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get(8)?,
                        row.get(9)?,
                    ],
                    row.get::<_, String>(10)?,
                    row.get::<_, i64>(11)?,
                    [row.get::<_, i64>(12)?, row.get(13)?, row.get(14)?],
                    row.get::<_, Vec<u8>>(15)?,
                    row.get::<_, i64>(16)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0, 1);
    assert_eq!(
        (row.1.as_str(), row.2.as_str(), row.3.as_str()),
        ("llm_call", "planner", "trace-1")
    );
    assert_eq!(row.4, "hello");
    assert_eq!(row.5, [120, 30, 100, 7, 1500]);
    assert_eq!(row.6, "small");
    assert_eq!(row.7, 1_700_000_000_000_000_000);
    // SAFETY: these calls have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!(
        row.8,
        [
            i64::from(std::process::id()),
            i64::from(uid),
            i64::from(gid)
        ]
    );
    assert_eq!(row.9, receipt.hash);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(
        (now.as_nanos() as i64 - row.10).abs() < 60_000_000_000,
        "receive time is now"
    );
    assert_eq!(verify_file(&daemon.db), 1);
}

#[test]
fn an_entry_without_cost_or_trace_stores_nulls() {
    let daemon = TestDaemon::start();
    daemon.client().log(Entry::new("e", "c")).unwrap();
    let nulls: i64 = read_db(&daemon.db)
        .query_row(
            "SELECT (trace_id IS NULL) + (tokens_in IS NULL) + (cost_micro_usd IS NULL)
                  + (model IS NULL) + (client_ts IS NULL) FROM entries",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(nulls, 5);
}

#[test]
fn a_batch_is_atomic() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let mut batch: Vec<Entry> = (0..10)
        .map(|i| Entry::new("e", "c").payload(json!(i)))
        .collect();
    batch[5] = Entry::new("e", "c").payload_text("{not json");
    let error = client.log_batch(batch).unwrap_err();
    match error {
        Error::Refused(reply) => {
            assert_eq!(reply.code, ErrorCode::InvalidEntry);
            assert_eq!(reply.entry_index, Some(5));
            assert!(
                reply.message.contains("entry 5: payload is not valid JSON"),
                "{}",
                reply.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(count(&daemon.db), 0);

    let batch: Vec<Entry> = (0..10)
        .map(|i| Entry::new("e", "c").payload(json!(i)))
        .collect();
    let receipts = client.log_batch(batch).unwrap();
    let seqs: Vec<u64> = receipts.iter().map(|receipt| receipt.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    // The connection is still good after the refusal.
    assert_eq!(client.log(Entry::new("after", "c")).unwrap().seq, 11);
}

#[test]
fn a_hundred_thousand_sends_arrive_in_order_without_gaps() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    for i in 0..100_000u64 {
        client
            .send(Entry::new("tick", "load").payload(json!({ "i": i })))
            .unwrap();
    }
    client.flush().unwrap();
    let db = read_db(&daemon.db);
    let (n, min, max): (i64, i64, i64) = db
        .query_row(
            "SELECT count(*), min(seq), max(seq) FROM entries",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, min, max), (100_000, 1, 100_000));
    let out_of_place: i64 = db
        .query_row(
            "SELECT count(*) FROM entries WHERE json_extract(payload, '$.i') != seq - 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(out_of_place, 0);
    assert_eq!(verify_file(&daemon.db), 100_000);
}

#[test]
fn concurrent_clients_get_distinct_gap_free_seqs() {
    let daemon = TestDaemon::start();
    let n_clients = 32;
    let per_client = 2_000;
    let seqs: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n_clients)
            .map(|client_index| {
                let daemon = &daemon;
                scope.spawn(move || {
                    let mut client = daemon.client();
                    (0..per_client)
                        .map(|i| {
                            let entry = Entry::new("e", format!("client-{client_index}"))
                                .payload(json!({ "i": i }));
                            client.log(entry).unwrap().seq
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    for client_seqs in &seqs {
        assert!(
            client_seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "each client's seqs rise"
        );
    }
    let mut all: Vec<u64> = seqs.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=(n_clients * per_client) as u64).collect::<Vec<_>>()
    );
    assert_eq!(verify_file(&daemon.db), (n_clients * per_client) as u64);
}

#[test]
fn durable_acknowledgements_come_after_the_commit_without_receipts() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    raw.hello();
    let append = |ack| {
        Request::Append(Append {
            ack,
            on_full: OnFull::Wait,
            producer: None,
            entries: vec![Entry::new("d", "c"); 5],
        })
    };
    raw.send(7, append(Ack::Durable));
    let answer = raw.recv().unwrap();
    assert_eq!(answer.id, 7);
    assert_eq!(answer.response, Response::Committed { receipts: vec![] });
    // Answered after the commit: the entries are there for any reader.
    assert_eq!(count(&daemon.db), 5);
    raw.send(8, append(Ack::Committed));
    match raw.recv().unwrap().response {
        Response::Committed { receipts } => {
            let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn queued_acknowledgements_and_busy() {
    let daemon = TestDaemon::start_with(|config| config.queue_capacity = 16);
    let mut client = daemon.client();
    // Ten entries queued hold room in the queue until their commit; an append larger than
    // the room left is refused at once rather than left waiting. When the writer commits
    // the ten before the next append arrives (a loaded machine), there is room, and the
    // append is recorded: try again until the queue is caught full.
    let mut recorded = 0;
    let error = (0..50)
        .find_map(|_| {
            client.log_queued(vec![Entry::new("q", "c"); 10]).unwrap();
            recorded += 10;
            match client.try_log_batch(vec![Entry::new("b", "c"); 17]) {
                Ok(_) => {
                    recorded += 17;
                    None
                }
                Err(error) => Some(error),
            }
        })
        .expect("an append is refused while the queue is full");
    assert!(witness_client::is_busy(&error), "{error}");
    assert!(
        error.to_string().contains("no room for 17 entries"),
        "{error}"
    );
    client.log(Entry::new("after", "c")).unwrap();
    let dir = daemon.stop();
    assert_eq!(count(&dir.path().join("witness.db")), recorded + 1);
}

#[test]
fn send_reports_refused_entries_at_flush_and_keeps_the_rest() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    for i in 0..300 {
        let entry = if i == 10 {
            Entry::new("e", "c").payload_text("[1,")
        } else {
            Entry::new("e", "c").payload(json!(i))
        };
        client.send(entry).unwrap();
    }
    let send_batch = witness_client::Options::default().send_batch;
    assert!(send_batch > 10 && send_batch < 300);
    match client.flush().unwrap_err() {
        Error::Rejected(rejections) => {
            assert_eq!(rejections.len(), 1);
            assert_eq!(rejections[0].first_entry, 1);
            assert_eq!(rejections[0].n_entries, send_batch);
            assert_eq!(rejections[0].reply.entry_index, Some(10));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(count(&daemon.db), 300 - send_batch as i64);
}

#[test]
fn limits_are_checked_before_sending() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let error = client.send(Entry::new("", "c")).unwrap_err();
    assert_eq!(error.to_string(), "invalid entry: event must not be empty");
    let error = client
        .log(Entry::new("e", "c").trace("t".repeat(200)))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid entry: trace_id is 200 bytes long; the limit is 128"
    );
    let error = client.log_batch(Vec::new()).unwrap_err();
    assert!(matches!(error, Error::BatchTooLarge { n_entries: 0, .. }));
}

/// Issue 28, item 11: an entry dated before 1970 was accepted and then left out of every
/// cost report (whose hours start at the epoch). It is refused at append, naming the field.
#[test]
fn an_entry_dated_before_1970_is_refused_and_nothing_is_recorded() {
    let daemon = TestDaemon::start();
    let old = Entry::new("old", "c")
        .client_time(-1)
        .cost(Cost::new(1, 1, 5));
    // The daemon refuses it, whatever client sends it.
    let mut raw = daemon.raw();
    raw.send(
        1,
        Request::Append(Append {
            ack: Ack::Committed,
            on_full: OnFull::Wait,
            producer: None,
            entries: vec![old.clone()],
        }),
    );
    match raw.recv().unwrap().response {
        Response::Error(reply) => {
            assert_eq!(reply.code, ErrorCode::InvalidEntry);
            assert!(reply.message.contains("client_ts"), "{}", reply.message);
        }
        other => panic!("{other:?}"),
    }
    // And the Rust client says so before sending.
    let mut client = daemon.client();
    let error = client.log(old).unwrap_err();
    assert!(error.to_string().contains("before 1970"), "{error}");
    // The epoch itself is a date like any other.
    client.log(Entry::new("epoch", "c").client_time(0)).unwrap();
    assert_eq!(crate::harness::count(&daemon.db), 1);
}
