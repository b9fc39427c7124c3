"""The OTLP/HTTP receiver against the real OpenTelemetry SDK and exporters, the OpenAI
instrumentation, hand-written OTLP/JSON, and garbage: what lands, what is said, and that a
re-sent export is stored once (docs/OTLP.md)."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import ROOT, Daemon, free_port


def lower(headers: object) -> Dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}  # type: ignore[attr-defined]


class Receiver:
    """A witnessd with an OTLP listener on a port of its own."""

    def __init__(self, folder: pathlib.Path, extra: Optional[List[str]] = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.daemon = Daemon(folder, ["--otlp-listen", f"127.0.0.1:{self.port}", *(extra or [])])

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/x-protobuf",
        headers: Optional[Dict[str, str]] = None,
        method: str = "POST",
    ) -> Tuple[int, Dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, lower(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, lower(error.headers), error.read()

    def entries(self, where: str = "1", *args: object) -> List[tuple]:
        return self.daemon.rows(
            "SELECT event, component, trace_id, tokens_in, tokens_out, cache_read_tokens, "
            f"reasoning_tokens, cost_micro_usd, model, payload, uid FROM entries WHERE {where} "
            "ORDER BY seq",
            *args,
        )

    def witness(self, *args: str) -> str:
        binary = pathlib.Path(os.environ.get("WITNESSD", ROOT / "target/release/witnessd"))
        done = subprocess.run(
            [str(binary.with_name("witness")), "--socket", self.daemon.socket, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def receiver(tmp_path: pathlib.Path) -> Iterator[Receiver]:
    made = Receiver(tmp_path)
    yield made
    made.daemon.stop()


def attribute(key: str, value: object) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        any_value = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = common_pb2.AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = common_pb2.AnyValue(double_value=value)
    else:
        any_value = common_pb2.AnyValue(string_value=str(value))
    return common_pb2.KeyValue(key=key, value=any_value)


def spans_request(
    service: str, spans: List[Tuple[bytes, bytes, str]]
) -> trace_service_pb2.ExportTraceServiceRequest:
    """A request of spans given as (trace id, span id, name)."""
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[attribute("service.name", service)]),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        spans=[
                            trace_pb2.Span(
                                trace_id=trace_id,
                                span_id=span_id,
                                name=name,
                                start_time_unix_nano=1_700_000_000_000_000_000,
                                end_time_unix_nano=1_700_000_000_500_000_000,
                            )
                            for trace_id, span_id, name in spans
                        ]
                    )
                ],
            )
        ]
    )


def test_spans_from_the_sdk_land_with_model_tokens_and_trace(receiver: Receiver) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
    exporter = OTLPSpanExporter(endpoint=receiver.base + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("session") as parent:
        trace_id = format(parent.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            span.set_attribute("gen_ai.usage.input_tokens", 120)
            span.set_attribute("gen_ai.usage.output_tokens", 30)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", 100)
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", 8)
        with tracer.start_as_current_span("old names") as span:
            span.set_attribute("gen_ai.request.model", "gpt-3.5-turbo")
            span.set_attribute("gen_ai.usage.prompt_tokens", 5)
            span.set_attribute("gen_ai.usage.completion_tokens", 6)
    assert provider.force_flush(30_000)
    provider.shutdown()
    rows = receiver.entries()
    assert [row[0] for row in rows] == ["chat", "old names", "session"]
    chat, old, session = rows
    assert chat[1] == "agent" and chat[2] == trace_id
    # Priced by the daemon at gpt-4o-mini's prices (USD per million tokens: 0.15 uncached
    # input, 0.075 cached, 0.6 output), rounded half up once: 28.5 micro-dollars is 29.
    micro = Decimal(20) * Decimal("0.15") + Decimal(100) * Decimal("0.075") + 30 * Decimal("0.6")
    assert chat[3:9] == (
        120,
        30,
        100,
        8,
        int(micro.quantize(Decimal(1), rounding=ROUND_HALF_UP)),
        "gpt-4o-mini-2024-07-18",
    )
    assert old[3:5] == (5, 6) and old[8] == "gpt-3.5-turbo"
    assert session[3] is None, "a span with no GenAI attributes has no cost"
    payload = json.loads(chat[9])
    assert payload["parent_span_id"] == json.loads(session[9])["span_id"]
    assert payload["source"]["listener"] == "otlp"
    assert chat[10] is None, "an entry from HTTP carries no Unix credentials"
    listed = receiver.witness("traces")
    assert trace_id in listed
    shown = receiver.witness("cost", "--by", "model")
    assert "gpt-4o-mini-2024-07-18" in shown and "gpt-3.5-turbo" in shown


def test_claude_code_records_from_the_sdk_and_as_gzip_json_land_normalised(
    receiver: Receiver,
) -> None:
    from opentelemetry._logs import LogRecord
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": "claude-code"}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=receiver.base + "/v1/logs"))
    )
    logger = provider.get_logger("com.anthropic.claude_code.events")
    logger.emit(
        LogRecord(
            timestamp=time.time_ns(),
            body="claude_code.api_request",
            attributes={
                "event.name": "api_request",
                "session.id": "session-1",
                "model": "claude-sonnet-4-5-20250929",
                "input_tokens": 12,
                "output_tokens": 340,
                "cache_read_tokens": 20_000,
                "cache_creation_tokens": 1_500,
                "cost_usd": 0.0153,
                "duration_ms": 4100,
            },
        )
    )
    provider.shutdown()
    # The same shape as OTLP/JSON, gzipped, its numbers as strings and doubles.
    document = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]
                },
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "body": {"stringValue": "claude_code.api_request"},
                                "attributes": [
                                    {"key": "event.name", "value": {"stringValue": "api_request"}},
                                    {"key": "session.id", "value": {"stringValue": "session-1"}},
                                    {"key": "model", "value": {"stringValue": "claude-haiku-4-5"}},
                                    {"key": "input_tokens", "value": {"intValue": "3"}},
                                    {"key": "output_tokens", "value": {"stringValue": "4"}},
                                    {"key": "cache_read_tokens", "value": {"doubleValue": 5.0}},
                                    {"key": "cost_usd", "value": {"stringValue": "0.000021"}},
                                ],
                                "unknownField": {"ignored": True},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, headers, body = receiver.post(
        "/v1/logs",
        gzip.compress(json.dumps(document).encode()),
        "application/json",
        {"Content-Encoding": "gzip"},
    )
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert "partialSuccess" not in json.loads(body)
    rows = receiver.entries()
    assert [row[0] for row in rows] == ["claude_code.api_request"] * 2
    sdk, hand = rows
    assert sdk[1] == "claude-code" and sdk[2] == "session-1"
    # Claude Code's input_tokens leaves out the cache; witness's counts it in.
    assert sdk[3:9] == (
        12 + 20_000 + 1_500,
        340,
        20_000,
        None,
        15_300,
        "claude-sonnet-4-5-20250929",
    )
    assert hand[3:9] == (3 + 5, 4, 5, None, 21, "claude-haiku-4-5")
    shown = receiver.witness("trace", "session-1")
    assert "claude-sonnet-4-5-20250929" in shown


def test_an_export_sent_again_is_stored_once(receiver: Receiver) -> None:
    spans = [(bytes([1]) * 16, i.to_bytes(8, "big"), f"span {i}") for i in range(1, 51)]
    body = spans_request("svc", spans).SerializeToString()
    for _ in range(3):
        status, _, answer = receiver.post("/v1/traces", body)
        assert status == 200, answer
    # Half again in a request of its own, with new ones after them.
    more = spans[25:] + [(bytes([1]) * 16, (100 + i).to_bytes(8, "big"), "new") for i in range(5)]
    status, _, _ = receiver.post("/v1/traces", spans_request("svc", more).SerializeToString())
    assert status == 200
    names = [row[0] for row in receiver.entries()]
    assert len(names) == 55 and names.count("new") == 5
    assert len(set(names)) == 51


def test_kill_9_in_the_middle_of_exports_loses_nothing_that_got_a_200_and_stores_retries_once(
    receiver: Receiver,
) -> None:
    requests = [
        spans_request(
            "load",
            [(i.to_bytes(16, "big"), j.to_bytes(8, "big"), f"r{i}") for j in range(1, 201)],
        ).SerializeToString()
        for i in range(1, 41)
    ]
    answered: Dict[int, int] = {}

    def export_all() -> None:
        for index, body in enumerate(requests):
            try:
                status, _, _ = receiver.post("/v1/traces", body)
                answered[index] = status
            except OSError:
                answered[index] = 0

    exporter = threading.Thread(target=export_all)
    exporter.start()
    while len(answered) < 10:
        time.sleep(0.005)
    receiver.daemon.kill9()
    exporter.join(timeout=120)
    committed = [index for index, status in answered.items() if status == 200]
    assert committed, "some exports were answered before the kill"
    receiver.daemon.start()
    stored = {row[0] for row in receiver.entries()}
    # Every export that got a 200 is there in full.
    for index in committed:
        assert f"r{index + 1}" in stored
    assert len(receiver.entries(f"event = 'r{committed[0] + 1}'")) == 200
    # The exporter retries what failed (and, to be sure, everything): each span once.
    for body in requests:
        status, _, answer = receiver.post("/v1/traces", body)
        assert status == 200, answer
    assert receiver.daemon.rows("SELECT count(*) FROM entries")[0][0] == 40 * 200
    assert receiver.daemon.rows("SELECT count(DISTINCT payload) FROM entries")[0][0] == 40 * 200


def test_garbage_gets_a_clear_status_and_the_daemon_goes_on(receiver: Receiver) -> None:
    good = spans_request("svc", [(b"\x02" * 16, b"\x03" * 8, "fine")]).SerializeToString()
    cases = [
        ("truncated protobuf", good[: len(good) // 2], "application/x-protobuf", {}, 400),
        ("not protobuf", b"\xff\xff\xff\xff", "application/x-protobuf", {}, 400),
        ("wrong type", good, "text/plain", {}, 415),
        ("not JSON", b"{", "application/json", {}, 400),
        ("bad gzip", b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
        ("other encoding", good, "application/x-protobuf", {"Content-Encoding": "br"}, 415),
        (
            "gzip bomb",
            gzip.compress(b"\0" * (64 << 20)),
            "application/x-protobuf",
            {"Content-Encoding": "gzip"},
            413,
        ),
        (
            "invalid UTF-8",
            good.replace(b"fine", b"f\xffne"),
            "application/x-protobuf",
            {},
            400,
        ),
    ]
    for name, body, content_type, headers, expected in cases:
        status, answer_headers, answer = receiver.post("/v1/traces", body, content_type, headers)
        assert status == expected, (name, status, answer)
        assert answer, f"{name}: a google.rpc.Status says why"
    status, _, _ = receiver.post("/v1/traces", b"", method="GET")
    assert status == 405
    status, _, answer = receiver.post("/v1/metrics", b"")
    assert status == 404 and b"not metrics" in answer
    # Nesting past what the decoder follows is refused; within it, nesting past the
    # payload's depth is cut, and huge values are stored within the payload limit.
    too_deep: dict = {"stringValue": "leaf"}
    for _ in range(100):
        too_deep = {"arrayValue": {"values": [too_deep]}}
    deep: dict = {"stringValue": "leaf"}
    for _ in range(30):
        deep = {"arrayValue": {"values": [deep]}}
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "deep",
                                "kind": 3,
                                "startTimeUnixNano": 1700000000000000000,
                                "attributes": [
                                    {"key": "nested", "value": deep},
                                    {"key": "huge", "value": {"stringValue": "x" * (1 << 20)}},
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    text = json.dumps(document)
    status, _, answer = receiver.post("/v1/traces", text.encode(), "application/json")
    assert status == 200, answer
    (payload,) = [json.loads(row[9]) for row in receiver.entries("event = 'deep'")]
    assert "nested too deep" in json.dumps(payload["attributes"]["nested"])
    assert payload["attributes"]["huge"].endswith(f"({1 << 20} bytes)")
    refused = text.replace(json.dumps(deep), json.dumps(too_deep))
    status, _, answer = receiver.post("/v1/traces", refused.encode(), "application/json")
    assert status == 400 and b"recursion" in answer, answer
    # 12,000 spans in one request: more than one append holds, all stored.
    many = spans_request(
        "many", [(b"\x04" * 16, i.to_bytes(8, "big"), "many") for i in range(1, 12_001)]
    )
    status, _, answer = receiver.post("/v1/traces", many.SerializeToString())
    assert status == 200, answer
    assert receiver.daemon.rows("SELECT count(*) FROM entries WHERE event = 'many'")[0][0] == 12_000
    status, _, _ = receiver.post("/v1/traces", good)
    assert status == 200
    assert receiver.entries("event = 'fine'")


def test_with_a_tokens_file_a_token_is_needed_and_its_name_is_recorded(
    tmp_path: pathlib.Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# name token\nci 0123456789abcdef0123\n")
    tokens.chmod(0o600)
    receiver = Receiver(tmp_path, ["--config", str(write_config(tmp_path, tokens))])
    try:
        body = spans_request("svc", [(b"\x05" * 16, b"\x06" * 8, "tokened")]).SerializeToString()
        status, _, _ = receiver.post("/v1/traces", body)
        assert status == 401
        status, _, _ = receiver.post("/v1/traces", body, headers={"Authorization": "Bearer nope"})
        assert status == 401
        status, _, _ = receiver.post(
            "/v1/traces", body, headers={"Authorization": "Bearer 0123456789abcdef0123"}
        )
        assert status == 200
        payload = json.loads(receiver.entries()[0][9])
        assert payload["source"]["token"] == "ci"
    finally:
        receiver.daemon.stop()


def write_config(folder: pathlib.Path, tokens: pathlib.Path) -> pathlib.Path:
    config = folder / "witnessd.toml"
    config.write_text(f'otlp_tokens_file = "{tokens}"\n')
    return config


class FakeOpenAI(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint on loopback, answering every call the same."""

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        asked = json.loads(self.rfile.read(length))
        answer = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1700000000,
                "model": asked["model"] + "-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hello"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_an_instrumented_openai_call_lands_with_model_and_tokens(receiver: Receiver) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider = TracerProvider(resource=Resource.create({"service.name": "openai-app"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.base + "/v1/traces"))
    )
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        import openai

        client = openai.OpenAI(
            api_key="not-a-key", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1"
        )
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        provider.shutdown()
    finally:
        instrumentor.uninstrument()
        server.shutdown()
    rows = receiver.entries()
    assert len(rows) == 1, rows
    event, component, trace, tokens_in, tokens_out = rows[0][:5]
    assert (event, component, tokens_in, tokens_out) == ("chat", "openai-app", 21, 9)
    assert rows[0][8] == "gpt-4o-mini-2024-07-18"
    assert trace and len(trace) == 32


