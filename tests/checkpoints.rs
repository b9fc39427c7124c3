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

use crate::harness::{BACK_TO_VERSION_4, Witnessd, binary, count, read_db, witness};

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

/// Starts `witnessd` on `dir` with `extra` flags; it must refuse to start, and its reason is
/// returned.
fn refused(dir: &Path, extra: &[&str]) -> String {
    let output = Command::new(binary("witnessd"))
        .args(extra)
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
        .execute_batch(&format!(
            "{BACK_TO_VERSION_4}
             DELETE FROM entries WHERE seq > 30; DELETE FROM producer_runs WHERE first_seq > 30;
             UPDATE producers SET last_number = 30;
             DROP TABLE tiles; DROP TABLE checkpoints; PRAGMA user_version = 3;"
        ))
        .unwrap();
    let reason = refused(dir.path(), &["--config", &config]);
    assert!(reason.contains("entries 31 to 40 are missing"), "{reason}");
    assert!(reason.contains("witness.checkpoint"), "{reason}");

    // Another log's file in its place.
    let other = tempfile::tempdir().unwrap();
    let other_daemon = Witnessd::start(other.path(), &[]);
    log_n(&other_daemon.socket, 60);
    other_daemon.signal(libc::SIGTERM);
    assert!(other_daemon.wait().success());
    std::fs::copy(other.path().join("witness.db"), &db).unwrap();
    let reason = refused(dir.path(), &["--config", &config]);
    assert!(
        reason.contains("rewritten or the file replaced"),
        "{reason}"
    );

    // The right file, but a state file signed by another key.
    std::fs::copy(&pristine, &db).unwrap();
    let state = dir.path().join("witness.checkpoint");
    let ours = std::fs::read(&state).unwrap();
    std::fs::copy(other.path().join("witness.checkpoint"), &state).unwrap();
    let reason = refused(dir.path(), &["--config", &config]);
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
    let stderr = refused(dir.path(), &[]);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    // Garbage in the key file is named, and never echoed.
    std::fs::write(&key, "PRIVATE+KEY+x+00000000+c2VjcmV0").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = refused(dir.path(), &[]);
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
    let reason = refused(dir.path(), &["--config", &config]);
    // Named to the last entry acknowledged, not only to the last one signed.
    let last = missing_to(&reason, left + 1);
    assert!(
        last >= acknowledged,
        "{acknowledged} acknowledged: {reason}"
    );
    // The same checkpoint, kept elsewhere, shows it offline too.
    let key = dir.path().join("witness.key.pub");
    let (code, out, _) = verify_against(&main_file, &state, &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("are missing"), "{out}");
}

/// The last `seq` of the range "entries FIRST to LAST are missing" a refusal names, checking
/// that it starts at `first`.
fn missing_to(reason: &str, first: u64) -> u64 {
    let named = format!("entries {first} to ");
    let at = reason.find(&named).unwrap_or_else(|| panic!("{reason}")) + named.len();
    let rest = &reason[at..];
    let (last, rest) = rest.split_once(' ').unwrap();
    assert!(rest.starts_with("are missing"), "{reason}");
    last.parse().unwrap()
}

/// Calls `log` in a loop on a thread until the daemon stops answering; returns the last `seq`
/// acknowledged and a count of acknowledgements that grows while it runs.
fn log_until_killed(
    socket: &Path,
) -> (
    std::thread::JoinHandle<u64>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let socket = socket.to_owned();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&answered);
    let writer = std::thread::spawn(move || {
        let options = witness_client::Options {
            reconnect_timeout: std::time::Duration::from_millis(200),
            ..witness_client::Options::default()
        };
        let mut client = Client::connect_with(&socket, options).unwrap();
        let mut acknowledged = 0u64;
        for index in 0.. {
            match client.log(Entry::new("load", "c").payload(serde_json::json!(index))) {
                Ok(receipt) => {
                    acknowledged = receipt.seq;
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => return acknowledged,
            }
        }
        acknowledged
    });
    (writer, answered)
}

