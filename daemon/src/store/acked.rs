//! The acknowledged mark: the last `seq` the writer acknowledged, and its chain hash, in a
//! small file beside the state file, rewritten in place after every commit and before its
//! answers go out.
//!
//! The signed checkpoint says what the daemon signed, at most once an interval; under load
//! thousands of entries are acknowledged between two signatures. A write-ahead log damaged
//! after a crash (a frame overwritten, the file cut, its salt changed) makes SQLite drop
//! every commit from the damage on without a word, and those entries were acknowledged. The
//! mark lets the start check name them. It is written with one `pwrite` and not fsynced: it
//! survives the daemon's death (the kernel holds the page), which is when a damaged WAL
//! would otherwise go unnoticed, but not always a power cut, after which the start check
//! falls back to the signed checkpoint (THREAT-MODEL.md says so).
//!
//! The file is 56 bytes: `WITACK01`, the `seq` (8 bytes, big-endian), the chain hash (32
//! bytes), and the first 8 bytes of the SHA-256 of the 48 before them (FORMAT.md).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The first 8 bytes of the file: what it is, and its layout's version.
const MAGIC: &[u8; 8] = b"WITACK01";

/// The file's length.
const LEN: usize = 56;

/// The mark's file for a state file: beside it, with the extension `.acked`.
pub fn mark_file(state_file: &Path) -> PathBuf {
    state_file.with_extension("acked")
}

/// The last acknowledged entry, as the mark holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Its `seq`.
    pub seq: u64,
    /// Its chain hash.
    pub hash: [u8; 32],
}

impl Acked {
    fn to_bytes(self) -> [u8; LEN] {
        let mut bytes = [0u8; LEN];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&self.seq.to_be_bytes());
        bytes[16..48].copy_from_slice(&self.hash);
        let check = Sha256::digest(&bytes[..48]);
        bytes[48..].copy_from_slice(&check[..8]);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<Acked, String> {
        if bytes.len() != LEN {
            return Err(format!("it holds {} bytes, not {LEN}", bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err("it does not start with WITACK01".into());
        }
        if Sha256::digest(&bytes[..48])[..8] != bytes[48..] {
            return Err("its check does not match its content".into());
        }
        Ok(Acked {
            seq: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
            hash: bytes[16..48].try_into().expect("32 bytes"),
        })
    }
}

/// Reads the mark at `path`: `Ok(None)` when there is none (a log started by a daemon from
/// before the mark, or never written to), `Err` with a sentence when the file cannot be read
/// or is not a mark.
pub fn read(path: &Path) -> Result<Option<Acked>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Acked::from_bytes(&bytes)
            .map(Some)
            .map_err(|reason| format!("{} is not an acknowledged mark: {reason}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The open mark the writer rewrites after each commit.
#[derive(Debug)]
pub struct Mark {
    file: File,
    path: PathBuf,
    /// Why the last write failed, while writes fail: said once, not at every commit.
    failure: Option<String>,
}

impl Mark {
    /// Opens (or makes, readable by the daemon's user only) the mark at `path`.
    pub fn open(path: &Path) -> std::io::Result<Mark> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Ok(Mark {
            file,
            path: path.to_owned(),
            failure: None,
        })
    }

    /// Records `acked` as the last acknowledged entry. A failure is logged, once while it
    /// lasts, and does not stop the answers: the entries are committed, and only the start
    /// check's reach is shorter until the mark is written again.
    pub fn record(&mut self, acked: Acked) {
        // In place, at offset 0: after the first write no block is allocated and the length
        // does not change, so a full disk cannot refuse it.
        match self.file.write_all_at(&acked.to_bytes(), 0) {
            Ok(()) => {
                if let Some(previous) = self.failure.take() {
                    tracing::warn!(path = %self.path.display(), "the acknowledged mark is written again, after: {previous}");
                }
            }
            Err(error) => {
                let said = error.to_string();
                if self.failure.as_ref() != Some(&said) {
                    tracing::error!(
                        path = %self.path.display(),
                        %error,
                        "cannot write the acknowledged mark; entries are still committed, but \
                         the start check reaches only the last signed checkpoint until it is"
                    );
                    self.failure = Some(said);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness.acked");
        assert_eq!(read(&path), Ok(None));
        let mut mark = Mark::open(&path).unwrap();
        let acked = Acked {
            seq: 4_000_000_001,
            hash: [7; 32],
        };
        mark.record(Acked {
            seq: 1,
            hash: [1; 32],
        });
        mark.record(acked);
        assert_eq!(read(&path), Ok(Some(acked)));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path).unwrap_err().contains("check does not match"));
        std::fs::write(&path, b"WITACK01").unwrap();
        assert!(read(&path).unwrap_err().contains("8 bytes, not 56"));
        std::fs::write(&path, [0u8; 56]).unwrap();
        assert!(read(&path).unwrap_err().contains("WITACK01"));
    }
}
