"""``ctx.scheduler``: ``run_after``, ``run_at`` and ``cancel``.

From a mutation, scheduling and cancelling are writes of the mutation's own
transaction: they happen only if it commits. From an action, each call is a
small transaction of its own, committed before the call returns.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..db import Transaction
from ..errors import FunctionNotFoundError, InvalidValueError, SchedulerError
from ..functions import FunctionKind
from ..ids import is_id_of
from ..store.jobs import SCHEDULED_FUNCTIONS, JobState, ended, new_job
from ..unawaited import CallTracker, track
from ..values import copy_with_size, value_size

if TYPE_CHECKING:
    from .host import Host

__all__ = ["ActionScheduler", "MutationScheduler", "Scheduler", "cancel_in", "schedule_in"]

MAX_JOBS_PER_TRANSACTION = 1000
MAX_ARGS_BYTES_PER_TRANSACTION = 16 * 1024 * 1024
FIVE_YEARS_MS = 5 * 365.25 * 24 * 3600 * 1000
_FINITE_LIMIT = 2.0**1000
"""Delays below this pass :func:`_delay` at once (larger ones take the full checks)."""


def _delay(delay_ms: object) -> float:
    """``run_after``'s delay in milliseconds, checked."""
    kind = type(delay_ms)
    # The usual case first (not bool: type() is exact; NaN fails the comparison).
    if (kind is float or kind is int) and 0 <= delay_ms < _FINITE_LIMIT:  # type: ignore[operator]
        return float(delay_ms)  # type: ignore[arg-type]
    if isinstance(delay_ms, timedelta):
        delay = delay_ms.total_seconds() * 1000.0
    elif isinstance(delay_ms, int | float) and not isinstance(delay_ms, bool):
        try:
            delay = float(delay_ms)
        except OverflowError:
            delay = math.inf  # refused below, as a non-finite number
    else:
        raise SchedulerError(
            f"run_after: `delay_ms` must be a number of milliseconds or a timedelta, "
            f"got {type(delay_ms).__name__}"
        )
    if not math.isfinite(delay):
        raise SchedulerError(f"run_after: `delay_ms` must be a finite number, got {delay_ms!r}")
    if delay < 0:
        raise SchedulerError(f"run_after: `delay_ms` must be non-negative, got {delay_ms!r}")
    return delay


