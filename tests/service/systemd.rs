//! Running under systemd: socket activation, readiness, status, the watchdog, and the unit files.

use super::*;

#[test]
fn socket_activation_serves_the_passed_socket() {
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("activated.sock");
    let unused = dir.path().join("unused.sock");
    let db = dir.path().join("witness.db");
    // systemd-socket-activate binds, and on the first connection executes witnessd with the
    // listening socket as fd 3 and LISTEN_FDS=1.
    let mut child = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&passed)
        .arg(binary("witnessd"))
        .arg("--socket")
        .arg(&unused)
        .arg("--db")
        .arg(&db)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate is installed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !passed.exists() {
        assert!(Instant::now() < deadline, "the socket was never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection waits in the backlog while witnessd starts.
    let mut client = Client::connect(&passed).unwrap();
    let receipt = client.log(Entry::new("activated", "test")).unwrap();
    assert_eq!(receipt.seq, 1);
    assert!(!unused.exists(), "witnessd bound its own socket too");
    // systemd-socket-activate exec()s the daemon, so the child is witnessd itself.
    // SAFETY: kill with a valid pid has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert_eq!(verify_file(&db), 1);
}

#[test]
fn the_notify_socket_hears_ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let daemon = spawn_watched(dir.path(), &notify, "400000");
    let first = notify.wait_for("READY=1", Duration::from_secs(20));
    assert_eq!(first.len(), 1, "READY=1 came after {first:?}");
    assert!(
        first[0].lines().any(|l| l.starts_with("STATUS=")),
        "{first:?}"
    );
    // READY means serving: the socket answers at once.
    Client::connect(&daemon.socket).unwrap().ping().unwrap();
    let messages = notify.collect(Duration::from_millis(1500));
    let pings = messages
        .iter()
        .filter(|m| m.as_str() == "WATCHDOG=1\n")
        .count();
    assert!(pings >= 3, "expected a ping every 200 ms, got {messages:?}");
    daemon.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(daemon.wait().success());
}

#[test]
fn a_wedged_writer_gets_no_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let daemon = spawn_watched(dir.path(), &notify, "300000");
    notify.wait_for("READY=1", Duration::from_secs(20));
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    // Another process holds the write lock: the writer's next commit waits in SQLite's busy
    // handler (up to 5 s), as it would on a hung disk.
    let blocker = rusqlite::Connection::open(&daemon.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let socket = daemon.socket.clone();
    let logger = std::thread::spawn(move || {
        Client::connect(&socket)
            .unwrap()
            .log(Entry::new("stuck", "test"))
    });
    // Once a ping has been withheld the writer is stuck; a ping for progress made before
    // that may still be waiting on the socket.
    wait_for_log(&daemon, "withholding the watchdog ping");
    notify.drain();
    let wedged = notify.collect(Duration::from_millis(1500));
    assert!(
        !has_line(&wedged, "WATCHDOG=1"),
        "pinged while the writer was stuck: {wedged:?}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    let receipt = logger.join().unwrap().unwrap();
    assert_eq!(receipt.seq, 1);
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let witnessd = binary("witnessd");
    for unit in ["witnessd.service", "witnessd.socket"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        let text = text.replace("/usr/bin/witnessd", witnessd.to_str().unwrap());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("witnessd.service"))
        .arg(dir.path().join("witnessd.socket"))
        .output()
        .expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Unknown keys and other mistakes are warnings on stderr, with a zero exit.
    assert!(stderr.trim().is_empty(), "{stderr}");
    let service = std::fs::read_to_string(units.join("witnessd.service")).unwrap();
    for line in [
        "Type=notify",
        "User=witness",
        "StateDirectory=witness",
        "RuntimeDirectory=witness",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(service.lines().any(|l| l == line), "missing {line}");
    }

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // The sysusers and tmpfiles snippets, applied to an empty root folder.
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        for (tool, file, extra) in [
            ("systemd-sysusers", "witness.sysusers.conf", None),
            (
                "systemd-tmpfiles",
                "witness.tmpfiles.conf",
                Some("--create"),
            ),
        ] {
            let output = Command::new(tool)
                .arg(format!("--root={}", root.display()))
                .args(extra)
                .arg(units.join(file))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("witness:x:"), "{passwd}");
        use std::os::unix::fs::PermissionsExt;
        let state = std::fs::metadata(root.join("var/lib/witness")).unwrap();
        assert_eq!(state.permissions().mode() & 0o777, 0o750);
    }
}
