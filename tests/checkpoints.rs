//! Signed checkpoints with the real `witnessd`: the key made at first start, checkpoints
//! kept in the database and outside it, and a daemon that refuses a database that no longer
//! holds what it signed: a cut tail, another log's file, a state file signed by another
//! key, and a write-ahead log damaged after `kill -9` under load.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use witness_client::{Client, Entry};
use witness_daemon::format::tree::Tiles;
use witness_protocol::note::{Checkpoint, Note, VerifierKey};

use crate::harness::{Witnessd, binary, count, read_db, witness};

/// A configuration that signs every 10 ms, so that a test need not wait a second.
fn fast_signing(dir: &Path) -> String {
    let file = dir.join("witnessd.toml");
    std::fs::write(
        &file,
        "checkpoint_interval_ms = 10\norigin = \"test.example/log\"\n",
    )
    .unwrap();
    file.display().to_string()
}

fn log_n(socket: &Path, n: usize) {
    let mut client = Client::connect(socket).unwrap();
    for index in 0..n {
        client
            .log(Entry::new("e", "c").payload(serde_json::json!(index)))
            .unwrap();
    }
}

/// Starts `witnessd` on `dir`; it must refuse to start, and its reason is returned.
fn refused(dir: &Path, config: &str) -> String {
    let output = Command::new(binary("witnessd"))
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(dir.join("witness.sock"))
        .arg("--db")
        .arg(dir.join("witness.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn checkpoints_are_signed_kept_outside_the_database_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    let key_file = dir.path().join("witness.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let verifier_text = std::fs::read_to_string(dir.path().join("witness.key.pub")).unwrap();
    let verifier = VerifierKey::parse(&verifier_text).unwrap();
    assert_eq!(verifier.name(), "test.example/log");
    let (code, printed, _) = witness(&daemon.socket, &["key"], None);
    assert_eq!((code, printed.trim()), (0, verifier_text.trim()));
    assert!(
        daemon.log().contains("created the log's signing key"),
        "{}",
        daemon.log()
    );

    log_n(&daemon.socket, 50);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    // At stop the last entries are signed: the state file holds the latest checkpoint, which
    // is also the newest in the database, and it signs exactly the tree of the entries.
    let state = std::fs::read_to_string(dir.path().join("witness.checkpoint")).unwrap();
    let db = read_db(&dir.path().join("witness.db"));
    let stored: String = db
        .query_row(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(stored, state);
    let checkpoint =
        Checkpoint::parse(Note::parse(&state).unwrap().verify(&verifier).unwrap()).unwrap();
    assert_eq!(checkpoint.origin, "test.example/log");
    assert_eq!(checkpoint.size, 50);
    assert_eq!(Tiles::new(&db).root(50).unwrap(), checkpoint.root);

    // A restart with the same log goes on, and `witness checkpoint` shows what it signs.
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 5);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, note, _) = witness(&daemon.socket, &["checkpoint"], None);
    assert_eq!(code, 0);
    let latest = Checkpoint::parse(Note::parse(&note).unwrap().verify(&verifier).unwrap()).unwrap();
    assert_eq!(latest.size, 55);
}

#[test]
fn a_database_that_lost_what_was_signed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 40);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let db = dir.path().join("witness.db");
    let pristine = dir.path().join("pristine.db");
    std::fs::copy(&db, &pristine).unwrap();

    // The tail cut, and the tree rebuilt to fit: the chain and the tree alone would not
    // notice.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DELETE FROM entries WHERE seq > 30; DELETE FROM producer_runs WHERE first_seq > 30;
             UPDATE producers SET last_number = 30;
             DROP TABLE tiles; DROP TABLE checkpoints; PRAGMA user_version = 3;",
        )
        .unwrap();
    let reason = refused(dir.path(), &config);
    assert!(reason.contains("entries 31 to 40 are missing"), "{reason}");
    assert!(reason.contains("witness.checkpoint"), "{reason}");

    // Another log's file in its place.
    let other = tempfile::tempdir().unwrap();
    let other_daemon = Witnessd::start(other.path(), &[]);
    log_n(&other_daemon.socket, 60);
    other_daemon.signal(libc::SIGTERM);
    assert!(other_daemon.wait().success());
    std::fs::copy(other.path().join("witness.db"), &db).unwrap();
    let reason = refused(dir.path(), &config);
    assert!(
        reason.contains("rewritten or the file replaced"),
        "{reason}"
    );

    // The right file, but a state file signed by another key.
    std::fs::copy(&pristine, &db).unwrap();
    let state = dir.path().join("witness.checkpoint");
    let ours = std::fs::read(&state).unwrap();
    std::fs::copy(other.path().join("witness.checkpoint"), &state).unwrap();
    let reason = refused(dir.path(), &config);
    assert!(
        reason.contains("does not verify with this log's key"),
        "{reason}"
    );

    // Put back, it starts, and nothing was lost.
    std::fs::write(&state, ours).unwrap();
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    drop(daemon);
    assert_eq!(count(&db), 40);
}

