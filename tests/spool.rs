//! The spool: a background sender whose callers never touch the socket. Order, sharing
//! between threads, refusals reported at flush, flush on drop, and a daemon killed with
//! `kill -9` mid-stream.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use witness_client::{Client, Closed, Entry, Error, Options, Spool, spool_file};

use crate::harness::{TestDaemon, Witnessd, count, read_db, verify_file, witness};

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

/// Issue 28, item 3: what a spool could not deliver when it closed is kept in the user's
/// spool file, with its producer numbers, and the next client delivers it: each entry once,
/// however often the file is delivered; a claim left by a dead process is taken over; a file
/// that is not one is set aside and said.
#[test]
fn what_a_spool_could_not_deliver_is_kept_and_delivered_once_by_the_next_client() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let socket = daemon.socket.clone();
    let db = daemon.db.clone();
    let options = Options {
        reconnect_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let spool = Spool::connect_with(&socket, options.clone(), 4096).unwrap();
    let payload = |i: u64| json!({ "i": i });
    for i in 0..100 {
        spool
            .send(Entry::new("kept", "spool").payload(payload(i)))
            .unwrap();
    }
    spool.flush().unwrap();
    daemon.kill9();
    for i in 100..350 {
        spool
            .send(Entry::new("kept", "spool").payload(payload(i)))
            .unwrap();
    }
    let Ok(Closed::Kept { entries, path, .. }) = spool.close() else {
        panic!("the unsent entries are kept");
    };
    assert_eq!(entries, 250);
    let folder = spool_file::folder(&socket).expect("a private folder");
    assert_eq!(path.parent(), Some(folder.as_path()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let copy = std::fs::read(&path).unwrap();
    assert!(Client::connect_with(&socket, options.clone()).is_err());
    let (code, listed, _) = witness(&socket, &["spool"], None);
    assert_eq!(code, 0);
    assert!(
        listed.contains("250 entries kept") && listed.contains("waiting"),
        "{listed}"
    );

    let daemon = Witnessd::start(dir.path(), &[]);
    assert_eq!(count(&db), 100);
    let mut client = Client::connect_with(&socket, options).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&db) < 350 || path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "delivered in the background"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same file again, as a claim of a process that died mid-delivery, and garbage.
    std::fs::write(folder.join("again.spool.999999999.claimed"), &copy).unwrap();
    std::fs::write(folder.join("junk.spool"), b"WITSPOOL1\n not one").unwrap();
    let (code, out, err) = witness(&socket, &["spool", "--deliver"], None);
    assert_eq!(code, 1, "a file set aside is said: {out}{err}");
    assert!(
        out.contains("delivered 250 entries from 1 spool file"),
        "{out}"
    );
    assert!(
        out.contains("not a witness spool file") && out.contains("set aside"),
        "{out}"
    );
    let (total, distinct): (i64, i64) = read_db(&db)
        .query_row(
            "SELECT count(*), count(DISTINCT json_extract(payload, '$.i')) FROM entries",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((total, distinct), (350, 350), "each entry once");
    let left: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("junk.spool.") && left[0].ends_with(".bad"));
    let (code, out, _) = witness(&socket, &["spool", "--deliver", "--json"], None);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["entries"], 0);
    // A Client's own close keeps what it could not send, in the same way.
    client.send(Entry::new("kept", "client")).unwrap();
    client.flush().unwrap();
    daemon.kill9();
    client.send(Entry::new("kept", "client")).unwrap();
    match client.close() {
        Ok(Closed::Kept {
            entries: 1, path, ..
        }) => assert!(path.exists()),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(verify_file(&db), 351);
}
