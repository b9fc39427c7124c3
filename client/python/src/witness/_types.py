"""The values a witness client sends and receives: costs, receipts, stored entries, reports.

Plain, immutable data with the arithmetic a user needs (money in micro-dollars and as a
`Decimal`, times as `datetime`), and the readers for the usage objects of LLM SDKs.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Dict, List, Mapping, Optional, Union

#: Largest integer the protocol carries (tokens, money, numbers): SQLite's largest.
MAX_INTEGER = 2**63 - 1
_MICRO = Decimal("0.000001")

Money = Union[Decimal, float, int, str]


class WitnessError(Exception):
    """Base of every error this package raises."""


class InvalidArgument(WitnessError, ValueError):
    """An argument or entry the daemon would refuse, caught before anything is sent."""


class Refused(WitnessError):
    """The daemon refused a request; nothing of it was recorded.

    `code` is the protocol's error code name (`"InvalidEntry"`, `"Busy"`, …) and `index` the
    position of the offending entry in its append, when the daemon named one.
    """

    def __init__(self, code: str, message: str, index: Optional[int] = None) -> None:
        where = f" (entry {index})" if index is not None else ""
        super().__init__(f"{code}: {message}{where}")
        self.code = code
        self.message = message
        self.index = index


class Unavailable(WitnessError, ConnectionError):
    """The daemon could not be reached, or did not answer in time. Entries given to `log`
    or `log_batch` that raise this may or may not have been recorded; `send`'s entries are
    re-sent once the daemon is back, and recorded exactly once."""


def micro_usd(amount: Money) -> int:
    """Dollars as integer micro-dollars, rounded half up to the micro-dollar as the daemon's
    prices and `witness import` round (float noise such as 0.30000000000000004 becomes
    300000). An `int` counts dollars; negative amounts,
    NaN and infinities are refused."""
    if isinstance(amount, bool):
        raise InvalidArgument("a cost is a number of dollars, not a bool")
    try:
        value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidArgument(f"a cost in dollars must be a number, not {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise InvalidArgument(f"a cost in dollars must be finite and at least 0, not {amount!r}")
    micros = int((value / _MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if micros > MAX_INTEGER:
        raise InvalidArgument(f"a cost of {amount} dollars is past the largest the log holds")
    return micros


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an integer, not {value!r}")
    if value < 0 or value > MAX_INTEGER:
        raise InvalidArgument(f"{name} must be from 0 to 2**63-1, not {value}")
    return value


def _field(source: Any, name: str) -> Any:
    """`source.name` or `source[name]`, for SDK objects and plain dicts alike."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


