//! Bad input over a raw socket: each gets a clear error or a closed connection, and the
//! daemon and its other clients carry on with nothing committed lost.

use witness_client::Entry;
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{
    Ack, Append, ErrorCode, Hello, OnFull, PROTOCOL_VERSION, ProducerRef, Request, Response,
    ResponseFrame,
};

use crate::harness::{Raw, TestDaemon, count, verify_file};

fn error_of(frame: Option<ResponseFrame>) -> (u64, ErrorCode, String) {
    match frame {
        Some(ResponseFrame {
            id,
            response: Response::Error(reply),
        }) => (id, reply.code, reply.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn append(entries: Vec<Entry>) -> Request {
    Request::Append(Append {
        ack: Ack::Committed,
        on_full: OnFull::Wait,
        producer: None,
        entries,
    })
}

/// Logs an entry through a well-behaved client, proving the daemon still serves.
fn still_serving(daemon: &TestDaemon, expected_count: i64) {
    daemon.client().log(Entry::new("still", "serving")).unwrap();
    assert_eq!(count(&daemon.db), expected_count + 1);
    assert_eq!(verify_file(&daemon.db), (expected_count + 1) as u64);
}

#[test]
fn version_mismatch_names_both_versions() {
    let daemon = TestDaemon::start();
    let mut raw = Raw::connect(&daemon.socket);
    raw.send(
        7,
        Request::Hello(Hello {
            version: 99,
            client: "future".into(),
        }),
    );
    let (id, code, message) = error_of(raw.recv());
    assert_eq!((id, code), (7, ErrorCode::VersionMismatch));
    assert!(message.contains("version 99"), "{message}");
    assert!(
        message.contains(&format!("version {PROTOCOL_VERSION}")),
        "{message}"
    );
    assert!(raw.recv().is_none(), "connection closed");
    still_serving(&daemon, 0);
}

#[test]
fn requests_before_hello_are_refused() {
    let daemon = TestDaemon::start();
    let mut raw = Raw::connect(&daemon.socket);
    raw.send(3, append(vec![Entry::new("e", "c")]));
    let (id, code, _) = error_of(raw.recv());
    assert_eq!((id, code), (3, ErrorCode::ExpectedHello));
    assert!(raw.recv().is_none());
    still_serving(&daemon, 0);
}

#[test]
fn oversized_frame_is_refused_before_it_is_read() {
    let daemon = TestDaemon::start();
    daemon.client().log(Entry::new("before", "c")).unwrap();
    let mut raw = daemon.raw();
    // Only the prefix is sent: the daemon must not wait for, or reserve, 4 GiB.
    raw.send_bytes(&u32::MAX.to_le_bytes());
    let (id, code, message) = error_of(raw.recv());
    assert_eq!((id, code), (0, ErrorCode::FrameTooLarge));
    assert!(
        message.contains(&format!("exceeds the maximum of {MAX_FRAME_LEN} bytes")),
        "{message}"
    );
    assert!(raw.recv().is_none());
    still_serving(&daemon, 1);
}

#[test]
fn garbage_frame_gets_an_error_naming_the_request_and_the_connection_goes_on() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    let mut body = 41u64.to_le_bytes().to_vec();
    body.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01]);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_bytes(&frame);
    let (id, code, message) = error_of(raw.recv());
    assert_eq!((id, code), (41, ErrorCode::BadFrame));
    assert!(message.starts_with("undecodable frame"), "{message}");
    // Same connection, next request.
    raw.send(42, Request::Ping);
    assert_eq!(
        raw.recv().unwrap(),
        ResponseFrame {
            id: 42,
            response: Response::Pong
        }
    );
    // Pure noise with a small length prefix, too short even for an id.
    raw.send_bytes(&[3, 0, 0, 0, 1, 2, 3]);
    let (id, code, _) = error_of(raw.recv());
    assert_eq!((id, code), (0, ErrorCode::BadFrame));
    still_serving(&daemon, 0);
}

#[test]
fn truncated_frame_and_vanishing_client_harm_nothing() {
    let daemon = TestDaemon::start();
    daemon.client().log(Entry::new("before", "c")).unwrap();
    {
        let mut raw = daemon.raw();
        let mut bytes = Vec::new();
        let request = witness_protocol::RequestFrame {
            id: 1,
            request: append(vec![Entry::new("half", "c")]),
        };
        witness_protocol::frame::encode(&request, MAX_FRAME_LEN, &mut bytes).unwrap();
        raw.send_bytes(&bytes[..bytes.len() / 2]);
        // Dropped here: the client vanishes mid-frame.
    }
    {
        // And one that vanishes in the middle of the length prefix.
        let mut raw = daemon.raw();
        raw.send_bytes(&[10, 0]);
    }
    still_serving(&daemon, 1);
}

