//! `Verify`: the log re-verified from what is stored, over a range, on a read connection.

use rusqlite::Connection;
use witness_protocol::{ErrorCode, ErrorReply, Response, VerifyRange};

use crate::format::verify::{self, VerifyError};

/// Checks a range before any database is read.
pub fn check_verify(range: VerifyRange) -> Result<(), ErrorReply> {
    verify::check_range(range).map_err(|reason| ErrorReply::new(ErrorCode::BadRequest, reason))
}

/// The verdict over `range`; a range that is not one of this log is a `BadRequest`.
pub fn verify(connection: &Connection, range: VerifyRange) -> rusqlite::Result<Response> {
    match verify::verify(connection, range) {
        Ok(report) => Ok(Response::Verified(report)),
        Err(VerifyError::Range(reason)) => Ok(Response::Error(ErrorReply::new(
            ErrorCode::BadRequest,
            reason,
        ))),
        Err(VerifyError::Sqlite(error)) => Err(error),
    }
}
