//! The Merkle tree over the entries (RFC 9162 hashing, `witness_protocol::merkle`), kept in
//! the database as C2SP tlog-tiles: tile `(level, idx)` holds, concatenated, the hashes of
//! the tree's nodes at height `8 × level` with indexes `256 × idx` up to 256 of them; level
//! 0 holds the leaf hashes. A tile is rewritten as it grows until it holds 256 hashes, and
//! then never again. The leaf of an entry is its canonical encoding (`chain::encode_row`).
//!
//! [`Tree`] is the tree's right edge, which is all the writer needs to extend it and to know
//! its root; [`Tiles`] reads stored tiles back, for roots and proofs of any size.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::merkle::{self, Hash};

/// Hashes in a full tile.
pub const TILE_WIDTH: usize = 256;

/// Tree levels a tile spans: `TILE_WIDTH` is two to this power.
pub const TILE_HEIGHT: u32 = 8;

/// Writes one tile, full or partial. An upsert, not `INSERT OR REPLACE`: a replace deletes
/// the row and inserts it under a new rowid, which rewrites the primary key's index page and
/// moves the row to another leaf at every commit; updated in place, the partial tile costs a
/// commit one to three fewer pages of WAL (BENCHMARKS.md, "Small commits").
const SAVE_TILE: &str = "INSERT INTO tiles (level, idx, hashes) VALUES (?1, ?2, ?3) \
     ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes";

/// Reads one tile.
const READ_TILE: &str = "SELECT hashes FROM tiles WHERE level = ?1 AND idx = ?2";

/// Why a tree or one of its nodes could not be had from its stored tiles.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Bytes given as a right edge do not have the length of a tree of that size's edge.
    #[error("the edge of a tree of {size} leaves is {} than the {given} bytes given", if *.given > *.expected { "shorter" } else { "longer" })]
    Edge {
        /// The tree's size.
        size: u64,
        /// Bytes given.
        given: usize,
        /// Bytes the edge of such a tree has.
        expected: usize,
    },
    /// A stored tile holds fewer (or, for an exact load, other) hashes than the tree needs.
    #[error("tile {level}/{idx} holds {held} hashes; {needed}")]
    Tile {
        /// The tile's level.
        level: u32,
        /// The tile's index.
        idx: u64,
        /// Hashes it holds.
        held: usize,
        /// What needed it, and how many hashes that takes.
        needed: String,
    },
    /// The database could not be read.
    #[error("reading tiles: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The tree's right edge: for each level, the hashes of the tile that is not yet full. With
/// the size, it is enough to extend the tree and to compute its root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    size: u64,
    edge: Vec<Vec<Hash>>,
    /// Tiles that changed since the last save: full ones as they were completed, and the
    /// levels whose partial tile grew.
    full: Vec<(u32, u64, Vec<Hash>)>,
    grown: Vec<bool>,
}

