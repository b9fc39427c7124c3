//! Re-verification of the hash chain from what is stored, for the `Verify` request and for
//! `witness verify --db` on a file with no daemon running.

use rusqlite::Connection;
use witness_protocol::{VerifyRange, VerifyReport};

use crate::chain::{GENESIS, HASHED_COLUMNS, Value, hash_row};

/// Walks the rows of `range` in order and recomputes each hash from the stored hash of the
/// row before. Stops at the first row that does not match, or at a gap in `seq`.
pub fn verify(connection: &Connection, range: VerifyRange) -> rusqlite::Result<VerifyReport> {
    let from = range.from.unwrap_or(1).max(1);
    let to = range
        .to
        .map_or(i64::MAX, |to| to.min(i64::MAX as u64) as i64);
    let mut previous = if from == 1 {
        GENESIS
    } else {
        let stored: Option<Vec<u8>> = connection
            .query_row(
                "SELECT hash FROM entries WHERE seq = ?1",
                [from as i64 - 1],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })?;
        match stored.map(<[u8; 32]>::try_from) {
            Some(Ok(hash)) => hash,
            Some(Err(_)) => {
                return Ok(broken(from - 1, "its hash is not 32 bytes long".into(), 0));
            }
            None => {
                return Ok(broken(
                    from - 1,
                    "it is missing, so the range has no anchor".into(),
                    0,
                ));
            }
        }
    };
    let sql = format!(
        "SELECT {}, hash FROM entries WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        HASHED_COLUMNS.join(", ")
    );
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query([from as i64, to])?;
    let mut scratch = Vec::with_capacity(1024);
    let mut count = 0u64;
    let mut expected_seq = from as i64;
    let mut first_seq = None;
    let mut last_seq = None;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        if seq != expected_seq {
            return Ok(broken(
                expected_seq as u64,
                format!("it is missing: the next stored entry is {seq}"),
                count,
            ));
        }
        let values = match read_values(row) {
            Ok(values) => values,
            Err(reason) => return Ok(broken(seq as u64, reason, count)),
        };
        let stored = row
            .get_ref(18)?
            .as_blob_or_null()
            .ok()
            .flatten()
            .unwrap_or_default();
        let computed = hash_row(&previous, &values, &mut scratch);
        if stored != computed {
            return Ok(broken(
                seq as u64,
                format!(
                    "stored hash {} does not match {} computed from its fields and {}",
                    hex::encode(stored),
                    hex::encode(computed),
                    if seq == 1 {
                        "the genesis hash".to_owned()
                    } else {
                        format!("entry {}", seq - 1)
                    }
                ),
                count,
            ));
        }
        previous = computed;
        first_seq.get_or_insert(seq as u64);
        last_seq = Some(seq as u64);
        count += 1;
        expected_seq += 1;
    }
    Ok(VerifyReport::Intact {
        count,
        first_seq,
        last_seq,
        head_hash: last_seq.map(|_| previous),
    })
}

fn broken(seq: u64, reason: String, checked: u64) -> VerifyReport {
    VerifyReport::Broken {
        seq,
        reason,
        checked,
    }
}

/// Reads the hashed columns of a row, refusing a value of a storage class the column cannot
/// hold (which `STRICT` prevents, but a hand-edited file may still contain).
fn read_values<'row>(row: &'row rusqlite::Row<'_>) -> Result<[Value<'row>; 18], String> {
    use rusqlite::types::ValueRef;
    let mut values = [Value::Null; 18];
    for (index, value) in values.iter_mut().enumerate() {
        let raw = row.get_ref(index).map_err(|error| error.to_string())?;
        *value = match raw {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(integer) => Value::Integer(integer),
            ValueRef::Text(bytes) => Value::Text(
                std::str::from_utf8(bytes)
                    .map_err(|_| format!("column {} is not valid UTF-8", HASHED_COLUMNS[index]))?,
            ),
            ValueRef::Real(_) | ValueRef::Blob(_) => {
                return Err(format!(
                    "column {} holds a {:?} value, which the format does not allow",
                    HASHED_COLUMNS[index],
                    raw.data_type()
                ));
            }
        };
    }
    Ok(values)
}
