"""Whether a store's writes are failing, and waiting for them to work again.

Every store has one :class:`StoreHealth` (``store.health``). Transactions
report each commit's outcome to it; a store may also report what it knows
itself (its writer died and is being restarted, or cannot be). The first
failure of a streak is logged once, with its cause, and so is the recovery:
a full disk that lasts a minute is two log lines, not thousands.

Background work (scheduled jobs, cron runs, retention) retries failed store
work forever, with a backoff capped at :data:`RETRY_CAP_MS`, and wakes early
when the streak ends (:meth:`StoreHealth.wake_on_recovery`): any commit that
succeeds, a client's included, ends it. The status endpoint reads
:meth:`StoreHealth.status`; a store that cannot recover at all sets
:attr:`StoreHealth.fatal`, which the dev server turns into a non-zero exit
so that a supervisor restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import StoreUnavailableError

if TYPE_CHECKING:
    from ..clock import Clock

__all__ = [
    "RETRY_BASE_MS",
    "RETRY_CAP_MS",
    "StoreHealth",
    "failure_delay_ms",
    "pause_for_store",
    "run_forever",
]

logger = logging.getLogger("convexpy.store")

RETRY_BASE_MS = 100.0
RETRY_CAP_MS = 5_000.0
"""The longest background work waits between two tries of failed store work:
short, so that work resumes within seconds of the store recovering."""


def failure_delay_ms(attempt: int) -> float:
    """Full-jitter backoff before try ``attempt + 1`` of failed store work."""
    return random.uniform(0, min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** min(attempt, 20)))


async def pause_for_store(clock: Clock, health: StoreHealth, delay_ms: float) -> None:
    """Background work's pause before it tries failed store work again:
    ``delay_ms`` on ``clock``, or less if the store's writes work again meanwhile."""
    with health.wake_on_recovery(asyncio.Event()) as recovered:
        await clock.sleep_until(clock.now() + delay_ms, recovered)


async def run_forever(
    one_round: Callable[[], Awaitable[None]],
    pause: Callable[[float], Awaitable[None]],
    what: str,
) -> NoReturn:
    """Run ``one_round()`` until cancelled. A round that fails is tried again
    after ``pause(failure_delay_ms(n))``: a background loop never ends on its
    own. Store failures are logged by the store's health; anything else (a bug)
    once per streak, with its traceback, naming ``what`` failed."""
    failures = 0
    while True:
        try:
            await one_round()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if failures == 1 and not isinstance(exc, StoreUnavailableError):
                logger.exception("%s failed; it retries", what)
            await pause(failure_delay_ms(failures))


class StoreHealth:
    """A store's write health; see the module docstring."""

    def __init__(self) -> None:
        self.error: str | None = None
        """Why the last write failed, while writes are failing (None: healthy)."""
        self.failures = 0
        """Failed writes in the current streak."""
        self.fatal: str | None = None
        """Set when the store cannot recover by itself (the process should exit)."""
        self._since: float | None = None
        self._waiting: set[asyncio.Event] = set()
        self._fatal_listeners: list[Callable[[str], None]] = []

    def write_failed(self, exc: BaseException) -> None:
        """A write failed for a reason other than a conflict."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.error is None:
            self._since = time.monotonic()
            logger.warning(
                "Writes to the store are failing: %s. Scheduled jobs and crons wait and "
                "retry (every few seconds at most); calls get the error until writes work again.",
                text,
            )
        self.error = text
        self.failures += 1

    def write_succeeded(self) -> None:
        """A write reached the store: a failure streak, if any, is over."""
        if self.error is None:
            return
        elapsed = time.monotonic() - (self._since or time.monotonic())
        logger.warning(
            "Writes to the store work again, after %d failed attempt(s) in %.1f s.",
            self.failures,
            elapsed,
        )
        self.error = None
        self.failures = 0
        self._since = None
        waiting, self._waiting = self._waiting, set()
        for event in waiting:
            event.set()

    @contextlib.contextmanager
    def wake_on_recovery(self, event: asyncio.Event) -> Iterator[asyncio.Event]:
        """Set ``event`` when the current failure streak ends (at once if there
        is none), while the block runs."""
        if self.error is None:
            event.set()
        self._waiting.add(event)
        try:
            yield event
        finally:
            self._waiting.discard(event)

    def set_fatal(self, reason: str) -> None:
        """The store cannot recover by itself: tell whoever supervises the process."""
        if self.fatal is not None:
            return
        self.fatal = reason
        logger.error("The store cannot recover: %s", reason)
        for listener in list(self._fatal_listeners):
            try:
                listener(reason)
            except Exception:  # a broken listener must not hide the fault
                logger.exception("a store fatal-error listener failed")

    def on_fatal(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` when the store becomes unrecoverable (at once if it is)."""
        self._fatal_listeners.append(listener)
        if self.fatal is not None:
            listener(self.fatal)

    def status(self) -> dict[str, Any]:
        """What the status endpoint reports: ``{"writable": bool, "error"?, "since_s"?}``."""
        if self.fatal is not None:
            return {"writable": False, "error": self.fatal, "fatal": True}
        if self.error is None:
            return {"writable": True}
        since = time.monotonic() - (self._since or time.monotonic())
        return {"writable": False, "error": self.error, "failing_for_s": round(since, 1)}
