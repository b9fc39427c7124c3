//! The socket side: binding and accepting (`server`), one task per connection that reads frames and dispatches requests
//! (`connection`, `append`, `respond`), followers and exports (`stream`), and the checks a
//! query passes before it reaches the database (`validation`).

mod append;
mod connection;
mod dispatch;
mod respond;
pub mod server;
mod stream;
mod validation;
