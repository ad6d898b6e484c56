"""The dispatcher: wakes for due jobs and runs them with Convex's guarantees.

Jobs live in the store (``_scheduled_functions``, indexed by state and
scheduled time). The dispatcher keeps only the near future in memory: every
so often it loads the pending jobs due within ``window_ms`` into a
:class:`~convexpy.scheduler.wheel.TimerWheel`; jobs committed by this process
that fall inside the window are added directly. Due jobs start in
``scheduledTime`` order, at most ``parallelism`` at once.

* A scheduled **mutation** runs exactly once: its handler's writes and the
  job's ``success`` state commit in one transaction, which also read the
  job's pending state, so a concurrent cancel (or another process) makes it
  conflict and re-check. Conflicts and store errors retry with backoff until
  the transaction commits; an exception from the handler records ``failed``.
* A scheduled **action** runs at most once: ``inProgress`` is committed before
  the handler starts and the action is never retried. Actions found
  ``inProgress`` at start-up (the process died under them) become ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..clock import sleep_until_or_woken
from ..context import NO_AUTH, MutationCtx
from ..db import DatabaseWriter, Transaction
from ..errors import ConvexError, FunctionNotFoundError, StoreUnavailableError
from ..functions import ConvexFunction, FunctionKind
from ..logcapture import capture
from ..store.base import ConflictError, KeyRange
from ..store.health import failure_delay_ms, run_forever
from ..unawaited import IN_MUTATION
from .api import MutationScheduler, ScheduledWrites, Scheduler
from .jobs import (
    BY_COMPLETED,
    BY_STATE,
    SCHEDULED_FUNCTIONS,
    STATE_TEXT,
    TRANSIENT_ACTION_ERROR,
    JobState,
    completed_before,
    state_range,
)
from .ready import ReadyQueue
from .wheel import TimerWheel

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["Dispatcher", "error_text"]

logger = logging.getLogger("convexpy.scheduler")

RETENTION_BATCH = 1000


def error_text(exc: BaseException) -> str:
    """How a handler's exception is recorded in ``state.error``."""
    if isinstance(exc, ConvexError):
        return f"ConvexError: {exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def full_jitter(attempt: int, base_ms: float, cap_ms: float) -> float:
    """A random delay in ``[0, min(cap, base * 2**attempt))`` milliseconds."""
    return random.uniform(0, min(cap_ms, base_ms * 2 ** min(attempt, 40)))


_Outcome = tuple[str, str, str, "str | None", float, "list[str] | None"]
"""(job id, path, "success" | "failed", error, start time, what the handler printed)."""

_NO_CAPTURE: contextlib.nullcontext[None] = contextlib.nullcontext()

MAX_BATCH = 128
"""Most scheduled mutations run in one transaction."""


def finished(
    doc: dict[str, Any], state: JobState, now: float, error: str | None = None
) -> dict[str, Any]:
    updated = dict(doc)
    kind = STATE_TEXT[state]
    updated["state"] = {"kind": kind} if error is None else {"kind": kind, "error": error}
    updated["completedTime"] = now
    return updated


class _JobCtx(MutationCtx):
    """``ctx`` of a scheduled mutation run in a batch; its scheduler is made
    on first use (most jobs never schedule anything)."""

    __slots__ = ("_job", "_scheduler", "_started", "_txn")
    _runtime: Runtime  # always set: nested calls (ctx.run_query ...) use it

    def __init__(
        self, db: DatabaseWriter, runtime: Runtime, txn: Transaction, job_id: str, started: float
    ) -> None:
        # MutationCtx.__init__ is skipped on purpose: `scheduler` is a property here.
        self.db = db
        self.auth = NO_AUTH
        self._runtime = runtime
        self._txn = txn
        self._job = job_id
        self._started = started
        self._scheduler: MutationScheduler | None = None

    def now(self) -> float:
        return self._started

    @property
    def scheduler(self) -> Scheduler:
        scheduler = self._scheduler
        if scheduler is None:
            scheduler = self._scheduler = MutationScheduler(
                self._runtime, self._txn, ScheduledWrites(), current_job=self._job
            )
        return scheduler

    @scheduler.setter
    def scheduler(self, value: Scheduler) -> None:
        raise AttributeError("ctx.scheduler cannot be replaced")

    @property
    def scheduled(self) -> ScheduledWrites | None:
        """What the job scheduled and cancelled (None: it never used the scheduler)."""
        return None if self._scheduler is None else self._scheduler.writes


