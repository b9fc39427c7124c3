//! `witness prove` and `witness verify-proof`: a proof bundle from the daemon, and the check
//! of one with the verifier key alone, offline; and `witness consistency`, a proof that the
//! log grew only by appends, checked as it arrives.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use witness_client::Client;
use witness_daemon::format::chain::{Decoded, decode_row};
use witness_daemon::format::row::{COLUMNS, column, column_of};
use witness_protocol::merkle;
use witness_protocol::note::{Checkpoint, VerifierKey};
use witness_protocol::proof::ProofBundle;

use crate::output::{self, print_json};

/// Asks the daemon for the bundle of entry `seq` and writes it to `out` or standard output.
pub fn prove(
    client: &mut Client,
    seq: u64,
    out: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bundle = match client.prove(seq) {
        Ok(bundle) => bundle,
        // An entry that is not there is a request that is not one, as a range past the log's
        // end is to `verify`.
        Err(witness_client::Error::Refused(reply))
            if reply.message.starts_with("there is no entry") =>
        {
            eprintln!("witness: {}", reply.message);
            return Ok(ExitCode::from(2));
        }
        Err(error) => return Err(error.into()),
    };
    match out {
        Some(path) => {
            std::fs::write(path, &bundle)
                .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
            if json {
                print_json(&json!({"seq": seq, "file": path.display().to_string()}))?;
            }
        }
        None if json => print_json(&json!({"seq": seq, "bundle": bundle}))?,
        None => write!(output::stdout(), "{bundle}")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a verifier key given as text, or as the path of a file that holds it.
pub fn read_key(key: &str) -> Result<VerifierKey, String> {
    let text = if Path::new(key).is_file() {
        std::fs::read_to_string(key).map_err(|error| format!("cannot read {key}: {error}"))?
    } else {
        key.to_owned()
    };
    VerifierKey::parse(text.trim()).map_err(|error| {
        // A verifier key always holds a '+'; without one, a path was meant.
        if key.contains('+') {
            error.to_string()
        } else {
            format!("{key}: no such file, and not a verifier key (<name>+<key id>+<key>) either")
        }
    })
}

/// Checks the bundle in `file` with `key`: 0 proved, 1 not proved, 2 unreadable.
pub fn verify(file: &Path, key: &str, entry: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let unusable = |message: String| -> anyhow::Result<ExitCode> {
        eprintln!("witness: {message}");
        Ok(ExitCode::from(2))
    };
    let key = match read_key(key) {
        Ok(key) => key,
        Err(message) => return unusable(message),
    };
    let mut text = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|read| text = read)
    };
    if let Err(error) = read {
        return unusable(format!("cannot read {}: {error}", file.display()));
    }
    let bundle = match ProofBundle::parse(&text) {
        Ok(bundle) => bundle,
        Err(error) => return unusable(format!("{}: {error}", file.display())),
    };
    let verdict = bundle
        .verify(&key, None)
        .map_err(|error| error.to_string())
        .and_then(|checkpoint| {
            let leaf = bundle.leaf.as_deref().unwrap_or_default();
            let fields =
                decode_row(leaf).map_err(|error| format!("the bundle's entry: {error}"))?;
            if fields[column::SEQ] != Decoded::Integer(bundle.index as i64 + 1) {
                return Err(
                    "the bundle's entry does not carry the sequence number it is proved at".into(),
                );
            }
            if let Some(entry) = entry {
                matches_entry(&fields, entry)?;
            }
            Ok((checkpoint, fields))
        });
    let (checkpoint, fields) = match verdict {
        Ok(proved) => proved,
        Err(reason) => {
            if json {
                print_json(&json!({"proved": false, "reason": reason}))?;
            } else {
                writeln!(output::stdout(), "NOT PROVED: {reason}")?;
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let shown = |index: usize| match &fields[index] {
        Decoded::Null => serde_json::Value::Null,
        Decoded::Integer(value) => json!(value),
        Decoded::Text(text) => json!(text),
    };
    if json {
        // The payload and `imported` as the JSON they hold, as `export` shows them: a script
        // compares the two without parsing a string inside a string.
        let entry: serde_json::Map<String, serde_json::Value> = (0..fields.len())
            .map(|position| {
                let name = COLUMNS[column_of(position)];
                let value = match (&fields[position], name) {
                    (Decoded::Text(text), "payload" | "imported") => {
                        serde_json::from_str(text).unwrap_or_else(|_| json!(text))
                    }
                    _ => shown(position),
                };
                (name.to_owned(), value)
            })
            .collect();
        print_json(&json!({
            "proved": true, "seq": bundle.index + 1, "origin": checkpoint.origin,
            "tree_size": checkpoint.size, "entry": entry,
        }))?;
    } else {
        writeln!(
            output::stdout(),
            "proved: entry {} ({} {}) is in {}, signed at tree size {}",
            bundle.index + 1,
            shown(column::EVENT),
            shown(column::COMPONENT),
            checkpoint.origin,
            checkpoint.size
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the daemon for a consistency proof and checks it: the newer checkpoint must be
/// signed by the key, and the proof must lead from the older root (a kept checkpoint's, a
/// signed one the daemon holds, or failing both the one the daemon computes) to the newer.
pub fn consistency(
    client: &mut Client,
    old_size: Option<u64>,
    new_size: Option<u64>,
    kept: Option<&Path>,
    key: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = match key {
        Some(key) => read_key(key).map_err(|message| anyhow::anyhow!(message))?,
        None => VerifierKey::parse(&client.checkpoint()?.verifier_key)?,
    };
    let signed = |note: &str| -> Result<Checkpoint, String> {
        Checkpoint::verified(note, &key).map_err(|error| error.to_string())
    };
    let kept_path = kept;
    let kept = match kept {
        Some(path) => {
            let note = std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
            Some(signed(&note).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?)
        }
        None => None,
    };
    let old = kept
        .as_ref()
        .map_or(old_size.unwrap_or(0), |kept| kept.size);
    let report = client.consistency(old, new_size)?;
    // Where the older root comes from decides what the answer vouches for: a checkpoint the
    // user kept proves the daemon did not rewrite what it showed them; one the daemon holds
    // or computes only proves its own history is append-only.
    let (old_root, old_from) = match (&kept, &report.old_note) {
        (Some(kept_checkpoint), _) => (
            Ok(kept_checkpoint.root),
            format!(
                "the checkpoint kept in {}",
                kept_path.map_or_else(String::new, |path| path.display().to_string())
            ),
        ),
        (None, Some(note)) => (
            signed(note).map(|old| old.root),
            "a checkpoint the daemon signed then".to_owned(),
        ),
        (None, None) => (
            Ok(report.old_root),
            "computed by the daemon from its tiles (no checkpoint of that size was kept)"
                .to_owned(),
        ),
    };
    let verdict = signed(&report.new_note).and_then(|new| {
        let old_root = old_root.clone()?;
        merkle::verify_consistency(old, new.size, &report.proof, &old_root, &new.root)
            .map(|()| (new, old_root))
            .map_err(|error| error.to_string())
    });
    let proof: Vec<String> = report
        .proof
        .iter()
        .map(|hash| BASE64.encode(hash))
        .collect();
    match verdict {
        Ok((new, old_root)) => {
            if json {
                print_json(&json!({
                    "consistent": true,
                    "old_size": old,
                    "old_root": BASE64.encode(old_root),
                    "old_root_from": old_from,
                    "new_size": new.size,
                    "new_root": BASE64.encode(new.root),
                    "origin": new.origin,
                    "proof": proof,
                }))?;
            } else {
                let mut out = output::stdout();
                writeln!(
                    out,
                    "consistent: the log of {} signed by {} extends the tree of {old} \
                     by appends only",
                    crate::output::entries(new.size),
                    new.origin
                )?;
                writeln!(
                    out,
                    "  older tree  {}, root {} ({old_from})",
                    crate::output::entries(old),
                    BASE64.encode(old_root)
                )?;
                writeln!(
                    out,
                    "  newer tree  {}, root {} (the signed checkpoint)",
                    crate::output::entries(new.size),
                    BASE64.encode(new.root)
                )?;
                writeln!(
                    out,
                    "  proof       {} hashes, base64: an RFC 9162 consistency proof; hashed \
                     with the older root they give the newer one",
                    proof.len()
                )?;
                for line in &proof {
                    writeln!(out, "    {line}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            if json {
                print_json(&json!({"consistent": false, "reason": reason}))?;
            } else {
                writeln!(output::stdout(), "NOT CONSISTENT: {reason}")?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Whether the entry `json` describes is the one decoded.
fn matches_entry(fields: &[Decoded], entry: &str) -> Result<(), String> {
    let given: serde_json::Value =
        serde_json::from_str(entry).map_err(|error| format!("--entry is not JSON: {error}"))?;
    let text = |index: usize| match &fields[index] {
        Decoded::Text(text) => Some(text.as_str()),
        _ => None,
    };
    for (name, index) in [
        ("event", column::EVENT),
        ("component", column::COMPONENT),
        ("trace_id", column::TRACE_ID),
    ] {
        if let Some(value) = given.get(name)
            && value.as_str() != text(index)
        {
            return Err(format!("the bundle's entry has another {name}"));
        }
    }
    if let Some(payload) = given.get("payload") {
        let stored: serde_json::Value = text(column::PAYLOAD)
            .and_then(|payload| serde_json::from_str(payload).ok())
            .unwrap_or_default();
        if &stored != payload {
            return Err("the bundle's entry has another payload".into());
        }
    }
    if let Some(seq) = given.get("seq")
        && seq.as_i64().map(Decoded::Integer).as_ref() != Some(&fields[column::SEQ])
    {
        return Err("the bundle's entry has another seq".into());
    }
    Ok(())
}
