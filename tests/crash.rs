//! Stopping, cleanly and not: SIGTERM drains the queue; `kill -9` under load loses nothing
//! that was acknowledged as committed and leaves a chain that verifies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use witness_client::{Client, Entry, Options};
use witness_protocol::{Ack, Append, OnFull, Request, Response};

use crate::harness::{Raw, Witnessd, count, read_db, verify_file};

#[test]
fn sigterm_with_a_full_queue_commits_everything_queued_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--queue", "200000"]);
    let n_threads = 4;
    let per_append = 100;
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..n_threads)
        .map(|thread| {
            let socket = daemon.socket.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut raw = Raw::connect(&socket);
                raw.hello();
                let mut reader = Raw::from_stream(raw.stream.try_clone().unwrap());
                // A full queue of 200,000 entries drains at the disk's pace, and on a slow
                // or loaded machine the next answer can take longer than the harness's 10 s.
                reader
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let acks = std::thread::spawn(move || {
                    let mut queued = Vec::new();
                    while let Some(frame) = reader.recv() {
                        match frame.response {
                            Response::Queued { .. } => queued.push(frame.id),
                            Response::Error(reply) => assert_eq!(
                                reply.code,
                                witness_protocol::ErrorCode::ShuttingDown,
                                "{reply}"
                            ),
                            other => panic!("{other:?}"),
                        }
                    }
                    queued
                });
                let mut id = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let entries = (0..per_append)
                        .map(|i| {
                            Entry::new("q", "c").payload(json!({"t": thread, "a": id, "i": i}))
                        })
                        .collect();
                    let append = Append {
                        ack: Ack::Queued,
                        on_full: OnFull::Wait,
                        producer: None,
                        entries,
                    };
                    let mut bytes = Vec::new();
                    let frame = witness_protocol::RequestFrame {
                        id,
                        request: Request::Append(append),
                    };
                    witness_protocol::frame::encode(&frame, u32::MAX >> 8, &mut bytes).unwrap();
                    if std::io::Write::write_all(&mut raw.stream, &bytes).is_err() {
                        break;
                    }
                    id += 1;
                }
                acks.join().unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    daemon.signal(libc::SIGTERM);
    let log = daemon.stderr.clone();
    let db = daemon.db.clone();
    let status = daemon.wait();
    stop.store(true, Ordering::Relaxed);
    let queued: Vec<Vec<u64>> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let n_queued: usize = queued.iter().map(Vec::len).sum();
    assert!(n_queued > 0, "the load ran");
    let connection = read_db(&db);
    let mut statement = connection
        .prepare(
            "SELECT json_extract(payload, '$.t'), json_extract(payload, '$.a'), count(*)
             FROM entries GROUP BY 1, 2",
        )
        .unwrap();
    let stored: std::collections::HashMap<(i64, i64), i64> = statement
        .query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (thread, ids) in queued.iter().enumerate() {
        for id in ids {
            let n = stored
                .get(&(thread as i64, *id as i64))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                n, per_append,
                "append {id} of thread {thread} was queued, so it is committed"
            );
        }
    }
    verify_file(&db);
    let wal = std::fs::metadata(dir.path().join("witness.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(
        wal, 0,
        "the WAL is checkpointed and truncated at a clean stop"
    );
}

#[test]
fn kill_dash_nine_under_load_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let options = Options {
        reconnect_timeout: Duration::ZERO,
        ..Options::default()
    };
    let handles: Vec<_> = (0..8)
        .map(|thread| {
            let socket = daemon.socket.clone();
            let options = options.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect_with(&socket, options).unwrap();
                let mut receipts = BTreeMap::new();
                for batch in 0.. {
                    let entries = (0..20)
                        .map(|i| {
                            Entry::new("load", "crash")
                                .payload(json!({"t": thread, "b": batch, "i": i}))
                        })
                        .collect();
                    match client.log_batch(entries) {
                        Ok(batch_receipts) => {
                            for (i, receipt) in batch_receipts.into_iter().enumerate() {
                                receipts.insert(receipt.seq, (receipt.hash, (thread, batch, i)));
                            }
                        }
                        Err(_) => break,
                    }
                }
                receipts
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill9();
    let mut acknowledged = BTreeMap::new();
    for handle in handles {
        acknowledged.extend(handle.join().unwrap());
    }
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );

    // A restart replaces the stale socket and carries on the chain.
    let daemon = Witnessd::start(dir.path(), &[]);
    let n_stored = verify_file(&daemon.db);
    assert!(n_stored >= acknowledged.len() as u64);
    let connection = read_db(&daemon.db);
    let mut statement = connection
        .prepare("SELECT hash, json_extract(payload, '$.t'), json_extract(payload, '$.b'), json_extract(payload, '$.i') FROM entries WHERE seq = ?1")
        .unwrap();
    for (seq, (hash, (thread, batch, i))) in &acknowledged {
        let stored: (Vec<u8>, i64, i64, i64) = statement
            .query_row([*seq as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap_or_else(|error| panic!("acknowledged seq {seq} is missing: {error}"));
        assert_eq!(stored.0, hash.to_vec());
        assert_eq!(
            (stored.1, stored.2, stored.3),
            (*thread as i64, *batch as i64, *i as i64)
        );
    }
    let receipt = Client::connect(&daemon.socket)
        .unwrap()
        .log(Entry::new("after", "restart"))
        .unwrap();
    assert_eq!(receipt.seq, n_stored + 1);
    assert_eq!(count(&daemon.db), n_stored as i64 + 1);
    verify_file(&daemon.db);
}
