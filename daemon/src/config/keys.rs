//! Every configuration key, declared once: its name, its type in the file, its default, its
//! doc, whether a reload applies it, the field of [`Config`] it sets, and how a value is
//! checked and printed. The file's `Settings`, the merging of flags over the file, the configuration
//! built from them, `--print-config` and the reload rules all follow from this table, so a
//! key cannot be added to one of them and forgotten in another.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use witness_protocol::limits::MAX_FRAME_LEN;

use super::{BadValue, Config, ConfigError, LogFormat, parse_mode};
use crate::fleet::{DEFAULT_BATCH, ForwardConfig, Target, check_host_id, redact};
use crate::format::schema::Durability;
use crate::store::retain::RetainConfig;

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// On SIGHUP, without dropping a connection or an entry.
    Live,
    /// Only on a restart: a reload logs that it needs one and keeps the running value.
    Restart,
}

/// What the table says of a key, for documentation and tests.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written in the file.
    pub name: &'static str,
    /// When a changed value takes effect.
    pub reload: Reload,
    /// What it is for.
    pub doc: &'static str,
}

macro_rules! keys {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident: $ty:ty = $default:expr => $($field:ident).+, $reload:ident,
            read $read:expr, show $show:expr;
    )*) => {
        /// The settings of a configuration file, or of the flags that override it; a key left
        /// out keeps its default. Unknown keys are an error.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                pub $key: Option<$ty>,
            )*
        }

        /// Every key, in the order `--print-config` writes them.
        pub const KEYS: &[Key] = &[$(
            Key {
                name: stringify!($key),
                reload: Reload::$reload,
                doc: concat!($($doc, "\n"),+).trim_ascii(),
            },
        )*];

        impl Settings {
            /// The default of every key that has one; the socket and the database have
            /// none here, because theirs depend on who runs the daemon.
            pub fn defaults() -> Settings {
                Settings {
                    $($key: $default,)*
                }
            }

            /// `self`, with every key that `overrides` sets taken from it.
            pub fn overridden_by(self, overrides: Settings) -> Settings {
                Settings {
                    $($key: overrides.$key.or(self.$key),)*
                }
            }

            /// Sets the fields of `config` that these settings give, each value checked; the
            /// error names the key.
            pub(super) fn apply_to(&self, config: &mut Config) -> Result<(), ConfigError> {
                $(
                    if let Some(value) = &self.$key {
                        let read: fn(&$ty) -> Result<_, BadValue> = $read;
                        config.$($field).+ =
                            read(value).map_err(|message| ConfigError::key(stringify!($key), message))?;
                    }
                )*
                Ok(())
            }
        }

        impl Config {
            /// The effective configuration as settings, every key that has a value present:
            /// what `witnessd --print-config` prints, and a file that reproduces it.
            pub fn to_settings(&self) -> Settings {
                Settings {
                    $($key: {
                        let show: fn(&_) -> Option<$ty> = $show;
                        show(&self.$($field).+)
                    },)*
                }
            }

            /// This configuration with the reloadable settings of `new`: what runs after a
            /// reload.
            pub fn with_reloaded(&self, new: &Config) -> Config {
                let mut running = self.clone();
                $(
                    if Reload::$reload == Reload::Live {
                        running.$($field).+ = new.$($field).+.clone();
                    }
                )*
                running
            }

            /// Keys whose value in `new` differs from this one but takes effect only on a
            /// restart.
            pub fn restart_only_differences(&self, new: &Config) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(
                    if Reload::$reload == Reload::Restart && self.$($field).+ != new.$($field).+ {
                        keys.push(stringify!($key));
                    }
                )*
                keys
            }
        }
    };
}