#[test]
fn entries_acknowledged_after_the_last_signature_are_named_when_a_damaged_wal_loses_them() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("64 bytes overwritten mid-file", |wal| {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
            let middle = file.metadata().unwrap().len() / 2;
            file.write_all_at(&[0xa5; 64], middle).unwrap();
        }),
        ("cut in half", |wal| {
            let file = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
            let len = file.metadata().unwrap().len();
            file.set_len(len / 2).unwrap();
        }),
        ("its salt zeroed", |wal| {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
            file.write_all_at(&[0; 8], 16).unwrap();
        }),
    ];
    for (how, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        // No signature while the load runs (an hour apart), and every commit left in the WAL.
        let config = dir.path().join("witnessd.toml");
        std::fs::write(
            &config,
            "checkpoint_interval_ms = 3600000\ncheckpoint_pages = 1048576\n",
        )
        .unwrap();
        let config = config.display().to_string();
        let daemon = Witnessd::start(dir.path(), &["--config", &config]);
        log_n(&daemon.socket, 10);
        let wal = dir.path().join("witness.db-wal");
        crate::harness::wait_until(
            "the WAL is copied into the main file",
            std::time::Duration::from_secs(20),
            || std::fs::metadata(&wal).is_ok_and(|wal| wal.len() == 0),
        );
        let (writer, answered) = log_until_killed(&daemon.socket);
        crate::harness::wait_until(
            "a thousand entries are acknowledged",
            std::time::Duration::from_secs(60),
            || answered.load(std::sync::atomic::Ordering::Relaxed) >= 1000,
        );
        daemon.kill9();
        let acknowledged = writer.join().unwrap();
        assert!(
            !dir.path().join("witness.checkpoint").exists(),
            "{how}: nothing was signed"
        );
        damage(&wal);
        let _ = std::fs::remove_file(dir.path().join("witness.db-shm"));
        let left = count(&dir.path().join("witness.db")) as u64;
        assert!(left < acknowledged, "{how}: {left} left of {acknowledged}");
        let reason = refused(dir.path(), &["--config", &config]);
        let last = missing_to(&reason, left + 1);
        assert!(
            last >= acknowledged,
            "{how}: {acknowledged} acknowledged: {reason}"
        );
        assert!(reason.contains("witness.acked"), "{how}: {reason}");
        // Accepting the loss fills the range; no sequence number is handed out twice.
        let daemon = Witnessd::start(dir.path(), &["--config", &config, "--accept-loss"]);
        let mut client = Client::connect(&daemon.socket).unwrap();
        let next = client.log(Entry::new("after", "c")).unwrap();
        assert!(next.seq > last + 1, "{how}: {} after {last}", next.seq);
        drop(client);
        daemon.signal(libc::SIGTERM);
        assert!(daemon.wait().success(), "{how}");
    }
}

#[test]
fn a_garbage_acknowledged_mark_is_named_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 5);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let mark = dir.path().join("witness.acked");
    assert_eq!(std::fs::metadata(&mark).unwrap().len(), 56);
    assert_eq!(
        std::fs::metadata(&mark).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(&mark, b"<script>not a mark</script>").unwrap();
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 1);
    let log = daemon.log();
    assert!(log.contains("is not an acknowledged mark"), "{log}");
    assert!(!log.contains("<script>"), "{log}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    // Written again at the next commit.
    assert_eq!(std::fs::metadata(&mark).unwrap().len(), 56);
}

