"""The client against a real witnessd, every result checked in the database with sqlite3."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import pathlib
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from typing import Tuple

import pytest

import witness
from conftest import Daemon, witnessd_binary


def test_log_returns_the_receipt_of_the_stored_row(daemon: Daemon, client: witness.Client) -> None:
    cost = witness.Cost(
        tokens_in=812, tokens_out=120, cost_usd=Decimal("0.00231"), model="small-model"
    )
    receipt = client.log(
        "llm_call", "planner", trace_id="req-7", payload={"prompt_chars": 812}, cost=cost
    )
    rows = daemon.rows(
        "SELECT seq, hex(hash), event, component, trace_id, payload, tokens_in, tokens_out, "
        "cost_micro_usd, model, pid FROM entries"
    )
    assert rows == [
        (
            receipt.seq,
            receipt.hash_hex.upper(),
            "llm_call",
            "planner",
            "req-7",
            '{"prompt_chars":812}',
            812,
            120,
            2310,
            "small-model",
            os.getpid(),
        )
    ]


def test_log_batch_is_one_transaction_with_consecutive_numbers(
    daemon: Daemon, client: witness.Client
) -> None:
    client.log("first", "c")
    receipts = client.log_batch(
        [{"event": "e", "component": "c", "payload": {"i": i}} for i in range(50)]
    )
    assert [r.seq for r in receipts] == list(range(2, 52))
    # A bad entry anywhere refuses the whole batch before anything is sent.
    with pytest.raises(witness.InvalidArgument, match="entry 2"):
        client.log_batch([{"event": "e", "component": "c"}] * 2 + [{"event": "", "component": "c"}])
    with pytest.raises(witness.InvalidArgument, match="unexpected keyword"):
        client.log_batch([{"event": "e", "component": "c", "colour": "red"}])
    assert daemon.rows("SELECT count(*) FROM entries") == [(51,)]


def test_a_hundred_thousand_sends_are_all_stored_in_order(
    daemon: Daemon, client: witness.Client
) -> None:
    for i in range(100_000):
        client.send("tick", "stream", payload={"i": i})
    client.flush()
    rows = daemon.rows("SELECT json_extract(payload, '$.i') FROM entries ORDER BY seq")
    assert [i for (i,) in rows] == list(range(100_000))


def _kill9_and_restart_once_stored(daemon: Daemon, rows: int, killed: threading.Event) -> None:
    """Kills the daemon with SIGKILL once it has `rows` entries (a minute at most), sets
    `killed`, and starts it again."""

    def stored() -> int:
        # The daemon may still be creating its database when the appends begin.
        try:
            return daemon.rows("SELECT count(*) FROM entries")[0][0]
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 60
    while stored() < rows and time.monotonic() < deadline:
        time.sleep(0.005)
    daemon.kill9()
    killed.set()
    time.sleep(0.3)
    daemon.start()


def test_sends_survive_kill_dash_nine_and_restart_exactly_once(daemon: Daemon) -> None:
    client = daemon.client(reconnect_timeout=30.0)
    n = 30_000
    killed = threading.Event()
    thread = threading.Thread(target=_kill9_and_restart_once_stored, args=(daemon, 3_000, killed))
    thread.start()
    for i in range(n):
        client.send("tick", "stream", payload={"i": i})
        if i % 1000 == 0:
            time.sleep(0.002)
    client.flush()
    thread.join()
    assert killed.is_set()
    rows = daemon.rows("SELECT json_extract(payload, '$.i') FROM entries ORDER BY seq")
    assert [i for (i,) in rows] == list(range(n))
    client.close()


def test_threads_sharing_a_client_each_get_their_own_receipts_while_sends_flow(
    daemon: Daemon, client: witness.Client
) -> None:
    # One caller at a time reads the socket for everyone; the others' answers, and those of
    # `send`, are handed over: each receipt must still be its own entry's.
    threads, calls, sends = 8, 200, 5_000
    receipts: dict = {}
    failures: list = []

    def caller(t: int) -> None:
        try:
            receipts[t] = [
                client.log("call", "threads", payload={"t": t, "i": i}) for i in range(calls)
            ]
        except BaseException as error:  # noqa: BLE001 (reported by the main thread)
            failures.append(error)

    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for i in range(sends):
        client.send("sent", "threads", payload={"i": i})
    client.flush(timeout=60)
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert failures == []
    stored = dict(daemon.rows("SELECT seq, payload FROM entries WHERE event = 'call'"))
    for t in range(threads):
        assert [json.loads(stored[r.seq]) for r in receipts[t]] == [
            {"t": t, "i": i} for i in range(calls)
        ]
    rows = daemon.rows("SELECT json_extract(payload, '$.i') FROM entries WHERE event = 'sent'")
    assert sorted(i for (i,) in rows) == list(range(sends))


def test_a_log_waiting_through_kill_dash_nine_is_answered_after_restart_exactly_once(
    daemon: Daemon,
) -> None:
    # The caller reading its own answer sees the connection break; the reader thread
    # reconnects and re-sends, and the call returns the receipt of the one entry stored.
    client = daemon.client(reconnect_timeout=30.0)
    n = 2_000
    killed = threading.Event()
    thread = threading.Thread(target=_kill9_and_restart_once_stored, args=(daemon, 300, killed))
    thread.start()
    receipts = [client.log("tick", "restart", payload={"i": i}) for i in range(n)]
    thread.join(timeout=90)
    assert killed.is_set()
    rows = daemon.rows("SELECT seq, json_extract(payload, '$.i') FROM entries ORDER BY seq")
    assert [i for (_, i) in rows] == list(range(n))
    assert [r.seq for r in receipts] == [seq for (seq, _) in rows]
    client.close()


def test_send_waits_for_the_daemon_and_never_drops_when_the_queue_is_full(
    daemon: Daemon,
) -> None:
    daemon.stop()
    if os.path.exists(daemon.socket):
        os.unlink(daemon.socket)
    client = daemon.client(send_queue=1, send_batch=1)
    accepted = []
    deadline = time.monotonic() + 5
    while True:
        payload = len(accepted) + 1
        try:
            client.send("e", "c", payload=payload, block=False)
        except queue.Full:
            break
        accepted.append(str(payload))
        assert time.monotonic() < deadline, "the queue never filled"
        time.sleep(0.01)
    # The sender holds what the absent daemon will get, and the queue is full.
    assert len(accepted) >= 2
    daemon.start()
    client.flush(timeout=30)
    assert [p for (p,) in daemon.rows("SELECT payload FROM entries ORDER BY seq")] == accepted
    client.close()


def test_a_forked_child_sends_with_a_producer_of_its_own(
    daemon: Daemon, client: witness.Client
) -> None:
    for i in range(500):
        client.send("parent", "c", payload=i)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for i in range(300):
                client.send("child", "c", payload=i)
            client.flush(timeout=30)
        except BaseException:
            code = 1
        os._exit(code)
    for i in range(500, 1000):
        client.send("parent", "c", payload=i)
    client.flush()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for event, n in (("parent", 1000), ("child", 300)):
        rows = daemon.rows(
            "SELECT payload, pid, producer_id FROM entries WHERE event = ? ORDER BY seq", event
        )
        assert [int(p) for p, _, _ in rows] == list(range(n)), event
        assert len({producer for _, _, producer in rows}) == 1
    producers = daemon.rows("SELECT DISTINCT event, pid, producer_id FROM entries")
    assert len({producer for _, _, producer in producers}) == 2
    assert {pid_ for event, pid_, _ in producers if event == "child"} == {pid}


def test_many_asyncio_tasks_each_keep_their_trace(daemon: Daemon) -> None:
    async def main() -> None:
        async with witness.AsyncClient(daemon.socket, flush_at_exit=False) as client:

            @witness.traced(component="agent")
            async def task(k: int) -> witness.Receipt:
                await asyncio.sleep(0.001 * (k % 5))
                return await client.log("step", payload={"k": k})

            async def in_trace(k: int) -> witness.Receipt:
                with witness.trace(f"req-{k}"):
                    return await task(k)

            receipts = await asyncio.gather(*(in_trace(k) for k in range(200)))
            assert len({r.seq for r in receipts}) == 200
            for k in range(50):
                await client.send("sent", "agent", payload=k)
            await client.flush()
            entries = [e async for e in client.tail(10)]
            assert [e.payload for e in entries] == list(range(40, 50))

    asyncio.run(main())
    rows = daemon.rows(
        "SELECT trace_id, component, json_extract(payload, '$.k') FROM entries WHERE event = 'step'"
    )
    assert sorted(rows, key=lambda row: row[2]) == [(f"req-{k}", "agent", k) for k in range(200)]


def test_asyncio_client_speaks_on_the_loop_and_survives_kill_dash_nine_exactly_once(
    daemon: Daemon,
) -> None:
    """Issue 28, item 21: `AsyncClient.log` goes over the event loop's own stream (no worker
    thread), and what hundreds of tasks logged across a `kill -9` and restart is stored
    once each, every call answered with its receipt."""
    workers, each = 100, 60
    receipts: list[witness.Receipt] = []
    killed_at: list[int] = []

    async def main() -> None:
        client = witness.AsyncClient(daemon.socket, flush_at_exit=False, reconnect_timeout=30.0)
        threads = threading.active_count()
        first = await asyncio.gather(*(client.log("warm", "agent", payload=k) for k in range(200)))
        assert len({r.seq for r in first}) == 200
        assert threading.active_count() == threads, "log must not run in a thread"

        async def worker(w: int) -> None:
            for i in range(each):
                receipts.append(await client.log("step", "agent", payload={"w": w, "i": i}))

        async def killer() -> None:
            while len(receipts) < 1_500:
                await asyncio.sleep(0.002)
            daemon.kill9()
            killed_at.append(len(receipts))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(daemon.start)

        await asyncio.gather(killer(), *(worker(w) for w in range(workers)))
        with pytest.raises(witness.Refused, match="since must be before until"):
            await client.traces(since=2_000_000_000_000_000_000, until=1)
        assert (await client.trace("none")).entries == []
        await client.close()

    asyncio.run(main())
    assert killed_at and killed_at[0] < workers * each, killed_at
    assert len(receipts) == workers * each
    assert len({r.seq for r in receipts}) == workers * each
    rows = daemon.rows(
        "SELECT json_extract(payload, '$.w'), json_extract(payload, '$.i'), seq FROM entries "
        "WHERE event = 'step'"
    )
    assert sorted((w, i) for w, i, _ in rows) == [
        (w, i) for w in range(workers) for i in range(each)
    ]
    assert {seq for _, _, seq in rows} == {r.seq for r in receipts}


def test_asyncio_client_bounds_its_wait_for_a_daemon_that_is_not_there(
    tmp_path: pathlib.Path,
) -> None:
    async def main() -> None:
        client = witness.AsyncClient(
            str(tmp_path / "nobody.sock"), connect_timeout=0.5, flush_at_exit=False
        )
        started = time.monotonic()
        with pytest.raises(witness.Unavailable, match="is witnessd running"):
            await client.log("e", "c")
        assert time.monotonic() - started < 5
        await client.close()

    asyncio.run(main())


def test_trace_context_reaches_threads_through_bind(daemon: Daemon, client: witness.Client) -> None:
    with witness.trace("outer", component="web") as trace_id:
        assert trace_id == "outer"
        client.log("here")
        thread = threading.Thread(target=witness.bind(lambda: client.log("there")))
        thread.start()
        thread.join()
        unbound = threading.Thread(target=lambda: client.log("bare", "web"))
        unbound.start()
        unbound.join()
    with pytest.raises(witness.InvalidArgument, match="needs a component"):
        client.log("nowhere")
    assert daemon.rows("SELECT event, trace_id, component FROM entries ORDER BY seq") == [
        ("here", "outer", "web"),
        ("there", "outer", "web"),
        ("bare", None, "web"),
    ]


def test_the_read_side_answers_from_the_log(daemon: Daemon, client: witness.Client) -> None:
    for k in range(3):
        client.log(
            "call",
            "planner" if k else "critic",
            trace_id="t-1",
            cost=witness.Cost(10, 2, micro_usd=100 * (k + 1), model="m"),
        )
    client.log("other", "critic", trace_id="t-2")
    trace = client.trace("t-1")
    assert trace.summary is not None and trace.summary.entries == 3
    assert trace.summary.micro_usd == 600 and trace.summary.usd == Decimal("0.0006")
    assert [e.seq for e in trace.entries] == [1, 2, 3]
    assert [t.trace_id for t in client.traces()] == ["t-2", "t-1"]
    assert client.trace("nope").summary is None
    report = client.cost("component")
    assert [(r.key, r.micro_usd, r.entries) for r in report.rows] == [
        ("planner", 500, 2),
        ("critic", 100, 2),
    ]
    assert report.total.micro_usd == 600
    assert [(r.key, r.entries) for r in client.cost("model").rows] == [("m", 3), (None, 1)]
    assert client.cost(model="m", event="call").total.entries == 3
    assert client.cost(model="none").total.entries == 0
    assert [e.event for e in client.tail(2)] == ["call", "other"]
    verdict = client.verify()
    assert verdict.intact and verdict.count == 4 and str(verdict) == "intact: 4 entries"
    stats = client.stats()
    assert stats.last_seq == 4 and stats.entries_total == 4
    assert stats.forward is None, "no forwarder is configured"
    assert stats.disk_free_bytes > 0 and stats.disk_low is None
    # Decoded to the last field: nothing pruned, so the live log starts at 1.
    assert (stats.first_seq, stats.entries_pruned, stats.prune_seconds) == (1, 0, 0.0)
    client.ping()


def test_reads_date_entries_by_the_clients_time(daemon: Daemon, client: witness.Client) -> None:
    long_ago = datetime.datetime(2026, 1, 5, 12, tzinfo=datetime.timezone.utc)
    client.log(
        "call",
        "agent",
        trace_id="old",
        client_ts=long_ago,
        cost=witness.Cost(10, 2, micro_usd=7, cache_read_tokens=4, reasoning_tokens=1),
    )
    client.log("call", "agent", trace_id="new")
    [entry] = client.tail(1, component="agent", event="call", trace_id="old")
    assert entry.time == long_ago and entry.received > long_ago
    day = client.cost("day")
    assert [r.key for r in day.rows][0] == "2026-01-05"
    assert (day.rows[0].cache_read_tokens, day.rows[0].reasoning_tokens) == (4, 1)
    january = client.traces(since=long_ago, until=long_ago + datetime.timedelta(days=1))
    assert [t.trace_id for t in january] == ["old"]


def test_tail_follow_yields_entries_as_they_are_committed(
    daemon: Daemon, client: witness.Client
) -> None:
    client.log("before", "c")
    seen: queue.Queue[str] = queue.Queue()

    def follow() -> None:
        for entry in client.tail(follow=True):
            seen.put(entry.event)
            if entry.event == "last":
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert seen.get(timeout=10) == "before"
    client.log("after", "c")
    client.log("last", "c")
    assert [seen.get(timeout=10), seen.get(timeout=10)] == ["after", "last"]
    thread.join(timeout=10)


def test_bad_entries_and_arguments_raise_clear_errors(
    daemon: Daemon, client: witness.Client
) -> None:
    bad = [
        (dict(event="", component="c"), "event must be 1 to 256 bytes"),
        (dict(event="e", component="c" * 257), "component must be 1 to 256 bytes"),
        (dict(event="e", component="c", trace_id="t" * 129), "trace_id must be 1 to 128"),
        (dict(event=3, component="c"), "event must be a string"),
        (dict(event="e\0", component="c"), "NUL"),
        (dict(event="e", component="c", payload=object()), "cannot be sent as JSON"),
        (dict(event="e", component="c", payload=float("nan")), "cannot be sent as JSON"),
        (dict(event="e", component="c", payload="x" * 70_000), "longer than 65536"),
        (dict(event="e", component="c", payload=witness.Json("{nope")), "not JSON"),
        (dict(event="e", component="c", cost="1.0"), "must be a witness.Cost"),
        (dict(event="e", component="c", client_ts="yesterday"), "client_ts must be"),
    ]
    for fields, message in bad:
        with pytest.raises(witness.InvalidArgument, match=message):
            client.log(**fields)  # type: ignore[arg-type]
        with pytest.raises(witness.InvalidArgument, match=message):
            client.send(**fields)  # type: ignore[arg-type]
    for cost, message in [
        (lambda: witness.Cost(-1, 0), "tokens_in must be from 0"),
        (lambda: witness.Cost(1, 2**63), "tokens_out must be from 0"),
        (lambda: witness.Cost(cost_usd=-0.5), "at least 0"),
        (lambda: witness.Cost(cost_usd="lots"), "must be a number"),
        (lambda: witness.Cost(cost_usd=float("inf")), "finite"),
        (lambda: witness.Cost(cost_usd=1, micro_usd=5), "not both"),
        (lambda: witness.Cost(model=""), "model must be"),
        (lambda: client.log("e", "c", client_ts=-1), "before 1970"),
    ]:
        with pytest.raises(witness.InvalidArgument, match=message):
            cost()
    with pytest.raises(witness.InvalidArgument, match="by must be one of"):
        client.cost("colour")
    with pytest.raises(witness.Refused, match="BadRequest"):
        client.verify(from_seq=5, to_seq=2)
    client.flush()
    assert daemon.rows("SELECT count(*) FROM entries") == [(0,)]
    with pytest.raises(witness.Unavailable, match="is witnessd running"):
        witness.Client(daemon.socket + ".absent").log("e", "c")


def test_a_daemon_that_never_answers_times_out(tmp_path: object) -> None:
    path = f"{tmp_path}/silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    started = time.monotonic()
    with pytest.raises(witness.Unavailable, match="did not answer hello"):
        witness.Client(path, connect_timeout=0.5).log("e", "c")
    assert time.monotonic() - started < 5
    server.close()


def test_money_and_usage_are_read_as_opentelemetry_counts() -> None:
    assert witness.Cost(cost_usd=0.1 + 0.2).micro_usd == 300_000
    assert witness.Cost(cost_usd=Decimal("0.0000025")).micro_usd == 3
    assert witness.Cost(cost_usd=Decimal("0.0000024999")).micro_usd == 2
    assert witness.Cost(cost_usd=2).micro_usd == 2_000_000
    assert witness.Cost(micro_usd=17).usd == Decimal("0.000017")
    openai = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 250},
    }
    cost = witness.Cost.from_openai(openai, model="gpt-x", cost_usd="0.004")
    assert (cost.tokens_in, cost.tokens_out, cost.cache_read_tokens, cost.reasoning_tokens) == (
        1200,
        300,
        1000,
        250,
    )
    assert cost.model == "gpt-x" and cost.micro_usd == 4000

    class Usage:  # as the SDKs' objects: attributes, nested objects, missing details
        input_tokens = 50
        output_tokens = 20
        cache_read_input_tokens = 400
        cache_creation_input_tokens = 30

    cost = witness.Cost.from_anthropic(Usage(), model="claude-x")
    assert (cost.tokens_in, cost.tokens_out, cost.cache_read_tokens) == (480, 20, 400)
    assert (cost.cache_write_tokens, cost.cache_write_1h_tokens, cost.micro_usd) == (30, None, None)
    hour = {
        "input_tokens": 5,
        "output_tokens": 1,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    }
    cost = witness.Cost.from_anthropic(hour, model="claude-x")
    assert (cost.tokens_in, cost.cache_write_tokens, cost.cache_write_1h_tokens) == (305, 300, 200)
    assert not cost.priced and cost.usd is None
    with pytest.raises(witness.InvalidArgument, match="cache_write_1h_tokens"):
        witness.Cost(10, 1, cache_write_tokens=2, cache_write_1h_tokens=3)
    responses = type("U", (), {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": None})
    cost = witness.Cost.from_openai(responses())
    assert (cost.tokens_in, cost.tokens_out, cost.cache_read_tokens) == (9, 4, None)


def test_payloads_go_as_json_text(daemon: Daemon, client: witness.Client) -> None:
    client.log("e", "c", payload=witness.Json('{"kept": [1, 2]}'))
    client.log("e", "c", payload="a string")
    client.log("e", "c")
    rows = [p for (p,) in daemon.rows("SELECT payload FROM entries ORDER BY seq")]
    assert rows == ['{"kept": [1, 2]}', '"a string"', "{}"]
    assert json.loads(rows[0]) == {"kept": [1, 2]}


def test_the_daemon_prices_tokens_and_keeps_unknown_models_unpriced(
    daemon: Daemon, client: witness.Client
) -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    priced = client.log(
        "llm.call", "agent", cost=witness.Cost.from_openai(usage, model="gpt-4o-mini")
    )
    unknown = client.log("llm.call", "agent", cost=witness.Cost(100, 10, model="my-finetune"))
    given = client.log(
        "llm.call", "agent", cost=witness.Cost(100, 10, model="gpt-4o-mini", micro_usd=7)
    )
    rows = dict(
        (seq, (usd, by))
        for seq, usd, by in daemon.rows("SELECT seq, cost_micro_usd, priced_by FROM entries")
    )
    assert rows[priced.seq] == (345, "genai-prices-47df840a5ab1:openai/gpt-4o-mini")
    assert rows[unknown.seq] == (None, None)
    assert rows[given.seq] == (7, None)
    stored = {entry.seq: entry for entry in client.tail(3)}
    assert stored[priced.seq].cost is not None and stored[priced.seq].cost.usd == Decimal(
        "0.000345"
    )
    assert stored[unknown.seq].cost is not None and stored[unknown.seq].cost.usd is None
    report = client.cost("model")
    assert report.total.unpriced == 1 and report.total.micro_usd == 352


def run_script(
    code: str, timeout: float = 120, runtime: pathlib.Path | None = None
) -> Tuple[int, str, float]:
    """Runs `code` in a fresh interpreter with this client on its path (and `runtime` as its
    XDG_RUNTIME_DIR, where the spool is); exit status, stderr and how long it took."""
    source = os.path.join(os.path.dirname(witness.__file__), "..")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(source)}
    if runtime is not None:
        env["XDG_RUNTIME_DIR"] = str(runtime)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def test_a_script_whose_sends_were_not_recorded_does_not_exit_0_nor_stall(
    tmp_path: pathlib.Path,
) -> None:
    """Issue 28, item 3: `send` with the daemon down used to stall 60 s at exit, lose the
    entry and exit 0. The wait at exit is bounded by `exit_timeout`; what was not recorded is
    kept in the spool and the status is 75 (EX_TEMPFAIL), or, with no spool to keep it in, 69
    (EX_UNAVAILABLE), with a line that says how many entries were not recorded."""
    missing = tmp_path / "nobody-here.sock"
    code = (
        "import witness\n"
        f"client = witness.Client({str(missing)!r}, exit_timeout=2, reconnect_timeout=1,"
        " connect_timeout=1)\n"
        "client.send('lost', 'script')\n"
        "print('done')\n"
    )
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    status, stderr, took = run_script(code, runtime=runtime)
    assert status == 75, stderr
    assert "1 entries sent before exit were not recorded" in stderr, stderr
    assert "kept in" in stderr, stderr
    assert took < 15, f"exit took {took:.1f} s"
    (spooled,) = list((runtime / "witness").glob("spool-*/*.spool"))
    assert spooled.stat().st_mode & 0o777 == 0o600
    assert spooled.parent.stat().st_mode & 0o777 == 0o700
    # A runtime folder others may write is no place for entries: nothing kept, 69.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    status, stderr, _ = run_script(code, runtime=shared)
    assert status == 69, stderr
    assert "kept in" not in stderr, stderr


def spool_from_a_script(
    daemon: Daemon,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    event: str,
) -> Tuple[pathlib.Path, pathlib.Path]:
    """Stops the daemon and runs a script that sends `count` entries, which it must keep in
    the spool (exit 75); the spool folder and the one file in it."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    daemon.stop()
    code = (
        "import witness\n"
        f"client = witness.Client({daemon.socket!r}, exit_timeout=1, reconnect_timeout=1,"
        " connect_timeout=1)\n"
        f"for n in range({count}):\n"
        f"    client.send({event!r}, 'script', payload={{'n': n}})\n"
    )
    status, stderr, _ = run_script(code, runtime=runtime)
    assert status == 75, stderr
    folder = next((runtime / "witness").glob("spool-*"))
    (spooled,) = list(folder.glob("*.spool"))
    return folder, spooled


