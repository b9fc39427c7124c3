"""The wire format of docs/PROTOCOL.md: frames, and bodies in bincode's legacy encoding.

Everything that turns Python values into bytes and back lives here, so that the rest of
the package speaks in requests and answers, never in offsets.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from ._types import (
    Cost,
    CostReport,
    CostRow,
    ForwardStats,
    Percentiles,
    Receipt,
    Stats,
    StoredEntry,
    TraceSummary,
    VerifyReport,
)

#: The protocol version this package speaks.
PROTOCOL_VERSION = 4
#: Largest frame body either side may send.
MAX_FRAME_LEN = 4 * 1024 * 1024

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")

T = TypeVar("T")


class DecodeError(ValueError):
    """A frame from the daemon that does not decode: a bug on one side, never bad input."""


class Writer:
    """Appends encoded values to a bytearray."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def u8(self, value: int) -> None:
        self.out.append(value)

    def u32(self, value: int) -> None:
        self.out += _U32.pack(value)

    def u64(self, value: int) -> None:
        self.out += _U64.pack(value)

    def i64(self, value: int) -> None:
        self.out += _I64.pack(value)

    def string(self, value: str) -> None:
        data = value.encode("utf-8")
        self.out += _U64.pack(len(data))
        self.out += data

    def option(self, value: Optional[T], write: Callable[[T], None]) -> None:
        if value is None:
            self.out.append(0)
        else:
            self.out.append(1)
            write(value)


class Reader:
    """Reads encoded values from a body, refusing anything short or malformed."""

    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        end = self.at + n
        if end > len(self.data):
            raise DecodeError("the frame ends early")
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def boolean(self) -> bool:
        value = self.u8()
        if value > 1:
            raise DecodeError(f"a bool of {value}")
        return value == 1

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def i64(self) -> int:
        value: int = _I64.unpack(self.take(8))[0]
        return value

    def f64(self) -> float:
        value: float = _F64.unpack(self.take(8))[0]
        return value

    def string(self) -> str:
        n = self.u64()
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError("a string that is not UTF-8") from error

    def hash32(self) -> bytes:
        return bytes(self.take(32))

    def option(self, read: Callable[[], T]) -> Optional[T]:
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return read()
        raise DecodeError(f"an option tag of {tag}")

    def vec(self, read: Callable[[], T]) -> List[T]:
        n = self.u64()
        if n > len(self.data) - self.at:
            raise DecodeError("a list longer than its frame")
        return [read() for _ in range(n)]

    def end(self) -> None:
        if self.at != len(self.data):
            raise DecodeError("trailing bytes after the answer")


def frame(body: bytes) -> bytes:
    """A frame: the body's length, little-endian, then the body."""
    return _U32.pack(len(body)) + body


def request(request_id: int, variant: int) -> Writer:
    """A writer holding the start of a `RequestFrame`: its id and the request's variant."""
    writer = Writer()
    writer.u64(request_id)
    writer.u32(variant)
    return writer


# Request variants.
HELLO, APPEND, VERIFY, PING, ENTRIES, TRACE, TRACES, COST, STATS, MAINTENANCE = range(10)

ACKS = {"none": 0, "queued": 1, "committed": 2, "durable": 3}
GROUP_BY = {"component": 0, "model": 1, "event": 2, "trace": 3, "day": 4, "hour": 5}
GROUP_NAMES = {index: name for name, index in GROUP_BY.items()}
ERROR_CODES = [
    "VersionMismatch",
    "ExpectedHello",
    "FrameTooLarge",
    "BadFrame",
    "BadRequest",
    "InvalidEntry",
    "Busy",
    "ShuttingDown",
    "Storage",
    "Forbidden",
    "TimedOut",
]
END_REASONS = ["Complete", "Limit", "ShuttingDown", "CutOff"]


def hello(request_id: int, client: str) -> bytes:
    writer = request(request_id, HELLO)
    writer.u32(PROTOCOL_VERSION)
    writer.string(client)
    return frame(bytes(writer.out))


def encode_cost(writer: Writer, cost: Cost) -> None:
    writer.u64(cost.tokens_in)
    writer.u64(cost.tokens_out)
    writer.option(cost.cache_read_tokens, writer.u64)
    writer.option(cost.cache_write_tokens, writer.u64)
    writer.option(cost.cache_write_1h_tokens, writer.u64)
    writer.option(cost.reasoning_tokens, writer.u64)
    writer.option(cost.micro_usd, writer.u64)
    writer.option(cost.model, writer.string)
    writer.option(cost.priced_by, writer.string)


