//! `witnessd`: the daemon. Parses flags, binds (or inherits) the socket, opens the database,
//! tells systemd when it is ready, and stops cleanly on SIGTERM or SIGINT.

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sd_notify::NotifyState;
use witness_client::paths;
use witness_daemon::config::Config;
use witness_daemon::schema::Sync;
use witness_daemon::server::{self, Server};

/// Records events from local processes into one hash-chained SQLite log.
#[derive(Debug, Parser)]
#[command(name = "witnessd", version)]
struct Args {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/witness/witness.sock, or
    /// /run/witness/witness.sock as root]. Ignored when systemd passes a socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Database file [default: $XDG_DATA_HOME/witness/witness.db, or
    /// /var/lib/witness/witness.db as root].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Durability of a commit: "full" survives power loss, "normal" survives a crash of the
    /// daemon.
    #[arg(long, default_value = "full", value_name = "full|normal")]
    sync: Sync,
    /// Permission bits of the socket, in octal.
    #[arg(long, default_value = "660", value_name = "OCTAL", value_parser = parse_mode)]
    socket_mode: u32,
    /// Most entries in one transaction.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_max: u32,
    /// Microseconds to wait for more entries once a batch has started.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    batch_delay_us: u64,
    /// Entries that may wait for the writer before producers are slowed.
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u32).range(16..=16_777_216))]
    queue: u32,
    /// Log filter, such as "info" or "witness_daemon=debug"; RUST_LOG is used when unset.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal permission such as 660"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_level.as_deref());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("witnessd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(filter) => EnvFilter::new(filter),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // The journal stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let socket_path = args.socket.unwrap_or_else(paths::default_socket_path);
    let db_path = args.db.unwrap_or_else(paths::default_db_path);
    let mut config = Config::new(socket_path, db_path);
    config.socket_mode = args.socket_mode;
    config.queue_capacity = args.queue as usize;
    config.writer.sync = args.sync;
    config.writer.max_batch_entries = args.batch_max as usize;
    config.writer.max_batch_delay = Duration::from_micros(args.batch_delay_us);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("witness-io")
        .build()
        .context("starting the async runtime")?;
    let _entered = runtime.enter();
    let listener = match inherited_listener()? {
        Some(listener) => {
            tracing::info!("serving the socket passed by the service manager");
            listener
        }
        None => server::bind(&config.socket_path, config.socket_mode)?,
    };
    let (socket, db) = (config.socket_path.clone(), config.writer.db_path.clone());
    let server = Server::start(config)?;
    let stop = stop_on_signals()?;
    tracing::info!(socket = %socket.display(), db = %db.display(), sync = %args.sync, "witnessd ready");
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    runtime.block_on(server.run(listener, async {
        let _ = stop.await;
    }));
    tracing::info!("witnessd stopped");
    Ok(())
}

/// The listening socket systemd passed (socket activation), if any.
fn inherited_listener() -> anyhow::Result<Option<tokio::net::UnixListener>> {
    let mut fds = sd_notify::listen_fds().context("reading LISTEN_FDS")?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.len() > 0 {
        anyhow::bail!(
            "systemd passed {} sockets; witnessd serves exactly one",
            fds.len() + 1
        );
    }
    // SAFETY: systemd hands the process this descriptor to own; nothing else in the process
    // knows of it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .context("configuring the passed socket")?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .context("the socket systemd passed is not a listening Unix socket")?;
    Ok(Some(listener))
}

/// Resolves on the first SIGTERM or SIGINT, after telling systemd that the daemon is
/// stopping. A thread waits for the signals so that no handler runs inside the runtime.
fn stop_on_signals() -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("witness-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "stopping");
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                let _ = stop.send(());
            }
        })
        .context("starting the signal thread")?;
    Ok(stopped)
}
