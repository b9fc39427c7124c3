//! The database file as a file: the lock that makes its writer the only one, and the check
//! that its path still names the file the daemon writes.
//!
//! Both go by the file's identity (device and inode), not by its name: a symlink or a hard
//! link to a log names the same file and so meets the same lock, and a file deleted or
//! replaced under a running daemon is noticed before anything written to it is acknowledged.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Which file a path named: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    device: u64,
    inode: u64,
}

impl Identity {
    fn of(metadata: &std::fs::Metadata) -> Identity {
        Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// Why the database file cannot be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TakeError {
    /// No file at the path, and the configuration says a log must already exist there.
    #[error(
        "no log at {0}, and `create = false` says one must already exist there: restore the \
         file, correct `db`, or create a new, empty log with `witnessd --init`"
    )]
    Missing(String),
    /// Another daemon holds the file, under this name or another.
    #[error(
        "database {0} is in use by another witnessd (perhaps under another name: a link to \
         the same file counts): only one daemon may write it"
    )]
    InUse(String),
    /// The file could not be opened or locked.
    #[error("cannot open database {path}: {source}")]
    Io {
        /// The database path.
        path: String,
        /// The system's reason.
        source: io::Error,
    },
}

/// The database file, open and locked (`flock`, exclusive) for as long as this value lives.
#[derive(Debug)]
pub struct DatabaseFile {
    _file: File,
    path: PathBuf,
    identity: Identity,
    created: bool,
}

impl DatabaseFile {
    /// Opens the file at `path` and takes its lock. A missing file is created (empty, for
    /// SQLite to fill) only when `create` allows it.
    pub fn take(path: &Path, create: bool) -> Result<DatabaseFile, TakeError> {
        let shown = || path.display().to_string();
        let io_error = |source| TakeError::Io {
            path: shown(),
            source,
        };
        let existing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path);
        let (file, mut created) = match existing {
            Ok(file) => (file, false),
            Err(error) if error.kind() == io::ErrorKind::NotFound && create => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(path)
                    .map_err(io_error)?;
                (file, true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(TakeError::Missing(shown()));
            }
            Err(error) => return Err(io_error(error)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(TakeError::InUse(shown())),
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        let metadata = file.metadata().map_err(io_error)?;
        // An empty file is a log that never held anything: SQLite will give it a schema.
        created |= metadata.len() == 0;
        Ok(DatabaseFile {
            identity: Identity::of(&metadata),
            _file: file,
            path: path.to_path_buf(),
            created,
        })
    }

    /// The file's identity, for [`check`].
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// True when this start created the log (the file was missing or empty).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The path it was taken at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks that `path` still names the file of identity `expected`: not deleted, not replaced
/// by another file. The error says which, for the log and for the clients it refuses.
pub fn check(path: &Path, expected: Identity) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(metadata) if Identity::of(&metadata) == expected => Ok(()),
        Ok(_) => Err(format!(
            "the database file {} was replaced by another file while the daemon wrote it",
            path.display()
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(format!(
            "the database file {} was deleted while the daemon wrote it",
            path.display()
        )),
        Err(error) => Err(format!(
            "the database file {} can no longer be checked: {error}",
            path.display()
        )),
    }
}

/// Bytes free to an unprivileged writer on the file system that holds `path`'s folder.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let folder = match path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        Some(parent) => parent,
        None => Path::new("."),
    };
    let name = std::ffi::CString::new(folder.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: statvfs writes into the zeroed struct it is given and reads a valid C string.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(name.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}
