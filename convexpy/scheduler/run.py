"""Running due jobs with Convex's guarantees.

* A scheduled **mutation** runs exactly once: its handler's writes and the
  job's ``success`` commit in one transaction, which also read the job's
  pending state, so a concurrent cancel (or another process) makes it
  conflict and look again. Mutations due together run in batches of up to
  :data:`MAX_BATCH`, one transaction with a savepoint per job: a job that
  raises is rolled back to its savepoint and recorded ``failed``, the others
  commit. A batch that conflicts is split: its jobs run alone from then on.
  Conflicts and store failures are retried with backoff until the
  transaction commits.
* A scheduled **action** runs at most once: the store marks it
  ``inProgress`` before the handler runs, and it is never retried; its end
  is recorded unless it was cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import StoreUnavailableError, error_text
from ..functions import ConvexFunction, FunctionKind
from ..logcapture import capture
from ..store.base import ConflictError, Document
from ..store.health import failure_delay_ms
from ..store.jobs import SCHEDULED_FUNCTIONS, JobState, ended
from ..unawaited import IN_MUTATION

if TYPE_CHECKING:
    from .host import Host

__all__ = ["MAX_BATCH", "JobRunner"]

logger = logging.getLogger("convexpy.scheduler")

MAX_BATCH = 128
"""Most scheduled mutations run in one transaction."""

_NO_CAPTURE: contextlib.nullcontext[None] = contextlib.nullcontext()
_PENDING = JobState.PENDING.value


class Outcome(msgspec.Struct, gc=False):
    """How one scheduled job ended (a struct: one is made per job, in C)."""

    job_id: str
    path: str
    state: JobState
    error: str | None
    started: float
    logs: list[str] | None
    """What its handler printed or logged (None: not captured)."""
    scheduled: float
    """The job's ``scheduledTime`` (its lateness is ``started - scheduled``)."""


def conflict_delay_ms(attempt: int) -> float:
    """Full-jitter backoff before a conflicting job's next try: 100 ms doubling, up to 60 s."""
    return random.uniform(0, min(60_000.0, 100.0 * 2 ** min(attempt, 40)))


