"""The OTLP/HTTP receiver's throughput and latency, beside the socket in the same run.

Four processes export spans to `witnessd`'s OTLP listener in requests of 512 (what the SDK's
`BatchSpanProcessor` sends), binary protobuf over keep-alive HTTP/1.1 connections, each
request encoded beforehand so that the figures are the daemon's, not the encoder's. Each
answer is a 200 after commit (`sync = full`). Then the same at half that rate, open loop,
with each export's latency taken from its intended send time: once with the four schedules
a quarter period apart, as independent processes' batch processors are (`half_rate`), and
once with all four sending at the same instants (`aligned`), a burst of four at a time.
Beside them, four processes `send` the same number of entries through the socket with the
Python client, batches of 512. The daemon's CPU time per item is read from /proc. Medians
of `--runs` runs, the two transports alternating; the daemon is the release `witnessd` (or
`$WITNESSD`).

    python3 benches/python/otlp_bench.py [--runs 3] [--requests 100]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python" / "src"))

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402
from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: E402
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402

import witness  # noqa: E402 (after the path to the package)

EXPORTERS = 4
BATCH = 512


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def attribute(key: str, value: object) -> common_pb2.KeyValue:
    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=str(value)))


def request(process: int, index: int) -> bytes:
    """512 spans of a chat call each, ids unique to the process and the request."""
    spans = []
    for n in range(BATCH):
        spans.append(
            trace_pb2.Span(
                trace_id=(process * 1_000_000 + index).to_bytes(16, "big"),
                span_id=(n + 1).to_bytes(8, "big"),
                parent_span_id=b"\x01" * 8,
                name="chat gpt-4o-mini",
                kind=3,
                start_time_unix_nano=time.time_ns(),
                end_time_unix_nano=time.time_ns() + 1_000_000,
                attributes=[
                    attribute("gen_ai.operation.name", "chat"),
                    attribute("gen_ai.request.model", "gpt-4o-mini"),
                    attribute("gen_ai.usage.input_tokens", 1200),
                    attribute("gen_ai.usage.output_tokens", 300),
                ],
            )
        )
    message = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[attribute("service.name", "bench")]),
                scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
            )
        ]
    )
    return message.SerializeToString()


def exporter(args: Tuple[int, int, int, float, float]) -> List[float]:
    """Sends `count` requests; with a `period`, one each `period` seconds from `start`
    (open loop), else back to back. Latencies in milliseconds."""
    port, process, count, period, start = args
    bodies = [request(process, index) for index in range(count)]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    while time.time() < start:
        time.sleep(0.001)
    for index, body in enumerate(bodies):
        intended = start + index * period if period else time.time()
        while period and time.time() < intended:
            time.sleep(0.0005)
        connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"export answered {answer.status}")
        latencies.append((time.time() - intended) * 1000)
    connection.close()
    return latencies


def sender(args: Tuple[str, int, float]) -> None:
    path, count, start = args
    client = witness.Client(path, flush_at_exit=False)
    cost = witness.Cost(tokens_in=1200, tokens_out=300, model="gpt-4o-mini")
    while time.time() < start:
        time.sleep(0.001)
    for index in range(count):
        for n in range(BATCH):
            client.send("chat", "bench", trace_id=f"{index:016x}{n:016x}", cost=cost)
    client.flush(timeout=120)
    client.close()


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_once(binary: str, requests: int) -> dict:
    folder = tempfile.mkdtemp(prefix="otlp-bench-")
    port = free_port()
    sock = os.path.join(folder, "w.sock")
    daemon = subprocess.Popen(
        [
            binary,
            "--socket",
            sock,
            "--db",
            os.path.join(folder, "w.db"),
            "--otlp-listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        figures = {}
        with multiprocessing.Pool(EXPORTERS) as pool:
            # Back to back: the most the receiver takes.
            cpu = cpu_seconds(daemon.pid)
            start = time.time() + 1.0
            lists = pool.map(exporter, [(port, p, requests, 0.0, start) for p in range(EXPORTERS)])
            elapsed = time.time() - start
            spans = EXPORTERS * requests * BATCH
            latencies = [x for xs in lists for x in xs]
            figures["otlp_spans_per_sec"] = spans / elapsed
            figures["otlp_p50_ms"] = percentile(latencies, 0.5)
            figures["otlp_p99_ms"] = percentile(latencies, 0.99)
            figures["otlp_cpu_us_per_span"] = (cpu_seconds(daemon.pid) - cpu) / spans * 1e6
            # Open loop at half that rate.
            period = EXPORTERS * BATCH / (figures["otlp_spans_per_sec"] / 2)
            # Each exporter's schedule is offset by a quarter period, as independent
            # processes' batch processors are; `aligned` has all four send at the same
            # instants, a burst of four requests at once.
            for base, name, spread in ((10, "half_rate", period / EXPORTERS), (20, "aligned", 0.0)):
                start = time.time() + 1.0
                lists = pool.map(
                    exporter,
                    [
                        (port, base + p, requests // 2, period, start + p * spread)
                        for p in range(EXPORTERS)
                    ],
                )
                latencies = [x for xs in lists for x in xs]
                figures[f"{name}_p50_ms"] = percentile(latencies, 0.5)
                figures[f"{name}_p99_ms"] = percentile(latencies, 0.99)
            # The socket, the same entries.
            cpu = cpu_seconds(daemon.pid)
            start = time.time() + 1.0
            pool.map(sender, [(sock, requests, start) for _ in range(EXPORTERS)])
            elapsed = time.time() - start
            figures["send_entries_per_sec"] = spans / elapsed
            figures["send_cpu_us_per_entry"] = (cpu_seconds(daemon.pid) - cpu) / spans * 1e6
        return figures
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="requests an exporter")
    args = parser.parse_args()
    binary = os.environ.get("WITNESSD", str(ROOT / "target" / "release" / "witnessd"))
    runs = [run_once(binary, args.requests) for _ in range(args.runs)]
    for key in runs[0]:
        values = [run[key] for run in runs]
        shown = ", ".join(f"{value:.1f}" for value in values)
        print(f"{key:24} median {statistics.median(values):10.1f}   ({shown})")


if __name__ == "__main__":
    main()
