"""The blocking client: `log`, `log_batch`, `send` and `flush`, and the read side.

One connection per client, shared by every thread: callers write requests under a lock and
wait for their answer; a reader thread hands each answer to its caller by request id, so
that many threads' entries share the daemon's commits. Every append carries the client's
producer id and entry numbers; when the connection breaks, the reader thread connects again
and re-sends every append not yet answered, and the daemon recognises what it had already
committed (docs/PROTOCOL.md, "Exactly once").
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import os
import queue
import secrets
import select
import socket
import struct
import sys
import threading
import time
import weakref
from collections import OrderedDict
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from . import _codec, _spool
from ._context import current_component, current_trace
from ._paths import socket_path
from ._types import (
    MAX_INTEGER,
    Cost,
    CostReport,
    CostRow,
    InvalidArgument,
    Receipt,
    Refused,
    Stats,
    StoredEntry,
    Trace,
    TraceSummary,
    Unavailable,
    VerifyReport,
    WitnessError,
)

_log = logging.getLogger("witness")

T = TypeVar("T")

#: Limits of docs/PROTOCOL.md, checked before anything is sent.
MAX_NAME = 256
MAX_TRACE_ID = 128
MAX_PAYLOAD = 64 * 1024
MAX_ENTRIES_PER_APPEND = 10_000


class Json(str):
    """A payload that is already JSON text, sent as it is (after a check that it parses)."""


Timestamp = Any  # datetime or integer nanoseconds since the Unix epoch


def _nanos(name: str, value: Timestamp) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise InvalidArgument(f"{name} must be an aware datetime (with a time zone)")
        delta = value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidArgument(f"{name} must be a datetime or integer nanoseconds, not {value!r}")


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, not {value!r}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= limit:
        raise InvalidArgument(f"{name} must be 1 to {limit} bytes long, not {size}")
    if "\0" in value:
        raise InvalidArgument(f"{name} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} is not valid Unicode (a lone surrogate)") from None
    return value


def _payload(value: Any) -> str:
    if isinstance(value, Json):
        try:
            json.loads(value)
        except ValueError as error:
            raise InvalidArgument(f"the payload is not JSON: {error}") from None
        text = str(value)
    else:
        try:
            text = json.dumps(
                {} if value is None else value,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            )
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"the payload cannot be sent as JSON: {error}") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD:
        raise InvalidArgument(f"the payload is longer than {MAX_PAYLOAD} bytes of JSON")
    if "\0" in text:
        raise InvalidArgument("the payload must not contain a NUL character")
    return text


def encode_entry(
    event: str,
    component: Optional[str] = None,
    *,
    trace_id: Optional[str] = None,
    payload: Any = None,
    cost: Optional[Cost] = None,
    client_ts: Timestamp = None,
) -> bytes:
    """Checks an entry against the protocol's limits and encodes it; `component` and
    `trace_id` default to those of the current `witness.trace` / `witness.traced`."""
    if component is None:
        component = current_component()
        if component is None:
            raise InvalidArgument(
                "an entry needs a component: pass component=, or log inside witness.traced"
            )
    if trace_id is None:
        trace_id = current_trace()
    if cost is not None and not isinstance(cost, Cost):
        raise InvalidArgument(f"cost must be a witness.Cost, not {cost!r}")
    if cost is not None and cost.model is not None:
        _text("model", cost.model, MAX_TRACE_ID)
    writer = _codec.Writer()
    _codec.encode_entry(
        writer,
        (
            _text("event", event, MAX_NAME),
            _text("component", component, MAX_NAME),
            None if trace_id is None else _text("trace_id", trace_id, MAX_TRACE_ID),
            _payload(payload),
            cost,
            _client_ts(client_ts),
        ),
    )
    return bytes(writer.out)


def _client_ts(value: Timestamp) -> Optional[int]:
    """An entry's own date: the daemon dates entries from 1970 on and refuses earlier ones."""
    ns = _nanos("client_ts", value)
    if ns is not None and ns < 0:
        raise InvalidArgument(f"client_ts is {ns} ns, before 1970-01-01T00:00:00Z")
    return ns