#[test]
fn invalid_json_and_over_long_fields_name_the_entry() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    let cases: Vec<(Entry, &str)> = vec![
        (
            Entry::new("e", "c").payload_text("{\"a\":"),
            "entry 1: payload is not valid JSON",
        ),
        (
            Entry::new("e", "c").payload_text("{} trailing"),
            "entry 1: payload is not valid JSON",
        ),
        (
            Entry::new("e", "c").payload_text(""),
            "entry 1: payload is not valid JSON",
        ),
        (
            Entry::new("e".repeat(257), "c"),
            "entry 1: event is 257 bytes long; the limit is 256",
        ),
        (
            Entry::new("e", "c".repeat(300)),
            "entry 1: component is 300 bytes long",
        ),
        (
            Entry::new("e", "c").payload_text(format!("\"{}\"", "x".repeat(70_000))),
            "payload is 70002 bytes",
        ),
        (
            Entry::new("e\0", "c"),
            "entry 1: event contains a NUL character",
        ),
        (
            Entry::new("e", "c").cost(witness_protocol::Cost::new(u64::MAX, 0, 0)),
            "entry 1: tokens_in is 18446744073709551615",
        ),
        (
            Entry {
                imported: Some("[1]".into()),
                ..Entry::new("e", "c")
            },
            "entry 1: imported is not a JSON object",
        ),
        (
            Entry {
                imported: Some("{\"seq\":".into()),
                ..Entry::new("e", "c")
            },
            "entry 1: imported is not a JSON object",
        ),
        (
            Entry {
                imported: Some(format!("{{\"x\":\"{}\"}}", "y".repeat(5000))),
                ..Entry::new("e", "c")
            },
            "entry 1: imported is 5008 bytes long; the limit is 4096",
        ),
    ];
    for (index, (bad, expected)) in cases.into_iter().enumerate() {
        let id = 100 + index as u64;
        raw.send(id, append(vec![Entry::new("good", "c"), bad]));
        let (answered, code, message) = error_of(raw.recv());
        assert_eq!((answered, code), (id, ErrorCode::InvalidEntry), "{message}");
        assert!(
            message.contains(expected),
            "{message} should contain {expected}"
        );
    }
    still_serving(&daemon, 0);
}

#[test]
fn bad_appends_are_refused_whole() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    raw.send(1, append(Vec::new()));
    let (_, code, message) = error_of(raw.recv());
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("at least one entry"));
    let too_many = vec![Entry::new("e", "c"); witness_protocol::limits::MAX_ENTRIES_PER_APPEND + 1];
    raw.send(2, append(too_many));
    let (_, code, message) = error_of(raw.recv());
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("at most 10000 entries"), "{message}");
    let producer = Some(ProducerRef {
        producer_id: 1,
        first_number: 0,
    });
    let request = Append {
        ack: Ack::Committed,
        on_full: OnFull::Wait,
        producer,
        entries: vec![Entry::new("e", "c")],
    };
    raw.send(3, Request::Append(request));
    let (_, code, message) = error_of(raw.recv());
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("between 1 and"), "{message}");
    still_serving(&daemon, 0);
}

#[test]
fn fire_and_forget_errors_still_come_back_with_the_id() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    let request = Append {
        ack: Ack::None,
        on_full: OnFull::Wait,
        producer: None,
        entries: vec![Entry::new("e", "c").payload_text("nope")],
    };
    raw.send(77, Request::Append(request.clone()));
    let (id, code, _) = error_of(raw.recv());
    assert_eq!((id, code), (77, ErrorCode::InvalidEntry));
    // A good fire-and-forget append gets no answer; the ping after it does.
    let good = Append {
        entries: vec![Entry::new("e", "c")],
        ..request
    };
    raw.send(78, Request::Append(good));
    raw.send(79, Request::Ping);
    assert_eq!(raw.recv().unwrap().id, 79);
    still_serving(&daemon, 1);
}

#[test]
fn a_client_that_never_reads_its_answers_slows_only_itself() {
    let daemon = TestDaemon::start_with(|config| config.max_in_flight = 8);
    let mut greedy = daemon.raw();
    greedy.stream.set_nonblocking(true).unwrap();
    // Pipeline appends and never read: the daemon stops reading this connection once its
    // answers back up, and the write below eventually blocks (would-block here).
    let mut bytes = Vec::new();
    for id in 0..20_000u64 {
        let request = witness_protocol::RequestFrame {
            id,
            request: append(vec![Entry::new("g", "c")]),
        };
        witness_protocol::frame::encode(&request, MAX_FRAME_LEN, &mut bytes).unwrap();
    }
    let mut written = 0;
    let mut stalled_since = std::time::Instant::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while written < bytes.len() && std::time::Instant::now() < deadline {
        match std::io::Write::write(&mut greedy.stream, &bytes[written..]) {
            Ok(n) => {
                written += n;
                stalled_since = std::time::Instant::now();
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if stalled_since.elapsed() > std::time::Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("{error}"),
        }
    }
    assert!(
        written < bytes.len(),
        "the daemon stopped reading the greedy client"
    );
    // Everyone else is served meanwhile.
    let before = count(&daemon.db);
    for _ in 0..10 {
        daemon.client().log(Entry::new("other", "c")).unwrap();
    }
    assert_eq!(count(&daemon.db), before + 10);
}
