//! The socket side: binding and accepting (`server`), one task per connection that reads
//! frames and dispatches requests (`connection`, `dispatch`, `append`, `respond`), and
//! followers and exports (`stream`). Reads are the read side's commands (`read::Command`),
//! which check their own requests.

mod append;
mod connection;
mod dispatch;
mod respond;
pub mod server;
mod stream;
