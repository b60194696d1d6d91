"""Progress that suits where it goes: a tqdm bar on a terminal, plain periodic lines in a file.

A bar redrawn with carriage returns floods a log file (a recipe's ``tee``, a Slurm log) with
thousands of updates; when stderr is not a terminal, :func:`progress_bar` prints one line every
``LINE_EVERY_S`` seconds instead ("extract-feats feats: 1200/5000 utt (24%), 1m10s") and one at
the end. Every progress display of sertool goes through here; :func:`write_line` prints a
line (an epoch's results) without breaking a bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LINE_EVERY_S = 30.0


def _tty() -> bool:
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", disable: bool = False, initial: int = 0,
                 leave: bool = True) -> Any:
    """A tqdm bar on a terminal, else a :class:`LineProgress` (same update/close/iteration)."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if _tty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                    initial=initial, leave=leave, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable,
                        initial=initial, leave=leave)


def write_line(text: str) -> None:
    """Print a line to stderr, above a terminal's bar if one is drawn."""
    if _tty():
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m{seconds:02d}s"


class LineProgress:
    """Progress as plain lines: at most one per ``every_s`` seconds, and one at the end (when
    ``leave``) so that a log shows that the step finished and how long it took."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", disable: bool = False, initial: int = 0,
                 leave: bool = True, every_s: float = LINE_EVERY_S) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.leave, self.every_s = disable, leave, every_s
        self.n = self.start_n = initial
        self.started = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._print(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave and self.n > self.start_n:
            self._print(time.monotonic())

    def line(self, now: float) -> str:
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        prefix = f"{self.desc}: " if self.desc else ""
        return f"{prefix}{count} {self.unit}{share}, {elapsed(now - self.started)}"

    def _print(self, now: float) -> None:
        if not self.disable:
            print(self.line(now), file=sys.stderr, flush=True)
