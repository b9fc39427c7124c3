//! Where the daemon's socket and database live when nobody says otherwise.
//!
//! Shared by the client and the daemon so that both agree without configuration: under the
//! user's runtime and data folders, or the system's when running as root.

use std::path::PathBuf;

/// The environment variable that names the socket for clients and the command line.
pub const SOCKET_ENV: &str = "WITNESS_SOCKET";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
}

/// `/run/witness/witness.sock` for root; otherwise `$XDG_RUNTIME_DIR/witness/witness.sock`,
/// or `/tmp/witness-$UID/witness.sock` when there is no runtime folder.
pub fn default_socket_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/witness/witness.sock");
    }
    let folder = env_dir("XDG_RUNTIME_DIR").map_or_else(
        || {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            PathBuf::from(format!("/tmp/witness-{uid}"))
        },
        |runtime| runtime.join("witness"),
    );
    folder.join("witness.sock")
}

/// `/var/lib/witness/witness.db` for root; otherwise `$XDG_DATA_HOME/witness/witness.db`, or
/// `~/.local/share/witness/witness.db`.
pub fn default_db_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/witness/witness.db");
    }
    let data = env_dir("XDG_DATA_HOME")
        .or_else(|| env_dir("HOME").map(|home| home.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("witness").join("witness.db")
}

/// The socket named by `WITNESS_SOCKET`, else the default.
pub fn socket_path_from_env() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(default_socket_path, PathBuf::from)
}
