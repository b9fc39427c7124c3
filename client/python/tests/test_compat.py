"""A script written against the old `WitnessDatabase` API runs unchanged but for its import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import Daemon

OLD_SCRIPT = textwrap.dedent(
    """
    from witness.compat import WitnessDatabase
    from witness.compat import Cost

    db = WitnessDatabase()
    db.create_entry(
        event='api_request',
        component='IF.api',
        trace_id='req-1',
        payload={'endpoint': '/v1/users', 'method': 'GET'},
        cost=Cost(tokens_in=100, tokens_out=50, cost_usd=0.001, model='claude-sonnet-4.5')
    )
    entries_data = [
        {
            'event': 'llm_call',
            'component': 'IF.swarm',
            'trace_id': f'batch-{i}',
            'payload': {'query': i},
            'cost': Cost(tokens_in=100, tokens_out=50, cost_usd=0.001, model='claude-haiku-4.5')
        }
        for i in range(1000)
    ]
    entries = db.create_entries_batch(entries_data)
    print(f"Inserted {len(entries)} entries with hash chain integrity")
    trace = db.get_trace('req-1')
    print(trace[0].event, trace[0].payload['endpoint'])
    cost_data = db.get_cost_by_component(component='IF.swarm')
    for row in cost_data:
        print(f"{row['component']}: ${row['total_cost']:.4f} ({row['total_tokens']} tokens)")
    is_valid, msg, count = db.verify_all()
    print(is_valid, msg, count)
    db.close()
    """
)


def run_script(script: str, daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """Runs a Python script in a new interpreter whose default socket is the daemon's."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "WITNESS_SOCKET": daemon.socket},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_old_api_script_runs_with_only_its_import_changed(daemon: Daemon) -> None:
    done = run_script(OLD_SCRIPT, daemon)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Inserted 1000 entries with hash chain integrity",
        "api_request /v1/users",
        "IF.swarm: $1.0000 (150000 tokens)",
        "True intact: 1001 entries 1001",
    ]
    assert daemon.rows(
        "SELECT count(*), sum(cost_micro_usd), count(DISTINCT trace_id) FROM entries"
    ) == [(1001, 1001 * 1000, 1001)]


def test_entries_sent_before_the_interpreter_exits_are_flushed(daemon: Daemon) -> None:
    script = textwrap.dedent(
        """
        import witness

        @witness.traced(component="job")
        def work():
            for i in range(2000):
                witness.send("tick", payload=i)

        with witness.trace("run-1"):
            work()
        # no flush: the interpreter's exit flushes
        """
    )
    done = run_script(script, daemon)
    assert done.returncode == 0, done.stderr
    rows = daemon.rows("SELECT payload, component, trace_id FROM entries ORDER BY seq")
    assert [int(p) for p, _, _ in rows] == list(range(2000))
    assert {(c, t) for _, c, t in rows} == {("job", "run-1")}


def test_a_db_path_the_daemon_ignores_is_warned_about_once(daemon: Daemon) -> None:
    script = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        from witness.compat import WitnessDatabase

        first = WitnessDatabase(db_path='/srv/app/witness.db')
        second = WitnessDatabase(db_path='/srv/app/witness.db')
        print(first.create_entry(event='e', component='c').id)
        first.close()
        second.close()
        """
    )
    done = run_script(script, daemon)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("UserWarning") == 1, done.stderr
    assert "db_path='/srv/app/witness.db'" in done.stderr
    assert "the path is ignored" in done.stderr
    assert done.stdout.strip() == "1"
    # No path, no warning.
    quiet = run_script(
        "from witness.compat import WitnessDatabase\nWitnessDatabase().close()\n", daemon
    )
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr, quiet.stderr
