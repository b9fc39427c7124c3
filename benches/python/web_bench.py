"""The dashboard on a log of a million entries: each API route's latency, the live feed
under 10,000 entries a second, and the weight of the page's assets.

A release `witnessd` (or `$WITNESSD`) with `web_listen` imports `--entries` entries (a month
of 10,000 traces of 100 model calls over five models and three components), then:

- every API route the views use is asked `--requests` times over one keep-alive connection,
  one request at a time; latency is taken at the client on loopback, so it bounds the
  daemon's time from above;
- a live feed is read while four processes `send` entries at 10,000 a second in all for
  `--seconds`: entries and events received a second, and the lag from an entry's receive
  time to its arrival in the feed; the writer's commit p99 beside the same flood without a
  feed, alternating, medians of `--runs`;
- the assets the page loads, summed.

    python3 benches/python/web_bench.py [--entries 1000000] [--requests 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python" / "src"))

import witness  # noqa: E402 (after the path to the package)

DAY_NS = 86_400 * 10**9
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-6", "claude-haiku-4-5", "my-finetune"]
COMPONENTS = ["planner", "coder", "reviewer"]
SENDERS = 4


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def binary(name: str) -> str:
    daemon = pathlib.Path(os.environ.get("WITNESSD", ROOT / "target" / "release" / "witnessd"))
    return str(daemon.with_name(name))


def write_history(path: pathlib.Path, entries: int) -> None:
    now = time.time_ns()
    per_trace = 100
    with path.open("w") as out:
        for n in range(entries):
            trace = n // per_trace
            step = n % per_trace
            date = now - 30 * DAY_NS + (trace * 30 * DAY_NS) // max(entries // per_trace, 1)
            line = {
                "event": "llm_call",
                "component": COMPONENTS[step % 3],
                "trace_id": f"session-{trace:06}",
                "payload": {"step": step, "prompt": "summarise the change and list the risks"},
                "cost": {
                    "tokens_in": 1200 + step,
                    "tokens_out": 300,
                    "cache_read_tokens": 200,
                    "model": MODELS[n % len(MODELS)],
                },
                "client_ts": date + step * 10**9,
            }
            out.write(json.dumps(line) + "\n")


class Dashboard:
    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.socket = str(folder / "w.sock")
        log = open(folder / "witnessd.log", "ab")
        self.process = subprocess.Popen(
            [
                binary("witnessd"),
                "--socket",
                self.socket,
                "--db",
                str(folder / "w.db"),
                "--web-listen",
                f"127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline:
                raise RuntimeError("witnessd did not start")
            time.sleep(0.05)
        self.cookie = ""

    def witness(self, *args: str) -> str:
        done = subprocess.run(
            [binary("witness"), "--socket", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
        return done.stdout

    def log_in(self) -> None:
        url = self.witness("web").strip()
        token = url.split("#token=")[1]
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = json.dumps({"token": token})
        connection.request("POST", "/api/login", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200, answer.status
        self.cookie = answer.getheader("Set-Cookie").split(";")[0]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def time_routes(
    dashboard: Dashboard, requests: int, entries: int
) -> List[Tuple[str, float, float, float]]:
    now = time.time_ns()
    week = str(now - 7 * DAY_NS)
    month = str(now - 30 * DAY_NS)
    routes = [
        "/api/entries?newest=100",
        f"/api/entries?after={entries // 2}&limit=100",
        "/api/entries?component=coder&newest=100",
        "/api/traces?limit=50",
        f"/api/traces?limit=50&since={week}&component=coder",
        f"/api/trace?id=session-{entries // 200:06}",
        f"/api/cost?by=model&since={week}",
        f"/api/cost?by=component&since={week}",
        f"/api/cost?by=day&since={month}",
        f"/api/cost?by=hour&since={now - DAY_NS}",
        f"/api/cost?by=day&since={week}&model=gpt-4o-mini",
        "/api/stats",
        "/api/checkpoint",
        "/api/budgets",
    ]
    results = []
    connection = dashboard.connection()
    headers = {"Cookie": dashboard.cookie}
    for route in routes:
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            connection.request("GET", route, headers=headers)
            answer = connection.getresponse()
            answer.read()
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status == 200, (route, answer.status)
        results.append((route, statistics.median(times), percentile(times, 0.99), max(times)))
    return results


def sender(socket_path: str, rate: float, seconds: float, index: int) -> None:
    """Sends entries at `rate` a second for `seconds`, in batches every 10 ms."""
    with witness.Client(socket_path, flush_at_exit=False) as client:
        started = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                break
            due = int(rate * elapsed)
            for _ in range(due - sent):
                client.send("tick", f"sender-{index}", payload={"n": sent})
                sent += 1
            time.sleep(0.01)
        client.flush(60)


class Feed(threading.Thread):
    """Reads `/api/feed` and notes when each entry arrived."""

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__(daemon=True)
        self.dashboard = dashboard
        self.events = 0
        self.entries = 0
        self.lags_ms: List[float] = []
        self.stop = False

    def run(self) -> None:
        connection = self.dashboard.connection()
        connection.request("GET", "/api/feed?newest=0", headers={"Cookie": self.dashboard.cookie})
        answer = connection.getresponse()
        kind = ""
        while not self.stop:
            line = answer.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: ") and kind == "entries":
                now = time.time_ns()
                entries = json.loads(text[6:])
                self.events += 1
                self.entries += len(entries)
                self.lags_ms.extend((now - entry["ts"]) / 1e6 for entry in entries[::50])


def flood(dashboard: Dashboard, seconds: float, with_feed: bool) -> Dict[str, float]:
    feed: Optional[Feed] = None
    if with_feed:
        feed = Feed(dashboard)
        feed.start()
        time.sleep(0.5)
    before = json.loads(dashboard.witness("stats", "--json"))
    processes = [
        multiprocessing.Process(
            target=sender, args=(dashboard.socket, 10_000 / SENDERS, seconds, index)
        )
        for index in range(SENDERS)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    took = time.monotonic() - started
    after = json.loads(dashboard.witness("stats", "--json"))
    result = {
        "committed_per_sec": (after["entries_total"] - before["entries_total"]) / took,
        "commit_p99_us": after["commit_us"]["p99"],
    }
    if feed is not None:
        time.sleep(1)
        feed.stop = True
        result["feed_entries_per_sec"] = feed.entries / took
        result["feed_events_per_sec"] = feed.events / took
        result["lag_p50_ms"] = statistics.median(feed.lags_ms) if feed.lags_ms else -1
        result["lag_p99_ms"] = percentile(feed.lags_ms, 0.99) if feed.lags_ms else -1
    return result


def asset_weight(dashboard: Dashboard) -> int:
    total = 0
    connection = dashboard.connection()
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/assets/uPlot.iife.min.js",
        "/assets/uPlot.min.css",
    ]:
        connection.request("GET", path, headers={"Cookie": dashboard.cookie})
        answer = connection.getresponse()
        total += len(answer.read())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="web-bench-") as folder_name:
        folder = pathlib.Path(folder_name)
        history = folder / "history.jsonl"
        write_history(history, args.entries)
        dashboard = Dashboard(folder)
        try:
            started = time.monotonic()
            dashboard.witness("import", str(history))
            print(f"imported {args.entries:,} entries in {time.monotonic() - started:.1f} s")
            dashboard.log_in()
            print(f"\nroute latency, ms over {args.requests} requests (client side, loopback)")
            print(f"{'route':60} {'p50':>8} {'p99':>8} {'max':>8}")
            for route, p50, p99, worst in time_routes(dashboard, args.requests, args.entries):
                print(f"{route[:60]:60} {p50:8.2f} {p99:8.2f} {worst:8.2f}")
            print(f"\npage assets: {asset_weight(dashboard):,} bytes")
            print(f"\n10,000 entries/s from {SENDERS} senders for {args.seconds:.0f} s, medians")
            runs: Dict[bool, List[Dict[str, float]]] = {False: [], True: []}
            for _ in range(args.runs):
                for with_feed in (False, True):
                    runs[with_feed].append(flood(dashboard, args.seconds, with_feed))
            for with_feed in (False, True):
                keys = runs[with_feed][0].keys()
                medians = {
                    key: statistics.median(run[key] for run in runs[with_feed]) for key in keys
                }
                label = "with a live feed" if with_feed else "without a feed"
                print(f"{label:18} " + "  ".join(f"{k} {v:,.1f}" for k, v in medians.items()))
        finally:
            dashboard.stop()


if __name__ == "__main__":
    main()
