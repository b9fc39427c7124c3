//! `witnessd`: the daemon. Reads its configuration (file, then flags), binds (or inherits)
//! the socket, opens the database, tells systemd when it is ready, reloads on SIGHUP and
//! stops cleanly on SIGTERM or SIGINT.

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sd_notify::NotifyState;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};
use witness_client::paths;
use witness_daemon::config::{Config, ConfigError, DEFAULT_CONFIG_PATH, LogFormat, Settings};
use witness_daemon::observe::service;
use witness_daemon::serve::server::{self, Reloader, Server};

/// Records events from local processes into one hash-chained SQLite log.
///
/// Settings come from the defaults, then the configuration file, then these flags.
#[derive(Debug, Parser)]
#[command(name = "witnessd", version)]
struct Args {
    /// Configuration file (TOML) [default: /etc/witness/witnessd.toml, when it exists].
    /// SIGHUP reads it again.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the configuration (file and flags), print the verdict and exit.
    #[arg(long, conflicts_with = "print_config")]
    check_config: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Create a new, empty log at the database path if none is there, say which, and exit:
    /// the first step of an install whose configuration says `create = false`.
    #[arg(long, conflicts_with_all = ["check_config", "print_config"])]
    init: bool,
    /// Start even though the database no longer holds what the last signed checkpoint
    /// covers (a cut tail, a damaged WAL, a replaced file): the log records what was lost,
    /// and the lost sequence numbers are filled, never handed out again.
    #[arg(long, conflicts_with_all = ["check_config", "print_config", "init"])]
    accept_loss: bool,
    /// Settings that override the file's.
    #[command(flatten)]
    overrides: Overrides,
}

/// The flags that override keys of the configuration file: each is named as its key, so
/// that they become `Settings` by name (a flag that names no key fails to).
#[derive(Debug, Default, clap::Args, serde::Serialize)]
struct Overrides {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/witness/witness.sock, or
    /// /run/witness/witness.sock as root]. Ignored when systemd passes a socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Database file [default: $XDG_DATA_HOME/witness/witness.db, or
    /// /var/lib/witness/witness.db as root].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Whether a missing database may be created as a new, empty log [default: true]. The
    /// system unit says false, so a lost or moved log is never silently replaced.
    #[arg(long, value_name = "true|false")]
    create: Option<bool>,
    /// Durability of a commit: "full" survives power loss, "normal" survives a crash of the
    /// daemon [default: full].
    #[arg(long, value_name = "full|normal")]
    sync: Option<String>,
    /// Permission bits of the socket, in octal [default: 660].
    #[arg(long, value_name = "OCTAL")]
    socket_mode: Option<String>,
    /// Most entries in one transaction [default: 4096].
    #[arg(long, value_name = "N")]
    batch_max: Option<u64>,
    /// Microseconds to wait for more entries once a batch has started [default: 0].
    #[arg(long, value_name = "US")]
    batch_delay_us: Option<u64>,
    /// Entries that may wait for the writer before producers are slowed [default: 8192].
    #[arg(long, value_name = "N")]
    queue: Option<u64>,
    /// Log filter, such as "info" or "witness_daemon=debug" [default: RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format [default: text].
    #[arg(long, value_name = "text|json")]
    log_format: Option<String>,
    /// Serve Prometheus metrics over HTTP at this address, such as 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Receive OpenTelemetry (OTLP/HTTP) at this address, such as 127.0.0.1:4318.
    #[arg(long, value_name = "ADDR")]
    otlp_listen: Option<String>,
    /// Serve the dashboard at this address, such as 127.0.0.1:7319 (`witness web` logs in).
    #[arg(long, value_name = "ADDR")]
    web_listen: Option<String>,
}

impl Overrides {
    /// These flags as settings, matched to keys by name.
    fn settings(&self) -> Settings {
        let value = serde_json::to_value(self).expect("flags are plain values");
        serde_json::from_value(value).expect("every flag is named as a configuration key")
    }
}

impl Args {
    /// The settings the flags give, which override the file's.
    fn overrides(&self) -> Settings {
        self.overrides.settings()
    }

