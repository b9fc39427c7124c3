//! The responder: one task per connection that writes answers back in whatever order they
//! come, releasing each request's in-flight permit once its answer is written.

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{ErrorCode, ErrorReply, Response, ResponseFrame, frame};

use crate::store::job::Outgoing;

/// Writes answers as they come, batching whatever is ready into one write. On a write error
/// it keeps draining, so that the permits of a departed client are still released.
///
/// Answers are sized against the protocol's frame limit, not the connection's: the
/// connection's `max_frame_len` bounds what the daemon reads, and a client always accepts
/// frames up to `MAX_FRAME_LEN`, so a small request whose receipts outgrow it is still
/// answered. Every query's answer is paged below that limit; should one still not fit, the
/// client hears why instead of waiting forever.
pub(super) async fn respond(
    mut replies: mpsc::UnboundedReceiver<Outgoing>,
    mut write_half: OwnedWriteHalf,
) {
    let mut buffer = Vec::with_capacity(16 << 10);
    let mut permits = Vec::new();
    let mut broken = false;
    while let Some(first) = replies.recv().await {
        let mut next = Some(first);
        while let Some(outgoing) = next {
            encode_answer(&outgoing.frame, &mut buffer);
            permits.extend(outgoing.permit);
            next = if buffer.len() < (256 << 10) {
                replies.try_recv().ok()
            } else {
                None
            };
        }
        if !broken && let Err(error) = write_half.write_all(&buffer).await {
            tracing::debug!(%error, "client stopped taking answers");
            broken = true;
        }
        buffer.clear();
        permits.clear();
    }
    let _ = write_half.shutdown().await;
}

/// Appends the frame of an answer to `buffer`, or, if it cannot be encoded within the
/// protocol's limit, an error that says so under the same id.
fn encode_answer(frame: &ResponseFrame, buffer: &mut Vec<u8>) {
    let Err(error) = frame::encode(frame, MAX_FRAME_LEN, buffer) else {
        return;
    };
    tracing::error!(%error, id = frame.id, "cannot encode an answer");
    let reply = ErrorReply::new(
        ErrorCode::Storage,
        format!("the answer could not be sent ({error}); ask for a smaller page"),
    );
    let refusal = ResponseFrame {
        id: frame.id,
        response: Response::Error(reply),
    };
    frame::encode(&refusal, MAX_FRAME_LEN, buffer).expect("a short error always encodes");
}
