"""The Python client against the system it replaces, in the same run.

Eight Python processes `send` entries through witnessd (then `flush`); beside them, eight
Python processes write the same entries into SQLite directly with the older system's settings
(WAL, synchronous=NORMAL, a 10 MB cache, memory-mapped I/O; one transaction per entry that
reads the last hash and chains onto it), and again with synchronous=FULL, the durability
witness gives. Also `log` latency from one process. Medians of
`--runs` runs; the daemon is the release `witnessd` (or `$WITNESSD`).

    python3 benches/python/bench.py [--runs 3] [--entries 50000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import pathlib
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python" / "src"))

import witness  # noqa: E402 (after the path to the package)

PROCESSES = 8
PAYLOAD = {"endpoint": "/v1/users", "method": "GET", "status": 200}


def entry_cost() -> witness.Cost:
    return witness.Cost(tokens_in=100, tokens_out=50, cost_usd="0.001", model="claude-haiku-4.5")


def percentile(sorted_values: list, q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def wait_for(start: float) -> None:
    """Waits until every worker's common start time, so that they all begin together."""
    while time.time() < start:
        time.sleep(0.0005)


def sender(socket_path: str, n: int, start: float, out: multiprocessing.Queue) -> None:
    client = witness.Client(socket_path, flush_at_exit=False)
    cost = entry_cost()
    wait_for(start)
    costs = []
    clock = time.perf_counter_ns
    for i in range(n):
        before = clock()
        client.send("api_request", "IF.api", trace_id=f"t-{i % 100}", payload=PAYLOAD, cost=cost)
        costs.append(clock() - before)
    client.flush()
    out.put((time.time(), costs))
    client.close()


def direct(target: str, n: int, start: float, out: multiprocessing.Queue) -> None:
    db, synchronous = target.split("|")
    connection = sqlite3.connect(db, timeout=60, isolation_level=None)
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA cache_size=-10000")
    connection.execute("PRAGMA mmap_size=268435456")
    connection.execute("PRAGMA temp_store=MEMORY")
    wait_for(start)
    costs = []
    clock = time.perf_counter_ns
    for i in range(n):
        before = clock()
        payload = json.dumps(PAYLOAD)
        connection.execute("BEGIN IMMEDIATE")
        row = connection.execute("SELECT hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        previous = row[0] if row else "0" * 64
        content = f"{previous}|api_request|IF.api|t-{i % 100}|{payload}|100|50|0.001"
        digest = hashlib.sha256(content.encode()).hexdigest()
        connection.execute(
            "INSERT INTO entries (event, component, trace_id, payload, tokens_in, tokens_out, "
            "cost_usd, model, hash, previous_hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                "api_request",
                "IF.api",
                f"t-{i % 100}",
                payload,
                100,
                50,
                0.001,
                "claude-haiku-4.5",
                digest,
                previous,
            ),
        )
        connection.execute("COMMIT")
        costs.append(clock() - before)
    out.put((time.time(), costs))
    connection.close()


def run_group(target, arg: str, n: int) -> dict:
    out: multiprocessing.Queue = multiprocessing.Queue()
    start = time.time() + 0.5
    workers = [
        multiprocessing.Process(target=target, args=(arg, n, start, out)) for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    results = [out.get() for _ in workers]
    for worker in workers:
        worker.join()
    end = max(finished for finished, _ in results)
    costs = sorted(c for _, per in results for c in per)
    return {
        "entries_per_sec": PROCESSES * n / (end - start),
        "call_p50_us": percentile(costs, 0.5) / 1000,
        "call_p99_us": percentile(costs, 0.99) / 1000,
    }


def start_daemon(folder: str) -> subprocess.Popen:
    binary = os.environ.get("WITNESSD", str(ROOT / "target" / "release" / "witnessd"))
    sock = f"{folder}/witness.sock"
    process = subprocess.Popen(
        [binary, "--socket", sock, "--db", f"{folder}/witness.db"],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(1000):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(sock)
            return process
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()
    raise RuntimeError("witnessd did not start")


def one_run(n: int, logs: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(folder)
        try:
            sent = run_group(sender, f"{folder}/witness.sock", n)
            client = witness.Client(f"{folder}/witness.sock", flush_at_exit=False)
            cost = entry_cost()
            latencies = []
            for i in range(logs):
                before = time.perf_counter_ns()
                client.log("api_request", "IF.api", trace_id=f"t-{i}", payload=PAYLOAD, cost=cost)
                latencies.append(time.perf_counter_ns() - before)
            client.close()
            latencies.sort()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait()
        peers = {}
        for synchronous, entries in (("NORMAL", n), ("FULL", max(1, n // 20))):
            db = f"{folder}/direct-{synchronous}.db"
            setup = sqlite3.connect(db)
            setup.execute("PRAGMA journal_mode=WAL")
            setup.execute(
                "CREATE TABLE entries (id INTEGER PRIMARY KEY, event TEXT, component TEXT, "
                "trace_id TEXT, payload TEXT, tokens_in INTEGER, tokens_out INTEGER, "
                "cost_usd REAL, model TEXT, hash TEXT, previous_hash TEXT, "
                "created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
            )
            setup.close()
            peers[synchronous] = run_group(direct, f"{db}|{synchronous}", entries)
    return {
        "send": sent,
        "direct": peers["NORMAL"],
        "direct_full": peers["FULL"],
        "log_p50_us": percentile(latencies, 0.5) / 1000,
        "log_p99_us": percentile(latencies, 0.99) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--entries", type=int, default=50_000, help="sends per process")
    parser.add_argument("--logs", type=int, default=2_000, help="log calls, one process")
    args = parser.parse_args()
    runs = [one_run(args.entries, args.logs) for _ in range(args.runs)]

    def med(pick) -> float:
        return statistics.median(pick(run) for run in runs)

    send = med(lambda r: r["send"]["entries_per_sec"])
    peer = med(lambda r: r["direct"]["entries_per_sec"])
    print(f"runs: {args.runs}, {PROCESSES} processes, {args.entries} sends each (medians)")
    print("| workload | entries/s | call p50 µs | call p99 µs |")
    print("|---|---:|---:|---:|")
    print(
        f"| Python `send`, {PROCESSES} processes | {send:.0f} | "
        f"{med(lambda r: r['send']['call_p50_us']):.1f} | "
        f"{med(lambda r: r['send']['call_p99_us']):.1f} |"
    )
    print(
        f"| Python direct SQLite (old settings), {PROCESSES} processes | {peer:.0f} | "
        f"{med(lambda r: r['direct']['call_p50_us']):.1f} | "
        f"{med(lambda r: r['direct']['call_p99_us']):.1f} |"
    )
    print(
        f"| Python direct SQLite, synchronous=FULL, {PROCESSES} processes | "
        f"{med(lambda r: r['direct_full']['entries_per_sec']):.0f} | "
        f"{med(lambda r: r['direct_full']['call_p50_us']):.1f} | "
        f"{med(lambda r: r['direct_full']['call_p99_us']):.1f} |"
    )
    print(
        f"| Python `log`, 1 process | | {med(lambda r: r['log_p50_us']):.1f} | "
        f"{med(lambda r: r['log_p99_us']):.1f} |"
    )
    full = med(lambda r: r["direct_full"]["entries_per_sec"])
    print(f"send / direct (old settings): {send / peer:.1f}x")
    print(f"send / direct (synchronous=FULL): {send / full:.1f}x")


if __name__ == "__main__":
    main()
