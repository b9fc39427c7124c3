//! The witness wire protocol: message types, limits and framing.
//!
//! This crate does no I/O and knows nothing of tokio: it turns messages into bytes and back,
//! and checks every length against a limit before it allocates. `docs/PROTOCOL.md` at the
//! repository root is the byte-level specification of what it implements.

pub mod admin;
pub mod frame;
pub mod limits;
pub mod merkle;
mod message;
pub mod note;
pub mod proof;
pub mod query;

pub use frame::FrameError;
pub use message::*;

/// The protocol version this crate speaks; a `Hello` with any other version is refused.
pub const PROTOCOL_VERSION: u32 = 4;
