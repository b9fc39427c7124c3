//! The daemon's settings: the defaults, the TOML file that changes them, and the flags that
//! override the file.
//!
//! Both the file and the flags go through one [`Settings`] value and one check, so a bad
//! value gets the same message, naming the key, wherever it came from. Some settings take
//! effect on SIGHUP ([`Config::reloadable_differences`] tells which do not).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use witness_protocol::limits::MAX_FRAME_LEN;

use crate::store::writer::WriterConfig;

/// Where `witnessd` looks for its configuration when `--config` is not given; a missing
/// file there is not an error.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/witness/witnessd.toml";

/// Everything `server::Server` needs to know, after defaults, file and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the socket is bound (unused when the listener is inherited).
    pub socket_path: PathBuf,
    /// Permission bits of a socket the daemon binds itself.
    pub socket_mode: u32,
    /// Entries that may wait for the writer; a full queue slows producers.
    pub queue_capacity: usize,
    /// Largest frame body accepted, at most `limits::MAX_FRAME_LEN`.
    pub max_frame_len: u32,
    /// Requests one connection may have awaiting an answer before the daemon stops reading
    /// from it.
    pub max_in_flight: usize,
    /// Connections served at once; more are accepted and told `Busy` at once. Root and the
    /// daemon's own user may open `reserved_connections` more, so an operator can always look.
    pub max_connections: usize,
    /// After shutdown starts and the writer has drained, how long to wait for slow clients
    /// to take their last answers.
    pub shutdown_grace: Duration,
    /// Read-only connections for queries; at most this many queries run at once.
    pub read_connections: usize,
    /// How long a stream of entries (`tail -f`, `export`) waits for a client that does not
    /// read before it cuts the stream off and tells the client where to resume.
    pub stall_timeout: Duration,
    /// How long a new connection may take to say `Hello`.
    pub handshake_timeout: Duration,
    /// How long a frame may take to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// How long a connection with nothing in flight and no stream may stay silent.
    pub idle_timeout: Option<Duration>,
    /// Log filter, such as `info` or `witness_daemon=debug`; `None` leaves it to `RUST_LOG`.
    pub log_level: Option<String>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where to serve Prometheus metrics over HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Who may connect, write and read, and how much each user may send.
    pub access: Access,
    /// Whether a missing database may be created as a new, empty log. Off where a log must
    /// already exist (the system unit), so that a lost or moved file is never silently
    /// replaced by an empty chain.
    pub create: bool,
    /// Batching, durability, checkpoints and optimisation.
    pub writer: WriterConfig,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected text or json"
            )),
        }
    }
}

/// The limits a connection takes when it opens; a reload changes them for connections
/// opened after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`Config::max_frame_len`].
    pub max_frame_len: u32,
    /// See [`Config::max_in_flight`].
    pub max_in_flight: usize,
    /// See [`Config::stall_timeout`].
    pub stall_timeout: Duration,
    /// How long a new connection may take to say `Hello`.
    pub handshake_timeout: Duration,
    /// How long a frame may take to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// A connection with nothing in flight and no stream that sends nothing this long is
    /// closed; `None` never closes one.
    pub idle_timeout: Option<Duration>,
}

/// Who may use the daemon and how much: checked from the socket's peer credentials, never
/// from anything the client says. Root and the daemon's own user are always admitted (as
/// writers, readers and operators) and never rate-limited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Users admitted at all; with `allow_gids`, empty lists admit anyone who can open the
    /// socket (its mode decides).
    pub allow_uids: Vec<u32>,
    /// Groups admitted (primary or supplementary).
    pub allow_gids: Vec<u32>,
    /// Users who may read (tail, export, trace, traces, cost, verify); with `read_gids`,
    /// empty lists let every admitted user read.
    pub read_uids: Vec<u32>,
    /// Groups who may read.
    pub read_gids: Vec<u32>,
    /// Connections one user may hold open at once.
    pub max_connections_per_uid: usize,
    /// Connections beyond `max_connections` kept for root and the daemon's own user.
    pub reserved_connections: usize,
    /// Entries per second one user may append (a burst of one second's worth); 0: no limit.
    pub uid_entries_per_sec: u64,
    /// Request bytes per second one user may append; 0: no limit.
    pub uid_bytes_per_sec: u64,
}

