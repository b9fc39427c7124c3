"""`AsyncClient`: the client for asyncio, speaking the protocol on asyncio's own streams.

`log`, `log_batch` and the reads that answer at once (`ping`, `stats`, `verify`, `trace`,
`traces`, `cost`) go over one connection of the event loop's: every task's request is
written as it is made and a reader task hands each answer to its caller by request id, so
hundreds of tasks share the daemon's commits with no thread between them and the daemon.
The requests are the blocking client's own (the same steps, the same checks), and appends
carry this client's producer id and numbers: when the connection breaks, the reader task
connects again and re-sends what was not answered, and the daemon recognises what it had
already committed (docs/PROTOCOL.md, "Exactly once").

`send` and `flush` keep the blocking client's background sender (its queue is what lets an
entry outlive a daemon restart and the process's exit), and `tail`, a stream of its own, runs
it in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import struct
import sys
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _codec
from ._paths import socket_path
from ._types import (
    MAX_INTEGER,
    Cost,
    CostReport,
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
from .client import Client, Steps, T, Timestamp, _raise_for, _Requests

_END = object()


async def _read_frame(reader: asyncio.StreamReader) -> Tuple[int, str, Any]:
    (length,) = struct.unpack("<I", await reader.readexactly(4))
    if length > _codec.MAX_FRAME_LEN:
        raise _codec.DecodeError(f"a frame of {length} bytes, past the protocol's limit")
    return _codec.decode_response(await reader.readexactly(length))


class AsyncClient(_Requests):
    """The asyncio face of `Client`, with the same methods as coroutines; `tail` is an
    asynchronous iterator. Takes `Client`'s arguments; `connect_timeout` bounds a connect
    and its hello, `timeout` each call, `reconnect_timeout` the tries to reach the daemon
    again for the requests that wait."""

    def __init__(
        self,
        socket_path_: Optional[str] = None,
        *,
        name: Optional[str] = None,
        connect_timeout: float = 5.0,
        timeout: float = 60.0,
        reconnect_timeout: float = 30.0,
        **threaded: Any,
    ) -> None:
        self.socket_path = socket_path_ or socket_path()
        self.name = name or f"python-asyncio:{os.path.basename(sys.argv[0] or 'python')}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self._threaded_options = dict(
            name=name,
            connect_timeout=connect_timeout,
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            **threaded,
        )
        self._client: Optional[Client] = None
        self._producer_id = secrets.randbelow(MAX_INTEGER) + 1
        self._next_number = 1
        self._next_id = 1
        # Requests written (or to be written) and not answered, in the order of their ids.
        self._pending: Dict[int, Tuple[bytes, asyncio.Future[Tuple[str, Any]]]] = {}
        self._writer: Optional[asyncio.StreamWriter] = None
        self._reader: Optional[asyncio.Task[None]] = None
        self._lock: Optional[asyncio.Lock] = None
        self._room: Optional[asyncio.Semaphore] = None
        self._closed = False

    @property
    def client(self) -> Client:
        """The blocking client behind `send`, `flush` and `tail`, made when first needed."""
        if self._client is None:
            self._client = Client(self.socket_path, **self._threaded_options)
        return self._client

    # -- connection -------------------------------------------------------------------

    async def _connect(
        self,
    ) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter, Dict[str, Any]]:
        """A connection that has said hello, and the daemon's limits, within
        `connect_timeout`."""
        path = self.socket_path
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path), self.connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as error:
            hint = (
                " is witnessd running?"
                if isinstance(error, (FileNotFoundError, ConnectionRefusedError))
                else ""
            )
            said = getattr(error, "strerror", None) or error or "timed out"
            raise Unavailable(f"cannot connect to witnessd at {path}: {said}{hint}") from None
        try:
            writer.write(_codec.hello(0, self.name))
            _, kind, value = await asyncio.wait_for(_read_frame(reader), self.connect_timeout)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.TimeoutError,
            _codec.DecodeError,
        ) as error:
            writer.close()
            raise Unavailable(f"witnessd at {path} did not answer hello: {error!r}") from None
        if kind == "error":
            writer.close()
            code, message, _ = value
            raise Refused(code, message)
        if kind != "hello":
            writer.close()
            raise Unavailable(f"witnessd at {path} answered hello with {kind}")
        return reader, writer, value

    def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Dict[str, Any]
    ) -> None:
        """Makes a fresh connection this client's; no await between here and the caller's
        last write, so nothing is written to the connection being replaced."""
        if self._room is None:
            self._room = asyncio.Semaphore(
                max(1, min(256, int(limits.get("max_in_flight", 2)) // 2))
            )
        self._writer = writer
        self._reader = asyncio.ensure_future(self._read_answers(reader, writer))

    async def _connection(self) -> None:
        if self._closed:
            raise WitnessError("the client is closed")
        if self._writer is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._writer is None:
                self._serve(*await self._connect())

    async def _read_answers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The reader task: hands answers to their callers until the connection breaks,
        then connects again and re-sends what waits."""
        while True:
            try:
                request_id, kind, value = await _read_frame(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, _codec.DecodeError):
                break
            pending = self._pending.pop(request_id, None)
            if pending is not None and not pending[1].done():
                pending[1].set_result((kind, value))
        if self._writer is writer:
            self._writer = None
        writer.close()
        if not self._closed and self._pending:
            await self._reconnect()

    async def _reconnect(self) -> None:
        """Connects again, within `reconnect_timeout`, and re-sends every unanswered request
        in order; the daemon answers an append it already committed with its receipts."""
        assert self._lock is not None
        async with self._lock:
            if self._writer is not None:
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.reconnect_timeout
            delay = 0.01
            while self._pending and not self._closed:
                try:
                    reader, writer, limits = await self._connect()
                except Refused as refusal:
                    self._fail_all(refusal)
                    return
                except Unavailable as error:
                    if loop.time() > deadline:
                        self._fail_all(error)
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                for frame, _ in self._pending.values():
                    writer.write(frame)
                self._serve(reader, writer, limits)
                return

    def _fail_all(self, error: WitnessError) -> None:
        pending, self._pending = self._pending, {}
        for _, answer in pending.values():
            if not answer.done():
                answer.set_exception(error)

    async def _call(self, build: Any, expected: str) -> Any:
        """Writes one request and waits, within `timeout`, for its answer."""
        request_id: Optional[int] = None

        async def ask() -> Any:
            nonlocal request_id
            await self._connection()
            assert self._room is not None
            async with self._room:
                # Ids and producer numbers are taken in the order requests are written.
                request_id = self._next_id
                self._next_id += 1
                frame = build(request_id)
                answer: asyncio.Future[Tuple[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending[request_id] = (frame, answer)
                writer = self._writer
                if writer is not None:
                    writer.write(frame)
                    try:
                        await writer.drain()
                    except OSError:
                        pass  # the reader task notices, reconnects and re-sends it
                kind, value = await answer
            return _raise_for(kind, value, expected)

        try:
            return await asyncio.wait_for(ask(), self.timeout)
        except asyncio.TimeoutError:
            raise Unavailable(
                f"witnessd did not answer within {self.timeout} s; the request may or may not "
                "have been carried out"
            ) from None
        finally:
            if request_id is not None:
                self._pending.pop(request_id, None)

    async def _run(self, steps: Steps[T]) -> T:
        """Drives a call's steps over this client's connection."""
        try:
            step = next(steps)
            while True:
                step = steps.send(await self._call(*step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # -- writing ----------------------------------------------------------------------

    async def log(
        self,
        event: str,
        component: Optional[str] = None,
        *,
        trace_id: Optional[str] = None,
        payload: Any = None,
        cost: Optional[Cost] = None,
        client_ts: Timestamp = None,
    ) -> Receipt:
        """`Client.log`."""
        return await self._run(
            self._log_steps(
                event,
                component,
                trace_id=trace_id,
                payload=payload,
                cost=cost,
                client_ts=client_ts,
            )
        )

    async def log_batch(self, entries: Sequence[Mapping[str, Any]]) -> List[Receipt]:
        """`Client.log_batch`."""
        return await self._run(self._log_batch_steps(entries))

    async def send(
        self, event: str, component: Optional[str] = None, *, block: bool = True, **fields: Any
    ) -> None:
        """`Client.send`: queues at once; when the queue is full, waits for room without
        holding up the event loop (or with `block=False` raises `queue.Full`)."""
        try:
            self.client.send(event, component, block=False, **fields)
        except queue.Full:
            if not block:
                raise
            await asyncio.to_thread(self.client.send, event, component, **fields)

    async def flush(self, timeout: Optional[float] = None) -> None:
        """`Client.flush`."""
        if self._client is not None:
            await asyncio.to_thread(self._client.flush, timeout)

    async def close(self) -> None:
        """Flushes what was sent, then closes the connections."""
        if self._closed:
            return
        try:
            if self._client is not None:
                await asyncio.to_thread(self._client.close)
        finally:
            self._closed = True
            self._fail_all(WitnessError("the client is closed"))
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._reader is not None:
                self._reader.cancel()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- reading ----------------------------------------------------------------------

    async def ping(self) -> None:
        """`Client.ping`."""
        await self._run(self._ping_steps())

    async def stats(self) -> Stats:
        """`Client.stats`."""
        return await self._run(self._stats_steps())

    async def verify(
        self, from_seq: Optional[int] = None, to_seq: Optional[int] = None
    ) -> VerifyReport:
        """`Client.verify`."""
        return await self._run(self._verify_steps(from_seq, to_seq))

    async def trace(self, trace_id: str) -> Trace:
        """`Client.trace`."""
        return await self._run(self._trace_steps(trace_id))

    async def traces(self, **query: Any) -> List[TraceSummary]:
        """`Client.traces`."""
        return await self._run(self._traces_steps(**query))

    async def cost(self, by: str = "component", **query: Any) -> CostReport:
        """`Client.cost`."""
        return await self._run(self._cost_steps(by, **query))

    async def tail(self, n: Optional[int] = None, **query: Any) -> AsyncIterator[StoredEntry]:
        """`Client.tail`, as an asynchronous iterator."""
        entries = self.client.tail(n, **query)
        try:
            while True:
                entry = await asyncio.to_thread(next, entries, _END)
                if entry is _END:
                    return
                yield entry  # type: ignore[misc]
        finally:
            try:
                entries.close()  # type: ignore[attr-defined]
            except ValueError:
                pass  # still running in its thread: it closes its connection when it returns
