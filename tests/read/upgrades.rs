//! Files written by older versions gain their derived tables when the daemon opens them.

use super::*;
use crate::harness::BACK_TO_VERSION_4;

#[test]
fn a_version_1_database_gains_its_cost_table_on_open() {
    let daemon = TestDaemon::start();
    feed(&daemon, 700);
    let dir = daemon.stop();
    let db_path = dir.path().join("witness.db");
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        // As the files of version 1 were: no cost table, no producer runs.
        db.execute_batch(&format!(
            "{BACK_TO_VERSION_4}
             DROP TABLE cost_hourly; DROP TABLE producer_runs; DROP TABLE tiles; DROP TABLE checkpoints;
             ALTER TABLE producers DROP COLUMN last_run; PRAGMA user_version = 1;"
        ))
        .unwrap();
    }
    let daemon = TestDaemon::start_in(dir, |_| {});
    let report = daemon
        .client()
        .cost(CostQuery {
            model: None,
            event: None,
            by: GroupBy::Component,
            since: None,
            until: None,
            component: None,
            offset: 0,
            limit: 100,
        })
        .unwrap();
    let db = read_db(&daemon.db);
    assert_eq!(
        sql_i64(&db, "PRAGMA user_version", []),
        witness_daemon::format::schema::SCHEMA_VERSION
    );
    assert_eq!(report.total.entries, 700);
    let usd = sql_i64(
        &db,
        "SELECT sum(coalesce(cost_micro_usd, 0)) FROM entries",
        [],
    );
    assert_eq!(report.total.micro_usd as i64, usd);
}

#[test]
fn a_version_2_database_gains_its_producer_runs_on_open_and_still_knows_re_sends() {
    use crate::harness::numbered_append as append;
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    let mut sent = Vec::new();
    for (id, (producer, first, n)) in [(5, 1, 3), (6, 1, 2), (5, 4, 2), (5, 9, 1), (6, 3, 1)]
        .into_iter()
        .enumerate()
    {
        raw.send(id as u64, append(producer, first, n));
        match raw.recv().unwrap().response {
            Response::Committed { receipts } => sent.push(receipts),
            other => panic!("{other:?}"),
        }
    }
    drop(raw);
    let dir = daemon.stop();
    let db_path = dir.path().join("witness.db");
    let runs_of = |db: &rusqlite::Connection| -> Vec<(i64, i64, i64, i64, Option<i64>)> {
        db.prepare("SELECT * FROM producer_runs ORDER BY first_seq")
            .unwrap()
            .query_map([], |row| row.try_into())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let written = runs_of(&read_db(&db_path));
    {
        // As the files of version 2 were: no runs, and (in later builds) an index instead.
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch(&format!(
            "{BACK_TO_VERSION_4}
             DROP TABLE producer_runs; DROP TABLE tiles; DROP TABLE checkpoints;
             ALTER TABLE producers DROP COLUMN last_run;
             CREATE INDEX entries_by_producer ON entries (producer_id, producer_number);
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }
    let daemon = TestDaemon::start_in(dir, |_| {});
    let mut raw = daemon.raw();
    // 5's numbers 1..=5 were written in two appends at seq 1..=3 and 6..=7: two runs.
    raw.send(9, append(5, 2, 4));
    assert_eq!(
        raw.recv().unwrap().response,
        Response::Committed {
            receipts: [&sent[0][1..], &sent[2][..]].concat()
        }
    );
    let db = read_db(&daemon.db);
    assert_eq!(
        sql_i64(&db, "PRAGMA user_version", []),
        witness_daemon::format::schema::SCHEMA_VERSION
    );
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'entries_by_producer'",
            []
        ),
        0
    );
    // What the upgrade derived is what the writer had written (no two appends of one
    // producer touch here, so the longest stretches are the appends).
    assert_eq!(runs_of(&db), written);
    drop(raw);
    let dir = daemon.stop();
    crate::harness::verify_file(&dir.path().join("witness.db"));
}

#[test]
fn a_version_3_database_gains_its_merkle_tree_on_open() {
    let daemon = TestDaemon::start();
    feed(&daemon, 1_000);
    let dir = daemon.stop();
    let db_path = dir.path().join("witness.db");
    let tiles_of = |db: &rusqlite::Connection| -> Vec<(i64, i64, Vec<u8>)> {
        db.prepare("SELECT level, idx, hashes FROM tiles ORDER BY level, idx")
            .unwrap()
            .query_map([], |row| row.try_into())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let written = tiles_of(&read_db(&db_path));
    // 1,000 leaves: three full tiles and a partial one at level 0, a partial one above.
    assert_eq!(written.len(), 5);
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute_batch(&format!(
            "{BACK_TO_VERSION_4} DROP TABLE tiles; DROP TABLE checkpoints; PRAGMA user_version = 3;"
        ))
        .unwrap();
    // A version 3 file reads as it is.
    crate::harness::verify_file(&db_path);
    let daemon = TestDaemon::start_in(dir, |_| {});
    feed(&daemon, 10);
    let db = read_db(&daemon.db);
    assert_eq!(
        sql_i64(&db, "PRAGMA user_version", []),
        witness_daemon::format::schema::SCHEMA_VERSION
    );
    let upgraded = tiles_of(&db);
    // The rebuilt tree is the one the writer had kept, grown by the ten new entries.
    assert_eq!(upgraded[..3], written[..3]);
    assert!(upgraded[3].2.starts_with(&written[3].2));
    let dir = daemon.stop();
    crate::harness::verify_file(&dir.path().join("witness.db"));
}

#[test]
fn a_version_7_database_reads_as_it_is_and_gains_cache_writes_and_prices_on_open() {
    let daemon = TestDaemon::start();
    feed(&daemon, 300);
    let dir = daemon.stop();
    let db_path = dir.path().join("witness.db");
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute_batch(crate::harness::BACK_TO_VERSION_7)
        .unwrap();
    // Read as it is, offline: the later columns are NULL, the roll-up's new sums zero.
    let (code, out, err) = crate::harness::witness(
        &dir.path().join("none.sock"),
        &["verify", "--db", db_path.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let daemon = TestDaemon::start_in(dir, |_| {});
    let db = read_db(&daemon.db);
    assert_eq!(sql_i64(&db, "PRAGMA user_version", []), 8);
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM entries WHERE priced_by IS NOT NULL",
            []
        ),
        0
    );
    assert_eq!(sql_i64(&db, "SELECT sum(unpriced) FROM cost_hourly", []), 0);
    // New entries after the upgrade carry the new columns, and the whole log verifies.
    daemon
        .client()
        .log(
            Entry::new("llm.call", "agent").cost(
                witness_client::Cost::tokens(1200, 300)
                    .model("gpt-4o-mini")
                    .cache_read_tokens(200)
                    .cache_write_tokens(10),
            ),
        )
        .unwrap();
    let dir = daemon.stop();
    crate::harness::verify_file(&dir.path().join("witness.db"));
}
