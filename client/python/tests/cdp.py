"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
commands on fd 3, answers and events on fd 4, each JSON text ended by a NUL byte), so that
the dashboard's tests need no driver, no port and no package beyond the system's browser."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional


def chromium_binary() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or not in time."""


class Browser:
    """One headless Chromium; `page()` opens a tab in a browser context of its own (its own
    cookies), so that a test can be a browser that has not logged in."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="witness-chromium-")
        self.width = width
        self.height = height
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def wire() -> None:
            os.dup2(commands_read, 3)
            os.dup2(answers_write, 4)

        arguments = [
            binary,
            "--headless=new",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--metrics-recording-only",
            "--mute-audio",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            # Chromium's sandbox refuses to run as root, which CI's containers are.
            arguments.insert(1, "--no-sandbox")
        self.process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.profile, "stderr.log"), "wb"),
            pass_fds=(3, 4),
            preexec_fn=wire,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._lock = threading.Lock()
        self._waiting: Dict[int, queue.Queue[Dict[str, Any]]] = {}
        self.events: List[Dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._answers, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                text, buffer = buffer.split(b"\0", 1)
                message = json.loads(text)
                if "id" in message:
                    with self._lock:
                        waiting = self._waiting.pop(message["id"], None)
                    if waiting is not None:
                        waiting.put(message)
                else:
                    self.events.append(message)

    def send(
        self,
        method: str,
        params: Optional[Dict[str, Any]] = None,
        session: Optional[str] = None,
        timeout: float = 30,
    ) -> Dict[str, Any]:
        with self._lock:
            self._next_id += 1
            number = self._next_id
            answer: queue.Queue[Dict[str, Any]] = queue.Queue()
            self._waiting[number] = answer
        message: Dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        try:
            reply = answer.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no answer within {timeout} s") from None
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def page(self, width: Optional[int] = None) -> Page:
        context = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session, target)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain, session=session)
        page.resize(width or self.width, self.height)
        # Every tab acts focused, as the one a person looks at, so that keys reach it.
        self.send("Emulation.setFocusEmulationEnabled", {"enabled": True}, session=session)
        return page

    def problems(self, session: str) -> List[str]:
        """Script errors and console errors (a blocked resource, a CSP violation) of a tab."""
        found = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            if event["method"] == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                found.append(json.dumps(details.get("exception", details))[:500])
            elif (
                event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error"
            ):
                found.append(event["params"]["entry"]["text"])
        return found

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self._commands, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: navigate, evaluate, wait for a condition, press keys, take screenshots."""

    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    def send(self, method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def resize(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Polls `expression` until it is truthy; fails after `timeout` seconds, naming it."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except BrowserError as error:
                last = error
            else:
                if last:
                    return last
            time.sleep(0.05)
        text = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
        raise AssertionError(f"timed out waiting for {expression} (last {last!r}); page: {text}")

    def press(self, key: str, code: str, key_code: int) -> None:
        self.send("Page.bringToFront")
        for kind in ("rawKeyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code},
            )

    def screenshot(self, path: pathlib.Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def problems(self) -> List[str]:
        return self.browser.problems(self.session)

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})