class Dispatcher:
    """Runs a runtime's scheduled jobs; see the module docstring."""

    window_ms = 60_000.0
    max_loaded = 100_000

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._wheel: TimerWheel[str] | None = None
        self._ready = ReadyQueue()
        self.on_job_done: Callable[[str], None] | None = None
        """Called with each job id whose task ends (the cron runner listens)."""
        self.cron_of: Callable[[str], str | None] = lambda job_id: None
        """The name of the cron job a job is a run of (None: not a cron run)."""
        self.started = 0
        """How many jobs were started (for the harness's runaway bound)."""
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._names: dict[str, str] = {}
        """Function paths of jobs waiting to run, to batch mutations without a read."""
        self._solo: set[str] = set()
        """Jobs whose batch conflicted: they run alone from now on."""
        self._functions: dict[str, tuple[str, ConvexFunction] | None] = {}
        self._functions_app: object = None
        """The app ``_functions`` caches lookups in (a reload starts afresh)."""
        self._frontier = float("-inf")
        self._next_refresh = float("-inf")
        self._loop_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._next_retention = float("-inf")
        self._capped = False
        self._sleep_deadline = float("inf")
        self._wake = asyncio.Event()
        self._stopping = False
        self._backing_off = 0
        self.paused = False
        """While True, due jobs wait instead of starting (the test harness's gate)."""
        self.sleeping = False
        """True while the loop waits on the clock (for the test harness)."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await self._fail_interrupted_actions()
        now = self._runtime.clock.now()
        self._wheel = TimerWheel(now)
        # The first load and the retention plan happen here, while the app is
        # not serving yet, rather than whenever the loop first gets to run.
        await self._load(now + self.window_ms)
        await self._plan_retention(now)
        self._loop_task = asyncio.create_task(self._loop(), name="convexpy-dispatcher")

    async def stop(self, grace: float = 0.0) -> None:
        """Start no more jobs; give running ones ``grace`` seconds (real time)
        to finish, then cancel the rest. A cancelled mutation rolls back and
        runs again on the next start; a cancelled action becomes ``failed``
        ("Transient error while executing action") on the next start."""
        self._stopping = True
        housekeeping = [t for t in (self._loop_task, self._retention_task) if t is not None]
        for task in housekeeping:
            task.cancel()
        if grace > 0 and self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        remaining = list(self._tasks)
        for task in remaining:
            task.cancel()
        await asyncio.gather(*housekeeping, *remaining, return_exceptions=True)
        self._running.clear()

    @property
    def quiet(self) -> bool:
        """Nothing can happen until the clock moves: the loop waits on the clock,
        no due job can start, and every running job is in a clock-timed backoff."""
        startable = bool(self._ready) and not self.paused
        return (
            self.sleeping
            and not self._wake.is_set()
            and not startable
            and len(self._running) == self._backing_off
        )

    @property
    def running(self) -> int:
        """Jobs currently executing."""
        return len(self._running)

    def resume(self) -> None:
        """Let due jobs start again after :attr:`paused`."""
        self.paused = False
        self._start_ready()
        self._wake.set()

    # -- waking --------------------------------------------------------------------

    def notify(self, writes: ScheduledWrites) -> None:
        """Called after a commit that scheduled or cancelled jobs."""
        wheel = self._wheel
        if wheel is None or self._stopping:
            return
        for job_id in writes.canceled:
            wheel.cancel(job_id)
            self._names.pop(job_id, None)
        earliest = float("inf")
        now = self._runtime.clock.now()
        due: list[tuple[float, str]] = []
        names = self._names
        for job_id, when, path in writes.jobs:
            if when <= now:
                # Due already: straight to the ready queue, no wheel round trip.
                if job_id not in self._running:
                    names[job_id] = path
                    due.append((when, job_id))
            elif when < self._frontier:
                if job_id not in self._running:
                    wheel.add(job_id, when)
                    self._names[job_id] = path
                    earliest = min(earliest, when)
            else:
                refresh = when - self.window_ms / 2
                if refresh < self._next_refresh:
                    self._next_refresh = refresh
                    earliest = min(earliest, refresh)
        if due:
            self._ready.add_run(due)
            self._start_ready()
        if earliest < self._sleep_deadline:
            self._wake.set()

    def notify_accepted(self, writes: ScheduledWrites) -> None:
        """Called when a commit that scheduled jobs is accepted, before it is
        durable: scheduled mutations due now start at once, on speculative
        snapshots (their own commits are ordered after it, and fail if it
        does). The rest waits for :meth:`notify`, which skips these."""
        if self._wheel is None or self._stopping or not writes.jobs:
            return
        now = self._runtime.clock.now()
        names, running = self._names, self._running
        canceled = writes.canceled
        due: list[tuple[float, str]] = []
        later: list[tuple[str, float, str]] = []
        mutation = FunctionKind.MUTATION
        for job in writes.jobs:
            job_id, when, path = job
            found = self._function(path) if when <= now else None
            if found is None or found[1].kind is not mutation or job_id in canceled:
                later.append(job)
            elif job_id not in running:
                names[job_id] = path
                due.append((when, job_id))
        writes.jobs[:] = later
        if due:
            self._ready.add_run(due)
            self._start_ready()

    # -- the loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        """Wake for due jobs until stopped. A round that fails (the store
        cannot be read) is retried after a pause: the loop never ends on its own."""
        clock = self._runtime.clock

        async def pause(delay_ms: float) -> None:
            await self._sleep(clock.now() + delay_ms)

        await run_forever(self._wake_and_start, pause, "the scheduler's loop")

    async def _wake_and_start(self) -> None:
        """One round of the loop: start what is due, then sleep until the next deadline."""
        clock = self._runtime.clock
        wheel = self._wheel
        assert wheel is not None
        now = clock.now()
        if self._needs_load(now):
            await self._load(now + self.window_ms)
            now = clock.now()
        running = self._running
        self._ready.add_run(
            [(deadline, job_id) for deadline, job_id in wheel.advance(now) if job_id not in running]
        )
        self._start_ready()
        if now >= self._next_retention and (
            self._retention_task is None or self._retention_task.done()
        ):
            # Re-planned by the retention task, from the oldest finished job.
            self._next_retention = float("inf")
            self._retention_task = asyncio.create_task(self._retention(now))
        deadline = min(
            wheel.next_deadline() or float("inf"),
            float("inf") if self._capped else self._next_refresh,
            self._next_retention,
        )
        await self._sleep(deadline)

    async def _sleep(self, deadline: float) -> None:
        if self._runtime.clock.now() >= deadline:
            await asyncio.sleep(0)  # due already: not asleep, as far as the harness knows
            return
        self._wake.clear()
        self._sleep_deadline = deadline
        self.sleeping = True
        await sleep_until_or_woken(self._runtime.clock, deadline, self._wake, self._woken)

    def _woken(self) -> None:
        self.sleeping = False
        self._sleep_deadline = float("inf")

    @property
    def _backlog(self) -> int:
        wheel = self._wheel
        return (len(wheel) if wheel is not None else 0) + len(self._ready) + len(self._running)

    def _needs_load(self, now: float) -> bool:
        if self._capped:
            return self._backlog < self.max_loaded // 2
        return now >= self._next_refresh

    async def _load(self, until: float) -> None:
        """Put pending jobs due before ``until`` into the wheel."""
        runtime = self._runtime
        wheel = self._wheel
        assert wheel is not None
        key_range = state_range(JobState.PENDING, before=until)
        frontier = until
        capped = False
        txn = runtime.transaction(writable=False)
        try:
            low = key_range.low
            while True:
                rows = await txn.scan(
                    BY_STATE, KeyRange(key_range.index, low, key_range.high), "asc", 1000
                )
                for _key, doc in rows:
                    job_id = doc["_id"]
                    # Jobs in the wheel or the ready queue have a name entry.
                    if job_id not in self._running and job_id not in self._names:
                        wheel.add(job_id, doc["scheduledTime"])
                        self._names[job_id] = doc["name"]
                if len(rows) < 1000:
                    break
                low = rows[-1][0] + b"\x00"
                if len(wheel) >= self.max_loaded:
                    # Too much is due at once: load the rest as the wheel drains.
                    frontier = rows[-1][1]["scheduledTime"]
                    capped = True
                    break
            # The first job beyond the window says when to look again.
            beyond = KeyRange(key_range.index, key_range.high or low, None)
            later = await txn.scan(BY_STATE, beyond, "asc", 1)
        finally:
            txn.release()
        self._frontier = frontier
        self._capped = capped
        if later and not capped and later[0][1]["state"]["kind"] == JobState.PENDING:
            self._next_refresh = later[0][1]["scheduledTime"] - self.window_ms / 2
        else:
            self._next_refresh = float("inf")

    def _function(self, name: str) -> tuple[str, ConvexFunction] | None:
        """The path and function a job's name resolves to in the current app
        (cached; a reload starts afresh)."""
        app = self._runtime.app
        functions = self._functions
        if app is not self._functions_app:
            functions.clear()
            self._functions_app = app
        try:
            return functions[name]
        except KeyError:
            pass
        found: tuple[str, ConvexFunction] | None
        try:
            found = self._runtime.resolve(name)
        except FunctionNotFoundError:
            found = None
        functions[name] = found
        return found

    def _start_ready(self) -> None:
        limit = self._runtime.parallelism
        ready = self._ready
        tasks, running, solo, names = self._tasks, self._running, self._solo, self._names
        mutation = FunctionKind.MUTATION
        while ready and len(tasks) < limit and not (self._stopping or self.paused):
            # Spread the backlog over the free slots: one job when little is
            # due (lowest latency), up to MAX_BATCH under load (throughput).
            free = limit - len(tasks)
            size = max(1, min(MAX_BATCH, -(-len(ready) // free)))
            batch: list[str] = []
            while ready and len(batch) < size:
                when, job_id = ready.pop()
                if job_id in running:
                    continue
                # Batched: mutations whose function is known without a read.
                name = names.get(job_id)
                found = None if name is None else self._function(name)
                if found is not None and found[1].kind is mutation and job_id not in solo:
                    batch.append(job_id)
                elif batch:
                    ready.put_back(when, job_id)  # its turn comes with the next free slot
                    break
                else:
                    self._spawn([job_id], self._run_one(job_id))
                    break
            if batch:
                self._spawn(batch, self._run_batch(batch))

    def _spawn(self, job_ids: list[str], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"convexpy-jobs-{job_ids[0]}")
        self.started += len(job_ids)
        self._tasks.add(task)
        names, running = self._names, self._running
        for job_id in job_ids:
            names.pop(job_id, None)
            running[job_id] = task
        task.add_done_callback(functools.partial(self._jobs_done, job_ids))

    def _jobs_done(self, job_ids: list[str], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        running, solo, on_job_done = self._running, self._solo, self.on_job_done
        for job_id in job_ids:
            if running.get(job_id) is task:
                del running[job_id]
                if solo:
                    solo.discard(job_id)
                if on_job_done is not None:
                    on_job_done(job_id)
        if self._ready and not self._stopping:
            self._start_ready()
        if self._capped and self._backlog < self.max_loaded // 2:
            self._wake.set()

    # -- running jobs ----------------------------------------------------------------

    async def _run_one(self, job_id: str) -> None:
        """A job whose kind was not known up front, or an action."""
        runtime = self._runtime
        try:
            failures = 0
            while True:
                txn = runtime.transaction(writable=False)
                try:
                    doc = await txn.get(job_id)
                    break
                except StoreUnavailableError:
                    failures += 1
                    await self._store_backoff(failures)
                finally:
                    txn.release()
            if doc is None or doc["state"]["kind"] != JobState.PENDING:
                return
            try:
                path, fn = runtime.resolve(doc["name"])
            except FunctionNotFoundError:
                fn = None
            if fn is not None and fn.kind is FunctionKind.ACTION:
                await self._run_action(job_id, path, fn, doc["args"][0] if doc["args"] else {})
            else:
                # Mutations, and the failures of missing functions and queries,
                # are recorded by the batch path.
                await self._run_batch([job_id])
        except asyncio.CancelledError:
            raise
        except Exception:  # the dispatcher must survive anything a job does
            logger.exception("scheduled job %s crashed the executor", job_id)

    async def _run_batch(self, job_ids: list[str]) -> None:
        """Run scheduled mutations in one transaction, each exactly once.

        Jobs run one after another; each one's writes and its ``success``
        state, or its ``failed`` state alone (writes rolled back to a
        savepoint), become part of the transaction, which commits them all at
        once. A conflict re-queues a multi-job batch as single jobs, which
        then retry with backoff until they commit.
        """
        conflicts = 0
        errors = 0
        while True:
            try:
                outcomes = await self._batch_attempt(job_ids)
            except ConflictError:
                if len(job_ids) > 1:
                    self._requeue_solo(job_ids)
                    return
                conflicts += 1
                await self._backoff(full_jitter(conflicts, 100, 60_000), len(job_ids))
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Store failures are logged once per streak by the store's
                # health; anything else (a bug of ours) once per batch. The
                # jobs are never abandoned: they stay pending and retry.
                errors += 1
                if errors == 1 and not isinstance(exc, StoreUnavailableError):
                    logger.exception("scheduled mutations %s failed to run; retrying", job_ids)
                await self._store_backoff(errors, len(job_ids))
                continue
            break
        runtime = self._runtime
        if runtime.listeners:
            ended = runtime.clock.now()  # they committed together
            for job_id, path, outcome, error, started, logs in outcomes:
                self._emit(job_id, path, "mutation", outcome, started, ended, error, logs)

    def _emit(
        self,
        job_id: str,
        path: str,
        kind: str,
        outcome: str,
        started: float,
        ended: float,
        error: str | None,
        logs: list[str] | None,
    ) -> None:
        """Tell the runtime's listeners (the dev server's log) how a job ended."""
        event: dict[str, Any] = {
            "type": "job",
            "job": job_id,
            "path": path,
            "kind": kind,
            "outcome": outcome,
            "duration_ms": ended - started,
        }
        if error is not None:
            event["error"] = error
        if logs:
            event["logs"] = logs
        cron = self.cron_of(job_id)
        if cron is not None:
            event["cron"] = cron
        self._runtime.emit(event)

    def _requeue_solo(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._solo.add(job_id)
            del self._running[job_id]
            self._ready.add(float("-inf"), job_id)

    async def _batch_attempt(self, job_ids: list[str]) -> list[_Outcome]:
        runtime = self._runtime
        now = runtime.clock.now
        # Speculative: jobs may start before the commit that scheduled them is
        # durable (see notify_accepted); this transaction commits after it.
        txn = runtime.transaction(writable=True, speculative=True)
        all_writes = ScheduledWrites()
        outcomes: list[_Outcome] = []
        db = DatabaseWriter(txn)  # stateless beyond the transaction: one serves every job
        calls = txn.calls  # the ctx calls of the job running, checked after each
        pending = JobState.PENDING.value
        capture_logs = runtime.capture_logs
        try:
            await txn.prefetch(job_ids)
            for job_id in job_ids:
                doc = txn.get_prefetched(job_id)
                if doc is None or doc["state"]["kind"] != pending:
                    continue  # cancelled, or run elsewhere
                started = now()
                path = doc["name"]
                found = self._function(path)
                error: str | None = None
                logs: list[str] | None = None
                if found is None:
                    error = f"Function {path!r} no longer exists in the app, so this job cannot run"
                else:
                    path, fn = found
                    if fn.kind is not FunctionKind.MUTATION:
                        error = f"{path!r} is not a mutation"
                if error is None:
                    mark = txn.savepoint()
                    ctx = _JobCtx(db, runtime, txn, job_id, started)
                    try:
                        with capture() if capture_logs else _NO_CAPTURE as lines:
                            try:
                                args = fn.args.validate(doc["args"][0] if doc["args"] else {}, path)
                                result = await fn.handler(ctx, **args)
                            finally:
                                logs = None if lines is None else lines.finish()
                        if calls:
                            calls.check(path, IN_MUTATION)
                        runtime.check_result(path, fn, result)
                    except Exception as exc:
                        txn.rollback_to(mark)
                        if calls:  # what it never awaited, before it raised
                            calls.close_unawaited()
                        error = error_text(exc)
                    else:
                        txn.put(SCHEDULED_FUNCTIONS, doc, finished(doc, JobState.SUCCESS, now()))
                        writes = ctx.scheduled
                        if writes is not None:
                            all_writes.jobs.extend(writes.jobs)
                            all_writes.canceled.extend(writes.canceled)
                        outcomes.append((job_id, path, "success", None, started, logs))
                        continue
                txn.put(SCHEDULED_FUNCTIONS, doc, finished(doc, JobState.FAILED, now(), error))
                outcomes.append((job_id, path, "failed", error, started, logs))
            await txn.commit(functools.partial(self.notify_accepted, all_writes))
        finally:
            txn.release()
        if all_writes.jobs or all_writes.canceled:
            self.notify(all_writes)
        return outcomes

    async def _run_action(
        self, job_id: str, path: str, fn: ConvexFunction, args: dict[str, Any]
    ) -> None:
        runtime = self._runtime
        started = runtime.clock.now()
        claimed = await self._finish(
            job_id, (JobState.PENDING,), JobState.IN_PROGRESS, None, complete=False
        )
        if not claimed:
            return
        error: str | None = None
        with capture() if runtime.capture_logs else _NO_CAPTURE as lines:
            try:
                await runtime.run_action(path, fn, args, None, job_id=job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = error_text(exc)
        state = JobState.SUCCESS if error is None else JobState.FAILED
        await self._finish(job_id, (JobState.IN_PROGRESS,), state, error)
        logs = None if lines is None else lines.finish()
        self._emit(job_id, path, "action", state.value, started, runtime.clock.now(), error, logs)

    async def _finish(
        self,
        job_id: str,
        expected: tuple[JobState, ...],
        state: JobState,
        error: str | None,
        *,
        complete: bool = True,
    ) -> bool:
        """Move a job from one of ``expected`` to ``state``; False if it was elsewhere."""
        runtime = self._runtime

        async def body(txn: Transaction) -> bool:
            doc = await txn.get(job_id)
            if doc is None or doc["state"]["kind"] not in expected:
                return False
            if complete:
                updated = finished(doc, state, runtime.clock.now(), error)
            else:
                updated = dict(doc)
                updated["state"] = {"kind": state.value}
            txn.put(SCHEDULED_FUNCTIONS, doc, updated)
            return True

        result: bool = await runtime.system_mutation(body, wait=self._store_wait)
        return result

    async def _backoff(self, delay_ms: float, jobs: int = 1) -> None:
        clock = self._runtime.clock
        self._backing_off += jobs
        try:
            await clock.sleep_until(clock.now() + delay_ms)
        finally:
            self._backing_off -= jobs

    async def _store_wait(self, delay_ms: float, jobs: int = 1) -> None:
        """A job's pause before it retries failed store work: ``delay_ms``, or
        until the store's writes work again."""
        self._backing_off += jobs
        try:
            await self._runtime.wait_for_store(delay_ms)
        finally:
            self._backing_off -= jobs

    async def _store_backoff(self, failures: int, jobs: int = 1) -> None:
        await self._store_wait(failure_delay_ms(failures), jobs)

    # -- start-up and retention ----------------------------------------------------------

    async def _fail_interrupted_actions(self) -> None:
        runtime = self._runtime
        while True:

            async def body(txn: Transaction) -> int:
                rows = await txn.scan(BY_STATE, state_range(JobState.IN_PROGRESS), "asc", 100)
                now = runtime.clock.now()
                for _, doc in rows:
                    txn.put(
                        SCHEDULED_FUNCTIONS,
                        doc,
                        finished(doc, JobState.FAILED, now, TRANSIENT_ACTION_ERROR),
                    )
                return len(rows)

            if await runtime.system_mutation(body) < 100:
                return

    async def _retention(self, now: float) -> None:
        runtime = self._runtime
        cutoff = now - runtime.retention_ms
        while True:

            async def body(txn: Transaction) -> int:
                rows = await txn.scan(
                    BY_COMPLETED, completed_before(cutoff), "asc", RETENTION_BATCH
                )
                for _, doc in rows:
                    txn.put(SCHEDULED_FUNCTIONS, doc, None)
                return len(rows)

            deleted = await runtime.system_mutation(body, wait=runtime.wait_for_store)
            if deleted < RETENTION_BATCH:
                break
            await asyncio.sleep(0)  # let dispatch run between batches
        try:
            await self._plan_retention(now)
        except StoreUnavailableError:
            self._next_retention = now + self.window_ms  # look again later
        self._wake.set()

    async def _plan_retention(self, now: float) -> None:
        """Sleep until the oldest finished job expires; later ones finish later."""
        runtime = self._runtime
        txn = runtime.transaction(writable=False)
        try:
            oldest = await txn.scan(BY_COMPLETED, completed_before(float("inf")), "asc", 1)
        finally:
            txn.release()
        since = oldest[0][1]["completedTime"] if oldest else now
        self._next_retention = since + runtime.retention_ms
