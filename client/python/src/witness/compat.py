"""The API of the older in-process system (`WitnessDatabase`), on top of witnessd, so that a
script written for it changes only its import:

    from witness.compat import WitnessDatabase, Cost

Entries go to the daemon instead of a SQLite file the script opens itself: `db_path`,
`crypto`, `use_pool` and `pool_size` are accepted and ignored (one client is shared by every
thread, and the daemon owns the database and its chain). A `db_path` given is warned about,
once a process (a `UserWarning`), because a script that names a file expects its entries
there: they go to the daemon's log instead.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._types import Cost, Receipt, StoredEntry
from .client import Client

__all__ = ["Cost", "WitnessDatabase", "WitnessEntry"]

DateLike = Union[_dt.datetime, _dt.date, str, None]


@dataclass(frozen=True)
class WitnessEntry:
    """An entry as the old API returned it: `id` is its sequence number in the log, `hash`
    its chain hash in hex."""

    id: int
    event: str
    component: str
    trace_id: Optional[str]
    payload: Any
    cost: Optional[Cost]
    hash: str
    timestamp: Optional[_dt.datetime] = None

    @property
    def seq(self) -> int:
        """The sequence number (the same as `id`)."""
        return self.id

    @property
    def content_hash(self) -> str:
        """The chain hash in hex (the old name)."""
        return self.hash


def _from_receipt(receipt: Receipt, fields: Mapping[str, Any]) -> WitnessEntry:
    return WitnessEntry(
        id=receipt.seq,
        event=fields["event"],
        component=fields["component"],
        trace_id=fields.get("trace_id"),
        payload=fields.get("payload"),
        cost=fields.get("cost"),
        hash=receipt.hash_hex,
    )


def _from_stored(entry: StoredEntry) -> WitnessEntry:
    return WitnessEntry(
        id=entry.seq,
        event=entry.event,
        component=entry.component,
        trace_id=entry.trace_id,
        payload=entry.payload,
        cost=entry.cost,
        hash=entry.hash.hex(),
        timestamp=entry.time,
    )


def _when(value: DateLike) -> Optional[_dt.datetime]:
    """A date as the old API took it (a datetime, a date or an ISO 8601 string), in UTC when
    it names no zone."""
    if value is None:
        return None
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value


# Whether a `db_path` was warned about in this process.
_warned_db_path = False


class WitnessDatabase:
    """`WitnessDatabase` of the old API, recording through witnessd."""

    def __init__(
        self,
        db_path: Optional[str] = None,
        crypto: Any = None,
        use_pool: bool = False,
        pool_size: int = 10,
        *,
        socket: Optional[str] = None,
        client: Optional[Client] = None,
    ) -> None:
        global _warned_db_path
        if db_path is not None and not _warned_db_path:
            _warned_db_path = True
            warnings.warn(
                f"WitnessDatabase(db_path={db_path!r}): the path is ignored; entries go to the "
                "witnessd log the socket leads to (witness stats names its database)",
                UserWarning,
                stacklevel=2,
            )
        self.client = client or Client(socket)

    def create_entry(
        self,
        event: str,
        component: str,
        trace_id: Optional[str] = None,
        payload: Any = None,
        cost: Optional[Cost] = None,
    ) -> WitnessEntry:
        """Records one entry; returns once it is committed."""
        fields = {
            "event": event,
            "component": component,
            "trace_id": trace_id,
            "payload": payload,
            "cost": cost,
        }
        return _from_receipt(self.client.log(**fields), fields)

    def create_entries_batch(self, entries_data: Sequence[Mapping[str, Any]]) -> List[WitnessEntry]:
        """Records many entries: each run of up to 10,000 in one transaction, in order."""
        recorded: List[WitnessEntry] = []
        for start in range(0, len(entries_data), 10_000):
            chunk = [
                {
                    key: entry.get(key)
                    for key in ("event", "component", "trace_id", "payload", "cost")
                }
                for entry in entries_data[start : start + 10_000]
            ]
            receipts = self.client.log_batch(chunk)
            recorded.extend(_from_receipt(r, f) for r, f in zip(receipts, chunk))
        return recorded

    def get_trace(self, trace_id: str) -> List[WitnessEntry]:
        """Every entry of a trace, in order."""
        return [_from_stored(entry) for entry in self.client.trace(trace_id).entries]

    def get_cost_by_component(
        self,
        component: Optional[str] = None,
        start_date: DateLike = None,
        end_date: DateLike = None,
    ) -> List[Dict[str, Any]]:
        """Per component: `component`, `total_cost` (dollars, a float as before; the exact
        figure is `total_cost_usd`, a `Decimal`), `total_tokens`, `tokens_in`, `tokens_out`
        and `call_count`, the most money first."""
        report = self.client.cost(
            "component", since=_when(start_date), until=_when(end_date), component=component
        )
        return [
            {
                "component": row.key,
                "total_cost": float(row.usd),
                "total_cost_usd": Decimal(row.usd),
                "total_tokens": row.tokens_in + row.tokens_out,
                "tokens_in": row.tokens_in,
                "tokens_out": row.tokens_out,
                "call_count": row.entries,
            }
            for row in report.rows
        ]

    def verify_all(self) -> Tuple[bool, str, int]:
        """`(is_valid, message, entries checked)` for the whole log."""
        report = self.client.verify()
        return report.intact, str(report), report.count

    def close(self) -> None:
        """Waits for nothing (every call already returned once committed) and disconnects."""
        self.client.close()
