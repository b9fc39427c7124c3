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
        let mut cursor = Cursor::new(
            watermark as u64 + 1,
            watermark_hash,
            Some(std::mem::take(tree)),
        );
        let result = self.walk_batch(&mut cursor, rows, checkpoints);
        *tree = cursor.tree().map(std::mem::take).unwrap_or_default();
        tree.take_full();
        result.map(|newest| (cursor.previous(), newest))
    }

    fn walk_batch(
        &self,
        cursor: &mut Cursor,
        rows: &[Stored],
        checkpoints: &[(i64, String)],
    ) -> Result<Option<SignedAt>, String> {
        let mut pending = checkpoints.iter().peekable();
        let mut newest = None;
        for stored in rows {
            let seq = cursor.next_seq();
            let values = stored.values();
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
            cursor
                .step(&values, &stored.hash)
                .map_err(|broken| match broken {
                    Break::Gap { found, .. } => format!(
                        "its log skips from seq {} to {}",
                        seq - 1,
                        found.map_or("a row with no seq".into(), |seq| seq.to_string())
                    ),
                    Break::Altered { .. } => format!(
                        "its entry {seq} does not hash to its stored hash: its log was altered"
                    ),
                })?;
            while let Some((size, note)) = pending.next_if(|(size, _)| *size as u64 <= seq) {
                cursor
                    .check_checkpoint(*size as u64, note, &self.key)
                    .map_err(|broken| match broken {
                        Unheld::Unsigned { reason, .. } => {
                            format!("its checkpoint at size {size} does not verify: {reason}")
                        }
                        Unheld::OtherTree { .. } => format!(
                            "its checkpoint at size {size} signs another tree than its \
                             entries make: its log was rewritten"
                        ),
                    })?;
                newest = Some((*size, note.clone()));
            }
        }
        Ok(newest)
    }
}