/// Rewrites the payload of entry `seq` and recomputes every hash from it on, and drops the
/// tree so that it is rebuilt to fit: what someone who can write the file can do. The chain
/// alone then verifies.
fn rewrite_and_recompute(db: &Path, seq: i64, payload: &str) {
    use witness_daemon::format::{chain, row};
    let connection = rusqlite::Connection::open(db).unwrap();
    connection
        .execute(
            "UPDATE entries SET payload = ?1 WHERE seq = ?2",
            (payload, seq),
        )
        .unwrap();
    let mut previous: [u8; 32] = if seq == 1 {
        chain::GENESIS
    } else {
        connection
            .query_row("SELECT hash FROM entries WHERE seq = ?1", [seq - 1], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let last: i64 = connection
        .query_row("SELECT max(seq) FROM entries", [], |r| r.get(0))
        .unwrap();
    let select = format!(
        "SELECT {} FROM entries WHERE seq = ?1",
        row::select_columns()
    );
    let mut scratch = Vec::new();
    for at in seq..=last {
        let hash = connection
            .query_row(&select, [at], |stored| {
                let values = row::read_values(stored).unwrap();
                Ok(chain::hash_row(&previous, &values, &mut scratch))
            })
            .unwrap();
        connection
            .execute(
                "UPDATE entries SET hash = ?1 WHERE seq = ?2",
                (&hash[..], at),
            )
            .unwrap();
        previous = hash;
    }
    connection
        .execute_batch(&format!(
            "{BACK_TO_VERSION_4} DROP TABLE tiles; DROP TABLE checkpoints; PRAGMA user_version = 3;"
        ))
        .unwrap();
}

fn verify_offline(db: &Path, extra: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary("witness"))
        .arg("verify")
        .arg("--db")
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `witness verify --db DB --checkpoint CHECKPOINT --key KEY`.
fn verify_against(db: &Path, checkpoint: &Path, key: &Path) -> (i32, String, String) {
    verify_offline(
        db,
        &[
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
}

#[test]
fn verify_against_a_checkpoint_catches_what_the_chain_alone_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 40);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let db = dir.path().join("witness.db");
    let saved = dir.path().join("saved.checkpoint");
    std::fs::copy(dir.path().join("witness.checkpoint"), &saved).unwrap();
    let key = dir.path().join("witness.key.pub");
    let against = [
        "--checkpoint",
        saved.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let pristine = dir.path().join("pristine.db");
    std::fs::copy(&db, &pristine).unwrap();

    let (code, out, err) = verify_offline(&db, &against);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("entries 1 to 40 are the tree it signed"),
        "{out}"
    );

    // A rewrite with every later hash recomputed: the chain is fooled, the checkpoint is not,
    // and neither is the daemon.
    rewrite_and_recompute(&db, 5, r#"{"forged":true}"#);
    let (code, out, err) = verify_offline(&db, &[]);
    assert_eq!(code, 0, "the chain alone cannot tell: {out}{err}");
    let (code, out, _) = verify_offline(&db, &against);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not those the checkpoint signed"), "{out}");
    let reason = refused(dir.path(), &["--config", &config]);
    assert!(reason.contains("rewritten"), "{reason}");

    // A cut tail, and an empty table.
    for (sql, missing) in [
        (
            "DELETE FROM entries WHERE seq > 30",
            "entries 31 to 40 are missing",
        ),
        ("DELETE FROM entries", "entries 1 to 40 are missing"),
    ] {
        std::fs::copy(&pristine, &db).unwrap();
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(&format!(
                "{BACK_TO_VERSION_4} {sql}; DROP TABLE tiles; DROP TABLE checkpoints; DELETE FROM producer_runs;
                 DELETE FROM producers; PRAGMA user_version = 3;"
            ))
            .unwrap();
        let (code, out, _) = verify_offline(&db, &against);
        assert_eq!(code, 1, "{sql}: {out}");
        assert!(out.contains(missing), "{sql}: {out}");
        let reason = refused(dir.path(), &["--config", &config]);
        assert!(reason.contains(missing), "{sql}: {reason}");
    }

    // Another log's file.
    let other = tempfile::tempdir().unwrap();
    let other_daemon = Witnessd::start(other.path(), &[]);
    log_n(&other_daemon.socket, 50);
    other_daemon.signal(libc::SIGTERM);
    assert!(other_daemon.wait().success());
    let (code, out, _) = verify_offline(&other.path().join("witness.db"), &against);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not those the checkpoint signed"), "{out}");

    // Garbage in the checkpoint or the key cannot be checked: 2.
    std::fs::copy(&pristine, &db).unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not a note").unwrap();
    let (code, out, _) = verify_against(&db, &garbage, &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    let (code, _, err) = verify_offline(
        &db,
        &["--checkpoint", saved.to_str().unwrap(), "--key", "x+y"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("bad key"), "{err}");
    let (code, _, err) = verify_offline(
        &db,
        &["--checkpoint", "/no/such", "--key", key.to_str().unwrap()],
    );
    assert_eq!(code, 2);
    assert!(err.contains("/no/such"), "{err}");
}

#[test]
fn an_accepted_loss_is_recorded_and_no_sequence_number_is_handed_out_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 40);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let db = dir.path().join("witness.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "{BACK_TO_VERSION_4}
             DELETE FROM entries WHERE seq > 30; DROP TABLE tiles; DROP TABLE checkpoints;
             DELETE FROM producer_runs WHERE first_seq > 30;
             UPDATE producers SET last_number = 30, last_run = 30; DELETE FROM cost_hourly;
             INSERT INTO cost_hourly SELECT ts / 3600000000000, component, event, '', count(*), 0, 0, 0
             FROM entries GROUP BY 1, 2, 3;
             PRAGMA user_version = 3;"
        ))
        .unwrap();
    let reason = refused(dir.path(), &["--config", &config]);
    assert!(reason.contains("--accept-loss"), "{reason}");

    let daemon = Witnessd::start(dir.path(), &["--config", &config, "--accept-loss"]);
    assert!(
        daemon.log().contains("accepting the loss"),
        "{}",
        daemon.log()
    );
    let mut client = Client::connect(&daemon.socket).unwrap();
    let next = client.log(Entry::new("after", "c")).unwrap();
    assert_eq!(
        next.seq, 42,
        "31 to 40 are never handed out again, 41 records the loss"
    );
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let read = read_db(&db);
    let events: Vec<(i64, String, String)> = read
        .prepare("SELECT seq, event, payload FROM entries WHERE seq > 30 ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.try_into())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 12);
    assert!(
        events[..10]
            .iter()
            .all(|(_, event, _)| event == "witness.lost")
    );
    let (seq, event, payload) = &events[10];
    assert_eq!((*seq, event.as_str()), (41, "witness.loss_accepted"));
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        (payload["lost_from"].as_u64(), payload["lost_to"].as_u64()),
        (Some(31), Some(40))
    );
    assert!(
        payload["checkpoint"].as_str().unwrap().contains("\n40\n"),
        "{payload}"
    );
    drop(read);
    crate::harness::verify_file(&db);
    // The state now vouches for the log with its loss recorded: a plain start works.
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    drop(daemon);
}

#[test]
fn a_state_file_that_cannot_be_written_is_said_once_and_signing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    log_n(&daemon.socket, 5);
    let state = dir.path().join("witness.checkpoint");
    let signed_size = |state: &Path| {
        let note = std::fs::read_to_string(state).ok()?;
        Some(Checkpoint::parse(&Note::parse(&note).ok()?.text).ok()?.size)
    };
    // The first checkpoint may cover fewer than the five: wait for the one that covers
    // them all, after which nothing is left to sign and the file stays as it is.
    crate::harness::wait_until(
        "a checkpoint of the five is signed",
        std::time::Duration::from_secs(20),
        || signed_size(&state) == Some(5),
    );
    // A folder where the state file should be: every write fails (even as root).
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("occupied"), "").unwrap();
    for _ in 0..5 {
        log_n(&daemon.socket, 3);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&state).unwrap();
    log_n(&daemon.socket, 1);
    crate::harness::wait_until(
        "signing resumes",
        std::time::Duration::from_secs(20),
        || daemon.log().contains("checkpoints are signed again"),
    );
    let log = daemon.log();
    assert_eq!(log.matches("cannot sign a checkpoint").count(), 1, "{log}");
    // Every entry committed meanwhile is covered again.
    let note = std::fs::read_to_string(&state).unwrap();
    let checkpoint = Checkpoint::parse(&Note::parse(&note).unwrap().text).unwrap();
    assert_eq!(checkpoint.size, 21);
}