#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let key = dir.path().join("witness.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(binary("witnessd"))
        .arg("--socket")
        .arg(dir.path().join("witness.sock"))
        .arg("--db")
        .arg(dir.path().join("witness.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    // Garbage in the key file is named, and never echoed.
    std::fs::write(&key, "PRIVATE+KEY+x+00000000+c2VjcmV0").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = Command::new(binary("witnessd"))
        .arg("--socket")
        .arg(dir.path().join("witness.sock"))
        .arg("--db")
        .arg(dir.path().join("witness.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("witness.key"), "{stderr}");
    assert!(!stderr.contains("c2VjcmV0"), "{stderr}");
}

#[test]
fn a_write_ahead_log_damaged_after_kill_9_under_load_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    // Sign often, and leave every commit in the WAL (no checkpoint into the main file).
    let config = dir.path().join("witnessd.toml");
    std::fs::write(
        &config,
        "checkpoint_interval_ms = 10\ncheckpoint_pages = 1048576\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    // A first few entries reach the main file: the writer copies the WAL into it after a
    // second idle.
    log_n(&daemon.socket, 10);
    let main_file = dir.path().join("witness.db");
    crate::harness::wait_until(
        "the WAL is copied into the main file",
        std::time::Duration::from_secs(20),
        || std::fs::metadata(dir.path().join("witness.db-wal")).is_ok_and(|wal| wal.len() == 0),
    );
    let socket = daemon.socket.clone();
    let writer = std::thread::spawn(move || {
        let options = witness_client::Options {
            reconnect_timeout: std::time::Duration::from_millis(200),
            ..witness_client::Options::default()
        };
        let mut client = Client::connect_with(&socket, options).unwrap();
        let mut acknowledged = 0u64;
        for index in 0.. {
            match client.log(Entry::new("load", "c").payload(serde_json::json!(index))) {
                Ok(receipt) => acknowledged = receipt.seq,
                Err(_) => return acknowledged,
            }
        }
        acknowledged
    });
    let state = dir.path().join("witness.checkpoint");
    crate::harness::wait_until(
        "a few checkpoints are signed",
        std::time::Duration::from_secs(20),
        || {
            std::fs::read_to_string(&state)
                .ok()
                .and_then(|note| Note::parse(&note).ok())
                .and_then(|note| Checkpoint::parse(&note.text).ok())
                .is_some_and(|checkpoint| checkpoint.size >= 200)
        },
    );
    daemon.kill9();
    let acknowledged = writer.join().unwrap();
    let signed = Checkpoint::parse(
        &Note::parse(&std::fs::read_to_string(&state).unwrap())
            .unwrap()
            .text,
    )
    .unwrap()
    .size;
    assert!(
        signed <= acknowledged,
        "{signed} signed, {acknowledged} acknowledged"
    );
    // The WAL is damaged: its frames are gone, and with them the commits since the main file
    // was last written.
    let wal = dir.path().join("witness.db-wal");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(0)
        .unwrap();
    let _ = std::fs::remove_file(dir.path().join("witness.db-shm"));
    let left = count(&main_file) as u64;
    assert!(left >= 10, "{left}");
    assert!(left < signed, "{left} left, {signed} signed");
    let reason = refused(dir.path(), &config);
    assert!(
        reason.contains(&format!("entries {} to {signed} are missing", left + 1)),
        "{reason}"
    );
}
