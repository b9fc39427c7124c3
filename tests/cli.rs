//! The `witness` command line against a real `witnessd`: what a person at a shell sees.

use crate::harness::{Witnessd, count, witness, witness_on_terminal};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

#[test]
fn log_ping_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let (code, out, err) = witness(&daemon.socket, &["ping"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("witnessd 0.1.0 answered in"), "{out}");

    let args = [
        "log",
        "--event",
        "llm_call",
        "--component",
        "planner",
        "--trace",
        "t-1",
        "--payload",
        r#"{"q":"hi"}"#,
        "--tokens-in",
        "12",
        "--tokens-out",
        "3",
        "--cost-usd",
        "0.0015",
        "--model",
        "small",
    ];
    let (code, out, err) = witness(&daemon.socket, &args, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("seq 1  hash "), "{out}");
    let (code, out, _) = witness(
        &daemon.socket,
        &["--json", "log", "--event", "e", "--component", "c"],
        None,
    );
    assert_eq!(code, 0);
    let receipt = json(&out);
    assert_eq!(receipt["seq"], 2);
    assert_eq!(receipt["hash"].as_str().unwrap().len(), 64);
    let cost: i64 = crate::harness::read_db(&daemon.db)
        .query_row(
            "SELECT cost_micro_usd FROM entries WHERE seq = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(cost, 1500);
    // Issue 28, item 13: a float a program printed is rounded as import rounds it, half up
    // to the micro-dollar, not refused.
    let mut head = receipt["hash"].clone();
    for (dollars, micro) in [("0.30000000000000004", 300_000), ("0.0000025", 3)] {
        let (code, out, err) = witness(
            &daemon.socket,
            &[
                "--json",
                "log",
                "--event",
                "e",
                "--component",
                "c",
                "--cost-usd",
                dollars,
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        let receipt = json(&out);
        let seq = receipt["seq"].as_i64().unwrap();
        head = receipt["hash"].clone();
        let cost: i64 = crate::harness::read_db(&daemon.db)
            .query_row(
                "SELECT cost_micro_usd FROM entries WHERE seq = ?1",
                [seq],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(cost, micro, "{dollars}");
    }

    let (code, out, _) = witness(&daemon.socket, &["verify"], None);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("intact: 4 entries, seq 1 to 4, head hash "),
        "{out}"
    );
    let (code, out, _) = witness(&daemon.socket, &["--json", "verify", "--from", "2"], None);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["count"], 3);
    let db = daemon.db.to_str().unwrap().to_owned();
    let (code, out, _) = witness(&daemon.socket, &["--json", "verify", "--db", &db], None);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["count"], 4);
    assert_eq!(json(&out)["head_hash"], head);
}

#[test]
fn changing_one_byte_with_sqlite3_makes_verify_name_that_seq() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    for i in 0..5 {
        let payload = format!(r#"{{"n":{i}}}"#);
        let (code, _, _) = witness(
            &daemon.socket,
            &[
                "log",
                "--event",
                "e",
                "--component",
                "c",
                "--payload",
                &payload,
            ],
            None,
        );
        assert_eq!(code, 0);
    }
    let status = std::process::Command::new("sqlite3")
        .arg(&daemon.db)
        .arg(r#"UPDATE entries SET payload = '{"n":9}' WHERE seq = 3"#)
        .status()
        .expect("the sqlite3 shell is installed");
    assert!(status.success());
    let (code, out, _) = witness(&daemon.socket, &["verify"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("BROKEN at seq 3: stored hash"), "{out}");
    assert!(out.contains("(2 entries verified before it)"), "{out}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let db = dir.path().join("witness.db");
    let (code, out, _) = witness(
        dir.path(),
        &["--json", "verify", "--db", db.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert_eq!(json(&out)["seq"], 3);
}

#[test]
fn import_writes_nothing_when_one_line_is_bad_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let file = dir.path().join("events.jsonl");
    let mut lines: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"event":"e","component":"c{}","trace_id":"t{}","payload":{{"i":{i}}},"cost":{{"tokens_in":1,"tokens_out":2,"cost_usd":0.25,"model":"m"}}}}"#, i % 3, i % 7))
        .collect();
    lines[36] = r#"{"event":"e","component":"c","payload":{"i":"#.to_owned();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = witness(&daemon.socket, &["import", file.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("line 37: "), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(count(&daemon.db), 0);

    let (code, out, err) = witness(
        &daemon.socket,
        &["import", "--skip-invalid", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("imported 49 entries"), "{out}");
    assert!(out.contains("skipped 1 invalid lines"), "{out}");
    assert!(err.contains("line 37: "), "{err}");
    assert_eq!(count(&daemon.db), 49);
    let money: i64 = crate::harness::read_db(&daemon.db)
        .query_row("SELECT sum(cost_micro_usd) FROM entries", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(money, 49 * 250_000);

    let stdin = "{\"event\":\"a\",\"component\":\"b\"}\n\n{\"event\":\"c\",\"component\":\"d\"}\n";
    let (code, out, _) = witness(&daemon.socket, &["--json", "import", "-"], Some(stdin));
    assert_eq!(code, 0);
    assert_eq!(json(&out)["imported"], 2);
    assert_eq!(count(&daemon.db), 51);
}

#[test]
fn garbage_import_files_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let binary_junk: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let file = dir.path().join("junk.bin");
    std::fs::write(&file, binary_junk).unwrap();
    let (code, _, err) = witness(&daemon.socket, &["import", file.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 1") || err.contains("stream did not contain valid UTF-8"),
        "{err}"
    );
    // A file that cannot be read: 2, as for `verify`.
    let (code, _, err) = witness(&daemon.socket, &["import", "/no/such/file.jsonl"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open /no/such/file.jsonl"), "{err}");
    // --skip-invalid over a file with no valid line did nothing asked for: 1, not 0.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"event\": 1}\nnot json\n").unwrap();
    let (code, out, err) = witness(
        &daemon.socket,
        &["import", "--skip-invalid", bad.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no line is a valid entry"), "{err}");
    assert_eq!(count(&daemon.db), 0);
}

#[test]
fn bad_arguments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    for (args, code, expected) in [
        (vec!["log", "--event", "e"], 2, "--component"),
        (log_with(&["--tokens-in", "many"]), 2, "--tokens-in"),
        (
            log_with(&["--cost-usd", "ten"]),
            2,
            "invalid amount of dollars \"ten\"",
        ),
        (
            log_with(&["--payload", "{"]),
            2,
            "--payload is not valid JSON",
        ),
        (
            vec!["log", "--event", "", "--component", "c"],
            2,
            "event must not be empty",
        ),
        (
            vec!["verify", "--from", "-3"],
            2,
            "unexpected argument '-3'",
        ),
        (vec!["frobnicate"], 2, "frobnicate"),
    ] {
        let (got, _, err) = witness(&daemon.socket, &args, None);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(count(&daemon.db), 0);
    // Issue 28, item 18: the daemon's refusal reads as a sentence, without the protocol's
    // code name in front.
    let (code, _, err) = witness(
        &daemon.socket,
        &["traces", "--since", "2030-01-01", "--until", "2020-01-01"],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("witnessd refused the request: since must be before until"),
        "{err}"
    );
    assert!(!err.contains("BadRequest"), "{err}");
    // A bad argument is said as such even with no daemon to hear it.
    let (got, _, err) = witness(
        &dir.path().join("nobody.sock"),
        &log_with(&["--payload", "{"]),
        None,
    );
    assert_eq!(got, 2, "{err}");
    assert!(err.contains("--payload is not valid JSON"), "{err}");
    let (code, _, err) = witness(&daemon.socket, &["verify", "--db", "/no/such.db"], None);
    // A file that cannot be read could not be checked: 2, not the 1 of a broken log.
    assert_eq!(code, 2);
    assert!(err.contains("/no/such.db"), "{err}");
}

/// `witness log` of a valid entry, with `extra` arguments.
fn log_with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["log", "--event", "e", "--component", "c"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn no_daemon_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = witness(&dir.path().join("absent.sock"), &["ping"], None);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to witnessd at"), "{err}");
    assert!(err.contains("is it running?"), "{err}");
    // The reason is said once, not once by each error in the chain.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn completions_and_a_manual_page_need_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = witness(&absent, &["completions", shell], None);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("verify-proof"), "{shell}: {out}");
    }
    let (code, out, _) = witness(&absent, &["man"], None);
    assert_eq!(code, 0);
    assert!(out.contains(".TH witness 1"), "{out}");
    assert!(out.contains("checkpoint"), "{out}");
    let (code, _, err) = witness(&absent, &["completions", "cmd.exe"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cmd.exe"), "{err}");
}

/// `witness completions bash | head`: a reader that goes away ends the command quietly, as
/// for every other command, never with a panic (exit 101).
#[test]
fn completions_and_the_manual_end_quietly_when_their_reader_goes() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
    ] {
        let mut child = std::process::Command::new(crate::harness::binary("witness"))
            .arg("--socket")
            .arg(&absent)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader leaves before a byte is read: every write meets a closed pipe.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_commands_help_lists_its_own_options_apart_from_the_global_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = witness(&dir.path().join("none.sock"), &["log", "--help"], None);
    assert_eq!(code, 0, "{err}");
    let global = out
        .find("Global options:")
        .unwrap_or_else(|| panic!("{out}"));
    let (own, global_part) = out.split_at(global);
    for option in ["--event", "--component", "--payload"] {
        assert!(own.contains(option), "{option} among its own: {out}");
        assert!(!global_part.contains(option), "{option}: {out}");
    }
    for option in ["--socket", "--json", "--timeout", "--color"] {
        assert!(
            global_part.contains(option),
            "{option} among the global: {out}"
        );
        assert!(!own.contains(&format!("  {option}")), "{option}: {out}");
    }
}

/// Issue 28, item 14: on a terminal a table fits its width, a long cell cut with "…", as
/// journalctl does; `--full`, a pipe and `--json` show everything.
#[test]
fn tables_fit_the_terminal_unless_asked_for_everything() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let long = "x".repeat(60_000);
    let payload = format!(r#"{{"text":"{long}"}}"#);
    for event in ["short", "long"] {
        let body = if event == "long" {
            payload.as_str()
        } else {
            "{}"
        };
        let (code, _, err) = witness(
            &daemon.socket,
            &[
                "log",
                "--event",
                event,
                "--component",
                "c",
                "--trace",
                "t-1",
                "--payload",
                body,
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
    }
    // Widths as seen: the header's bold (a terminal gets colour) takes no room.
    let widest = |shown: &str| {
        shown
            .lines()
            .map(|line| {
                line.replace("\x1b[1m", "")
                    .replace("\x1b[0m", "")
                    .chars()
                    .count()
            })
            .max()
            .unwrap()
    };
    for args in [vec!["tail"], vec!["trace", "t-1"]] {
        let (code, shown) = witness_on_terminal(&daemon.socket, &args, 80, None);
        assert_eq!(code, 0, "{args:?}: {shown}");
        assert!(widest(&shown) <= 80, "{args:?}: {shown}");
        let row = shown.lines().find(|line| line.contains("long")).unwrap();
        assert!(row.ends_with('…'), "{args:?}: {row}");
        // Wider, the payload shows as far as it fits.
        let (_, shown) = witness_on_terminal(&daemon.socket, &args, 120, None);
        assert!(widest(&shown) <= 120, "{args:?}: {shown}");
        let row = shown.lines().find(|line| line.contains("long")).unwrap();
        assert!(row.ends_with('…'), "{args:?}: {row}");
        assert!(row.contains(r#"{"text":"xxx"#), "{args:?}: {row}");
        // The short entry's row is whole: nothing of it needed cutting.
        let short = shown.lines().find(|line| line.contains("short")).unwrap();
        assert!(!short.contains('…'), "{args:?}: {short}");
        // COLUMNS wins over the terminal's own width, as for less and journalctl.
        let (_, shown) = witness_on_terminal(&daemon.socket, &args, 80, Some("132"));
        assert!(
            widest(&shown) <= 132 && widest(&shown) > 80,
            "{args:?}: {shown}"
        );
        // Asked for everything, on the terminal: the whole payload.
        let mut full = args.clone();
        full.push("--full");
        let (code, shown) = witness_on_terminal(&daemon.socket, &full, 80, None);
        assert_eq!(code, 0);
        assert!(shown.contains(&payload), "{args:?} --full");
        // To a pipe, and as JSON, always whole.
        let (code, out, _) = witness(&daemon.socket, &args, None);
        assert_eq!(code, 0);
        assert!(out.contains(&payload), "{args:?} to a pipe");
        let mut json_args = vec!["--json"];
        json_args.extend(&args);
        let (_, shown) = witness_on_terminal(&daemon.socket, &json_args, 80, None);
        assert!(shown.contains(&long), "{args:?} --json");
    }
}

/// Issue 28, item 19: `witness stats` and `witness where` say where the log and its files
/// are, so that `verify --db` needs no guess at the daemon's configuration.
#[test]
fn stats_and_where_say_where_the_log_is() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let (code, _, err) = witness(
        &daemon.socket,
        &["log", "--event", "e", "--component", "c"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let db = daemon.db.display().to_string();
    let key = dir.path().join("witness.key").display().to_string();
    let (code, out, err) = witness(&daemon.socket, &["stats"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("database     {db} ")), "{out}");
    assert!(out.contains(&format!("key          {key}\n")), "{out}");
    assert!(out.contains(&format!("verifier key {key}.pub\n")), "{out}");
    let (code, out, _) = witness(&daemon.socket, &["--json", "stats"], None);
    assert_eq!(code, 0);
    let report = json(&out);
    assert_eq!(report["paths"]["db"], db.as_str());
    assert_eq!(
        report["paths"]["socket"],
        daemon.socket.display().to_string().as_str()
    );
    assert!(report["paths"]["archive_dir"].is_null());
    // One path alone on a line, for a shell, and it is the file the daemon writes.
    let (code, out, _) = witness(&daemon.socket, &["where", "db"], None);
    assert_eq!((code, out.as_str()), (0, format!("{db}\n").as_str()));
    let (code, out, err) = witness(&daemon.socket, &["verify", "--db", out.trim()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("intact: 1 entry"), "{out}");
    let (code, out, _) = witness(&daemon.socket, &["where", "verifier-key"], None);
    assert_eq!(code, 0);
    assert!(
        std::fs::read_to_string(out.trim()).unwrap().contains("+"),
        "{out}"
    );
    let (code, _, err) = witness(&daemon.socket, &["where", "archives"], None);
    assert_eq!(code, 1);
    assert!(err.contains("does not archive"), "{err}");
    let (code, _, err) = witness(&daemon.socket, &["where", "nowhere"], None);
    assert_eq!(code, 2, "{err}");
}
