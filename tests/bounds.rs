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

use std::io::Write;

use witness_protocol::limits::MAX_ENTRIES_PER_APPEND;
use witness_protocol::{Ack, Append, OnFull, Request, Response};

use crate::harness::{Raw, TestDaemon};

fn append(ack: Ack, on_full: OnFull, n: usize, event: &str) -> Request {
    Request::Append(Append {
        ack,
        on_full,
        producer: None,
        entries: (0..n).map(|_| Entry::new(event, "c")).collect(),
    })
}

#[test]
fn an_append_larger_than_the_queue_is_served() {
    let daemon = TestDaemon::start_with(|config| config.queue_capacity = 64);
    let mut raw = daemon.raw();
    for (id, on_full) in [(1, OnFull::Wait), (2, OnFull::Busy)] {
        raw.send(
            id,
            append(Ack::Committed, on_full, MAX_ENTRIES_PER_APPEND, "big"),
        );
        match raw.recv().expect("an answer").response {
            Response::Committed { receipts } => assert_eq!(receipts.len(), MAX_ENTRIES_PER_APPEND),
            other => panic!("{on_full:?}: {other:?}"),
        }
    }
    // Others are served meanwhile and after.
    daemon.client().log(Entry::new("small", "c")).unwrap();
    assert_eq!(count(&daemon.db), 2 * MAX_ENTRIES_PER_APPEND as i64 + 1);
}

#[test]
fn a_flooding_connection_waits_on_its_own_share_and_others_go_first() {
    let daemon = TestDaemon::start_with(|config| config.queue_capacity = 1024);
    // The writer is stuck committing one entry: nothing more leaves the queue.
    let blocker = rusqlite::Connection::open(&daemon.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut first = daemon.raw();
    first.send(1, append(Ack::Queued, OnFull::Wait, 1, "first"));
    assert_eq!(
        first.recv().unwrap().response,
        Response::Queued { count: 1 }
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut flooder = daemon.raw();
    let mut writer = flooder.stream.try_clone().unwrap();
    let flooding = std::thread::spawn(move || {
        for id in 1..=200u64 {
            let mut bytes = Vec::new();
            let frame = witness_protocol::RequestFrame {
                id,
                request: append(Ack::Queued, OnFull::Wait, 64, "flood"),
            };
            witness_protocol::frame::encode(&frame, u32::MAX >> 8, &mut bytes).unwrap();
            if writer.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    // The flooder fills what it may of the queue, and then waits.
    let mut flooded = 0;
    while flooded < 10 {
        match flooder.recv().unwrap().response {
            Response::Queued { .. } => flooded += 1,
            other => panic!("{other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // Another connection still finds room at once.
    let mut logger = daemon.raw();
    logger.send(1, append(Ack::Queued, OnFull::Busy, 1, "polite"));
    assert_eq!(
        logger.recv().unwrap().response,
        Response::Queued { count: 1 },
        "the flooder took the whole queue"
    );
    logger.send(2, append(Ack::Committed, OnFull::Wait, 1, "polite"));
    drop(blocker);
    // And its entries are taken in turn with the flooder's, not after its whole backlog.
    let seq = match logger.recv().unwrap().response {
        Response::Committed { receipts } => receipts[0].seq,
        other => panic!("{other:?}"),
    };
    assert!(
        seq <= 4 * 64,
        "the polite entry waited behind the flood: seq {seq}"
    );
    drop(flooder);
    flooding.join().unwrap();
}

#[test]
fn sigterm_stops_within_a_bound_when_a_client_reads_no_answers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut stuck = Raw::connect(&daemon.socket);
    stuck.hello();
    stuck
        .stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Pings until the socket's buffers are full both ways: the daemon stops reading it.
    let mut bytes = Vec::new();
    let frame = witness_protocol::RequestFrame {
        id: 1,
        request: Request::Ping,
    };
    witness_protocol::frame::encode(&frame, u32::MAX >> 8, &mut bytes).unwrap();
    let chunk = bytes.repeat(1000);
    while stuck.stream.write_all(&chunk).is_ok() {}
    let logged = daemon.client_log("still served");
    assert_eq!(logged, 1);
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    let mut daemon = daemon;
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "SIGTERM did not stop the daemon: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", daemon.log());
    drop(stuck);
}
