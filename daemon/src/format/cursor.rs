//! One walk over stored rows, shared by everything that re-checks a log from its rows: each
//! row must come next in `seq` and hash, from the hash before it, to its stored hash; its
//! leaf extends the Merkle tree; and a signed checkpoint at a size the walk has reached must
//! sign that tree's root. `verify` (on a host), the forwarder (before it ships a batch) and
//! the fleet's audit (over the centre's rows) each word what a [`Break`] or an [`Unheld`] means for their own
//! reader; the rule itself is here once.

use witness_protocol::merkle::Hash;
use witness_protocol::note::{Checkpoint, VerifierKey};

use crate::format::chain::{DOMAIN_TAG, hash_row};
use crate::format::row::{Values, column};
use crate::format::tree::Tree;

/// Where a walk found a row not to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The row is not the one that comes next: an entry is missing.
    Gap {
        /// The `seq` that should have come.
        expected: u64,
        /// What the row says instead.
        found: Option<i64>,
    },
    /// The row does not hash to its stored hash: it, or one before it, was altered.
    Altered {
        /// The row.
        seq: u64,
        /// Its stored hash.
        stored: Vec<u8>,
        /// The hash recomputed from its fields and the hash before it.
        computed: Hash,
    },
}

/// Where a walk found a signed checkpoint not to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unheld {
    /// A checkpoint does not verify with the log's key.
    Unsigned {
        /// The size it claims.
        size: u64,
        /// Why it does not verify.
        reason: String,
    },
    /// A checkpoint verifies but signs another tree than the rows make.
    OtherTree {
        /// The size it claims.
        size: u64,
    },
}

/// The state of a walk: the next `seq`, the hash before it, and (unless the caller builds
/// the tree elsewhere) the tree of every leaf so far.
#[derive(Debug)]
pub struct Cursor {
    next: u64,
    previous: Hash,
    tree: Option<Tree>,
    scratch: Vec<u8>,
}

impl Cursor {
    /// A walk whose next row is `next`, chained from `previous` (the genesis hash, a
    /// watermark's, a segment's), extending `tree` when one is given.
    pub fn new(next: u64, previous: Hash, tree: Option<Tree>) -> Cursor {
        Cursor {
            next,
            previous,
            tree,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Takes the next row: its values and its stored hash. On success the row is part of
    /// the walk, and [`Cursor::encoding`] is its canonical encoding.
    pub fn step(&mut self, values: &Values<'_>, stored: &[u8]) -> Result<u64, Break> {
        let seq = self.next;
        let found = values[column::SEQ].integer();
        if found != Some(seq as i64) {
            return Err(Break::Gap {
                expected: seq,
                found,
            });
        }
        let computed = hash_row(&self.previous, values, &mut self.scratch);
        if stored != computed {
            return Err(Break::Altered {
                seq,
                stored: stored.to_vec(),
                computed,
            });
        }
        if let Some(tree) = &mut self.tree {
            // The fields apart, as `encoding` would borrow the whole cursor.
            tree.push(witness_protocol::merkle::leaf_hash(
                &self.scratch[DOMAIN_TAG.len() + 32..],
            ));
        }
        self.previous = computed;
        self.next += 1;
        Ok(seq)
    }

    /// The canonical encoding of the last row taken: what its leaf hashes.
    pub fn encoding(&self) -> &[u8] {
        // `hash_row` leaves the tag and the previous hash before the encoding.
        &self.scratch[DOMAIN_TAG.len() + 32..]
    }

    /// Holds a signed checkpoint of `size` to the tree, once the walk has reached `size`
    /// (and with no tree kept, to nothing but its signature).
    pub fn check_checkpoint(
        &mut self,
        size: u64,
        note: &str,
        key: &VerifierKey,
    ) -> Result<(), Unheld> {
        let checkpoint = Checkpoint::verified(note, key).map_err(|error| Unheld::Unsigned {
            size,
            reason: error.to_string(),
        })?;
        match &mut self.tree {
            Some(tree) if checkpoint.size != size || checkpoint.root != tree.root() => {
                Err(Unheld::OtherTree { size })
            }
            _ => Ok(()),
        }
    }

    /// The `seq` of the next row.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The hash of the last row taken (or the one the walk started from).
    pub fn previous(&self) -> Hash {
        self.previous
    }

    /// The tree kept, to take its full tiles or its root.
    pub fn tree(&mut self) -> Option<&mut Tree> {
        self.tree.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::chain::{GENESIS, hash_row_and_leaf};
    use crate::format::row::{HASHED, Value};

    fn row(seq: i64) -> Values<'static> {
        let mut values = [Value::Null; HASHED];
        values[column::SEQ] = Value::Integer(seq);
        values[column::EVENT] = Value::Text("e");
        values
    }

    #[test]
    fn a_walk_takes_rows_in_order_and_says_where_they_break() {
        let mut scratch = Vec::new();
        let (first, leaf) = hash_row_and_leaf(&GENESIS, &row(1), &mut scratch);
        let (second, _) = hash_row_and_leaf(&first, &row(2), &mut scratch);
        let mut cursor = Cursor::new(1, GENESIS, Some(Tree::default()));
        assert_eq!(cursor.step(&row(1), &first), Ok(1));
        assert_eq!(cursor.tree().map(|tree| tree.root()), Some(leaf));
        assert_eq!(
            cursor.step(&row(3), &second),
            Err(Break::Gap {
                expected: 2,
                found: Some(3)
            })
        );
        assert!(matches!(
            cursor.step(&row(2), &first),
            Err(Break::Altered { seq: 2, .. })
        ));
        assert_eq!(cursor.step(&row(2), &second), Ok(2));
        assert_eq!(cursor.previous(), second);
        assert_eq!(cursor.next_seq(), 3);
    }
}
