//! Proofs: a bundle (C2SP `tlog-proof`) that an entry is in the tree of the latest signed
//! checkpoint, made from the stored tiles and the entry's row.

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::merkle;
use witness_protocol::note::{Checkpoint, Note};
use witness_protocol::proof::ProofBundle;
use witness_protocol::{ErrorCode, ErrorReply, Response};

use crate::format::tree::Tiles;
use crate::format::{chain, row, schema};

/// The proof that entry `seq` is in the log, or why there is none.
pub fn prove(connection: &Connection, seq: u64) -> rusqlite::Result<Response> {
    let refuse = |message: String| {
        Ok(Response::Error(ErrorReply::new(
            ErrorCode::BadRequest,
            message,
        )))
    };
    let note: Option<String> = connection
        .query_row(schema::LATEST_CHECKPOINT, [], |row| row.get(0))
        .optional()?;
    let Some(note) = note else {
        return refuse("the daemon has signed no checkpoint yet: ask again in a second".into());
    };
    let signed = Note::parse(&note)
        .ok()
        .and_then(|note| Checkpoint::parse(&note.text).ok());
    let Some(checkpoint) = signed else {
        return refuse("the latest stored checkpoint is not a checkpoint".into());
    };
    if seq == 0 || seq > checkpoint.size {
        return refuse(format!(
            "entry {seq} is not in the latest signed checkpoint, which covers entries 1 to {}: \
             a newer entry is covered within a second of its commit",
            checkpoint.size
        ));
    }
    let leaf = connection
        .prepare_cached(&format!(
            "SELECT {} FROM entries WHERE seq = ?1",
            row::select_columns()
        ))?
        .query_row([seq as i64], |stored| {
            Ok(row::read_values(stored).map(|values| {
                let mut leaf = Vec::new();
                chain::encode_row(&values, &mut leaf);
                leaf
            }))
        })
        .optional()?;
    let Some(Ok(leaf)) = leaf else {
        return refuse(format!("entry {seq} cannot be read back"));
    };
    let mut tiles = Tiles::new(connection);
    let mut failure = None;
    let proof = merkle::inclusion_proof(seq - 1, checkpoint.size, &mut |start, end| {
        tiles.range(start, end).unwrap_or_else(|reason| {
            failure.get_or_insert(reason);
            merkle::EMPTY_ROOT
        })
    })
    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    if let Some(reason) = failure {
        return Ok(Response::Error(ErrorReply::new(
            ErrorCode::Storage,
            format!("the stored tree cannot prove entry {seq}: {reason}"),
        )));
    }
    let bundle = ProofBundle {
        leaf: Some(leaf),
        index: seq - 1,
        proof,
        note,
    };
    Ok(Response::Proof(bundle.to_text()))
}
