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

/// The socket a client talks to when nobody names one: the user's own daemon under
/// `$XDG_RUNTIME_DIR` when its socket exists, else the system service's when that exists,
/// else `/tmp/witness-$UID/witness.sock` only if that folder is the user's own and no one else
/// may write it, else the user's default (whose absence the connection error then names).
///
/// The order matters: `/tmp` is shared, so another user could create `/tmp/witness-$UID`
/// before this user does, start a daemon of their own there, and receive every entry. The
/// system socket comes first, and a `/tmp` folder is used only when it is provably the
/// user's own.
pub fn client_socket_path() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let candidates = Candidates {
        runtime: env_dir("XDG_RUNTIME_DIR")
            .map(|runtime| runtime.join("witness").join("witness.sock")),
        system: PathBuf::from(SYSTEM_SOCKET),
        tmp: PathBuf::from(format!("/tmp/witness-{uid}/witness.sock")),
    };
    if is_root() {
        return candidates.system;
    }
    choose_socket(candidates, uid)
}

/// Where a user's client may find a daemon, in the order it looks.
struct Candidates {
    runtime: Option<PathBuf>,
    system: PathBuf,
    tmp: PathBuf,
}

fn choose_socket(candidates: Candidates, uid: u32) -> PathBuf {
    let Candidates {
        runtime,
        system,
        tmp,
    } = candidates;
    if let Some(own) = runtime.as_ref().filter(|own| own.exists()) {
        return own.clone();
    }
    if system.exists() {
        return system;
    }
    if tmp
        .parent()
        .is_some_and(|folder| is_private_folder(folder, uid))
    {
        return tmp;
    }
    runtime.unwrap_or(system)
}

/// True when `folder` is a real folder (not a link) owned by `uid` that nobody else may write:
/// a socket in it can only be that user's.
pub fn is_private_folder(folder: &std::path::Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(folder).is_ok_and(|metadata| {
        metadata.is_dir() && metadata.uid() == uid && metadata.mode() & 0o022 == 0
    })
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

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn choose(runtime: Option<&PathBuf>, system: &Path, tmp: &Path, uid: u32) -> PathBuf {
        let candidates = Candidates {
            runtime: runtime.cloned(),
            system: system.to_path_buf(),
            tmp: tmp.to_path_buf(),
        };
        choose_socket(candidates, uid)
    }

    #[test]
    fn a_client_falls_back_to_the_system_socket_only_when_its_own_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let uid = std::fs::metadata(dir.path()).unwrap().uid();
        let own = dir.path().join("own.sock");
        let system = dir.path().join("system.sock");
        let tmp = dir.path().join("tmp/witness.sock");
        let choose = || choose(Some(&own), &system, &tmp, uid);
        assert_eq!(choose(), own);
        std::fs::write(&system, "").unwrap();
        assert_eq!(choose(), system);
        std::fs::write(&own, "").unwrap();
        assert_eq!(choose(), own);
    }

    #[test]
    fn a_shared_tmp_folder_is_never_preferred_to_the_system_socket() {
        let dir = tempfile::tempdir().unwrap();
        let uid = std::fs::metadata(dir.path()).unwrap().uid();
        let system = dir.path().join("system.sock");
        let folder = dir.path().join("witness-tmp");
        let tmp = folder.join("witness.sock");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(&tmp, "").unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        // No runtime folder: a private /tmp folder is used when there is no system socket...
        assert_eq!(choose(None, &system, &tmp, uid), tmp);
        // ...but the system socket wins when it exists,
        std::fs::write(&system, "").unwrap();
        assert_eq!(choose(None, &system, &tmp, uid), system);
        std::fs::remove_file(&system).unwrap();
        // and a folder others may write, or another user owns, is never used.
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!is_private_folder(&folder, uid));
        assert_ne!(choose(None, &system, &tmp, uid), tmp);
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_private_folder(&folder, uid));
        assert!(!is_private_folder(&folder, uid + 1));
    }
}