class Scheduler(ABC):
    """Shared argument checks of ``run_after`` / ``run_at`` / ``cancel``.

    Calls are recorded in ``calls``, to find those never awaited.
    """

    _label = "ctx.scheduler"

    def __init__(self, host: Host, calls: CallTracker) -> None:
        self._host = host
        self._calls = calls
        self._last_function: tuple[object, str] | None = None

    def run_after(
        self, delay_ms: float | timedelta, function: object, args: dict[str, Any] | None = None
    ) -> Coroutine[Any, Any, str]:
        """Schedule ``function(args)`` to run ``delay_ms`` milliseconds from now;
        returns the job id (await it)."""
        return track(self, "run_after", self._run_after(delay_ms, function, args))

    def run_at(
        self, timestamp: float | datetime, function: object, args: dict[str, Any] | None = None
    ) -> Coroutine[Any, Any, str]:
        """Schedule ``function(args)`` at ``timestamp`` (epoch ms or an aware
        datetime); returns the job id (await it)."""
        return track(self, "run_at", self._run_at(timestamp, function, args))

    def runAfter(
        self, delay_ms: float | timedelta, function: object, args: dict[str, Any] | None = None
    ) -> Coroutine[Any, Any, str]:
        """Convex's spelling of :meth:`run_after`."""
        return track(self, "runAfter", self._run_after(delay_ms, function, args))

    def runAt(
        self, timestamp: float | datetime, function: object, args: dict[str, Any] | None = None
    ) -> Coroutine[Any, Any, str]:
        """Convex's spelling of :meth:`run_at`."""
        return track(self, "runAt", self._run_at(timestamp, function, args))

    def cancel(self, job_id: str) -> Coroutine[Any, Any, None]:
        """Cancel a job: pending jobs never run; running actions end ``canceled``
        (await it)."""
        return track(self, "cancel", self._cancel(job_id))

    async def _run_after(
        self, delay_ms: float | timedelta, function: object, args: dict[str, Any] | None
    ) -> str:
        delay = _delay(delay_ms)
        now = self._host.clock.now()
        return await self._schedule(now + delay, function, args, "run_after", now)

    async def _run_at(
        self, timestamp: float | datetime, function: object, args: dict[str, Any] | None
    ) -> str:
        if isinstance(timestamp, datetime):
            if timestamp.tzinfo is None or timestamp.utcoffset() is None:
                raise SchedulerError(
                    "run_at: the datetime is naive; give it a timezone, e.g. "
                    "datetime(..., tzinfo=timezone.utc)"
                )
            when = timestamp.timestamp() * 1000.0
        elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            when = float(timestamp)
            if not math.isfinite(when):
                raise SchedulerError(
                    f"run_at: `timestamp` must be a finite number, got {timestamp!r}"
                )
        else:
            raise SchedulerError(
                "run_at: `timestamp` must be epoch milliseconds or a timezone-aware datetime, "
                f"got {type(timestamp).__name__}"
            )
        return await self._schedule(when, function, args, "run_at", self._host.clock.now())

    def _target(
        self, function: object, args: object, verb: str, when: float, now: float
    ) -> tuple[str, dict[str, Any], int]:
        """The function's path, a private copy of the checked args, and their
        size; refuses a time ``when`` more than 5 years from ``now``."""
        last = self._last_function
        # A handler often schedules one function many times: it is resolved once.
        if last is not None and last[0] is function:
            path = last[1]
        else:
            path = self._path_of(function, verb)
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise SchedulerError(f"{verb}: args must be a dict, got {type(args).__name__}")
        try:
            checked, size = copy_with_size(args)  # checks the value on the way
        except InvalidValueError as exc:
            raise SchedulerError(f"{verb}: args of {path} are not Convex values: {exc}") from None
        if abs(when - now) > FIVE_YEARS_MS:
            raise SchedulerError(
                f"{verb}: the scheduled time is more than 5 years from now; "
                "Convex refuses to schedule that far ahead or behind"
            )
        return path, checked, size

    def _path_of(self, function: object, verb: str) -> str:
        """The path of the schedulable function ``function`` names (remembered
        as the last one resolved)."""
        try:
            path, fn = self._host.resolve(function)
        except FunctionNotFoundError as exc:
            path = getattr(exc, "path", "") or repr(function)
            raise SchedulerError(
                f"{verb}: Attempted to schedule function at nonexistent path: {path}"
            ) from None
        if fn.kind is FunctionKind.QUERY:
            raise SchedulerError(
                f"{verb}: {path} is a query; only mutations and actions can be scheduled"
            )
        self._last_function = (function, path)
        return path

    @abstractmethod
    async def _schedule(
        self, when: float, function: object, args: object, verb: str, now: float
    ) -> str:
        """Create the job (checked arguments) and return its id; ``now`` is the clock's time."""

    @abstractmethod
    async def _cancel(self, job_id: str) -> None:
        """:meth:`cancel`."""

    def _check_job_id(self, job_id: object) -> str:
        if not is_id_of(job_id, SCHEDULED_FUNCTIONS):
            raise SchedulerError(
                f"cancel: Invalid scheduled function ID {job_id!r}. The ID must be an ID on "
                f"the '{SCHEDULED_FUNCTIONS}' table."
            )
        assert isinstance(job_id, str)
        return job_id


def schedule_in(
    txn: Transaction,
    path: str,
    args: dict[str, Any],
    when: float,
    *,
    canceled_at: float | None = None,
    size: int | None = None,
    now: float | None = None,
) -> str:
    """Create a job in ``txn`` (see :func:`~convexpy.store.jobs.new_job`),
    enforcing Convex's per-transaction limits; the job's id.

    The table must be prepared in ``txn`` (``await txn.prepare(SCHEDULED_FUNCTIONS)``),
    so that this does not await. ``size`` is :func:`value_size` of ``args`` when
    the caller has it already; ``now``, the clock's time when the caller read it.
    """
    if txn.jobs_scheduled >= MAX_JOBS_PER_TRANSACTION:
        raise SchedulerError(
            f"Too many functions scheduled by this mutation (limit: {MAX_JOBS_PER_TRANSACTION})"
        )
    if size is None:
        size = value_size(args)
    if txn.job_args_bytes + size > MAX_ARGS_BYTES_PER_TRANSACTION:
        raise SchedulerError(
            "Too large total size of the arguments of scheduled functions from this mutation "
            f"(limit: {MAX_ARGS_BYTES_PER_TRANSACTION} bytes)"
        )
    job_id = txn.insert_prepared(
        SCHEDULED_FUNCTIONS, new_job(path, args, when, canceled_at=canceled_at), now
    )
    txn.jobs_scheduled += 1
    txn.job_args_bytes += size
    return job_id


