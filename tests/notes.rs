//! Signed notes and checkpoints checked by an independent Ed25519 implementation: OpenSSL
//! verifies what witness signs, and witness verifies what OpenSSL signs with the same key.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use witness_protocol::note::{Checkpoint, Note, SignerKey, VerifierKey};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const PUBLIC_KEY_DER: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an Ed25519 PKCS #8 private key (RFC 8410), before the 32 seed bytes.
const PRIVATE_KEY_DER: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// OpenSSL's check of `signature` over `text` with `public.pem`, in the working folder.
const VERIFY: [&str; 10] = [
    "pkeyutl",
    "-verify",
    "-pubin",
    "-inkey",
    "public.pem",
    "-rawin",
    "-in",
    "text",
    "-sigfile",
    "signature",
];

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn a_checkpoint() -> String {
    Checkpoint {
        origin: "host.example/witness".into(),
        size: 1_000_000,
        root: [0xab; 32],
        extensions: Vec::new(),
    }
    .to_text()
}

#[test]
fn openssl_verifies_a_checkpoint_witness_signed() {
    let dir = tempfile::tempdir().unwrap();
    let signer = SignerKey::from_seed("host.example/witness", [42; 32]).unwrap();
    let text = a_checkpoint();
    let note = Note::parse(&signer.sign(&text).unwrap()).unwrap();
    let mut der = PUBLIC_KEY_DER.to_vec();
    der.extend_from_slice(&signer.verifier().public_key());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        BASE64.encode(der)
    );
    std::fs::write(dir.path().join("public.pem"), pem).unwrap();
    std::fs::write(dir.path().join("text"), &note.text).unwrap();
    std::fs::write(dir.path().join("signature"), &note.signatures[0].signature).unwrap();
    let verdict = openssl(dir.path(), &VERIFY);
    assert!(
        String::from_utf8_lossy(&verdict).contains("Signature Verified Successfully"),
        "{}",
        String::from_utf8_lossy(&verdict)
    );
    // The same check fails on a changed text, so the verdict above means something.
    std::fs::write(
        dir.path().join("text"),
        note.text.replace("1000000", "1000001"),
    )
    .unwrap();
    let refused = Command::new("openssl")
        .args(VERIFY)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn witness_verifies_a_checkpoint_openssl_signed_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-outform",
            "DER",
            "-out",
            "key.der",
        ],
    );
    let der = std::fs::read(dir.path().join("key.der")).unwrap();
    assert_eq!(der[..16], PRIVATE_KEY_DER, "an Ed25519 PKCS #8 key");
    let seed: [u8; 32] = der[16..].try_into().unwrap();
    let signer = SignerKey::from_seed("openssl.example/log", seed).unwrap();
    let text = a_checkpoint();
    std::fs::write(dir.path().join("text"), &text).unwrap();
    let signature = openssl(
        dir.path(),
        &[
            "pkeyutl", "-sign", "-keyform", "DER", "-inkey", "key.der", "-rawin", "-in", "text",
        ],
    );
    // Ed25519 is deterministic: both sign the same bytes the same way.
    let ours = Note::parse(&signer.sign(&text).unwrap()).unwrap();
    assert_eq!(ours.signatures[0].signature, signature);
    let mut blob = signer.verifier().id().to_vec();
    blob.extend_from_slice(&signature);
    let note = format!(
        "{text}\n\u{2014} openssl.example/log {}\n",
        BASE64.encode(blob)
    );
    let verifier = VerifierKey::parse(&signer.verifier().to_string()).unwrap();
    let opened = Note::parse(&note).unwrap();
    let checkpoint = Checkpoint::parse(opened.verify(&verifier).unwrap()).unwrap();
    assert_eq!(checkpoint.size, 1_000_000);
}
