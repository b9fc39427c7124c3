//! `docs/FORMAT.md` kept true: its test vector, and its shell re-verification procedure run
//! against a real database with `sqlite3`, `xxd` and `sha256sum`.

use std::process::Command;

use serde_json::json;
use witness_client::{Cost, Entry};

use crate::harness::{TestDaemon, read_db};

const FORMAT: &str = include_str!("../docs/FORMAT.md");

fn block_after(marker: &str) -> String {
    crate::harness::doc_block(FORMAT, marker)
}

fn run_script(db: &std::path::Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify.sh");
    std::fs::write(&script, block_after("script:verify")).unwrap();
    let output = Command::new("sh").arg(&script).arg(db).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "the script printed errors: {stderr}");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[test]
fn the_documented_vectors_hash_as_documented() {
    let encoding = block_after("vector:encoding");
    check_vector(&encoding, &block_after("vector:hash"));
    let copy = encoding.trim().to_owned() + block_after("vector:imported-suffix").trim();
    check_vector(&copy, &block_after("vector:imported-hash"));
    let priced = encoding.trim().to_owned() + block_after("vector:priced-suffix").trim();
    check_vector(&priced, &block_after("vector:priced-hash"));
}

fn check_vector(encoding: &str, hash: &str) {
    let mut input = b"witness.entry.v1".to_vec();
    input.extend_from_slice(&[0; 32]);
    input.extend_from_slice(&hex::decode(encoding.trim()).unwrap());
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), &input)?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        &String::from_utf8(output.stdout).unwrap()[..64],
        hash.trim()
    );
}

#[test]
fn the_documented_leaf_hash_is_the_trees() {
    let encoding = hex::decode(block_after("vector:encoding").trim()).unwrap();
    let leaf = block_after("vector:leaf");
    assert_eq!(
        hex::encode(witness_protocol::merkle::leaf_hash(&encoding)),
        leaf.trim()
    );
}

#[test]
fn the_documented_keys_and_checkpoint_are_what_witness_makes() {
    use witness_protocol::note::{Checkpoint, Note, SignerKey, VerifierKey};
    let signer = SignerKey::parse(block_after("vector:signer").trim()).unwrap();
    let verifier = block_after("vector:verifier");
    assert_eq!(signer.verifier().to_string(), verifier.trim());
    let note = block_after("vector:checkpoint");
    let parsed = Note::parse(&note).unwrap();
    let text = parsed
        .verify(&VerifierKey::parse(verifier.trim()).unwrap())
        .unwrap();
    assert_eq!(signer.sign(text).unwrap(), note);
    let checkpoint = Checkpoint::parse(text).unwrap();
    assert_eq!(
        hex::encode(checkpoint.root),
        block_after("vector:leaf").trim()
    );
}

#[test]
fn the_shell_procedure_verifies_a_real_database_and_finds_a_change() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    client
        .log_batch(vec![
            Entry::new("llm_call", "agent")
                .trace("t-1")
                .payload(json!({"q": "héllo wörld ✓", "n": -5}))
                .client_time(0)
                .cost(
                    Cost::new(12, 3, 1500)
                        .model("gpt-x")
                        .cache_read_tokens(2)
                        .reasoning_tokens(0),
                ),
            Entry::new("plain", "c"),
            Entry::new("quote's", "c|pipe").payload_text(r#"{"s":"a b  c"}"#),
            Entry {
                imported: Some(r#"{"seq":7,"hash":"ab"}"#.into()),
                ..Entry::new("copy", "c")
            },
            // Priced by the daemon: `priced_by`, the last later column, is set.
            Entry::new("priced", "c").cost(
                Cost::tokens(1200, 300)
                    .model("gpt-4o-mini")
                    .cache_read_tokens(200),
            ),
            // Cache writes and no price: the encoding stops after the counts.
            Entry::new("unpriced", "c").cost(
                Cost::tokens(50, 5)
                    .model("my-finetune")
                    .cache_write_tokens(20)
                    .cache_write_1h_tokens(5),
            ),
            Entry::new("written", "c").cost(Cost::new(50, 5, 9).cache_write_tokens(20)),
        ])
        .unwrap();
    for i in 0..20 {
        client
            .send(Entry::new("tick", "c").payload(json!({"i": i})))
            .unwrap();
    }
    client.flush().unwrap();
    let dir = daemon.stop();
    let db = dir.path().join("witness.db");
    let (ok, out) = run_script(&db);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "intact: 27 entries");
    let priced: Option<String> = read_db(&db)
        .query_row(
            "SELECT priced_by FROM entries WHERE event = 'priced'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        priced.as_deref(),
        Some("genai-prices-47df840a5ab1:openai/gpt-4o-mini")
    );

    let status = Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE entries SET tokens_in = 13 WHERE seq = 1")
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, out) = run_script(&db);
    assert!(!ok);
    assert_eq!(out.trim(), "BROKEN at seq 1: hash mismatch");
}

