"""witness: record audit and LLM-cost events through the local witnessd daemon.

    import witness

    witness.log("llm_call", "planner", trace_id="req-7", payload={"prompt_chars": 812},
                cost=witness.Cost(tokens_in=812, tokens_out=120, cost_usd="0.00231",
                                  model="small-model"))
    for i in range(1000):
        witness.send("tick", "worker", payload={"i": i})
    witness.flush()

The module-level functions use one shared `Client` (socket from `WITNESS_SOCKET` or the
default place), made on first use; make a `Client` of your own for other settings.
"""

from __future__ import annotations

import threading
from typing import Any, List, Mapping, Optional, Sequence

from ._context import bind, current_component, current_trace, new_trace_id, trace, traced
from ._types import (
    Cost,
    CostReport,
    CostRow,
    ForwardStats,
    InvalidArgument,
    Percentiles,
    Receipt,
    Refused,
    Stats,
    StoredEntry,
    Trace,
    TraceSummary,
    Unavailable,
    VerifyReport,
    WitnessError,
    micro_usd,
)
from .aio import AsyncClient
from .client import Client, Json

__all__ = [
    "AsyncClient",
    "Client",
    "Cost",
    "CostReport",
    "CostRow",
    "ForwardStats",
    "InvalidArgument",
    "Json",
    "Percentiles",
    "Receipt",
    "Refused",
    "Stats",
    "StoredEntry",
    "Trace",
    "TraceSummary",
    "Unavailable",
    "VerifyReport",
    "WitnessError",
    "bind",
    "current_component",
    "current_trace",
    "default_client",
    "flush",
    "log",
    "log_batch",
    "micro_usd",
    "new_trace_id",
    "send",
    "trace",
    "traced",
]

__version__ = "0.1.0"

_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The shared client of the module-level functions."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def log(event: str, component: Optional[str] = None, **fields: Any) -> Receipt:
    """`Client.log` on the shared client."""
    return default_client().log(event, component, **fields)


def log_batch(entries: Sequence[Mapping[str, Any]]) -> List[Receipt]:
    """`Client.log_batch` on the shared client."""
    return default_client().log_batch(entries)


def send(event: str, component: Optional[str] = None, **fields: Any) -> None:
    """`Client.send` on the shared client."""
    default_client().send(event, component, **fields)


def flush(timeout: Optional[float] = None) -> None:
    """`Client.flush` on the shared client."""
    default_client().flush(timeout)
