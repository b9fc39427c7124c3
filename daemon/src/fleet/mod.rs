//! The fleet: every host's log copied into one PostgreSQL database, where a cost report, a
//! trace across hosts and an audit of every host's chain can be had in one place.
//!
//! This module holds what the forwarder (in `witnessd`) and the `witness fleet` commands
//! share: how a PostgreSQL target is written and connected to (passwords from a password
//! file, TLS as libpq's `sslmode` asks), how it is shown without its password, and the
//! central schema. `forward` ships a host's entries; `query` and `audit` read the centre.
//! `docs/FLEET.md` is the specification.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::format::row::{self, Kind, Value};

pub mod audit;
pub mod forward;
pub mod query;

/// The version of the central schema this build creates and reads.
pub const FLEET_SCHEMA_VERSION: i32 = 1;

/// Most entries one forwarded batch carries, unless configured.
pub const DEFAULT_BATCH: usize = 10_000;

/// Longest host id.
pub const MAX_HOST_ID_LEN: usize = 255;

/// Where a PostgreSQL database is and how to reach it: a connection string (a
/// `postgresql://` URL or libpq's `key=value` form), and where a password it leaves out is
/// found. Its `Debug` form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The connection string as given, password and all.
    pub url: String,
    /// A file in the format of libpq's `.pgpass`; unset: `PGPASSFILE`, else `~/.pgpass`.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &redact(&self.url))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The forwarder's settings (`forward.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The central database.
    pub target: Target,
    /// This host's name at the centre; unset: the log's origin.
    pub host_id: Option<String>,
    /// Most entries in one batch.
    pub batch_max: usize,
}

/// Why the centre could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The connection string cannot be used.
    #[error("bad PostgreSQL connection string: {0}")]
    Target(String),
    /// Connecting, or a statement, failed; the message never holds the password.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The central schema is of a version this build does not know.
    #[error(
        "the central schema is version {found}; this witness knows version {FLEET_SCHEMA_VERSION}: \
         upgrade witness"
    )]
    Version {
        /// The version found.
        found: i32,
    },
}

impl From<postgres::Error> for FleetError {
    fn from(error: postgres::Error) -> Self {
        FleetError::Postgres(describe(&error))
    }
}

/// A PostgreSQL error in one line: the server's message and detail where it sent one, else
/// the client's account (a refused connection, a closed socket).
pub fn describe(error: &postgres::Error) -> String {
    use std::error::Error;
    if let Some(db) = error.as_db_error() {
        let mut text = db.message().to_owned();
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The connection string with any password replaced by `********`: what logs,
/// `--print-config` and error messages show.
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "********";
    let trimmed = url.trim();
    if let Some(scheme_end) = trimmed
        .strip_prefix("postgresql://")
        .or_else(|| trimmed.strip_prefix("postgres://"))
        .map(|rest| trimmed.len() - rest.len())
    {
        let (head, rest) = trimmed.split_at(scheme_end);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (user_info, hosts) = authority.split_at(at);
                match user_info.find(':') {
                    Some(colon) => format!("{}:{HIDDEN}{hosts}", &user_info[..colon]),
                    None => authority.to_owned(),
                }
            }
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some(("password", _)) => format!("password={HIDDEN}"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        return format!("{head}{authority}{tail}");
    }
    let mut out = Vec::new();
    for pair in split_key_values(trimmed) {
        match pair.split_once('=') {
            Some((key, _)) if key.trim() == "password" => out.push(format!("password={HIDDEN}")),
            _ => out.push(pair),
        }
    }
    out.join(" ")
}

/// The `key=value` pairs of libpq's keyword form, each as written (quotes kept).
fn split_key_values(text: &str) -> Vec<String> {
    let mut pairs = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                current.push(c);
                current.extend(chars.next());
            }
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() && !current.ends_with('=') {
                    pairs.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        pairs.push(current);
    }
    pairs
}

