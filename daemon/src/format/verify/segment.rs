//! An archive segment verified alone: its chain from the hash before it, its tiles, and the
//! signed checkpoint over its last entry.

use super::*;

/// What [`verify_segment`] found in an archive segment that holds together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The first and last `seq` it holds.
    pub first_seq: u64,
    /// The last `seq` it holds.
    pub last_seq: u64,
    /// The chain hash before its first entry, as it records it.
    pub previous: [u8; 32],
    /// The chain hash of its last entry.
    pub last_hash: [u8; 32],
    /// The leaf hashes of its entries, in order.
    pub leaves: Vec<[u8; 32]>,
}

/// Verifies an archive segment on its own: its entries make an unbroken chain from the hash
/// it records before them to the one it records for the last, every `seq` of its range is
/// there, and its level-0 tiles are its entries' leaf hashes.
pub fn verify_segment(connection: &Connection) -> Result<Verdict<SegmentCheck>, VerifyError> {
    let segment: Option<(i64, i64, Vec<u8>, Vec<u8>)> = connection
        .query_row(
            "SELECT first_seq, last_seq, previous, last_hash FROM segment",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()
        .or_else(|error| match error {
            rusqlite::Error::SqliteFailure(_, Some(ref message))
                if message.starts_with("no such table") =>
            {
                Ok(None)
            }
            error => Err(error),
        })?;
    let Some((first, last, previous, last_hash)) = segment else {
        return Ok(Verdict::Fails(
            "it is not an archive segment: it has no segment row".into(),
        ));
    };
    let (Ok(previous), Ok(last_hash)) = (
        <[u8; 32]>::try_from(previous.as_slice()),
        <[u8; 32]>::try_from(last_hash.as_slice()),
    ) else {
        return Ok(Verdict::Fails(
            "its segment row holds a hash that is not 32 bytes long".into(),
        ));
    };
    if first < 1 || last < first {
        return Ok(Verdict::Fails(format!(
            "its segment row says seq {first} to {last}"
        )));
    }
    let (first, last) = (first as u64, last as u64);
    let (lowest, highest): (Option<i64>, Option<i64>) =
        connection.query_row("SELECT min(seq), max(seq) FROM entries", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    if lowest.is_some_and(|lowest| lowest < first as i64)
        || highest.is_some_and(|highest| highest > last as i64)
    {
        return Ok(Verdict::Fails(format!(
            "it holds entries outside its range, seq {first} to {last}"
        )));
    }
    let mut walk = Walk::new(false, false, None);
    walk.leaves = Some(Vec::with_capacity((last - first + 1) as usize));
    match walk.chain(connection, first, last, Some(previous))? {
        VerifyReport::Intact { head_hash, .. } => {
            if head_hash != Some(last_hash) {
                return Ok(Verdict::Fails(format!(
                    "its last entry, {last}, hashes to {}, not to the {} its segment row records",
                    head_hash.map_or("nothing".into(), hex::encode),
                    hex::encode(last_hash)
                )));
            }
        }
        VerifyReport::Broken { seq, reason, .. } => {
            return Ok(Verdict::Fails(format!("BROKEN at seq {seq}: {reason}")));
        }
        VerifyReport::Inconsistent { table, reason, .. } => {
            return Ok(Verdict::Fails(format!("INCONSISTENT {table}: {reason}")));
        }
    }
    let leaves = walk.leaves.take().unwrap_or_default();
    let mut tiles = Tiles::new(connection);
    let width = crate::format::tree::TILE_WIDTH as u64;
    if (first - 1) % width != 0 || last % width != 0 {
        return Ok(Verdict::Fails(format!(
            "its range, seq {first} to {last}, does not start and end on tile edges"
        )));
    }
    for (n, chunk) in leaves.chunks(width as usize).enumerate() {
        let idx = (first - 1) / width + n as u64;
        if tiles.tile(0, idx)? != chunk {
            return Ok(Verdict::Fails(format!(
                "tile 0/{idx} (the leaves of entries {} to {}) is missing or differs from \
                 the entries' leaf hashes",
                idx * width + 1,
                (idx + 1) * width
            )));
        }
    }
    Ok(Verdict::Holds(SegmentCheck {
        first_seq: first,
        last_seq: last,
        previous,
        last_hash,
        leaves,
    }))
}
