//! `fleet-bench`: the fleet's two figures, each beside a baseline measured in the same run.
//!
//! 1. Forwarding under sustained ingest: a release `witnessd` takes entries from client
//!    threads for a fixed time, once forwarding to a local PostgreSQL and once not; reported
//!    are ingest with and without the forwarder, the forwarder's rate while ingest runs, and
//!    how long it takes to catch up after.
//! 2. `fleet cost` over ten million central rows: the roll-up query `witness fleet cost`
//!    runs, beside the plain `GROUP BY` over `events` it replaces.
//!
//! `cargo run --release -p witness-bench --bin fleet-bench -- [--runs N] [--rows N]`
//! Needs Debian's `postgresql` package; as root, the server runs as the `postgres` user.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use witness_client::{Client, Cost, Entry};
use witness_daemon::fleet::query::{self, CostBy};

struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> anyhow::Result<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("Debian's postgresql package")?
            .map(|entry| entry.map(|entry| entry.path().join("bin")))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .context("no initdb")?;
        let dir = tempfile::tempdir()?;
        if root() {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let postgres = Postgres { dir, bin, port };
        let data = postgres.dir.path().join("data");
        postgres.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        // Durable as a production server is (fsync on), with room for a bulk load.
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 shared_buffers = '1GB'\nmax_wal_size = '4GB'\nwork_mem = '64MB'\n",
                postgres.dir.path().display()
            ),
        )?;
        let log = postgres.dir.path().join("log");
        postgres.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )?;
        Ok(postgres)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = if root() {
            let (uid, gid) = postgres_user()?;
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
        let output = command.args(args).current_dir(self.dir.path()).output()?;
        anyhow::ensure!(output.status.success(), "{tool}: {output:?}");
        Ok(())
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let output = Command::new("id").args([flag, "postgres"]).output()?;
        Ok(String::from_utf8(output.stdout)?.trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

struct Ingest {
    ingest_per_sec: f64,
    forward_per_sec: f64,
    catch_up: Duration,
}

/// Ingest for `seconds` from `threads` clients in batches of 100, forwarding to `url` or not.
fn ingest(url: Option<&str>, host: &str, seconds: u64, threads: usize) -> anyhow::Result<Ingest> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("w.sock");
    let db = dir.path().join("w.db");
    let mut args = vec![
        "--socket".to_owned(),
        socket.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ];
    if let Some(url) = url {
        let config = dir.path().join("w.toml");
        std::fs::write(
            &config,
            format!("[forward]\npostgres = \"{url}\"\nhost_id = \"{host}\"\n"),
        )?;
        args.extend(["--config".into(), config.display().to_string()]);
    }
    let mut child: Child = Command::new(witness_bench::release_witnessd()?)
        .args(&args)
        .spawn()?;
    witness_bench::wait_until_serving(&socket)?;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let (socket, stop, written) = (socket.clone(), Arc::clone(&stop), Arc::clone(&written));
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client = Client::connect(&socket)?;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Entry> = (0..100)
                        .map(|k| {
                            i += 1;
                            let entry = Entry::new("llm.call", format!("worker-{thread}"))
                                .trace(format!("t-{}", i / 50))
                                .payload_text(format!("{{\"i\":{i},\"k\":{k},\"note\":\"a typical payload of some length\"}}"));
                            if k % 4 == 0 {
                                entry.cost(
                                    Cost::new(1200, 300, 4200)
                                        .cache_read_tokens(800)
                                        .model("model-a"),
                                )
                            } else {
                                entry
                            }
                        })
                        .collect();
                    client.log_batch(batch)?;
                    written.fetch_add(100, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let watermark = |client: &mut Option<postgres::Client>| -> u64 {
        let Some(url) = url else { return 0 };
        if client.is_none() {
            *client = postgres::Client::connect(url, postgres::NoTls).ok();
        }
        client
            .as_mut()
            .and_then(|c| {
                c.query_opt("SELECT last_seq FROM hosts WHERE host_id = $1", &[&host])
                    .ok()
            })
            .flatten()
            .map_or(0, |row| row.get::<_, i64>(0) as u64)
    };
    let mut central = None;
    std::thread::sleep(Duration::from_secs(2));
    let (start, written_start, forwarded_start) = (
        Instant::now(),
        written.load(Ordering::Relaxed),
        watermark(&mut central),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = start.elapsed().as_secs_f64();
    let (written_end, forwarded_end) = (written.load(Ordering::Relaxed), watermark(&mut central));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker")?;
    }
    let total = written.load(Ordering::Relaxed);
    let stopped = Instant::now();
    if url.is_some() {
        while watermark(&mut central) < total {
            anyhow::ensure!(stopped.elapsed() < Duration::from_secs(600), "no catch-up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let catch_up = stopped.elapsed();
    // SAFETY: kill with a valid pid has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    Ok(Ingest {
        ingest_per_sec: (written_end - written_start) as f64 / elapsed,
        forward_per_sec: (forwarded_end - forwarded_start) as f64 / elapsed,
        catch_up: if url.is_some() {
            catch_up
        } else {
            Duration::ZERO
        },
    })
}

/// Fills the centre with `rows` events over 20 hosts and 90 days (each host with five
/// components, two events and three models, every combination in every hour), and the
/// roll-up the forwarder would have kept, in bulk.
fn fill(client: &mut postgres::Client, rows: i64) -> anyhow::Result<()> {
    witness_daemon::fleet::ensure_schema(client)?;
    let day = 86_400_000_000_000i64;
    let start = 1_760_000_000_000_000_000i64;
    let month = |n: i64| start + n * 30 * day;
    for n in 0..4 {
        client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS events_bench_{n} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
            month(n),
            month(n + 1)
        ))?;
    }
    client.batch_execute(&format!(
        "INSERT INTO events (host_id, seq, ts, event, component, trace_id, payload, tokens_in,
                             tokens_out, cost_micro_usd, model, hash)
         SELECT 'host-' || (g % 20), g / 20 + 1, {start} + (g::bigint * {}) , 
                CASE WHEN g % 4 = 0 THEN 'llm.call' ELSE 'step' END,
                'component-' || (g / 20 % 5), 't-' || (g / 40), '{{\"i\":' || g || '}}',
                CASE WHEN g % 4 = 0 THEN 1200 END, CASE WHEN g % 4 = 0 THEN 300 END,
                CASE WHEN g % 4 = 0 THEN 4200 END, CASE WHEN g % 4 = 0 THEN 'model-' || (g / 100 % 3) END,
                '\\x00'
         FROM generate_series(0, {} - 1) AS g;
         INSERT INTO cost_hourly
         SELECT host_id, {hour}, component, event, coalesce(model, ''), count(*),
                coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), 0, 0,
                coalesce(sum(cost_micro_usd), 0)
         FROM events WHERE host_id LIKE 'host-%' GROUP BY 1, 2, 3, 4, 5;
         ANALYZE;",
        90 * day / rows,
        rows,
        hour = witness_daemon::format::schema::hour_sql(witness_daemon::format::schema::EVENT_TIME)
    ))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut runs = 3;
    let mut rows = 10_000_000i64;
    let mut seconds = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--rows" => rows = args.next().context("--rows N")?.parse()?,
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let postgres = Postgres::start()?;
    let url = postgres.url();
    let (mut off, mut on, mut forward, mut catch_up) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let plain = ingest(None, "off", seconds, 4)?;
        let forwarding = ingest(Some(&url), &format!("run-{run}"), seconds, 4)?;
        eprintln!(
            "run {run}: ingest {:.0}/s without the forwarder, {:.0}/s with it; forwarded {:.0}/s; caught up {:.1} s after",
            plain.ingest_per_sec,
            forwarding.ingest_per_sec,
            forwarding.forward_per_sec,
            forwarding.catch_up.as_secs_f64()
        );
        off.push(plain.ingest_per_sec);
        on.push(forwarding.ingest_per_sec);
        forward.push(forwarding.forward_per_sec);
        catch_up.push(forwarding.catch_up.as_secs_f64());
    }
    println!("| figure ({runs} runs, median) | value |\n|---|---|");
    println!(
        "| ingest, forwarder off (baseline) | {:.0} entries/s |",
        witness_bench::median(off.clone())
    );
    println!(
        "| ingest, forwarder on | {:.0} entries/s ({:+.1}%) |",
        witness_bench::median(on.clone()),
        (witness_bench::median(on) / witness_bench::median(off) - 1.0) * 100.0
    );
    println!(
        "| forwarded while ingesting | {:.0} entries/s |",
        witness_bench::median(forward)
    );
    println!(
        "| catch-up after ingest stops | {:.1} s |",
        witness_bench::median(catch_up)
    );

    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let filled = Instant::now();
    fill(&mut client, rows).map_err(|error| match error.downcast_ref::<postgres::Error>() {
        Some(error) => anyhow::anyhow!(witness_daemon::fleet::describe(error)),
        None => error,
    })?;
    eprintln!(
        "filled {rows} rows in {:.0} s",
        filled.elapsed().as_secs_f64()
    );
    let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(witness_bench::median(times))
    };
    let since = Some(1_760_000_000_000_000_000i64 + 3_600_000_000_000 * 24 * 7 + 1_234_567);
    for (name, by) in [
        ("host", CostBy::Host),
        ("model", CostBy::Model),
        ("component", CostBy::Component),
    ] {
        let rollup = time(&mut || {
            query::cost(&mut client, by, None, None)
                .map(drop)
                .map_err(Into::into)
        })?;
        let windowed = time(&mut || {
            query::cost(&mut client, by, since, None)
                .map(drop)
                .map_err(Into::into)
        })?;
        let column = match by {
            CostBy::Model => "coalesce(model, '')",
            CostBy::Host => "host_id",
            _ => "component",
        };
        let plain = time(&mut || {
            client
                .query(&format!("SELECT {column}, count(*), sum(tokens_in), sum(tokens_out), sum(cost_micro_usd) FROM events GROUP BY 1"), &[])
                .map(drop)
                .map_err(Into::into)
        })?;
        println!(
            "| fleet cost --by {name}, {rows} rows | {rollup:.1} ms (with --since mid-hour: {windowed:.1} ms; GROUP BY over events: {plain:.0} ms) |"
        );
    }
    Ok(())
}
