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

/// The socket of the system service (`systemd/witnessd.socket`).
pub const SYSTEM_SOCKET: &str = "/run/witness/witness.sock";

/// `/run/witness/witness.sock` for root; otherwise `$XDG_RUNTIME_DIR/witness/witness.sock`,
/// or `/tmp/witness-$UID/witness.sock` when there is no runtime folder.
pub fn default_socket_path() -> PathBuf {
    if is_root() {
        return PathBuf::from(SYSTEM_SOCKET);
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

/// The socket a client talks to when nobody names one: the user's own daemon when its socket
/// exists, else the system service's when that exists, else the user's (whose absence the
/// connection error then names). So a user in the `witness` group reaches the system service
/// with no flag.
pub fn client_socket_path() -> PathBuf {
    first_existing(default_socket_path(), PathBuf::from(SYSTEM_SOCKET))
}

fn first_existing(own: PathBuf, system: PathBuf) -> PathBuf {
    if !own.exists() && system.exists() {
        system
    } else {
        own
    }
}

/// The socket named by `WITNESS_SOCKET`, else [`client_socket_path`].
pub fn socket_path_from_env() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(client_socket_path, PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_falls_back_to_the_system_socket_only_when_its_own_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.sock");
        let system = dir.path().join("system.sock");
        assert_eq!(first_existing(own.clone(), system.clone()), own);
        std::fs::write(&system, "").unwrap();
        assert_eq!(first_existing(own.clone(), system.clone()), system);
        std::fs::write(&own, "").unwrap();
        assert_eq!(first_existing(own.clone(), system), own);
    }
}