    /// The configuration file to read, if any: the one named, or the default when present.
    fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            default.exists().then_some(default)
        })
    }

    /// Reads the file (if any) and applies the flags; every value checked.
    fn load(&self) -> Result<Config, ConfigError> {
        let file = match self.config_path() {
            Some(path) => Settings::from_file(&path)?,
            None => Settings::default(),
        };
        let mut config = Config::from_settings(
            &file.overridden_by(self.overrides()),
            paths::default_socket_path,
            paths::default_db_path,
        )?;
        config.accept_loss = self.accept_loss;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("witnessd: {error}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        match args.config_path() {
            Some(path) => println!("{}: configuration is valid", path.display()),
            None => println!("no configuration file; the defaults and flags are valid"),
        }
        return ExitCode::SUCCESS;
    }
    if args.print_config {
        print!("{}", config.to_settings().to_toml());
        return ExitCode::SUCCESS;
    }
    if args.init {
        return init(config);
    }
    let logging = init_logging(&config);
    match run(args, config, logging) {
        Ok(()) => ExitCode::SUCCESS,
        // Said once, on standard error, which the journal keeps under systemd.
        Err(error) => {
            eprintln!(
                "witnessd: {}",
                witness_daemon::errors::one_line(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// `witnessd --init`: creates the log if it is missing, and says whether it did.
fn init(mut config: Config) -> ExitCode {
    config.create = true;
    let path = config.writer.db_path.clone();
    let created = match witness_daemon::store::dbfile::DatabaseFile::take(&path, false) {
        Ok(_) => false,
        Err(witness_daemon::store::dbfile::TakeError::Missing(_)) => true,
        Err(error) => {
            eprintln!("witnessd: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = Server::start(config) {
        eprintln!("witnessd: {error}");
        return ExitCode::FAILURE;
    }
    if created {
        println!("created a new log at {}", path.display());
    } else {
        println!("a log already exists at {}; left as it is", path.display());
    }
    ExitCode::SUCCESS
}

/// Changes the log filter of the running daemon.
type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// The filter a configuration asks for: its `log_level`, else `RUST_LOG`, else `info`.
fn log_filter(config: &Config) -> EnvFilter {
    match &config.log_level {
        // Checked when the configuration was built.
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

fn init_logging(config: &Config) -> FilterHandle {
    use std::io::IsTerminal;
    let (filter, handle) = reload::Layer::new(log_filter(config));
    // The journal stamps every line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journal && std::io::stderr().is_terminal();
    type Boxed = Box<
        dyn Layer<tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>>
            + Send
            + Sync,
    >;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let output: Boxed = match (config.log_format, journal) {
        (LogFormat::Text, false) => Box::new(layer),
        (LogFormat::Text, true) => Box::new(layer.without_time()),
        (LogFormat::Json, false) => Box::new(layer.json()),
        (LogFormat::Json, true) => Box::new(layer.json().without_time()),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    handle
}

fn run(args: Args, mut config: Config, logging: FilterHandle) -> anyhow::Result<()> {
    let watchdog = sd_notify::watchdog_enabled();
    config.writer.heartbeat = service::writer_heartbeat(watchdog);
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
    // Bound before the database is opened, so that a taken port stops the start.
    let mut listeners = Vec::new();
    for (kind, address) in [
        (witness_daemon::http::Kind::Metrics, config.metrics_listen),
        (witness_daemon::http::Kind::Otlp, config.otlp.listen),
        (witness_daemon::http::Kind::Web, config.web_listen),
    ] {
        if let Some(address) = address {
            let socket = runtime
                .block_on(tokio::net::TcpListener::bind(address))
                .with_context(|| format!("binding the {} listener {address}", kind.name()))?;
            listeners.push(witness_daemon::http::Listener { kind, socket });
        }
    }
    let mut server = Server::start(config.clone())?;
    for listener in listeners {
        server.serve_http(listener);
    }
    let metrics = server.metrics();
    let stop = handle_signals(args, config.clone(), server.reloader(), logging)?;
    service::spawn_notifier(Arc::clone(&metrics), watchdog).context("starting the notifier")?;
    tracing::info!(
        socket = %config.socket_path.display(),
        db = %config.writer.db_path.display(),
        sync = %config.writer.durability,
        watchdog = %watchdog.map_or_else(|| "off".to_owned(), |every| format!("{}s", every.as_secs_f64())),
        "witnessd ready"
    );
    let _ = sd_notify::notify(&[
        NotifyState::Ready,
        NotifyState::Status(&metrics.status_line()),
    ]);
    let outcome = runtime.block_on(server.run(listener, async {
        let _ = stop.await;
    }));
    outcome?;
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

/// Starts the thread that takes signals: SIGHUP reloads the configuration; the first SIGTERM
/// or SIGINT tells systemd the daemon is stopping and resolves the returned receiver. A
/// thread waits for them so that no handler runs inside the runtime.
fn handle_signals(
    args: Args,
    mut running: Config,
    reloader: Reloader,
    logging: FilterHandle,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("witness-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    let monotonic = NotifyState::monotonic_usec_now();
                    let mut reloading = vec![NotifyState::Reloading];
                    reloading.extend(monotonic.ok());
                    let _ = sd_notify::notify(&reloading);
                    running = reload(&args, running, &reloader, &logging);
                    let _ = sd_notify::notify(&[NotifyState::Ready]);
                    continue;
                }
                tracing::info!(signal, "stopping");
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                let _ = stop.send(());
                break;
            }
        })
        .context("starting the signal thread")?;
    Ok(stopped)
}

/// Reads the configuration again and applies what can change while running. A configuration
/// that does not check out is refused whole, and the running one stays.
fn reload(args: &Args, running: Config, reloader: &Reloader, logging: &FilterHandle) -> Config {
    let new = match args.load() {
        Ok(new) => new,
        Err(error) => {
            // One line: a journal entry per line of TOML's pointer drawing would scatter it.
            let reason = error.to_string();
            let reason: Vec<&str> = reason
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('|'))
                .collect();
            tracing::error!(
                "reload refused, the running configuration stays: {}",
                reason.join(" ")
            );
            return running;
        }
    };
    for key in running.restart_only_differences(&new) {
        tracing::warn!(
            key,
            "changed in the configuration, but takes effect only on a restart"
        );
    }
    let next = running.with_reloaded(&new);
    reloader.apply(&next);
    if next.log_level != running.log_level
        && let Err(error) = logging.reload(log_filter(&next))
    {
        tracing::error!(%error, "cannot change the log filter");
    }
    tracing::info!(
        batch_max = next.writer.max_batch_entries,
        batch_delay_us = next.writer.max_batch_delay.as_micros() as u64,
        max_frame_len = next.max_frame_len,
        max_in_flight = next.max_in_flight,
        stall_timeout_secs = next.stall_timeout.as_secs(),
        log_level = next.log_level.as_deref().unwrap_or("(RUST_LOG or info)"),
        "configuration reloaded"
    );
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_that_overrides_the_file_is_named_as_a_key() {
        let args = Args::try_parse_from([
            "witnessd",
            "--socket=s",
            "--db=d",
            "--create=false",
            "--sync=normal",
            "--socket-mode=600",
            "--batch-max=7",
            "--batch-delay-us=5",
            "--queue=64",
            "--log-level=debug",
            "--log-format=json",
            "--metrics-listen=127.0.0.1:1",
            "--otlp-listen=127.0.0.1:2",
            "--web-listen=127.0.0.1:3",
        ])
        .unwrap();
        let settings = args.overrides();
        assert_eq!(settings.batch_max, Some(7));
        assert_eq!(settings.metrics_listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(settings.otlp_listen.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(settings.web_listen.as_deref(), Some("127.0.0.1:3"));
        assert_eq!(
            serde_json::to_value(&args.overrides)
                .unwrap()
                .as_object()
                .unwrap()
                .len(),
            13,
            "a flag was added here without a line above"
        );
        let config = Config::from_settings(&settings, || "x".into(), || "y".into()).unwrap();
        assert_eq!(
            config.to_settings().overridden_by(settings.clone()),
            config.to_settings()
        );
    }
}
