"""Capture what a handler prints or logs, per function call.

While :func:`capture` is active in a task, ``print`` output and ``logging``
records from that task (and tasks it starts) go to the capture's line buffer
instead of the terminal; elsewhere output passes through untouched. The dev
server uses this for its log lines and for the HTTP API's ``logLines``.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

__all__ = ["LogLines", "capture"]


class LogLines:
    """The lines one function call printed or logged."""

    __slots__ = ("_partial", "lines")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> None:
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)

    def finish(self) -> list[str]:
        if self._partial:
            self.lines.append(self._partial)
            self._partial = ""
        return self.lines


_current: ContextVar[LogLines | None] = ContextVar("convexpy_log_lines", default=None)


class _Stdout(io.TextIOBase):
    """Routes writes to the active capture, or to the stream it replaced."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        lines = _current.get()
        if lines is None:
            return self.original.write(text)
        lines.write(text)
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        lines = _current.get()
        if lines is not None:
            lines.write(f"[{record.levelname}] {record.getMessage()}\n")


_handler = _Handler()


def _install() -> None:
    if not isinstance(sys.stdout, _Stdout):
        sys.stdout = _Stdout(sys.stdout)
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)


@contextmanager
def capture() -> Iterator[LogLines]:
    """Collect this task's prints and log records until the block ends."""
    _install()
    lines = LogLines()
    token = _current.set(lines)
    try:
        yield lines
    finally:
        _current.reset(token)
        lines.finish()
