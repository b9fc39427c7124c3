"""The dashboard in a real headless Chromium (Debian's `chromium`, over the DevTools protocol):
logging in through `witness web`'s link, imported history in the traces and spend views, a
new entry in the live feed without a reload, hostile entries that stay inert text, what a
browser that has not logged in gets, widths of 1,400 and 800 pixels and the keyboard. A
screenshot of each view is kept in target/dashboard-screenshots/ (docs/DASHBOARD.md)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Dict, Iterator, List, Tuple

import pytest

from cdp import Browser, Page, chromium_binary
from conftest import ROOT, Daemon, free_port, witnessd_binary

SHOTS = ROOT / "target" / "dashboard-screenshots"
DAY_NS = 86_400 * 10**9

HOSTILE_COMPONENT = '<img src=x onerror="window.__pwned=1">'
HOSTILE_EVENT = "<script>window.__pwned=2</script>"
HOSTILE_TRACE = '"><svg onload=window.__pwned=4>'
HOSTILE_MODEL = "<b onmouseover=window.__pwned=5>model</b>"

if chromium_binary() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have chromium installed for the dashboard's tests")
    pytest.skip("chromium is not installed", allow_module_level=True)


def witness(daemon: Daemon, *args: str, stdin: str = "") -> Tuple[int, str, str]:
    done = subprocess.run(
        [str(witnessd_binary().with_name("witness")), "--socket", daemon.socket, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def history(now_ns: int) -> Tuple[List[Dict[str, object]], Dict[str, int]]:
    """A week of an agent's work as import lines, and what the views must show of it."""
    lines: List[Dict[str, object]] = []
    expected = {"micro_usd": 0, "unpriced": 0, "traces": 0}
    models = [("gpt-4o-mini", True), ("claude-sonnet-4-6", True), ("my-finetune", False)]
    for session in range(12):
        start = now_ns - (6 * DAY_NS) + session * (DAY_NS // 2)
        for step in range(20):
            model, priced = models[(session + step) % 3]
            cost: Dict[str, object] = {
                "tokens_in": 1000 + step,
                "tokens_out": 100 + session,
                "cache_read_tokens": 200,
                "model": model,
            }
            if priced:
                money = 137 * (session + 1) + step
                cost["cost_micro_usd"] = money
                expected["micro_usd"] += money
            else:
                expected["unpriced"] += 1
            lines.append(
                {
                    "event": "llm_call",
                    "component": ["planner", "coder"][step % 2],
                    "trace_id": f"session-{session:02}",
                    "payload": {"step": step, "prompt": f"step {step} of session {session}"},
                    "cost": cost,
                    "client_ts": start + step * 60 * 10**9,
                }
            )
        expected["traces"] += 1
    # An OpenTelemetry trace: a root span, two children, a grandchild.
    base = now_ns - DAY_NS
    spans = [
        ("a1", None, "agent run", 0, 9_000),
        ("b2", "a1", "chat gpt-4o-mini", 100, 2_100),
        ("c3", "a1", "execute_tool search", 2_200, 6_000),
        ("d4", "c3", "http get", 2_300, 5_500),
    ]
    for span_id, parent, name, start_ms, end_ms in spans:
        payload: Dict[str, object] = {
            "otlp": "span",
            "name": name,
            "span_id": span_id,
            "kind": "SPAN_KIND_INTERNAL",
            "start_ns": base + start_ms * 10**6,
            "end_ns": base + end_ms * 10**6,
            "duration_ns": (end_ms - start_ms) * 10**6,
        }
        if parent:
            payload["parent_span_id"] = parent
        lines.append(
            {
                "event": name,
                "component": "otel-agent",
                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "payload": payload,
                "client_ts": base + start_ms * 10**6,
            }
        )
    expected["traces"] += 1
    # Hostile text in every field a view shows.
    lines.append(
        {
            "event": HOSTILE_EVENT,
            "component": HOSTILE_COMPONENT,
            "trace_id": HOSTILE_TRACE,
            "payload": {"html": "</pre><script>window.__pwned=3</script>", "x": "<i>y</i>"},
            "cost": {"tokens_in": 5, "tokens_out": 5, "model": HOSTILE_MODEL},
            "client_ts": now_ns - DAY_NS // 2,
        }
    )
    expected["unpriced"] += 1
    expected["traces"] += 1
    return lines, expected


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, object]]:
    folder = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    config = folder / "witnessd.toml"
    # A month's budget the history has used a part of (the history's money is $0.143452).
    config.write_text('[[budget]]\nname = "agents-monthly"\nperiod = "month"\nlimit_usd = 0.5\n')
    daemon = Daemon(folder, ["--web-listen", f"127.0.0.1:{port}", "--config", str(config)])
    lines, expected = history(time.time_ns())
    history_file = folder / "history.jsonl"
    history_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, _, stderr = witness(daemon, "import", str(history_file))
    assert code == 0, stderr
    browser = Browser()
    try:
        yield {
            "daemon": daemon,
            "base": f"http://127.0.0.1:{port}",
            "expected": expected,
            "browser": browser,
            "count": len(lines),
        }
    finally:
        browser.close()
        daemon.stop()


