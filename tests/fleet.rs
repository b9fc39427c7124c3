//! The fleet: hosts forwarding into a real PostgreSQL (Debian's, started here in a temporary
//! folder), agreeing row for row with each host's database through stops and kills of
//! either side, and refusing a host whose log was cut or replaced.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use witness_client::{Client, Cost, Entry};
use witness_daemon::fleet::{ForwardConfig, Target};
use witness_daemon::format::row;

use crate::harness::{TestDaemon, Witnessd, binary, read_db, wait_until};

/// How long forwarding may take to catch up in a test before it fails.
const CATCH_UP: Duration = Duration::from_secs(120);

/// A throwaway PostgreSQL server: initdb in a temporary folder, run as the `postgres` user
/// when the tests run as root (PostgreSQL refuses to run as root), on a free local port.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// Starts a new server, trusting local connections.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// Starts a new server with extra `-c` settings.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server (Debian's postgresql package) is installed")
            .map(|entry| entry.unwrap().path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let postgres = Postgres { dir, bin, port };
        postgres.run(
            "initdb",
            &[
                "-D",
                postgres.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\n",
            postgres.dir.path().display()
        );
        for setting in settings {
            conf.push_str(setting);
            conf.push('\n');
        }
        let path = postgres.data().join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&path, existing).unwrap();
        postgres.start_server();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a file the server's user owns.
    pub fn write_file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if is_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        path
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let mut command = if is_root() {
            let (uid, gid) = postgres_user();
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .args(["--clear-groups", "--"])
                .arg(self.bin.join(tool));
            command
        } else {
            Command::new(self.bin.join(tool))
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir.path().join("log");
        let mut all = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()];
        all.extend(args);
        self.run("pg_ctl", &all);
    }

    /// Starts the server (again) and waits until it takes connections.
    pub fn start_server(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]);
    }

    /// Stops the server, letting connections end ("fast" shutdown).
    pub fn stop_server(&self) {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]);
    }

    /// The connection string of the `postgres` database as its superuser.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A client of the server.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    /// The forwarder's settings for host `host_id`.
    pub fn forward(&self, host_id: &str) -> ForwardConfig {
        ForwardConfig {
            target: Target {
                url: self.url(),
                password_file: None,
            },
            host_id: Some(host_id.into()),
            batch_max: 5_000,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new(if is_root() { "setpriv" } else { "true" })
            .args(if is_root() {
                let (uid, gid) = postgres_user();
                vec![
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                    "--".into(),
                ]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` user Debian's package makes.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        assert!(output.status.success(), "no postgres user");
        String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// Every column of every row of a host's database, in `seq` order, as text for comparison.
fn local_rows(db: &Path) -> Vec<Vec<String>> {
    let connection = read_db(db);
    let mut statement = connection
        .prepare(&format!(
            "SELECT {} FROM entries ORDER BY seq",
            row::select_columns()
        ))
        .unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut all = Vec::new();
    while let Some(stored) = rows.next().unwrap() {
        let values = row::read_values(stored).unwrap();
        let mut line: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
        line.push(hex::encode(row::stored_hash(stored).unwrap()));
        all.push(line);
    }
    all
}

/// The same of the centre's copy of one host.
fn central_rows(postgres: &Postgres, host_id: &str) -> Vec<Vec<String>> {
    let mut client = postgres.client();
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM events WHERE host_id = $1 ORDER BY seq",
                witness_daemon::fleet::event_columns()
            ),
            &[&host_id],
        )
        .unwrap();
    rows.iter()
        .map(|stored| {
            let (values, hash) = witness_daemon::fleet::pg_values(stored).unwrap();
            let mut line: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
            line.push(hex::encode(hash));
            line
        })
        .collect()
}

/// The centre's watermark of a host, 0 before its first batch.
fn watermark(postgres: &Postgres, host_id: &str) -> i64 {
    let Ok(mut client) = postgres::Client::connect(&postgres.url(), postgres::NoTls) else {
        return -1;
    };
    client
        .query_opt("SELECT last_seq FROM hosts WHERE host_id = $1", &[&host_id])
        .ok()
        .flatten()
        .map_or(0, |row| row.get(0))
}

/// The last seq of a host's database.
fn local_head(db: &Path) -> i64 {
    read_db(db)
        .query_row("SELECT coalesce(max(seq), 0) FROM entries", [], |row| {
            row.get(0)
        })
        .unwrap()
}

/// Waits until the centre holds all of a host's entries, then checks it holds exactly them.
fn assert_agrees(postgres: &Postgres, host_id: &str, db: &Path) {
    let head = local_head(db);
    wait_until(
        &format!("{host_id} is forwarded up to seq {head}"),
        CATCH_UP,
        || watermark(postgres, host_id) == head,
    );
    let local = local_rows(db);
    let central = central_rows(postgres, host_id);
    assert_eq!(local.len(), central.len(), "{host_id}: row count");
    for (mine, theirs) in local.iter().zip(&central) {
        assert_eq!(mine, theirs, "{host_id}: a row differs");
    }
}

/// `witness fleet ARGS` against `postgres`.
fn fleet(postgres: &Postgres, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary("witness"))
        .arg("fleet")
        .args(["--postgres", &postgres.url()])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Logs `n` entries in batches, some with cost and a trace shared across hosts.
fn log_entries(socket: &Path, host: &str, n: usize) {
    let mut client = Client::connect(socket).unwrap();
    let mut sent = 0;
    while sent < n {
        let batch: Vec<Entry> = (sent..n.min(sent + 1000))
            .map(|i| {
                let mut entry = Entry::new(if i % 3 == 0 { "llm.call" } else { "step" }, host)
                    .payload(json!({"i": i, "host": host}));
                if i % 3 == 0 {
                    entry = entry.cost(
                        Cost::new(100, 10, 7)
                            .cache_read_tokens(5)
                            .cache_write_tokens(3)
                            .model("m-1"),
                    );
                }
                if i % 1000 == 0 {
                    entry = entry.trace("shared-trace");
                }
                entry
            })
            .collect();
        sent += batch.len();
        client.log_batch(batch).unwrap();
    }
}

#[test]
fn three_hosts_forward_and_agree_row_for_row() {
    let postgres = Postgres::start();
    let per_host = 70_000;
    let daemons: Vec<(String, TestDaemon)> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|host| {
            let forward = postgres.forward(host);
            let daemon = TestDaemon::start_with(|config| config.forward = Some(forward));
            (host.to_owned(), daemon)
        })
        .collect();
    std::thread::scope(|scope| {
        for (host, daemon) in &daemons {
            scope.spawn(|| log_entries(&daemon.socket, host, per_host));
        }
    });
    for (host, daemon) in &daemons {
        assert_agrees(&postgres, host, &daemon.db);
        let stats = daemon.client().stats().unwrap();
        let forward = stats.forward.expect("a forwarder's figures");
        assert_eq!(forward.host_id, *host);
        assert_eq!(forward.forwarded_seq, per_host as u64);
        assert_eq!(forward.state, "forwarding");
    }

    let (code, out, err) = fleet(&postgres, &["cost", "--by", "host"]);
    assert_eq!(code, 0, "{err}");
    for host in ["alpha", "beta", "gamma"] {
        let line = out.lines().find(|line| line.starts_with(host)).unwrap();
        assert!(line.contains(&per_host.to_string()), "{line}");
    }
    let (code, out, _) = fleet(&postgres, &["--json", "cost", "--by", "model"]);
    assert_eq!(code, 0);
    let cost: serde_json::Value = serde_json::from_str(&out).unwrap();
    let calls = (per_host as u64).div_ceil(3) * 3;
    assert_eq!(cost["total"]["cost_micro_usd"], json!(calls * 7), "{cost}");
    assert_eq!(cost["total"]["entries"], json!(per_host * 3));

    let (code, out, _) = fleet(&postgres, &["--json", "trace", "shared-trace"]);
    assert_eq!(code, 0);
    let trace: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = trace["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3 * per_host / 1000);
    let hosts: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|entry| entry["host_id"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 3);
    let times: Vec<&str> = entries
        .iter()
        .map(|entry| entry["time"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "in time order"
    );

    let (code, out, err) = fleet(&postgres, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(": intact").count(), 3, "{out}");
    let (code, out, _) = fleet(&postgres, &["hosts"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches(" ok").count(), 3, "{out}");
    // fleet's own options after its subcommand, as --json and --socket may be.
    let output = Command::new(binary("witness"))
        .args(["fleet", "hosts", "--postgres", &postgres.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), out);
    // Still required, wherever it goes: a usage error that names it.
    let output = Command::new(binary("witness"))
        .args(["fleet", "hosts"])
        .env_remove("WITNESS_POSTGRES")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--postgres"), "{stderr}");
}

#[test]
fn postgres_stopped_mid_stream_then_started_loses_and_doubles_nothing() {
    let postgres = Postgres::start();
    let forward = postgres.forward("stopped");
    let daemon = TestDaemon::start_with(|config| config.forward = Some(forward));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let socket = daemon.socket.clone();
        let writing = Arc::clone(&writing);
        std::thread::spawn(move || {
            while writing.load(Ordering::Relaxed) {
                log_entries(&socket, "stopped", 500);
            }
        })
    };
    wait_until("some entries are forwarded", CATCH_UP, || {
        watermark(&postgres, "stopped") > 1000
    });
    postgres.stop_server();
    let mut client = daemon.client();
    wait_until("stats say the centre is away", CATCH_UP, || {
        let forward = client.stats().unwrap().forward.unwrap();
        forward.state.starts_with("disconnected") && forward.lag_entries > 0
    });
    let metrics = witness_daemon::observe::prometheus::prometheus(&client.stats().unwrap());
    assert!(metrics.contains("witness_forward_up 0"), "{metrics}");
    std::thread::sleep(Duration::from_secs(2));
    postgres.start_server();
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    assert_agrees(&postgres, "stopped", &daemon.db);
    let forward = client.stats().unwrap().forward.unwrap();
    assert_eq!(
        (forward.state.as_str(), forward.lag_entries),
        ("forwarding", 0)
    );
    assert!(forward.errors_total > 0);
}

#[test]
fn a_backend_killed_in_the_middle_of_a_copy_leaves_nothing_half_done() {
    let postgres = Postgres::start();
    let mut forward = postgres.forward("killed");
    forward.batch_max = 50_000;
    let daemon = TestDaemon::start_with(|config| config.forward = Some(forward));
    log_entries(&daemon.socket, "killed", 150_000);
    let mut killed = 0;
    let mut tries = 0;
    // One watching connection, made again only when the server's crash recovery (after each
    // kill) ends it: a connection per look spent most of each COPY connecting, and under a
    // loaded machine a COPY could finish unseen.
    let mut watcher: Option<postgres::Client> = None;
    while killed < 2 && tries < 20_000 && watermark(&postgres, "killed") < 150_000 {
        tries += 1;
        if watcher.as_ref().is_none_or(postgres::Client::is_closed) {
            watcher = postgres::Client::connect(&postgres.url(), postgres::NoTls).ok();
        }
        let Some(watching) = &mut watcher else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let copying: Vec<i32> = match watching.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'witness' \
             AND query LIKE 'COPY incoming%' AND state = 'active'",
            &[],
        ) {
            Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
            Err(_) => {
                watcher = None;
                continue;
            }
        };
        if let Some(pid) = copying.first() {
            // SAFETY: kill with a pid and a signal number has no memory effects.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    assert!(killed > 0, "no COPY was caught in flight");
    assert_agrees(&postgres, "killed", &daemon.db);
}

/// A configuration file that forwards to `postgres` as `host_id` and signs often.
fn forwarding_config(dir: &Path, postgres: &Postgres, host_id: &str) -> String {
    let path = dir.join("witnessd.toml");
    std::fs::write(
        &path,
        format!(
            "checkpoint_interval_ms = 50\n[forward]\npostgres = \"{}\"\nhost_id = \"{host_id}\"\n",
            postgres.url()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn witnessd_killed_mid_forward_resumes_from_the_watermark() {
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let config = forwarding_config(dir.path(), &postgres, "crashy");
    for round in 0..3 {
        let daemon = Witnessd::start(dir.path(), &["--config", &config]);
        log_entries(&daemon.socket, "crashy", 20_000);
        wait_until("forwarding has begun", CATCH_UP, || {
            watermark(&postgres, "crashy") > round * 20_000
        });
        daemon.kill9();
    }
    let daemon = Witnessd::start(dir.path(), &["--config", &config]);
    assert_agrees(&postgres, "crashy", &daemon.db);
    let doubled: i64 = postgres
        .client()
        .query_one(
            "SELECT count(*) - count(DISTINCT seq) FROM events WHERE host_id = 'crashy'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(doubled, 0);
    let (code, out, _) = fleet(&postgres, &["verify", "--host", "crashy"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_cut_log_and_a_replaced_log_are_refused_and_named() {
    let postgres = Postgres::start();
    let steady = TestDaemon::start_with(|config| config.forward = Some(postgres.forward("steady")));
    log_entries(&steady.socket, "steady", 300);

    // A host whose log is cut back and restarted with --accept-loss.
    let cut_dir = tempfile::tempdir().unwrap();
    let cut_config = forwarding_config(cut_dir.path(), &postgres, "cut");
    let cut = Witnessd::start(cut_dir.path(), &["--config", &cut_config]);
    log_entries(&cut.socket, "cut", 200);
    assert_agrees(&postgres, "cut", &cut.db);
    cut.signal(libc::SIGTERM);
    assert!(cut.wait().success());
    rusqlite::Connection::open(cut_dir.path().join("witness.db"))
        .unwrap()
        .execute_batch(&format!(
            "{}
             DELETE FROM entries WHERE seq > 150; DROP TABLE tiles; DROP TABLE checkpoints;
             DELETE FROM producer_runs WHERE first_seq > 150; DELETE FROM cost_hourly;
             PRAGMA user_version = 3;",
            crate::harness::BACK_TO_VERSION_4
        ))
        .unwrap();
    let cut = Witnessd::start(cut_dir.path(), &["--config", &cut_config, "--accept-loss"]);
    log_entries(&cut.socket, "cut", 100);

    // A host whose database file is swapped for a new log, under the same key.
    let swap_dir = tempfile::tempdir().unwrap();
    let swap_config = forwarding_config(swap_dir.path(), &postgres, "swapped");
    let swapped = Witnessd::start(swap_dir.path(), &["--config", &swap_config]);
    log_entries(&swapped.socket, "swapped", 100);
    assert_agrees(&postgres, "swapped", &swapped.db);
    swapped.signal(libc::SIGTERM);
    assert!(swapped.wait().success());
    for name in ["witness.db", "witness.checkpoint", "witness.acked"] {
        std::fs::remove_file(swap_dir.path().join(name)).unwrap();
    }
    let swapped = Witnessd::start(swap_dir.path(), &["--config", &swap_config]);
    log_entries(&swapped.socket, "swapped", 300);

    for (host, daemon, why) in [
        ("cut", &cut, "rewritten or replaced"),
        ("swapped", &swapped, "replaced"),
    ] {
        let mut client = Client::connect(&daemon.socket).unwrap();
        wait_until(&format!("{host} is refused"), CATCH_UP, || {
            client
                .stats()
                .unwrap()
                .forward
                .unwrap()
                .state
                .starts_with("refused")
        });
        let state = client.stats().unwrap().forward.unwrap().state;
        assert!(state.contains(why), "{state}");
        assert_eq!(
            daemon.log().matches("forwarding: refused").count(),
            1,
            "said once: {}",
            daemon.describe()
        );
    }
    assert_agrees(&postgres, "steady", &steady.db);

    let (code, out, _) = fleet(&postgres, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("steady: intact"), "{out}");
    for host in ["cut", "swapped"] {
        let line = out.lines().find(|line| line.starts_with(host)).unwrap();
        assert!(
            line.contains("REFUSED") && line.contains("replaced"),
            "{line}"
        );
    }
    let (_, out, _) = fleet(&postgres, &["hosts"]);
    assert_eq!(out.matches("REFUSED").count(), 2, "{out}");
    let (code, _, _) = fleet(&postgres, &["verify", "--host", "steady"]);
    assert_eq!(code, 0);

    // A row changed at the centre is found by the audit, which trusts no forwarder.
    postgres
        .client()
        .execute(
            "UPDATE events SET payload = '{\"i\": -1}' WHERE host_id = 'steady' AND seq = 77",
            &[],
        )
        .unwrap();
    let (code, out, _) = fleet(&postgres, &["verify", "--host", "steady"]);
    assert_eq!(code, 1);
    assert!(out.contains("BROKEN: entry 77 does not hash"), "{out}");
    let (code, _, err) = fleet(&postgres, &["verify", "--host", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("nobody"), "{err}");
}

/// Issue 28, items 1 and 2: a second log forwarding under a host id already pinned to another
/// key (a copied configuration, a re-imaged machine, two daemons on one host with the default
/// id) is refused alone; the pinned host goes on forwarding; `fleet hosts` and `fleet verify`
/// name the conflict, and `fleet clear` lifts it.
#[test]
fn a_second_log_under_a_pinned_host_id_is_refused_and_the_host_goes_on() {
    let postgres = Postgres::start();
    let steady = TestDaemon::start_with(|config| config.forward = Some(postgres.forward("web-3")));
    log_entries(&steady.socket, "web-3", 100);
    assert_agrees(&postgres, "web-3", &steady.db);

    // The stray: its own folder, so its own key, and the same host id.
    let stray = TestDaemon::start_with(|config| config.forward = Some(postgres.forward("web-3")));
    log_entries(&stray.socket, "stray", 30);
    let mut client = Client::connect(&stray.socket).unwrap();
    wait_until("the stray is refused", CATCH_UP, || {
        client
            .stats()
            .unwrap()
            .forward
            .unwrap()
            .state
            .starts_with("refused")
    });
    let state = client.stats().unwrap().forward.unwrap().state;
    assert!(
        state.contains("another log") && state.contains("host_id of its own"),
        "{state}"
    );

    // The pinned host's next entries all arrive, and none of the stray's.
    log_entries(&steady.socket, "web-3", 20);
    assert_agrees(&postgres, "web-3", &steady.db);
    let refused: Option<String> = postgres
        .client()
        .query_one("SELECT refused FROM hosts WHERE host_id = 'web-3'", &[])
        .unwrap()
        .get(0);
    assert_eq!(refused, None, "the pinned host is not refused");

    let (code, out, _) = fleet(&postgres, &["hosts"]);
    assert_eq!(code, 0);
    let line = out.lines().find(|line| line.starts_with("web-3")).unwrap();
    assert!(
        line.contains("CONFLICT") && line.contains("another log"),
        "{line}"
    );
    let (code, out, _) = fleet(&postgres, &["--json", "hosts"]);
    assert_eq!(code, 0);
    let hosts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        hosts["hosts"][0]["conflicts"].as_array().unwrap().len(),
        1,
        "{out}"
    );
    let (code, out, _) = fleet(&postgres, &["verify"]);
    assert_eq!(code, 1, "a conflict fails the audit: {out}");
    assert!(
        out.contains("web-3: CONFLICT: 1 other log") && out.contains("intact"),
        "{out}"
    );

    // Once the stray is dealt with, the operator clears it, and the audit passes again.
    drop(client);
    drop(stray);
    let (code, out, _) = fleet(&postgres, &["clear", "web-3"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("web-3: was not refused") && out.contains("forgot 1 conflicting log"),
        "{out}"
    );
    let (code, out, _) = fleet(&postgres, &["verify"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = fleet(&postgres, &["clear", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("nobody"), "{err}");
}

#[test]
fn hostile_values_survive_byte_for_byte() {
    let postgres = Postgres::start();
    let daemon = TestDaemon::start_with(|config| config.forward = Some(postgres.forward("o'hare")));
    let hostile = [
        "'; DROP TABLE events; --",
        "\"quoted\" and \\backslashed\\",
        "tab\there, newline\nthere, bell\u{7}",
        "emoji 🦀, combining e\u{301}, right-to-left \u{202e}olleh",
        "\u{10ffff}\u{fffd}\u{feff}",
        "%s%n%x {} $1 $$",
    ];
    let mut client = daemon.client();
    let mut entries: Vec<Entry> = hostile
        .iter()
        .map(|text| {
            Entry::new(*text, *text)
                .trace(*text)
                .payload(json!({"text": text, "nested": [text, {"k": text}]}))
                .cost(Cost {
                    tokens_in: u64::MAX >> 1,
                    reasoning_tokens: Some(1),
                    micro_usd: Some(1),
                    model: Some((*text).into()),
                    ..Cost::default()
                })
        })
        .collect();
    // As large as an entry may be.
    let huge = "\u{1f980}".repeat((witness_protocol::limits::MAX_PAYLOAD_LEN - 16) / 4);
    entries.push(Entry::new("huge", "huge").payload(json!({ "blob": huge })));
    entries.push(Entry::new("raw", "raw").payload_text("{\"a\" :  1,\"b\":[ ]}"));
    client.log_batch(entries).unwrap();
    assert_agrees(&postgres, "o'hare", &daemon.db);
    let (code, out, _) = fleet(&postgres, &["--json", "trace", hostile[0]]);
    assert_eq!(code, 0);
    let trace: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(trace["entries"][0]["event"], json!(hostile[0]));
    let (code, out, _) = fleet(&postgres, &["verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn credentials_stay_out_of_logs_and_the_password_file_is_used() {
    let postgres = Postgres::start();
    postgres
        .client()
        .batch_execute("CREATE ROLE fleet LOGIN PASSWORD 'correct-horse'")
        .unwrap();
    let hba = postgres.data().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all fleet 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    postgres.pg_ctl(&["reload"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgresql://fleet@127.0.0.1:{}/postgres", postgres.port);

    // A wrong password in the URL: refused by the server, never printed or logged.
    let config = dir.path().join("wrong.toml");
    std::fs::write(
        &config,
        format!(
            "[forward]\npostgres = \"postgresql://fleet:wrong-battery@127.0.0.1:{}/postgres\"\n",
            postgres.port
        ),
    )
    .unwrap();
    let printed = Command::new(binary("witnessd"))
        .args(["--config", config.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(printed.contains("fleet:********@"), "{printed}");
    assert!(!printed.contains("wrong-battery"));
    let notify = crate::service::NotifySocket::bind(dir.path());
    let daemon = Witnessd::spawn(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("NOTIFY_SOCKET", notify.path.as_os_str())],
    );
    daemon.wait_until_serving();
    let mut client = Client::connect(&daemon.socket).unwrap();
    client.log(Entry::new("e", "c")).unwrap();
    wait_until("the centre refuses the password", CATCH_UP, || {
        client
            .stats()
            .unwrap()
            .forward
            .unwrap()
            .state
            .contains("password")
    });
    // systemd's status line tells of it too, within its five seconds.
    let status = notify.wait_for_prefix("STATUS=", |line| line.contains("fleet disconnected"));
    assert!(status.contains("1 entry behind"), "{status}");
    daemon.signal(libc::SIGTERM);
    let log = daemon.log();
    assert!(daemon.wait().success());
    assert!(!log.contains("wrong-battery"), "{log}");
    assert!(log.contains("fleet:********@"), "{log}");

    // The password from a password file: forwarding works.
    let passwords = dir.path().join("pgpass");
    std::fs::write(
        &passwords,
        format!("127.0.0.1:{}:postgres:fleet:correct-horse\n", postgres.port),
    )
    .unwrap();
    postgres
        .client()
        .batch_execute("GRANT ALL ON SCHEMA public TO fleet")
        .unwrap();
    std::fs::write(
        &config,
        format!(
            "[forward]\npostgres = \"{url}\"\npassword_file = \"{}\"\nhost_id = \"pw\"\n",
            passwords.display()
        ),
    )
    .unwrap();
    let daemon = Witnessd::start(dir.path(), &["--config", config.to_str().unwrap()]);
    assert_agrees(&postgres, "pw", &daemon.db);
    assert!(!daemon.log().contains("correct-horse"));
    // The command line takes PGPASSFILE.
    let output = Command::new(binary("witness"))
        .args(["fleet", "--postgres", &url, "hosts"])
        .env("PGPASSFILE", &passwords)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8(output.stdout).unwrap().contains("pw"));
}

#[test]
fn tls_is_used_when_the_url_asks_and_the_certificate_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "openssl {args:?}: {output:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=witness test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.path().join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=another CA",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
    ]);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let postgres = Postgres::start();
    let cert = postgres.write_file("server.pem", &read("server.pem"), 0o644);
    let key = postgres.write_file("server.key", &read("server.key"), 0o600);
    std::fs::write(
        postgres.data().join("postgresql.auto.conf"),
        format!(
            "{}ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            std::fs::read_to_string(postgres.data().join("postgresql.auto.conf")).unwrap(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    postgres.stop_server();
    postgres.start_server();
    let ca = dir.path().join("ca.pem");
    let other = dir.path().join("other.pem");
    let base = format!("postgresql://postgres@localhost:{}/postgres", postgres.port);
    let run = |url: String| {
        Command::new(binary("witness"))
            .args(["fleet", "--postgres", &url, "hosts"])
            .output()
            .unwrap()
    };
    // Forward once over TLS so that the centre has a schema, and see that it was TLS.
    let forward = ForwardConfig {
        target: Target {
            url: format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display()),
            password_file: None,
        },
        host_id: Some("tls".into()),
        batch_max: 100,
    };
    let daemon = TestDaemon::start_with(|config| config.forward = Some(forward));
    daemon.client().log(Entry::new("e", "c")).unwrap();
    assert_agrees(&postgres, "tls", &daemon.db);
    let encrypted: bool = postgres
        .client()
        .query_one(
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'witness'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(encrypted);
    for mode in ["verify-full", "verify-ca", "require"] {
        let output = run(format!(
            "{base}?sslmode={mode}&sslrootcert={}",
            ca.display()
        ));
        assert!(output.status.success(), "{mode}: {output:?}");
    }
    let output = run(format!("{base}?sslmode=require"));
    assert!(
        output.status.success(),
        "require checks nothing: {output:?}"
    );
    let output = run(format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        other.display()
    ));
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let output = run(format!(
        "{base}?sslmode=verify-full&sslrootcert=/no/such/ca.pem"
    ));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("/no/such/ca.pem")
    );
}

#[test]
fn bad_forward_settings_and_targets_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expect) in [
        ("[forward]\nhost_id = \"x\"\n", "postgres"),
        ("[forward]\npostgres = 12\n", "expected a string"),
        (
            "[forward]\npostgres = \"postgresql://h/d\"\nport = 5\n",
            "port",
        ),
        (
            "[forward]\npostgres = \"postgresql://h/d?sslmode=sometimes\"\n",
            "sslmode",
        ),
        (
            "[forward]\npostgres = \"postgresql://h:notaport/d\"\n",
            "forward",
        ),
        (
            "[forward]\npostgres = \"postgresql://h/d\"\nhost_id = \"\"\n",
            "host id",
        ),
        (
            "[forward]\npostgres = \"postgresql://h/d\"\nbatch_max = 0\n",
            "between",
        ),
        ("forward = \"postgresql://h/d\"\n", "forward"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let output = Command::new(binary("witnessd"))
            .args(["--config", config.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(expect), "{text}: {err}");
    }
    let output = Command::new(binary("witness"))
        .args(["fleet", "--postgres", "\u{1}garbage ==", "hosts"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("connection string")
    );
    let output = Command::new(binary("witness"))
        .args(["fleet", "hosts"])
        .env_remove("WITNESS_POSTGRES")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // A database no host has forwarded to is said to be one.
    let postgres = Postgres::start();
    let (code, _, err) = fleet(&postgres, &["hosts"]);
    assert_eq!(code, 1);
    assert!(err.contains("no host has forwarded"), "{err}");
}