/// libpq's `sslmode`: whether to encrypt, and what to check of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What the connection string says of TLS, taken out of it because the PostgreSQL driver
/// knows neither the verifying modes nor `sslrootcert`.
struct Tls {
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

/// Splits `sslmode` and `sslrootcert` off a connection string.
fn take_tls(url: &str) -> Result<(String, Tls), FleetError> {
    let mut tls = Tls {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let mut take = |key: &str, value: &str| -> Result<bool, FleetError> {
        match key {
            "sslmode" => {
                tls.mode = match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(FleetError::Target(format!(
                            "sslmode {other:?}: expected disable, allow, prefer, require, \
                             verify-ca or verify-full"
                        )));
                    }
                };
                Ok(true)
            }
            "sslrootcert" => {
                tls.root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let trimmed = url.trim();
    let rest = if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
        match trimmed.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, &percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => trimmed.to_owned(),
        }
    } else {
        let mut kept = Vec::new();
        for pair in split_key_values(trimmed) {
            let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
            if !take(key.trim(), value.trim().trim_matches('\''))? {
                kept.push(pair.clone());
            }
        }
        kept.join(" ")
    };
    Ok((rest, tls))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Target {
    /// Checks the connection string without connecting: what `--check-config` and the
    /// commands do before anything else.
    pub fn check(&self) -> Result<(), FleetError> {
        self.config(false).map(|_| ())
    }

    /// The driver's configuration: the string without its TLS keys, the user from the
    /// environment when it names none, and (when `password` is set, at connection time, so
    /// that a file readable only by the daemon's user does not fail a check by another) a
    /// password from the password file when the string has none.
    fn config(&self, password: bool) -> Result<(postgres::Config, Tls), FleetError> {
        let (rest, tls) = take_tls(&self.url)?;
        let mut config: postgres::Config = rest.parse().map_err(|error: postgres::Error| {
            FleetError::Target(format!("{}: {}", redact(&self.url), describe(&error)))
        })?;
        if config.get_hosts().is_empty() {
            return Err(FleetError::Target(format!(
                "{}: names no host",
                redact(&self.url)
            )));
        }
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .ok()
                .or_else(os_user)
                .ok_or_else(|| {
                    FleetError::Target(format!("{}: names no user", redact(&self.url)))
                })?;
            config.user(&user);
        }
        if password
            && config.get_password().is_none()
            && let Some(password) = self.password_from_file(&config)?
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives_idle(Duration::from_secs(30));
        config.ssl_mode(match tls.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("witness");
        }
        Ok((config, tls))
    }

    /// The password for this connection from the password file, as libpq finds it: the first
    /// line whose host, port, database and user match (`*` matches anything).
    fn password_from_file(&self, config: &postgres::Config) -> Result<Option<String>, FleetError> {
        let (path, explicit) = match (&self.password_file, std::env::var_os("PGPASSFILE")) {
            (Some(path), _) => (path.clone(), true),
            (None, Some(path)) => (PathBuf::from(path), true),
            (None, None) => match std::env::var_os("HOME") {
                Some(home) => (Path::new(&home).join(".pgpass"), false),
                None => return Ok(None),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if !explicit && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(error) => {
                return Err(FleetError::Target(format!(
                    "cannot read the password file {}: {error}",
                    path.display()
                )));
            }
        };
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => String::new(),
        };
        let port = config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
            .to_string();
        let user = config.get_user().unwrap_or_default();
        let database = config.get_dbname().unwrap_or(user);
        Ok(pgpass_lookup(&text, [&host, &port, database, user]))
    }

    /// Connects, with TLS if the string asks for it (or prefers it and the server offers
    /// it). The error names the target without its password.
    pub fn connect(&self) -> Result<postgres::Client, FleetError> {
        let (config, tls) = self.config(true)?;
        let shown = redact(&self.url);
        let result = if tls.mode == SslMode::Disable {
            config.connect(postgres::NoTls)
        } else {
            config.connect(tls_connector(&tls)?)
        };
        result.map_err(|error| FleetError::Postgres(format!("{shown}: {}", describe(&error))))
    }
}

/// The password of the first `.pgpass` line matching `fields` (host, port, database, user).
fn pgpass_lookup(text: &str, fields: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ':' if parts.len() < 4 => parts.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        parts.push(current);
        if parts.len() != 5 {
            continue;
        }
        if parts[..4]
            .iter()
            .zip(fields)
            .all(|(pattern, value)| pattern == "*" || pattern == value)
        {
            return parts.pop();
        }
    }
    None
}

fn os_user() -> Option<String> {
    // SAFETY: getpwuid returns a pointer to static storage or null; it is read at once.
    unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if entry.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr((*entry).pw_name)
            .to_str()
            .ok()
            .map(str::to_owned)
    }
}