def login_link(daemon: Daemon) -> str:
    code, stdout, stderr = witness(daemon, "web")
    assert code == 0, stderr
    return stdout.strip()


@pytest.fixture(scope="module")
def page(dashboard: Dict[str, object]) -> Iterator[Page]:
    browser = dashboard["browser"]
    assert isinstance(browser, Browser)
    tab = browser.page()
    tab.send("Emulation.setTimezoneOverride", {"timezoneId": "Pacific/Auckland"})
    tab.navigate(login_link(dashboard["daemon"]))  # type: ignore[arg-type]
    tab.wait_for("location.pathname === '/' && document.querySelector('#live-rows') !== null")
    yield tab
    assert tab.problems() == [], "the page logged errors"
    tab.close()


def go(page: Page, view: str, ready: str) -> None:
    page.evaluate(f"location.hash = {json.dumps(view)}")
    page.wait_for(ready)


def text(page: Page) -> str:
    return page.evaluate("document.body.innerText")


def test_the_live_feed_shows_new_entries_without_a_reload(
    dashboard: Dict[str, object], page: Page
) -> None:
    go(page, "#/live", "document.querySelectorAll('#live-rows tr').length >= 50")
    page.evaluate("window.__same_page = 'yes'")
    daemon = dashboard["daemon"]
    assert isinstance(daemon, Daemon)
    with daemon.client() as client:
        receipt = client.log("arrived while watching", "watcher", trace_id="live-1")
    page.wait_for(f"document.querySelector('#live-rows tr[data-seq=\"{receipt.seq}\"]') !== null")
    first = page.evaluate("document.querySelector('#live-rows tr').innerText")
    assert "arrived while watching" in first and "watcher" in first
    assert page.evaluate("window.__same_page") == "yes", "the page was reloaded"
    assert "Live" in page.evaluate("document.querySelector('.status').innerText")
    page.screenshot(SHOTS / "live.png")


def test_pause_holds_rows_and_resume_shows_them(dashboard: Dict[str, object], page: Page) -> None:
    go(page, "#/live", "document.querySelectorAll('#live-rows tr').length > 0")
    page.evaluate("[...document.querySelectorAll('form.filters button')].at(-1).click()")
    daemon = dashboard["daemon"]
    assert isinstance(daemon, Daemon)
    with daemon.client() as client:
        receipt = client.log("while paused", "watcher")
    page.wait_for("document.querySelector('.status').innerText.includes('paused, 1 new')")
    selector = f'#live-rows tr[data-seq="{receipt.seq}"]'
    assert page.evaluate(f"document.querySelector('{selector}') === null")
    page.evaluate("[...document.querySelectorAll('form.filters button')].at(-1).click()")
    page.wait_for(f"document.querySelector('{selector}') !== null")


def test_the_live_filters_narrow_the_feed(dashboard: Dict[str, object], page: Page) -> None:
    go(page, "#/live", "document.querySelector('#live-rows') !== null")
    page.evaluate(
        "(() => { const f = document.querySelector('form.filters');"
        " f.elements.model.value = 'claude-sonnet-4-6'; f.requestSubmit(); })()"
    )
    page.wait_for("document.querySelectorAll('#live-rows tr').length > 0")
    time.sleep(0.5)
    models = page.evaluate(
        "[...document.querySelectorAll('#live-rows tr')].map(r => r.cells[4].innerText)"
    )
    assert models and set(models) == {"claude-sonnet-4-6"}, models
    page.evaluate(
        "(() => { const f = document.querySelector('form.filters');"
        " f.elements.model.value = ''; f.requestSubmit(); })()"
    )


def test_traces_of_the_imported_history(dashboard: Dict[str, object], page: Page) -> None:
    expected = dashboard["expected"]
    assert isinstance(expected, dict)
    go(page, "#/traces", "document.querySelectorAll('#trace-rows tr').length > 0")
    # The imported traces, and the one the live test made.
    page.wait_for(f"document.querySelectorAll('#trace-rows tr').length >= {expected['traces']}")
    rows = page.evaluate(
        "[...document.querySelectorAll('#trace-rows tr')]"
        ".map(r => [...r.cells].map(c => c.innerText))"
    )
    by_id = {row[0]: row for row in rows}
    for session in range(12):
        assert by_id[f"session-{session:02}"][2] == "20"
    assert "unpriced" in by_id["session-00"][6]
    page.screenshot(SHOTS / "traces.png")