impl Config {
    /// The defaults, for a socket and a database at the given paths.
    pub fn new(socket_path: PathBuf, db_path: PathBuf) -> Self {
        Config {
            socket_path,
            socket_mode: 0o660,
            // Two writer batches: one committing while the next fills. A deeper queue held
            // more memory (about 500 bytes an entry) and bought no throughput in witness-bench.
            queue_capacity: 8_192,
            max_frame_len: MAX_FRAME_LEN,
            max_in_flight: 1024,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
            read_connections: 4,
            stall_timeout: Duration::from_secs(300),
            log_level: None,
            log_format: LogFormat::Text,
            metrics_listen: None,
            access: Access {
                max_connections_per_uid: 256,
                reserved_connections: 8,
                ..Access::default()
            },
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            create: true,
            writer: WriterConfig::new(db_path),
        }
    }

    /// The limits new connections take.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_len: self.max_frame_len,
            max_in_flight: self.max_in_flight,
            stall_timeout: self.stall_timeout,
            handshake_timeout: self.handshake_timeout,
            frame_timeout: self.frame_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// The defaults changed by `settings`, each value checked; the error names the key.
    pub fn from_settings(
        settings: &Settings,
        default_socket: impl FnOnce() -> PathBuf,
        default_db: impl FnOnce() -> PathBuf,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::new(
            settings.socket.clone().unwrap_or_else(default_socket),
            settings.db.clone().unwrap_or_else(default_db),
        );
        if let Some(create) = settings.create {
            config.create = create;
        }
        if let Some(sync) = &settings.sync {
            config.writer.durability = sync.parse().map_err(|e| ConfigError::key("sync", e))?;
        }
        if let Some(mode) = &settings.socket_mode {
            config.socket_mode =
                parse_mode(mode).map_err(|e| ConfigError::key("socket_mode", e))?;
        }
        if let Some(queue) = settings.queue {
            config.queue_capacity = in_range("queue", queue, 16, 16_777_216)? as usize;
        }
        if let Some(batch_max) = settings.batch_max {
            config.writer.max_batch_entries =
                in_range("batch_max", batch_max, 1, 1_000_000)? as usize;
        }
        if let Some(delay) = settings.batch_delay_us {
            config.writer.max_batch_delay =
                Duration::from_micros(in_range("batch_delay_us", delay, 0, 1_000_000)?);
        }
        if let Some(len) = settings.max_frame_len {
            config.max_frame_len =
                in_range("max_frame_len", len, 1024, MAX_FRAME_LEN.into())? as u32;
        }
        if let Some(n) = settings.max_in_flight {
            config.max_in_flight = in_range("max_in_flight", n, 1, 65_536)? as usize;
        }
        if let Some(n) = settings.max_connections {
            config.max_connections = in_range("max_connections", n, 1, 65_536)? as usize;
        }
        if let Some(n) = settings.read_connections {
            config.read_connections = in_range("read_connections", n, 1, 64)? as usize;
        }
        if let Some(secs) = settings.stall_timeout_secs {
            config.stall_timeout =
                Duration::from_secs(in_range("stall_timeout_secs", secs, 1, 86_400)?);
        }
        if let Some(secs) = settings.handshake_timeout_secs {
            config.handshake_timeout =
                Duration::from_secs(in_range("handshake_timeout_secs", secs, 1, 3600)?);
        }
        if let Some(secs) = settings.frame_timeout_secs {
            config.frame_timeout =
                Duration::from_secs(in_range("frame_timeout_secs", secs, 1, 3600)?);
        }
        if let Some(secs) = settings.idle_timeout_secs {
            let secs = in_range("idle_timeout_secs", secs, 0, 7 * 86_400)?;
            config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
        }
        let access = &mut config.access;
        if let Some(n) = settings.max_connections_per_uid {
            access.max_connections_per_uid =
                in_range("max_connections_per_uid", n, 1, 65_536)? as usize;
        }
        if let Some(n) = settings.reserved_connections {
            access.reserved_connections = in_range("reserved_connections", n, 0, 1024)? as usize;
        }
        for (key, given, list) in [
            ("allow_uids", &settings.allow_uids, &mut access.allow_uids),
            ("allow_gids", &settings.allow_gids, &mut access.allow_gids),
            ("read_uids", &settings.read_uids, &mut access.read_uids),
            ("read_gids", &settings.read_gids, &mut access.read_gids),
        ] {
            if let Some(ids) = given {
                *list = ids
                    .iter()
                    .map(|&id| in_range(key, id, 0, u64::from(u32::MAX)).map(|id| id as u32))
                    .collect::<Result<_, _>>()?;
            }
        }
        if let Some(rate) = settings.uid_entries_per_sec {
            access.uid_entries_per_sec = in_range("uid_entries_per_sec", rate, 0, 1 << 40)?;
        }
        if let Some(rate) = settings.uid_bytes_per_sec {
            access.uid_bytes_per_sec = in_range("uid_bytes_per_sec", rate, 0, 1 << 50)?;
        }
        if let Some(pages) = settings.checkpoint_pages {
            config.writer.checkpoint_pages =
                in_range("checkpoint_pages", pages, 16, 1 << 20)? as u32;
        }
        if let Some(secs) = settings.optimize_interval_secs {
            let secs = in_range("optimize_interval_secs", secs, 0, 7 * 86_400)?;
            config.writer.optimize_interval = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(level) = &settings.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| ConfigError::key("log_level", format!("{level:?}: {e}")))?;
            config.log_level = Some(level.clone());
        }
        if let Some(format) = &settings.log_format {
            config.log_format = format
                .parse()
                .map_err(|e| ConfigError::key("log_format", e))?;
        }
        if let Some(listen) = &settings.metrics_listen {
            config.metrics_listen = Some(listen.parse().map_err(|e| {
                ConfigError::key(
                    "metrics_listen",
                    format!("{listen:?} is not an address such as 127.0.0.1:9464: {e}"),
                )
            })?);
        }
        Ok(config)
    }

    /// The effective configuration as settings, every key present: what
    /// `witnessd --print-config` prints, and a file that reproduces it.
    pub fn to_settings(&self) -> Settings {
        Settings {
            socket: Some(self.socket_path.clone()),
            db: Some(self.writer.db_path.clone()),
            create: Some(self.create),
            sync: Some(self.writer.durability.to_string()),
            socket_mode: Some(format!("{:o}", self.socket_mode)),
            queue: Some(self.queue_capacity as u64),
            batch_max: Some(self.writer.max_batch_entries as u64),
            batch_delay_us: Some(self.writer.max_batch_delay.as_micros() as u64),
            max_frame_len: Some(self.max_frame_len.into()),
            max_in_flight: Some(self.max_in_flight as u64),
            max_connections: Some(self.max_connections as u64),
            read_connections: Some(self.read_connections as u64),
            stall_timeout_secs: Some(self.stall_timeout.as_secs()),
            handshake_timeout_secs: Some(self.handshake_timeout.as_secs()),
            frame_timeout_secs: Some(self.frame_timeout.as_secs()),
            idle_timeout_secs: Some(self.idle_timeout.map_or(0, |d| d.as_secs())),
            max_connections_per_uid: Some(self.access.max_connections_per_uid as u64),
            reserved_connections: Some(self.access.reserved_connections as u64),
            allow_uids: Some(ids(&self.access.allow_uids)),
            allow_gids: Some(ids(&self.access.allow_gids)),
            read_uids: Some(ids(&self.access.read_uids)),
            read_gids: Some(ids(&self.access.read_gids)),
            uid_entries_per_sec: Some(self.access.uid_entries_per_sec),
            uid_bytes_per_sec: Some(self.access.uid_bytes_per_sec),
            checkpoint_pages: Some(self.writer.checkpoint_pages.into()),
            optimize_interval_secs: Some(self.writer.optimize_interval.map_or(0, |d| d.as_secs())),
            log_level: self.log_level.clone(),
            log_format: Some(format!("{:?}", self.log_format).to_lowercase()),
            metrics_listen: self.metrics_listen.map(|addr| addr.to_string()),
        }
    }

    /// This configuration with the reloadable settings of `new`: what runs after a reload.
    pub fn with_reloaded(&self, new: &Config) -> Config {
        let mut running = self.clone();
        running.max_frame_len = new.max_frame_len;
        running.max_in_flight = new.max_in_flight;
        running.stall_timeout = new.stall_timeout;
        running.handshake_timeout = new.handshake_timeout;
        running.frame_timeout = new.frame_timeout;
        running.idle_timeout = new.idle_timeout;
        running.access = new.access.clone();
        running.log_level = new.log_level.clone();
        running.writer.max_batch_entries = new.writer.max_batch_entries;
        running.writer.max_batch_delay = new.writer.max_batch_delay;
        running
    }

    /// Keys whose new value differs from this one but only takes effect on a restart: the
    /// socket, the database, durability, sizes of what is allocated at start, and where
    /// metrics are served.
    pub fn reloadable_differences(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key, differs: bool| {
            if differs {
                keys.push(key);
            }
        };
        check("socket", self.socket_path != new.socket_path);
        check("db", self.writer.db_path != new.writer.db_path);
        check("create", self.create != new.create);
        check("sync", self.writer.durability != new.writer.durability);
        check("socket_mode", self.socket_mode != new.socket_mode);
        check("queue", self.queue_capacity != new.queue_capacity);
        check(
            "max_connections",
            self.max_connections != new.max_connections,
        );
        check(
            "read_connections",
            self.read_connections != new.read_connections,
        );
        check("log_format", self.log_format != new.log_format);
        check("metrics_listen", self.metrics_listen != new.metrics_listen);
        check(
            "checkpoint_pages",
            self.writer.checkpoint_pages != new.writer.checkpoint_pages,
        );
        check(
            "optimize_interval_secs",
            self.writer.optimize_interval != new.writer.optimize_interval,
        );
        keys
    }
}