@dataclass(frozen=True)
class Cost:
    """What an LLM call cost: tokens in and out (as OpenTelemetry's `gen_ai.usage.*` count
    them: input includes cache reads and writes, output includes reasoning), optional
    cached, cache-write and reasoning tokens, money in micro-dollars, and the model.

    Give money as `cost_usd` (a `Decimal`, float, int or numeric string of dollars, rounded to
    the micro-dollar) or as `micro_usd` (an integer), not both; or give neither, and the
    daemon prices the call from the model and the tokens with its price table. A model the
    table does not know is recorded unpriced (`micro_usd` is `None`), never as free.
    `priced_by` is the daemon's: on an entry read back, the price it used.
    """

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Optional[Money] = field(default=None, compare=False, repr=False)
    model: Optional[str] = None
    cache_read_tokens: Optional[int] = None
    reasoning_tokens: Optional[int] = None
    micro_usd: Optional[int] = None
    cache_write_tokens: Optional[int] = None
    cache_write_1h_tokens: Optional[int] = None
    priced_by: Optional[str] = None

    def __post_init__(self) -> None:
        _count("tokens_in", self.tokens_in)
        _count("tokens_out", self.tokens_out)
        for name in (
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
        ):
            value = getattr(self, name)
            if value is not None:
                _count(name, value)
        if self.cache_write_1h_tokens is not None and (
            self.cache_write_tokens is None or self.cache_write_1h_tokens > self.cache_write_tokens
        ):
            raise InvalidArgument(
                "cache_write_1h_tokens is a part of cache_write_tokens and cannot exceed it"
            )
        if self.cost_usd is not None and self.micro_usd is not None:
            raise InvalidArgument("give cost_usd or micro_usd, not both")
        if self.cost_usd is not None:
            object.__setattr__(self, "micro_usd", micro_usd(self.cost_usd))
        elif self.micro_usd is not None:
            _count("micro_usd", self.micro_usd)
        object.__setattr__(self, "cost_usd", None)
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise InvalidArgument(f"model must be a non-empty string, not {self.model!r}")

    @property
    def usd(self) -> Optional[Decimal]:
        """The money in dollars, exactly; `None` when the call is unpriced."""
        if self.micro_usd is None:
            return None
        return Decimal(self.micro_usd) * _MICRO

    @property
    def priced(self) -> bool:
        """Whether the call has money: given by the caller or priced by the daemon."""
        return self.micro_usd is not None

    @classmethod
    def from_openai(
        cls, usage: Any, *, model: Optional[str] = None, cost_usd: Optional[Money] = None
    ) -> Cost:
        """From an OpenAI `usage` (Chat Completions or Responses; the SDK's object or a
        dict). OpenAI's prompt tokens already include cached ones and its completion tokens
        the reasoning ones, which is how OpenTelemetry counts them, so they are kept as
        they are; `cached_tokens`, `cache_write_tokens` and `reasoning_tokens` are recorded
        beside them. Without `cost_usd`, the daemon prices the call from `model`."""
        tokens_in = _field(usage, "prompt_tokens")
        if tokens_in is None:
            tokens_in = _field(usage, "input_tokens")
        tokens_out = _field(usage, "completion_tokens")
        if tokens_out is None:
            tokens_out = _field(usage, "output_tokens")
        details_in = _field(usage, "prompt_tokens_details") or _field(usage, "input_tokens_details")
        details_out = _field(usage, "completion_tokens_details") or _field(
            usage, "output_tokens_details"
        )
        return cls(
            tokens_in=tokens_in or 0,
            tokens_out=tokens_out or 0,
            cost_usd=cost_usd,
            model=model,
            cache_read_tokens=_field(details_in, "cached_tokens"),
            cache_write_tokens=_field(details_in, "cache_write_tokens"),
            reasoning_tokens=_field(details_out, "reasoning_tokens"),
        )

    @classmethod
    def from_anthropic(
        cls, usage: Any, *, model: Optional[str] = None, cost_usd: Optional[Money] = None
    ) -> Cost:
        """From an Anthropic `usage` (the SDK's object or a dict). Anthropic's
        `input_tokens` leave out tokens read from and written to the prompt cache;
        OpenTelemetry's input tokens include them, so they are added in, and recorded as
        `cache_read_tokens` and `cache_write_tokens` (with the hour-long writes of
        `cache_creation.ephemeral_1h_input_tokens` as `cache_write_1h_tokens`, which cost
        more). Without `cost_usd`, the daemon prices the call from `model`."""
        read = _field(usage, "cache_read_input_tokens")
        written = _field(usage, "cache_creation_input_tokens")
        hour = _field(_field(usage, "cache_creation"), "ephemeral_1h_input_tokens")
        tokens_in = (_field(usage, "input_tokens") or 0) + (read or 0) + (written or 0)
        return cls(
            tokens_in=tokens_in,
            tokens_out=_field(usage, "output_tokens") or 0,
            cost_usd=cost_usd,
            model=model,
            cache_read_tokens=read,
            cache_write_tokens=written if written is not None or hour is None else hour,
            cache_write_1h_tokens=hour,
        )


@dataclass(frozen=True)
class Receipt:
    """Where an entry was recorded: its sequence number and its chain hash."""

    seq: int
    hash: bytes

    @property
    def hash_hex(self) -> str:
        """The chain hash in hex, as `witness` prints it."""
        return self.hash.hex()


