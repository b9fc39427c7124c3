"""asyncio tasks calling `log`: the AsyncClient on the event loop's own stream beside the
blocking client run in worker threads (`asyncio.to_thread(Client.log)`, which the AsyncClient
did before), in the same run against the same daemon.

For each of `--runs` rounds, alternating: `--tasks` tasks in one process each call `log` (one
entry, answered once committed) in a loop for `--seconds`. Printed: entries a second, the
latency percentiles of a call, and the client process's CPU per entry. Medians of the rounds.

    python3 benches/python/async_log.py [--runs 3] [--seconds 5] [--tasks 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python" / "src"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench import start_daemon  # noqa: E402

import witness  # noqa: E402 (after the path to the package)

PAYLOAD = {"endpoint": "/v1/users", "method": "GET", "status": 200}


def percentile(sorted_values: list, fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def load(kind: str, sock: str, tasks: int, seconds: float) -> dict:
    latencies: list = []
    if kind == "native":
        client = witness.AsyncClient(sock, flush_at_exit=False)

        async def call(i: int) -> None:
            await client.log("api_request", "IF.api", trace_id=f"t-{i}", payload=PAYLOAD)

    else:
        blocking = witness.Client(sock, flush_at_exit=False)

        async def call(i: int) -> None:
            await asyncio.to_thread(
                blocking.log, "api_request", "IF.api", trace_id=f"t-{i}", payload=PAYLOAD
            )

    await call(0)  # connected before the clock starts
    end = time.monotonic() + seconds

    async def task(k: int) -> None:
        i = 0
        while time.monotonic() < end:
            started = time.perf_counter_ns()
            await call(k * 1_000_000 + i)
            latencies.append(time.perf_counter_ns() - started)
            i += 1

    cpu = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(task(k) for k in range(tasks)))
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    if kind == "native":
        await client.close()
    else:
        blocking.close()
    latencies.sort()
    return {
        "entries_per_sec": len(latencies) / elapsed,
        "p50_us": percentile(latencies, 0.5) / 1000,
        "p99_us": percentile(latencies, 0.99) / 1000,
        "client_cpu_us_per_entry": cpu * 1e6 / len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    results: dict = {"native": [], "threads": []}
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(folder)
        try:
            for _ in range(args.runs):
                for kind in ("native", "threads"):
                    result = asyncio.run(
                        load(kind, f"{folder}/witness.sock", args.tasks, args.seconds)
                    )
                    results[kind].append(result)
                    print(kind, json.dumps(result), flush=True)
        finally:
            daemon.terminate()
            daemon.wait()
    medians = {
        kind: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for kind, runs in results.items()
    }
    print(json.dumps({"tasks": args.tasks, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
