//! The read side from the command line: tables and JSON, `tail -f` across restarts, export and import.

use super::*;

#[test]
fn the_command_line_answers_readably_and_in_json() {
    let daemon = TestDaemon::start();
    let lines: String = (0..3000)
        .map(|index| {
            let entry = known_entry(index);
            let mut line = json!({
                "event": entry.event,
                "component": entry.component,
                "trace_id": entry.trace_id,
                "payload": serde_json::from_str::<serde_json::Value>(&entry.payload).unwrap(),
            });
            if let Some(cost) = entry.cost {
                line["cost"] = json!({
                    "tokens_in": cost.tokens_in,
                    "tokens_out": cost.tokens_out,
                    "cost_micro_usd": cost.micro_usd,
                    "model": cost.model,
                });
            }
            line.to_string() + "\n"
        })
        .collect();
    let (code, _, stderr) = witness(&daemon.socket, &["import", "-"], Some(&lines));
    assert_eq!(code, 0, "{stderr}");
    let db = read_db(&daemon.db);
    let total_usd = sql_i64(
        &db,
        "SELECT sum(coalesce(cost_micro_usd, 0)) FROM entries",
        [],
    );
    let dollars = format!("${}.{:06}", total_usd / 1_000_000, total_usd % 1_000_000);

    let run = |args: &[&str]| {
        let (code, stdout, stderr) = witness(&daemon.socket, args, None);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    let table = run(&["cost"]);
    assert!(table.starts_with("COMPONENT"), "{table}");
    let total_line = table
        .lines()
        .find(|line| line.starts_with("TOTAL"))
        .unwrap();
    assert!(
        total_line.contains("3000") && total_line.contains(&dollars),
        "{table}"
    );
    for component in COMPONENTS {
        assert!(table.contains(component), "{table}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&run(&["cost", "--by", "model", "--json"])).unwrap();
    assert_eq!(report["total"]["cost_micro_usd"], total_usd);
    assert_eq!(report["total"]["entries"], 3000);

    let in_trace = sql_i64(
        &db,
        "SELECT count(*) FROM entries WHERE trace_id = 'req-12'",
        [],
    );
    let trace = run(&["trace", "req-12"]);
    assert!(
        trace.starts_with(&format!("trace req-12: {in_trace} entries")),
        "{trace}"
    );
    assert!(
        trace.contains("SEQ") && trace.contains("MODEL") && trace.contains("PAYLOAD"),
        "{trace}"
    );
    // The model of each costed entry is in its row.
    let with_model = sql_i64(
        &db,
        "SELECT count(*) FROM entries WHERE trace_id = 'req-12' AND model IS NOT NULL",
        [],
    );
    assert!(with_model > 0);
    assert_eq!(
        trace.matches("-model").count() as i64,
        with_model,
        "{trace}"
    );
    assert_eq!(trace.lines().count() as i64, 5 + in_trace, "{trace}");
    let trace: serde_json::Value =
        serde_json::from_str(&run(&["trace", "req-12", "--json"])).unwrap();
    assert_eq!(trace["entries"].as_array().unwrap().len() as i64, in_trace);
    assert_eq!(trace["summary"]["entries"], in_trace);

    let traces = run(&["traces", "-n", "3"]);
    assert!(
        traces.starts_with("TRACE") && traces.contains("req-299"),
        "{traces}"
    );
    assert!(traces.contains("(more: --before"), "{traces}");
    let traces: serde_json::Value =
        serde_json::from_str(&run(&["traces", "--json", "--since", "1h"])).unwrap();
    assert_eq!(traces["traces"].as_array().unwrap().len(), 20);

    let tail = run(&["tail", "-n", "3"]);
    assert_eq!(tail.lines().count(), 4, "a header and three rows: {tail}");
    assert!(tail.starts_with("TIME "), "{tail}");
    assert!(tail.lines().last().unwrap().contains(" 3000  "), "{tail}");
    // The columns line up: every row's COMPONENT starts where the header's does.
    let at = tail.find("COMPONENT").unwrap();
    for row in tail.lines().skip(1) {
        assert_ne!(row.as_bytes()[at], b' ', "{tail}");
        assert_eq!(&row[at - 2..at], "  ", "{tail}");
    }
    let tail = run(&["tail", "-n", "5", "--json", "--component", "billing"]);
    for line in tail.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["component"], "billing");
    }

    let (code, _, stderr) = witness(&daemon.socket, &["trace", "nope"], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no entry has trace id \"nope\""),
        "{stderr}"
    );
}