def encode_entry(
    writer: Writer, entry: Tuple[str, str, Optional[str], str, Optional[Cost], Optional[int]]
) -> None:
    """An entry as `(event, component, trace_id, payload JSON text, cost, client_ts)`."""
    event, component, trace_id, payload, cost, client_ts = entry
    writer.string(event)
    writer.string(component)
    writer.option(trace_id, writer.string)
    writer.string(payload)
    writer.option(cost, lambda value: encode_cost(writer, value))
    writer.option(client_ts, writer.i64)
    writer.option(None, writer.string)  # imported: only `witness import` sets it


def append(
    request_id: int,
    ack: str,
    wait_when_full: bool,
    producer: Optional[Tuple[int, int]],
    entries: List[bytes],
) -> bytes:
    """An `Append` frame from entries already encoded by `encode_entry`."""
    writer = request(request_id, APPEND)
    writer.u32(ACKS[ack])
    writer.u32(0 if wait_when_full else 1)
    if producer is None:
        writer.u8(0)
    else:
        writer.u8(1)
        writer.u64(producer[0])
        writer.u64(producer[1])
    writer.u64(len(entries))
    for entry in entries:
        writer.out += entry
    return frame(bytes(writer.out))


def read_cost(reader: Reader) -> Cost:
    tokens_in = reader.u64()
    tokens_out = reader.u64()
    cache_read = reader.option(reader.u64)
    cache_write = reader.option(reader.u64)
    cache_write_1h = reader.option(reader.u64)
    reasoning = reader.option(reader.u64)
    micro_usd = reader.option(reader.u64)
    model = reader.option(reader.string)
    priced_by = reader.option(reader.string)
    return Cost(
        tokens_in,
        tokens_out,
        micro_usd=micro_usd,
        model=model,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=cache_write_1h,
        reasoning_tokens=reasoning,
        priced_by=priced_by,
    )


def read_stored(reader: Reader) -> StoredEntry:
    seq = reader.u64()
    ts = reader.i64()
    event = reader.string()
    component = reader.string()
    trace_id = reader.option(reader.string)
    payload = reader.string()
    cost = reader.option(lambda: read_cost(reader))
    client_ts = reader.option(reader.i64)
    imported = reader.option(reader.string)
    pid = reader.option(reader.i64)
    uid = reader.option(reader.i64)
    gid = reader.option(reader.i64)
    producer_id = reader.option(reader.u64)
    producer_number = reader.option(reader.u64)
    hash_ = reader.hash32()
    return StoredEntry(
        seq=seq,
        ts=ts,
        event=event,
        component=component,
        trace_id=trace_id,
        payload_json=payload,
        cost=cost,
        client_ts=client_ts,
        imported=imported,
        pid=pid,
        uid=uid,
        gid=gid,
        producer_id=producer_id,
        producer_number=producer_number,
        hash=hash_,
    )


def read_summary(reader: Reader) -> TraceSummary:
    return TraceSummary(
        trace_id=reader.string(),
        entries=reader.u64(),
        first_seq=reader.u64(),
        last_seq=reader.u64(),
        first_ts=reader.i64(),
        last_ts=reader.i64(),
        components=reader.vec(reader.string),
        tokens_in=reader.u64(),
        tokens_out=reader.u64(),
        micro_usd=reader.u64(),
        unpriced=reader.u64(),
    )


def read_cost_row(reader: Reader) -> CostRow:
    return CostRow(
        key=reader.option(reader.string),
        entries=reader.u64(),
        tokens_in=reader.u64(),
        tokens_out=reader.u64(),
        cache_read_tokens=reader.u64(),
        cache_write_tokens=reader.u64(),
        reasoning_tokens=reader.u64(),
        micro_usd=reader.u64(),
        unpriced=reader.u64(),
    )


def read_percentiles(reader: Reader) -> Percentiles:
    return Percentiles(*(reader.u64() for _ in range(6)))


