//! What the forwarder checks before it ships a batch: that the host's log still extends what
//! the centre holds, and that the batch's rows recompute the chain, the tree and the signed
//! checkpoints they claim.

use super::*;

impl Worker {
    /// Why the host's log no longer extends what the centre holds, if it does not: the
    /// entry at the watermark must still be there with the watermark's hash.
    pub(super) fn check_continuity(
        &self,
        local: &rusqlite::Connection,
        watermark: i64,
        watermark_hash: &[u8; 32],
    ) -> Result<Option<String>, Trouble> {
        if watermark == 0 {
            return Ok(None);
        }
        let stored: Option<Vec<u8>> = local
            .query_row(
                "SELECT hash FROM entries WHERE seq = ?1",
                [watermark],
                |row| row.get(0),
            )
            .optional()?;
        Ok(match stored {
            Some(hash) if hash == watermark_hash => None,
            Some(hash) => Some(format!(
                "its entry {watermark} has hash {}, but the centre holds {} there: its log was \
                 rewritten or replaced",
                hex::encode(hash),
                hex::encode(watermark_hash)
            )),
            None => {
                let head: Option<i64> = local
                    .query_row("SELECT max(seq) FROM entries", [], |row| row.get(0))
                    .optional()?
                    .flatten();
                Some(format!(
                    "its log ends at seq {}, but the centre holds it up to seq {watermark}: its \
                     log was cut or replaced",
                    head.unwrap_or(0)
                ))
            }
        })
    }

    /// Recomputes the chain and the tree over a batch, and checks the host's checkpoints in
    /// it; gives the last hash and the newest checkpoint, or why the host is refused.
    pub(super) fn check_batch(
        &self,
        rows: &[Stored],
        watermark: i64,
        watermark_hash: [u8; 32],
        tree: &mut Tree,
        checkpoints: &[(i64, String)],
    ) -> Result<([u8; 32], Option<SignedAt>), String> {
        let mut previous = watermark_hash;
        let mut scratch = Vec::with_capacity(1024);
        let mut pending = checkpoints.iter().peekable();
        let mut newest = None;
        for (offset, stored) in rows.iter().enumerate() {
            let seq = watermark + 1 + offset as i64;
            let values = stored.values();
            if values[row::column::SEQ] != Value::Integer(seq) {
                return Err(format!(
                    "its log skips from seq {} to {:?}",
                    seq - 1,
                    values[row::column::SEQ]
                ));
            }
            for (position, value) in values.iter().enumerate() {
                let column = row::column_of(position);
                let kind = row::KINDS[column].0;
                let fits = matches!(
                    (kind, value),
                    (_, Value::Null)
                        | (Kind::Integer, Value::Integer(_))
                        | (Kind::Text, Value::Text(_))
                );
                if !fits {
                    return Err(format!(
                        "its entry {seq} holds {value:?} in {}, which the format does not allow",
                        row::COLUMNS[column]
                    ));
                }
                if let Value::Text(text) = value
                    && text.contains('\0')
                {
                    return Err(format!(
                        "its entry {seq} holds a NUL character in {}, which PostgreSQL cannot \
                         store",
                        row::COLUMNS[column]
                    ));
                }
            }
            let (hash, leaf) = chain::hash_row_and_leaf(&previous, &values, &mut scratch);
            if stored.hash != hash {
                return Err(format!(
                    "its entry {seq} does not hash to its stored hash: its log was altered"
                ));
            }
            tree.push(leaf);
            previous = hash;
            while let Some((size, note)) = pending.next_if(|(size, _)| *size as u64 <= tree.size())
            {
                let checkpoint = Checkpoint::verified(note, &self.key).map_err(|error| {
                    format!("its checkpoint at size {size} does not verify: {error}")
                })?;
                if checkpoint.size != *size as u64 || checkpoint.root != tree.root() {
                    return Err(format!(
                        "its checkpoint at size {size} signs another tree than its entries \
                         make: its log was rewritten"
                    ));
                }
                newest = Some((*size, note.clone()));
            }
        }
        tree.take_full();
        Ok((previous, newest))
    }
}
