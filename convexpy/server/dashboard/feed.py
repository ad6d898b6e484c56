"""What the dashboard's Logs and Health pages show, kept in bounded memory. No I/O.

:class:`LogFeed` keeps the last runtime events (calls, scheduled jobs, cron
runs) numbered in order, for the long poll of ``GET /api/admin/logs``: a tab
asks for the events after the last number it saw and gets them, or waits for
the next one. The feed holds at most ``capacity`` events however many tabs
poll and however slowly they do; a tab that falls further behind is told how
many it missed. Each event's log lines and error are cut to a fixed size.

:class:`JobStats` counts finished jobs per second of the runtime's clock and
keeps their lateness (start minus scheduled time) for percentiles, over the
last ``seconds`` seconds; :class:`PendingSeries` remembers the pending count
each time the Health page asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["JobStats", "LogFeed", "PendingSeries", "percentile"]

MAX_LOG_LINES = 50
MAX_TEXT = 2000
_LOG_TYPES = frozenset({"call", "job"})


def _cut(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... ({len(text)} characters)"


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def log_entry(event: Mapping[str, Any], seq: int, time_ms: float) -> dict[str, Any] | None:
    """The Logs page's row for a runtime event (None for events it does not show).

    ``source`` is ``"call"`` (a client or nested call), ``"job"`` (a scheduled
    function) or ``"cron"`` (a job that is a cron run, named in ``cron``).
    """
    if event.get("type") not in _LOG_TYPES:
        return None
    source = str(event["type"])
    cron = event.get("cron")
    if cron is not None:
        source = "cron"
    lines = [_cut(line) for line in list(event.get("logs") or [])[:MAX_LOG_LINES]]
    hidden = len(event.get("logs") or []) - len(lines)
    if hidden > 0:
        lines.append(f"... ({hidden} more lines)")
    entry: dict[str, Any] = {
        "seq": seq,
        "time": time_ms,
        "source": source,
        "kind": str(event.get("kind", "")),
        "path": str(event.get("path", "?")),
        "outcome": str(event.get("outcome", "?")),
        "durationMs": _number(event.get("duration_ms")),
        "logs": lines,
    }
    if event.get("error") is not None:
        entry["error"] = _cut(event["error"])
    if cron is not None:
        entry["cron"] = str(cron)
    if event.get("job") is not None:
        entry["job"] = str(event["job"])
    return entry


class LogFeed:
    """The last ``capacity`` log entries, numbered from 1, and a way to wait for more."""

    def __init__(self, now: Callable[[], float], capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self._now = now
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._last = 0
        self._arrived: asyncio.Event | None = None
        self.closed = False

    @property
    def last(self) -> int:
        """The number of the newest entry (0: none yet)."""
        return self._last

    def add(self, event: Mapping[str, Any]) -> None:
        """A runtime listener: keep ``event`` if the Logs page shows it."""
        entry = log_entry(event, self._last + 1, self._now())
        if entry is None:
            return
        self._last += 1
        self._entries.append(entry)
        self._wake()

    def _wake(self) -> None:
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.set()

    def close(self) -> None:
        """Answer every waiting poll now, and later ones without waiting (the server stops)."""
        self.closed = True
        self._wake()

    def since(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` entries numbered above ``after``, oldest first, and how
        many entries after ``after`` were dropped from the feed before being read."""
        entries = self._entries
        oldest = self._last - len(entries) + 1
        dropped = max(0, oldest - after - 1)
        start = max(0, after + 1 - oldest)
        found = [entries[i] for i in range(start, min(len(entries), start + limit))]
        return found, dropped

    async def wait(self, after: int, *, seconds: float) -> None:
        """Return once an entry numbered above ``after`` exists, the feed is
        closed, or ``seconds`` seconds have passed."""
        if self._last > after or self.closed or seconds <= 0:
            return
        if self._arrived is None:
            self._arrived = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), seconds)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values (None: no values)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class JobStats:
    """Finished jobs and their lateness per second, over the last ``seconds`` seconds.

    At most ``samples`` lateness values are kept per second (the first ones);
    the count covers every job.
    """

    def __init__(self, now: Callable[[], float], seconds: int = 300, samples: int = 2000) -> None:
        self._now = now
        self.seconds = seconds
        self._samples = samples
        self._buckets: dict[int, tuple[list[int], list[float]]] = {}
        self._since = int(now() // 1000)
        """The first second counted: the series starts there, not with made-up zeros."""

    def add(self, event: Mapping[str, Any]) -> None:
        """A runtime listener: count a finished job."""
        if event.get("type") != "job":
            return
        second = int(self._now() // 1000)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = ([0], [])
            self._forget(second)
        bucket[0][0] += 1
        lateness = _number(event.get("lateness_ms"))
        if lateness is not None and len(bucket[1]) < self._samples:
            bucket[1].append(lateness)

    def _forget(self, second: int) -> None:
        cutoff = second - self.seconds
        for old in [s for s in self._buckets if s <= cutoff]:
            del self._buckets[old]

    def summary(self, seconds: int = 60) -> dict[str, Any]:
        """Over the last ``seconds`` seconds: ``{jobs, p50, p99}`` (lateness in ms)."""
        now = int(self._now() // 1000)
        jobs = 0
        lateness: list[float] = []
        for second in range(now - seconds + 1, now + 1):
            count, samples = self._buckets.get(second, ([0], []))
            jobs += count[0]
            lateness.extend(samples)
        lateness.sort()
        return {"jobs": jobs, "p50": percentile(lateness, 0.5), "p99": percentile(lateness, 0.99)}

    def series(self) -> list[dict[str, Any]]:
        """One point per second of the window since counting began, oldest first:
        ``{t, jobs, p50, p99}`` (``t`` in epoch ms; p50 and p99 of lateness in ms,
        None without jobs)."""
        now = int(self._now() // 1000)
        self._forget(now)
        points = []
        for second in range(max(self._since, now - self.seconds + 1), now + 1):
            count, lateness = self._buckets.get(second, ([0], []))
            ordered = sorted(lateness)
            points.append(
                {
                    "t": second * 1000,
                    "jobs": count[0],
                    "p50": percentile(ordered, 0.5),
                    "p99": percentile(ordered, 0.99),
                }
            )
        return points


class PendingSeries:
    """The pending-job count at the last ``capacity`` readings: ``{t, pending}``."""

    def __init__(self, capacity: int = 300) -> None:
        self._points: deque[dict[str, Any]] = deque(maxlen=capacity)

    def add(self, t: float, pending: int) -> list[dict[str, Any]]:
        if self._points and self._points[-1]["t"] // 1000 == t // 1000:
            self._points.pop()  # one reading per second
        self._points.append({"t": t, "pending": pending})
        return list(self._points)
