//! Proofs: a bundle (C2SP `tlog-proof`) that an entry is in the tree of the latest signed
//! checkpoint, made from the stored tiles and the entry's row.

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::admin::ConsistencyReport;
use witness_protocol::merkle;
use witness_protocol::note::{Checkpoint, Note};
use witness_protocol::proof::ProofBundle;
use witness_protocol::{ErrorCode, ErrorReply, Response};

use std::path::Path;

use crate::format::archive::Archives;
use crate::format::tree::Tiles;
use crate::format::{chain, row, schema};

/// The canonical encoding of entry `seq` (its leaf), if the database at `connection` holds it.
fn read_leaf(
    connection: &Connection,
    seq: u64,
) -> rusqlite::Result<Option<Result<Vec<u8>, row::BadRow>>> {
    connection
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
        .optional()
}

/// A proof that cannot be given, and why, as the answer to the request.
fn refuse(message: String) -> rusqlite::Result<Response> {
    Ok(Response::Error(ErrorReply::new(
        ErrorCode::BadRequest,
        message,
    )))
}

/// The archives of the log at `connection`, when it has an archive folder.
fn archives(connection: &Connection, dir: Option<&Path>) -> rusqlite::Result<Option<Archives>> {
    dir.map(|dir| Archives::load(connection, dir)).transpose()
}

/// The proof that entry `seq` is in the log, or why there is none. An entry pruned from the
/// live log is proved from its archive segment in `archive_dir`.
pub fn prove(
    connection: &Connection,
    seq: u64,
    archive_dir: Option<&Path>,
) -> rusqlite::Result<Response> {
    // The checkpoint, the log's start, the archives and the tiles, all of one state: a prune
    // committed between them would leave an entry in neither the live log nor a segment.
    let _snapshot = schema::snapshot(connection)?;
    let note: Option<String> = connection
        .query_row(schema::LATEST_CHECKPOINT, [], |row| row.get(0))
        .optional()?;
    let signed_size = note
        .as_deref()
        .and_then(|note| Note::parse(note).ok())
        .and_then(|note| Checkpoint::parse(&note.text).ok())
        .map_or(0, |checkpoint| checkpoint.size);
    // Pruning may have left no entry behind the latest checkpoint's.
    let last = super::last_seq(connection)?.max(signed_size);
    if seq == 0 || seq > last {
        return refuse(if last == 0 {
            format!("there is no entry {seq}: the log is empty")
        } else {
            format!("there is no entry {seq}: the log holds entries 1 to {last}")
        });
    }
    let Some(note) = note else {
        return refuse("the daemon has signed no checkpoint yet: ask again in a second".into());
    };
    let signed = Note::parse(&note)
        .ok()
        .and_then(|note| Checkpoint::parse(&note.text).ok());
    let Some(checkpoint) = signed else {
        return refuse("the latest stored checkpoint is not a checkpoint".into());
    };
    if seq > checkpoint.size {
        return refuse(format!(
            "entry {seq} is not in the latest signed checkpoint yet, which covers entries 1 to \
             {}: one that covers it is signed within a second of its commit; ask again",
            checkpoint.size
        ));
    }
    let mut archives = archives(connection, archive_dir)?;
    let (start, _) = schema::log_start(connection)?;
    let leaf = if seq >= start {
        read_leaf(connection, seq)?
    } else {
        let Some(archives) = &mut archives else {
            return refuse(format!(
                "entry {seq} was pruned from the live log (which starts at seq {start}) and the \
                 daemon has no archive folder"
            ));
        };
        match archives.with_entry(seq, |segment| read_leaf(segment, seq)) {
            Ok(leaf) => leaf,
            Err(reason) => return refuse(format!("entry {seq} was pruned: {reason}")),
        }
    };
    let Some(Ok(leaf)) = leaf else {
        return refuse(format!("entry {seq} cannot be read back"));
    };
    let mut tiles = match &mut archives {
        Some(archives) => Tiles::with_archives(connection, archives),
        None => Tiles::new(connection),
    };
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

/// The proof that the tree of `old` entries is a prefix of the tree of the signed checkpoint
/// of size `new` (the latest when `None`), or why there is none.
pub fn consistency(
    connection: &Connection,
    old: u64,
    new: Option<u64>,
    archive_dir: Option<&Path>,
) -> rusqlite::Result<Response> {
    let _snapshot = schema::snapshot(connection)?;
    let note_at = |size: Option<u64>| -> rusqlite::Result<Option<String>> {
        match size {
            Some(size) => connection
                .prepare_cached("SELECT note FROM checkpoints WHERE size = ?1")?
                .query_row([size as i64], |row| row.get(0))
                .optional(),
            None => connection
                .query_row(schema::LATEST_CHECKPOINT, [], |row| row.get(0))
                .optional(),
        }
    };
    let Some(new_note) = note_at(new)? else {
        return refuse(match new {
            Some(size) => format!("the daemon signed no checkpoint of size {size}"),
            None => "the daemon has signed no checkpoint yet: ask again in a second".into(),
        });
    };
    let Some(signed) = Note::parse(&new_note)
        .ok()
        .and_then(|note| Checkpoint::parse(&note.text).ok())
    else {
        return refuse("the stored checkpoint is not a checkpoint".into());
    };
    if old > signed.size {
        return refuse(format!(
            "a tree of {old} entries is not older than the signed one of {}",
            signed.size
        ));
    }
    let mut archives = archives(connection, archive_dir)?;
    let mut tiles = match &mut archives {
        Some(archives) => Tiles::with_archives(connection, archives),
        None => Tiles::new(connection),
    };
    let mut failure = None;
    let mut range = |start, end| {
        tiles.range(start, end).unwrap_or_else(|reason| {
            failure.get_or_insert(reason);
            merkle::EMPTY_ROOT
        })
    };
    let proof = merkle::consistency_proof(old, signed.size, &mut range)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    let old_root = range(0, old);
    if let Some(reason) = failure {
        return Ok(Response::Error(ErrorReply::new(
            ErrorCode::Storage,
            format!("the stored tree cannot prove consistency: {reason}"),
        )));
    }
    Ok(Response::Consistency(ConsistencyReport {
        old_size: old,
        old_root,
        old_note: note_at(Some(old))?,
        new_note,
        proof,
    }))
}