def test_a_tokens_file_others_can_read_or_badly_written_stops_the_start(
    tmp_path: pathlib.Path,
) -> None:
    from conftest import witnessd_binary

    tokens = tmp_path / "tokens"
    for text, mode, said in [
        ("ci 0123456789abcdef0123\n", 0o644, "may be read by others"),
        ("ci short\n", 0o600, ":1: the token of ci is shorter"),
        ("ci 0123456789abcdef0123 extra\n", 0o600, ":1: a line is `name token`"),
    ]:
        tokens.write_text(text)
        tokens.chmod(mode)
        done = subprocess.run(
            [
                str(witnessd_binary()),
                "--socket",
                str(tmp_path / "w.sock"),
                "--db",
                str(tmp_path / "w.db"),
                "--otlp-listen",
                f"127.0.0.1:{free_port()}",
                "--config",
                str(write_config(tmp_path, tokens)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert said in done.stderr, done.stderr


def test_the_metrics_count_requests_items_and_refusals(tmp_path: pathlib.Path) -> None:
    metrics_port = free_port()
    receiver = Receiver(tmp_path, ["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    try:
        body = spans_request("svc", [(b"\x07" * 16, b"\x08" * 8, "counted")]).SerializeToString()
        assert receiver.post("/v1/traces", body)[0] == 200
        assert receiver.post("/v1/traces", b"\xff", "application/x-protobuf")[0] == 400
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as got:
            text = got.read().decode()
        values = dict(
            line.split(" ", 1) for line in text.splitlines() if line.startswith("witness_otlp_")
        )
        assert values["witness_otlp_requests_total"] == "2"
        assert values["witness_otlp_items_total"] == "1"
        assert values["witness_otlp_requests_refused_total"] == "1"
        assert values["witness_otlp_items_rejected_total"] == "0"
    finally:
        receiver.daemon.stop()


def test_a_peer_over_its_rate_is_told_to_retry_and_nothing_of_the_export_is_stored(
    tmp_path: pathlib.Path,
) -> None:
    config = tmp_path / "witnessd.toml"
    config.write_text("uid_entries_per_sec = 10\n")
    receiver = Receiver(tmp_path, ["--config", str(config)])
    try:

        def export(first: int) -> Tuple[int, Dict[str, str], bytes]:
            spans = [(b"\x09" * 16, (first + i).to_bytes(8, "big"), "rated") for i in range(50)]
            return receiver.post("/v1/traces", spans_request("svc", spans).SerializeToString())

        # A bucket holds a second's worth and may go into debt by one export: the first
        # passes, the next is refused until the debt is paid.
        assert export(1)[0] == 200
        status, headers, answer = export(100)
        assert status == 429, answer
        assert headers["retry-after"] == "1"
        assert b"over its limit" in answer
        assert len(receiver.entries("event = 'rated'")) == 50
    finally:
        receiver.daemon.stop()