def _time(ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the log holds it, with what the daemon added: `seq`, the receive time
    `ts` (ns since the Unix epoch), the sender's pid, uid and gid, and the chain hash."""

    seq: int
    ts: int
    event: str
    component: str
    trace_id: Optional[str]
    payload_json: str
    cost: Optional[Cost]
    client_ts: Optional[int]
    #: The original's fields (JSON text) when the entry is a copy made by `witness import`.
    imported: Optional[str]
    pid: Optional[int]
    uid: Optional[int]
    gid: Optional[int]
    producer_id: Optional[int]
    producer_number: Optional[int]
    hash: bytes

    @property
    def payload(self) -> Any:
        """The payload, parsed."""
        return json.loads(self.payload_json)

    @property
    def time(self) -> _dt.datetime:
        """The entry's date, in UTC: the client's own time where it gave one, else the
        receive time, as every read dates it."""
        return _time(self.client_ts if self.client_ts is not None else self.ts)

    @property
    def received(self) -> _dt.datetime:
        """When the daemon received it, in UTC."""
        return _time(self.ts)


@dataclass(frozen=True)
class TraceSummary:
    """One trace: its entries, the span of `seq` and time it covers, and its sums."""

    trace_id: str
    entries: int
    first_seq: int
    last_seq: int
    first_ts: int
    last_ts: int
    components: List[str]
    tokens_in: int
    tokens_out: int
    micro_usd: int
    #: Entries with tokens and no price: their money is not in `micro_usd`.
    unpriced: int = 0

    @property
    def duration(self) -> _dt.timedelta:
        """From its first entry to its last."""
        return _dt.timedelta(microseconds=(self.last_ts - self.first_ts) / 1000)

    @property
    def usd(self) -> Decimal:
        """Its money in dollars."""
        return Decimal(self.micro_usd) * _MICRO


@dataclass(frozen=True)
class Trace:
    """A whole trace: its summary (`None` when no entry has the id) and its entries."""

    summary: Optional[TraceSummary]
    entries: List[StoredEntry]


@dataclass(frozen=True)
class CostRow:
    """One group of a cost report; `key` is `None` for entries without one."""

    key: Optional[str]
    entries: int
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    reasoning_tokens: int
    micro_usd: int
    cache_write_tokens: int = 0
    #: Entries with tokens and no price: their money is not in `micro_usd`.
    unpriced: int = 0

    @property
    def usd(self) -> Decimal:
        """Its money in dollars, over the priced entries."""
        return Decimal(self.micro_usd) * _MICRO


@dataclass(frozen=True)
class CostReport:
    """A cost report: every group (most money first), how many, and the total."""

    by: str
    rows: List[CostRow]
    groups: int
    total: CostRow


@dataclass(frozen=True)
class Percentiles:
    """A distribution over the last minute or two."""

    count: int
    p50: int
    p90: int
    p99: int
    p999: int
    max: int


@dataclass(frozen=True)
class Stats:
    """The daemon's counters (the protocol's `StatsReport`)."""

    server: str
    uptime_ms: int
    entries_total: int
    entries_per_sec: float
    last_seq: int
    batches_total: int
    batches_failed: int
    queue_depth: int
    queue_capacity: int
    batch_entries: Percentiles
    commit_us: Percentiles
    ack_us: Percentiles
    connections: int
    connections_max: int
    connections_total: int
    rejections: Dict[str, int]
    db_bytes: int
    wal_bytes: int
    rss_bytes: int
    rss_peak_bytes: int
    failure: Optional[str]
    rate_limited: Dict[int, int]
    forward: Optional[ForwardStats] = None
    disk_free_bytes: int = 0
    disk_days_left: Optional[float] = None
    disk_low: Optional[str] = None
    first_seq: int = 1
    entries_pruned: int = 0
    prune_seconds: float = 0.0


@dataclass(frozen=True)
class ForwardStats:
    """How far the forwarder to the fleet's PostgreSQL has come (`ForwardReport`)."""

    host_id: str
    state: str
    forwarded_seq: int
    lag_entries: int
    lag_seconds: float
    entries_total: int
    batches_total: int
    errors_total: int


@dataclass(frozen=True)
class VerifyReport:
    """The verdict of a verification: `"intact"`, `"broken"` (at `seq`, for `reason`) or
    `"inconsistent"` (a derived `table` disagrees with the entries). `count` is the number of
    entries checked."""

    verdict: str
    count: int
    first_seq: Optional[int] = None
    last_seq: Optional[int] = None
    head_hash: Optional[bytes] = None
    seq: Optional[int] = None
    table: Optional[str] = None
    reason: Optional[str] = None

    @property
    def intact(self) -> bool:
        """Whether every entry checked and every derived table agrees."""
        return self.verdict == "intact"

    def __str__(self) -> str:
        if self.verdict == "intact":
            return f"intact: {self.count} entries"
        if self.verdict == "broken":
            return f"BROKEN at seq {self.seq}: {self.reason}"
        return f"INCONSISTENT {self.table}: {self.reason}"