def read_stats(reader: Reader) -> Stats:
    return Stats(
        server=reader.string(),
        uptime_ms=reader.u64(),
        entries_total=reader.u64(),
        entries_per_sec=reader.f64(),
        last_seq=reader.u64(),
        batches_total=reader.u64(),
        batches_failed=reader.u64(),
        queue_depth=reader.u64(),
        queue_capacity=reader.u64(),
        batch_entries=read_percentiles(reader),
        commit_us=read_percentiles(reader),
        ack_us=read_percentiles(reader),
        connections=reader.u64(),
        connections_max=reader.u64(),
        connections_total=reader.u64(),
        rejections=dict(reader.vec(lambda: (reader.string(), reader.u64()))),
        db_bytes=reader.u64(),
        wal_bytes=reader.u64(),
        rss_bytes=reader.u64(),
        rss_peak_bytes=reader.u64(),
        failure=reader.option(reader.string),
        rate_limited=dict(reader.vec(lambda: (reader.u32(), reader.u64()))),
        forward=reader.option(lambda: read_forward(reader)),
        disk_free_bytes=reader.u64(),
        disk_days_left=reader.option(reader.f64),
        disk_low=reader.option(reader.string),
        first_seq=reader.u64(),
        entries_pruned=reader.u64(),
        prune_seconds=reader.f64(),
    )


def read_forward(reader: Reader) -> ForwardStats:
    return ForwardStats(
        host_id=reader.string(),
        state=reader.string(),
        forwarded_seq=reader.u64(),
        lag_entries=reader.u64(),
        lag_seconds=reader.f64(),
        entries_total=reader.u64(),
        batches_total=reader.u64(),
        errors_total=reader.u64(),
    )


def read_verify(reader: Reader) -> VerifyReport:
    variant = reader.u32()
    if variant == 0:
        return VerifyReport(
            verdict="intact",
            count=reader.u64(),
            first_seq=reader.option(reader.u64),
            last_seq=reader.option(reader.u64),
            head_hash=reader.option(reader.hash32),
        )
    if variant == 1:
        seq = reader.u64()
        reason = reader.string()
        return VerifyReport(verdict="broken", count=reader.u64(), seq=seq, reason=reason)
    if variant == 2:
        table = reader.string()
        reason = reader.string()
        return VerifyReport(verdict="inconsistent", count=reader.u64(), table=table, reason=reason)
    raise DecodeError(f"a verify report of variant {variant}")


def decode_response(body: bytes) -> Tuple[int, str, Any]:
    """A `ResponseFrame` as `(id, kind, value)`; `kind` names the `Response` variant."""
    reader = Reader(body)
    request_id = reader.u64()
    variant = reader.u32()
    value: Any
    if variant == 0:
        kind = "hello"
        value = {
            "version": reader.u32(),
            "server": reader.string(),
            "max_frame_len": reader.u32(),
            "max_entries_per_append": reader.u32(),
            "max_in_flight": reader.u32(),
        }
    elif variant == 1:
        kind, value = "queued", reader.u32()
    elif variant == 2:
        kind = "committed"
        value = reader.vec(lambda: Receipt(reader.u64(), reader.hash32()))
    elif variant == 3:
        kind, value = "pong", None
    elif variant == 4:
        kind, value = "verified", read_verify(reader)
    elif variant == 5:
        code = reader.u32()
        name = ERROR_CODES[code] if code < len(ERROR_CODES) else f"code {code}"
        kind = "error"
        value = (name, reader.string(), reader.option(reader.u32))
    elif variant == 6:
        kind, value = "entries", reader.vec(lambda: read_stored(reader))
    elif variant == 7:
        reason = reader.u32()
        kind = "end"
        value = (
            END_REASONS[reason] if reason < len(END_REASONS) else f"reason {reason}",
            reader.option(reader.u64),
        )
    elif variant == 8:
        kind = "trace"
        value = (
            reader.option(lambda: read_summary(reader)),
            reader.vec(lambda: read_stored(reader)),
            reader.option(reader.u64),
        )
    elif variant == 9:
        kind = "traces"
        value = (reader.vec(lambda: read_summary(reader)), reader.option(reader.u64))
    elif variant == 10:
        by = reader.u32()
        rows = reader.vec(lambda: read_cost_row(reader))
        groups = reader.u64()
        total = read_cost_row(reader)
        kind = "cost"
        value = CostReport(GROUP_NAMES.get(by, str(by)), rows, groups, total)
    elif variant == 11:
        kind, value = "stats", read_stats(reader)
    else:
        raise DecodeError(f"an answer of variant {variant}, which this client does not know")
    reader.end()
    return request_id, kind, value