/// A TLS connector that checks the server as libpq's `sslmode` would: `prefer` and `require`
/// encrypt without checking the certificate (unless `sslrootcert` is given, when `require`
/// checks it as `verify-ca` does), `verify-ca` checks that a trusted authority signed it,
/// and `verify-full` also that it names the host.
fn tls_connector(tls: &Tls) -> Result<tokio_postgres_rustls::MakeRustlsConnect, FleetError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.root_cert {
        Some(path) => {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect())
                .map_err(|error| {
                    FleetError::Target(format!(
                        "cannot read the root certificate {}: {error}",
                        path.display()
                    ))
                })?;
            if certificates.is_empty() {
                return Err(FleetError::Target(format!(
                    "{} holds no certificate",
                    path.display()
                )));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| FleetError::Target(format!("{}: {error}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let verify = match tls.mode {
        SslMode::VerifyFull => Verify::Full,
        SslMode::VerifyCa => Verify::Authority,
        SslMode::Require if tls.root_cert.is_some() => Verify::Authority,
        _ => Verify::Nothing,
    };
    if verify != Verify::Nothing && roots.is_empty() {
        return Err(FleetError::Target(
            "sslmode asks to check the server's certificate, but no trusted certificate was \
             found: give sslrootcert"
                .into(),
        ));
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .ok();
    let verifier = Arc::new(Checker {
        verify,
        webpki,
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| FleetError::Target(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Authority,
    Full,
}

/// The server-certificate check for each `sslmode`; handshake signatures are always checked.
#[derive(Debug)]
struct Checker {
    verify: Verify,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Checker {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::client::danger::ServerCertVerified;
        if self.verify == Verify::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(webpki) = &self.webpki else {
            return Err(rustls::Error::General("no trusted certificate".into()));
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if self.verify == Verify::Authority => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks a host id: what names a host at the centre.
pub fn check_host_id(host_id: &str) -> Result<(), String> {
    if host_id.is_empty() || host_id.len() > MAX_HOST_ID_LEN {
        return Err(format!(
            "a host id is 1 to {MAX_HOST_ID_LEN} bytes, not {}",
            host_id.len()
        ));
    }
    if host_id.chars().any(char::is_control) {
        return Err(format!("host id {host_id:?} holds a control character"));
    }
    Ok(())
}

/// The PostgreSQL type of a column of `entries`.
fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Integer => "bigint",
        Kind::Text => "text",
        Kind::Blob => "bytea",
    }
}

/// The columns of `events`: `host_id`, then a host's `entries` columns in their order.
pub fn event_columns() -> String {
    let mut columns = vec!["host_id"];
    columns.extend(row::COLUMNS);
    columns.join(", ")
}

/// The hashed values and the stored hash of an `events` row read with [`event_columns`]
/// (`host_id` first), borrowed from the row.
pub fn pg_values(stored: &postgres::Row) -> Result<(row::Values<'_>, &[u8]), FleetError> {
    let mut values = [Value::Null; row::HASHED];
    for (position, value) in values.iter_mut().enumerate() {
        let column = row::column_of(position);
        *value = match row::KINDS[column].0 {
            Kind::Integer => Value::from(stored.try_get::<_, Option<i64>>(column + 1)?),
            _ => Value::from(stored.try_get::<_, Option<&str>>(column + 1)?),
        };
    }
    let hash: &[u8] = stored.try_get(row::column::HASH + 1)?;
    Ok((values, hash))
}

/// The central schema, version [`FLEET_SCHEMA_VERSION`], created if missing. `events` holds
/// every host's entries, the same columns as a host's `entries` after `host_id`, partitioned
/// by month of `ts` (the receive time, which a host's clock sets once and never again); its
/// key includes `ts` because PostgreSQL requires a partitioned table's key to hold the
/// partition key, and the watermark keeps `(host_id, seq)` unique. `cost_hourly` is the
/// roll-up that `witness fleet cost` reads, kept in the same transaction as the rows.
pub fn schema_sql() -> String {
    let mut columns = vec!["    host_id text NOT NULL".to_owned()];
    for (name, (kind, nullable)) in row::COLUMNS.iter().zip(row::KINDS) {
        columns.push(format!(
            "    {name} {}{}",
            pg_type(kind),
            if nullable { "" } else { " NOT NULL" }
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS witness_fleet (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    host_id         text PRIMARY KEY,
    verifier_key    text NOT NULL,
    last_seq        bigint NOT NULL DEFAULT 0,
    last_hash       bytea NOT NULL,
    last_ts         bigint,
    tree_edge       bytea NOT NULL,
    local_seq       bigint NOT NULL DEFAULT 0,
    checkpoint_size bigint,
    checkpoint      text,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    forwarded_at    timestamptz,
    refused_at      timestamptz,
    refused         text
);
CREATE TABLE IF NOT EXISTS events (
{},
    PRIMARY KEY (host_id, seq, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS events_by_trace ON events (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_time ON events ((coalesce(client_ts, ts)));
CREATE INDEX IF NOT EXISTS events_by_component ON events (component, (coalesce(client_ts, ts)));
CREATE TABLE IF NOT EXISTS checkpoints (
    host_id text   NOT NULL,
    size    bigint NOT NULL,
    note    text   NOT NULL,
    PRIMARY KEY (host_id, size)
);
CREATE TABLE IF NOT EXISTS cost_hourly (
    host_id           text   NOT NULL,
    hour              bigint NOT NULL,
    component         text   NOT NULL,
    event             text   NOT NULL,
    model             text   NOT NULL,
    entries           bigint NOT NULL,
    tokens_in         bigint NOT NULL,
    tokens_out        bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    reasoning_tokens  bigint NOT NULL,
    micro_usd         bigint NOT NULL,
    PRIMARY KEY (host_id, hour, component, event, model)
);
",
        columns.join(",\n")
    )
}

/// Creates the central schema if it is missing (under a lock, so that hosts starting
/// together do not race), and checks its version.
pub fn ensure_schema(client: &mut postgres::Client) -> Result<(), FleetError> {
    let mut transaction = client.transaction()?;
    // `IF NOT EXISTS` tells of every table it skips; that is not news.
    transaction.batch_execute("SET LOCAL client_min_messages = warning")?;
    transaction.execute("SELECT pg_advisory_xact_lock(7395847385)", &[])?;
    transaction.batch_execute(&schema_sql())?;
    let version: Option<i32> = transaction
        .query_opt("SELECT max(version) FROM witness_fleet", &[])?
        .and_then(|row| row.get(0));
    match version {
        None => {
            transaction.execute(
                "INSERT INTO witness_fleet (version) VALUES ($1)",
                &[&FLEET_SCHEMA_VERSION],
            )?;
        }
        Some(FLEET_SCHEMA_VERSION) => {}
        Some(found) => return Err(FleetError::Version { found }),
    }
    transaction.commit()?;
    Ok(())
}

/// Checks that the centre has a schema this build reads, without creating one: what the
/// read commands do.
pub fn check_schema(client: &mut postgres::Client) -> Result<(), FleetError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('witness_fleet') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Err(FleetError::Postgres(
            "this database holds no fleet: no host has forwarded to it yet".into(),
        ));
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM witness_fleet", &[])?
        .get(0);
    match version {
        Some(FLEET_SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(FleetError::Version { found }),
        None => Err(FleetError::Postgres(
            "the fleet schema has no version row".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_form() {
        for (url, shown) in [
            (
                "postgresql://ann:s3cret@db.example:5432/fleet?sslmode=require",
                "postgresql://ann:********@db.example:5432/fleet?sslmode=require",
            ),
            (
                "postgres://ann@db/fleet?password=s3cret&sslmode=disable",
                "postgres://ann@db/fleet?password=********&sslmode=disable",
            ),
            (
                "host=db user=ann password='s3 cret' dbname=fleet",
                "host=db user=ann password=******** dbname=fleet",
            ),
            ("postgresql://db/fleet", "postgresql://db/fleet"),
        ] {
            assert_eq!(redact(url), shown);
            assert!(!redact(url).contains("s3"));
            let target = Target {
                url: url.into(),
                password_file: None,
            };
            assert!(!format!("{target:?}").contains("s3"));
        }
    }

    #[test]
    fn tls_keys_are_taken_out_and_checked() {
        let (rest, tls) =
            take_tls("postgresql://db/fleet?sslmode=verify-full&sslrootcert=%2Fca.pem&x=1")
                .unwrap();
        assert_eq!(rest, "postgresql://db/fleet?x=1");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/ca.pem")));
        let (rest, tls) = take_tls("host=db sslmode=disable dbname=f").unwrap();
        assert_eq!(rest, "host=db dbname=f");
        assert_eq!(tls.mode, SslMode::Disable);
        assert!(take_tls("postgresql://db/?sslmode=sometimes").is_err());
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\ndb:5432:fleet:ann:first\n*:*:*:ann:second\\:colon\n";
        assert_eq!(
            pgpass_lookup(text, ["db", "5432", "fleet", "ann"]).as_deref(),
            Some("first")
        );
        assert_eq!(
            pgpass_lookup(text, ["other", "5433", "x", "ann"]).as_deref(),
            Some("second:colon")
        );
        assert_eq!(pgpass_lookup(text, ["db", "5432", "fleet", "bob"]), None);
        assert_eq!(pgpass_lookup("garbage\n:::\n", ["a", "b", "c", "d"]), None);
    }

    #[test]
    fn garbage_targets_get_a_clear_error() {
        for url in [
            "",
            "not a url at all",
            "postgresql://",
            "postgresql://host:notaport/db",
        ] {
            let target = Target {
                url: url.into(),
                password_file: None,
            };
            let error = target.check().unwrap_err().to_string();
            assert!(error.contains("connection string"), "{url}: {error}");
        }
    }

    #[test]
    fn the_central_table_has_the_hosts_columns_after_host_id() {
        let sql = schema_sql();
        for name in row::COLUMNS {
            assert!(sql.contains(&format!("    {name} ")), "{name}");
        }
        assert!(sql.contains("hash bytea NOT NULL"));
        assert!(sql.contains("payload text NOT NULL"));
        assert!(sql.contains("client_ts bigint,"));
    }
}
