"""Deleting finished jobs once they are older than the retention (7 days by default).

Convex deletes finished scheduled functions a week after they complete, in
batches of 1000. :class:`Retention` knows when the oldest finished job
expires; the dispatcher's loop starts :meth:`Retention.run` then, and the run
plans the next one from the oldest job left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..errors import StoreUnavailableError
from ..store.base import Store
from ..store.health import failure_delay_ms

__all__ = ["BATCH", "Retention"]

BATCH = 1000
"""Most finished jobs deleted in one transaction."""


class Retention:
    """When finished jobs of ``store`` expire, and deleting them."""

    def __init__(
        self,
        store: Store,
        retention_ms: float,
        pause: Callable[[float], Awaitable[None]],
    ) -> None:
        self._store = store
        self.retention_ms = retention_ms
        self._pause = pause
        """Waits the given milliseconds (or until the store works again)."""
        self.next_at = float("inf")
        """When the oldest finished job expires (inf: there is none)."""

    async def plan(self, now: float) -> None:
        """Find when the oldest finished job expires; if that cannot be read,
        look again a minute from ``now``."""
        try:
            oldest = await self._store.oldest_finished_job()
        except StoreUnavailableError:
            self.next_at = now + 60_000.0
            return
        self.next_at = (now if oldest is None else oldest) + self.retention_ms

    async def run(self, now: float) -> None:
        """Delete every job finished more than the retention before ``now``,
        a batch per transaction, then plan the next run. Store failures are
        retried (after a pause) until the store works again."""
        self.next_at = float("inf")  # planned again below, from the oldest job left
        cutoff = now - self.retention_ms
        failures = 0
        while True:
            try:
                deleted = await self._store.delete_finished_jobs(cutoff, BATCH)
            except StoreUnavailableError:
                failures += 1
                await self._pause(failure_delay_ms(failures))
                continue
            failures = 0
            if deleted < BATCH:
                break
            await asyncio.sleep(0)  # let dispatch run between batches
        await self.plan(now)
