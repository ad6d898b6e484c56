"""The cron runner: turns ``crons.py`` into scheduled jobs, one run at a time.

State lives in the ``_cron_jobs`` system table, one document per job::

    {name, spec, function, args, nextRun, currentRun: job id | null,
     lastRuns: [{scheduledTime, status: "success" | "failed" | "skipped",
                 duration?, error?, skipped?}]}

When a job is due the runner schedules its function as an ordinary job in
``_scheduled_functions`` (so mutations run exactly once and actions at most
once) and records it as ``currentRun``. The next run is only planned once
that run has finished: at the first scheduled time at or after *now*. Runs
missed meanwhile (a long run, downtime) are skipped, not burst, and the skip
is recorded in ``lastRuns`` with its count.

With several processes on one store (:attr:`Store.shared
<convexpy.store.base.Store.shared>`), each runs this loop: starting a run
is a transaction that finds ``currentRun`` empty and fills it, and settling
one a transaction that finds ``currentRun`` still the run, so each run is
planned and settled by exactly one process, at the ``nextRun`` stored (a
process whose memory is behind schedules the run that is due, never another).
A process learns what the others did each time it looks: it looks at its
runs in flight every lease (the run may be another process's, or be taken
over from a dead one by its dispatcher), and at each job when it falls due.

On start and on reload, jobs are matched to the documents by name: new ones
are created, removed ones deleted, changed ones recomputed and unchanged ones
keep their next run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..clock import sleep_until_or_woken
from ..db import Transaction
from ..errors import CronSpecError, FunctionNotFoundError, InvalidValueError
from ..functions import FunctionKind
from ..scheduler.api import schedule_in
from ..store.base import IndexDef, KeyRange
from ..store.health import pause_for_store, run_forever
from ..store.jobs import SCHEDULED_FUNCTIONS, JobState
from ..values import check_value
from .compile import Schedule, compile_schedule
from .jobs import CronJobs

if TYPE_CHECKING:
    from ..scheduler.host import Host

__all__ = ["CRON_INDEXES", "CRON_JOBS", "HISTORY_LENGTH", "CronRunner", "plan_next"]

logger = logging.getLogger("convexpy.cron")

CRON_JOBS = "_cron_jobs"
BY_NAME = IndexDef(CRON_JOBS, "by_name", ("name",))
CRON_INDEXES = (BY_NAME,)
HISTORY_LENGTH = 10
"""How many past runs each job keeps (Convex keeps 5)."""

_ALL = KeyRange(BY_NAME.key, b"", None)


class Planned:
    """What the runner keeps in memory for one job."""

    __slots__ = ("doc_id", "name", "next_run", "running", "schedule")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc_id: str = doc["_id"]
        self.name: str = doc["name"]
        self.next_run: float = doc["nextRun"]
        self.running: str | None = doc["currentRun"]
        self.schedule: Schedule = compile_schedule(doc["spec"], job=doc["name"])


class CronRunner:
    """Runs one runtime's cron jobs; see the module docstring."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._planned: dict[str, Planned] = {}
        self._by_job: dict[str, str] = {}
        """Cron runs in flight: job id -> cron name (one dict throughout)."""
        self.cron_of: Callable[[str], str | None] = self._by_job.get
        """The name of the cron job that a job is a run of, if it is one in flight."""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._finished: set[str] = set()
        self.sleeping = False
        self._backing_off = False
        self._shared = host.store.shared

    # -- lifecycle -------------------------------------------------------------

    async def start(self, crons: CronJobs | None) -> None:
        await self.sync(crons)
        self._task = asyncio.create_task(self._loop(), name="convexpy-crons")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def quiet(self) -> bool:
        return (
            self._task is None or self._backing_off or (self.sleeping and not self._wake.is_set())
        )

    def current_runs(self) -> set[str]:
        """Ids of the jobs that are cron runs in flight."""
        return set(self._by_job)

    # -- definitions -------------------------------------------------------------

    def _definitions(self, crons: CronJobs | None) -> dict[str, dict[str, Any]]:
        """The wanted documents (without run state), validated against the app."""
        wanted: dict[str, dict[str, Any]] = {}
        for job in crons or ():
            try:
                path, fn = self._host.resolve(job.function)
            except FunctionNotFoundError as exc:
                raise CronSpecError(
                    f'cron job "{job.name}": {exc}', job=job.name, field="function"
                ) from None
            if fn.kind is FunctionKind.QUERY:
                raise CronSpecError(
                    f'cron job "{job.name}": {path} is a query; a cron job must run a '
                    "mutation or an action",
                    job=job.name,
                    field="function",
                )
            try:
                check_value(job.args, "args")
            except InvalidValueError as exc:
                raise CronSpecError(
                    f'cron job "{job.name}": args are not Convex values: {exc}',
                    job=job.name,
                    field="args",
                ) from None
            wanted[job.name] = {
                "name": job.name,
                "spec": dict(job.schedule.spec),
                "function": path,
                "args": job.args,
            }
        return wanted

    def validate(self, crons: CronJobs | None) -> None:
        """Raise :class:`CronSpecError` if the app's cron jobs cannot run."""
        self._definitions(crons)

    async def sync(self, crons: CronJobs | None) -> None:
        """Match the stored jobs to ``crons`` by name (see the module docstring)."""
        wanted = self._definitions(crons)
        host = self._host

        async def body(txn: Transaction) -> list[dict[str, Any]]:
            now = host.clock.now()
            existing = {
                doc["name"]: doc for _, doc in await txn.scan(BY_NAME, _ALL, "asc", 1 << 30)
            }
            result = []
            for name, doc in existing.items():
                if name not in wanted:
                    txn.put(CRON_JOBS, doc, None)
            for name, fields in wanted.items():
                current = existing.get(name)
                if current is None:
                    schedule = compile_schedule(fields["spec"], job=name)
                    first = now if schedule.period_ms is not None else schedule.next_after(now - 1)
                    new_fields = {
                        **fields,
                        "nextRun": float(first),
                        "currentRun": None,
                        "lastRuns": [],
                    }
                    created = await txn.get(await txn.insert(CRON_JOBS, new_fields))
                    assert created is not None
                    result.append(created)
                    continue
                if all(current.get(key) == value for key, value in fields.items()):
                    result.append(current)
                    continue
                updated = {**current, **fields}
                if current.get("spec") != fields["spec"]:
                    schedule = compile_schedule(fields["spec"], job=name)
                    if schedule.period_ms is not None:
                        updated["nextRun"] = float(now)
                    else:
                        updated["nextRun"] = float(schedule.next_after(now - 1))
                txn.put(CRON_JOBS, current, updated)
                result.append(updated)
            return result

        docs = await host.system_mutation(body)
        self._planned = {doc["name"]: Planned(doc) for doc in docs}
        self._by_job.clear()
        self._by_job.update((p.running, p.name) for p in self._planned.values() if p.running)
        self._finished.update(self._by_job)  # check them: they may have ended while we were down
        self._wake.set()

    # -- events ------------------------------------------------------------------

    def jobs_finished(self, job_ids: list[str]) -> None:
        """Called by the dispatcher whenever a task running jobs ends."""
        by_job = self._by_job
        if by_job and not by_job.keys().isdisjoint(job_ids):
            self._finished.update(job_id for job_id in job_ids if job_id in by_job)
            self._wake.set()

    # -- the loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        """Run crons until stopped; store work that fails is retried (see
        :meth:`_store_wait`), and so is a round that fails for another reason."""
        await run_forever(self._round, self._store_wait, "the cron runner")

    async def _round(self) -> None:
        """Record finished runs, start due ones, then sleep until the next is due."""
        self._wake.clear()
        if self._shared:  # runs other processes may have settled or taken over
            self._finished.update(self._by_job)
        for job_id in list(self._finished):
            await self._settle_run(job_id)
            self._finished.discard(job_id)
        now = self._host.clock.now()
        for planned in list(self._planned.values()):
            if planned.running is None and planned.next_run <= now:
                await self._start_run(planned)
        deadline = min(
            (p.next_run for p in self._planned.values() if p.running is None),
            default=float("inf"),
        )
        if self._shared and self._by_job:
            deadline = min(deadline, now + self._host.store.lease * 1000)
        if not self._finished:
            await self._sleep(deadline)

    async def _store_wait(self, delay_ms: float) -> None:
        """Pause before retrying failed store work: ``delay_ms`` on the clock,
        or until the store's writes work again (the harness sees it at rest)."""
        self._backing_off = True
        try:
            await pause_for_store(self._host.clock, self._host.store.health, delay_ms)
        finally:
            self._backing_off = False

    async def _sleep(self, deadline: float) -> None:
        if self._host.clock.now() >= deadline or self._wake.is_set():
            await asyncio.sleep(0)  # work to do: not asleep, as far as the harness knows
            return
        self.sleeping = True
        await sleep_until_or_woken(self._host.clock, deadline, self._wake, self._woken)

    def _woken(self) -> None:
        self.sleeping = False

    async def _start_run(self, planned: Planned) -> None:
        host = self._host

        async def body(txn: Transaction) -> dict[str, Any] | None:
            doc = await txn.get(planned.doc_id)
            if doc is None or doc["currentRun"] is not None:
                return doc
            await txn.prepare(SCHEDULED_FUNCTIONS)
            job_id = schedule_in(txn, doc["function"], doc["args"], doc["nextRun"])
            updated = {**doc, "currentRun": job_id}
            txn.put(CRON_JOBS, doc, updated)
            return updated

        doc = await host.system_mutation(body, wait=self._store_wait)
        if doc is None:
            self._planned.pop(planned.name, None)
            return
        planned.running = doc["currentRun"]
        planned.next_run = doc["nextRun"]
        if planned.running is not None:
            self._by_job[planned.running] = planned.name

    async def _settle_run(self, job_id: str) -> None:
        """Record a finished run and plan the next one."""
        host = self._host
        name = self._by_job.get(job_id)
        planned = self._planned.get(name) if name is not None else None

        async def body(
            txn: Transaction,
        ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
            """The job, the cron job's document after, and whether this settled it."""
            job = await txn.get(job_id)
            if job is None or not JobState(job["state"]["kind"]).finished:
                return None, None, False
            if planned is None:
                return job, None, False
            doc = await txn.get(planned.doc_id)
            if doc is None or doc["currentRun"] != job_id:
                return job, doc, False  # settled by another process: learn its plan
            now = host.clock.now()
            scheduled = job["scheduledTime"]
            state = job["state"]["kind"]
            run: dict[str, Any] = {
                "scheduledTime": scheduled,
                "status": "success" if state == JobState.SUCCESS else "failed",
                "duration": max(0.0, job.get("completedTime", now) - scheduled),
            }
            if state != JobState.SUCCESS:
                run["error"] = job["state"].get("error", state)
            history = [*doc["lastRuns"], run]
            next_run, skipped = plan_next(planned.schedule, scheduled, now)
            if skipped:
                history.append(
                    {"scheduledTime": scheduled, "status": "skipped", "skipped": skipped}
                )
                logger.warning(
                    "Skipping %d run(s) of job %s because multiple scheduled runs are in the past",
                    skipped,
                    planned.name,
                )
            updated = {
                **doc,
                "currentRun": None,
                "nextRun": float(next_run),
                "lastRuns": history[-HISTORY_LENGTH:],
            }
            txn.put(CRON_JOBS, doc, updated)
            return job, updated, True

        job, updated, settled = await host.system_mutation(body, wait=self._store_wait)
        if job is None:
            # Not finished after all (e.g. reported at start-up): wait for it.
            return
        self._by_job.pop(job_id, None)
        if planned is None or updated is None:
            return
        planned.running = updated["currentRun"]
        planned.next_run = updated["nextRun"]
        if planned.running is not None:
            self._by_job[planned.running] = planned.name
        if not settled:
            return
        last = updated["lastRuns"][-1]
        event: dict[str, Any] = {
            "type": "cron",
            "name": planned.name,
            "outcome": last["status"],
            "scheduledTime": job["scheduledTime"],
        }
        if last["status"] == "skipped":
            event["skipped"] = last["skipped"]
        host.emit(event)


def plan_next(schedule: Schedule, scheduled: float, now: float) -> tuple[int, int]:
    """The first fire time >= ``now`` after a run scheduled at ``scheduled``,
    and how many fire times in between were missed."""
    period = schedule.period_ms
    if period is not None:
        # Interval jobs stay on the grid of their first run.
        steps = max(1, -(-int(now - scheduled) // period))
        return int(scheduled) + steps * period, steps - 1
    skipped = 0
    candidate = schedule.next_after(scheduled)
    while candidate < now:
        skipped += 1
        if skipped > 100_000:
            # Very long downtime on a fine schedule: count no further.
            return schedule.next_after(now - 1), skipped
        candidate = schedule.next_after(candidate)
    return candidate, skipped
