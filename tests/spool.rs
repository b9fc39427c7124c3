//! The spool: a background sender whose callers never touch the socket. Order, sharing
//! between threads, refusals reported at flush, flush on drop, and a daemon killed with
//! `kill -9` mid-stream.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use witness_client::{Entry, Error, Options, Spool};

use crate::harness::{TestDaemon, Witnessd, count, read_db, verify_file};

#[test]
fn threads_sharing_a_spool_each_keep_their_order() {
    let daemon = TestDaemon::start();
    let spool = Arc::new(Spool::connect(&daemon.socket).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let spool = Arc::clone(&spool);
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let entry =
                        Entry::new("tick", format!("thread-{t}")).payload(json!({ "i": i }));
                    spool.send(entry).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    spool.flush().unwrap();
    assert_eq!(count(&daemon.db), 20_000);
    // Within each thread, seq order is send order.
    let out_of_order: i64 = read_db(&daemon.db)
        .query_row(
            "SELECT count(*) FROM (
               SELECT json_extract(payload, '$.i') AS i,
                      lag(json_extract(payload, '$.i')) OVER (PARTITION BY component ORDER BY seq) AS before
               FROM entries) WHERE i != before + 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(out_of_order, 0);
    assert_eq!(verify_file(&daemon.db), 20_000);
}

#[test]
fn refusals_come_back_at_flush_and_bad_entries_at_send() {
    let daemon = TestDaemon::start();
    let spool = Spool::connect(&daemon.socket).unwrap();
    // Broken limits are refused by the caller's own thread; nothing is queued.
    assert!(matches!(
        spool.send(Entry::new("", "c")),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        spool.send(Entry::new("e", "c").trace("x".repeat(1000))),
        Err(Error::Invalid(_))
    ));
    for i in 0..10 {
        let entry = if i == 4 {
            Entry::new("e", "c").payload_text("{\"unclosed\": ")
        } else {
            Entry::new("e", "c").payload(json!(i))
        };
        spool.send(entry).unwrap();
    }
    match spool.flush() {
        Err(Error::Rejected(rejections)) => {
            let refused: usize = rejections.iter().map(|r| r.n_entries).sum();
            assert_eq!(rejections.len(), 1);
            assert_eq!(count(&daemon.db), 10 - refused as i64);
            assert!(rejections[0].reply.message.contains("not valid JSON"));
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // Reported once: the next flush is clean.
    spool.send(Entry::new("e", "c")).unwrap();
    spool.flush().unwrap();
}

#[test]
fn dropping_a_spool_sends_what_it_holds() {
    let daemon = TestDaemon::start();
    {
        let spool = Spool::connect(&daemon.socket).unwrap();
        for i in 0..777 {
            spool.send(Entry::new("e", "c").payload(json!(i))).unwrap();
        }
    }
    assert_eq!(count(&daemon.db), 777);
}

#[test]
fn a_spool_survives_kill_dash_nine_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let db = daemon.db.clone();
    let options = Options {
        reconnect_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let spool = Spool::connect_with(&daemon.socket, options, 4096).unwrap();
    let restarter = std::thread::spawn({
        let db = db.clone();
        let dir = dir.path().to_path_buf();
        move || {
            while count(&db) < 2_000 {
                std::thread::sleep(Duration::from_millis(5));
            }
            daemon.kill9();
            std::thread::sleep(Duration::from_millis(300));
            Witnessd::start(&dir, &[])
        }
    });
    let n = 20_000u64;
    for i in 0..n {
        spool
            .send(Entry::new("tick", "spool").payload(json!({ "i": i })))
            .unwrap();
        if i % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    spool.flush().unwrap();
    let restarted = restarter.join().unwrap();
    let (total, distinct): (i64, i64) = read_db(&db)
        .query_row(
            "SELECT count(*), count(DISTINCT json_extract(payload, '$.i')) FROM entries",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((total, distinct), (n as i64, n as i64));
    verify_file(&db);
    drop(restarted);
}
