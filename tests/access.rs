//! Who may connect, write and read, and how much: connection limits with room kept for the
//! operator, deadlines on a handshake and a begun frame, idle connections, allow lists and
//! per-user rates. Other users are played by `setpriv` as nobody, so the cases that need one
//! run as root (CI does) and say so elsewhere.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use witness_client::{Client, Entry};
use witness_daemon::config::Config;
use witness_protocol::query::{EntriesQuery, Filter};
use witness_protocol::{ErrorCode, Request, Response};

use crate::harness::{Raw, TestDaemon, as_nobody, count};

/// True when another user can be played; outside CI a non-root run skips those cases.
fn can_switch_users() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root || std::env::var_os("CI").is_none(),
        "CI must run these tests as root: they play another user with setpriv"
    );
    root
}

/// A daemon whose socket another user may reach.
fn open_daemon(configure: impl FnOnce(&mut Config)) -> TestDaemon {
    let daemon = TestDaemon::start_with(|config| {
        config.socket_mode = 0o666;
        configure(config);
    });
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon
}

/// Runs `witness` as nobody against `daemon`; exit code and stderr.
fn nobody(daemon: &TestDaemon, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    use std::io::Write;
    let mut child = as_nobody("witness")
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["--timeout", "5"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn error_code(raw: &mut Raw) -> Option<ErrorCode> {
    match raw.recv()?.response {
        Response::Error(reply) => Some(reply.code),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_that_never_says_hello_is_told_and_closed() {
    let daemon = TestDaemon::start_with(|config| config.handshake_timeout = Duration::from_secs(1));
    let mut silent = Raw::connect(&daemon.socket);
    assert_eq!(error_code(&mut silent), Some(ErrorCode::TimedOut));
    assert!(silent.recv().is_none(), "the connection stayed open");
    daemon.client().ping().unwrap();
}

#[test]
fn a_frame_begun_and_never_finished_is_told_and_closed() {
    let daemon = TestDaemon::start_with(|config| config.frame_timeout = Duration::from_secs(1));
    let mut raw = daemon.raw();
    // A length of 100 bytes, and only 3 of them.
    raw.send_bytes(&[100, 0, 0, 0, 1, 2, 3]);
    assert_eq!(error_code(&mut raw), Some(ErrorCode::TimedOut));
    assert!(raw.recv().is_none(), "the connection stayed open");
}

#[test]
fn idle_connections_close_but_followers_and_clients_go_on() {
    let daemon =
        TestDaemon::start_with(|config| config.idle_timeout = Some(Duration::from_secs(1)));
    let mut idle = daemon.raw();
    let mut follower = daemon.raw();
    follower.send(
        1,
        Request::Entries(EntriesQuery {
            filter: Filter::default(),
            newest: None,
            limit: None,
            follow: true,
        }),
    );
    let mut client = daemon.client();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(idle.recv().is_none(), "an idle connection stayed open");
    // The client reconnects by itself; the follower was kept and hears the entry.
    let receipt = client.log(Entry::new("after idle", "c")).unwrap();
    loop {
        match follower.recv().expect("the follower was closed").response {
            Response::Entries(entries) if entries.iter().any(|e| e.seq == receipt.seq) => break,
            Response::Entries(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_connection_limit_answers_busy_and_keeps_room_for_the_operator() {
    if !can_switch_users() {
        return;
    }
    let daemon = open_daemon(|config| {
        config.max_connections = 3;
        config.access.reserved_connections = 2;
    });
    let held: Vec<Raw> = (0..3).map(|_| daemon.raw()).collect();
    let (code, stderr) = nobody(&daemon, &["ping"], None);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("connections are in use") && !stderr.contains("Busy:"),
        "{stderr}"
    );
    // Root is an operator: it has the reserve.
    let mut operator = daemon.client();
    operator.ping().unwrap();
    let busy = operator.stats().unwrap().rejections;
    assert!(
        busy.iter().any(|(code, n)| code == "Busy" && *n >= 1),
        "{busy:?}"
    );
    drop(held);
}

#[test]
fn one_user_may_hold_only_so_many_connections() {
    if !can_switch_users() {
        return;
    }
    let daemon = open_daemon(|config| config.access.max_connections_per_uid = 2);
    let followers: Vec<_> = (0..2)
        .map(|_| {
            as_nobody("witness")
                .arg("--socket")
                .arg(&daemon.socket)
                .args(["tail", "-f"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    crate::harness::wait_until(
        "both followers are connected",
        Duration::from_secs(10),
        || daemon.client().stats().unwrap().connections >= 3,
    );
    let (code, stderr) = nobody(&daemon, &["ping"], None);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("uid 65534 already holds 2 connections"),
        "{stderr}"
    );
    for mut follower in followers {
        follower.kill().unwrap();
        follower.wait().unwrap();
    }
}

#[test]
fn allow_lists_admit_writers_and_readers_by_uid() {
    if !can_switch_users() {
        return;
    }
    let daemon = open_daemon(|config| config.access.allow_uids = vec![4242]);
    let (code, stderr) = nobody(&daemon, &["ping"], None);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("uid 65534") && !stderr.contains("Forbidden:"),
        "{stderr}"
    );
    // Root is always admitted.
    daemon.client().ping().unwrap();

    let daemon = open_daemon(|config| config.access.read_uids = vec![4242]);
    let log = ["log", "--event", "e", "--component", "c"];
    assert_eq!(nobody(&daemon, &log, None).0, 0);
    for read in [
        &["tail"][..],
        &["trace", "t"],
        &["cost"],
        &["verify"],
        &["traces"],
    ] {
        let (code, stderr) = nobody(&daemon, read, None);
        assert_eq!(code, 1, "{read:?}: {stderr}");
        assert!(
            stderr.contains("may write to this witnessd but not read"),
            "{stderr}"
        );
    }
    assert_eq!(count(&daemon.db), 1);
}

#[test]
fn a_user_over_its_rate_is_told_busy_and_counted() {
    if !can_switch_users() {
        return;
    }
    let daemon = open_daemon(|config| config.access.uid_entries_per_sec = 5);
    let lines: String = (0..50)
        .map(|i| format!("{{\"event\":\"e\",\"component\":\"c\",\"payload\":{{\"i\":{i}}}}}\n"))
        .collect();
    // One request larger than the bucket passes once (a user is never refused for ever)...
    assert_eq!(nobody(&daemon, &["import", "-"], Some(&lines)).0, 0);
    // ...and leaves a debt that refuses the next at once.
    let (code, stderr) = nobody(&daemon, &["import", "-"], Some(&lines));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("over its limit of 5 entries/s"), "{stderr}");
    assert_eq!(count(&daemon.db), 50);
    let stats = Client::connect(&daemon.socket).unwrap().stats().unwrap();
    assert_eq!(stats.rate_limited, vec![(65534, 1)]);
    // Root is never limited.
    let mut operator = daemon.client();
    for _ in 0..20 {
        operator.log(Entry::new("root", "c")).unwrap();
    }
}