class JobRunner:
    """Runs jobs for the dispatcher (see the module docstring).

    ``pause(ms, jobs, store_failure)`` waits between tries of ``jobs`` jobs
    (the dispatcher counts them as at rest); with ``store_failure`` it ends
    early when the store works again. ``run_alone(job_ids)`` gives jobs of a
    conflicting batch back to the dispatcher, to run one by one.
    ``cron_of(job_id)`` names the cron job a job is a run of.
    """

    def __init__(
        self,
        host: Host,
        pause: Callable[[float, int, bool], Awaitable[None]],
        run_alone: Callable[[list[str]], None],
    ) -> None:
        self._host = host
        self._pause = pause
        self._run_alone = run_alone
        self.cron_of: Callable[[str], str | None] = lambda job_id: None

    # -- one job whose kind is not known yet -----------------------------------------

    async def run_one(self, job_id: str) -> None:
        """Run one job: read it to learn its kind (an action, or anything that
        cannot be batched), then run it as an action or as a batch of one."""
        host = self._host
        job = await self._store_retrying(functools.partial(self._read_job, job_id))
        if job is None or job["state"]["kind"] != _PENDING:
            return
        found = host.job_functions[job["name"]]
        if found is not None and found[1].kind is FunctionKind.ACTION:
            path, fn = found
            await self.run_action(job_id, path, fn, job["args"][0] if job["args"] else {})
        else:
            # Mutations, and the failures of missing functions and queries,
            # are recorded by the batch path.
            await self.run_batch([job_id])

    async def _read_job(self, job_id: str) -> Document | None:
        txn = self._host.transaction(writable=False)
        try:
            return await txn.get(job_id)
        finally:
            txn.release()

    # -- scheduled mutations ---------------------------------------------------------

    async def run_batch(self, job_ids: list[str]) -> None:
        """Run scheduled mutations in one transaction, each exactly once (see
        the module docstring); retried until it commits."""
        conflicts = 0
        failures = 0
        while True:
            try:
                outcomes = await self._batch_attempt(job_ids)
            except ConflictError:
                if len(job_ids) > 1:
                    self._run_alone(job_ids)
                    return
                conflicts += 1
                await self._pause(conflict_delay_ms(conflicts), 1, False)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Store failures are logged once per streak by the store's
                # health; anything else (a bug of ours) once per batch. The
                # jobs are never abandoned: they stay pending and retry.
                failures += 1
                if failures == 1 and not isinstance(exc, StoreUnavailableError):
                    logger.exception("scheduled mutations %s failed to run; retrying", job_ids)
                await self._pause(failure_delay_ms(failures), len(job_ids), True)
                continue
            break
        host = self._host
        if host.listening:
            self._emit(outcomes, "mutation", host.clock.now())  # they committed together

    async def _batch_attempt(self, job_ids: list[str]) -> list[Outcome]:
        host = self._host
        now = host.clock.now
        # Speculative: jobs may start before the commit that scheduled them is
        # durable (see Dispatcher.jobs_accepted); this transaction commits after it.
        txn = host.transaction(writable=True, speculative=True)
        outcomes: list[Outcome] = []
        calls = txn.calls  # the ctx calls of the job running, checked after each
        capture_logs = host.capture_logs
        mutation, success = FunctionKind.MUTATION, JobState.SUCCESS
        job_functions = host.job_functions  # one app for the whole batch
        try:
            await txn.prefetch(job_ids)
            for job_id in job_ids:
                job = txn.get_prefetched(job_id)
                if job is None or job["state"]["kind"] != _PENDING:
                    continue  # cancelled, or run elsewhere
                started = now()
                path = job["name"]
                found = job_functions[path]
                error: str | None = None
                logs: list[str] | None = None
                if found is None:
                    error = f"Function {path!r} no longer exists in the app, so this job cannot run"
                else:
                    path, fn = found
                    if fn.kind is not mutation:
                        error = f"{path!r} is not a mutation"
                if error is None:
                    mark = txn.savepoint()
                    ctx = host.job_context(txn, job_id, started)
                    try:
                        args = fn.args.validate(job["args"][0] if job["args"] else {}, path)
                        if capture_logs:
                            with capture() as lines:
                                try:
                                    result = await fn.handler(ctx, **args)
                                finally:
                                    logs = lines.finish()
                        else:
                            result = await fn.handler(ctx, **args)
                        if calls:
                            calls.check(path, IN_MUTATION)
                        host.check_result(path, fn, result)
                    except Exception as exc:
                        if calls:  # what it never awaited, before it raised
                            calls.close_unawaited()
                        txn.rollback_to(mark)
                        error = error_text(exc)
                    else:
                        txn.put(SCHEDULED_FUNCTIONS, job, ended(job, success, now()))
                        outcomes.append(
                            Outcome(
                                job_id,
                                path,
                                success,
                                None,
                                started,
                                logs,
                                job["scheduledTime"],
                            )
                        )
                        continue
                txn.put(SCHEDULED_FUNCTIONS, job, ended(job, JobState.FAILED, now(), error))
                outcomes.append(
                    Outcome(
                        job_id, path, JobState.FAILED, error, started, logs, job["scheduledTime"]
                    )
                )
            await txn.commit()
        finally:
            txn.release()
        return outcomes

    # -- scheduled actions -----------------------------------------------------------

    async def run_action(
        self, job_id: str, path: str, fn: ConvexFunction, args: dict[str, Any]
    ) -> None:
        """Run a scheduled action at most once (see the module docstring)."""
        host = self._host
        started = host.clock.now()
        job = await self._store_retrying(functools.partial(host.store.start_action, job_id))
        if job is None:
            return  # cancelled, or started elsewhere
        error: str | None = None
        with capture() if host.capture_logs else _NO_CAPTURE as lines:
            try:
                await host.run_action_job(path, fn, args, job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = error_text(exc)
        state = JobState.SUCCESS if error is None else JobState.FAILED
        finish = functools.partial(host.store.finish_action, job_id, state, host.clock.now(), error)
        await self._store_retrying(finish)
        logs = None if lines is None else lines.finish()
        if host.listening:
            self._emit(
                [Outcome(job_id, path, state, error, started, logs, job["scheduledTime"])],
                "action",
                host.clock.now(),
            )

    async def _store_retrying(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """``operation()``, tried again after a pause for as long as the store fails."""
        failures = 0
        while True:
            try:
                return await operation()
            except StoreUnavailableError:
                failures += 1
                await self._pause(failure_delay_ms(failures), 1, True)

    # -- events ------------------------------------------------------------------------

    def _emit(self, outcomes: list[Outcome], kind: str, ended_at: float) -> None:
        """Tell the host's listeners (the dev server's log) how jobs ended."""
        cron_of = self.cron_of
        events: list[dict[str, Any]] = []
        for outcome in outcomes:
            started = outcome.started
            late = started - outcome.scheduled
            event: dict[str, Any] = {
                "type": "job",
                "job": outcome.job_id,
                "path": outcome.path,
                "kind": kind,
                "outcome": outcome.state._value_,
                "duration_ms": ended_at - started,
                "lateness_ms": late if late > 0.0 else 0.0,
            }
            if outcome.error is not None:
                event["error"] = outcome.error
            if outcome.logs:
                event["logs"] = outcome.logs
            cron = cron_of(outcome.job_id)
            if cron is not None:
                event["cron"] = cron
            events.append(event)
        self._host.emit(*events)
