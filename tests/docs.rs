//! `docs/PROTOCOL.md` kept true: its worked example is what the implementation encodes.

use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{
    Ack, Append, Entry, Hello, OnFull, Receipt, Request, RequestFrame, Response, ResponseFrame,
    frame,
};

const PROTOCOL: &str = include_str!("../docs/PROTOCOL.md");

/// The hex of the fenced block after `<!-- marker -->`, spaces and line breaks removed.
fn example(marker: &str) -> String {
    crate::harness::doc_block(PROTOCOL, marker)
        .split_whitespace()
        .collect()
}

fn encoded(message: &impl serde::Serialize) -> String {
    let mut bytes = Vec::new();
    frame::encode(message, MAX_FRAME_LEN, &mut bytes).unwrap();
    hex::encode(bytes)
}

#[test]
fn the_worked_example_is_what_the_implementation_sends() {
    let hello = RequestFrame {
        id: 1,
        request: Request::Hello(Hello {
            version: witness_protocol::PROTOCOL_VERSION,
            client: "cli".into(),
        }),
    };
    assert_eq!(example("example:hello"), encoded(&hello));
    let append = RequestFrame {
        id: 2,
        request: Request::Append(Append {
            ack: Ack::Committed,
            on_full: OnFull::Wait,
            producer: None,
            entries: vec![Entry::new("login", "auth").payload_text(r#"{"ok":true}"#)],
        }),
    };
    assert_eq!(example("example:append"), encoded(&append));
    let committed = ResponseFrame {
        id: 2,
        response: Response::Committed {
            receipts: vec![Receipt {
                seq: 7,
                hash: [0xab; 32],
            }],
        },
    };
    assert_eq!(example("example:committed"), encoded(&committed));
}

/// `docs/FLEET.md` kept true: the central schema it shows is the one the forwarder creates.
#[test]
fn the_fleet_document_shows_the_schema_the_forwarder_creates() {
    let fleet = include_str!("../docs/FLEET.md");
    assert_eq!(
        crate::harness::doc_block(fleet, "fleet:schema"),
        witness_daemon::fleet::schema_sql()
    );
}
