"""`AsyncClient`: the client's surface for asyncio.

Each call runs the blocking client's in a worker thread (`asyncio.to_thread`, which carries
the caller's trace context), so the event loop never waits on the socket; `send` queues at
once and only goes to a thread when the queue is full.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any, AsyncIterator, List, Mapping, Optional, Sequence

from ._types import CostReport, Receipt, Stats, StoredEntry, Trace, TraceSummary, VerifyReport
from .client import Client

_END = object()


class AsyncClient:
    """The asyncio face of `Client`, with the same methods as coroutines; `tail` is an
    asynchronous iterator. Takes `Client`'s arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.client = Client(*args, **kwargs)

    async def log(self, event: str, component: Optional[str] = None, **fields: Any) -> Receipt:
        """`Client.log`."""
        return await asyncio.to_thread(self.client.log, event, component, **fields)

    async def log_batch(self, entries: Sequence[Mapping[str, Any]]) -> List[Receipt]:
        """`Client.log_batch`."""
        return await asyncio.to_thread(self.client.log_batch, entries)

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
        await asyncio.to_thread(self.client.flush, timeout)

    async def close(self) -> None:
        """`Client.close`."""
        await asyncio.to_thread(self.client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def ping(self) -> None:
        """`Client.ping`."""
        await asyncio.to_thread(self.client.ping)

    async def stats(self) -> Stats:
        """`Client.stats`."""
        return await asyncio.to_thread(self.client.stats)

    async def verify(
        self, from_seq: Optional[int] = None, to_seq: Optional[int] = None
    ) -> VerifyReport:
        """`Client.verify`."""
        return await asyncio.to_thread(self.client.verify, from_seq, to_seq)

    async def trace(self, trace_id: str) -> Trace:
        """`Client.trace`."""
        return await asyncio.to_thread(self.client.trace, trace_id)

    async def traces(self, **query: Any) -> List[TraceSummary]:
        """`Client.traces`."""
        return await asyncio.to_thread(self.client.traces, **query)

    async def cost(self, by: str = "component", **query: Any) -> CostReport:
        """`Client.cost`."""
        return await asyncio.to_thread(self.client.cost, by, **query)

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