impl Tree {
    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds a leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        self.size += 1;
        let mut level = 0usize;
        let mut hash = leaf;
        loop {
            if self.edge.len() == level {
                self.edge.push(Vec::with_capacity(TILE_WIDTH));
                self.grown.push(false);
            }
            self.edge[level].push(hash);
            self.grown[level] = true;
            if self.edge[level].len() < TILE_WIDTH {
                return;
            }
            let full = std::mem::replace(&mut self.edge[level], Vec::with_capacity(TILE_WIDTH));
            hash = merkle::root(&full);
            let nodes = self.size >> (TILE_HEIGHT * level as u32);
            let idx = nodes / TILE_WIDTH as u64 - 1;
            self.full.push((level as u32, idx, full));
            self.grown[level] = false;
            level += 1;
        }
    }

    /// The root of the tree.
    pub fn root(&self) -> Hash {
        let mut subtrees = Vec::new();
        for hashes in self.edge.iter().rev() {
            let mut rest = &hashes[..];
            while !rest.is_empty() {
                let take = 1usize << (usize::BITS - 1 - rest.len().leading_zeros());
                subtrees.push(merkle::root(&rest[..take]));
                rest = &rest[take..];
            }
        }
        fold(subtrees)
    }

    /// Writes every tile that changed since the last save.
    pub fn save(&mut self, connection: &Connection) -> rusqlite::Result<()> {
        let mut save = connection.prepare_cached(SAVE_TILE)?;
        for (level, idx, hashes) in self.full.drain(..) {
            save.execute((level, idx as i64, hashes.concat()))?;
        }
        for (level, grown) in self.grown.iter_mut().enumerate() {
            if std::mem::take(grown) && !self.edge[level].is_empty() {
                let nodes = self.size >> (TILE_HEIGHT * level as u32);
                let idx = nodes / TILE_WIDTH as u64;
                save.execute((level as u32, idx as i64, self.edge[level].concat()))?;
            }
        }
        Ok(())
    }

    /// The full tiles completed since the last save or take, taken: `(level, idx, hashes)`.
    pub fn take_full(&mut self) -> Vec<(u32, u64, Vec<Hash>)> {
        std::mem::take(&mut self.full)
    }

    /// The tiles not yet full, `(level, idx, hashes)`, lowest level first.
    pub fn partial_tiles(&self) -> Vec<(u32, u64, &[Hash])> {
        self.edge
            .iter()
            .enumerate()
            .filter(|(_, hashes)| !hashes.is_empty())
            .map(|(level, hashes)| {
                let nodes = self.size >> (TILE_HEIGHT * level as u32);
                (level as u32, nodes / TILE_WIDTH as u64, &hashes[..])
            })
            .collect()
    }

    /// How many tiles a tree of this size has, full and partial.
    pub fn tile_count(&self) -> u64 {
        let mut count = 0;
        let mut nodes = self.size;
        while nodes > 0 {
            count += nodes.div_ceil(TILE_WIDTH as u64);
            nodes /= TILE_WIDTH as u64;
        }
        count
    }

    /// The right edge as bytes: every level's hashes of its tile not yet full, lowest level
    /// first. With the size it restores the tree ([`Tree::from_edge`]) where the tiles are
    /// not at hand, as in the fleet's watermark.
    pub fn edge_bytes(&self) -> Vec<u8> {
        self.edge.iter().flatten().flatten().copied().collect()
    }

    /// The tree of `size` leaves whose right edge [`Tree::edge_bytes`] gave; refuses bytes
    /// of another length than such a tree's edge.
    pub fn from_edge(size: u64, bytes: &[u8]) -> Result<Tree, TreeError> {
        let given = bytes.len();
        let mut bytes = bytes;
        let mut expected = 0;
        let mut level = 0u32;
        while level < 64 / TILE_HEIGHT && size >> (TILE_HEIGHT * level) > 0 {
            expected += ((size >> (TILE_HEIGHT * level)) % TILE_WIDTH as u64) as usize * 32;
            level += 1;
        }
        if given != expected {
            return Err(TreeError::Edge {
                size,
                given,
                expected,
            });
        }
        let mut tree = Tree {
            size,
            ..Tree::default()
        };
        let mut level = 0u32;
        while level < 64 / TILE_HEIGHT && size >> (TILE_HEIGHT * level) > 0 {
            let width = ((size >> (TILE_HEIGHT * level)) % TILE_WIDTH as u64) as usize;
            let (head, rest) = bytes.split_at(width * 32);
            tree.edge.push(
                head.chunks_exact(32)
                    .map(|hash| Hash::try_from(hash).expect("32 bytes"))
                    .collect(),
            );
            tree.grown.push(false);
            bytes = rest;
            level += 1;
        }
        Ok(tree)
    }

    /// The tree stored in the database, as big as its tiles say (`size` leaves).
    pub fn load(connection: &Connection, size: u64) -> Result<Tree, TreeError> {
        Tree::load_prefix(connection, size, false)
    }

    /// The tree of the first `size` leaves of the tree stored in the database, which may be
    /// bigger: where a pruned log's walk starts.
    pub fn load_start(connection: &Connection, size: u64) -> Result<Tree, TreeError> {
        Tree::load_prefix(connection, size, true)
    }

    fn load_prefix(connection: &Connection, size: u64, bigger: bool) -> Result<Tree, TreeError> {
        let mut tree = Tree {
            size,
            ..Tree::default()
        };
        let mut tiles = Tiles::new(connection);
        let mut level = 0u32;
        while size >> (TILE_HEIGHT * level) > 0 {
            let nodes = size >> (TILE_HEIGHT * level);
            let width = (nodes % TILE_WIDTH as u64) as usize;
            let edge = if width == 0 {
                Vec::new()
            } else {
                let idx = nodes / TILE_WIDTH as u64;
                let tile = tiles.tile(level, idx)?;
                let tile = if bigger && tile.len() > width {
                    &tile[..width]
                } else {
                    tile
                };
                if tile.len() != width {
                    return Err(TreeError::Tile {
                        level,
                        idx,
                        held: tile.len(),
                        needed: format!("a tree of {size} leaves has {width} there"),
                    });
                }
                tile.to_vec()
            };
            tree.edge.push(edge);
            tree.grown.push(false);
            level += 1;
        }
        Ok(tree)
    }
}

