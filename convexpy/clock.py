"""Clocks: the only place convexpy reads the time.

Every component gets one injected :class:`Clock`. ``SystemClock`` follows the
wall clock; ``VirtualClock`` only moves when told to, which lets tests run
months of schedules in zero wall time.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import anyio

__all__ = ["Clock", "SystemClock", "VirtualClock"]


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

    Sleepers wake when the virtual time reaches their deadline.
    """

    def __init__(self, start_ms: float = 1_700_000_000_000.0) -> None:
        self._now = float(start_ms)
        self._changed = anyio.Event()

    def now(self) -> float:
        return self._now

    def set(self, now_ms: float) -> None:
        if now_ms < self._now:
            raise ValueError(f"VirtualClock cannot go backwards ({now_ms} < {self._now})")
        self._now = float(now_ms)
        self._changed.set()
        self._changed = anyio.Event()

    def advance(self, ms: float) -> None:
        if ms < 0:
            raise ValueError(f"VirtualClock.advance needs ms >= 0, got {ms}")
        self.set(self._now + ms)

    async def sleep_until(self, deadline_ms: float) -> None:
        while self._now < deadline_ms:
            await self._changed.wait()
