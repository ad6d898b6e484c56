"""The dev server's terminal output: one aligned line per function run, job and cron run.

::

    12:00:01.123  mutation  messages:send                      4.1 ms  success
        | sending "hi"
    12:00:06.130  job       messages:destruct (mutation)       2.0 ms  success
    12:00:07.002  query     messages:boom                      0.3 ms  error
        ! ValueError: boom

The runtime reports calls, scheduled jobs and cron runs to its listeners as
events (dicts with a ``"type"``); :meth:`LogPrinter.on_event` renders them.
Handler output captured by the runtime comes indented under its line.
Colours are used on a terminal, never when the output is piped or ``NO_COLOR``
is set (``FORCE_COLOR`` forces them). Verbosity: ``-1`` only errors, ``0``
normal, ``1`` adds job ids, cron details and full tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["LogPrinter", "use_color"]

_RESET = "\x1b[0m"
_STYLES = {
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
}
_KIND_STYLE = {
    "query": "blue",
    "mutation": "magenta",
    "action": "cyan",
    "job": "yellow",
    "cron": "yellow",
    "http": "red",
}
_ERROR_OUTCOMES = frozenset({"error", "failed"})
_PATH_WIDTH = 34
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour output to ``stream``: a TTY, unless ``NO_COLOR`` is set."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):
        return False


def format_duration(ms: float) -> str:
    """``0.42 ms``, ``12 ms``, ``1.50 s``, ``2.0 min``."""
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60_000:.1f} min"


class LogPrinter:
    """Renders runtime events and server messages to a text stream.

    Also a :class:`convexpy.server.http.Reporter` (refused requests,
    tracebacks) and, via :meth:`logging_handler`, the sink for the
    ``convexpy`` and ``uvicorn`` loggers.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        verbosity: int = 0,
        color: bool | None = None,
        now_ms: Callable[[], float] | None = None,
    ) -> None:
        self.stream = stream
        self.verbosity = verbosity
        self.color = use_color(stream) if color is None else color
        self._now_ms = now_ms or (lambda: time.time() * 1000.0)

    # -- output ------------------------------------------------------------------

    def style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        return "".join(_STYLES[s] for s in styles) + text + _RESET

    def write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not break the server
            pass

    def now(self, message: str, *styles: str) -> None:
        """Print ``message`` from another thread while the loop may be stuck (even in
        the middle of a write): straight to the file descriptor, taking no lock.
        (Every line is flushed as it is written, so nothing is left in the buffer.)"""
        text = self.style(message, *styles) + "\n"
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file: no loop to race with
            self.write(message)
            return
        with contextlib.suppress(OSError):
            os.write(fd, text.encode("utf-8", "replace"))

    def timestamp(self) -> str:
        seconds = self._now_ms() / 1000.0
        local = time.localtime(seconds)
        return time.strftime("%H:%M:%S", local) + f".{int(seconds * 1000) % 1000:03d}"

    def line(
        self,
        kind: str,
        subject: str,
        duration_ms: float | None,
        outcome: str,
        *,
        error: bool = False,
        extra: str = "",
    ) -> None:
        stamp = self.style(self.timestamp(), "dim")
        label = self.style(f"{kind:<9}", _KIND_STYLE.get(kind, "bold"))
        duration = "" if duration_ms is None else format_duration(duration_ms)
        result = self.style(outcome, "red" if error else "green")
        text = f"{stamp}  {label} {subject:<{_PATH_WIDTH}} {duration:>9}  {result}"
        if extra:
            text += "  " + self.style(extra, "dim")
        self.write(text)

    def detail(
        self, lines: Iterable[str], *, marker: str = "|", styles: tuple[str, ...] = ()
    ) -> None:
        for text in lines:
            for part in str(text).splitlines() or [""]:
                self.write(self.style(f"    {marker} {part}", *styles))

    # -- messages ----------------------------------------------------------------

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            self.write(message)

    def debug(self, message: str) -> None:
        if self.verbosity >= 1:
            self.write(self.style(message, "dim"))

    def success(self, message: str) -> None:
        if self.verbosity >= 0:
            self.write(self.style(message, "green"))

    def warning(self, message: str) -> None:
        if self.verbosity >= 0:
            self.write(self.style(message, "yellow"))

    def error(self, message: str) -> None:
        self.write(self.style(message, "red", "bold"))

    def banner(self, rows: list[tuple[str, str]]) -> None:
        """An aligned ``label  value`` block (the start-up summary)."""
        if self.verbosity < 0:
            return
        width = max((len(label) for label, _ in rows), default=0)
        for label, value in rows:
            self.write(f"  {self.style(f'{label:<{width}}', 'bold')}  {value}")

    # -- runtime events -------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        """A runtime listener: print one event."""
        kind = event.get("type")
        if kind == "call":
            self._call(event)
        elif kind == "job":
            self._job(event)
        elif kind == "cron":
            self._cron(event)
        elif self.verbosity >= 1:
            self.write(self.style(f"{self.timestamp()}  event {event!r}", "dim"))

    def _is_error(self, event: Mapping[str, Any]) -> bool:
        return str(event.get("outcome")) in _ERROR_OUTCOMES

    def _finish(self, event: Mapping[str, Any], failed: bool) -> None:
        logs = event.get("logs") or []
        if logs:
            self.detail(logs, styles=("dim",) if not failed else ())
        if failed and event.get("error"):
            self.detail([str(event["error"])], marker="!", styles=("red",))

    def _call(self, event: Mapping[str, Any]) -> None:
        failed = self._is_error(event)
        if self.verbosity < 0 and not failed:
            return
        self.line(
            str(event.get("kind", "call")),
            str(event.get("path", "?")),
            _number(event.get("duration_ms")),
            str(event.get("outcome", "?")),
            error=failed,
        )
        self._finish(event, failed)

    def _job(self, event: Mapping[str, Any]) -> None:
        """A scheduled job, or a cron run (a job with ``cron``): one line each."""
        failed = self._is_error(event)
        if self.verbosity < 0 and not failed:
            return
        cron = event.get("cron")
        if cron is None:
            subject = f"{event.get('path', '?')} ({event.get('kind', '?')})"
        else:
            subject = f'"{cron}" {event.get("path", "?")}'
        extra = f"job {event['job']}" if self.verbosity >= 1 and event.get("job") else ""
        self.line(
            "job" if cron is None else "cron",
            subject,
            _number(event.get("duration_ms")),
            str(event.get("outcome", "?")),
            error=failed,
            extra=extra,
        )
        self._finish(event, failed)

    def _cron(self, event: Mapping[str, Any]) -> None:
        """A cron run recorded in ``_cron_jobs``: its line was the job's, and a
        skip is logged by the cron runner, so this only shows with ``-v``."""
        if self.verbosity < 1:
            return
        shown = {k: v for k, v in event.items() if k not in ("type", "name")}
        self.debug(
            f'{self.timestamp()}  cron recorded "{event.get("name", "?")}" '
            + " ".join(f"{k}={v}" for k, v in shown.items())
        )

    # -- Reporter (the HTTP app) ---------------------------------------------------

    def request_error(self, method: str, path: str, status: int, code: str, message: str) -> None:
        self.line("http", f"{method} {path}", None, f"{status} {code}", error=True)
        self.detail([message], marker="!", styles=("red",))

    def function_exception(self, path: str, exc: BaseException) -> None:
        self.detail(self.traceback_lines(exc), marker="!", styles=("dim",))

    def server_error(
        self, method: str, path: str, status: int, code: str, message: str, exc: BaseException
    ) -> None:
        self.line("http", f"{method} {path}", None, f"{status} {code}", error=True)
        self.detail([message], marker="!", styles=("red",))
        if code == "InternalServerError":
            self.detail(["a bug in convexpy? please report it, with this traceback:"], marker="!")
        self.detail(traceback.format_exception(exc), marker="!", styles=("dim",))

    def traceback_lines(self, exc: BaseException) -> list[str]:
        """The traceback, without convexpy's own frames unless verbose."""
        frames = traceback.extract_tb(exc.__traceback__)
        if self.verbosity < 1:
            own = [f for f in frames if not f.filename.startswith(_PACKAGE_DIR)]
            frames = traceback.StackSummary.from_list(own or frames)
        lines = ["Traceback (most recent call last):"]
        lines.extend(part.rstrip("\n") for part in frames.format())
        lines.extend(part.rstrip("\n") for part in traceback.format_exception_only(type(exc), exc))
        return lines

    # -- logging -------------------------------------------------------------------

    def logging_handler(self) -> logging.Handler:
        """A handler that prints log records (warnings and errors; more with -v)."""
        return _PrinterHandler(self)


class _PrinterHandler(logging.Handler):
    def __init__(self, printer: LogPrinter) -> None:
        super().__init__(logging.DEBUG if printer.verbosity >= 1 else logging.WARNING)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        printer = self.printer
        text = f"[{record.name}] {message}"
        if record.levelno >= logging.ERROR:
            printer.error(text)
        elif record.levelno >= logging.WARNING:
            printer.warning(text)
        else:
            printer.debug(text)
        if record.exc_info and record.exc_info[1] is not None:
            printer.detail(
                traceback.format_exception(record.exc_info[1]), marker="!", styles=("dim",)
            )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
