"""The local spool: appends of `send` that a process could not deliver before it exited,
kept in a file of the user's runtime folder until a later client delivers them.

Each batch keeps the producer id and entry numbers it was (or would have been) sent with, so
a delivery that repeats one the daemon had committed before the connection broke is
recognised and answered with the old receipts (docs/PROTOCOL.md, "Exactly once"): every
entry is recorded once, however often delivery is tried. A file is claimed by renaming it
before delivery, so two clients never deliver the same file at once.

File: `WITSPOOL1\\n`, then per batch `producer_id: u64, first_number: u64, count: u32` and
`count` entries as `length: u32` and the encoded entry (docs/PROTOCOL.md, "Entry"), all
little-endian, then the SHA-256 of everything before it. Private to the user (0600, in a
0700 folder); at most `MAX_BYTES` a file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from typing import List, Optional, Tuple

MAGIC = b"WITSPOOL1\n"
#: The most a spool file holds; what would not fit is reported lost, not kept.
MAX_BYTES = 64 * 1024 * 1024

#: A batch: the producer id, the number of its first entry, and the encoded entries.
Batch = Tuple[int, int, List[bytes]]


def folder(socket_path: str, create: bool = True) -> Optional[str]:
    """The spool folder for the daemon at `socket_path`, made private if need be (unless
    `create` is false); `None` when no folder of the user's own can be had."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime) or not os.path.isdir(runtime):
        runtime = f"/run/user/{uid}"
        if not os.path.isdir(runtime):
            runtime = os.path.join(tempfile.gettempdir(), f"witness-spool-{uid}")
    digest = hashlib.sha256(os.path.abspath(socket_path).encode()).hexdigest()[:16]
    path = os.path.join(runtime, "witness", f"spool-{digest}")
    parent = os.path.dirname(path)
    try:
        if create and runtime.startswith(tempfile.gettempdir()):
            try:
                os.mkdir(runtime, 0o700)
            except FileExistsError:
                pass
        # The runtime folder too: one that others may write lets them swap what is in it.
        top = os.lstat(runtime)
        if os.path.islink(runtime) or top.st_uid != uid or top.st_mode & 0o022:
            return None
        for part in (parent, path) if create else ():
            try:
                os.mkdir(part, 0o700)
            except FileExistsError:
                pass
        # Another user's folder, or one others may write, could be read or filled: the
        # parent (perhaps the user daemon's socket folder) must be the user's and closed to
        # writes by others, the spool folder the user's alone.
        shared = os.lstat(parent)
        own = os.lstat(path)
        if os.path.islink(parent) or shared.st_uid != uid or shared.st_mode & 0o022:
            return None
        if os.path.islink(path) or own.st_uid != uid or own.st_mode & 0o077:
            return None
    except OSError:
        return None
    return path


def encode(batches: List[Batch]) -> bytes:
    out = bytearray(MAGIC)
    for producer, first, entries in batches:
        out += struct.pack("<QQI", producer, first, len(entries))
        for entry in entries:
            out += struct.pack("<I", len(entry)) + entry
    out += hashlib.sha256(out).digest()
    return bytes(out)


def decode(data: bytes) -> List[Batch]:
    """The batches of a spool file; raises `ValueError` naming what is wrong."""
    if len(data) < len(MAGIC) + 32 or not data.startswith(MAGIC):
        raise ValueError("not a witness spool file")
    body, check = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != check:
        raise ValueError("its checksum does not match: cut short or changed")
    try:
        return _batches(body)
    except struct.error as error:
        raise ValueError(f"a batch runs past the end: {error}") from None


def _batches(body: bytes) -> List[Batch]:
    batches: List[Batch] = []
    at = len(MAGIC)
    while at < len(body):
        producer, first, count = struct.unpack_from("<QQI", body, at)
        at += 20
        entries = []
        for _ in range(count):
            (length,) = struct.unpack_from("<I", body, at)
            at += 4
            if at + length > len(body):
                raise ValueError("an entry runs past the end")
            entries.append(body[at : at + length])
            at += length
        batches.append((producer, first, entries))
    return batches


def write(socket_path: str, batches: List[Batch]) -> Optional[str]:
    """Keeps `batches` in a new spool file, durably; the file's path, or `None` when they
    could not be kept (no private folder, too large, or the write failed)."""
    where = folder(socket_path)
    data = encode(batches)
    if where is None or len(data) > MAX_BYTES:
        return None
    path = os.path.join(where, f"{os.getpid()}-{batches[0][0]:x}.spool")
    partial = path + ".partial"
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.rename(partial, path)
        directory = os.open(where, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        return None
    return path


def _abandoned(name: str) -> bool:
    """Whether `name` is a claim (`NAME.PID.claimed`) by a process that no longer exists."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[2] != "claimed" or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def claim(socket_path: str) -> List[str]:
    """Takes the spool files waiting for the daemon at `socket_path`: each is renamed to a
    name of this process's, so that no other client delivers it too. A file claimed by a
    process that has died (killed mid-delivery) is taken over."""
    where = folder(socket_path, create=False)
    if where is None or not os.path.isdir(where):
        return []
    claimed = []
    for name in sorted(os.listdir(where)):
        if name.endswith(".spool"):
            original = name
        elif _abandoned(name):
            original = name.rsplit(".", 2)[0]
        else:
            continue
        path = os.path.join(where, name)
        mine = f"{os.path.join(where, original)}.{os.getpid()}.claimed"
        try:
            os.rename(path, mine)
        except OSError:
            continue  # another client took it first
        claimed.append(mine)
    return claimed


def give_back(claimed: str) -> None:
    """Returns a claimed file for a later delivery."""
    try:
        os.rename(claimed, claimed.rsplit(".", 2)[0])
    except OSError:
        pass