/// The root over subtree roots given left to right, each at least as big as the next:
/// `node(s1, node(s2, … node(sk−1, sk)))`.
fn fold(subtrees: Vec<Hash>) -> Hash {
    let mut iter = subtrees.into_iter().rev();
    let Some(mut root) = iter.next() else {
        return merkle::EMPTY_ROOT;
    };
    for left in iter {
        root = merkle::node_hash(&left, &root);
    }
    root
}

/// Where the level-0 tiles of pruned entries are found: the archive segments
/// (`archive::Archives`).
pub trait PrunedTiles {
    /// The leaf hashes of level-0 tile `idx`; none when they cannot be had, and the question
    /// that needed them then says which tile that was.
    fn leaf_tile(&mut self, idx: u64) -> Option<Vec<Hash>>;
}

/// Stored tiles, read on demand and kept for the next question.
pub struct Tiles<'c> {
    connection: &'c Connection,
    cache: HashMap<(u32, u64), Vec<Hash>>,
    /// Where the level-0 tiles of pruned entries are, when they were archived.
    archives: Option<&'c mut dyn PrunedTiles>,
}

impl<'c> Tiles<'c> {
    /// Tiles of the database `connection` reads.
    pub fn new(connection: &'c Connection) -> Tiles<'c> {
        Tiles {
            connection,
            cache: HashMap::new(),
            archives: None,
        }
    }

    /// Tiles of the database `connection` reads, with the level-0 tiles the log pruned read
    /// from its archive segments.
    pub fn with_archives(
        connection: &'c Connection,
        archives: &'c mut dyn PrunedTiles,
    ) -> Tiles<'c> {
        Tiles {
            archives: Some(archives),
            ..Tiles::new(connection)
        }
    }

    /// The hashes of tile `(level, idx)`; none when it is not stored.
    pub fn tile(&mut self, level: u32, idx: u64) -> rusqlite::Result<&[Hash]> {
        if !self.cache.contains_key(&(level, idx)) {
            let blob: Option<Vec<u8>> = self
                .connection
                .prepare_cached(READ_TILE)?
                .query_row((level, idx as i64), |row| row.get(0))
                .optional()?;
            let mut hashes: Vec<Hash> = blob
                .unwrap_or_default()
                .chunks_exact(32)
                .map(|chunk| chunk.try_into().expect("32 bytes"))
                .collect();
            if hashes.is_empty()
                && level == 0
                && let Some(archives) = &mut self.archives
            {
                hashes = archives.leaf_tile(idx).unwrap_or_default();
            }
            self.cache.insert((level, idx), hashes);
        }
        Ok(&self.cache[&(level, idx)])
    }

    /// The hash of the complete subtree of height `height` whose leftmost leaf is
    /// `index << height`.
    pub fn node(&mut self, height: u32, index: u64) -> Result<Hash, TreeError> {
        let level = height / TILE_HEIGHT;
        let below = height % TILE_HEIGHT;
        let first = index << below;
        let count = 1usize << below;
        let idx = first / TILE_WIDTH as u64;
        let at = (first % TILE_WIDTH as u64) as usize;
        let tile = self.tile(level, idx)?;
        let Some(hashes) = tile.get(at..at + count) else {
            return Err(TreeError::Tile {
                level,
                idx,
                held: tile.len(),
                needed: format!("too few for the node at height {height}, index {index}"),
            });
        };
        Ok(merkle::root(hashes))
    }

