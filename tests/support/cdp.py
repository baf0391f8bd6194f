"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ended by a NUL byte on fds 3 and 4), for tests that must type into a page, click
and read what a real browser did — no websocket client, no debugging port. No tests in here.

Waits are for events or page conditions; ``timeout`` only stops a test that would otherwise
hang, it is never what a test asserts.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run", "--disable-quic", "--disable-component-update", "--disable-sync",
)


class CdpError(RuntimeError):
    pass


class Chromium:
    """One browser with a fresh profile; :meth:`page` opens tabs in it."""

    def __init__(self, profile: Path, *args: str, timeout: float = 120.0) -> None:
        assert Path(CHROMIUM).exists(), "headless Chromium is needed: apt-get install chromium"
        self.timeout = timeout
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends above fd 9, so moving them onto 3 and 4 cannot overwrite one another
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        to_browser_r, from_browser_w = high
        # bash puts the pipe ends on the fds Chromium reads (3) and writes (4)
        script = (f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w} '
                  f"{to_browser_r}<&- {from_browser_w}>&-")
        profile.mkdir(parents=True, exist_ok=True)
        self._log = profile.parent / f"{profile.name}.stderr"
        with open(self._log, "wb") as log:  # a file: a full pipe would stall the browser
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", script, "chromium", CHROMIUM, *FLAGS,
                 f"--user-data-dir={profile}", "--remote-debugging-pipe", *args, "about:blank"],
                pass_fds=(to_browser_r, from_browser_w),
                stdout=subprocess.DEVNULL, stderr=log,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ protocol

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise CdpError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise CdpError("Chromium closed the pipe: " + self._stderr())
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        doc: dict[str, Any] = json.loads(msg)
        return doc

    def _stderr(self) -> str:
        return self._log.read_bytes().decode(errors="replace")[-2000:]

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None,
                   match: dict[str, Any] | None = None) -> dict[str, Any]:
        """The first event ``method`` (of ``session``; with these params) not yet consumed."""
        deadline = time.monotonic() + self.timeout

        def fits(e: dict[str, Any]) -> bool:
            return (e.get("method") == method
                    and (session is None or e.get("sessionId") == session)
                    and all(e.get("params", {}).get(k) == v for k, v in (match or {}).items()))

        while True:
            for i, e in enumerate(self.events):
                if fits(e):
                    del self.events[i]
                    params: dict[str, Any] = e.get("params", {})
                    return params
            self.events.append(self._recv(deadline))

    def page(self, width: int = 1200, height: int = 1600) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        p = Page(self, session, target)
        p.call("Page.enable")
        p.call("Runtime.enable")
        p.call("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return p

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close")
            self.proc.wait(30)
        except (CdpError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(30)
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: navigate, evaluate JavaScript (promises awaited), take a screenshot."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def before_scripts(self, source: str) -> None:
        """Run ``source`` in every document this tab loads, before the page's own scripts."""
        self.call("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def goto(self, url: str) -> None:
        self.browser.events = [e for e in self.browser.events
                               if e.get("sessionId") != self.session]  # none left from before
        self.call("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session)

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                           "returnByValue": True})
        if "exceptionDetails" in r:
            raise CdpError(f"{expression[:80]}…: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, condition: str) -> Any:
        """Wait until the JavaScript expression ``condition`` is truthy; its value."""
        return self.eval(
            "new Promise((resolve) => { const poll = () => { const v = (" + condition + ");"
            " if (v) resolve(v); else setTimeout(poll, 25); }; poll(); })"
        )

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})
