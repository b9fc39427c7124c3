//! Running as a service, with the real `witnessd`: socket activation, the notify socket
//! (READY, WATCHDOG, STATUS, RELOADING, STOPPING), SIGHUP reloads, the configuration file,
//! log formats, the WAL bound, stats, maintenance and the Prometheus endpoint.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use witness_client::admin::MaintenanceTask;
use witness_client::{Client, Entry, Error};
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{Ack, Append, ErrorCode, OnFull, Request, RequestFrame, Response, frame};

use crate::harness::{Raw, Witnessd, as_nobody, binary, verify_file, witness};

/// A datagram socket standing where systemd's notify socket would.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, path }
    }

    /// The next message, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(String::from_utf8(buffer[..n].to_vec()).unwrap()),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(error) => panic!("notify socket: {error}"),
        }
    }

    /// Messages up to and including the first with `line` among its lines.
    fn wait_for(&self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(message) = self.next(left) {
                let found = message.lines().any(|l| l == line);
                seen.push(message);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {line} within {timeout:?}; got {seen:?}");
    }

    /// Throws away the messages already waiting.
    fn drain(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 4096];
        while self.socket.recv(&mut buffer).is_ok() {}
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Every message that arrives within `period`.
    fn collect(&self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            seen.extend(self.next(left));
        }
        seen
    }
}

fn has_line(messages: &[String], line: &str) -> bool {
    messages.iter().any(|m| m.lines().any(|l| l == line))
}

fn wait_for_log(daemon: &Witnessd, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = daemon.log();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `witnessd` on `dir` with `notify` as its notify socket and a watchdog interval in
/// microseconds; does not wait.
fn spawn_watched(dir: &Path, notify: &NotifySocket, watchdog_usec: &str) -> Witnessd {
    let env = [
        ("NOTIFY_SOCKET", notify.path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new(watchdog_usec)),
    ];
    Witnessd::spawn(dir, &[], &env)
}

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

/// Writes `n` appends of one entry each in one write, then reads their `Committed`s.
fn pipeline_single_entries(socket: &Path, n: u64) {
    let mut raw = Raw::connect(socket);
    raw.hello();
    let mut bytes = Vec::new();
    for id in 1..=n {
        let request = Request::Append(Append {
            ack: Ack::Committed,
            on_full: OnFull::Wait,
            producer: None,
            entries: vec![Entry::new("pipelined", "test")],
        });
        frame::encode(&RequestFrame { id, request }, MAX_FRAME_LEN, &mut bytes).unwrap();
    }
    raw.send_bytes(&bytes);
    for _ in 0..n {
        let answer = raw.recv().unwrap();
        assert!(
            matches!(answer.response, Response::Committed { .. }),
            "{answer:?}"
        );
    }
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
    let readme = include_str!("../README.md");
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
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(normalise(&printed), normalise(&without_comments));
    // A key is marked `*` exactly when a reload applies it.
    for key in witness_daemon::config::KEYS {
        let line = example
            .lines()
            .find(|line| line.split([' ', '=']).next() == Some(key.name))
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
    wait_for_log(&daemon, "PRAGMA optimize elapsed=");
}

#[test]
fn stats_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut client = Client::connect(&daemon.socket).unwrap();
    for i in 0..20 {
        client
            .log(Entry::new("e", "stats").trace(i.to_string()))
            .unwrap();
    }
    let refused = client.log(Entry::new("e", "stats").payload_text("{not json"));
    assert!(matches!(refused, Err(Error::Refused(reply)) if reply.code == ErrorCode::InvalidEntry));
    let (code, out, err) = witness(&daemon.socket, &["stats", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["entries_total"], 20);
    assert_eq!(stats["last_seq"], 20);
    assert_eq!(stats["rejections"]["InvalidEntry"], 1);
    assert_eq!(stats["ack_us"]["count"], 20);
    assert!(stats["commit_us"]["p50"].as_u64().unwrap() > 0);
    // This client and the `witness` one.
    assert!(stats["connections_max"].as_u64().unwrap() >= 2);
    assert_eq!(stats["connections"], 2);
    assert!(stats["db_bytes"].as_u64().unwrap() > 0);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(stats["queue_capacity"], 8192);
    let (code, table, _) = witness(&daemon.socket, &["stats"], None);
    assert_eq!(code, 0);
    assert!(
        table.contains("20 committed") && table.contains("InvalidEntry 1"),
        "{table}"
    );
    let (code, text, _) = witness(&daemon.socket, &["stats", "--prometheus"], None);
    assert_eq!(code, 0);
    let scrape = parse_prometheus(&text);
    assert_eq!(sample(&scrape, "witness_entries_committed_total"), 20.0);
}

fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == name)
        .unwrap_or_else(|| panic!("no {name}"));
    match found.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn the_metrics_endpoint_serves_prometheus_text_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let log = wait_for_log(&daemon, "serving metrics at http://");
    let url = log
        .split("serving metrics at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let mut client = Client::connect(&daemon.socket).unwrap();
    for _ in 0..7 {
        client.log(Entry::new("e", "http")).unwrap();
    }
    let mut response = ureq::get(&url).call().unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.body_mut().read_to_string().unwrap();
    let scrape = parse_prometheus(&body);
    assert_eq!(sample(&scrape, "witness_entries_committed_total"), 7.0);
    assert_eq!(sample(&scrape, "witness_last_seq"), 7.0);
    assert_eq!(sample(&scrape, "witness_queue_capacity"), 8192.0);
    assert!(sample(&scrape, "witness_resident_memory_bytes") > 0.0);
    let summary = scrape
        .samples
        .iter()
        .find(|s| s.metric == "witness_commit_microseconds")
        .expect("commit summary");
    assert!(matches!(summary.value, prometheus_parse::Value::Summary(_)));
    let missing = ureq::get(url.replace("/metrics", "/nope")).call();
    assert!(
        matches!(missing, Err(ureq::Error::StatusCode(404))),
        "{missing:?}"
    );
    // Garbage on the port harms nothing.
    use std::io::Write;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut raw = std::net::TcpStream::connect(address).unwrap();
    raw.write_all(b"\x00\x01GARBAGE\r\n\r\n").unwrap();
    drop(raw);
    assert_eq!(ureq::get(&url).call().unwrap().status(), 200);
    client.ping().unwrap();
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(binary("witnessd"))
        .arg("--socket")
        .arg(dir.path().join("s"))
        .arg("--db")
        .arg(dir.path().join("d.db"))
        .args(["--metrics-listen", &address])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("binding the metrics endpoint {address}")),
        "{stderr}"
    );
    // It stopped before opening the database.
    assert!(!dir.path().join("d.db").exists());
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
        assert!(stderr.contains("Forbidden"), "{stderr}");
    }
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
