//! A PostgreSQL target as an operator writes it: a URL or libpq's key=value string, the
//! password from a `.pgpass` file, TLS keys taken out as libpq's `sslmode` reads them, and
//! the target shown in every message without its password.

use super::tls::{SslMode, Tls, tls_connector};
use super::*;

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
