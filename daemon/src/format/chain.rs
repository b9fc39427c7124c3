//! The hash chain: the canonical encoding of a row and the hash that links it to the one
//! before.
//!
//! `docs/FORMAT.md` specifies this byte for byte; the writer and the verifier both go through
//! [`hash_row`], so there is one encoding, not two that could drift apart. The columns and
//! their order are the row's (`row::COLUMNS`).

use sha2::{Digest, Sha256};

use crate::format::row::{self, HASHED, IMPORTED_VALUE, Value, Values};

/// Prepended to every hashed message so that a witness row hash can never be mistaken for
/// the hash of anything else.
pub const DOMAIN_TAG: &[u8; 16] = b"witness.entry.v1";

/// The "previous hash" of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends the canonical encoding of `values` to `out`. The columns added after the first
/// format (`imported` on) are encoded up to the last that is not NULL, and not at all when
/// all are: rows written before each was added keep the hashes they had.
pub fn encode_row(values: &Values<'_>, out: &mut Vec<u8>) {
    let present = values[IMPORTED_VALUE..]
        .iter()
        .rposition(|value| *value != Value::Null)
        .map_or(IMPORTED_VALUE, |last| IMPORTED_VALUE + last + 1);
    for value in &values[..present] {
        match *value {
            Value::Null => out.push(0),
            Value::Integer(integer) => {
                out.push(1);
                out.extend_from_slice(&integer.to_be_bytes());
            }
            Value::Text(text) => {
                out.push(2);
                // Field limits keep every text far below 4 GiB.
                out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// `SHA-256(DOMAIN_TAG ‖ previous ‖ encoding of values)`. `scratch` is reused between calls
/// so that hashing a batch allocates once.
pub fn hash_row(previous: &[u8; 32], values: &Values<'_>, scratch: &mut Vec<u8>) -> [u8; 32] {
    scratch.clear();
    scratch.extend_from_slice(DOMAIN_TAG);
    scratch.extend_from_slice(previous);
    encode_row(values, scratch);
    Sha256::digest(&scratch[..]).into()
}

/// A column value read back from an encoding: what [`Value`] borrows, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// `0x00`.
    Null,
    /// `0x01` and eight bytes.
    Integer(i64),
    /// `0x02`, a length and UTF-8 bytes.
    Text(String),
}

/// The hashed columns of a row from its canonical encoding (a proof bundle's leaf, say),
/// in the order of [`Values`], the columns the encoding ends before as NULL; refuses anything
/// that is not exactly one row's canonical encoding.
pub fn decode_row(mut bytes: &[u8]) -> Result<Vec<Decoded>, String> {
    let mut values = Vec::with_capacity(HASHED);
    let take = |n: usize, bytes: &mut &[u8]| -> Result<Vec<u8>, String> {
        if bytes.len() < n {
            return Err("the encoding ends in the middle of a value".into());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head.to_vec())
    };
    while values.len() < HASHED {
        if values.len() >= IMPORTED_VALUE && bytes.is_empty() {
            if values.last() == Some(&Decoded::Null) && values.len() > IMPORTED_VALUE {
                return Err("a trailing NULL is left out of the encoding, not written".into());
            }
            values.resize(HASHED, Decoded::Null);
            break;
        }
        let position = values.len();
        let tag = take(1, &mut bytes)?[0];
        let expected = if position >= IMPORTED_VALUE {
            Some(LATER_TAGS[position - IMPORTED_VALUE])
        } else {
            None
        };
        if let Some(expected) = expected
            && tag != 0
            && tag != expected
        {
            return Err(format!(
                "{} must be {} or NULL",
                row::COLUMNS[row::column_of(position)],
                if expected == 1 { "an integer" } else { "text" }
            ));
        }
        values.push(match tag {
            0 => Decoded::Null,
            1 => Decoded::Integer(i64::from_be_bytes(
                take(8, &mut bytes)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len = u32::from_be_bytes(take(4, &mut bytes)?.try_into().expect("4 bytes"));
                let text = take(len as usize, &mut bytes)?;
                Decoded::Text(
                    String::from_utf8(text).map_err(|_| "a text value is not UTF-8".to_owned())?,
                )
            }
            other => return Err(format!("unknown value tag {other:#04x}")),
        });
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the last column", bytes.len()));
    }
    Ok(values)
}

/// The value tag each column added after the first format takes when it is not NULL:
/// `imported` text, the cache writes integers, `priced_by` text.
const LATER_TAGS: [u8; HASHED - IMPORTED_VALUE] = [2, 1, 1, 2];

/// [`hash_row`], and the row's leaf hash in the Merkle tree, `SHA-256(0x00 ‖ encoding)`, from
/// one encoding.
pub fn hash_row_and_leaf(
    previous: &[u8; 32],
    values: &Values<'_>,
    scratch: &mut Vec<u8>,
) -> ([u8; 32], [u8; 32]) {
    let hash = hash_row(previous, values, scratch);
    let leaf = witness_protocol::merkle::leaf_hash(&scratch[DOMAIN_TAG.len() + previous.len()..]);
    (hash, leaf)
}

/// The row's leaf hash in the Merkle tree: `SHA-256(0x00 ‖ encoding)`.
pub fn leaf_hash(values: &Values<'_>, scratch: &mut Vec<u8>) -> [u8; 32] {
    scratch.clear();
    encode_row(values, scratch);
    witness_protocol::merkle::leaf_hash(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::row::{self, HASHED, column};

    /// The test vector of `docs/FORMAT.md`.
    fn vector_row() -> Values<'static> {
        [
            Value::Integer(1),
            Value::Integer(1_700_000_000_000_000_000),
            Value::Null,
            Value::Text("llm_call"),
            Value::Text("agent"),
            Value::Text("t-1"),
            Value::Text(r#"{"q":"hi"}"#),
            Value::Integer(12),
            Value::Integer(3),
            Value::Null,
            Value::Null,
            Value::Integer(1500),
            Value::Text("gpt-x"),
            Value::Integer(42),
            Value::Integer(1000),
            Value::Integer(1000),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ]
    }

    /// The third vector of `docs/FORMAT.md`: the first, with cache writes and the price the
    /// daemon used, and no `imported`.
    fn priced_vector_row() -> Values<'static> {
        let mut row = vector_row();
        row[row::CACHE_WRITE_VALUE] = Value::Integer(4);
        row[row::PRICED_BY_VALUE] = Value::Text("t:p/gpt-x");
        row
    }

    #[test]
    fn the_later_columns_are_encoded_up_to_the_last_that_is_set() {
        let mut plain = Vec::new();
        encode_row(&vector_row(), &mut plain);
        let mut encoding = Vec::new();
        encode_row(&priced_vector_row(), &mut encoding);
        assert_eq!(&encoding[..plain.len()], &plain[..]);
        assert_eq!(
            hex::encode(&encoding[plain.len()..]),
            concat!(
                "00",
                "010000000000000004",
                "00",
                "0200000009743a702f6770742d78"
            )
        );
        let hash = hash_row(&GENESIS, &priced_vector_row(), &mut Vec::new());
        assert_eq!(hex::encode(hash), FORMAT_PRICED_VECTOR_HASH);
        let decoded = decode_row(&encoding).unwrap();
        assert_eq!(decoded[row::CACHE_WRITE_VALUE], Decoded::Integer(4));
        assert_eq!(decoded[row::CACHE_WRITE_1H_VALUE], Decoded::Null);
        assert_eq!(
            decoded[row::PRICED_BY_VALUE],
            Decoded::Text("t:p/gpt-x".into())
        );
        // Only the cache writes set: the encoding stops after them.
        let mut row = vector_row();
        row[row::CACHE_WRITE_VALUE] = Value::Integer(4);
        let mut short = Vec::new();
        encode_row(&row, &mut short);
        assert_eq!(short.len(), plain.len() + 1 + 9);
        assert_eq!(
            decode_row(&short).unwrap()[row::PRICED_BY_VALUE],
            Decoded::Null
        );
        // Text where an integer goes, and a NULL written out at the end, are refused.
        let text_for_count = [plain.clone(), vec![0, 2, 0, 0, 0, 1, b'x']].concat();
        assert!(decode_row(&text_for_count).is_err());
        assert!(decode_row(&[short.clone(), vec![0]].concat()).is_err());
    }

    /// Written in `docs/FORMAT.md` beside the first vector.
    const FORMAT_PRICED_VECTOR_HASH: &str =
        "e3fbb7d38f2206d130c6a1cfcb8b04f9c22ac4638aed311e8def98471d703d4b";

    /// The second vector of `docs/FORMAT.md`: the first, as a copy imported from another log.
    fn imported_vector_row() -> Values<'static> {
        let mut row = vector_row();
        row[IMPORTED_VALUE] = Value::Text(r#"{"seq":7}"#);
        row
    }

    #[test]
    fn imported_is_encoded_last_and_only_when_set() {
        let mut plain = Vec::new();
        encode_row(&vector_row(), &mut plain);
        let mut encoding = Vec::new();
        encode_row(&imported_vector_row(), &mut encoding);
        assert_eq!(&encoding[..plain.len()], &plain[..]);
        assert_eq!(
            hex::encode(&encoding[plain.len()..]),
            "02000000097b22736571223a377d"
        );
        let hash = hash_row(&GENESIS, &imported_vector_row(), &mut Vec::new());
        assert_eq!(hex::encode(hash), FORMAT_IMPORTED_VECTOR_HASH);
        let decoded = decode_row(&encoding).unwrap();
        assert_eq!(
            decoded[IMPORTED_VALUE],
            Decoded::Text(r#"{"seq":7}"#.into())
        );
        assert_eq!(decode_row(&plain).unwrap()[IMPORTED_VALUE], Decoded::Null);
        // A NULL or an integer spelled out where the encoding should end is not canonical.
        assert!(decode_row(&[plain.clone(), vec![0]].concat()).is_err());
        assert!(decode_row(&[plain.clone(), vec![1, 0, 0, 0, 0, 0, 0, 0, 7]].concat()).is_err());
    }

    /// Written in `docs/FORMAT.md` beside the first vector.
    const FORMAT_IMPORTED_VECTOR_HASH: &str =
        "b24bfb8114ee68b1dbbedd748d4e4379563a3a4a83d99f63bd90bbaf5ac632af";

    #[test]
    fn format_test_vector() {
        let mut encoding = Vec::new();
        encode_row(&vector_row(), &mut encoding);
        assert_eq!(
            hex::encode(&encoding),
            concat!(
                "010000000000000001",
                "0117979cfe362a0000",
                "00",
                "02000000086c6c6d5f63616c6c",
                "02000000056167656e74",
                "0200000003742d31",
                "020000000a7b2271223a226869227d",
                "01000000000000000c",
                "010000000000000003",
                "00",
                "00",
                "0100000000000005dc",
                "0200000005677074",
                "2d78",
                "01000000000000002a",
                "0100000000000003e8",
                "0100000000000003e8",
                "00",
                "00",
            )
        );
        let hash = hash_row(&GENESIS, &vector_row(), &mut Vec::new());
        assert_eq!(hex::encode(hash), FORMAT_VECTOR_HASH);
        let (both, leaf) = hash_row_and_leaf(&GENESIS, &vector_row(), &mut Vec::new());
        assert_eq!(both, hash);
        assert_eq!(leaf, leaf_hash(&vector_row(), &mut Vec::new()));
        assert_eq!(hex::encode(leaf), FORMAT_VECTOR_LEAF);
    }

    /// The vector's leaf hash in the Merkle tree, also in `docs/FORMAT.md`.
    const FORMAT_VECTOR_LEAF: &str =
        "adb31fab63835ff506b340064082baa6fef95dbc1fcd3fee33d763674565296c";

    /// Written in `docs/FORMAT.md`; a change here is a change of format.
    const FORMAT_VECTOR_HASH: &str =
        "c3293bd2f39af86ac86f0204cf739442cf41f4cd736f01016837b5aa8537d836";

    #[test]
    fn an_encoding_decodes_to_its_row_and_garbage_does_not() {
        let mut encoding = Vec::new();
        encode_row(&vector_row(), &mut encoding);
        let decoded = decode_row(&encoding).unwrap();
        assert_eq!(decoded[3], Decoded::Text("llm_call".into()));
        assert_eq!(decoded[0], Decoded::Integer(1));
        assert_eq!(decoded[2], Decoded::Null);
        assert!(decode_row(&encoding[..encoding.len() - 1]).is_err());
        assert!(decode_row(&[encoding.clone(), vec![0]].concat()).is_err());
        assert!(decode_row(&[7; 40]).is_err());
        assert!(decode_row(&[]).is_err());
    }

    #[test]
    fn negative_integers_are_twos_complement() {
        let mut out = Vec::new();
        let mut row = vector_row();
        row[column::CLIENT_TS] = Value::Integer(-1);
        encode_row(&row, &mut out);
        assert_eq!(
            &out[18..27],
            &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = hash_row(&GENESIS, &vector_row(), &mut Vec::new());
        for index in 0..HASHED {
            let mut row = vector_row();
            row[index] = match row[index] {
                Value::Null => Value::Integer(0),
                Value::Integer(value) => Value::Integer(value ^ 1),
                Value::Text(_) => Value::Text("other"),
            };
            assert_ne!(
                hash_row(&GENESIS, &row, &mut Vec::new()),
                base,
                "field {index}"
            );
        }
        assert_ne!(hash_row(&[1; 32], &vector_row(), &mut Vec::new()), base);
    }

    #[test]
    fn null_and_empty_text_and_zero_differ() {
        let hashes: Vec<_> = [Value::Null, Value::Text(""), Value::Integer(0)]
            .into_iter()
            .map(|value| {
                let mut row = vector_row();
                row[column::TRACE_ID] = value;
                hash_row(&GENESIS, &row, &mut Vec::new())
            })
            .collect();
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[1], hashes[2]);
        assert_ne!(hashes[0], hashes[2]);
    }
}