keys! {
    /// Socket path.
    socket: PathBuf = None => socket_path, Restart,
        read |path| Ok(path.clone()), show |path: &PathBuf| Some(path.clone());
    /// Database path.
    db: PathBuf = None => writer.db_path, Restart,
        read |path| Ok(path.clone()), show |path: &PathBuf| Some(path.clone());
    /// Whether a missing database may be created as a new log.
    create: bool = Some(true) => create, Restart,
        read |create| Ok(*create), show |create: &bool| Some(*create);
    /// `full` or `normal`.
    sync: String = Some("full".into()) => writer.durability, Restart,
        read |text| text.parse::<Durability>().map_err(|reason| meaning(text, reason)), show |durability: &Durability| Some(durability.to_string());
    /// Socket permission bits in octal, as a string such as `"660"`.
    socket_mode: String = Some("660".into()) => socket_mode, Restart,
        read |text| parse_mode(text), show |mode: &u32| Some(format!("{mode:o}"));
    /// Queue capacity in entries. Two writer batches: one committing while the next fills; a
    /// deeper queue held more memory (about 500 bytes an entry) and bought no throughput.
    queue: u64 = Some(8_192) => queue_capacity, Restart,
        read |n| count(*n, 16, 16_777_216), show |n: &usize| Some(*n as u64);
    /// Most entries in one transaction.
    batch_max: u64 = Some(4096) => writer.max_batch_entries, Live,
        read |n| count(*n, 1, 1_000_000), show |n: &usize| Some(*n as u64);
    /// Microseconds to wait for more entries once a batch has started.
    batch_delay_us: u64 = Some(0) => writer.max_batch_delay, Live,
        read |us| in_range(*us, 0, 1_000_000).map(Duration::from_micros),
        show |delay: &Duration| Some(delay.as_micros() as u64);
    /// Largest frame body accepted.
    max_frame_len: u64 = Some(MAX_FRAME_LEN as u64) => max_frame_len, Live,
        read |n| in_range(*n, 1024, MAX_FRAME_LEN.into()).map(|n| n as u32),
        show |n: &u32| Some(u64::from(*n));
    /// Requests one connection may have awaiting an answer.
    max_in_flight: u64 = Some(1024) => max_in_flight, Live,
        read |n| count(*n, 1, 65_536), show |n: &usize| Some(*n as u64);
    /// Connections served at once.
    max_connections: u64 = Some(1024) => max_connections, Restart,
        read |n| count(*n, 1, 65_536), show |n: &usize| Some(*n as u64);
    /// Read-only connections for queries.
    read_connections: u64 = Some(4) => read_connections, Restart,
        read |n| count(*n, 1, 64), show |n: &usize| Some(*n as u64);
    /// Seconds a stream waits for a client that does not read.
    stall_timeout_secs: u64 = Some(300) => stall_timeout, Live,
        read |secs| seconds(*secs, 1, 86_400), show |time: &Duration| Some(time.as_secs());
    /// Seconds a new connection may take to say `Hello`.
    handshake_timeout_secs: u64 = Some(10) => handshake_timeout, Live,
        read |secs| seconds(*secs, 1, 3600), show |time: &Duration| Some(time.as_secs());
    /// Seconds a begun frame may take to arrive whole.
    frame_timeout_secs: u64 = Some(30) => frame_timeout, Live,
        read |secs| seconds(*secs, 1, 3600), show |time: &Duration| Some(time.as_secs());
    /// Seconds an idle connection may stay silent; 0 never closes one.
    idle_timeout_secs: u64 = Some(600) => idle_timeout, Live,
        read |secs| seconds_or_never(*secs, 7 * 86_400),
        show |time: &Option<Duration>| Some(time.map_or(0, |time| time.as_secs()));
    /// Connections one user may hold open.
    max_connections_per_uid: u64 = Some(256) => access.max_connections_per_uid, Live,
        read |n| count(*n, 1, 65_536), show |n: &usize| Some(*n as u64);
    /// Connections beyond the limit kept for root and the daemon's user.
    reserved_connections: u64 = Some(8) => access.reserved_connections, Live,
        read |n| count(*n, 0, 1024), show |n: &usize| Some(*n as u64);
    /// Users admitted; empty with `allow_gids` admits anyone the socket's mode lets in.
    allow_uids: Vec<u64> = Some(Vec::new()) => access.allow_uids, Live,
        read |list| ids(list), show |list: &Vec<u32>| Some(list.iter().map(|&id| u64::from(id)).collect());
    /// Groups admitted.
    allow_gids: Vec<u64> = Some(Vec::new()) => access.allow_gids, Live,
        read |list| ids(list), show |list: &Vec<u32>| Some(list.iter().map(|&id| u64::from(id)).collect());
    /// Users who may read; empty with `read_gids` lets every admitted user read.
    read_uids: Vec<u64> = Some(Vec::new()) => access.read_uids, Live,
        read |list| ids(list), show |list: &Vec<u32>| Some(list.iter().map(|&id| u64::from(id)).collect());
    /// Groups who may read.
    read_gids: Vec<u64> = Some(Vec::new()) => access.read_gids, Live,
        read |list| ids(list), show |list: &Vec<u32>| Some(list.iter().map(|&id| u64::from(id)).collect());
    /// Entries per second one user may append; 0 for no limit.
    uid_entries_per_sec: u64 = Some(0) => access.uid_entries_per_sec, Live,
        read |rate| in_range(*rate, 0, 1 << 40), show |rate: &u64| Some(*rate);
    /// Request bytes per second one user may append; 0 for no limit.
    uid_bytes_per_sec: u64 = Some(0) => access.uid_bytes_per_sec, Live,
        read |rate| in_range(*rate, 0, 1 << 50), show |rate: &u64| Some(*rate);
    /// WAL pages after which the writer checkpoints between batches.
    checkpoint_pages: u64 = Some(4096) => writer.checkpoint_pages, Restart,
        read |pages| in_range(*pages, 16, 1 << 20).map(|pages| pages as u32),
        show |pages: &u32| Some(u64::from(*pages));
    /// Bytes to leave free on the database's file system: below them new entries are refused
    /// (and said to be, in `stats` and the metrics) until space returns; 0 writes until the
    /// disk is full. Checked before every batch, so keep it above the largest batch.
    min_free_bytes: u64 = Some(64 << 20) => writer.min_free_bytes, Restart,
        read |bytes| in_range(*bytes, 0, 1 << 50), show |bytes: &u64| Some(*bytes);
    /// Seconds between `PRAGMA optimize` runs; 0 turns them off.
    optimize_interval_secs: u64 = Some(3600) => writer.optimize_interval, Restart,
        read |secs| seconds_or_never(*secs, 7 * 86_400),
        show |time: &Option<Duration>| Some(time.map_or(0, |time| time.as_secs()));
    /// Log filter, such as `info` or `witness_daemon=debug`; unset: `RUST_LOG`, else `info`.
    log_level: String = None => log_level, Live,
        read |level| log_filter(level), show |level: &Option<String>| level.clone();
    /// `text` or `json`.
    log_format: String = Some("text".into()) => log_format, Restart,
        read |format| format.parse::<LogFormat>().map_err(|reason| meaning(format, reason)),
        show |format: &LogFormat| Some(format!("{format:?}").to_lowercase());
    /// The log's signing key (Ed25519, made at first start, readable by the daemon's user
    /// only; its verifier key is written beside it with `.pub` added); unset: beside the
    /// database, with the extension `.key`.
    key_file: PathBuf = None => checkpoints.key_file, Restart,
        read |path| Ok(path.clone()), show |path: &PathBuf| Some(path.clone());
    /// The latest signed checkpoint, kept outside the database; unset: beside the database,
    /// with the extension `.checkpoint`. The acknowledged mark goes beside it, with the
    /// extension `.acked`.
    checkpoint_file: PathBuf = None => checkpoints.state_file, Restart,
        read |path| Ok(path.clone()), show |path: &PathBuf| Some(path.clone());
    /// The log's origin line in its checkpoints, and its key's name; unset: the host name
    /// followed by `/witness`.
    origin: String = None => checkpoints.origin, Restart,
        read |origin| origin_line(origin), show |origin: &String| Some(origin.clone());
    /// Milliseconds between signed checkpoints while entries arrive (and one at stop).
    checkpoint_interval_ms: u64 = Some(1000) => checkpoints.interval, Restart,
        read |ms| in_range(*ms, 10, 3_600_000).map(Duration::from_millis),
        show |interval: &Duration| Some(interval.as_millis() as u64);
    /// Address for the Prometheus endpoint; unset: no HTTP at all.
    metrics_listen: String = None => metrics_listen, Restart,
        read |listen| listen_address(listen), show |listen: &Option<SocketAddr>| listen.map(|addr| addr.to_string());
    /// Address for the OTLP/HTTP receiver (`docs/OTLP.md`), such as 127.0.0.1:4318; unset:
    /// none. Serves `POST /v1/traces` and `/v1/logs`.
    otlp_listen: String = None => otlp.listen, Restart,
        read |listen| listen_address(listen), show |listen: &Option<SocketAddr>| listen.map(|addr| addr.to_string());
    /// The OTLP receiver's bearer tokens, `name token` a line, private to the daemon's user;
    /// unset: only loopback peers are served, without a token.
    otlp_tokens_file: PathBuf = None => otlp.tokens_file, Restart,
        read |path| Ok(Some(path.clone())), show |path: &Option<PathBuf>| path.clone();
    /// The largest OTLP request body in bytes, counted after decompression.
    otlp_max_body_bytes: u64 = Some(crate::otlp::DEFAULT_MAX_BODY as u64) => otlp.max_body, Restart,
        read |bytes| count(*bytes, 1024, 1 << 30), show |bytes: &usize| Some(*bytes as u64);
    /// Address for the dashboard (`docs/DASHBOARD.md`), such as 127.0.0.1:7319; unset: none.
    /// `witness web` prints a one-time login link to it.
    web_listen: String = None => web_listen, Restart,
        read |listen| listen_address(listen), show |listen: &Option<SocketAddr>| listen.map(|addr| addr.to_string());
    /// Forwarding to the fleet's PostgreSQL (`docs/FLEET.md`); unset: none. A table:
    /// `postgres` (a `postgresql://` URL or libpq `key=value` string; `sslmode` and
    /// `sslrootcert` as libpq reads them), `password_file` (libpq's `.pgpass` format; unset:
    /// `PGPASSFILE`, else `~/.pgpass`), `host_id` (unset: the origin) and `batch_max`
    /// (entries a batch, default 10000). `--print-config` hides a password.
    forward: ForwardSettings = None => forward, Restart,
        read |forward| forward.read(), show |forward: &Option<ForwardConfig>| forward.as_ref().map(ForwardSettings::of);
    /// Retention (README, "Retention"); unset: the log keeps everything. A table: `max_age`
    /// (such as `90d`; units s, m, h, d, w), `max_bytes` (the database and its WAL in use,
    /// such as `20GiB`, or bytes), `archive_dir` (where pruned entries are sealed into
    /// segments; unset, they are dropped, and only the log's record of each prune remains)
    /// and `segment_entries` (most entries a segment, a multiple of 256, default 65536).
    retain: RetainSettings = None => retain, Restart,
        read |retain| retain.read(), show |retain: &RetainConfig| RetainSettings::of(retain);
    /// A price table in genai-prices v2 JSON that replaces the built-in one (`docs/PRICES.md`);
    /// read again on every reload.
    prices_file: PathBuf = None => prices.file, Live,
        read |path| Ok(Some(path.clone())), show |path: &Option<PathBuf>| path.clone();
    /// Prices of the configuration, tried before the table: `[[price]]` tables of `model`
    /// (or `match`, a clause as the table writes them, with an `id`), optional `provider` and
    /// `since` (a UTC date), and USD per million tokens: `input`, `output`, `cache_read`,
    /// `cache_write`, `cache_write_1h`, `reasoning`, and `tiers` (`[{ start, input, … }]`).
    price: Vec<crate::prices::PriceSettings> = None => prices.overrides, Live,
        read |prices| crate::prices::check_overrides(prices).map(|()| prices.clone()).map_err(BadValue::from),
        show |prices: &Vec<crate::prices::PriceSettings>| (!prices.is_empty()).then(|| prices.clone());
    /// Spend limits, watched every few seconds (docs/PRICES.md, "Budgets"): `[[budget]]`
    /// tables of `name`, `period` (`day`, `week` or `month`), `limit_usd`, and optional
    /// `time_zone` (UTC if not given), `component`, `model`, `trace_prefix` and `warn_at`
    /// (fractions of the limit, `[0.8, 1.0]` if not given). A budget never refuses entries.
    budget: Vec<super::BudgetSettings> = None => budgets, Live,
        read |budgets| super::check_budgets(budgets).map(|_| budgets.clone()),
        show |budgets: &Vec<super::BudgetSettings>| (!budgets.is_empty()).then(|| budgets.clone());
}

