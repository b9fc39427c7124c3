//! The test harness: daemons with their own temporary folder, socket and database, stopped
//! when dropped; raw connections for speaking frames by hand.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use witness_client::Client;
use witness_daemon::config::Config;
use witness_daemon::serve::server::{self, Server};
use witness_protocol::frame::{self, FrameReader};
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{Hello, PROTOCOL_VERSION, Request, RequestFrame, ResponseFrame};

/// How long a daemon may take to stop before its test fails: its shutdown grace (5 s) and
/// then some.
pub const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A daemon running in this process on a runtime of its own.
pub struct TestDaemon {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub db: PathBuf,
    /// Where the dashboard answers, when the configuration asked for one (`web_listen`,
    /// bound here to a port of its own whatever it said).
    pub web: Option<std::net::SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDaemon {
    /// A daemon on the default settings.
    pub fn start() -> TestDaemon {
        TestDaemon::start_with(|_| {})
    }

    /// A daemon whose settings `configure` adjusts.
    pub fn start_with(configure: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        TestDaemon::start_in(dir, configure)
    }

    /// A daemon on a folder that may already hold a database.
    pub fn start_in(dir: TempDir, configure: impl FnOnce(&mut Config)) -> TestDaemon {
        let socket = dir.path().join("witness.sock");
        let db = dir.path().join("witness.db");
        let mut config = Config::new(socket.clone(), db.clone());
        configure(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) =
            std::sync::mpsc::channel::<Result<Option<std::net::SocketAddr>, String>>();
        let web_listen = config.web_listen.take();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let web = match web_listen {
                    Some(_) => {
                        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                        Some(socket)
                    }
                    None => None,
                };
                let web_address = web.as_ref().map(|socket| socket.local_addr().unwrap());
                let started = server::bind(&config.socket_path, config.socket_mode)
                    .map_err(|error| error.to_string())
                    .and_then(|listener| {
                        let mut server =
                            Server::start(config).map_err(|error| error.to_string())?;
                        if let Some(socket) = web {
                            server.serve_http(witness_daemon::http::Listener {
                                kind: witness_daemon::http::Kind::Web,
                                socket,
                            });
                        }
                        Ok((listener, server))
                    });
                let (listener, server) = match started {
                    Ok(started) => started,
                    Err(reason) => {
                        let _ = ready.send(Err(reason));
                        return;
                    }
                };
                let _ = ready.send(Ok(web_address));
                server
                    .run(listener, async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("the daemon stopped cleanly");
            });
        });
        let web = match is_ready.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(web)) => web,
            Ok(Err(reason)) => panic!("the daemon on {} did not start: {reason}", db.display()),
            Err(_) => panic!(
                "the daemon on {} did not start within 20 s, or its thread panicked",
                db.display()
            ),
        };
        TestDaemon {
            dir,
            socket,
            db,
            web,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A client connected to this daemon.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket).unwrap()
    }

    /// A raw connection that has said Hello.
    pub fn raw(&self) -> Raw {
        let mut raw = Raw::connect(&self.socket);
        raw.hello();
        raw
    }

    /// Stops the daemon cleanly and waits for it; returns the folder so that the database
    /// can be inspected or reopened.
    pub fn stop(mut self) -> TempDir {
        self.shutdown();
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Stops the daemon and waits for it, at most `STOP_WITHIN`: a daemon that does not
    /// stop fails its test, naming its database, instead of hanging the suite. A test that
    /// is already failing does not wait at all, so its own message is the one shown.
    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        let deadline = Instant::now() + STOP_WITHIN;
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the in-process daemon on {} did not stop within {STOP_WITHIN:?}",
                self.db.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.join().is_err() {
            panic!("the in-process daemon on {} panicked", self.db.display());
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// SQL that takes a file of the current format back to the shape of version 7: no cache-write
/// tokens and no `priced_by` in `entries`, no cache writes or unpriced count in `cost_hourly`.
/// (Its rows must carry none of them, as no version 7 daemon could write them.)
pub const BACK_TO_VERSION_7: &str = "
    ALTER TABLE entries DROP COLUMN priced_by;
    ALTER TABLE entries DROP COLUMN cache_write_1h_tokens;
    ALTER TABLE entries DROP COLUMN cache_write_tokens;
    ALTER TABLE cost_hourly DROP COLUMN unpriced;
    ALTER TABLE cost_hourly DROP COLUMN cache_write_tokens;
    PRAGMA user_version = 7;
";

/// SQL that takes a file of the current format (never pruned) back to the shape of version 5:
/// no `log_start`, `segments` and `received_keys`.
pub const BACK_TO_VERSION_5: &str = "
    ALTER TABLE entries DROP COLUMN priced_by;
    ALTER TABLE entries DROP COLUMN cache_write_1h_tokens;
    ALTER TABLE entries DROP COLUMN cache_write_tokens;
    ALTER TABLE cost_hourly DROP COLUMN unpriced;
    ALTER TABLE cost_hourly DROP COLUMN cache_write_tokens;
    DROP TABLE received_keys;
    DROP TABLE log_start;
    DROP TABLE segments;
    PRAGMA user_version = 5;
";

/// SQL that takes a file of the current format back to the shape of version 4, to test the
/// upgrades from it and from older versions: no `entries.imported`, the receive time
/// indexed, and `cost_hourly` without cache-read and reasoning tokens, by receive hour.
pub const BACK_TO_VERSION_4: &str = "
    ALTER TABLE entries DROP COLUMN priced_by;
    ALTER TABLE entries DROP COLUMN cache_write_1h_tokens;
    ALTER TABLE entries DROP COLUMN cache_write_tokens;
    DROP TABLE received_keys;
    DROP TABLE log_start;
    DROP TABLE segments;
    ALTER TABLE entries DROP COLUMN imported;
    DROP INDEX entries_by_time;
    CREATE INDEX entries_by_ts ON entries (ts);
    DROP TABLE cost_hourly;
    CREATE TABLE cost_hourly (
        hour INTEGER NOT NULL, component TEXT NOT NULL, event TEXT NOT NULL,
        model TEXT NOT NULL, entries INTEGER NOT NULL, tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL, micro_usd INTEGER NOT NULL,
        PRIMARY KEY (hour, component, event, model)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO cost_hourly
    SELECT ts / 3600000000000, component, event, coalesce(model, ''), count(*),
           coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0),
           coalesce(sum(cost_micro_usd), 0)
    FROM entries GROUP BY 1, 2, 3, 4;
    PRAGMA user_version = 4;
";

/// A read-only connection to a database file, as any reader would open it.
pub fn read_db(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// `SELECT count(*) FROM entries`.
pub fn count(db: &Path) -> i64 {
    read_db(db)
        .query_row("SELECT count(*) FROM entries", [], |row| row.get(0))
        .unwrap()
}

/// Verifies the whole chain of a file and returns the entry count, failing on a break.
pub fn verify_file(db: &Path) -> u64 {
    let connection = witness_daemon::format::schema::open_reader(db).unwrap();
    match witness_daemon::format::verify::verify(&connection, Default::default()).unwrap() {
        witness_protocol::VerifyReport::Intact { count, .. } => count,
        broken => panic!("chain broken: {broken:?}"),
    }
}

/// An append of `n` entries numbered from `first_number` by `producer_id`, asking for
/// receipts; each entry's payload is its number.
pub fn numbered_append(producer_id: u64, first_number: u64, n: usize) -> witness_protocol::Request {
    use witness_protocol::{Ack, Append, Entry, OnFull, ProducerRef, Request};
    Request::Append(Append {
        ack: Ack::Committed,
        on_full: OnFull::Wait,
        producer: Some(ProducerRef {
            producer_id,
            first_number,
        }),
        entries: (first_number..first_number + n as u64)
            .map(|number| Entry::new("e", "c").payload(serde_json::json!(number)))
            .collect(),
    })
}

/// A connection that speaks frames by hand.
pub struct Raw {
    pub stream: UnixStream,
    reader: FrameReader,
}

impl Raw {
    pub fn connect(socket: &Path) -> Raw {
        Raw::from_stream(UnixStream::connect(socket).unwrap())
    }

    pub fn from_stream(stream: UnixStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            reader: FrameReader::new(MAX_FRAME_LEN),
        }
    }

    pub fn hello(&mut self) {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            client: "raw".into(),
        };
        self.send(0, Request::Hello(hello));
        assert!(matches!(
            self.recv().unwrap().response,
            witness_protocol::Response::Hello(_)
        ));
    }

    pub fn send(&mut self, id: u64, request: Request) {
        let mut bytes = Vec::new();
        frame::encode(&RequestFrame { id, request }, MAX_FRAME_LEN, &mut bytes).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next answer, or `None` once the daemon has closed the connection.
    pub fn recv(&mut self) -> Option<ResponseFrame> {
        loop {
            if let Some(frame) = self.reader.next_frame().unwrap() {
                return Some(frame);
            }
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("reading an answer: {error}"),
            }
        }
    }
}

/// Path of a binary of the workspace, built once per test run in the profile of the tests.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        }
        .to_owned();
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "witness-daemon",
                "--features",
                "faults",
                "--bins",
                "--profile",
                &profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .unwrap();
        assert!(status.success(), "building the binaries");
        profile_dir
    });
    profile_dir.join(name)
}

