"""Headless Chromium driven over the DevTools protocol, as a user's browser: pages load,
their scripts run, links are clicked. Debian's `chromium` (scripts/bootstrap.sh) and the
`websockets` client that Prefect already depends on; no other browser tooling."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import _stop


class Chromium:
    """One headless Chromium with one page (`with Chromium(tmp) as page: ...`)."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        assert binary, "Chromium is missing: scripts/bootstrap.sh installs Debian's chromium"
        self.log = tmp / "chromium.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",  # its own port, written to the log
                    f"--user-data-dir={tmp / 'chromium-profile'}",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ids = itertools.count(1)
        self.ws: Any = None

    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        try:
            deadline = time.monotonic() + 60
            while not (found := re.search(r"ws://127\.0\.0\.1:(\d+)/", self.log.read_text())):
                assert self.proc.poll() is None and time.monotonic() < deadline, (
                    self.log.read_text()
                )
                time.sleep(0.1)
            with urllib.request.urlopen(f"http://127.0.0.1:{found[1]}/json/list", timeout=10) as r:
                page = next(t for t in json.loads(r.read()) if t["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        except BaseException:
            _stop(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
        _stop(self.proc)

    def send(self, method: str, **params: Any) -> dict:
        """A DevTools command's result (the page's events in between are skipped)."""
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == n:
                assert "error" not in message, message
                return message["result"]

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def value(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        found = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return found["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """The expression's value once it is truthy (the page's scripts fill it in)."""
        deadline = time.monotonic() + timeout
        while not (got := self.value(expression)):
            if time.monotonic() > deadline:
                text = self.value("document.body && document.body.innerText.slice(0, 2000)")
                raise AssertionError(f"never true: {expression}\npage: {text}")
            time.sleep(0.25)
        return got
