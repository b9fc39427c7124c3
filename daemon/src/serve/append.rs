//! Appends on the socket: the connection's side of the intake. It takes an in-flight permit
//! for the request, then lets the intake check, rate-limit and admit the append, whose answer
//! comes back as a frame on this connection.

use witness_protocol::{Ack, Append, Response};

use super::connection::Connection;
use crate::access::Principal;
use crate::intake::{Refusal, Submission};
use crate::store::job::Reply;

impl Connection {
    /// Hands an append to the intake, which hands it to the writer; answers here only what
    /// the writer never sees (refusals, and `Queued`).
    pub(super) async fn append(&mut self, id: u64, append: Append, n_bytes: usize) {
        // Received now, whatever the wait for room below: `ts` is when the daemon read the
        // entry, and acknowledgement times count the wait.
        let mut submission = Submission::now(append, n_bytes);
        let principal = Principal::Unix(self.peer.clone());
        let intake = &self.shared.intake;
        if let Err(reply) = intake.check(&principal, &submission) {
            return self.refuse(id, reply).await;
        }
        let Some(permit) = self.permit().await else {
            return;
        };
        submission.alone = self.in_flight.available_permits() + 1 == self.limits.max_in_flight;
        let (ack, n_entries) = (
            submission.append.ack,
            submission.append.entries.len() as u32,
        );
        let reply = Reply::Frame {
            request_id: id,
            to: self.reply_to.clone(),
            permit,
        };
        match intake
            .admit(&principal, &self.lane, submission, reply, &self.abandon)
            .await
        {
            Ok(()) if ack == Ack::Queued => {
                self.answer(id, Response::Queued { count: n_entries }).await;
            }
            Ok(()) | Err(Refusal::Abandoned) => {}
            // Counted by the intake; the permit it held is back, so this answer takes one.
            Err(Refusal::Refused(reply)) => self.answer(id, Response::Error(reply)).await,
        }
    }
}
