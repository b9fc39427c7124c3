//! Starting up: default paths, sockets that are live, stale or not sockets at all, a
//! database held by another daemon, and database files that are not ours.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::{TestDaemon, Witnessd, as_nobody, binary, witness};

fn witnessd_fails(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(binary("witnessd"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn a_live_socket_is_refused_and_left_alone() {
    let daemon = TestDaemon::start();
    let other_db = daemon.dir.path().join("other.db");
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        daemon.socket.as_os_str(),
        "--db".as_ref(),
        other_db.as_os_str(),
    ]);
    assert!(
        stderr.contains("another witnessd is already serving"),
        "{stderr}"
    );
    daemon.client().ping().unwrap();
}

#[test]
fn a_database_held_by_another_daemon_is_refused() {
    let daemon = TestDaemon::start();
    let other_socket = daemon.dir.path().join("other.sock");
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        other_socket.as_os_str(),
        "--db".as_ref(),
        daemon.db.as_os_str(),
    ]);
    assert!(stderr.contains("is in use by another witnessd"), "{stderr}");
}

#[test]
fn a_file_at_the_socket_path_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("witness.sock");
    std::fs::write(&path, "precious").unwrap();
    let db = dir.path().join("w.db");
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        path.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn databases_that_are_not_ours_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--db".as_ref(),
        foreign.as_os_str(),
    ]);
    assert!(stderr.contains("is not a witness database"), "{stderr}");
    let newer = dir.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--db".as_ref(),
        newer.as_os_str(),
    ]);
    assert!(stderr.contains("schema version 99"), "{stderr}");
    assert!(stderr.contains("upgrade witness"), "{stderr}");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--db".as_ref(),
        garbage.as_os_str(),
    ]);
    assert!(stderr.contains("garbage.db"), "{stderr}");
    // Said once, each cause once, and no key left behind by a start that failed.
    assert_eq!(stderr.matches("garbage.db").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("file is not a database").count(),
        1,
        "{stderr}"
    );
    assert!(!dir.path().join("garbage.key").exists());
}

#[test]
fn bad_flags_are_usage_errors() {
    for (args, expected) in [
        (vec!["--sync", "sometimes"], "unknown durability"),
        (vec!["--socket-mode", "999"], "is not an octal permission"),
        (vec!["--batch-max", "0"], "`batch_max`"),
        (vec!["--metrics-listen", "localhost"], "`metrics_listen`"),
        (vec!["--log-format", "xml"], "`log_format`"),
        (vec!["--queue", "lots"], "--queue"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ] {
        let output = Command::new(binary("witnessd"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Runs the binaries as the unprivileged user `nobody`, so that the user defaults are
/// exercised even when the tests run as root (whose defaults are the system folders).
#[test]
fn defaults_live_under_the_users_runtime_and_data_folders() {
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to reach the folders, as in a real home.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtime = dir.path().join("run");
    let data = dir.path().join("data");
    let mut child = as_nobody("witnessd")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_DATA_HOME", &data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = runtime.join("witness/witness.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = as_nobody("witness")
        .args(["log", "--event", "e", "--component", "c"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(data.join("witness/witness.db").exists());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let folder_mode = std::fs::metadata(runtime.join("witness"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(folder_mode, 0o700);
    // SAFETY: kill with a valid pid has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigint_stops_cleanly_too() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--sync", "normal", "--socket-mode", "600"]);
    let (code, _, _) = witness(
        &daemon.socket,
        &["log", "--event", "e", "--component", "c"],
        None,
    );
    assert_eq!(code, 0);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    daemon.signal(libc::SIGINT);
    assert!(daemon.wait().success());
}

#[test]
fn a_socket_folder_others_may_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = shared.join("witness.sock");
    let db = dir.path().join("w.db");
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    assert!(stderr.contains("will not serve a socket in"), "{stderr}");
    assert!(!socket.exists());
}

#[test]
fn a_failed_start_is_described_with_its_command_database_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::spawn(dir.path(), &["--create", "false"], &[]);
    let described = {
        // The daemon refuses to create the missing log and exits; its description is what
        // a failing test prints.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while daemon.log().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        daemon.describe()
    };
    assert!(described.contains("--create"), "{described}");
    assert!(
        described.contains(&daemon.db.display().to_string()),
        "{described}"
    );
    assert!(described.contains("no log"), "{described}");
    assert!(!daemon.wait().success());
}

#[test]
fn a_tree_whose_tiles_were_cut_is_not_extended() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    for n in 0..300 {
        client
            .log(witness_client::Entry::new("e", "c").payload(serde_json::json!(n)))
            .unwrap();
    }
    drop(client);
    let dir = daemon.stop();
    let db = dir.path().join("witness.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM tiles WHERE level = 0 AND idx = 1")
        .unwrap();
    let socket = dir.path().join("again.sock");
    let stderr = witnessd_fails(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    assert!(stderr.contains("Merkle tree"), "{stderr}");
    assert!(stderr.contains("tile 0/1"), "{stderr}");
    assert!(stderr.contains("witness verify --db"), "{stderr}");
}

/// The CPU time, user and system, that process `pid` has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_daemon_sleeps_with_or_without_a_retention_policy() {
    // A thread that polls without waiting takes a whole core from the applications beside
    // it. Two seconds of a spinning thread are about 200 ticks; a sleeping daemon uses a few.
    for config in ["", "[retain]\nmax_age = \"90d\"\nmax_bytes = \"1GiB\"\n"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("witnessd.toml");
        std::fs::write(&file, config).unwrap();
        let daemon = Witnessd::start(dir.path(), &["--config", file.to_str().unwrap()]);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let before = cpu_ticks(daemon.pid());
        std::thread::sleep(std::time::Duration::from_secs(2));
        let used = cpu_ticks(daemon.pid()) - before;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert!(
            used < per_second / 2,
            "idle for 2 s with {config:?}, the daemon used {used} ticks of CPU ({per_second} a second)"
        );
        daemon.signal(libc::SIGTERM);
        assert!(daemon.wait().success());
    }
}