def test_a_trace_with_its_span_tree_and_payloads(page: Page) -> None:
    go(page, "#/traces", "document.querySelectorAll('#trace-rows tr').length > 0")
    page.evaluate(
        "document.querySelector('a[href=\"#/trace/0af7651916cd43dd8448eb211c80319c\"]').click()"
    )
    page.wait_for("document.querySelectorAll('ul.tree li').length === 4")
    tree = page.evaluate(
        "[...document.querySelectorAll('ul.tree li')].map(li => "
        "[li.querySelector('a').innerText,"
        " li.parentElement.closest('li')?.querySelector('a').innerText ?? null])"
    )
    assert tree == [
        ["agent run", None],
        ["chat gpt-4o-mini", "agent run"],
        ["execute_tool search", "agent run"],
        ["http get", "execute_tool search"],
    ]
    durations = page.evaluate(
        "[...document.querySelectorAll('ul.tree .span-row')].map(r => r.children[2].innerText)"
    )
    assert durations == ["9.0 s", "2.0 s", "3.8 s", "3.2 s"]
    # Payloads, pretty-printed and collapsed until asked.
    assert page.evaluate("document.querySelectorAll('details[open]').length") == 0
    page.evaluate("document.querySelector('details summary').click()")
    shown = page.evaluate("document.querySelector('details[open] pre').innerText")
    assert json.loads(shown)["name"] == "agent run" and "\n  " in shown
    page.screenshot(SHOTS / "trace.png")


def test_spend_of_the_imported_history(dashboard: Dict[str, object], page: Page) -> None:
    expected = dashboard["expected"]
    assert isinstance(expected, dict)
    go(page, "#/spend", "document.querySelector('#spend-rows') !== null")
    cards = dict(
        page.evaluate(
            "[...document.querySelectorAll('.card')].map(c => "
            "[c.querySelector('.label').innerText, c.querySelector('.value').innerText])"
        )
    )
    assert cards["Cost"] == f"${expected['micro_usd'] / 1e6:.6f}"
    assert cards["Unpriced entries"] == str(expected["unpriced"])
    callout = page.evaluate("document.querySelector('#unpriced').innerText")
    assert "80 entries of my-finetune" in callout, callout
    assert "not zero" in callout
    models = page.evaluate(
        "[...document.querySelectorAll('#spend-rows tr')].map(r => r.cells[0].innerText)"
    )
    assert {"gpt-4o-mini", "claude-sonnet-4-6", "my-finetune"} <= set(models)
    page.wait_for("document.querySelector('#chart canvas') !== null")
    assert "Pacific/Auckland" in page.evaluate("document.querySelector('.status').innerText")
    # The budget, with its spend read from the log (the daemon looks every 5 s).
    page.wait_for(
        "(() => { const r = document.querySelector('#budget-rows tr'); if (r) return true;"
        " document.querySelector('form.filters').requestSubmit(); return false; })()",
        timeout=30,
    )
    budget = page.evaluate(
        "[...document.querySelector('#budget-rows tr').cells].map(c => c.innerText)"
    )
    assert budget[0] == "agents-monthly" and budget[3] == "$0.500000", budget
    assert page.evaluate("document.querySelector('#budget-rows [role=meter]') !== null")
    page.screenshot(SHOTS / "spend.png")
    page.evaluate(
        "(() => { const f = document.querySelector('form.filters');"
        " f.elements.stack.value = 'component'; f.requestSubmit(); })()"
    )
    page.wait_for(
        "[...document.querySelectorAll('#spend-rows tr')]"
        ".some(r => r.cells[0].innerText === 'planner')"
    )


def test_health_verifies_the_log_from_the_page(dashboard: Dict[str, object], page: Page) -> None:
    go(page, "#/health", "document.querySelectorAll('#health-cards .card').length > 5")
    page.wait_for("document.querySelector('#checkpoint').innerText.includes('witness')")
    page.evaluate(
        "[...document.querySelectorAll('button')]"
        ".find(b => b.innerText === 'Verify the log').click()"
    )
    done = page.wait_for(
        "(() => { const s = [...document.querySelectorAll('.status')].at(-1).innerText;"
        " return s.startsWith('Intact') ? s : null; })()",
        timeout=60,
    )
    assert "entries verified" in done
    page.screenshot(SHOTS / "health.png")