async def cancel_in(txn: Transaction, job_id: str, *, now: float) -> None:
    """Cancel a job inside ``txn``; finished jobs are left alone."""
    if txn.table_names.of_id(job_id) is None:
        txn.table_names.add(SCHEDULED_FUNCTIONS)
    job = await txn.get(job_id)
    if job is None or JobState(job["state"]["kind"]).finished:
        return
    txn.put(SCHEDULED_FUNCTIONS, job, ended(job, JobState.CANCELED, now))


class MutationScheduler(Scheduler):
    """``ctx.scheduler`` in a mutation: jobs are part of the mutation's transaction.

    Calls are recorded in ``calls`` (default: the transaction's).
    """

    def __init__(
        self,
        host: Host,
        txn: Transaction,
        *,
        current_job: str | None = None,
        calls: CallTracker | None = None,
    ) -> None:
        super().__init__(host, txn.calls if calls is None else calls)
        self._txn = txn
        self._current_job = current_job
        """The id of the scheduled job this mutation is running as, if it is one."""

    async def _run_after(
        self, delay_ms: float | timedelta, function: object, args: dict[str, Any] | None
    ) -> str:
        # _schedule's work, without its coroutine (the usual case of scheduling).
        delay = _delay(delay_ms)
        now = self._host.clock.now()
        txn = self._txn
        if SCHEDULED_FUNCTIONS not in txn.prepared:
            await txn.prepare(SCHEDULED_FUNCTIONS)
        return self._add(now + delay, function, args, "run_after", now)

    async def _schedule(
        self, when: float, function: object, args: object, verb: str, now: float
    ) -> str:
        txn = self._txn
        if SCHEDULED_FUNCTIONS not in txn.prepared:
            await txn.prepare(SCHEDULED_FUNCTIONS)
        return self._add(when, function, args, verb, now)

    def _add(self, when: float, function: object, args: object, verb: str, now: float) -> str:
        path, checked, size = self._target(function, args, verb, when, now)
        return schedule_in(self._txn, path, checked, when, size=size, now=now)

    def nested(self, calls: CallTracker) -> MutationScheduler:
        """The scheduler of a nested mutation (``ctx.run_mutation``): the same
        transaction, its own record of calls."""
        return MutationScheduler(self._host, self._txn, current_job=self._current_job, calls=calls)

    async def _cancel(self, job_id: str) -> None:
        job_id = self._check_job_id(job_id)
        if self._current_job == job_id:
            raise SchedulerError("A mutation cannot cancel itself")
        await cancel_in(self._txn, job_id, now=self._host.clock.now())


class ActionScheduler(Scheduler):
    """``ctx.scheduler`` in an action: each call commits on its own.

    When the action itself runs as a scheduled job that has been cancelled,
    the jobs it schedules afterwards are created already ``canceled``.
    """

    def __init__(self, host: Host, calls: CallTracker, *, parent_job: str | None = None) -> None:
        super().__init__(host, calls)
        self._parent_job = parent_job

    async def _schedule(
        self, when: float, function: object, args: object, verb: str, now: float
    ) -> str:
        path, checked, size = self._target(function, args, verb, when, now)
        host = self._host

        async def body(txn: Transaction) -> str:
            canceled_at = None
            if self._parent_job is not None:
                parent = await txn.get(self._parent_job)
                if parent is not None and parent["state"]["kind"] == JobState.CANCELED:
                    canceled_at = host.clock.now()
            await txn.prepare(SCHEDULED_FUNCTIONS)
            return schedule_in(txn, path, checked, when, canceled_at=canceled_at, size=size)

        job_id: str = await host.system_mutation(body)
        return job_id

    async def _cancel(self, job_id: str) -> None:
        job_id = self._check_job_id(job_id)
        host = self._host

        async def body(txn: Transaction) -> None:
            await cancel_in(txn, job_id, now=host.clock.now())

        await host.system_mutation(body)
