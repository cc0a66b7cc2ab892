"""Progress on long work: a live line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts items done out of `total`, with rate and ETA.

    On a terminal the line is redrawn in place (at most 5 times a second); in
    a log (not a terminal) a line is printed every `every_s` seconds and at the end.
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "images",
        enabled: bool | None = None,
        every_s: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.extra = ""
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1, extra: str = "") -> None:
        """Add `n` items done; `extra` is shown after the counts (e.g. rejects so far)."""
        self.done += n
        self.extra = extra or self.extra
        now = time.perf_counter()
        if now - self.last < (0.2 if self.tty else self.every_s) and self.done < self.total:
            return
        self.last = now
        print(
            ("\r" if self.tty else "") + self.line(now),
            end="" if self.tty else "\n",
            file=self.stream,
            flush=True,
        )

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        extra = f", {self.extra}" if self.extra else ""
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit}, {rate:.0f} {self.unit}/s"
            f"{extra}, ETA {eta:.0f}s"
        )

    def close(self) -> None:
        if self.tty and self.done:
            print(file=self.stream, flush=True)
