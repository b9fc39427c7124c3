//! Running as a service, with the real `witnessd`: socket activation, the notify socket
//! (READY, WATCHDOG, STATUS, RELOADING, STOPPING), SIGHUP reloads, the configuration file,
//! log formats, the WAL bound, stats, maintenance and the Prometheus endpoint; one file for
//! each, and here the helpers they share.

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

mod configuration;
mod metrics;
mod systemd;
mod upkeep;

/// A datagram socket standing where systemd's notify socket would.
pub(crate) struct NotifySocket {
    socket: UnixDatagram,
    pub(crate) path: PathBuf,
}

impl NotifySocket {
    pub(crate) fn bind(dir: &Path) -> NotifySocket {
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
    pub(crate) fn wait_for(&self, line: &str, timeout: Duration) -> Vec<String> {
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

    /// The first line starting with `prefix` that `wanted` accepts, within ten seconds.
    pub(crate) fn wait_for_prefix(&self, prefix: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(message) = self.next(left)
                && let Some(line) = message
                    .lines()
                    .find(|line| line.starts_with(prefix) && wanted(line))
            {
                return line.to_owned();
            }
        }
        panic!("no wanted {prefix} line within ten seconds");
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