#[test]
fn tail_follow_from_the_command_line_prints_new_entries() {
    let daemon = TestDaemon::start();
    feed(&daemon, 5);
    let mut child = std::process::Command::new(crate::harness::binary("witness"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["tail", "-f", "-n", "2", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = daemon.client();
    std::thread::sleep(Duration::from_millis(200));
    for index in 0..10 {
        client
            .log(Entry::new("new", "c").payload(json!({ "index": index })))
            .unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seqs = Vec::new();
    while seqs.len() < 12 {
        let line = lines.next().unwrap().unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        seqs.push(entry["seq"].as_u64().unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seqs, (4..=15).collect::<Vec<u64>>());
}

#[test]
fn tail_follow_waits_out_a_restart_of_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut child = std::process::Command::new(crate::harness::binary("witness"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["tail", "-f", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = |socket: &std::path::Path, index: u64| {
        witness_client::Client::connect(socket)
            .unwrap()
            .log(Entry::new("e", "c").payload(json!({ "index": index })))
            .unwrap();
    };
    for index in 0..3 {
        log(&daemon.socket, index);
    }
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seqs = Vec::new();
    let mut read = |seqs: &mut Vec<u64>, until: usize| {
        while seqs.len() < until {
            let line = lines.next().unwrap().unwrap();
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
            seqs.push(entry["seq"].as_u64().unwrap());
        }
    };
    read(&mut seqs, 3);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let daemon = Witnessd::start(dir.path(), &[]);
    for index in 3..6 {
        log(&daemon.socket, index);
    }
    read(&mut seqs, 6);
    // Still following, and it said what happened.
    assert_eq!(child.try_wait().unwrap(), None);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
    assert!(
        stderr.contains("following again once it is back"),
        "{stderr}"
    );
}

#[test]
fn tail_counts_the_log_as_it_was_when_asked() {
    let daemon = TestDaemon::start();
    feed(&daemon, 200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let mut client = daemon.client();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut index = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.send(known_entry(index)).unwrap();
                index += 1;
            }
            client.flush().unwrap();
        })
    };
    let mut client = daemon.client();
    for _ in 0..30 {
        let query = EntriesQuery {
            newest: Some(50),
            ..EntriesQuery::default()
        };
        let entries = collect(client.entries(query).unwrap());
        assert_eq!(entries.len(), 50, "while entries keep arriving");
        assert!(
            entries
                .windows(2)
                .all(|pair| pair[1].seq == pair[0].seq + 1)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
}

/// The export of `daemon`, one JSON object per entry.
fn export(daemon: &TestDaemon) -> Vec<serde_json::Value> {
    let (code, exported, stderr) = witness(&daemon.socket, &["export"], None);
    assert_eq!(code, 0, "{stderr}");
    exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Imports JSON lines into `daemon`.
fn import(daemon: &TestDaemon, lines: &str) {
    let (code, _, stderr) = witness(&daemon.socket, &["import", "-"], Some(lines));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn export_then_import_keeps_every_field_and_marks_the_copy() {
    let source = TestDaemon::start();
    feed(&source, 400);
    let mut client = source.client();
    client
        .log(Entry::new("odd", "c").payload_text(r#"{ "spaced" :  [1, 2.50, "é\u00e9"] }"#))
        .unwrap();
    client
        .log(Entry::new("dated", "c").client_time(1_700_000_000_123_456_789))
        .unwrap();
    let (code, exported, stderr) = witness(&source.socket, &["export"], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(exported.lines().count(), 402);

    let target = TestDaemon::start();
    import(&target, &exported);
    let original = export(&source);
    let copy = export(&target);
    assert_eq!(copy.len(), original.len());
    let me = unsafe { libc::getuid() } as i64;
    for (original, copy) in original.iter().zip(&copy) {
        // What the entry says, and when it happened, are the original's.
        for field in ["event", "component", "trace_id", "payload", "cost", "time"] {
            assert_eq!(copy[field], original[field], "{field}: {original} / {copy}");
        }
        assert_eq!(
            &copy["client_ts"],
            if original["client_ts"].is_null() {
                &original["ts"]
            } else {
                &original["client_ts"]
            },
        );
        // Where and by whom it was first recorded is kept, marked as the original's.
        for field in [
            "seq",
            "ts",
            "hash",
            "pid",
            "uid",
            "gid",
            "producer_id",
            "producer_number",
        ] {
            let kept = &copy["imported"][field];
            if original[field].is_null() {
                assert!(kept.is_null(), "{field}: {copy}");
            } else {
                assert_eq!(kept, &original[field], "{field}: {copy}");
            }
        }
        // The copy's own credentials are the importer's, not the original's.
        assert_eq!(copy["uid"], me);
        assert_ne!(copy["hash"], original["hash"]);
    }
    assert_eq!(
        copy[400]["payload"].to_string(),
        original[400]["payload"].to_string()
    );
    let stored = collect(target.client().entries(EntriesQuery::default()).unwrap());
    assert_eq!(
        stored[400].entry.payload, r#"{ "spaced" :  [1, 2.50, "é\u00e9"] }"#,
        "payload text kept byte for byte"
    );

    // A copy of the copy still names the first original, and says the same.
    let (_, exported_again, _) = witness(&target.socket, &["export"], None);
    let third = TestDaemon::start();
    import(&third, &exported_again);
    let copy_of_copy = export(&third);
    for (copy, again) in copy.iter().zip(&copy_of_copy) {
        for field in [
            "event",
            "component",
            "trace_id",
            "payload",
            "cost",
            "time",
            "client_ts",
            "imported",
        ] {
            assert_eq!(again[field], copy[field], "{field}");
        }
    }
    crate::harness::verify_file(&third.db);

    // Every stored field is in the export.
    let first = &original[0];
    let fields: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields.join(" "),
        "client_ts component cost event gid hash imported payload pid producer_id \
         producer_number seq time trace_id ts uid",
        "{first}"
    );
    let hash = read_db(&source.db)
        .query_row("SELECT hash FROM entries WHERE seq = 1", [], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .unwrap();
    assert_eq!(first["hash"], hex::encode(hash));
    let source = &source;

    let (code, part, _) = witness(
        &source.socket,
        &["export", "--from", "10", "--to", "19"],
        None,
    );
    assert_eq!(code, 0);
    let seqs: Vec<u64> = part
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (10..=19).collect::<Vec<u64>>());
}

#[test]
fn five_days_of_imported_history_read_as_five_days() {
    // Five days of calls, each trace spanning a day boundary's worth of hours, dated by
    // the client in RFC 3339 with an offset and with float noise in the dollars.
    let start = 1_795_285_600_i64; // 2026-11-21T18:26:40Z
    let mut lines = String::new();
    for hour in 0..120 {
        let at = jiff::Timestamp::from_second(start + hour * 3600).unwrap();
        let time = at
            .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(2)))
            .to_string();
        let time = time.split('[').next().unwrap();
        lines += &json!({
            "event": "llm_call",
            "component": "agent",
            "trace_id": format!("session-{}", hour / 30),
            "client_ts": time,
            "cost": {"tokens_in": 10, "tokens_out": 2, "cache_read_tokens": 4,
                     "reasoning_tokens": 1, "cost_usd": 0.1 + 0.2, "model": "m"},
        })
        .to_string();
        lines += "\n";
    }
    let daemon = TestDaemon::start();
    import(&daemon, &lines);
    let run = |args: &[&str]| -> serde_json::Value {
        let (code, out, stderr) = witness(&daemon.socket, args, None);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        serde_json::from_str(&out).unwrap()
    };
    let days = run(&["cost", "--by", "day", "--json"]);
    let keys: Vec<&str> = days["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "2026-11-21",
            "2026-11-22",
            "2026-11-23",
            "2026-11-24",
            "2026-11-25",
            "2026-11-26"
        ],
        "{days}"
    );
    assert_eq!(days["total"]["entries"], 120);
    assert_eq!(days["total"]["cost_micro_usd"], 120 * 300_000);
    assert_eq!(days["total"]["cache_read_tokens"], 480);
    assert_eq!(days["total"]["reasoning_tokens"], 120);
    // An hour inside the window comes from the roll-up, the edges from the entries: they
    // agree with a window on the entries alone.
    let window = run(&[
        "cost",
        "--by",
        "model",
        "--json",
        "--since",
        "2026-11-22T00:30:00Z",
        "--until",
        "2026-11-23T00:30:00Z",
    ]);
    assert_eq!(window["total"]["entries"], 24, "{window}");

    let traces = run(&["traces", "--json"]);
    let traces = traces["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 4);
    for trace in traces {
        assert_eq!(trace["duration_ms"], 29.0 * 3_600_000.0, "{trace}");
    }
    let trace = run(&["trace", "session-0", "--json"]);
    assert_eq!(trace["summary"]["first_time"], "2026-11-21T18:26:40Z");
    assert_eq!(trace["summary"]["last_time"], "2026-11-22T23:26:40Z");
    assert_eq!(trace["entries"][29]["time"], "2026-11-22T23:26:40Z");
    let (_, table, _) = witness(&daemon.socket, &["trace", "session-0", "--utc"], None);
    assert!(table.contains("1 d 5 h"), "{table}");
    assert!(table.contains("2026-11-22T23:26:40.000Z"), "{table}");

    // --since and --until pick by the same dates.
    let some = run(&[
        "traces",
        "--json",
        "--since",
        "2026-11-25T00:00:00Z",
        "--until",
        "2026-11-26T00:00:00Z",
    ]);
    let ids: Vec<&str> = some["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trace| trace["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["session-3", "session-2"]);
    let (_, tail, _) = witness(
        &daemon.socket,
        &[
            "tail",
            "--json",
            "-n",
            "1000",
            "--until",
            "2026-11-21T20:00:00Z",
        ],
        None,
    );
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let filtered = run(&["cost", "--json", "--model", "m", "--event", "llm_call"]);
    assert_eq!(filtered["total"]["entries"], 120);
    let none = run(&["cost", "--json", "--model", "other"]);
    assert_eq!(none["total"]["entries"], 0);
    let (_, table, _) = witness(&daemon.socket, &["cost", "--by", "day"], None);
    assert!(
        table.starts_with("DAY (UTC)") && table.contains("CACHED"),
        "{table}"
    );
    crate::harness::verify_file(&daemon.db);
}

#[test]
fn tables_are_coloured_on_request_and_times_shown_as_asked() {
    let daemon = TestDaemon::start();
    feed(&daemon, 5);
    let run = |args: &[&str]| {
        let (code, out, stderr) = witness(&daemon.socket, args, None);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        out
    };
    // Not a terminal: no escapes unless asked for.
    assert!(!run(&["tail"]).contains('\u{1b}'));
    let coloured = run(&["tail", "--color", "always"]);
    assert!(coloured.starts_with("\u{1b}[1mTIME"), "{coloured:?}");
    assert!(!run(&["cost", "--color", "never"]).contains('\u{1b}'));
    let relative = run(&["tail", "--time", "relative"]);
    assert!(
        relative
            .lines()
            .skip(1)
            .all(|row| row.starts_with("now") || row.contains(" s ago")),
        "{relative}"
    );
    let utc = run(&["tail", "--utc"]);
    assert!(
        utc.lines().nth(1).unwrap().contains('T') && utc.contains("Z  "),
        "{utc}"
    );
    for bad in [
        &["tail", "--time", "sideways"][..],
        &["tail", "--color", "purple"],
        &["tail", "-f", "--until", "1h"],
        &["tail", "--utc", "--time", "local"],
        &["traces", "--until", "next tuesday"],
        &["cost", "--model"],
    ] {
        let (code, _, stderr) = witness(&daemon.socket, bad, None);
        assert_eq!(code, 2, "{bad:?}: {stderr}");
        assert!(stderr.contains("error:"), "{bad:?}: {stderr}");
    }
}