/// The `retain` table of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainSettings {
    /// Entries older than this are pruned: a number and a unit, such as `90d`.
    pub max_age: Option<String>,
    /// The database is kept under this size: bytes, or a number and a unit.
    pub max_bytes: Option<ByteSize>,
    /// Where pruned entries are archived.
    pub archive_dir: Option<PathBuf>,
    /// Most entries in one archive segment.
    pub segment_entries: Option<u64>,
}

/// A size in the configuration: a number of bytes, or a text such as `512MiB` or `2GB`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    Bytes(u64),
    /// A number and a unit: `K`, `M`, `G`, `T` (or `KiB`…`TiB`) count in 1024s, `KB`…`TB`
    /// in 1000s.
    Text(String),
}

impl ByteSize {
    fn bytes(&self) -> Result<u64, BadValue> {
        let text = match self {
            ByteSize::Bytes(bytes) => return Ok(*bytes),
            ByteSize::Text(text) => text.trim(),
        };
        let form = || BadValue::Form {
            text: text.to_owned(),
            form: "a size such as 512MiB, 2GB or 1000000",
        };
        // A decimal number of units (1.5GiB), as people write sizes.
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(form());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| form())?
        };
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(BadValue::Meaning {
                    text: text.to_owned(),
                    reason: format!(
                        "unknown unit {other:?}; use B, K, M, G, T (or KiB…TiB) or KB…TB"
                    ),
                });
            }
        };
        let too_large = || BadValue::Meaning {
            text: text.to_owned(),
            reason: "too large".into(),
        };
        // The fraction of a unit, to the byte below: exact in 128 bits for up to 18 digits.
        let fraction_bytes = if fraction.is_empty() {
            0
        } else {
            let digits = &fraction[..fraction.len().min(18)];
            let numerator: u128 = digits.parse().map_err(|_| form())?;
            let bytes = numerator * u128::from(scale) / 10u128.pow(digits.len() as u32);
            u64::try_from(bytes).map_err(|_| too_large())?
        };
        whole
            .checked_mul(scale)
            .and_then(|bytes| bytes.checked_add(fraction_bytes))
            .ok_or_else(too_large)
    }
}

