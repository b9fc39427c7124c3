"""Small durable commits: witness `log` beside PostgreSQL, fsync on both sides, in one run.

For each of `--runs` rounds, alternating: `--clients` Python processes each call `log` (one
entry, answered once durable) for `--seconds`; then Debian's PostgreSQL (started here in a
temporary folder, `fsync = on`, `synchronous_commit = on`) takes `pgbench -c CLIENTS -j 2`
with one INSERT a transaction into a table of witness's columns and its four indexes
(trace, component, event, time); then, when psycopg is installed, as many Python processes
INSERT with autocommit. Beside the throughput: latency percentiles, the daemon's CPU per
entry, and the WAL written per single-entry commit on both sides (witness: the growth of
its WAL file over 200 lone `log`s with no checkpoint in between; PostgreSQL:
`pg_current_wal_lsn` over the pgbench run), and a lone `log`'s p50 (2,000 calls from one
process, on a daemon as configured by default) beside the fsync it waits for (eleven 4 KiB
pages rewritten and `fsync`ed, in the same folder). Medians are printed and written as
JSON.

    python3 benches/python/small_commits.py [--runs 3] [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import pwd
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python" / "src"))

import witness  # noqa: E402 (after the path to the package)

PAYLOAD = {"endpoint": "/v1/users", "method": "GET", "status": 200}
TICKS = os.sysconf("SC_CLK_TCK")

TABLE = """
CREATE TABLE entries (
    seq BIGSERIAL PRIMARY KEY, ts BIGINT NOT NULL, client_ts BIGINT, event TEXT NOT NULL,
    component TEXT NOT NULL, trace_id TEXT, payload TEXT NOT NULL, tokens_in BIGINT,
    tokens_out BIGINT, cache_read_tokens BIGINT, reasoning_tokens BIGINT,
    cost_micro_usd BIGINT, model TEXT, hash BYTEA NOT NULL
);
CREATE INDEX entries_by_trace ON entries (trace_id, seq) WHERE trace_id IS NOT NULL;
CREATE INDEX entries_by_component ON entries (component, seq);
CREATE INDEX entries_by_event ON entries (event, seq);
CREATE INDEX entries_by_time ON entries (coalesce(client_ts, ts));
"""

INSERT = (
    "INSERT INTO entries (ts, event, component, trace_id, payload, tokens_in, tokens_out, "
    "cost_micro_usd, model, hash) VALUES ({ts}, 'api_request', 'IF.api', {trace}, "
    '\'{{"endpoint": "/v1/users", "method": "GET", "status": 200}}\', 100, 50, 1000, '
    "'claude-haiku-4.5', {hash})"
)


def percentile(sorted_values: list, q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def logger(socket_path: str, seconds: float, start: float, out: multiprocessing.Queue) -> None:
    client = witness.Client(socket_path, flush_at_exit=False)
    cost = witness.Cost(tokens_in=100, tokens_out=50, cost_usd="0.001", model="claude-haiku-4.5")
    while time.time() < start:
        time.sleep(0.0005)
    latencies = []
    clock = time.perf_counter_ns
    end = start + seconds
    i = 0
    while time.time() < end:
        before = clock()
        client.log("api_request", "IF.api", trace_id=f"t-{i % 100}", payload=PAYLOAD, cost=cost)
        latencies.append(clock() - before)
        i += 1
    out.put(latencies)
    client.close()


def inserter(dsn: str, seconds: float, start: float, out: multiprocessing.Queue) -> None:
    import psycopg

    connection = psycopg.connect(dsn, autocommit=True)
    statement = INSERT.format(ts="%s", trace="%s", hash="%s")
    while time.time() < start:
        time.sleep(0.0005)
    latencies = []
    clock = time.perf_counter_ns
    end = start + seconds
    i = 0
    while time.time() < end:
        before = clock()
        connection.execute(statement, (time.time_ns(), f"t-{i % 100}", os.urandom(32)))
        latencies.append(clock() - before)
        i += 1
    out.put(latencies)
    connection.close()


def run_processes(target, arg: str, clients: int, seconds: float) -> dict:
    out: multiprocessing.Queue = multiprocessing.Queue()
    start = time.time() + 0.5
    workers = [
        multiprocessing.Process(target=target, args=(arg, seconds, start, out))
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    results = [out.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(value for per in results for value in per)
    return {
        "entries_per_sec": len(latencies) / seconds,
        "p50_us": percentile(latencies, 0.5) / 1000,
        "p99_us": percentile(latencies, 0.99) / 1000,
    }


LONE_CALLS = 2000


def fsync_p50_us(folder: str, pages: int = 11, rounds: int = 2000) -> float:
    """The median time to write `pages` 4 KiB pages over a file's first pages and `fsync`
    it, in µs: what a single-entry commit's WAL frames cost on this disk, in the same folder
    and run as the lone `log`s it is the floor of."""
    path = pathlib.Path(folder, "fsync-probe")
    page = b"\x5a" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, page * pages)
        os.fsync(fd)
        times = []
        for _ in range(rounds):
            started = time.perf_counter_ns()
            os.pwrite(fd, page * pages, 0)
            os.fsync(fd)
            times.append(time.perf_counter_ns() - started)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return percentile(times, 0.5) / 1000


def start_daemon(folder: str, config: str) -> subprocess.Popen:
    binary = os.environ.get("WITNESSD", str(ROOT / "target" / "release" / "witnessd"))
    sock = f"{folder}/witness.sock"
    path = pathlib.Path(folder, "witnessd.toml")
    path.write_text(config)
    daemon = subprocess.Popen(
        [binary, "--config", str(path), "--socket", sock, "--db", f"{folder}/witness.db"],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(1000):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(sock)
            return daemon
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()
    raise RuntimeError("witnessd did not start")


def stop_daemon(daemon: subprocess.Popen) -> None:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)


def witness_round(clients: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        # No checkpoint into the main file while measuring, so that the WAL only grows.
        daemon = start_daemon(folder, "checkpoint_pages = 1048576\n")
        try:
            client = witness.Client(f"{folder}/witness.sock", flush_at_exit=False)
            for _ in range(300):  # past the first tile, as a log in use is
                client.log("warm", "bench", payload=PAYLOAD)
            wal = pathlib.Path(f"{folder}/witness.db-wal")
            before = wal.stat().st_size
            for i in range(200):
                client.log("api_request", "IF.api", trace_id=f"t-{i}", payload=PAYLOAD)
            wal_per_commit = (wal.stat().st_size - before) / 200
            client.close()
        finally:
            stop_daemon(daemon)
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(folder, "")
        try:
            # The lone `log`s on a daemon as configured by default, whose WAL restarts and is
            # rewritten in place: a WAL that only grows (the daemon above) syncs its file's
            # new size too, which made the lone figure some 100 µs longer.
            fsync_p50 = fsync_p50_us(folder)
            client = witness.Client(f"{folder}/witness.sock", flush_at_exit=False)
            for _ in range(300):
                client.log("warm", "bench", payload=PAYLOAD)
            lone = []
            for i in range(LONE_CALLS):
                started = time.perf_counter_ns()
                client.log("api_request", "IF.api", trace_id=f"t-{i}", payload=PAYLOAD)
                lone.append(time.perf_counter_ns() - started)
            client.close()
            lone.sort()
            cpu = cpu_seconds(daemon.pid)
            result = run_processes(logger, f"{folder}/witness.sock", clients, seconds)
            cpu = cpu_seconds(daemon.pid) - cpu
        finally:
            stop_daemon(daemon)
    result["wal_bytes_per_commit"] = wal_per_commit
    result["lone_p50_us"] = percentile(lone, 0.5) / 1000
    result["fsync_p50_us"] = fsync_p50
    result["cpu_us_per_entry"] = cpu * 1e6 / (result["entries_per_sec"] * seconds)
    return result


class Postgres:
    """A throwaway server: initdb in a temporary folder, as `postgres` when run as root."""

    def __init__(self) -> None:
        bins = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise SystemExit("PostgreSQL's server (Debian's postgresql package) is not installed")
        self.bin = bins[-1].parent
        self.dir = tempfile.TemporaryDirectory()
        self.user = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir.name, entry.pw_uid, entry.pw_gid)
            self.user = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
                "--",
            ]
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        data = f"{self.dir.name}/data"
        self.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(f"{data}/postgresql.auto.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = ''\n"
                f"unix_socket_directories = '{self.dir.name}'\n"
                "fsync = on\nsynchronous_commit = on\nmax_connections = 200\n"
            )
        self.run("pg_ctl", "-D", data, "-l", f"{self.dir.name}/log", "-w", "start")
        self.psql(TABLE)

    def run(self, tool: str, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*self.user, str(self.bin / tool), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.dir.name,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def psql(self, sql: str) -> str:
        return self.run(
            "psql", "-h", self.dir.name, "-p", str(self.port), "-U", "postgres", "-qAt",
            "-v", "ON_ERROR_STOP=1", "-c", sql,
        )  # fmt: skip

    def dsn(self) -> str:
        return f"host={self.dir.name} port={self.port} user=postgres dbname=postgres"

    def pgbench(self, clients: int, seconds: float) -> dict:
        script = pathlib.Path(self.dir.name, "insert.sql")
        script.write_text(
            INSERT.format(
                ts="(extract(epoch from clock_timestamp()) * 1e9)::bigint",
                trace="'t-' || (random() * 100)::int",
                hash="sha256(random()::text::bytea)",
            )
            + ";\n"
        )
        os.chmod(script, 0o644)
        before = self.psql("SELECT pg_current_wal_lsn()").strip()
        out = self.run(
            "pgbench", "-h", self.dir.name, "-p", str(self.port), "-U", "postgres", "-n",
            "-c", str(clients), "-j", "2", "-T", str(int(seconds)), "-f", str(script),
            "-r", "postgres",
        )  # fmt: skip
        wal = float(self.psql(f"SELECT pg_current_wal_lsn() - '{before}'::pg_lsn").strip())
        tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
        transactions = int(re.search(r"number of transactions actually processed: (\d+)", out)[1])
        latency = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))
        return {
            "entries_per_sec": tps,
            "mean_us": latency * 1000,
            "wal_bytes_per_commit": wal / max(transactions, 1),
        }

    def stop(self) -> None:
        self.run("pg_ctl", "-D", f"{self.dir.name}/data", "-m", "fast", "-w", "stop")
        self.dir.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "small_commits.json"))
    args = parser.parse_args()
    try:
        import psycopg  # noqa: F401 (only whether it is there)

        with_psycopg = True
    except ImportError:
        with_psycopg = False
        print("psycopg is not installed: the Python INSERT peer is left out", file=sys.stderr)
    postgres = Postgres()
    runs = []
    try:
        for run in range(args.runs):
            result = {"witness_log": witness_round(args.clients, args.seconds)}
            result["pgbench"] = postgres.pgbench(args.clients, args.seconds)
            if with_psycopg:
                result["psycopg"] = run_processes(
                    inserter, postgres.dsn(), args.clients, args.seconds
                )
            runs.append(result)
            print(f"run {run + 1}: {json.dumps(result)}", file=sys.stderr)
    finally:
        postgres.stop()

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in runs if side in r)

    medians = {side: {key: median(side, key) for key in runs[0][side]} for side in runs[0]}
    print(f"{args.clients} clients, {args.seconds:g} s each, medians of {args.runs} runs")
    for side, values in medians.items():
        shown = ", ".join(f"{key} {value:,.1f}" for key, value in values.items())
        print(f"  {side}: {shown}")
    pg = medians["pgbench"]["entries_per_sec"]
    print(f"  witness log / pgbench: {medians['witness_log']['entries_per_sec'] / pg:.2f}")
    if "psycopg" in medians:
        ratio = medians["witness_log"]["entries_per_sec"] / medians["psycopg"]["entries_per_sec"]
        print(f"  witness log / psycopg: {ratio:.2f}")
    pathlib.Path(args.out).parent.mkdir(exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
