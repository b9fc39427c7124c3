//! Acknowledged means stored: every answer and every exit status tells the truth, whatever
//! happens to the daemon, its socket or its database file.

use std::io::{Read, Write};
use std::time::Duration;

use witness_client::Client;

use crate::harness::{Witnessd, count, wait_until, witness_spawn};

/// Entries the daemon holds in its queue or in a commit, from its own stats.
fn queued(daemon: &Witnessd) -> u64 {
    Client::connect(&daemon.socket)
        .and_then(|mut client| client.stats())
        .map_or(0, |stats| stats.queue_depth)
}

/// Holds the database's write lock, as a hung disk would hold a commit: the writer waits in
/// SQLite's busy handler (up to 5 s) with the entries in hand.
fn wedge(daemon: &Witnessd) -> rusqlite::Connection {
    let blocker = rusqlite::Connection::open(&daemon.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    blocker
}

fn finish(mut child: std::process::Child) -> (i32, String, String) {
    let status = child.wait().unwrap();
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn log_and_import_fail_when_the_daemon_dies_before_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let blocker = wedge(&daemon);
    let log = witness_spawn(
        &daemon.socket,
        &["--timeout", "2", "log", "--event", "e", "--component", "c"],
    );
    let mut import = witness_spawn(&daemon.socket, &["--timeout", "2", "import", "-"]);
    let mut stdin = import.stdin.take().unwrap();
    for i in 0..100 {
        writeln!(
            stdin,
            r#"{{"event":"imported","component":"c","payload":{{"i":{i}}}}}"#
        )
        .unwrap();
    }
    drop(stdin);
    wait_until("both appends are queued", Duration::from_secs(4), || {
        queued(&daemon) >= 101
    });
    let db = daemon.db.clone();
    daemon.kill9();
    drop(blocker);
    for (name, child) in [("log", log), ("import", import)] {
        let (code, out, err) = finish(child);
        assert_ne!(
            code, 0,
            "{name} exited 0 for entries never stored: {out} {err}"
        );
        assert!(out.is_empty(), "{name} printed a result: {out}");
        assert!(err.contains("witnessd"), "{name}: {err}");
    }
    assert_eq!(count(&db), 0);
}

use witness_protocol::{Ack, Append, Entry, ErrorCode, OnFull, ProducerRef, Request, Response};

use crate::harness::{TestDaemon, read_db};

fn append(ack: Ack, producer: Option<(u64, u64)>, n: usize) -> Request {
    Request::Append(Append {
        ack,
        on_full: OnFull::Wait,
        producer: producer.map(|(producer_id, first_number)| ProducerRef {
            producer_id,
            first_number,
        }),
        entries: (0..n).map(|_| Entry::new("e", "c")).collect(),
    })
}

#[test]
fn an_answer_larger_than_the_connections_frame_limit_is_delivered() {
    let daemon = TestDaemon::start_with(|config| config.max_frame_len = 1024);
    let mut raw = daemon.raw();
    // 30 small entries fit a 1 KiB request; their 30 receipts (40 bytes each) do not.
    raw.send(7, append(Ack::Committed, None, 30));
    let frame = raw.recv().expect("an answer");
    assert_eq!(frame.id, 7);
    match frame.response {
        Response::Committed { receipts } => assert_eq!(receipts.len(), 30),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_re_sent_number_that_was_never_stored_is_refused_in_every_ack_mode() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    // Producer 9 commits its number 5 only: numbers 1 to 4 were never stored.
    raw.send(1, append(Ack::Committed, Some((9, 5)), 1));
    assert!(matches!(
        raw.recv().unwrap().response,
        Response::Committed { .. }
    ));
    for (id, ack) in [(2, Ack::Durable), (3, Ack::None), (4, Ack::Committed)] {
        raw.send(id, append(ack, Some((9, 2)), 1));
        let frame = raw.recv().unwrap();
        assert_eq!(frame.id, id);
        match frame.response {
            Response::Error(reply) => {
                assert_eq!(reply.code, ErrorCode::BadRequest, "{ack:?}: {reply}");
                assert!(reply.message.contains("never stored"), "{reply}");
            }
            other => panic!("{ack:?} acknowledged a number never stored: {other:?}"),
        }
    }
    // A genuine re-send of number 5 is still recognised, in every mode.
    raw.send(5, append(Ack::Durable, Some((9, 5)), 1));
    assert_eq!(
        raw.recv().unwrap().response,
        Response::Committed { receipts: vec![] }
    );
    assert_eq!(count(&daemon.db), 1);
}

/// The receipts of an append of `n` entries numbered from `first` by `producer`.
fn receipts(raw: &mut crate::harness::Raw, producer: u64, first: u64, n: usize) -> Response {
    raw.send(1, append(Ack::Committed, Some((producer, first)), n));
    raw.recv().unwrap().response
}

#[test]
fn re_sent_numbers_are_found_across_many_appends_of_many_producers() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    // Producer 7's numbers 1..=40 in appends of 4, between appends of two other producers,
    // then 51..=52 after a gap of numbers it never sent.
    let mut original = Vec::new();
    for k in 0..10 {
        match receipts(&mut raw, 7, 1 + 4 * k, 4) {
            Response::Committed { receipts } => original.extend(receipts),
            other => panic!("{other:?}"),
        }
        receipts(&mut raw, 8, 1 + k, 1);
        receipts(&mut raw, 9, 1 + 2 * k, 2);
    }
    let after_gap = receipts(&mut raw, 7, 51, 2);
    let stored = count(&daemon.db);
    // A re-send spanning several appends answers with the first receipts, in order.
    assert_eq!(
        receipts(&mut raw, 7, 3, 30),
        Response::Committed {
            receipts: original[2..32].to_vec()
        }
    );
    // Partly known, partly new: the known part from the log, the rest written.
    let Response::Committed { receipts: known } = after_gap else {
        panic!("{after_gap:?}")
    };
    match receipts(&mut raw, 7, 51, 4) {
        Response::Committed { receipts } => {
            assert_eq!(receipts[..2], known[..]);
            assert_eq!(receipts[2].seq as i64, stored + 1);
        }
        other => panic!("{other:?}"),
    }
    let stored = count(&daemon.db);
    // Numbers in the gap were never stored: refused, pointing at the first of them.
    match receipts(&mut raw, 7, 39, 12) {
        Response::Error(reply) => {
            assert_eq!(reply.code, ErrorCode::BadRequest, "{reply}");
            assert!(reply.message.contains("number 41 of producer 7"), "{reply}");
            assert_eq!(reply.entry_index, Some(2));
        }
        other => panic!("acknowledged numbers never stored: {other:?}"),
    }
    assert_eq!(count(&daemon.db), stored);
    let dir = daemon.stop();
    crate::harness::verify_file(&dir.path().join("witness.db"));
}

/// Waits for a daemon to exit, for at most `within`, and returns its status.
fn exits_within(mut daemon: Witnessd, within: Duration) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            return (status, daemon.log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes or replaces the database under a running daemon; nothing logged afterwards may be
/// acknowledged, and the daemon must stop with a non-zero status, saying why.
fn database_file_goes_away(replace: bool) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut client = Client::connect(&daemon.socket).unwrap();
    assert_eq!(
        client
            .log(witness_client::Entry::new("before", "c"))
            .unwrap()
            .seq,
        1
    );
    if replace {
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &daemon.db).unwrap();
    } else {
        std::fs::remove_file(&daemon.db).unwrap();
    }
    let mut receipts = Vec::new();
    for _ in 0..20 {
        match client.log(witness_client::Entry::new("after", "c")) {
            Ok(receipt) => receipts.push(receipt),
            Err(_) => break,
        }
    }
    assert!(
        receipts.is_empty(),
        "acknowledged into a file that is not the log: {receipts:?}"
    );
    let (status, log) = exits_within(daemon, Duration::from_secs(15));
    assert!(!status.success(), "{status:?}: {log}");
    let said = if replace {
        "was replaced"
    } else {
        "was deleted"
    };
    assert!(log.contains(said), "{log}");
}