#[test]
fn the_documented_rebuild_of_cost_hourly_gives_what_the_daemon_keeps() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let huge = i64::MAX as u64;
    // Sums that overflow 64 bits (the daemon saturates them), sums that only the low halves
    // carry, and ordinary ones, across models and events.
    for (event, model, tokens) in [
        ("call", Some("big"), huge),
        ("call", Some("big"), huge),
        ("call", Some("big"), 3),
        ("call", Some("small"), 4_294_967_295),
        ("call", Some("small"), 4_294_967_297),
        ("call", None, 12),
        ("note", None, 0),
    ] {
        let mut cost = Cost::new(tokens, tokens / 2, tokens).cache_write_tokens(tokens / 3);
        if let Some(model) = model {
            cost = cost.model(model);
        }
        client.log(Entry::new(event, "agent").cost(cost)).unwrap();
    }
    client.log(Entry::new("bare", "agent")).unwrap();
    // Unpriced: a model the table does not know, twice.
    for _ in 0..2 {
        client
            .log(Entry::new("call", "agent").cost(Cost::tokens(5, 1).model("my-finetune")))
            .unwrap();
    }
    let dir = daemon.stop();
    let db = dir.path().join("witness.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    let rows = |connection: &rusqlite::Connection| -> Vec<Vec<i64>> {
        let mut statement = connection
            .prepare(
                "SELECT hour, entries, tokens_in, tokens_out, cache_read_tokens, \
                 reasoning_tokens, micro_usd, cache_write_tokens, unpriced FROM cost_hourly \
                 ORDER BY component, event, model",
            )
            .unwrap();
        statement
            .query_map([], |row| (0..9).map(|i| row.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let kept = rows(&connection);
    assert!(kept.iter().any(|row| row[2] == i64::MAX), "{kept:?}");
    assert!(kept.iter().any(|row| row[8] == 2), "{kept:?}");
    connection
        .execute_batch(&block_after("sql:rebuild-cost-hourly"))
        .unwrap();
    assert_eq!(rows(&connection), kept);
    drop(connection);
    // And verify agrees with both.
    crate::harness::verify_file(&db);
}

#[test]
fn the_documented_rebuild_of_producer_runs_keeps_re_sends_recognised() {
    use crate::harness::numbered_append as append;
    use witness_protocol::Response;
    let answer = |raw: &mut crate::harness::Raw, request| {
        raw.send(1, request);
        raw.recv().unwrap().response
    };
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    // Producer 3's two appends touch (one stretch, two runs as written), then 4 comes between.
    for (producer, first, n) in [(3, 1, 2), (3, 3, 2), (4, 1, 1), (3, 5, 1), (3, 9, 2)] {
        assert!(matches!(
            answer(&mut raw, append(producer, first, n)),
            Response::Committed { .. }
        ));
    }
    let first = answer(&mut raw, append(3, 1, 5));
    assert!(matches!(first, Response::Committed { ref receipts } if receipts.len() == 5));
    drop(raw);
    let dir = daemon.stop();
    let db = dir.path().join("witness.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    let runs = |connection: &rusqlite::Connection| -> i64 {
        connection
            .query_row("SELECT count(*) FROM producer_runs", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(runs(&connection), 5);
    connection
        .execute_batch(&block_after("sql:rebuild-producer-runs"))
        .unwrap();
    assert_eq!(runs(&connection), 4);
    drop(connection);
    crate::harness::verify_file(&db);
    let daemon = TestDaemon::start_in(dir, |_| {});
    let mut raw = daemon.raw();
    assert_eq!(answer(&mut raw, append(3, 1, 5)), first);
    // Numbers 6..=8 were never stored.
    assert!(matches!(
        answer(&mut raw, append(3, 5, 5)),
        Response::Error(_)
    ));
}
