"""Clocks: the only place convexpy reads the time.

Every component gets one injected :class:`Clock`. ``SystemClock`` follows the
wall clock; ``VirtualClock`` only moves when told to, which lets tests run
months of schedules in zero wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import anyio

__all__ = ["Clock", "SystemClock", "VirtualClock", "sleep_until_or_woken"]


class Clock(ABC):
    """A source of epoch milliseconds and a way to wait until a moment."""

    @abstractmethod
    def now(self) -> float:
        """Milliseconds since the Unix epoch."""

    @abstractmethod
    async def sleep_until(self, deadline_ms: float, wake: asyncio.Event | None = None) -> None:
        """Return once ``now() >= deadline_ms``, or earlier once ``wake`` is set
        (or if cancelled). The wait is the calling task's own: no helper task
        stands between the moment and the caller's resumption."""


class SystemClock(Clock):
    """The wall clock."""

    def now(self) -> float:
        return time.time() * 1000.0

    async def sleep_until(self, deadline_ms: float, wake: asyncio.Event | None = None) -> None:
        delay = (deadline_ms - self.now()) / 1000.0
        if wake is None:
            if delay > 0:
                await anyio.sleep(delay)
            return
        if wake.is_set() or delay <= 0:
            return
        if math.isinf(delay):
            await wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()


class VirtualClock(Clock):
    """A clock that moves only when :meth:`set` or :meth:`advance` is called.

    Sleepers wake when the virtual time reaches their deadline. The clock
    knows when its sleepers wake (:meth:`next_deadline`), which is how
    the test harness jumps straight to the next thing that will happen.
    """

    def __init__(self, start_ms: float = 1_700_000_000_000.0) -> None:
        self._now = float(start_ms)
        self._sleepers: dict[int, tuple[float, asyncio.Event]] = {}
        self._tokens = 0

    def now(self) -> float:
        return self._now

    def set(self, now_ms: float) -> None:
        """Move to ``now_ms`` (never backwards) and wake the sleepers now due."""
        if now_ms < self._now:
            raise ValueError(f"VirtualClock cannot go backwards ({now_ms} < {self._now})")
        self._now = float(now_ms)
        for deadline, event in self._sleepers.values():
            if deadline <= self._now:
                event.set()

    def advance(self, ms: float) -> None:
        """Move forward by ``ms`` milliseconds."""
        if ms < 0:
            raise ValueError(f"VirtualClock.advance needs ms >= 0, got {ms}")
        self.set(self._now + ms)

    def next_deadline(self) -> float | None:
        """The earliest future deadline anyone sleeps until, or None."""
        future = [deadline for deadline, _ in self._sleepers.values() if deadline > self._now]
        return min(future, default=None)

    async def sleep_until(self, deadline_ms: float, wake: asyncio.Event | None = None) -> None:
        if self._now >= deadline_ms or (wake is not None and wake.is_set()):
            return
        # One event serves both: set() sets it when the deadline is reached.
        event = wake if wake is not None else asyncio.Event()
        self._tokens += 1
        token = self._tokens
        self._sleepers[token] = (deadline_ms, event)
        try:
            await event.wait()
        finally:
            del self._sleepers[token]


async def sleep_until_or_woken(
    clock: Clock,
    deadline_ms: float,
    wake: asyncio.Event,
    on_wake: Callable[[], None],
) -> None:
    """Wait until ``deadline_ms`` on ``clock``, or less if ``wake`` is set first.

    ``on_wake`` runs the moment the wait ends: callers clear their "asleep"
    flag there, so that nobody (the test harness) mistakes a task that is
    waking up for one at rest. A :class:`VirtualClock` reaching the deadline
    sets ``wake`` itself.
    """
    try:
        await clock.sleep_until(deadline_ms, wake)
    finally:
        on_wake()