def test_hostile_entries_stay_inert_text(dashboard: Dict[str, object], page: Page) -> None:
    trace_link = "#/trace/" + page.evaluate(f"encodeURIComponent({json.dumps(HOSTILE_TRACE)})")
    views = [
        ("#/live", "document.querySelectorAll('#live-rows tr').length > 0"),
        ("#/traces", "document.querySelectorAll('#trace-rows tr').length > 0"),
        (trace_link, "document.querySelectorAll('details').length > 0"),
        ("#/spend", "document.querySelector('#spend-rows') !== null"),
    ]
    for view, ready in views:
        go(page, view, ready)
        if view == trace_link:
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        time.sleep(0.3)
        body = text(page)
        assert page.evaluate("window.__pwned") is None, view
        injected = page.evaluate(
            "document.querySelectorAll('main img, main svg, main script, main b, main i').length"
        )
        assert injected == 0, view
        if view in ("#/live", trace_link):
            assert HOSTILE_COMPONENT in body and HOSTILE_EVENT in body, view
    go(page, trace_link, "document.querySelectorAll('details').length > 0")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert "</pre><script>window.__pwned=3</script>" in text(page)


def test_a_browser_that_has_not_logged_in_gets_the_login_page_only(
    dashboard: Dict[str, object],
) -> None:
    browser = dashboard["browser"]
    assert isinstance(browser, Browser)
    stranger = browser.page()
    base = dashboard["base"]
    try:
        for path in ["/", "/#/spend", "/assets/app.js", "/api/entries"]:
            stranger.navigate(f"{base}{path}")
            stranger.wait_for("document.readyState === 'complete'")
            body = text(stranger)
            assert "llm_call" not in body and "session-0" not in body, path
        stranger.navigate(f"{base}/")
        stranger.wait_for("document.body.innerText.includes('witness web')")
        statuses = stranger.evaluate(
            "Promise.all(['/api/entries', '/api/stats', '/api/feed', '/api/cost?by=model']"
            ".map(p => fetch(p).then(r => r.status)))"
        )
        assert statuses == [401, 401, 401, 401]
        # A used link does not log in a second browser.
        daemon = dashboard["daemon"]
        assert isinstance(daemon, Daemon)
        link = login_link(daemon)
        first = browser.page()
        first.navigate(link)
        first.wait_for("location.pathname === '/'")
        first.close()
        stranger.navigate(link)
        stranger.wait_for("document.querySelector('#status').innerText.includes('used, expired')")
        assert stranger.evaluate("fetch('/api/stats').then(r => r.status)") == 401
    finally:
        stranger.close()


def test_usable_at_800_pixels_and_by_keyboard(dashboard: Dict[str, object]) -> None:
    browser = dashboard["browser"]
    assert isinstance(browser, Browser)
    narrow = browser.page(width=800)
    try:
        narrow.navigate(login_link(dashboard["daemon"]))  # type: ignore[arg-type]
        narrow.wait_for("document.querySelectorAll('#live-rows tr').length > 0")
        for view, ready in [
            ("#/live", "document.querySelectorAll('#live-rows tr').length > 0"),
            ("#/traces", "document.querySelectorAll('#trace-rows tr').length > 0"),
            ("#/spend", "document.querySelector('#chart canvas') !== null"),
            ("#/health", "document.querySelectorAll('#health-cards .card').length > 5"),
        ]:
            go(narrow, view, ready)
            width = narrow.evaluate("document.documentElement.scrollWidth")
            assert width <= 800, f"{view} is {width} pixels wide at 800"
        narrow.screenshot(SHOTS / "spend-800.png")
        # The keyboard: from the skip link, Tab reaches the views and Enter opens one, whose
        # content then has the focus; Tab goes on into its filters.
        go(narrow, "#/live", "document.querySelectorAll('#live-rows tr').length > 0")
        narrow.evaluate("document.querySelector('.skip').focus()")
        seen = []
        for _ in range(2):
            narrow.press("Tab", "Tab", 9)
            seen.append(narrow.evaluate("document.activeElement.innerText"))
        assert seen == ["Live", "Traces"], seen
        narrow.press("Enter", "Enter", 13)
        narrow.wait_for("location.hash === '#/traces'")
        narrow.wait_for("document.activeElement.id === 'view'")
        narrow.press("Tab", "Tab", 9)
        assert narrow.evaluate("document.activeElement.name") == "component"
        assert narrow.problems() == []
    finally:
        narrow.close()