/// The real `witnessd` binary, running on a folder of its own.
pub struct Witnessd {
    pub child: Child,
    pub socket: PathBuf,
    pub db: PathBuf,
    pub stderr: PathBuf,
    /// The command line, for failure messages.
    command: String,
}

impl Witnessd {
    /// Starts `witnessd` on `dir` with extra flags and waits until it answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Witnessd {
        let daemon = Witnessd::spawn(dir, extra, &[]);
        daemon.wait_until_serving();
        daemon
    }

    /// Starts `witnessd` on `dir` with extra flags and environment, without waiting.
    pub fn spawn(dir: &Path, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Witnessd {
        let socket = dir.join("witness.sock");
        let db = dir.join("witness.db");
        let stderr = dir.join("witnessd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let mut command = Command::new(binary("witnessd"));
        command
            .arg("--socket")
            .arg(&socket)
            .arg("--db")
            .arg(&db)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stderr(log);
        let described = format!("{command:?}");
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {described}: {error}"));
        Witnessd {
            child,
            socket,
            db,
            stderr,
            command: described,
        }
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What a person needs when a test of this daemon fails: the command, the database and
    /// the last lines of the daemon's log.
    pub fn describe(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
        format!(
            "{}\n database: {}\n log ({}), last lines:\n  {tail}",
            self.command,
            self.db.display(),
            self.stderr.display()
        )
    }

    /// Waits until the daemon answers on its socket.
    pub fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Client::connect(&self.socket)
                .and_then(|mut client| client.ping())
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("witnessd did not start within 20 s: {}", self.describe());
    }

    /// Logs one entry through a new client and returns its `seq`.
    pub fn client_log(&self, event: &str) -> u64 {
        Client::connect(&self.socket)
            .unwrap()
            .log(witness_client::Entry::new(event, "test"))
            .unwrap()
            .seq
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with a valid pid and signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the process to exit, at most `STOP_WITHIN`, and returns its status; a
    /// daemon that does not exit is killed and fails the test with its description.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STOP_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "witnessd did not exit within {STOP_WITHIN:?}: {}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().unwrap();
    }
}

impl Drop for Witnessd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the `witness` command line against a socket without waiting for it; its output is
/// piped.
pub fn witness_spawn(socket: &Path, args: &[&str]) -> Child {
    Command::new(binary("witness"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `condition` to hold, polling, for at most `within`; panics naming `what`.
pub fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the `witness` command line against a socket with its standard output on a real
/// terminal (a pseudo-terminal `columns` wide) and `COLUMNS` as given (unset with `None`);
/// returns the exit code and what the terminal showed, its line ends as `\n`.
pub fn witness_on_terminal(
    socket: &Path,
    args: &[&str],
    columns: u16,
    env_columns: Option<&str>,
) -> (i32, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let size = libc::winsize {
        ws_row: 50,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes the two descriptors it opens; the name buffer and terminal
    // settings are not asked for.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut command = Command::new(binary("witness"));
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped());
    if let Some(value) = env_columns {
        command.env("COLUMNS", value);
    }
    let mut child = command.spawn().unwrap();
    // The command holds the parent's copy of the terminal's end: dropped, reading the master
    // ends (EIO) once the child has exited and closed its own.
    drop(command);
    let mut shown = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut master = std::fs::File::from(master);
    let mut buffer = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut ready = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&master),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let polled = unsafe { libc::poll(&mut ready, 1, left.as_millis() as libc::c_int) };
        if polled == 0 {
            let _ = child.kill();
            panic!("witness {args:?} on a terminal did not finish within 60 s");
        }
        match std::io::Read::read(&mut master, &mut buffer) {
            Ok(0) => break,
            Ok(n) => shown.extend_from_slice(&buffer[..n]),
            Err(error) if error.raw_os_error() == Some(libc::EIO) => break,
            Err(error) => panic!("reading the terminal: {error}"),
        }
    }
    let status = child.wait().unwrap();
    let shown = String::from_utf8(shown).unwrap().replace("\r\n", "\n");
    (status.code().unwrap_or(-1), shown)
}

/// Runs the `witness` command line against a socket; returns exit code, stdout, stderr.
pub fn witness(socket: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(binary("witness"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The body of the first fenced block after `<!-- marker -->` in a document, so that tests
/// can check what the documents say.
pub fn doc_block(document: &str, marker: &str) -> String {
    let start = document
        .find(&format!("<!-- {marker} -->"))
        .expect("marker in the document");
    let rest = &document[start..];
    let open = rest.find("```").unwrap();
    let body_start = open + rest[open..].find('\n').unwrap() + 1;
    let body_end = body_start + rest[body_start..].find("```").unwrap();
    rest[body_start..body_end].to_owned()
}

/// A command that runs a binary of the workspace as the user and group nobody (the tests
/// run as root in CI, whose defaults and privileges differ).
pub fn as_nobody(name: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binary(name))
        .env_remove("WITNESS_SOCKET");
    command
}