/// The settings of a configuration file, or of the flags that override it; a key left out
/// keeps its default. Unknown keys are an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Socket path.
    pub socket: Option<PathBuf>,
    /// Database path.
    pub db: Option<PathBuf>,
    /// Whether a missing database may be created as a new log.
    pub create: Option<bool>,
    /// `full` or `normal`.
    pub sync: Option<String>,
    /// Socket permission bits in octal, as a string such as `"660"`.
    pub socket_mode: Option<String>,
    /// Queue capacity in entries.
    pub queue: Option<u64>,
    /// Most entries in one transaction.
    pub batch_max: Option<u64>,
    /// Microseconds to wait for more entries once a batch has started.
    pub batch_delay_us: Option<u64>,
    /// Largest frame body accepted.
    pub max_frame_len: Option<u64>,
    /// Requests one connection may have awaiting an answer.
    pub max_in_flight: Option<u64>,
    /// Connections served at once.
    pub max_connections: Option<u64>,
    /// Read-only connections for queries.
    pub read_connections: Option<u64>,
    /// Seconds a stream waits for a client that does not read.
    pub stall_timeout_secs: Option<u64>,
    /// Seconds a new connection may take to say `Hello`.
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds a begun frame may take to arrive whole.
    pub frame_timeout_secs: Option<u64>,
    /// Seconds an idle connection may stay silent; 0 never closes one.
    pub idle_timeout_secs: Option<u64>,
    /// Connections one user may hold open.
    pub max_connections_per_uid: Option<u64>,
    /// Connections beyond the limit kept for root and the daemon's user.
    pub reserved_connections: Option<u64>,
    /// Users admitted; empty with `allow_gids` admits anyone the socket's mode lets in.
    pub allow_uids: Option<Vec<u64>>,
    /// Groups admitted.
    pub allow_gids: Option<Vec<u64>>,
    /// Users who may read; empty with `read_gids` lets every admitted user read.
    pub read_uids: Option<Vec<u64>>,
    /// Groups who may read.
    pub read_gids: Option<Vec<u64>>,
    /// Entries per second one user may append; 0 for no limit.
    pub uid_entries_per_sec: Option<u64>,
    /// Request bytes per second one user may append; 0 for no limit.
    pub uid_bytes_per_sec: Option<u64>,
    /// WAL pages after which the writer checkpoints between batches.
    pub checkpoint_pages: Option<u64>,
    /// Seconds between `PRAGMA optimize` runs; 0 turns them off.
    pub optimize_interval_secs: Option<u64>,
    /// Log filter.
    pub log_level: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Address for the Prometheus endpoint.
    pub metrics_listen: Option<String>,
}

