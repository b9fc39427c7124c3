//! Signed notes (C2SP `signed-note`) with Ed25519 keys, and the checkpoint a log signs in
//! one (C2SP `tlog-checkpoint`): the formats of the transparency-log world, so that any tool
//! that speaks them can check what a witness log signed.
//!
//! A note is UTF-8 text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`. A key id is the first four bytes of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`; a verifier key is written
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>`, a signer key
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ seed)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signature type byte of Ed25519 in key ids and key encodings.
pub const ED25519: u8 = 0x01;

/// The most signature lines a note may carry, as the reference implementation allows.
pub const MAX_SIGNATURES: usize = 100;

/// The largest note read, in bytes.
pub const MAX_NOTE_LEN: usize = 1 << 20;

/// The dash and space that start a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a key, a note or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key's text is not a key of the expected kind.
    #[error("bad key: {0}")]
    Key(String),
    /// The note is not a well-formed signed note.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// No signature of the note is by the key asked for.
    #[error("the note has no signature by {0}")]
    Unsigned(String),
    /// A signature by the key does not verify: the text or the signature was changed.
    #[error("the signature by {0} does not verify: the note was changed or forged")]
    BadSignature(String),
    /// The text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
}

/// The key id of an Ed25519 key under `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519]);
    hasher.update(public);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Checks a key name: not empty, no space of any kind, no `+`.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::Key(format!(
            "{name:?} is not a key name (it must be non-empty, with no spaces and no '+')"
        )));
    }
    Ok(())
}

/// Splits `<name>+<hex id>+<base64(0x01 ‖ 32 bytes)>` and checks every part but the id's
/// agreement with the key, which depends on what the 32 bytes are.
fn split_key(text: &str, kind: &str) -> Result<(String, [u8; 4], [u8; 32]), NoteError> {
    let bad = |why: &str| NoteError::Key(format!("{kind} {text:?}: {why}"));
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <name>+<key id>+<key>"));
    };
    check_name(name)?;
    if id.len() != 8
        || !id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(bad("the key id is not eight lowercase hex digits"));
    }
    let id = u32::from_str_radix(id, 16)
        .map_err(|_| bad("the key id is not hex"))?
        .to_be_bytes();
    let key = BASE64
        .decode(key)
        .map_err(|_| bad("the key is not base64"))?;
    match key.split_first() {
        Some((&ED25519, rest)) if rest.len() == 32 => {
            Ok((name.to_owned(), id, rest.try_into().expect("32 bytes")))
        }
        Some((&ED25519, _)) => Err(bad("an Ed25519 key has 32 bytes")),
        _ => Err(bad("not an Ed25519 key (its first byte is not 0x01)")),
    }
}

/// A public key that checks a log's signatures, with the name it signs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    /// Reads a verifier key, `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let text = text.trim_end_matches('\n');
        let (name, id, public) = split_key(text, "verifier key")?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::Key(format!("{text:?}: not an Ed25519 public key")))?;
        if key_id(&name, &public) != id {
            return Err(NoteError::Key(format!(
                "{text:?}: the key id does not belong to this name and key"
            )));
        }
        Ok(VerifierKey { name, id, key })
    }

    /// The name the key signs under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The 32 bytes of the Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            u32::from_be_bytes(self.id),
            BASE64.encode(key)
        )
    }
}

/// A private key that signs notes under a name. It has no `Display`, so that it is never
/// printed by accident: [`SignerKey::to_secret_text`] writes it out.
pub struct SignerKey {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SignerKey({}+{:08x})",
            self.name,
            u32::from_be_bytes(self.id)
        )
    }
}

