//! The daemon's settings: the defaults, the TOML file that changes them, and the flags that
//! override the file.
//!
//! Both the file and the flags go through one [`Settings`] value and one check, so a bad
//! value gets the same message, naming the key, wherever it came from. Some settings take
//! effect on SIGHUP ([`Config::restart_only_differences`] tells which do not). Every key is
//! declared once, in `keys.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::ForwardConfig;
use crate::store::checkpoint::CheckpointConfig;
use crate::store::retain::RetainConfig;
use crate::store::writer::WriterConfig;

mod budgets;
mod keys;

pub use budgets::{Budget, BudgetSettings, DEFAULT_WARN_AT, Period, check_budgets};

pub use keys::{ForwardSettings, KEYS, Key, Reload, RetainSettings, Settings};

/// Where `witnessd` looks for its configuration when `--config` is not given; a missing
/// file there is not an error.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/witness/witnessd.toml";

/// Everything `server::Server` needs to know, after defaults, file and flags. Its
/// `Default` is only a blank to fill: [`Config::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// The OTLP/HTTP receiver (`docs/OTLP.md`).
    pub otlp: OtlpConfig,
    /// Where to serve the dashboard (`docs/DASHBOARD.md`), if anywhere.
    pub web_listen: Option<SocketAddr>,
    /// Who may connect, write and read, and how much each user may send.
    pub access: Access,
    /// Whether a missing database may be created as a new, empty log. Off where a log must
    /// already exist (the system unit), so that a lost or moved file is never silently
    /// replaced by an empty chain.
    pub create: bool,
    /// Batching, durability, WAL checkpoints and optimisation.
    pub writer: WriterConfig,
    /// The signing key, the signed checkpoints and where they are kept.
    pub checkpoints: CheckpointConfig,
    /// Start even if the database lost what the last checkpoint signed, recording the loss
    /// in the log (`witnessd --accept-loss`). No configuration key sets it: it is one
    /// operator's decision about one start.
    pub accept_loss: bool,
    /// Where and how to forward the log to the fleet's PostgreSQL, if anywhere.
    pub forward: Option<ForwardConfig>,
    /// What the live log keeps, and where pruned entries go.
    pub retain: RetainConfig,
    /// The price table and the configuration's own prices.
    pub prices: crate::prices::PricesConfig,
    /// The `[[budget]]` tables, as written (checked when read).
    pub budgets: Vec<BudgetSettings>,
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

/// The OTLP/HTTP receiver's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtlpConfig {
    /// Where to serve it; none: not at all.
    pub listen: Option<SocketAddr>,
    /// The bearer tokens' file; none: only loopback peers are served.
    pub tokens_file: Option<PathBuf>,
    /// The largest request body, counted after decompression.
    pub max_body: usize,
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
    /// The defaults, for a socket and a database at the given paths: those of the key table
    /// (`Settings::defaults`), and a stop's grace period, which no key sets.
    pub fn new(socket_path: PathBuf, db_path: PathBuf) -> Self {
        let mut config = Config {
            socket_path,
            shutdown_grace: Duration::from_secs(5),
            checkpoints: CheckpointConfig::for_database(&db_path),
            writer: WriterConfig::new(db_path),
            ..Config::default()
        };
        Settings::defaults()
            .apply_to(&mut config)
            .expect("the default of every key checks out");
        config
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
    /// The socket and database default to `default_socket` and `default_db`, asked only
    /// when the settings name none.
    pub fn from_settings(
        settings: &Settings,
        default_socket: impl FnOnce() -> PathBuf,
        default_db: impl FnOnce() -> PathBuf,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::new(
            settings.socket.clone().unwrap_or_else(default_socket),
            settings.db.clone().unwrap_or_else(default_db),
        );
        settings.apply_to(&mut config)?;
        Ok(config)
    }
}

