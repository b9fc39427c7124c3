//! Signed checkpoints: the log's key, and the C2SP checkpoints the writer signs with it.
//!
//! The writer signs the tree's size and root at most once an interval while entries arrive,
//! and at stop. Each checkpoint goes to three places: the `checkpoints` table, a small state
//! file outside the database (written whole and fsynced before it replaces the last one), and,
//! at most once a minute, the daemon's log, so that a copy leaves the host with the system
//! log. At start the daemon holds the database to the checkpoint in the state file: a log
//! that no longer contains the tree it signed (a cut tail, a damaged WAL, a file restored or
//! replaced) is refused, so that nothing it signed is forgotten and no `seq` is handed out
//! twice; the acknowledged mark (`acked`) carries the same check to the last entry answered.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use witness_protocol::merkle::Hash;
use witness_protocol::note::{Checkpoint, SignerKey, VerifierKey};

use crate::format::tree::Tiles;
use crate::store::acked::{self, Acked};

/// Where the key and the state file are, what the log is called, and how often it signs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointConfig {
    /// The signing key, made at first start, readable by the daemon's user only.
    pub key_file: PathBuf,
    /// The latest signed checkpoint, outside the database.
    pub state_file: PathBuf,
    /// The log's origin line, which is also its key's name.
    pub origin: String,
    /// The longest the writer goes without signing while entries arrive.
    pub interval: Duration,
}

impl CheckpointConfig {
    /// The defaults for a database at `db`: the key and the state file beside it, the origin
    /// from the host name.
    pub fn for_database(db: &Path) -> CheckpointConfig {
        CheckpointConfig {
            key_file: db.with_extension("key"),
            state_file: db.with_extension("checkpoint"),
            origin: default_origin(),
            interval: Duration::from_secs(1),
        }
    }
}

/// `<host name>/witness`: a log's origin unless the configuration names one.
pub fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| {
            !name.is_empty() && !name.contains(char::is_whitespace) && !name.contains('+')
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/witness")
}