impl SignerKey {
    /// The key whose 32-byte secret seed is `seed`, signing under `name`. The caller brings
    /// the randomness.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<SignerKey, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(SignerKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Reads a signer key, `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(text: &str) -> Result<SignerKey, NoteError> {
        let text = text.trim_end_matches('\n');
        let Some(rest) = text.strip_prefix("PRIVATE+KEY+") else {
            return Err(NoteError::Key(
                "a signer key starts with PRIVATE+KEY+".to_owned(),
            ));
        };
        // The error must not echo the secret.
        let (name, id, seed) = split_key(rest, "signer key").map_err(|_| {
            NoteError::Key(
                "the signer key is not PRIVATE+KEY+<name>+<key id>+<base64 Ed25519 seed>"
                    .to_owned(),
            )
        })?;
        let key = SignerKey::from_seed(&name, seed)?;
        if key.id != id {
            return Err(NoteError::Key(
                "the signer key's id does not belong to its name and key".to_owned(),
            ));
        }
        Ok(key)
    }

    /// The key as text, to be kept secret: what [`SignerKey::parse`] reads.
    pub fn to_secret_text(&self) -> String {
        let mut seed = vec![ED25519];
        seed.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            u32::from_be_bytes(self.id),
            BASE64.encode(seed)
        )
    }

    /// The name the key signs under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// `text` signed: the text, a blank line, and this key's signature line. The text must
    /// end in a newline and hold no control character but newlines.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        ))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the text does not end in a newline".into(),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "the text holds a control character".into(),
        ));
    }
    Ok(())
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub name: String,
    /// The signer's key id.
    pub id: [u8; 4],
    /// The signature itself.
    pub signature: Vec<u8>,
}