impl Settings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Settings::from_toml(&text).map_err(|message| ConfigError::File {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; the error names the line and the key.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// `self`, with every key that `overrides` sets taken from it.
    pub fn overridden_by(self, overrides: Settings) -> Settings {
        Settings {
            socket: overrides.socket.or(self.socket),
            db: overrides.db.or(self.db),
            create: overrides.create.or(self.create),
            sync: overrides.sync.or(self.sync),
            socket_mode: overrides.socket_mode.or(self.socket_mode),
            queue: overrides.queue.or(self.queue),
            batch_max: overrides.batch_max.or(self.batch_max),
            batch_delay_us: overrides.batch_delay_us.or(self.batch_delay_us),
            max_frame_len: overrides.max_frame_len.or(self.max_frame_len),
            max_in_flight: overrides.max_in_flight.or(self.max_in_flight),
            max_connections: overrides.max_connections.or(self.max_connections),
            read_connections: overrides.read_connections.or(self.read_connections),
            stall_timeout_secs: overrides.stall_timeout_secs.or(self.stall_timeout_secs),
            handshake_timeout_secs: overrides
                .handshake_timeout_secs
                .or(self.handshake_timeout_secs),
            frame_timeout_secs: overrides.frame_timeout_secs.or(self.frame_timeout_secs),
            idle_timeout_secs: overrides.idle_timeout_secs.or(self.idle_timeout_secs),
            max_connections_per_uid: overrides
                .max_connections_per_uid
                .or(self.max_connections_per_uid),
            reserved_connections: overrides.reserved_connections.or(self.reserved_connections),
            allow_uids: overrides.allow_uids.or(self.allow_uids),
            allow_gids: overrides.allow_gids.or(self.allow_gids),
            read_uids: overrides.read_uids.or(self.read_uids),
            read_gids: overrides.read_gids.or(self.read_gids),
            uid_entries_per_sec: overrides.uid_entries_per_sec.or(self.uid_entries_per_sec),
            uid_bytes_per_sec: overrides.uid_bytes_per_sec.or(self.uid_bytes_per_sec),
            checkpoint_pages: overrides.checkpoint_pages.or(self.checkpoint_pages),
            optimize_interval_secs: overrides
                .optimize_interval_secs
                .or(self.optimize_interval_secs),
            log_level: overrides.log_level.or(self.log_level),
            log_format: overrides.log_format.or(self.log_format),
            metrics_listen: overrides.metrics_listen.or(self.metrics_listen),
        }
    }

    /// TOML text of these settings.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("settings are plain values")
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What was wrong, with the line and key.
        message: String,
    },
    /// A key has a value out of range or of the wrong form.
    #[error("bad value for `{key}`: {message}")]
    Key {
        /// The key, as written in the file.
        key: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl ConfigError {
    fn key(key: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key,
            message: message.into(),
        }
    }
}

fn ids(list: &[u32]) -> Vec<u64> {
    list.iter().map(|&id| u64::from(id)).collect()
}

fn in_range(key: &'static str, value: u64, low: u64, high: u64) -> Result<u64, ConfigError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::key(
            key,
            format!("{value} is not between {low} and {high}"),
        ))
    }
}

