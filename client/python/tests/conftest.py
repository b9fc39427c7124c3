"""Fixtures: a real witnessd (the release binary, built beforehand: this builds nothing) on
a temporary socket and database, and readers of that database with sqlite3."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import time
from typing import Iterator, List, Optional

import pytest

import witness

ROOT = pathlib.Path(__file__).resolve().parents[3]


def witnessd_binary() -> pathlib.Path:
    named = os.environ.get("WITNESSD")
    path = pathlib.Path(named) if named else ROOT / "target" / "release" / "witnessd"
    if not path.exists():
        pytest.fail(
            f"{path} is missing: build it first (cargo build --release --locked --bins), "
            "or name it in WITNESSD"
        )
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


class Daemon:
    """A witnessd in a folder of its own; `restart` and `kill9` keep the folder."""

    def __init__(self, folder: pathlib.Path, extra: Optional[List[str]] = None) -> None:
        self.folder = folder
        self.socket = str(folder / "witness.sock")
        self.db = str(folder / "witness.db")
        self.extra = extra or []
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def start(self) -> None:
        log = open(self.folder / "witnessd.log", "ab")
        self.process = subprocess.Popen(
            [str(witnessd_binary()), "--socket", self.socket, "--db", self.db, *self.extra],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket)
                return
            except OSError:
                time.sleep(0.02)
            finally:
                probe.close()
        raise RuntimeError(f"witnessd did not start: {self.log()}")

    def log(self) -> str:
        return (self.folder / "witnessd.log").read_text(errors="replace")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def client(self, **options: object) -> witness.Client:
        return witness.Client(self.socket, flush_at_exit=False, **options)  # type: ignore[arg-type]

    def rows(self, sql: str, *args: object) -> List[tuple]:
        connection = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return connection.execute(sql, args).fetchall()
        finally:
            connection.close()


@pytest.fixture
def daemon(tmp_path: pathlib.Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[witness.Client]:
    made = daemon.client()
    yield made
    made.close()