/// A duration written as a number and a unit: `s`, `m`, `h`, `d` or `w`.
pub fn parse_age(text: &str) -> Result<Duration, BadValue> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let wrong = || BadValue::Form {
        text: text.to_owned(),
        form: "an age such as 90d, 36h or 2w",
    };
    let number: u64 = number.parse().map_err(|_| wrong())?;
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(wrong()),
    };
    let total = number.checked_mul(seconds).ok_or_else(wrong)?;
    if total == 0 || total > 100 * 365 * 86_400 {
        return Err(BadValue::Meaning {
            text: text.to_owned(),
            reason: "not between 1s and 100 years".into(),
        });
    }
    Ok(Duration::from_secs(total))
}

/// An age as `parse_age` reads it back: in the largest unit that divides it.
fn show_age(age: Duration) -> String {
    let seconds = age.as_secs();
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

impl RetainSettings {
    fn read(&self) -> Result<RetainConfig, BadValue> {
        let within = |key| {
            move |bad| BadValue::Within {
                key,
                bad: Box::new(bad),
            }
        };
        let max_bytes = self
            .max_bytes
            .as_ref()
            .map(ByteSize::bytes)
            .transpose()
            .map_err(within("max_bytes"))?;
        if let Some(bytes) = max_bytes
            && bytes < 1 << 20
        {
            return Err(BadValue::Rule {
                key: "max_bytes",
                value: bytes,
                rule: "less than 1 MiB",
            });
        }
        let max_age = self
            .max_age
            .as_deref()
            .map(parse_age)
            .transpose()
            .map_err(within("max_age"))?;
        let segment_entries = self
            .segment_entries
            .unwrap_or(crate::store::retain::DEFAULT_SEGMENT_ENTRIES);
        if !segment_entries.is_multiple_of(256) || !(256..=1 << 24).contains(&segment_entries) {
            return Err(BadValue::Rule {
                key: "segment_entries",
                value: segment_entries,
                rule: "not a multiple of 256 between 256 and 16777216",
            });
        }
        Ok(RetainConfig {
            max_age,
            max_bytes,
            archive_dir: self.archive_dir.clone(),
            segment_entries,
        })
    }

    fn of(config: &RetainConfig) -> Option<RetainSettings> {
        (config != &RetainConfig::default()).then(|| RetainSettings {
            max_age: config.max_age.map(show_age),
            max_bytes: config.max_bytes.map(ByteSize::Bytes),
            archive_dir: config.archive_dir.clone(),
            segment_entries: Some(config.segment_entries),
        })
    }
}

/// The `forward` table of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSettings {
    /// The central database's connection string.
    pub postgres: Option<String>,
    /// Where its password is, when the string has none.
    pub password_file: Option<PathBuf>,
    /// This host's id at the centre.
    pub host_id: Option<String>,
    /// Most entries a batch.
    pub batch_max: Option<u64>,
}

