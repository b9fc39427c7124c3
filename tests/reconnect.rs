//! Exactly once: re-sent appends are recognised by producer id and number, across
//! connections, restarts and `kill -9`.

use std::time::Duration;

use serde_json::json;
use witness_client::{Client, Entry, Options};
use witness_protocol::{Receipt, Request, Response};

use crate::harness::{TestDaemon, Witnessd, count, numbered_append, read_db, verify_file};

fn receipts_of(daemon: &TestDaemon, id: u64, request: Request) -> Vec<Receipt> {
    let mut raw = daemon.raw();
    raw.send(id, request);
    match raw.recv().unwrap().response {
        Response::Committed { receipts } => receipts,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_re_sent_append_is_acknowledged_with_its_first_receipts_and_not_written_again() {
    let daemon = TestDaemon::start();
    let first = receipts_of(&daemon, 1, numbered_append(77, 1, 10));
    assert_eq!(first.len(), 10);
    // The same append on another connection, as after a lost acknowledgement.
    let again = receipts_of(&daemon, 1, numbered_append(77, 1, 10));
    assert_eq!(again, first);
    assert_eq!(count(&daemon.db), 10);
    // Overlapping: 6..=15, of which 6..=10 are known.
    let overlap = receipts_of(&daemon, 2, numbered_append(77, 6, 10));
    assert_eq!(&overlap[..5], &first[5..]);
    assert_eq!(overlap[5].seq, 11);
    assert_eq!(count(&daemon.db), 15);
    // Another producer with the same numbers is another producer.
    assert_eq!(
        receipts_of(&daemon, 3, numbered_append(78, 1, 2))[0].seq,
        16
    );
    verify_file(&daemon.db);
}

#[test]
fn producer_numbers_survive_a_restart() {
    let daemon = TestDaemon::start();
    let first = receipts_of(&daemon, 1, numbered_append(5, 1, 3));
    let dir = daemon.stop();
    let daemon = TestDaemon::start_in(dir, |_| {});
    assert_eq!(receipts_of(&daemon, 1, numbered_append(5, 1, 3)), first);
    assert_eq!(count(&daemon.db), 3);
}

#[test]
fn sends_survive_kill_dash_nine_and_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let socket = daemon.socket.clone();
    let db = daemon.db.clone();
    let n_entries = 30_000u64;
    let restarter = std::thread::spawn({
        let db = db.clone();
        let dir = dir.path().to_path_buf();
        move || {
            // Kill once the stream is well under way, then bring the daemon back.
            while std::fs::metadata(&db).is_err() || count(&db) < 3_000 {
                std::thread::sleep(Duration::from_millis(5));
            }
            daemon.kill9();
            std::thread::sleep(Duration::from_millis(300));
            Witnessd::start(&dir, &[])
        }
    });
    let options = Options {
        reconnect_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let mut client = Client::connect_with(&socket, options).unwrap();
    for i in 0..n_entries {
        client
            .send(Entry::new("tick", "stream").payload(json!({ "i": i })))
            .unwrap();
        if i % 1000 == 0 {
            // Give the killer a chance to strike mid-stream rather than after it.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    client.flush().unwrap();
    let restarted = restarter.join().unwrap();
    let connection = read_db(&db);
    let (n, distinct, min_i, max_i): (i64, i64, i64, i64) = connection
        .query_row(
            "SELECT count(*), count(DISTINCT json_extract(payload, '$.i')),
                    min(json_extract(payload, '$.i')), max(json_extract(payload, '$.i'))
             FROM entries",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (n, distinct, min_i, max_i),
        (n_entries as i64, n_entries as i64, 0, n_entries as i64 - 1)
    );
    // Re-sent entries follow what was committed before the kill: each once, in order.
    let out_of_order: i64 = connection
        .query_row(
            "SELECT count(*) FROM entries a JOIN entries b ON b.seq = a.seq + 1
             WHERE json_extract(b.payload, '$.i') <= json_extract(a.payload, '$.i')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(out_of_order, 0);
    verify_file(&db);
    drop(restarted);
}

/// A "daemon" that completes every handshake and then closes the connection at once, as a
/// crash-looping daemon or a proxy that drops connections does. Serves until the test ends.
fn handshake_then_hang_up(socket: &std::path::Path) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).is_err() {
                continue;
            }
            let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
            if stream.read_exact(&mut body).is_err() {
                continue;
            }
            let hello = witness_protocol::ResponseFrame {
                id: 0,
                response: Response::Hello(witness_protocol::ServerHello {
                    version: witness_protocol::PROTOCOL_VERSION,
                    server: "hangs up".into(),
                    max_frame_len: 1 << 20,
                    max_entries_per_append: 1000,
                    max_in_flight: 64,
                }),
            };
            let mut bytes = Vec::new();
            witness_protocol::frame::encode(&hello, 1 << 20, &mut bytes).unwrap();
            let _ = stream.write_all(&bytes);
        }
    });
}

#[test]
fn a_daemon_that_hangs_up_after_every_handshake_cannot_keep_a_call_past_its_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("witness.sock");
    handshake_then_hang_up(&socket);
    let options = Options {
        reconnect_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        answer_timeout: Some(Duration::from_secs(2)),
        ..Options::default()
    };
    let started = std::time::Instant::now();
    let mut client = Client::connect_with(&socket, options).unwrap();
    let logged = client.log(Entry::new("e", "c"));
    let took = started.elapsed();
    assert!(logged.is_err(), "{logged:?}");
    // Each handshake succeeds, so a clock restarted by every reconnect never runs out; the
    // reconnect timeout counts from the first break that no answer followed. The margin
    // is for a loaded machine, far below what restarting clocks take (unbounded).
    assert!(
        took < Duration::from_secs(8),
        "log took {took:?}: {logged:?}"
    );

    // Built before the clock starts.
    crate::harness::binary("witness");
    let started = std::time::Instant::now();
    let (code, _, err) = crate::harness::witness(
        &socket,
        &["--timeout", "2", "log", "--event", "e", "--component", "c"],
        None,
    );
    let took = started.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        took < Duration::from_secs(6),
        "witness --timeout 2 took {took:?}: {err}"
    );
}