#[test]
fn a_database_deleted_under_the_daemon_stops_acknowledgements_and_the_daemon() {
    database_file_goes_away(false);
}

#[test]
fn a_database_replaced_under_the_daemon_stops_acknowledgements_and_the_daemon() {
    database_file_goes_away(true);
}

#[test]
fn a_link_to_a_database_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    daemon.client_log("first");
    let symlink = dir.path().join("symlink.db");
    std::os::unix::fs::symlink(&daemon.db, &symlink).unwrap();
    let hardlink = dir.path().join("hardlink.db");
    std::fs::hard_link(&daemon.db, &hardlink).unwrap();
    for (name, path) in [("symlink", &symlink), ("hard link", &hardlink)] {
        let other = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(crate::harness::binary("witnessd"))
            .arg("--socket")
            .arg(other.path().join("s.sock"))
            .arg("--db")
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains("in use by another witnessd"),
            "{name}: {stderr}"
        );
    }
    assert_eq!(daemon.client_log("second"), 2);
}

#[test]
fn a_new_log_is_announced_and_refused_where_one_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("not/yet");
    let db = nested.join("witness.db");
    let run = |extra: &[&str]| {
        std::process::Command::new(crate::harness::binary("witnessd"))
            .arg("--socket")
            .arg(dir.path().join("w.sock"))
            .arg("--db")
            .arg(&db)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = run(&["--create", "false"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no log at") && stderr.contains("create = false"),
        "{stderr}"
    );
    assert!(!nested.exists(), "a refused start created folders");
    // --init makes one on purpose, and says so; a second time it leaves it.
    let init = run(&["--init"]);
    assert!(init.status.success(), "{init:?}");
    assert!(String::from_utf8_lossy(&init.stdout).contains("created a new log at"));
    let again = run(&["--init"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already exists"));
    // An ordinary start on a fresh path says it created the log.
    let other = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(other.path(), &[]);
    assert!(
        daemon.log().contains("created a new log at"),
        "{}",
        daemon.log()
    );
    // Issue 28, item 18: a first start is a normal start, not two warnings.
    assert!(!daemon.log().contains("WARN"), "{}", daemon.log());
    // And the log says values as people write them, not Rust's debug forms.
    let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
    for _ in 0..3 {
        client.log(witness_client::Entry::new("e", "c")).unwrap();
    }
    drop(client);
    daemon.signal(libc::SIGTERM);
    let log_file = daemon.stderr.clone();
    assert!(daemon.wait().success());
    let log = std::fs::read_to_string(log_file).unwrap();
    for debug_form in ["Some(", "Ok(", "=None", "\\n"] {
        assert!(!log.contains(debug_form), "{debug_form}: {log}");
    }
    let stopped = log
        .lines()
        .find(|line| line.contains("writer stopped"))
        .unwrap();
    assert!(stopped.contains(" mean_batch=1.0 "), "{stopped}");
    assert!(log.contains("watchdog=off"), "{log}");
}

#[test]
fn the_receive_time_is_taken_before_the_wait_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--queue", "16"]);
    let blocker = wedge(&daemon);
    // Two connections take all the queue's room (one connection may hold 14 of its 16
    // entries), and the wedged writer holds it.
    let fillers: Vec<_> = [14, 2]
        .into_iter()
        .map(|n| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                let entries = (0..n).map(|_| witness_client::Entry::new("filler", "c"));
                Client::connect(&socket)
                    .unwrap()
                    .log_batch(entries.collect())
                    .unwrap();
            })
        })
        .collect();
    wait_until(
        "the fillers hold the queue",
        Duration::from_secs(10),
        || queued(&daemon) >= 16,
    );
    let sent_ns = now_ns();
    let socket = daemon.socket.clone();
    let waiter = std::thread::spawn(move || {
        Client::connect(&socket)
            .unwrap()
            .log(witness_client::Entry::new("waiter", "c"))
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let released_ns = now_ns();
    drop(blocker);
    for filler in fillers {
        filler.join().unwrap();
    }
    let receipt = waiter.join().unwrap();
    let ts: i64 = read_db(&daemon.db)
        .query_row(
            "SELECT ts FROM entries WHERE seq = ?1",
            [receipt.seq as i64],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        sent_ns <= ts && ts < released_ns,
        "ts {ts} should fall between the send ({sent_ns}) and the end of the wait \
         ({released_ns})"
    );
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}
