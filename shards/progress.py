"""Progress on long work, one reporter for every stage: a live `rich` bar on a terminal,
plain log lines otherwise.

    show = Progress("preprocess", total=1_281_167, unit="images")
    show.update(1000, "3 rejected")     # items done, and a note shown after the counts
    show.note("shard 12 rewritten")     # a line of its own, above the live bar
    show.close()

On a terminal, `rich` draws the bar (no refresh thread: the bar is redrawn
from `update`, at most 5 times a second, so forked workers never inherit a lock
held by one). In a log, a line is printed every `every_s` seconds and at the end
(`every_s=None`: only the notes). `quiet` prints nothing at all (ranks > 0);
`transient` removes the bar when closed (training keeps only its epoch lines).
It lives in `shards`, the package every stage may import.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def plural(n: int, word: str) -> str:
    """`1 crop`, `10 crops`, `1 epoch`: a count with its noun, in the right number."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(seconds: float) -> str:
    """`42 s`, `3 min 20 s`, `2 h 05 min`: a time span as people read it."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def error_text(top1: float, top5: float) -> str:
    """The one way errors are written for people: `top-1 error 38.10%, top-5 error 15.32%`
    (errors, not accuracies, always labelled, always percentages)."""
    return f"top-1 error {top1:.2%}, top-5 error {top5:.2%}"


class Progress:
    """Counts items done out of `total` (None: not known), with rate and ETA."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "images",
        enabled: bool | None = None,
        every_s: float | None = 10.0,
        stream: TextIO | None = None,
        quiet: bool = False,
        transient: bool = False,
    ) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if enabled is None else enabled
        self.quiet = quiet
        self.done, self.extra = 0, ""
        self.start = self.last = time.perf_counter()
        self._bar: Any = None
        if self.tty and not quiet:
            self._bar = self._rich_bar(label, total, transient)

    @classmethod
    def to(cls, label: str, where: bool | TextIO | None, **kw: Any) -> Progress:
        """A reporter of work of unknown size shown as `where` says: a live bar (True), none
        (False), a bar on a terminal only (None), or a text stream (a Prefect task's log)
        that gets a plain line every 30 s and the notes."""
        if where is None or isinstance(where, bool):
            return cls(label, None, enabled=where, every_s=None, **kw)
        return cls(label, None, enabled=False, every_s=30.0, stream=where, **kw)

    def _rich_bar(self, label: str, total: int | None, transient: bool) -> Any:
        """rich's live bar (imported here, where a terminal shows one: 45 ms to import)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream, force_terminal=True)
        bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=15),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            TextColumn("{task.fields[extra]}"),
            console=console,
            auto_refresh=False,
            transient=transient,
        )
        self._task = bar.add_task(label, total=total, rate="", extra="")
        bar.start()
        return bar

    def reset(self, label: str, total: int | None = None) -> None:
        """Start counting again under a new label (the next epoch)."""
        self.label, self.total, self.done, self.extra = label, total, 0, ""
        self.start = self.last = time.perf_counter()
        if self._bar is not None:
            self._bar.reset(self._task, total=total, description=label, rate="", extra="")

    @property
    def live(self) -> bool:
        """Whether a live bar is drawn (worth paying for an `extra` that costs a sync)."""
        return self._bar is not None

    def update(self, n: int = 1, extra: str = "") -> None:
        """Add `n` items done; `extra` is shown after the counts (e.g. rejects so far)."""
        self.done += n
        self.extra = extra or self.extra
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if self.quiet:
            return
        if self._bar is not None:
            if now - self.last >= 0.2 or finished:
                self.last = now
                rate = f"{self.rate(now):.0f}/s"
                self._bar.update(self._task, completed=self.done, rate=rate, extra=self.extra)
                self._bar.refresh()
        elif self.every_s is not None and (now - self.last >= self.every_s or finished):
            self.last = now
            print(self.line(now), file=self.stream, flush=True)

    def rate(self, now: float | None = None) -> float:
        return self.done / max((now or time.perf_counter()) - self.start, 1e-9)

    def line(self, now: float | None = None) -> str:
        """The state as one plain line (what a log gets)."""
        rate = self.rate(now)
        of = f"/{self.total}" if self.total is not None else ""
        extra = f", {self.extra}" if self.extra else ""
        text = f"{self.label}: {self.done}{of} {self.unit}, {rate:.0f} {self.unit}/s{extra}"
        if self.total is not None:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f", ETA {duration(eta)}"
        return text

    def note(self, text: str) -> None:
        """A line of its own (an epoch's summary): above the live bar, or in the log."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
            self._bar.refresh()
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, extra=self.extra)
            self._bar.refresh()
            self._bar.stop()
            self._bar = None
