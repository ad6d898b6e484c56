"""``ConvexTest``: run an app on a memory store and a virtual clock, for tests.

::

    async with ConvexTest("convex") as t:
        await t.mutation(api.messages.send, {"body": "hi"})
        await t.advance(5000)          # the self-destruct job runs, in zero wall time
        assert await t.query(api.messages.count) == 0

Scheduled jobs never run behind the test's back: they start only inside
:meth:`ConvexTest.advance`, :meth:`ConvexTest.finish_in_progress_scheduled_functions`
and :meth:`ConvexTest.finish_all_scheduled_functions`, which run everything
that falls due, in order, to completion.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .clock import VirtualClock
from .components.crons import TICK as CRON_TICK
from .components.retrier import EXPIRE as RETRIER_EXPIRE
from .context import Auth, MutationCtx, UserIdentity, fixed_time
from .db import DatabaseWriter, Transaction
from .errors import ConvexpyError
from .runtime import Runtime
from .scheduler.api import MutationScheduler
from .store import Store
from .unawaited import IN_MUTATION

__all__ = ["ConvexTest"]

_HOUSEKEEPING = frozenset({CRON_TICK, RETRIER_EXPIRE})
"""Jobs ``finish_all_scheduled_functions`` does not wait for: runtime crons'
ticks (they never end) and the retrier's deletions of completed runs."""

DEFAULT_START_MS = 1_767_225_600_000.0  # 2026-01-01T00:00:00Z


class ConvexTest:
    """A whole app (crons included) on a memory store and a :class:`VirtualClock`.

    ``store`` and ``clock`` can be given to test restarts: two harnesses in
    turn on one SQLite file and one clock. ``settle_timeout`` bounds, in real
    seconds, how long the harness waits for running jobs that wait on
    something other than the virtual clock.
    """

    def __init__(
        self,
        app_dir: str | Path = "convex",
        *,
        start_ms: float = DEFAULT_START_MS,
        parallelism: int = 16,
        crons: bool = True,
        settle_timeout: float = 30.0,
        store: str | Store = "memory",
        clock: VirtualClock | None = None,
        retention_ms: float = 7 * 24 * 3600 * 1000,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock(start_ms)
        self.runtime = Runtime(
            app_dir,
            store=store,
            clock=self.clock,
            parallelism=parallelism,
            crons=crons,
            retention_ms=retention_ms,
            shutdown_grace=0.0,  # a test ending mid-job should not wait for it
        )
        self.settle_timeout = settle_timeout

    async def __aenter__(self) -> ConvexTest:
        self.runtime.dispatcher.paused = True
        await self.runtime.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.runtime.__aexit__(exc_type, exc, tb)

    @property
    def now(self) -> float:
        """The virtual time, in epoch milliseconds."""
        return self.clock.now()

    # -- calls ---------------------------------------------------------------------

    async def query(
        self,
        function: object,
        args: dict[str, Any] | None = None,
        *,
        identity: UserIdentity | None = None,
    ) -> Any:
        return await self.runtime.query(function, args, identity=identity)

    async def mutation(
        self,
        function: object,
        args: dict[str, Any] | None = None,
        *,
        identity: UserIdentity | None = None,
    ) -> Any:
        return await self.runtime.mutation(function, args, identity=identity)

    async def action(
        self,
        function: object,
        args: dict[str, Any] | None = None,
        *,
        identity: UserIdentity | None = None,
    ) -> Any:
        return await self.runtime.action(function, args, identity=identity)

    async def run(self, body: Callable[[MutationCtx], Awaitable[Any]]) -> Any:
        """Run ``body(ctx)`` in a mutation transaction; ``ctx.db.get`` and
        ``ctx.db.query`` also read system tables (``_scheduled_functions``)."""
        runtime = self.runtime

        async def transaction(txn: Transaction) -> Any:
            db = DatabaseWriter(txn, allow_system_reads=True)
            scheduler = MutationScheduler(runtime, txn)
            now = fixed_time(runtime.clock.now())
            ctx = MutationCtx(db, Auth(None), scheduler, now, runtime)
            result = body(ctx)
            if inspect.isawaitable(result):
                result = await result
            if txn.calls:
                txn.calls.check("t.run", IN_MUTATION)
            return result

        return await runtime.system_mutation(transaction)

    # -- time --------------------------------------------------------------------------

    async def advance(self, ms: float) -> None:
        """Move virtual time forward by ``ms``, running everything that falls due,
        in order, to completion."""
        if ms < 0:
            raise ValueError(f"advance() needs ms >= 0, got {ms}")
        await self._run_until(self.clock.now() + ms)

    async def finish_in_progress_scheduled_functions(self) -> None:
        """Run the jobs that are due now (and what they start right away) to completion."""
        await self._run_until(self.clock.now())

    async def finish_all_scheduled_functions(self, *, max_jobs: int = 10_000) -> None:
        """Run jobs, advancing time as needed, until none is pending.

        Raises :class:`ConvexpyError` after ``max_jobs`` job runs, which stops
        jobs that keep rescheduling themselves from looping forever.
        """
        started = self._jobs_started()
        while True:
            await self._run_until(self.clock.now())
            next_time = await self._next_pending_time()
            if next_time is None:
                return
            if self._jobs_started() - started > max_jobs:
                raise ConvexpyError(
                    f"finish_all_scheduled_functions(): still pending jobs after {max_jobs} "
                    "job runs; a job probably reschedules itself forever. Use advance() to "
                    "step through time, or raise max_jobs."
                )
            await self._run_until(max(next_time, self.clock.now()))

    def _jobs_started(self) -> int:
        return self.runtime.dispatcher.started

    async def _next_pending_time(self) -> float | None:
        """When the next pending job is due, not counting cron runs and runtime
        crons' ticks, which never end, nor the retrier's deletions of completed
        runs, days later (housekeeping, like the jobs' own retention)."""
        cron_runs = self.runtime.crons.current_runs()
        store = self.runtime.store
        after: bytes | None = None
        while True:
            jobs = await store.due_jobs(100, after_key=after)
            for job in jobs:
                if job.id not in cron_runs and job.name not in _HOUSEKEEPING:
                    return job.scheduled_time
            if len(jobs) < 100:
                return None
            after = jobs[-1].key

    async def _run_until(self, target: float) -> None:
        dispatcher = self.runtime.dispatcher
        dispatcher.resume()
        try:
            while True:
                await self._settle()
                deadline = self.clock.next_deadline()
                if deadline is None or deadline > target:
                    break
                self.clock.set(deadline)
            if target > self.clock.now():
                self.clock.set(target)
            await self._settle()
        finally:
            dispatcher.paused = True

    async def _settle(self) -> None:
        """Yield to the event loop until nothing can happen without the clock moving."""
        dispatcher = self.runtime.dispatcher
        give_up = time.monotonic() + self.settle_timeout
        quiet_rounds = 0
        while quiet_rounds < 3:
            await asyncio.sleep(0)
            quiet_rounds = quiet_rounds + 1 if self.runtime.quiet else 0
            if time.monotonic() > give_up:
                raise ConvexpyError(
                    f"ConvexTest: {dispatcher.running} scheduled job(s) still running after "
                    f"{self.settle_timeout} s of real time; a job is waiting on something other "
                    "than the virtual clock (real sleeps, network)"
                )
