//! The writer's upkeep under load: a bounded WAL, PRAGMA optimize on its interval, and backups while ingest runs.

use super::*;

#[test]
fn the_wal_stays_bounded_under_sustained_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("witnessd.toml");
    // A small threshold makes the bound visible in a short test: 256 pages of 4 KiB.
    std::fs::write(&config, "checkpoint_pages = 256\n").unwrap();
    let daemon = Witnessd::start(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--sync", "normal"],
    );
    let wal = dir.path().join("witness.db-wal");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let socket = daemon.socket.clone();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket).unwrap();
                let payload = serde_json::json!({"text": "x".repeat(200), "writer": w});
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let entry = Entry::new("load", "wal-test")
                        .trace(format!("{w}-{}", sent % 97))
                        .payload(payload.clone());
                    client.send(entry).unwrap();
                    sent += 1;
                }
                client.flush().unwrap();
                sent
            })
        })
        .collect();
    // A reader keeps snapshots open now and then, as `tail` and `cost` do.
    let reader = {
        let socket = daemon.socket.clone();
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut client = Client::connect(&socket).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.stats().unwrap();
                let query = witness_client::query::CostQuery {
                    model: None,
                    event: None,
                    by: witness_client::query::GroupBy::Component,
                    since: None,
                    until: None,
                    component: None,
                    offset: 0,
                    limit: 10,
                };
                client.cost(query).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Load until far more than the bound has gone through the WAL, however fast this
    // machine is.
    let bound = 8 << 20;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut largest = 0;
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    while size(&daemon.db) < 4 * bound && Instant::now() < deadline {
        largest = largest.max(size(&wal));
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    reader.join().unwrap();
    let db_size = std::fs::metadata(&daemon.db).unwrap().len();
    assert!(
        largest < bound,
        "WAL reached {largest} bytes (bound {bound}) while the database grew to {db_size}"
    );
    eprintln!("largest WAL {largest} bytes while the database grew to {db_size}");
    // The bound means something only if far more than it went through the WAL.
    assert!(db_size >= 4 * bound, "only {db_size} bytes written");
    daemon.signal(libc::SIGTERM);
    let db = daemon.db.clone();
    assert!(daemon.wait().success());
    assert_eq!(verify_file(&db), sent);
    assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
}

/// Issue 28, item 6: a clean stop truncates the WAL even with followers and readers
/// connected, as FORMAT.md says (they used to leave 12,392 bytes, the read-only connections
/// closing after the writer's).
#[test]
fn a_clean_stop_with_a_follower_connected_leaves_no_wal() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut client = Client::connect(&daemon.socket).unwrap();
    for n in 0..200 {
        client.send(Entry::new(format!("e{n}"), "c")).unwrap();
    }
    client.flush().unwrap();
    let mut follower = crate::harness::witness_spawn(&daemon.socket, &["tail", "-f", "-n", "1"]);
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    assert!(
        lines.any(|line| line.unwrap().contains("e199")),
        "the follower caught up"
    );
    // A read on the pool leaves an idle read connection open too.
    client
        .cost(witness_client::query::CostQuery {
            by: witness_client::query::GroupBy::Model,
            since: None,
            until: None,
            component: None,
            event: None,
            model: None,
            offset: 0,
            limit: 10,
        })
        .unwrap();
    drop(client);
    let wal = dir.path().join("witness.db-wal");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
}

#[test]
fn pragma_optimize_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("witnessd.toml");
    std::fs::write(
        &config,
        "optimize_interval_secs = 1\nlog_level = \"witness_daemon::store::writer=debug\"\n",
    )
    .unwrap();
    let daemon = Witnessd::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut client = Client::connect(&daemon.socket).unwrap();
    for _ in 0..10 {
        client.log(Entry::new("e", "optimize")).unwrap();
    }
    // Idle or busy, the writer runs it between batches once the interval has passed.
    wait_for_log(&daemon, "PRAGMA optimize elapsed_ms=");
}

#[test]
fn maintenance_backs_up_while_ingest_runs_and_is_for_the_daemons_user() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--socket-mode", "666"]);
    let socket = daemon.socket.clone();
    let ingest = std::thread::spawn(move || {
        let mut client = Client::connect(&socket).unwrap();
        for i in 0..3000 {
            client
                .send(Entry::new("e", "backup").trace((i % 50).to_string()))
                .unwrap();
        }
        client.flush().unwrap();
        client.log(Entry::new("last", "backup")).unwrap().seq
    });
    let backup = dir.path().join("backup.db");
    let mut client = Client::connect(&daemon.socket).unwrap();
    while client.stats().unwrap().entries_total < 500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = client
        .maintenance(MaintenanceTask::Backup {
            path: backup.to_str().unwrap().to_owned(),
        })
        .unwrap();
    let last_seq = ingest.join().unwrap();
    let in_backup = report.last_seq.unwrap();
    assert!(
        (500..=last_seq).contains(&in_backup),
        "{in_backup} of {last_seq}"
    );
    assert_eq!(verify_file(&backup), in_backup);
    assert_eq!(
        report.bytes,
        Some(std::fs::metadata(&backup).unwrap().len())
    );
    let (code, out, _) = witness(&daemon.socket, &["maintenance", "analyze"], None);
    assert_eq!(code, 0);
    assert!(out.contains("ANALYZE done"), "{out}");

    // Garbage paths: relative, existing, in a folder that is not there.
    for (path, expected) in [
        ("backup.db", "must be absolute"),
        (backup.to_str().unwrap(), "exists"),
        ("/nonexistent/folder/b.db", "does not exist"),
        ("", "must be absolute"),
    ] {
        let refused = client.maintenance(MaintenanceTask::Backup {
            path: path.to_owned(),
        });
        match refused {
            Err(Error::Refused(reply)) => {
                assert_eq!(reply.code, ErrorCode::BadRequest);
                assert!(
                    reply.message.contains(expected),
                    "{path}: {}",
                    reply.message
                );
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // Another user may log but not run maintenance.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = as_nobody("witness")
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["maintenance", "analyze"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("maintenance is for the daemon's own user"),
            "{stderr}"
        );
        // Issue 28, item 18: what people read carries no protocol code names.
        assert!(!stderr.contains("Forbidden"), "{stderr}");
    }
}