/// A signed note, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Its signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note. It is split at its last blank line; every line after it must be
    /// a signature line.
    pub fn parse(note: &str) -> Result<Note, NoteError> {
        let bad = |why: &str| NoteError::Malformed(why.to_owned());
        if note.len() > MAX_NOTE_LEN {
            return Err(bad("longer than a megabyte"));
        }
        let Some(split) = note.rfind("\n\n") else {
            return Err(bad("no blank line before the signatures"));
        };
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        check_text(text)?;
        if !signatures.ends_with('\n') {
            return Err(bad("the last signature line does not end in a newline"));
        }
        let lines: Vec<&str> = signatures[..signatures.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(bad("more than 100 signatures"));
        }
        let signatures = lines
            .into_iter()
            .map(|line| {
                let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
                    bad("a signature line does not start with an em dash and a space")
                })?;
                let (name, blob) = rest
                    .split_once(' ')
                    .ok_or_else(|| bad("a signature line lacks its signature"))?;
                check_name(name).map_err(|_| bad("a signature line has a bad key name"))?;
                let blob = BASE64
                    .decode(blob)
                    .map_err(|_| bad("a signature is not base64"))?;
                if blob.len() < 5 {
                    return Err(bad("a signature is too short"));
                }
                Ok(NoteSignature {
                    name: name.to_owned(),
                    id: blob[..4].try_into().expect("four bytes"),
                    signature: blob[4..].to_vec(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The text, if the note carries a valid signature by `key`. A signature by that key that
    /// does not verify refuses the note, whatever other signatures say.
    pub fn verify(&self, key: &VerifierKey) -> Result<&str, NoteError> {
        let Some(signed) = self
            .signatures
            .iter()
            .find(|signature| signature.name == key.name && signature.id == key.id)
        else {
            return Err(NoteError::Unsigned(key.to_string()));
        };
        let signature = Signature::from_slice(&signed.signature)
            .map_err(|_| NoteError::BadSignature(key.name.clone()))?;
        key.key
            .verify(self.text.as_bytes(), &signature)
            .map_err(|_| NoteError::BadSignature(key.name.clone()))?;
        Ok(&self.text)
    }
}

/// A checkpoint: a log's origin, its size and its root, as a note's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line: who keeps it, and which log it is.
    pub origin: String,
    /// The number of entries the tree covers.
    pub size: u64,
    /// The tree's root.
    pub root: Hash,
    /// Lines after the root, if any, each ending in a newline.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint a signed note carries, once the note's signature by `key` verifies:
    /// parse the note, check the signature, read the checkpoint, in one step, as every
    /// verifier must.
    pub fn verified(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(Note::parse(note)?.verify(key)?)
    }

    /// Reads a checkpoint from a note's text.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: &str| NoteError::Checkpoint(why.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("it does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|origin| !origin.is_empty());
        let (Some(origin), Some(size), Some(root)) = (origin, lines.next(), lines.next()) else {
            return Err(bad("expected an origin, a size and a root, one a line"));
        };
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("the size is not a decimal number"));
        }
        let size = size.parse().map_err(|_| bad("the size is too large"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|root| Hash::try_from(root).ok())
            .ok_or_else(|| bad("the root is not 32 bytes in base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint as a note's text.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for extension in &self.extensions {
            text.push_str(extension);
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the reference implementation (golang.org/x/mod/sumdb/note).
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIGNATURE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_reference_example_signs_and_verifies_byte_for_byte() {
        let signer = SignerKey::parse(SKEY).unwrap();
        assert_eq!(signer.to_secret_text(), SKEY);
        assert_eq!(signer.verifier().to_string(), VKEY);
        let note = signer.sign(TEXT).unwrap();
        assert_eq!(note, format!("{TEXT}\n{SIGNATURE}"));
        let verifier = VerifierKey::parse(VKEY).unwrap();
        assert_eq!(Note::parse(&note).unwrap().verify(&verifier).unwrap(), TEXT);
    }

    #[test]
    fn a_changed_text_or_signature_or_another_key_is_refused() {
        let verifier = VerifierKey::parse(VKEY).unwrap();
        let note = format!("{TEXT}\n{SIGNATURE}");
        let changed = note.replace("cryptography", "cryptographY");
        assert!(matches!(
            Note::parse(&changed).unwrap().verify(&verifier),
            Err(NoteError::BadSignature(_))
        ));
        let other = SignerKey::from_seed("PeterNeumann", [7; 32]).unwrap();
        let by_other = other.sign(TEXT).unwrap();
        assert!(matches!(
            Note::parse(&by_other).unwrap().verify(&verifier),
            Err(NoteError::Unsigned(_))
        ));
        // A second signature does not rescue a failing one by the key asked for.
        let forged = note.replace("x08go/ZJ", "x08go/ZK");
        let both = format!("{forged}{}", &by_other[TEXT.len() + 1..]);
        assert!(Note::parse(&both).unwrap().verify(&verifier).is_err());
    }

    #[test]
    fn garbage_keys_and_notes_get_clear_errors() {
        for key in [
            "",
            "PeterNeumann",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ApRc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
            "PeterNeumann+c74f20a3+!!!!",
        ] {
            let error = VerifierKey::parse(key).unwrap_err();
            assert!(matches!(error, NoteError::Key(_)), "{key:?}: {error}");
        }
        let secret_error = SignerKey::parse(&SKEY.replace("AYEK", "AZEK")).unwrap_err();
        assert!(
            !secret_error.to_string().contains("FALVFG"),
            "{secret_error}"
        );
        assert!(SignerKey::parse(VKEY).is_err());
        for note in [
            "",
            TEXT,
            &format!("{TEXT}\n"),
            &format!("{TEXT}\n- PeterNeumann x08go/ZJ\n"),
            &format!("{TEXT}\n\u{2014} PeterNeumann\n"),
            &format!("{TEXT}\n\u{2014} PeterNeumann %%%\n"),
            &format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
            &format!("{TEXT}\n{}", SIGNATURE.trim_end()),
            &format!("no newline\n{SIGNATURE}"),
            &format!("bell\u{7}\n\n{SIGNATURE}"),
            &format!("{TEXT}\n{}", SIGNATURE.repeat(101)),
        ] {
            assert!(Note::parse(note).is_err(), "{note:?}");
        }
        assert!(SignerKey::from_seed("a+b", [0; 32]).is_err());
        assert!(
            SignerKey::from_seed("a", [0; 32])
                .unwrap()
                .sign("no newline")
                .is_err()
        );
    }

    #[test]
    fn checkpoints_read_back_as_written_and_garbage_is_refused() {
        let checkpoint = Checkpoint {
            origin: "example.com/witness".into(),
            size: 12_345,
            root: [9; 32],
            extensions: vec!["extra".into()],
        };
        let text = checkpoint.to_text();
        assert_eq!(
            text,
            "example.com/witness\n12345\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\nextra\n"
        );
        assert_eq!(Checkpoint::parse(&text).unwrap(), checkpoint);
        for bad in [
            "",
            "origin\n",
            "origin\n12\n",
            "\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "origin\n012\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "origin\n-1\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "origin\n99999999999999999999\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "origin\n12\nCQkJ\n",
            "origin\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=",
            "origin\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