impl ForwardSettings {
    fn read(&self) -> Result<Option<ForwardConfig>, BadValue> {
        let Some(url) = &self.postgres else {
            return Err(BadValue::Missing {
                table: "forward",
                key: "postgres",
                what: "the central database's URL",
            });
        };
        let target = Target {
            url: url.clone(),
            password_file: self.password_file.clone(),
        };
        target.check()?;
        if let Some(host_id) = &self.host_id {
            check_host_id(host_id)?;
        }
        Ok(Some(ForwardConfig {
            target,
            host_id: self.host_id.clone(),
            batch_max: count(self.batch_max.unwrap_or(DEFAULT_BATCH as u64), 1, 100_000)?,
        }))
    }

    fn of(config: &ForwardConfig) -> ForwardSettings {
        ForwardSettings {
            postgres: Some(redact(&config.target.url)),
            password_file: config.target.password_file.clone(),
            host_id: config.host_id.clone(),
            batch_max: Some(config.batch_max as u64),
        }
    }
}

fn in_range(value: u64, low: u64, high: u64) -> Result<u64, BadValue> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(BadValue::Range { value, low, high })
    }
}

fn count(value: u64, low: u64, high: u64) -> Result<usize, BadValue> {
    in_range(value, low, high).map(|value| value as usize)
}