class _Pending:
    """A request written (or to be written) and not yet answered."""

    __slots__ = ("frame", "done", "kind", "value", "on_answer", "resend", "batch", "own")

    def __init__(self, frame: bytes, on_answer: Optional[Callable[[str, Any], None]], resend: bool):
        self.frame = frame
        # Its caller reads the answer itself (see `Client._read_own`): the reader thread
        # need not wake for it.
        self.own = on_answer is None
        # For an append of `send`: its first entry number and entries, for the spool.
        self.batch: Optional[Tuple[int, List[bytes]]] = None
        self.done = threading.Event()
        self.kind = ""
        self.value: Any = None
        self.on_answer = on_answer
        self.resend = resend


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> Tuple[int, str, Any]:
    (length,) = struct.unpack("<I", _read_exact(sock, 4))
    if length > _codec.MAX_FRAME_LEN:
        raise _codec.DecodeError(f"a frame of {length} bytes, past the protocol's limit")
    return _codec.decode_response(_read_exact(sock, length))


def _connect(path: str, name: str, timeout: float) -> Tuple[socket.socket, Dict[str, Any]]:
    """A connection that has said hello, and the daemon's limits."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as error:
        sock.close()
        hint = (
            "is witnessd running?"
            if isinstance(error, (FileNotFoundError, ConnectionRefusedError))
            else ""
        )
        raise Unavailable(
            f"cannot connect to witnessd at {path}: {error.strerror or error} {hint}".rstrip()
        ) from None
    try:
        try:
            sock.sendall(_codec.hello(0, name))
        except OSError:
            pass  # a daemon that refuses a connection says why before closing: read it
        _, kind, value = _read_frame(sock)
    except (OSError, _codec.DecodeError) as error:
        sock.close()
        raise Unavailable(f"witnessd at {path} did not answer hello: {error}") from None
    if kind == "error":
        sock.close()
        code, message, _ = value
        raise Refused(code, message)
    if kind != "hello":
        sock.close()
        raise Unavailable(f"witnessd at {path} answered hello with {kind}")
    return sock, value


def _raise_for(kind: str, value: Any, expected: str) -> Any:
    if kind == "error":
        code, message, index = value
        raise Refused(code, message, index)
    if kind != expected:
        raise WitnessError(f"the daemon answered {kind} where {expected} was expected")
    return value


#: A request's steps: each yields a request builder (taking the request id) and the answer it
#: expects, and is sent the answer; its return value is the call's. The blocking and the
#: asyncio clients drive the same steps, each over its own connection.
Steps = Generator[Tuple[Callable[[int], bytes], str], Any, T]


class _Requests:
    """What each call asks of the daemon and makes of the answers, apart from any transport;
    and the producer numbers that make a re-sent append safe (docs/PROTOCOL.md, "Exactly
    once"). A subclass provides the connection."""

    _producer_id: int
    _next_number: int

    def _numbered(self, ack: str, entries: List[bytes]) -> Callable[[int], bytes]:
        def build(request_id: int) -> bytes:
            first = self._next_number
            self._next_number += len(entries)
            return _codec.append(request_id, ack, True, (self._producer_id, first), entries)

        return build

    # -- writing ----------------------------------------------------------------------

    def _log_steps(
        self,
        event: str,
        component: Optional[str] = None,
        *,
        trace_id: Optional[str] = None,
        payload: Any = None,
        cost: Optional[Cost] = None,
        client_ts: Timestamp = None,
    ) -> Steps[Receipt]:
        """The steps of `log`."""
        entry = encode_entry(
            event, component, trace_id=trace_id, payload=payload, cost=cost, client_ts=client_ts
        )
        receipts = yield self._numbered("committed", [entry]), "committed"
        return receipts[0]

    def _log_batch_steps(self, entries: Sequence[Mapping[str, Any]]) -> Steps[List[Receipt]]:
        """The steps of `log_batch`."""
        if not 1 <= len(entries) <= MAX_ENTRIES_PER_APPEND:
            raise InvalidArgument(
                f"an atomic batch holds 1 to {MAX_ENTRIES_PER_APPEND} entries, not {len(entries)}"
            )
        encoded = []
        for index, entry in enumerate(entries):
            try:
                encoded.append(encode_entry(**entry))
            except (TypeError, InvalidArgument) as error:
                raise InvalidArgument(f"entry {index}: {error}") from None
        receipts: List[Receipt] = yield self._numbered("committed", encoded), "committed"
        return receipts

    def _ping_steps(self) -> Steps[None]:
        """The steps of `ping`."""
        (yield lambda rid: _codec.frame(bytes(_codec.request(rid, _codec.PING).out)), "pong")

    def _stats_steps(self) -> Steps[Stats]:
        """The steps of `stats`."""
        stats: Stats = yield (
            lambda rid: _codec.frame(bytes(_codec.request(rid, _codec.STATS).out)),
            "stats",
        )
        return stats

    def _verify_steps(
        self, from_seq: Optional[int] = None, to_seq: Optional[int] = None
    ) -> Steps[VerifyReport]:
        """The steps of `verify`."""

        def build(rid: int) -> bytes:
            writer = _codec.request(rid, _codec.VERIFY)
            writer.option(from_seq, writer.u64)
            writer.option(to_seq, writer.u64)
            return _codec.frame(bytes(writer.out))

        report: VerifyReport = yield build, "verified"
        return report

    def _trace_steps(self, trace_id: str) -> Steps[Trace]:
        """The steps of `trace`."""
        _text("trace_id", trace_id, MAX_TRACE_ID)
        entries: List[StoredEntry] = []
        after: Optional[int] = None
        summary: Optional[TraceSummary] = None
        while True:

            def build(rid: int, after: Optional[int] = after) -> bytes:
                writer = _codec.request(rid, _codec.TRACE)
                writer.string(trace_id)
                writer.option(after, writer.u64)
                writer.u32(1000)
                return _codec.frame(bytes(writer.out))

            summary, page, after = yield build, "trace"
            entries.extend(page)
            if after is None:
                return Trace(summary, entries)

    def _traces_steps(
        self,
        *,
        since: Timestamp = None,
        until: Timestamp = None,
        component: Optional[str] = None,
        limit: int = 20,
    ) -> Steps[List[TraceSummary]]:
        """The steps of `traces`."""
        if not 1 <= limit <= 1_000_000:
            raise InvalidArgument("limit must be from 1 to 1,000,000")
        since_ns, until_ns = _nanos("since", since), _nanos("until", until)
        found: List[TraceSummary] = []
        before: Optional[int] = None
        while len(found) < limit:

            def build(rid: int, before: Optional[int] = before) -> bytes:
                writer = _codec.request(rid, _codec.TRACES)
                writer.option(since_ns, writer.i64)
                writer.option(until_ns, writer.i64)
                writer.option(component, writer.string)
                writer.option(before, writer.u64)
                writer.u32(min(limit - len(found), 10_000))
                return _codec.frame(bytes(writer.out))

            page, before = yield build, "traces"
            found.extend(page)
            if before is None:
                break
        return found[:limit]

    def _cost_steps(
        self,
        by: str = "component",
        *,
        since: Timestamp = None,
        until: Timestamp = None,
        component: Optional[str] = None,
        event: Optional[str] = None,
        model: Optional[str] = None,
    ) -> Steps[CostReport]:
        """The steps of `cost`."""
        if by not in _codec.GROUP_BY:
            raise InvalidArgument(f"by must be one of {', '.join(_codec.GROUP_BY)}, not {by!r}")
        since_ns, until_ns = _nanos("since", since), _nanos("until", until)
        rows: List[CostRow] = []
        while True:

            def build(rid: int, offset: int = len(rows)) -> bytes:
                writer = _codec.request(rid, _codec.COST)
                writer.u32(_codec.GROUP_BY[by])
                writer.option(since_ns, writer.i64)
                writer.option(until_ns, writer.i64)
                writer.option(component, writer.string)
                writer.option(event, writer.string)
                writer.option(model, writer.string)
                writer.u64(offset)
                writer.u32(10_000)
                return _codec.frame(bytes(writer.out))

            report: CostReport = yield build, "cost"
            rows.extend(report.rows)
            if len(rows) >= report.groups or not report.rows:
                return CostReport(report.by, rows, report.groups, report.total)


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client(_Requests):
    """A connection to witnessd, safe to share between threads.

    `log` and `log_batch` return once the entries are committed, with their receipts. `send`
    hands an entry to a background thread that batches appends and returns at once; `flush`
    waits until everything sent is durable (and raises if the daemon refused any of it).
    Sent entries survive a restart of the daemon: they are re-sent once it is back, and
    recorded exactly once.

    At exit, entries sent and not yet durable are waited for, `exit_timeout` seconds at
    most; if some were not recorded, the process says how many and exits with status 69
    (`EXIT_NOT_RECORDED`) instead of 0.
    """

    def __init__(
        self,
        socket_path_: Optional[str] = None,
        *,
        name: Optional[str] = None,
        connect_timeout: float = 5.0,
        timeout: float = 60.0,
        reconnect_timeout: float = 30.0,
        send_batch: int = 1000,
        send_queue: int = 100_000,
        flush_at_exit: bool = True,
        exit_timeout: float = 10.0,
    ) -> None:
        if send_batch < 1 or send_queue < 1:
            raise InvalidArgument("send_batch and send_queue must be at least 1")
        self.socket_path = socket_path_ or socket_path()
        self.name = name or f"python:{os.path.basename(sys.argv[0] or 'python')}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self.send_batch = send_batch
        self.send_queue_size = send_queue
        self.flush_at_exit = flush_at_exit
        self.exit_timeout = exit_timeout
        self._setup()
        _clients.add(self)

    def _setup(self) -> None:
        """The state of a fresh client: also what a forked child starts from."""
        lock = threading.Lock()
        self._state = threading.Condition(lock)
        # The reader thread waits on its own condition, woken only when an answer is its to
        # read: a notification of `_state` (room, answers) then wakes no idle thread.
        self._reader_wake = threading.Condition(lock)
        # A thread is reading the socket: the reader thread, or a caller reading its answer.
        self._reading = False
        self._write = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._limits: Dict[str, Any] = {}
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._reader: Optional[threading.Thread] = None
        self._next_id = 1
        self._producer_id = secrets.randbelow(MAX_INTEGER) + 1
        self._next_number = 1
        self._closed = False
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue(self.send_queue_size)
        self._sender: Optional[threading.Thread] = None
        self._unanswered_sends = 0
        # The batch the sender is handing over, with its first number once it has one.
        self._sending: Optional[Tuple[List[bytes], List[int]]] = None
        # Entries given to `send` and not yet durable, refused or lost included.
        self._not_durable = 0
        self._send_errors: List[WitnessError] = []
        self._idle = threading.Condition(threading.Lock())

    # -- connection -------------------------------------------------------------------

    def _connection(self) -> Optional[socket.socket]:
        """The connection, made if need be; called with `_state` held. `None` while the
        reader thread is reconnecting: it sends every pending request once it is back."""
        if self._closed:
            raise WitnessError("the client is closed")
        if self._sock is None and self._reader is None:
            sock, limits = _connect(self.socket_path, self.name, self.connect_timeout)
            sock.settimeout(self.timeout)
            self._sock, self._limits = sock, limits
            self._wake_reader()
            _deliver_spooled_soon(self.socket_path, self.name, self.connect_timeout, self.timeout)
        return self._sock

    def _spoolable(self) -> List[_spool.Batch]:
        """What `send` was given and the daemon has not answered, as batches with their
        producer numbers: the appends written or waiting, the one being handed over, and
        what is still queued (numbered now, after the others). Holds the locks the sender
        needs, so nothing moves meanwhile; only for the process's exit."""
        batches: List[_spool.Batch] = []
        with self._write, self._state:
            seen = set()
            for pending in self._pending.values():
                if pending.batch is not None:
                    first, entries = pending.batch
                    batches.append((self._producer_id, first, entries))
                    seen.add(id(entries))
            if self._sending is not None and id(self._sending[0]) not in seen:
                entries, built = self._sending
                if built:
                    batches.append((self._producer_id, built[0], entries))
                else:
                    batches.append((self._producer_id, self._next_number, entries))
                    self._next_number += len(entries)
            queued = []
            while True:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is not None:
                    queued.append(entry)
            for at in range(0, len(queued), MAX_ENTRIES_PER_APPEND):
                chunk = queued[at : at + MAX_ENTRIES_PER_APPEND]
                batches.append((self._producer_id, self._next_number, chunk))
                self._next_number += len(chunk)
        return batches

    def _wake_reader(self) -> None:
        """Starts the reader thread if it is not running; called with `_state` held."""
        if self._reader is None:
            self._reader = threading.Thread(
                target=self._read_answers, name="witness-reader", daemon=True
            )
            self._reader.start()

    def _in_flight_limit(self) -> int:
        return max(1, min(256, int(self._limits.get("max_in_flight", 2)) // 2))

    def _others_waiting(self) -> bool:
        """Whether an answer is the reader thread's to read; called with `_state` held."""
        return any(not pending.own for pending in self._pending.values())

    def _read_answers(self) -> None:
        """The reader thread: reads the answers no caller reads itself (those of `send`, and
        a call's while another thread is reading) and hands them over; when the connection
        breaks, connects again and re-sends what was not answered, for as long as anything
        waits."""
        while True:
            with self._state:
                sock = self._sock
                if sock is None and not self._pending:
                    self._reader = None
                    return
                if sock is not None:
                    if self._reading or not self._others_waiting():
                        # A second at a time, to notice a close.
                        self._reader_wake.wait(1.0)
                        continue
                    self._reading = True
            if sock is None:
                sock = self._reconnect()
                continue
            try:
                # A frame once begun must arrive whole within the client's timeout.
                readable, _, _ = select.select([sock], [], [], 1.0)
                answer = _read_frame(sock) if readable else None
            except (OSError, ValueError, _codec.DecodeError) as error:
                self._done_reading()
                self._broken(sock, error)
                continue
            self._done_reading()
            if answer is not None:
                self._hand_over(*answer)

    def _done_reading(self) -> None:
        """Gives up the socket, waking the reader thread if an answer is now its to read."""
        with self._state:
            self._reading = False
            if self._others_waiting():
                self._reader_wake.notify()

    def _hand_over(self, request_id: int, kind: str, value: Any) -> None:
        """Hands an answer to the request it answers."""
        with self._state:
            pending = self._pending.pop(request_id, None)
            self._state.notify_all()
        if pending is None:
            if kind == "error":
                _log.warning("witnessd: %s: %s", value[0], value[1])
            return
        pending.kind, pending.value = kind, value
        if pending.on_answer is not None:
            pending.on_answer(kind, value)
        pending.done.set()

    def _read_own(self, pending: _Pending, deadline: float) -> None:
        """Reads answers on the calling thread until `pending`'s has come, when no other
        thread is reading: a call then costs no wake-up of the reader thread and no hand-over
        between threads (measured: 113 µs of client CPU a `log` through the reader thread, 71
        reading on the caller's). Otherwise, or once the connection breaks, the answer is
        the reader thread's to read, after it has reconnected and re-sent if need be."""
        with self._state:
            sock = self._sock
            if sock is None or self._reading or pending.done.is_set():
                pending.own = False
                self._reader_wake.notify()
                return
            self._reading = True
        broken: Optional[BaseException] = None
        try:
            while not pending.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                readable, _, _ = select.select([sock], [], [], left)
                if not readable:
                    break
                self._hand_over(*_read_frame(sock))
        except (OSError, ValueError, _codec.DecodeError) as error:
            broken = error
        finally:
            with self._state:
                pending.own = False
            self._done_reading()
        if broken is not None:
            self._broken(sock, broken)

    def _broken(self, sock: socket.socket, error: BaseException) -> None:
        with self._state:
            if self._sock is sock:
                self._sock = None
            self._state.notify_all()
            self._reader_wake.notify()
        try:
            sock.close()
        except OSError:
            pass
        _log.info("witness: connection lost (%s); reconnecting", error)

    def _reconnect(self) -> Optional[socket.socket]:
        """Connects again and re-sends every unanswered request, in order; waits a little
        between tries. Requests nobody waits for any more were already dropped."""
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.01
        while True:
            with self._state:
                if self._closed or not self._pending:
                    return None
            try:
                sock, limits = _connect(self.socket_path, self.name, self.connect_timeout)
            except Refused as refusal:
                self._fail_all(refusal)
                return None
            except Unavailable as error:
                if time.monotonic() > deadline:
                    self._fail_all(error, only_waited=True)
                    deadline = time.monotonic() + self.reconnect_timeout
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            sock.settimeout(self.timeout)
            with self._write:
                with self._state:
                    self._sock, self._limits = sock, limits
                    frames = [pending.frame for pending in self._pending.values() if pending.resend]
                try:
                    for frame in frames:
                        sock.sendall(frame)
                except OSError as error:
                    self._broken(sock, error)
                    continue
            return sock

    def _fail_all(self, error: WitnessError, only_waited: bool = False) -> None:
        """Answers pending requests with `error`. With `only_waited`, appends of `send`
        stay pending, to be re-sent when the daemon is back."""
        with self._state:
            failed = [
                (request_id, pending)
                for request_id, pending in self._pending.items()
                if not (only_waited and pending.on_answer is not None)
            ]
            for request_id, _ in failed:
                del self._pending[request_id]
            self._state.notify_all()
            self._reader_wake.notify()
        for _, pending in failed:
            pending.kind, pending.value = "unavailable", error
            if pending.on_answer is not None:
                pending.on_answer("unavailable", error)
            pending.done.set()

    def _submit(
        self,
        build: Callable[[int], bytes],
        *,
        on_answer: Optional[Callable[[str, Any], None]] = None,
        resend: bool = True,
    ) -> _Pending:
        """Writes a request built for its id; requests are written in the order their ids
        (and producer numbers) were taken. The appends of `send` (those with `on_answer`)
        wait for the daemon as long as it takes: while it is away they stay pending, and
        the reader thread sends them once it is back."""
        patient = on_answer is not None
        with self._state:
            try:
                self._connection()
            except Unavailable:
                if not patient:
                    raise
                self._wake_reader()
            # Waits for room without holding `_write`, which the reader needs to re-send.
            deadline = time.monotonic() + self.timeout
            while len(self._pending) >= self._in_flight_limit():
                left = deadline - time.monotonic()
                if left <= 0 and not patient:
                    raise Unavailable("witnessd has not answered earlier requests in time")
                self._state.wait(left if left > 0 else 1.0)
        with self._write:
            with self._state:
                request_id = self._next_id
                self._next_id += 1
                pending = _Pending(build(request_id), on_answer, resend)
                self._pending[request_id] = pending
                sock = self._sock
                if sock is None:
                    self._wake_reader()
                if not pending.own:
                    self._reader_wake.notify()
            if sock is not None:
                try:
                    sock.sendall(pending.frame)
                except OSError as error:
                    # The reader notices too, reconnects and re-sends it.
                    self._broken(sock, error)
        return pending

    def _wait(self, pending: _Pending, expected: str, deadline: float) -> Any:
        if not pending.done.wait(max(0.0, deadline - time.monotonic())):
            with self._state:
                for request_id, candidate in list(self._pending.items()):
                    if candidate is pending:
                        del self._pending[request_id]
            raise Unavailable(
                f"witnessd did not answer within {self.timeout} s; the request may or may not "
                "have been carried out"
            )
        if pending.kind == "unavailable":
            raise pending.value
        return _raise_for(pending.kind, pending.value, expected)

    def _call(self, build: Callable[[int], bytes], expected: str) -> Any:
        pending = self._submit(build)
        deadline = time.monotonic() + self.timeout
        self._read_own(pending, deadline)
        return self._wait(pending, expected, deadline)

    def _run(self, steps: Steps[T]) -> T:
        """Drives a call's steps over this client's connection."""
        try:
            step = next(steps)
            while True:
                step = steps.send(self._call(*step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def log(
        self,
        event: str,
        component: Optional[str] = None,
        *,
        trace_id: Optional[str] = None,
        payload: Any = None,
        cost: Optional[Cost] = None,
        client_ts: Timestamp = None,
    ) -> Receipt:
        """Records one entry and returns once it is committed, with its receipt."""
        return self._run(
            self._log_steps(
                event,
                component,
                trace_id=trace_id,
                payload=payload,
                cost=cost,
                client_ts=client_ts,
            )
        )

    def log_batch(self, entries: Sequence[Mapping[str, Any]]) -> List[Receipt]:
        """Records entries (mappings of `log`'s arguments) in one transaction: all of them or
        none, with consecutive sequence numbers. At most 10,000 entries."""
        return self._run(self._log_batch_steps(entries))

    def send(
        self,
        event: str,
        component: Optional[str] = None,
        *,
        trace_id: Optional[str] = None,
        payload: Any = None,
        cost: Optional[Cost] = None,
        client_ts: Timestamp = None,
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> None:
        """Queues one entry for the background sender and returns. When the queue is full,
        waits for room (up to `timeout`), or with `block=False` raises `queue.Full` at once:
        an entry is never dropped silently. `flush` says when it is durable."""
        entry = encode_entry(
            event, component, trace_id=trace_id, payload=payload, cost=cost, client_ts=client_ts
        )
        if self._closed:
            raise WitnessError("the client is closed")
        self._queue.put(entry, block, timeout)
        with self._idle:
            self._not_durable += 1
        if self._sender is None:
            self._start_sender()

    def _start_sender(self) -> None:
        with self._idle:
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_loop, name="witness-sender", daemon=True
                )
                self._sender.start()

    def _send_loop(self) -> None:
        """The background sender: takes what is queued, up to `send_batch` entries an
        append, and pipelines appends asking for `Durable`."""
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            batch = [first]
            while len(batch) < self.send_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self._queue.put(None)  # seen after this batch
                    self._queue.task_done()
                    break
                batch.append(entry)
            with self._idle:
                self._unanswered_sends += 1
            count = len(batch)
            numbered = self._numbered("durable", batch)
            # The first number the append was built with, once it is: the spool keeps it.
            built: List[int] = []

            def build(
                request_id: int,
                batch: List[bytes] = batch,
                built: List[int] = built,
                numbered: Callable[[int], bytes] = numbered,
            ) -> bytes:
                frame = numbered(request_id)
                built.append(self._next_number - len(batch))
                return frame

            self._sending = (batch, built)
            try:
                pending = self._submit(
                    build,
                    on_answer=lambda kind, value, count=count: self._sent(kind, value, count),
                )
                pending.batch = (built[0], batch)
            except WitnessError as error:
                self._sent("unavailable", error, count)
            finally:
                self._sending = None
            for _ in batch:
                self._queue.task_done()

    def _sent(self, kind: str, value: Any, count: int) -> None:
        with self._idle:
            self._unanswered_sends -= 1
            if kind not in ("error", "unavailable"):
                self._not_durable -= count
            if kind == "error":
                code, message, index = value
                self._send_errors.append(Refused(code, message, index))
                _log.error("witness: an append of sent entries was refused: %s: %s", code, message)
            elif kind == "unavailable":
                self._send_errors.append(value)
            self._idle.notify_all()

    def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every entry given to `send` is durable. Raises the first refusal or
        failure since the last flush (the other entries are still recorded)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._sender is not None:
            done = self._queue.all_tasks_done
            with done:
                while self._queue.unfinished_tasks:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise Unavailable(
                            f"{self._queue.unfinished_tasks} sent entries are not yet handed "
                            "to witnessd"
                        )
                    done.wait(left if left is not None else 1.0)
        with self._idle:
            while self._unanswered_sends > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Unavailable(
                        f"{self._unanswered_sends} appends of sent entries are not yet durable"
                    )
                self._idle.wait(left if left is not None else 1.0)
            errors, self._send_errors = self._send_errors, []
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Flushes what was sent and closes the connection."""
        if self._closed:
            return
        try:
            self.flush(self.timeout)
        finally:
            self._closed = True
            if self._sender is not None:
                self._queue.put(None)
            with self._state:
                sock, self._sock = self._sock, None
                self._reader_wake.notify()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------

    def ping(self) -> None:
        """Asks the daemon to answer; raises if it cannot."""
        self._run(self._ping_steps())

    def stats(self) -> Stats:
        """The daemon's counters."""
        return self._run(self._stats_steps())

    def verify(self, from_seq: Optional[int] = None, to_seq: Optional[int] = None) -> VerifyReport:
        """Recomputes the hash chain over `from_seq..=to_seq` (default: the whole log, with
        its derived tables) from what is stored."""
        return self._run(self._verify_steps(from_seq, to_seq))

    def trace(self, trace_id: str) -> Trace:
        """Every entry of a trace, in order, with its summary."""
        return self._run(self._trace_steps(trace_id))

    def traces(
        self,
        *,
        since: Timestamp = None,
        until: Timestamp = None,
        component: Optional[str] = None,
        limit: int = 20,
    ) -> List[TraceSummary]:
        """The most recent traces (by their last entry, or last entry of `component`), with
        an entry dated in [`since`, `until`)."""
        return self._run(
            self._traces_steps(since=since, until=until, component=component, limit=limit)
        )

    def cost(
        self,
        by: str = "component",
        *,
        since: Timestamp = None,
        until: Timestamp = None,
        component: Optional[str] = None,
        event: Optional[str] = None,
        model: Optional[str] = None,
    ) -> CostReport:
        """Tokens and money grouped `by` component, model, event or trace (most money first),
        or by UTC day or hour (in time order), of the entries dated in [`since`, `until`)."""
        return self._run(
            self._cost_steps(
                by, since=since, until=until, component=component, event=event, model=model
            )
        )

    def tail(
        self,
        n: Optional[int] = None,
        *,
        follow: bool = False,
        component: Optional[str] = None,
        event: Optional[str] = None,
        trace_id: Optional[str] = None,
        since: Timestamp = None,
        until: Timestamp = None,
        after_seq: Optional[int] = None,
    ) -> Iterator[StoredEntry]:
        """Entries in `seq` order: the newest `n` (or all from the oldest, or after
        `after_seq`), and with `follow` every entry committed after, as it comes, until the
        iterator is closed. A stream of its own, on a connection of its own."""
        since_ns, until_ns = _nanos("since", since), _nanos("until", until)
        writer = _codec.request(1, _codec.ENTRIES)
        writer.option(component, writer.string)
        writer.option(event, writer.string)
        writer.option(trace_id, writer.string)
        writer.option(since_ns, writer.i64)
        writer.option(until_ns, writer.i64)
        writer.option(after_seq, writer.u64)
        writer.option(None, writer.u64)
        writer.option(n, writer.u32)
        writer.option(None, writer.u64)
        writer.u8(1 if follow else 0)
        return _stream(self, _codec.frame(bytes(writer.out)), follow)


def _stream(client: Client, frame: bytes, follow: bool) -> Iterator[StoredEntry]:
    sock, _ = _connect(client.socket_path, client.name, client.connect_timeout)
    sock.settimeout(None if follow else client.timeout)
    try:
        sock.sendall(frame)
        while True:
            _, kind, value = _read_frame(sock)
            if kind == "entries":
                yield from value
            elif kind == "end":
                reason, _ = value
                if reason in ("ShuttingDown", "CutOff"):
                    raise Unavailable(f"the stream ended early: {reason}")
                return
            else:
                _raise_for(kind, value, "entries")
    except (OSError, _codec.DecodeError) as error:
        raise Unavailable(f"the stream from witnessd broke: {error}") from None
    finally:
        sock.close()


def _after_fork_in_child() -> None:
    """A child gets clients of its own: no connection, threads, queue or producer id of the
    parent's (whose entries the parent still sends)."""
    for client in list(_clients):
        sock = client._sock
        client._setup()
        if sock is not None:
            try:
                sock.close()  # the child's copy only; the parent's connection stays open
            except OSError:
                pass


#: The exit status of a process whose sent entries were not all recorded (`EX_UNAVAILABLE`).
EXIT_NOT_RECORDED = 69
#: The exit status of a process whose unrecorded entries were all kept in the spool, for the
#: next client to deliver (`EX_TEMPFAIL`): not recorded yet, and not lost.
EXIT_SPOOLED = 75

_delivering: set = set()


def _deliver_spooled_soon(path: str, name: str, connect_timeout: float, timeout: float) -> None:
    """Delivers, in a thread of its own and once a process, what earlier processes left in
    the spool for the daemon at `path`."""
    if path in _delivering:
        return
    _delivering.add(path)
    threading.Thread(
        target=_deliver_spooled,
        args=(path, name, connect_timeout, timeout),
        name="witness-spool",
        daemon=True,
    ).start()


def _deliver_spooled(path: str, name: str, connect_timeout: float, timeout: float) -> None:
    for claimed in _spool.claim(path):
        try:
            with open(claimed, "rb") as file:
                batches = _spool.decode(file.read())
        except (OSError, ValueError) as error:
            _log.warning("witness: spool file %s cannot be delivered: %s", claimed, error)
            try:
                os.rename(claimed, claimed + ".bad")
            except OSError:
                pass
            continue
        try:
            sock, _ = _connect(path, name, connect_timeout)
            sock.settimeout(timeout)
            try:
                for index, (producer, first, entries) in enumerate(batches, 1):
                    sock.sendall(_codec.append(index, "durable", True, (producer, first), entries))
                    _, kind, value = _read_frame(sock)
                    if kind == "error":
                        # Refused once, refused again: said, and not kept.
                        _log.error("witness: spooled entries refused: %s: %s", value[0], value[1])
            finally:
                sock.close()
        except (WitnessError, OSError, _codec.DecodeError) as error:
            _spool.give_back(claimed)
            _log.info("witness: spooled entries not delivered yet: %s", error)
            continue
        os.unlink(claimed)
        count = sum(len(entries) for _, _, entries in batches)
        _log.info("witness: delivered %d spooled entries from %s", count, claimed)


def _flush_at_exit() -> None:
    """Waits, within each client's `exit_timeout`, for what was sent; a process that leaves
    entries unrecorded exits with `EXIT_NOT_RECORDED`, after flushing its output and logs (exit
    handlers registered before `witness` was imported do not run then)."""
    lost = spooled = 0
    for client in list(_clients):
        if client.flush_at_exit and not client._closed:
            try:
                client.flush(client.exit_timeout)
            except WitnessError as error:
                with client._idle:
                    count = max(client._not_durable, 1)
                batches = client._spoolable()
                kept = sum(len(entries) for _, _, entries in batches)
                where = _spool.write(client.socket_path, batches) if kept else None
                if where is not None:
                    spooled += kept
                    count -= kept
                    _log.warning(
                        "witness: %d entries sent before exit were not recorded (%s); they are "
                        "kept in %s, for the next witness client that reaches the daemon",
                        kept,
                        error,
                        where,
                    )
                if count > 0:
                    lost += count
                    _log.error(
                        "witness: %d entries sent before exit were not recorded: %s", count, error
                    )
    if lost or spooled:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        logging.shutdown()
        os._exit(EXIT_NOT_RECORDED if lost else EXIT_SPOOLED)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
