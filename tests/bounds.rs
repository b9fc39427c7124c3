//! Every wait has a bound: a client facing a hung daemon gets an error, not a hang, and a
//! daemon facing hostile or stuck clients keeps serving everyone else and still stops.

use std::time::{Duration, Instant};

use witness_client::{Client, Entry, Error, Options, Spool};

use crate::harness::{Witnessd, count, witness};

/// Options whose every wait is `wait`.
fn impatient(wait: Duration) -> Options {
    Options {
        reconnect_timeout: wait,
        connect_timeout: wait,
        answer_timeout: Some(wait),
        ..Options::default()
    }
}

#[test]
fn a_stopped_daemon_gives_timeouts_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut connected =
        Client::connect_with(&daemon.socket, impatient(Duration::from_secs(1))).unwrap();
    daemon.signal(libc::SIGSTOP);
    // The handshake of a new connection.
    let started = Instant::now();
    let (code, _, err) = witness(&daemon.socket, &["--timeout", "1", "ping"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("overloaded or hung"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // An answer on a live connection.
    let error = connected.log(Entry::new("e", "c")).unwrap_err();
    assert!(matches!(error, Error::TimedOut { .. }), "{error}");
    assert!(
        error.to_string().contains("did not answer within"),
        "{error}"
    );
    daemon.signal(libc::SIGCONT);
    // The entry was held, not lost: the next call goes on with it.
    connected.flush().unwrap();
    let receipt = connected.log(Entry::new("after", "c")).unwrap();
    assert!(receipt.seq >= 1);
    assert!(count(&daemon.db) >= 1);
}

#[test]
fn try_send_returns_at_once_when_the_spool_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let spool =
        Spool::connect_with(&daemon.socket, impatient(Duration::from_secs(20)), 256).unwrap();
    daemon.signal(libc::SIGSTOP);
    let payload = serde_json::json!({"pad": "x".repeat(1000)});
    let mut accepted = 0u64;
    let mut full = None;
    for _ in 0..1_000_000 {
        let started = Instant::now();
        match spool.try_send(Entry::new("e", "c").payload(payload.clone())) {
            Ok(()) => accepted += 1,
            Err(error) => {
                full = Some((error, started.elapsed()));
                break;
            }
        }
    }
    let (error, took) = full.expect("the queue filled while the daemon was stopped");
    assert!(
        matches!(error, Error::QueueFull { capacity: 256 }),
        "{error}"
    );
    assert!(took < Duration::from_secs(1), "try_send waited {took:?}");
    daemon.signal(libc::SIGCONT);
    spool.flush().unwrap();
    assert_eq!(count(&daemon.db) as u64, accepted);
}
