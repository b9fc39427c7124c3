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