/// Issue 28, item 7: the last checkpoint of a burst reaches the daemon's log at the stop,
/// not only at the next start (and, without a stop, within a minute); a copy is made at most
/// once a minute all the same.
#[test]
fn the_last_checkpoint_of_a_burst_reaches_the_daemons_log_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_signing(dir.path());
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    crate::harness::wait_until(
        "the first checkpoint is logged",
        std::time::Duration::from_secs(20),
        || daemon.log().contains("signed checkpoint"),
    );
    log_n(&daemon.socket, 50);
    let mut client = Client::connect(&daemon.socket).unwrap();
    crate::harness::wait_until(
        "a checkpoint covers the burst",
        std::time::Duration::from_secs(20),
        || {
            let note = client.checkpoint().unwrap().note.unwrap_or_default();
            Checkpoint::parse(&Note::parse(&note).unwrap().text)
                .unwrap()
                .size
                == 50
        },
    );
    drop(client);
    let logged = |log: &str| {
        log.lines()
            .filter(|line| line.contains("signed checkpoint"))
            .count()
    };
    assert_eq!(
        logged(&daemon.log()),
        1,
        "at most one copy a minute: {}",
        daemon.log()
    );
    daemon.signal(libc::SIGTERM);
    let log_file = daemon.stderr.clone();
    assert!(daemon.wait().success());
    let log = std::fs::read_to_string(log_file).unwrap();
    let last = log
        .lines()
        .rfind(|line| line.contains("signed checkpoint"))
        .unwrap();
    assert!(
        last.contains(" size=50 "),
        "the stop's copy names 50 entries: {last}"
    );
    // Issue 28, item 18: the line reads as fields, and the note rebuilt from them as README
    // says verifies with the log's key.
    let field = |name: &str| {
        last.split(' ')
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {last}"))
    };
    assert!(!last.contains("\\n"), "{last}");
    let note = format!(
        "{}\n{}\n{}\n\n— {} {}\n",
        field("origin"),
        field("size"),
        field("root"),
        field("key"),
        field("signature")
    );
    let key = std::fs::read_to_string(dir.path().join("witness.key.pub")).unwrap();
    let key = VerifierKey::parse(key.trim()).unwrap();
    let checkpoint = Checkpoint::verified(&note, &key).unwrap();
    assert_eq!(checkpoint.size, 50);
}
