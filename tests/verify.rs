//! `verify` tells the whole truth: every row is accounted for, derived tables are checked
//! against the entries, ranges are defined, and the exit status says which of intact (0),
//! broken (1) or unusable (2) it is. And reads that one producer could break do not break.

use witness_client::query::TracesQuery;
use witness_client::{Cost, Entry};

use crate::harness::{TestDaemon, Witnessd, witness};

/// A stopped daemon's folder with a few entries of two producers and costs.
fn small_log() -> (tempfile::TempDir, std::path::PathBuf) {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    for i in 0..5u64 {
        client
            .log(Entry::new("call", "agent").cost(Cost::new(10 + i, 2, 100 * i).model("m")))
            .unwrap();
    }
    daemon.client().log(Entry::new("other", "c")).unwrap();
    let db = daemon.db.clone();
    (daemon.stop(), db)
}

/// `witness verify --db` on a file: exit code and stdout.
fn verify_db(db: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["verify", "--db", db.to_str().unwrap()];
    args.extend_from_slice(extra);
    witness(std::path::Path::new("/nonexistent"), &args, None)
}

fn edit(db: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[test]
fn rows_outside_the_chain_break_the_log() {
    for seq in [0, -7] {
        let (_dir, db) = small_log();
        assert_eq!(verify_db(&db, &[]).0, 0);
        edit(
            &db,
            &format!(
                "INSERT INTO entries (seq, ts, event, component, payload, hash) \
                 VALUES ({seq}, 1, 'forged', 'x', '{{}}', zeroblob(32))"
            ),
        );
        let (code, out, _) = verify_db(&db, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("a row has seq {seq}")), "{out}");
        // Whatever range is asked.
        assert_eq!(verify_db(&db, &["--from", "3"]).0, 1);
    }
}

#[test]
fn derived_tables_must_agree_with_the_entries() {
    let cases = [
        (
            "UPDATE cost_hourly SET micro_usd = micro_usd + 1",
            "cost_hourly",
        ),
        (
            "DELETE FROM cost_hourly WHERE event = 'other'",
            "cost_hourly",
        ),
        (
            "INSERT INTO cost_hourly VALUES (1, 'ghost', 'e', '', 1, 0, 0, 0, 0, 5, 0, 0)",
            "cost_hourly",
        ),
        (
            "UPDATE producers SET last_number = last_number + 5",
            "producers",
        ),
        ("DELETE FROM producers", "producers"),
        ("UPDATE producers SET last_run = NULL", "producers"),
        (
            "UPDATE producer_runs SET entries = entries + 1 WHERE first_seq = 6",
            "producer_runs",
        ),
        (
            "UPDATE producer_runs SET first_number = 2 WHERE first_seq = 6",
            "producer_runs",
        ),
        (
            "UPDATE producer_runs SET previous = NULL WHERE first_seq = 5",
            "producer_runs",
        ),
        (
            "DELETE FROM producer_runs WHERE first_seq = 6",
            "producer_runs",
        ),
        (
            "INSERT INTO producer_runs VALUES (100, 1, 1, 1, NULL)",
            "producer_runs",
        ),
        ("DELETE FROM tiles", "tiles"),
        (
            "UPDATE tiles SET hashes = zeroblob(length(hashes)) WHERE level = 0",
            "tiles",
        ),
        (
            "UPDATE tiles SET hashes = substr(hashes, 33) WHERE level = 0",
            "tiles",
        ),
        ("INSERT INTO tiles VALUES (5, 0, zeroblob(32))", "tiles"),
    ];
    for (sql, table) in cases {
        let (_dir, db) = small_log();
        edit(&db, sql);
        let (code, out, _) = verify_db(&db, &[]);
        assert_eq!(code, 1, "{sql}: {out}");
        assert!(
            out.contains(&format!("INCONSISTENT {table}")),
            "{sql}: {out}"
        );
        // A part of the log does not vouch for the whole, so its derived data is not read.
        assert_eq!(verify_db(&db, &["--from", "2"]).0, 0, "{sql}");
    }
}

