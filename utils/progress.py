"""Progress reporting for every loop of the toolbox: a tqdm bar on a terminal, plain lines anywhere else.

``progress(iterable, total=..., desc=..., unit=...)`` is a tqdm bar when its stream (stderr by default) is a TTY.
When it is not (a log file, CI, ``nohup``, a pipe), carriage-return redraws would fill the log with one huge line,
so it prints plain lines instead::

    align: 1540/7701 (20%) 41.3 img/s

one whenever another ``every_percent`` of the total is done (at most one per ``min_seconds``, so a loop that takes a
second prints little more than its last line) or ``every_seconds`` have passed (only this rule when the total is
unknown), plus a last line when it finishes. Both forms support iteration,
``update(n)``, ``close()`` and ``with``. Every progress display in the repository goes through this function.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

EVERY_PERCENT = 10.0
EVERY_SECONDS = 30.0
MIN_SECONDS = 1.0


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def is_terminal(stream: Optional[TextIO]) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """The non-TTY form: newline-terminated status lines, never a carriage return."""

    def __init__(self, iterable: Optional[Iterable[Any]] = None, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", disable: bool = False, file: Optional[TextIO] = None,
                 every_percent: float = EVERY_PERCENT, every_seconds: float = EVERY_SECONDS,
                 min_seconds: float = MIN_SECONDS) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.file = disable, file
        self.every_percent, self.every_seconds, self.min_seconds = every_percent, every_seconds, min_seconds
        self.n = 0
        self.start = self.last_time = time.monotonic()
        self.last_n = 0
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("progress(): nothing to iterate (pass an iterable, or call update())")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable or self.closed:
            return
        now = time.monotonic()
        since = now - self.last_time
        due = since >= self.every_seconds
        if self.total:
            step = self.total * self.every_percent / 100.0
            due = due or (since >= self.min_seconds and int(self.n / step) > int(self.last_n / step))
            if self.n >= self.total:
                due = False  # the closing line reports the end
        if due:
            self._write(now)

    def line(self, now: Optional[float] = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        done = f"{_count(self.n)}/{_count(self.total)} ({100.0 * self.n / self.total:.0f}%)" if self.total \
            else _count(self.n)
        prefix = f"{self.desc}: " if self.desc else ""
        return f"{prefix}{done} {self.n / elapsed:.1f} {self.unit}/s"

    def _write(self, now: float) -> None:
        stream = self.file or sys.stderr
        stream.write(self.line(now) + "\n")
        stream.flush()
        self.last_time, self.last_n = now, self.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.disable and (self.n != self.last_n or self.n == 0):
            self._write(time.monotonic())

    def set_description(self, desc: str) -> None:
        self.desc = desc


def progress(iterable: Optional[Iterable[Any]] = None, total: Optional[float] = None, desc: str = "",
             unit: str = "it", disable: bool = False, leave: bool = True, file: Optional[TextIO] = None,
             every_percent: float = EVERY_PERCENT, every_seconds: float = EVERY_SECONDS,
             min_seconds: float = MIN_SECONDS) -> Any:
    """A tqdm bar on a TTY ``file`` (default stderr), else a :class:`PlainProgress` (see the module doc)."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=file)
    return PlainProgress(iterable, total, desc, unit, disable, file, every_percent, every_seconds, min_seconds)
