//! Proof bundles (C2SP `tlog-proof`): an entry's index, its inclusion proof and the signed
//! checkpoint the proof leads to, in one text file that anyone can check offline with the
//! log's verifier key. witness puts the entry's leaf (its canonical encoding, `FORMAT.md`)
//! in the bundle's `extra` line, so that the bundle carries what it proves.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the leaf>
//! index <zero-based index>
//! <base64 hash>        one a line, from the leaf's sibling up
//!
//! <the checkpoint's signed note, verbatim>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, Note, VerifierKey};

/// The first line of a bundle.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The text is not a proof bundle.
    #[error("malformed proof bundle: {0}")]
    Malformed(String),
    /// The checkpoint does not verify with the key.
    #[error("the bundle's checkpoint: {0}")]
    Note(#[from] crate::note::NoteError),
    /// The inclusion proof does not lead to the signed root.
    #[error("the entry is not proved to be in the log: {0}")]
    Proof(#[from] merkle::ProofError),
}

/// A parsed proof bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofBundle {
    /// The entry's leaf, when the bundle carries it.
    pub leaf: Option<Vec<u8>>,
    /// The entry's index in the tree: its `seq` minus one.
    pub index: u64,
    /// The inclusion proof.
    pub proof: Vec<Hash>,
    /// The checkpoint's signed note.
    pub note: String,
}

impl ProofBundle {
    /// The bundle as text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{HEADER}\n");
        if let Some(leaf) = &self.leaf {
            text.push_str(&format!("extra {}\n", BASE64.encode(leaf)));
        }
        text.push_str(&format!("index {}\n", self.index));
        for hash in &self.proof {
            text.push_str(&BASE64.encode(hash));
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.note);
        text
    }

    /// Reads a bundle.
    pub fn parse(text: &str) -> Result<ProofBundle, BundleError> {
        let bad = |why: &str| BundleError::Malformed(why.to_owned());
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(bad("it does not start with c2sp.org/tlog-proof@v1"));
        }
        let mut line = lines.next();
        let mut leaf = None;
        if let Some(extra) = line.and_then(|line| line.strip_prefix("extra ")) {
            leaf = Some(
                BASE64
                    .decode(extra)
                    .map_err(|_| bad("the extra line is not base64"))?,
            );
            line = lines.next();
        }
        let index = line
            .and_then(|line| line.strip_prefix("index "))
            .ok_or_else(|| bad("no index line"))?;
        if index.is_empty()
            || !index.bytes().all(|b| b.is_ascii_digit())
            || (index.len() > 1 && index.starts_with('0'))
        {
            return Err(bad("the index is not a decimal number"));
        }
        let index = index.parse().map_err(|_| bad("the index is too large"))?;
        let proof = lines
            .map(|line| {
                BASE64
                    .decode(line)
                    .ok()
                    .and_then(|hash| Hash::try_from(hash).ok())
                    .ok_or_else(|| bad("a proof line is not a base64 hash of 32 bytes"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Note::parse(note)?;
        Ok(ProofBundle {
            leaf,
            index,
            proof,
            note: note.to_owned(),
        })
    }

    /// Checks the bundle: its checkpoint is signed by `key`, and `leaf` (the bundle's own
    /// when `None`) is entry `index` of the tree that checkpoint signed. Returns the
    /// checkpoint.
    pub fn verify(
        &self,
        key: &VerifierKey,
        leaf: Option<&[u8]>,
    ) -> Result<Checkpoint, BundleError> {
        let leaf = leaf
            .or(self.leaf.as_deref())
            .ok_or_else(|| BundleError::Malformed("the bundle does not carry its entry".into()))?;
        let note = Note::parse(&self.note)?;
        let checkpoint = Checkpoint::parse(note.verify(key)?)?;
        merkle::verify_inclusion(
            self.index,
            checkpoint.size,
            &merkle::leaf_hash(leaf),
            &self.proof,
            &checkpoint.root,
        )?;
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignerKey;

    fn a_bundle(signer: &SignerKey) -> (ProofBundle, Vec<Vec<u8>>) {
        let leaves: Vec<Vec<u8>> = (0..13u8).map(|n| vec![n; 40]).collect();
        let hashes: Vec<Hash> = leaves.iter().map(|leaf| merkle::leaf_hash(leaf)).collect();
        let root = merkle::root(&hashes);
        let proof = merkle::inclusion_proof(6, 13, &mut |a, b| {
            merkle::root(&hashes[a as usize..b as usize])
        })
        .unwrap();
        let note = signer
            .sign(
                &Checkpoint {
                    origin: "example.org/log".into(),
                    size: 13,
                    root,
                    extensions: Vec::new(),
                }
                .to_text(),
            )
            .unwrap();
        let bundle = ProofBundle {
            leaf: Some(leaves[6].clone()),
            index: 6,
            proof,
            note,
        };
        (bundle, leaves)
    }

    #[test]
    fn a_bundle_reads_back_and_proves_its_entry_and_no_other() {
        let signer = SignerKey::from_seed("example.org/log", [3; 32]).unwrap();
        let (bundle, leaves) = a_bundle(&signer);
        let text = bundle.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
        let read = ProofBundle::parse(&text).unwrap();
        assert_eq!(read, bundle);
        let checkpoint = read.verify(&signer.verifier(), None).unwrap();
        assert_eq!(checkpoint.size, 13);
        assert!(read.verify(&signer.verifier(), Some(&leaves[5])).is_err());
        let other = SignerKey::from_seed("example.org/log", [4; 32]).unwrap();
        assert!(matches!(
            read.verify(&other.verifier(), None),
            Err(BundleError::Note(_))
        ));
        let moved = ProofBundle {
            index: 7,
            ..read.clone()
        };
        assert!(matches!(
            moved.verify(&signer.verifier(), None),
            Err(BundleError::Proof(_))
        ));
    }

    #[test]
    fn garbage_bundles_are_refused_with_the_reason() {
        let signer = SignerKey::from_seed("example.org/log", [3; 32]).unwrap();
        let (bundle, _) = a_bundle(&signer);
        let text = bundle.to_text();
        for bad in [
            String::new(),
            "c2sp.org/tlog-proof@v1\n".to_owned(),
            text.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
            text.replace("index 6", "index 06"),
            text.replace("index 6", "index -6"),
            text.replace("index 6", "idx 6"),
            text.replace("extra ", "extra !"),
            text.replacen('\n', "\nnot-a-hash\n", 3),
            text.replace("\u{2014}", "-"),
        ] {
            assert!(ProofBundle::parse(&bad).is_err(), "{bad:?}");
        }
        let without = ProofBundle {
            leaf: None,
            ..bundle
        };
        let read = ProofBundle::parse(&without.to_text()).unwrap();
        assert!(read.verify(&signer.verifier(), None).is_err());
    }
}