/// Parses permission bits written in octal, such as `660`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal permission such as 660"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Config, String> {
        let settings = Settings::from_toml(text)?;
        Config::from_settings(&settings, || "s".into(), || "d".into()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_round_trips_through_print_config() {
        let config = build(
            "batch_max = 100\nbatch_delay_us = 50\nsocket_mode = \"600\"\nlog_level = \"debug\"\n\
             log_format = \"json\"\nmetrics_listen = \"127.0.0.1:9464\"\noptimize_interval_secs = 0",
        )
        .unwrap();
        let printed = config.to_settings().to_toml();
        assert_eq!(build(&printed).unwrap(), config);
        assert_eq!(config.socket_mode, 0o600);
        assert_eq!(config.writer.optimize_interval, None);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let unknown = build("batch_maximum = 3").unwrap_err();
        assert!(unknown.contains("batch_maximum"), "{unknown}");
        let range = build("batch_max = 0").unwrap_err();
        assert!(
            range.contains("`batch_max`") && range.contains("between 1"),
            "{range}"
        );
        let kind = build("queue = \"big\"").unwrap_err();
        assert!(kind.contains("queue"), "{kind}");
        let mode = build("socket_mode = \"999\"").unwrap_err();
        assert!(mode.contains("`socket_mode`"), "{mode}");
        let level = build("log_level = \"witness=[\"").unwrap_err();
        assert!(level.contains("`log_level`"), "{level}");
        let garbage = build("\u{0}\u{1}[[[ =").unwrap_err();
        assert!(garbage.contains("line 1"), "{garbage}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = Settings::from_toml("batch_max = 100\nqueue = 64").unwrap();
        let flags = Settings {
            batch_max: Some(7),
            ..Settings::default()
        };
        let merged = file.overridden_by(flags);
        assert_eq!((merged.batch_max, merged.queue), (Some(7), Some(64)));
    }
}
