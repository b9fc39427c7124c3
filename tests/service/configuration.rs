//! The configuration file and flags: checks, --print-config, the README example, SIGHUP reloads, log formats.

use super::*;

#[test]
fn sighup_applies_a_changed_configuration_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("witnessd.toml");
    std::fs::write(&config, "batch_max = 4096\nlog_level = \"info\"\n").unwrap();
    let notify = NotifySocket::bind(dir.path());
    let daemon = Witnessd::spawn(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("NOTIFY_SOCKET", notify.path.as_os_str())],
    );
    notify.wait_for("READY=1", Duration::from_secs(20));
    // A connection opened before the reload must live through it.
    let mut before = Client::connect(&daemon.socket).unwrap();
    before.log(Entry::new("before", "test")).unwrap();

    std::fs::write(
        &config,
        "batch_max = 3\nlog_level = \"debug\"\nqueue = 64  # needs a restart\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let reload = notify.wait_for("READY=1", Duration::from_secs(10));
    let reloading = reload
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .expect("RELOADING=1 before READY=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let log = wait_for_log(&daemon, "batching retuned max_batch_entries=3");
    assert!(
        log.contains("takes effect only on a restart key=\"queue\""),
        "{log}"
    );
    // Batches now hold at most 3 entries: 300 single-entry appends written in one go take
    // 100 commits or more.
    pipeline_single_entries(&daemon.socket, 300);
    before.log(Entry::new("after", "test")).unwrap();
    let stats = before.stats().unwrap();
    assert_eq!(stats.entries_total, 302);
    assert!(stats.batch_entries.max <= 3, "{:?}", stats.batch_entries);
    assert!(stats.batches_total >= 101, "{}", stats.batches_total);
    assert_eq!(stats.queue_capacity, 8192, "queue is not reloadable");
    // The debug level is on: a refused request is logged.
    let refused = before.log(Entry::new("e", "test").payload_text("{not json"));
    assert!(refused.is_err());
    wait_for_log(&daemon, "request refused");

    std::fs::write(&config, "batch_max = \"many\"\n").unwrap();
    daemon.signal(libc::SIGHUP);
    notify.wait_for("READY=1", Duration::from_secs(10));
    let log = wait_for_log(&daemon, "reload refused");
    assert!(log.contains("batch_max"), "{log}");
    // The running configuration stayed: still at most 3 per batch, still serving the old
    // connection.
    pipeline_single_entries(&daemon.socket, 30);
    before.log(Entry::new("still", "test")).unwrap();
    assert!(before.stats().unwrap().batch_entries.max <= 3);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
}

#[test]
fn configuration_files_are_checked_printed_and_garbage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(binary("witnessd"))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let file = dir.path().join("witnessd.toml");
    let path = file.to_str().unwrap();
    std::fs::write(&file, "batch_max = 64\nsocket_mode = \"600\"\n").unwrap();
    let (code, out, _) = run(&["--config", path, "--check-config"]);
    assert_eq!((code, out.contains("valid")), (Some(0), true), "{out}");
    // Flags override the file; the printed configuration is a file that reproduces it.
    let (code, printed, _) = run(&["--config", path, "--batch-max", "9", "--print-config"]);
    assert_eq!(code, Some(0));
    assert!(printed.contains("batch_max = 9\n") && printed.contains("socket_mode = \"600\""));
    std::fs::write(&file, &printed).unwrap();
    let (_, reprinted, _) = run(&["--config", path, "--print-config"]);
    assert_eq!(reprinted, printed);

    for (text, named) in [
        ("batch_max = 0", "`batch_max`"),
        ("no_such_key = 1", "no_such_key"),
        ("queue = \"deep\"", "queue"),
        ("sync = \"sometimes\"", "`sync`"),
        ("metrics_listen = \"everywhere\"", "`metrics_listen`"),
        ("stall_timeout_secs = -5", "stall_timeout_secs"),
        ("[[[\u{1}", "line 1"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, _, stderr) = run(&["--config", path, "--check-config"]);
        assert_eq!(code, Some(2), "{text}: {stderr}");
        assert!(stderr.contains(named), "{text}: {stderr}");
        // The daemon refuses to start on it too, and creates nothing.
        let db = dir.path().join("never.db");
        let (code, _, _) = run(&["--config", path, "--db", db.to_str().unwrap()]);
        assert_eq!(code, Some(2));
        assert!(!db.exists());
    }
    let (code, _, stderr) = run(&["--config", "/nonexistent/witnessd.toml", "--check-config"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/witnessd.toml"), "{stderr}");
}

#[test]
fn the_readmes_example_configuration_checks_out_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let readme = include_str!("../../README.md");
    let example = crate::harness::doc_block(readme, "example-config");
    let file = dir.path().join("witnessd.toml");
    std::fs::write(&file, &example).unwrap();
    let output = Command::new(binary("witnessd"))
        .args(["--config", file.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every key of the effective configuration is in the example, with the same value.
    let printed = String::from_utf8(output.stdout).unwrap();
    let without_comments: String = example
        .lines()
        .map(|line| line.split(" #").next().unwrap().trim_end())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    let normalise = |text: &str| {
        let mut lines: Vec<String> = text
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|line| !line.is_empty())
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(normalise(&printed), normalise(&without_comments));
    // A key is marked `*` exactly when a reload applies it.
    for key in witness_daemon::config::KEYS {
        let line = example
            .lines()
            .find(|line| {
                line.split([' ', '=']).next() == Some(key.name)
                    || line.starts_with(&format!("[{}]", key.name))
                    || line.starts_with(&format!("[[{}]]", key.name))
            })
            .unwrap_or_else(|| panic!("the example lacks {}", key.name));
        let comment = line.split_once(" #").map_or("", |(_, comment)| comment);
        assert_eq!(
            comment.trim_start().starts_with('*'),
            key.reload == witness_daemon::config::Reload::Live,
            "{line}"
        );
    }
}

#[test]
fn log_lines_are_json_on_request_and_unstamped_under_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::spawn(dir.path(), &["--log-format", "json"], &[]);
    daemon.wait_until_serving();
    daemon.signal(libc::SIGTERM);
    let log = {
        let log = daemon.stderr.clone();
        assert!(daemon.wait().success());
        std::fs::read_to_string(log).unwrap()
    };
    let mut lines = 0;
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 3, "{log}");

    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::spawn(
        dir.path(),
        &[],
        &[("JOURNAL_STREAM", OsStr::new("8:12345"))],
    );
    daemon.wait_until_serving();
    let log = daemon.log();
    let first = log.lines().next().expect("a line");
    assert!(
        ["INFO", "WARN"]
            .iter()
            .any(|level| first.trim_start().starts_with(level)),
        "the journal stamps lines itself: {first}"
    );
}