#[test]
fn ranges_are_defined_and_exit_codes_tell_which_failure() {
    let (dir, db) = small_log();
    let check = |extra: &[&str], code: i32, says: &str| {
        let (got, out, err) = verify_db(&db, extra);
        assert_eq!(got, code, "{extra:?}: {out} {err}");
        assert!(
            out.contains(says) || err.contains(says),
            "{extra:?}: {out} {err}"
        );
    };
    check(&["--to", "99"], 0, "intact: 6 entries, seq 1 to 6");
    check(
        &["--from", "2", "--to", "4"],
        0,
        "intact: 3 entries, seq 2 to 4",
    );
    check(&["--from", "6"], 0, "intact: 1 entry, seq 6 to 6");
    check(&["--from", "10", "--to", "5"], 2, "is empty");
    check(&["--from", "0"], 2, "start at 1");
    check(&["--from", "7"], 2, "ends at seq 6: --from 7 is past it");
    let missing = dir.path().join("missing.db");
    let (code, _, err) = verify_db(&missing, &[]);
    assert_eq!(code, 2, "{err}");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    assert_eq!(verify_db(&garbage, &[]).0, 2);
    // The same through the daemon.
    let daemon = Witnessd::start(dir.path(), &[]);
    let (code, _, err) = witness(&daemon.socket, &["verify", "--from", "99"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("past it"), "{err}");
    assert_eq!(
        witness(&daemon.socket, &["verify", "--to", "99"], None).0,
        0
    );
}

#[test]
fn token_sums_past_the_largest_integer_saturate_in_every_read() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let huge = i64::MAX as u64;
    for _ in 0..2 {
        client
            .log(
                Entry::new("call", "agent")
                    .trace("t")
                    .cost(Cost::new(huge, huge, huge)),
            )
            .unwrap();
    }
    let trace = client
        .trace(witness_client::query::TraceQuery {
            trace_id: "t".into(),
            after_seq: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(trace.summary.unwrap().tokens_in, huge);
    let page = client
        .traces(TracesQuery {
            until: None,
            since: None,
            component: None,
            before_seq: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(page.traces[0].micro_usd, huge);
    for args in [
        &["trace", "t"][..],
        &["traces"],
        &["cost"],
        &["cost", "--by", "trace"],
    ] {
        let (code, _, err) = witness(&daemon.socket, args, None);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
}

#[test]
fn traces_filtered_by_component_page_without_skipping() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    // a: planner then, later, a writer entry; b: planner between them.
    client.log(Entry::new("e", "planner").trace("a")).unwrap();
    client.log(Entry::new("e", "planner").trace("b")).unwrap();
    client.log(Entry::new("e", "writer").trace("a")).unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = client
            .traces(TracesQuery {
                until: None,
                since: None,
                component: Some("planner".into()),
                before_seq: before,
                limit: 1,
            })
            .unwrap();
        seen.extend(page.traces.iter().map(|trace| trace.trace_id.clone()));
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["b", "a"]);
}

#[test]
fn tables_for_people_escape_what_would_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let event = "alert\u{1b}]0;owned\u{7}\u{1b}[2J";
    let logged = witness(
        &daemon.socket,
        &[
            "log",
            "--event",
            event,
            "--component",
            "c\u{202e}x",
            "--trace",
            "t\u{1b}",
        ],
        None,
    );
    assert_eq!(logged.0, 0, "{}", logged.2);
    for args in [
        &["tail"][..],
        &["trace", "t\u{1b}"],
        &["traces"],
        &["cost", "--by", "event"],
    ] {
        let (code, out, err) = witness(&daemon.socket, args, None);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains("\\u{1b}"), "{args:?}: {out}");
    }
    // JSON keeps the text exactly.
    let (_, out, _) = witness(&daemon.socket, &["tail", "--json"], None);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["event"], event);
}

#[test]
fn verify_reads_one_snapshot_while_entries_with_costs_keep_committing() {
    // The whole-log verify walks the chain and then compares the roll-ups with it: both must
    // be read from one snapshot, or an entry committed in between counts in `cost_hourly`
    // and not in the walk, and a sound log is called inconsistent.
    let daemon = TestDaemon::start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let mut client = daemon.client();
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut acked = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch = (0..20)
                    .map(|i| Entry::new("call", "agent").cost(Cost::new(i, 1, 7).model("m")))
                    .collect();
                acked += client.log_batch(batch).unwrap().len();
                // Steady, not flat out: the log stays small enough to walk again and again.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            acked
        })
    };
    let mut client = daemon.client();
    let mut verdicts = Vec::new();
    for _ in 0..10 {
        verdicts.push(client.verify(Default::default()).unwrap());
        let (code, out, err) = verify_db(&daemon.db, &[]);
        assert_eq!(code, 0, "witness verify --db during ingest: {out}{err}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = ingest.join().unwrap();
    assert!(acked > 0);
    for verdict in verdicts {
        assert!(
            matches!(verdict, witness_protocol::VerifyReport::Intact { .. }),
            "verify during ingest: {verdict:?}"
        );
    }
}