    /// The tree hash of the leaves `start..end`, for a range that RFC 9162's recursion
    /// visits: the aligned subtrees it is made of, folded.
    pub fn range(&mut self, mut start: u64, end: u64) -> Result<Hash, TreeError> {
        let mut subtrees = Vec::new();
        while start < end {
            let mut height = if start == 0 {
                63
            } else {
                start.trailing_zeros()
            };
            while height > 0 && (1u64.checked_shl(height).is_none_or(|n| start + n > end)) {
                height -= 1;
            }
            subtrees.push(self.node(height, start >> height)?);
            start += 1 << height;
        }
        Ok(fold(subtrees))
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&mut self, size: u64) -> Result<Hash, TreeError> {
        self.range(0, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::schema::{self, Durability};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    #[test]
    fn archives_count_the_same_leaves_in_a_tile() {
        assert_eq!(
            crate::format::archive::file_name(1, TILE_WIDTH as u64),
            "segment-000000000001-000000000256.db"
        );
    }

    #[test]
    fn the_edge_gives_the_root_of_every_size() {
        let leaves = leaves(70_000);
        let mut tree = Tree::default();
        for (n, leaf) in leaves.iter().enumerate() {
            if n < 600 || n % 9_973 == 0 {
                assert_eq!(tree.root(), merkle::root(&leaves[..n]), "size {n}");
            }
            tree.push(*leaf);
        }
        assert_eq!(tree.root(), merkle::root(&leaves));
    }

    #[test]
    fn the_edge_as_bytes_restores_the_tree_and_refuses_other_lengths() {
        let leaves = leaves(70_000);
        let mut tree = Tree::default();
        for (n, leaf) in leaves.iter().enumerate() {
            if n < 300 || n % 4_999 == 0 || n == 65_536 {
                let bytes = tree.edge_bytes();
                let mut restored = Tree::from_edge(n as u64, &bytes).unwrap();
                assert_eq!(restored.root(), tree.root(), "size {n}");
                restored.push(*leaf);
                let mut grown = tree.clone();
                grown.push(*leaf);
                assert_eq!(restored.root(), grown.root(), "size {n} + 1");
                if n > 0 {
                    assert!(Tree::from_edge(n as u64, &bytes[1..]).is_err());
                    assert!(Tree::from_edge(n as u64 + 1, &bytes).is_err());
                }
            }
            tree.push(*leaf);
        }
        assert!(Tree::from_edge(0, &[0; 32]).is_err());
    }

    #[test]
    fn stored_tiles_give_roots_and_proofs_and_load_back_as_the_edge() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection =
            schema::open_writer(&dir.path().join("w.db"), Durability::Normal, 1024).unwrap();
        let leaves = leaves(66_000);
        let mut tree = Tree::default();
        // Saved in uneven batches, as the writer would.
        for (batch, chunk) in leaves.chunks(997).enumerate() {
            let transaction = connection.transaction().unwrap();
            for leaf in chunk {
                tree.push(*leaf);
            }
            tree.save(&transaction).unwrap();
            transaction.commit().unwrap();
            let size = tree.size();
            if batch % 7 == 0 {
                let mut tiles = Tiles::new(&connection);
                assert_eq!(tiles.root(size).unwrap(), tree.root(), "size {size}");
                let loaded = Tree::load(&connection, size).unwrap();
                assert_eq!(loaded.root(), tree.root());
                assert_eq!(loaded.edge, tree.edge);
            }
        }
        let mut tiles = Tiles::new(&connection);
        for size in [1u64, 2, 255, 256, 257, 65_535, 65_536, 65_537, 66_000] {
            assert_eq!(
                tiles.root(size).unwrap(),
                merkle::root(&leaves[..size as usize])
            );
            for index in [0, size / 2, size - 1] {
                let proof =
                    merkle::inclusion_proof(index, size, &mut |a, b| tiles.range(a, b).unwrap())
                        .unwrap();
                let root = merkle::root(&leaves[..size as usize]);
                merkle::verify_inclusion(index, size, &leaves[index as usize], &proof, &root)
                    .unwrap();
            }
            let old = size / 3;
            let proof =
                merkle::consistency_proof(old, size, &mut |a, b| tiles.range(a, b).unwrap())
                    .unwrap();
            merkle::verify_consistency(
                old,
                size,
                &proof,
                &merkle::root(&leaves[..old as usize]),
                &merkle::root(&leaves[..size as usize]),
            )
            .unwrap();
        }
        let tile_count: i64 = connection
            .query_row("SELECT count(*) FROM tiles", [], |row| row.get(0))
            .unwrap();
        // Level 0: 257 full tiles and a partial one; level 1: one full and a partial one
        // (257 nodes); level 2: a partial one (1 node).
        assert_eq!(tile_count, 258 + 2 + 1);
    }
}