def test_spooled_entries_are_delivered_once_by_the_next_client(
    daemon: Daemon, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28, item 3: what a script could not deliver before it exited is delivered by
    the next client that reaches the daemon, with its producer numbers, so that a copy
    delivered twice is stored once; a spool file that is not one is set aside."""
    folder, spooled = spool_from_a_script(daemon, tmp_path, monkeypatch, 50, "spooled")
    # The same batches twice, as a delivery cut off and tried again would send them.
    (folder / "again.spool").write_bytes(spooled.read_bytes())
    (folder / "garbage.spool").write_bytes(b"WITSPOOL1\n" + b"\x00" * 40)
    daemon.start()
    client = daemon.client()
    client.ping()
    deadline = time.monotonic() + 20
    while list(folder.glob("*.spool*")) != [folder / f"garbage.spool.{os.getpid()}.claimed.bad"]:
        assert time.monotonic() < deadline, list(folder.iterdir())
        time.sleep(0.05)
    rows = daemon.rows(
        "SELECT json_extract(payload, '$.n') FROM entries WHERE event = 'spooled' ORDER BY seq"
    )
    assert [n for (n,) in rows] == list(range(50))
    client.close()


def test_the_rust_command_line_delivers_what_python_kept_and_takes_over_a_dead_claim(
    daemon: Daemon, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool file is one format for both clients (docs/PROTOCOL.md, "The spool file"):
    `witness spool --deliver` delivers a file the Python client kept, here left claimed by a
    process that died mid-delivery, each entry once."""
    folder, spooled = spool_from_a_script(daemon, tmp_path, monkeypatch, 30, "kept")
    # pid 2^22+1 is above Linux's largest: no such process holds the claim.
    spooled.rename(folder / f"{spooled.name}.4194305.claimed")
    daemon.start()
    cli = witnessd_binary().with_name("witness")
    listed = subprocess.run(
        [str(cli), "--socket", daemon.socket, "spool"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and "30 entries" in listed.stdout, listed
    for _ in range(2):
        done = subprocess.run(
            [str(cli), "--socket", daemon.socket, "spool", "--deliver", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done
    assert json.loads(done.stdout)["entries"] == 0
    rows = daemon.rows(
        "SELECT json_extract(payload, '$.n') FROM entries WHERE event = 'kept' ORDER BY seq"
    )
    assert [n for (n,) in rows] == list(range(30))
    assert list(folder.iterdir()) == []


def test_a_script_whose_sends_were_recorded_exits_0(daemon: Daemon) -> None:
    code = (
        "import witness\n"
        f"client = witness.Client({daemon.socket!r})\n"
        "for n in range(100):\n"
        "    client.send('kept', 'script', payload={'n': n})\n"
    )
    status, stderr, _ = run_script(code)
    assert status == 0, stderr
    assert daemon.rows("SELECT count(*) FROM entries WHERE event = 'kept'") == [(100,)]
