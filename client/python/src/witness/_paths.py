"""Where the daemon's socket is when nobody says: the same rule as the Rust client and the
`witness` command line (docs/PROTOCOL.md, "Transport")."""

from __future__ import annotations

import os
import stat

#: The environment variable that names the socket.
SOCKET_ENV = "WITNESS_SOCKET"
#: The system service's socket.
SYSTEM_SOCKET = "/run/witness/witness.sock"


def _private_folder(folder: str, uid: int) -> bool:
    """A real folder (not a link) owned by `uid` that nobody else may write."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and info.st_mode & 0o022 == 0


def socket_path() -> str:
    """`$WITNESS_SOCKET`; else, for root, the system socket; else the user's own daemon's
    socket under `$XDG_RUNTIME_DIR` if it exists, else the system socket if it exists, else
    `/tmp/witness-$UID/witness.sock` if that folder is provably the user's, else the user's
    default (whose absence the connection error then names)."""
    named = os.environ.get(SOCKET_ENV)
    if named:
        return named
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    runtime = (
        os.path.join(runtime_dir, "witness", "witness.sock") if os.path.isabs(runtime_dir) else None
    )
    if runtime is not None and os.path.exists(runtime):
        return runtime
    if os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    uid = os.getuid()
    tmp = f"/tmp/witness-{uid}/witness.sock"
    if _private_folder(os.path.dirname(tmp), uid):
        return tmp
    return runtime if runtime is not None else SYSTEM_SOCKET