fn seconds(value: u64, low: u64, high: u64) -> Result<Duration, BadValue> {
    in_range(value, low, high).map(Duration::from_secs)
}

/// Seconds up to `high`, where 0 means never.
fn seconds_or_never(value: u64, high: u64) -> Result<Option<Duration>, BadValue> {
    in_range(value, 0, high).map(|secs| (secs > 0).then(|| Duration::from_secs(secs)))
}

fn ids(list: &[u64]) -> Result<Vec<u32>, BadValue> {
    list.iter()
        .map(|&id| in_range(id, 0, u64::from(u32::MAX)).map(|id| id as u32))
        .collect()
}

fn meaning(text: &str, reason: String) -> BadValue {
    BadValue::Meaning {
        text: text.to_owned(),
        reason,
    }
}

fn log_filter(level: &str) -> Result<Option<String>, BadValue> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| Some(level.to_owned()))
        .map_err(|error| BadValue::Meaning {
            text: level.to_owned(),
            reason: error.to_string(),
        })
}

fn origin_line(origin: &str) -> Result<String, BadValue> {
    if origin.is_empty() || origin.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(BadValue::Meaning {
            text: origin.to_owned(),
            reason: "cannot name a log: use no spaces and no '+', such as host.example/witness"
                .into(),
        });
    }
    Ok(origin.to_owned())
}

fn listen_address(listen: &str) -> Result<Option<SocketAddr>, BadValue> {
    listen.parse().map(Some).map_err(|_| BadValue::Form {
        text: listen.to_owned(),
        form: "an address such as 127.0.0.1:9464",
    })
}
