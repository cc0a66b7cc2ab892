"""The runs' reports over HTTP, read-only, so the Prefect UI's links to them work.

A browser refuses `file://` links from an http page ("Not allowed to load local
resource"), so a results artifact that links report.html by its path leads
nowhere. `alexnet serve` therefore also serves the run folders of this host:

    http://HOST:PORT/run/<absolute path of a run folder>/report.html

and sets ALEXNET_REPORTS_URL=http://HOST:PORT in its environment, which the flow
runs it starts inherit: their artifacts link there (`link`). Only a run's
outputs are served (report.html, the figures, eval.json, per_class_error.json,
metrics.jsonl, config.json) of a folder `RUN` inside `OUT/runs/` where OUT holds
a manifest.json: nothing else on the machine can be read through it, and
nothing can be written.
"""

from __future__ import annotations

import http.server
import mimetypes
import os
import threading
import urllib.parse
from pathlib import Path

REPORTS_URL = "ALEXNET_REPORTS_URL"
PREFIX = "/run"
SERVED = {"report.html", "eval.json", "per_class_error.json", "metrics.jsonl", "config.json"}


def link(path: str | os.PathLike) -> str:
    """The address a browser opens `path` (a run's file) by: over HTTP when a reports
    server is running (ALEXNET_REPORTS_URL), else its file:// URI."""
    path = Path(path).resolve()
    base = os.environ.get(REPORTS_URL)
    if not base:
        return path.as_uri()
    return base.rstrip("/") + PREFIX + urllib.parse.quote(str(path))


def servable(path: Path) -> Path | None:
    """`path` resolved, if it is a run's output that may be served; else None."""
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    for run_dir in path.parents:
        if run_dir.parent.name == "runs" and (run_dir.parent.parent / "manifest.json").is_file():
            inner = path.relative_to(run_dir).parts
            ok = inner in {(name,) for name in SERVED} or (
                len(inner) == 2 and inner[0] == "figures" and inner[1].endswith(".png")
            )
            return path if ok and path.is_file() else None
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "alexnet-reports"

    def do_GET(self) -> None:
        self._send(body=True)

    def do_HEAD(self) -> None:
        self._send(body=False)

    def _send(self, body: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        wanted = urllib.parse.unquote(url.path)
        found = servable(Path(wanted[len(PREFIX) :])) if wanted.startswith(PREFIX + "/") else None
        if found is None:
            self.send_error(404, "not a run's report or figure")
            return
        data = found.read_bytes()
        self.send_response(200)
        kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        self.send_header(
            "Content-Type", kind + ("; charset=utf-8" if kind.startswith("text") else "")
        )
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")  # a report is rewritten after each epoch
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the serve command's output is Prefect's


def start(host: str, port: int, public: str | None = None) -> http.server.ThreadingHTTPServer:
    """Serve the run folders on host:port from a daemon thread, and point this process's
    flow runs at it (ALEXNET_REPORTS_URL, by the name `public` browsers reach it by)."""
    server = http.server.ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="reports", daemon=True).start()
    name = public or host
    os.environ[REPORTS_URL] = f"http://{name}:{server.server_address[1]}"
    return server
