"""Clocks: the only place convexpy reads the time.

Every component gets one injected :class:`Clock`. ``SystemClock`` follows the
wall clock; ``VirtualClock`` only moves when told to, which lets tests run
months of schedules in zero wall time.
"""

from __future__ import annotations

import asyncio
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
    async def sleep_until(self, deadline_ms: float) -> None:
        """Return once ``now() >= deadline_ms`` (or earlier if cancelled)."""


class SystemClock(Clock):
    """The wall clock."""

    def now(self) -> float:
        return time.time() * 1000.0

    async def sleep_until(self, deadline_ms: float) -> None:
        delay = (deadline_ms - self.now()) / 1000.0
        if delay > 0:
            await anyio.sleep(delay)


class VirtualClock(Clock):
    """A clock that moves only when :meth:`set` or :meth:`advance` is called.

    Sleepers wake when the virtual time reaches their deadline. The clock
    knows its sleepers (:attr:`sleepers`, :meth:`next_deadline`), which is how
    the test harness jumps straight to the next thing that will happen.
    """

    def __init__(self, start_ms: float = 1_700_000_000_000.0) -> None:
        self._now = float(start_ms)
        self._changed = asyncio.Event()
        self._deadlines: dict[int, float] = {}
        self._tokens = 0

    def now(self) -> float:
        return self._now

    def set(self, now_ms: float) -> None:
        """Move to ``now_ms`` (never backwards) and wake the sleepers now due."""
        if now_ms < self._now:
            raise ValueError(f"VirtualClock cannot go backwards ({now_ms} < {self._now})")
        self._now = float(now_ms)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def advance(self, ms: float) -> None:
        """Move forward by ``ms`` milliseconds."""
        if ms < 0:
            raise ValueError(f"VirtualClock.advance needs ms >= 0, got {ms}")
        self.set(self._now + ms)

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting in :meth:`sleep_until` for a future time."""
        return sum(1 for deadline in self._deadlines.values() if deadline > self._now)

    def next_deadline(self) -> float | None:
        """The earliest future deadline anyone sleeps until, or None."""
        future = [d for d in self._deadlines.values() if d > self._now]
        return min(future, default=None)

    async def sleep_until(self, deadline_ms: float) -> None:
        self._tokens += 1
        token = self._tokens
        self._deadlines[token] = deadline_ms
        try:
            while self._now < deadline_ms:
                await self._changed.wait()
        finally:
            del self._deadlines[token]


async def sleep_until_or_woken(
    clock: Clock,
    deadline_ms: float,
    wake: asyncio.Event,
    on_wake: Callable[[], None],
) -> None:
    """Wait until ``deadline_ms`` on ``clock``, or less if ``wake`` is set first.

    ``on_wake`` runs the moment the wait ends, before the clean-up yields to
    the event loop: callers clear their "asleep" flag there, so that nobody
    (the test harness) mistakes a task that is waking up for one at rest.
    """
    sleeper = asyncio.ensure_future(clock.sleep_until(deadline_ms))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
    finally:
        on_wake()
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)