/// A TOML error as a person can act on it: serde's "unknown field `max_byte`, expected one of"
/// and forty keys becomes "unknown key `max_byte`; did you mean `max_bytes`?", or names the
/// table a key belongs in when it was written outside it. Other errors are left as they are.
fn explain_unknown_key(message: &str) -> String {
    let Some(at) = message.find("unknown field `") else {
        return message.to_owned();
    };
    let (before, said) = message.split_at(at);
    let Some((key, expected)) = said["unknown field `".len()..].split_once('`') else {
        return message.to_owned();
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let near = |candidates: &[&str]| -> Option<String> {
        candidates
            .iter()
            .map(|candidate| (strsim::damerau_levenshtein(key, candidate), *candidate))
            .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
            .min()
            .map(|(_, candidate)| candidate.to_owned())
    };
    let hint = if let Some(close) = near(&known) {
        format!("did you mean `{close}`?")
    } else if let Some(table) = TABLES
        .iter()
        .find(|(_, fields)| fields().iter().any(|field| field == key))
        .map(|(table, _)| table)
    {
        format!("`{key}` belongs in the {table} table")
    } else {
        "`witnessd --print-config` lists every key with its default".to_owned()
    };
    format!("{before}unknown key `{key}`; {hint}")
}

/// The configuration's tables and their keys, for [`explain_unknown_key`].
type Fields = fn() -> Vec<String>;
const TABLES: &[(&str, Fields)] = &[
    ("[retain]", fields::<keys::RetainSettings>),
    ("[forward]", fields::<keys::ForwardSettings>),
    ("[[price]]", fields::<crate::prices::PriceSettings>),
    ("[[budget]]", fields::<BudgetSettings>),
];

/// The keys a table of type `T` takes, as its own refusal of a key it does not know lists
/// them: the one list there is, kept by serde.
fn fields<T: serde::de::DeserializeOwned>() -> Vec<String> {
    match toml::from_str::<T>("not_a_key_of_any_table = 0") {
        Ok(_) => Vec::new(),
        Err(error) => error
            .to_string()
            .split_once("expected")
            .map(|(_, list)| {
                list.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Settings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Settings::from_toml(&text).map_err(|error| ConfigError::File {
            path: path.display().to_string(),
            message: explain_unknown_key(error.to_string().trim_end()),
        })
    }

    /// Parses TOML text; the error names the line and the key.
    pub fn from_toml(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
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
    fn key(key: &'static str, bad: BadValue) -> Self {
        ConfigError::Key {
            key,
            message: bad.to_string(),
        }
    }
}

/// Why a value cannot be used for its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    /// A `[[price]]` that cannot price anything, with the place in it named.
    #[error("{0}")]
    Price(#[from] crate::prices::BadPrice),
    /// A number out of its range.
    #[error("{value} is not between {low} and {high}")]
    Range {
        /// The value given.
        value: u64,
        /// The least allowed.
        low: u64,
        /// The most allowed.
        high: u64,
    },
    /// A text not of the form the key takes.
    #[error("{text:?} is not {form}")]
    Form {
        /// The text given.
        text: String,
        /// The form, with examples.
        form: &'static str,
    },
    /// A text of the right form that says something the key cannot take.
    #[error("{text:?}: {reason}")]
    Meaning {
        /// The text given.
        text: String,
        /// Why it cannot be taken.
        reason: String,
    },
    /// A number that breaks a rule of its key beyond a range.
    #[error("{key} {value} is {rule}")]
    Rule {
        /// The key within its table.
        key: &'static str,
        /// The value given.
        value: u64,
        /// The rule, as a sentence's end.
        rule: &'static str,
    },
    /// A key of a table is missing.
    #[error("the {table} table needs {key}, {what}")]
    Missing {
        /// The table.
        table: &'static str,
        /// The key it needs.
        key: &'static str,
        /// What that key is.
        what: &'static str,
    },
    /// A key within a table is bad.
    #[error("{key}: {bad}")]
    Within {
        /// The key within its table.
        key: &'static str,
        /// What is wrong with it.
        bad: Box<BadValue>,
    },
    /// The connection string of the forward table cannot be used.
    #[error(transparent)]
    Target(#[from] crate::fleet::FleetError),
    /// The host id of the forward table cannot be used.
    #[error(transparent)]
    HostId(#[from] crate::fleet::BadHostId),
}

/// Parses permission bits written in octal, such as `660`.
pub fn parse_mode(text: &str) -> Result<u32, BadValue> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| BadValue::Form {
            text: text.to_owned(),
            form: "an octal permission such as 660",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Config, String> {
        let settings = Settings::from_toml(text).map_err(|e| e.to_string())?;
        Config::from_settings(&settings, || "s".into(), || "d".into()).map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_take_a_decimal_number_of_units() {
        for (text, bytes) in [
            ("1.5GiB", 1_610_612_736),
            ("1.5 MiB", 1_572_864),
            (".25G", 268_435_456),
            ("2GB", 2_000_000_000),
            ("1.0000001G", 1_073_741_931),
        ] {
            let config = build(&format!("[retain]\nmax_bytes = \"{text}\"")).unwrap();
            assert_eq!(config.retain.max_bytes, Some(bytes), "{text}");
        }
        for text in ["1.5.5GiB", ".GiB", "1,5GiB", "99999999999TiB"] {
            assert!(
                build(&format!("[retain]\nmax_bytes = \"{text}\"")).is_err(),
                "{text}"
            );
        }
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
        let origin = build("origin = \"two words\"").unwrap_err();
        assert!(origin.contains("`origin`"), "{origin}");
        let reserve = build("min_free_bytes = -1").unwrap_err();
        assert!(reserve.contains("min_free_bytes"), "{reserve}");
        let interval = build("checkpoint_interval_ms = 0").unwrap_err();
        assert!(interval.contains("`checkpoint_interval_ms`"), "{interval}");
        let garbage = build("\u{0}\u{1}[[[ =").unwrap_err();
        assert!(garbage.contains("line 1"), "{garbage}");
    }

    #[test]
    fn the_writers_own_defaults_are_those_of_the_key_table() {
        let config = Config::new("s".into(), "d".into());
        assert_eq!(config.writer, WriterConfig::new("d".into()));
        let mut printed = config.to_settings();
        (printed.socket, printed.db) = (None, None);
        (printed.key_file, printed.checkpoint_file, printed.origin) = (None, None, None);
        assert_eq!(printed, Settings::defaults());
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