/// The file of the verifier key that goes with `key_file`.
pub fn verifier_file(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Why the key or the state could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The key file could not be read, made or trusted.
    #[error("signing key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the key at `config.key_file`, or makes a new one (in memory: [`save_key`] writes it,
/// once the database has opened, so that a start that fails leaves no key behind). Says
/// whether it is new.
pub fn load_or_create_key(config: &CheckpointConfig) -> Result<(SignerKey, bool), CheckpointError> {
    let path = &config.key_file;
    let error = |reason: String| CheckpointError::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(metadata) => {
            if metadata.permissions().mode() & 0o077 != 0 {
                return Err(error(format!(
                    "others may read it (mode {:o}); make it readable by the daemon's user \
                     only (chmod 600)",
                    metadata.permissions().mode() & 0o777
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
            let key = SignerKey::parse(&text).map_err(|e| error(e.to_string()))?;
            if key.name() != config.origin {
                return Err(error(format!(
                    "it signs as {:?}, but the configured origin is {:?}",
                    key.name(),
                    config.origin
                )));
            }
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| error(format!("no randomness: {e}")))?;
            let key = SignerKey::from_seed(&config.origin, seed)
                .map_err(|e| error(format!("the origin cannot name a key: {e}")))?;
            Ok((key, true))
        }
        Err(e) => Err(error(e.to_string())),
    }
}

/// Writes a new key to `config.key_file` (mode 600, never over an existing file) and its
/// verifier key beside it.
pub fn save_key(config: &CheckpointConfig, key: &SignerKey) -> Result<(), CheckpointError> {
    let path = &config.key_file;
    let error = |reason: String| CheckpointError::Key {
        path: path.display().to_string(),
        reason,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| error(format!("cannot create it: {e}")))?;
    file.write_all(format!("{}\n", key.to_secret_text()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| error(format!("cannot write it: {e}")))?;
    write_durably(&verifier_file(path), &format!("{}\n", key.verifier()))
        .map_err(|e| error(format!("cannot write its verifier key: {e}")))
}

/// Writes `text` to `path` so that the file holds either its old content or all of the new:
/// a temporary file, fsynced, renamed over it, and the folder fsynced.
fn write_durably(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// What a database no longer holds of what the daemon signed, as the start check found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// What is wrong, for the operator.
    pub reason: String,
    /// The entries missing at the end, first and last, when that is the loss.
    pub missing: Option<(u64, u64)>,
    /// The checkpoint held against, as it was in the state file.
    pub note: String,
}

/// Holds the database at `connection`, with `size` entries, to what the daemon vouched for
/// outside it: the checkpoint in the state file, if there is one (the database must still
/// contain the tree it signed), and the acknowledged mark beside it (see `acked`), if there is
/// one (the database must still hold the last entry acknowledged, as it was).
pub fn check_against_state(
    connection: &Connection,
    size: u64,
    config: &CheckpointConfig,
    verifier: &VerifierKey,
) -> Result<(), Loss> {
    let mark = acked::mark_file(&config.state_file);
    let acked = acked::read(&mark).unwrap_or_else(|reason| {
        tracing::warn!("{reason}; the start check goes by the signed checkpoint alone");
        None
    });
    check_signed(
        connection,
        size,
        config,
        verifier,
        acked.map(|acked| acked.seq),
    )?;
    match acked {
        Some(acked) => check_acked(connection, size, acked, &mark),
        None => Ok(()),
    }
}

/// Holds the database to the last acknowledged entry: it must still be there (unless pruned
/// since), with the hash it was acknowledged with.
fn check_acked(connection: &Connection, size: u64, acked: Acked, mark: &Path) -> Result<(), Loss> {
    let loss = |reason, missing| Loss {
        reason,
        missing,
        note: String::new(),
    };
    if size < acked.seq {
        return Err(loss(
            format!(
                "the database holds {size} entries, but this daemon acknowledged entries up to \
                 {} ({}): entries {} to {} are missing (a damaged write-ahead log, a cut tail, \
                 or an older copy of the file). Refusing to start, so that no sequence number \
                 is handed out twice",
                acked.seq,
                mark.display(),
                size + 1,
                acked.seq
            ),
            Some((size + 1, acked.seq)),
        ));
    }
    let stored: Option<Vec<u8>> = connection
        .query_row(
            "SELECT hash FROM entries WHERE seq = ?1",
            [acked.seq as i64],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| loss(format!("cannot read entry {}: {e}", acked.seq), None))?;
    match stored {
        Some(hash) if hash != acked.hash => Err(loss(
            format!(
                "entry {} of the database is not the one this daemon acknowledged (its hash is \
                 {}, {} says {}): the log was rewritten or the file replaced. Refusing to start",
                acked.seq,
                hash.iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>(),
                mark.display(),
                hex(&acked.hash)
            ),
            None,
        )),
        // Equal, or pruned since: what is left is held to the chain by `verify`.
        _ => Ok(()),
    }
}

/// Holds the database to the checkpoint in the state file; `acked_to`, the last `seq`
/// acknowledged, extends the range named when entries are missing.
fn check_signed(
    connection: &Connection,
    size: u64,
    config: &CheckpointConfig,
    verifier: &VerifierKey,
    acked_to: Option<u64>,
) -> Result<(), Loss> {
    let state = &config.state_file;
    let loss = |note: &str, reason: String, missing| Loss {
        reason,
        missing,
        note: note.to_owned(),
    };
    let note = match std::fs::read_to_string(state) {
        Ok(note) => note,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(loss(
                "",
                format!(
                    "cannot read the last signed checkpoint {}: {e}",
                    state.display()
                ),
                None,
            ));
        }
    };
    let signed = Checkpoint::verified(&note, verifier).map_err(|e| {
        loss(
            &note,
            format!(
                "the last signed checkpoint {} does not verify with this log's key ({e}): \
                     the key or the state file was replaced",
                state.display()
            ),
            None,
        )
    })?;
    let described = format!(
        "the checkpoint in {} (size {}, root {})",
        state.display(),
        signed.size,
        hex(&signed.root)
    );
    if size < signed.size {
        // What was acknowledged after the signature is missing too.
        let last = acked_to.unwrap_or(0).max(signed.size);
        let acknowledged = if last > signed.size {
            format!(" and acknowledged entries up to {last}")
        } else {
            String::new()
        };
        return Err(loss(
            &note,
            format!(
                "the database holds {size} entries, but this daemon signed {described}\
                 {acknowledged}: entries {} to {last} are missing (a cut tail, a damaged \
                 write-ahead log, or an older copy of the file). Refusing to start, so that no \
                 sequence number is handed out twice",
                size + 1,
            ),
            Some((size + 1, last)),
        ));
    }
    let root = Tiles::new(connection).root(signed.size).map_err(|reason| {
        loss(
            &note,
            format!(
                "the Merkle tree of the database cannot give the root of its first {} entries \
                 ({reason}): its tiles were cut or changed; run `witness verify --db` on it",
                signed.size
            ),
            None,
        )
    })?;
    if root != signed.root {
        return Err(loss(
            &note,
            format!(
                "the first {} entries of the database are not those of {described} (their \
                 root is {}): the log was rewritten or the file replaced. Refusing to start",
                signed.size,
                hex(&root)
            ),
            None,
        ));
    }
    Ok(())
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How often, at most, a signed checkpoint is copied to the daemon's log.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Signs checkpoints for the writer.
pub struct Checkpointer {
    signer: SignerKey,
    config: CheckpointConfig,
    signed_size: Option<u64>,
    signed_at: Instant,
    logged_at: Option<Instant>,
    /// The latest note, while the daemon's log has not had it (at most a minute, and never
    /// past the stop).
    unlogged: Option<String>,
    accept_loss: bool,
    /// Why the last try to sign failed, while it does.
    failure: Option<String>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("signer", &self.signer)
            .field("signed_size", &self.signed_size)
            .finish_non_exhaustive()
    }
}

/// Adds a signed checkpoint to the database's history.
const SAVE_CHECKPOINT: &str = "INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?1, ?2)";

impl Checkpointer {
    /// A checkpointer that signs with `signer` as `config` says.
    pub fn new(signer: SignerKey, config: CheckpointConfig) -> Checkpointer {
        Checkpointer {
            signer,
            config,
            signed_size: None,
            signed_at: Instant::now(),
            logged_at: None,
            unlogged: None,
            accept_loss: false,
            failure: None,
        }
    }

    /// Holds the database to the last checkpoint signed: see [`check_against_state`].
    pub fn check_against_state(&self, connection: &Connection, size: u64) -> Result<(), Loss> {
        check_against_state(connection, size, &self.config, &self.signer.verifier())
    }

    /// Where the acknowledged mark of this log is kept (see `acked`): beside the state file.
    pub fn mark_file(&self) -> PathBuf {
        acked::mark_file(&self.config.state_file)
    }

    /// This checkpointer, told whether the operator accepts a loss found at start
    /// (`witnessd --accept-loss`).
    pub fn accepting_loss(self, accept_loss: bool) -> Checkpointer {
        Checkpointer {
            accept_loss,
            ..self
        }
    }

    /// Whether the operator accepts a loss found at start.
    pub fn accepts_loss(&self) -> bool {
        self.accept_loss
    }

    /// The public key that checks this log's checkpoints.
    pub fn verifier(&self) -> VerifierKey {
        self.signer.verifier()
    }

    /// Whether a tree of `size` entries should be signed now: it is not yet, and the interval
    /// has passed (or `now` says not to wait).
    pub fn due(&self, size: u64, now: bool) -> bool {
        self.signed_size != Some(size) && (now || self.signed_at.elapsed() >= self.config.interval)
    }

    /// Signs the tree of `size` entries with root `root`; writes the state file, then the
    /// `checkpoints` table. Returns the note. A failure (a full disk, say) is logged once,
    /// not at every try, and tried again an interval later; the return to normal is logged
    /// too.
    pub fn sign(
        &mut self,
        connection: &Connection,
        size: u64,
        root: Hash,
    ) -> Result<String, SignError> {
        match self.try_sign(connection, size, root) {
            Ok(note) => {
                if let Some(previous) = self.failure.take() {
                    tracing::warn!(size, "checkpoints are signed again, after: {previous}");
                }
                Ok(note)
            }
            Err(error) => {
                self.signed_at = Instant::now();
                let said = error.to_string();
                if self.failure.as_ref() != Some(&said) {
                    tracing::error!(
                        %error,
                        size,
                        "cannot sign a checkpoint; entries are still committed, but nothing \
                         outside the database vouches for them until this is fixed"
                    );
                    self.failure = Some(said);
                }
                Err(error)
            }
        }
    }

    fn try_sign(
        &mut self,
        connection: &Connection,
        size: u64,
        root: Hash,
    ) -> Result<String, SignError> {
        let text = Checkpoint {
            origin: self.config.origin.clone(),
            size,
            root,
            extensions: Vec::new(),
        }
        .to_text();
        let note = self.signer.sign(&text)?;
        write_durably(&self.config.state_file, &note).map_err(|source| SignError::State {
            path: self.config.state_file.clone(),
            source,
        })?;
        connection
            .prepare_cached(SAVE_CHECKPOINT)
            .and_then(|mut save| save.execute((size as i64, &note)))
            .map_err(SignError::Store)?;
        self.signed_size = Some(size);
        self.signed_at = Instant::now();
        self.unlogged = Some(note.clone());
        self.log_latest(false);
        Ok(note)
    }

    /// Copies the latest signed note to the daemon's log if it has not had it, once a minute
    /// at most, or now with `now` (at stop): so the last checkpoint of a burst reaches the
    /// system log within a minute even when no other is signed after it.
    pub fn log_latest(&mut self, now: bool) {
        let due = now
            || self
                .logged_at
                .is_none_or(|logged| logged.elapsed() >= LOG_EVERY);
        if !due {
            return;
        }
        if let Some(note) = self.unlogged.take() {
            // Field by field, so that the line reads (no escaped note); README says how the
            // note is rebuilt from them: "origin\nsize\nroot\n\n— key signature\n".
            let mut lines = note.lines();
            let mut next = || lines.next().unwrap_or_default();
            let (origin, size, root) = (next(), next(), next());
            let _blank = next();
            let signed = next().trim_start_matches("— ");
            let (key, signature) = signed.split_once(' ').unwrap_or((signed, ""));
            tracing::info!(origin = %origin, size = %size, root = %root, key = %key,
                signature = %signature, "signed checkpoint");
            self.logged_at = Some(Instant::now());
        }
    }
}

/// Why a checkpoint could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key could not sign the note.
    #[error("cannot sign: {0}")]
    Sign(#[from] witness_protocol::note::NoteError),
    /// The state file could not be written durably.
    #[error("cannot write the checkpoint state {}: {source}", .path.display())]
    State {
        /// The state file.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The `checkpoints` table could not be written.
    #[error("cannot store the checkpoint: {0}")]
    Store(rusqlite::Error),
}
