"""The dispatcher: knows when jobs fall due, and starts them within the parallelism.

Jobs live in the store. The dispatcher keeps only the near future in memory:
every so often it loads the pending jobs due within :attr:`Dispatcher.window_ms`
into a :class:`~convexpy.scheduler.wheel.TimerWheel`, and the store tells it
of every commit that creates or cancels a job (it is the store's job
listener: :meth:`Dispatcher.jobs_accepted`, :meth:`Dispatcher.jobs_durable`).
Due jobs wait in a :class:`~convexpy.scheduler.ready.ReadyQueue` and start in
``scheduledTime`` order, at most ``parallelism`` tasks at once; the
:class:`~convexpy.scheduler.run.JobRunner` runs them. Finished jobs are
deleted after the retention (:class:`~convexpy.scheduler.retention.Retention`).

On a store shared by several processes (:attr:`Store.shared
<convexpy.store.base.Store.shared>`, PostgreSQL) every process hears of
every job (the store reports other processes' commits too), so they race
for due jobs: each batch or action is claimed first
(:meth:`~convexpy.store.base.Store.claim_jobs`): jobs found ended are
dropped, and jobs claimed elsewhere are looked at again one lease later
(taken over if their claimer died, or dropped once finished). Running
jobs' claims are renewed every third of a lease (a running action's claim
is its lease), and every lease the dispatcher fails the running actions
whose lease ran out (their process is gone). A store used by one process
skips all of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ..clock import sleep_until_or_woken
from ..functions import FunctionKind
from ..store.base import Claims
from ..store.health import pause_for_store, run_forever
from ..store.jobs import TRANSIENT_ACTION_ERROR, JobChanges
from .ready import ReadyQueue
from .retention import Retention
from .run import MAX_BATCH, JobRunner
from .wheel import TimerWheel

if TYPE_CHECKING:
    from .host import Host

__all__ = ["Dispatcher"]

logger = logging.getLogger("convexpy.scheduler")


class Dispatcher:
    """Starts a runtime's scheduled jobs when they fall due; see the module docstring.

    ``paused``, ``sleeping`` and :attr:`quiet` are how the test harness runs
    jobs only when it advances time, and knows when nothing more can happen.
    """

    window_ms = 60_000.0
    """How far ahead jobs are loaded into the wheel."""
    max_loaded = 100_000
    """Most jobs loaded at once: when more are due, the rest follow as these run."""

    def __init__(self, host: Host, *, parallelism: int, retention_ms: float) -> None:
        self._host = host
        self.parallelism = parallelism
        self._runner = JobRunner(host, self._pause, self._run_alone)
        self._retention = Retention(host.store, retention_ms, self._store_wait)
        self._wheel: TimerWheel[str] | None = None
        self._ready = ReadyQueue()
        self._waiting: dict[str, str] = {}
        """Job id -> function name of every job in the wheel or the ready queue
        (so that mutations are batched without reading them first)."""
        self._alone: set[str] = set()
        """Jobs whose batch conflicted: they run on their own from now on."""
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loaded_until = float("-inf")
        """Every pending job due before this is in the wheel, the ready queue or running."""
        self._next_load = float("-inf")
        """When to load the next window (inf: nothing is pending beyond it)."""
        self._window_full = False
        """The last load stopped at :attr:`max_loaded`: load more as the backlog drains."""
        self._loop_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._shared = host.store.shared
        self._sleep_deadline = float("inf")
        self._wake = asyncio.Event()
        self._stopping = False
        self._backing_off = 0
        """Running jobs waiting out a backoff on the clock (at rest, for the harness)."""
        self.on_jobs_done: Callable[[list[str]], None] | None = None
        """Called with the ids of the jobs whose task ended (the cron runner listens)."""
        self.started = 0
        """How many jobs were started (for the harness's runaway bound)."""
        self.paused = False
        """While True, due jobs wait instead of starting (the test harness's gate)."""
        self.sleeping = False
        """True while the loop waits on the clock (for the test harness)."""

    @property
    def cron_of(self) -> Callable[[str], str | None]:
        """Names the cron job a job is a run of, for job events."""
        return self._runner.cron_of

    @cron_of.setter
    def cron_of(self, value: Callable[[str], str | None]) -> None:
        self._runner.cron_of = value

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Fail the actions a previous run left ``inProgress``, load the first
        window, plan retention and start the loop (before the app serves)."""
        host = self._host
        store = host.store
        while await store.fail_interrupted_actions(host.clock.now(), TRANSIENT_ACTION_ERROR):
            pass
        now = host.clock.now()
        self._wheel = TimerWheel(now)
        store.watch_jobs(self)
        await self._load(now + self.window_ms)
        await self._retention.plan(now)
        self._loop_task = asyncio.create_task(self._loop(), name="convexpy-dispatcher")
        if self._shared:
            self._lease_task = asyncio.create_task(self._keep_leases(), name="convexpy-leases")

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
        if self._lease_task is not None:  # kept through the grace: jobs still run
            self._lease_task.cancel()
            housekeeping.append(self._lease_task)
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

    # -- the store's job events ------------------------------------------------------

    def jobs_accepted(self, changes: JobChanges) -> None:
        """A commit that creates jobs was accepted (it may not be durable yet):
        scheduled mutations due now start at once, on speculative snapshots
        (their own commits are ordered after it, and fail if it does). The
        rest waits for :meth:`jobs_durable`, which skips these."""
        if self._wheel is None or self._stopping or not changes.created:
            return
        now = self._host.clock.now()
        waiting, running, canceled = self._waiting, self._running, changes.canceled
        due: list[tuple[float, str]] = []
        later: list[tuple[str, float, str]] = []
        job_functions = self._host.job_functions
        mutation = FunctionKind.MUTATION
        for job in changes.created:
            job_id, when, name = job
            if when > now:
                later.append(job)
                continue
            found = job_functions[name]
            if found is None or found[1].kind is not mutation or job_id in canceled:
                later.append(job)
            elif job_id not in running:
                waiting[job_id] = name
                due.append((when, job_id))
        changes.created[:] = later
        if due:
            self._ready.add_run(due)
            self._start_ready()

    def jobs_durable(self, changes: JobChanges) -> None:
        """A commit that creates or cancels jobs is durable: cancelled ones
        leave the wheel, due ones are queued, near ones join the wheel."""
        wheel = self._wheel
        if wheel is None or self._stopping:
            return
        for job_id in changes.canceled:
            wheel.cancel(job_id)
            self._waiting.pop(job_id, None)
        earliest = float("inf")
        now = self._host.clock.now()
        due: list[tuple[float, str]] = []
        waiting, running = self._waiting, self._running
        for job_id, when, name in changes.created:
            if job_id in running:
                continue
            if when <= now:
                # Due already: straight to the ready queue, no wheel round trip.
                waiting[job_id] = name
                due.append((when, job_id))
            elif when < self._loaded_until:
                wheel.add(job_id, when)
                waiting[job_id] = name
                earliest = min(earliest, when)
            else:
                load_at = when - self.window_ms / 2
                if load_at < self._next_load:
                    self._next_load = load_at
                    earliest = min(earliest, load_at)
        if due:
            self._ready.add_run(due)
            self._start_ready()
        if earliest < self._sleep_deadline:
            self._wake.set()

    # -- the loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        """Wake for due jobs until stopped. A round that fails (the store
        cannot be read) is retried after a pause: the loop never ends on its own."""
        clock = self._host.clock

        async def pause(delay_ms: float) -> None:
            await self._sleep(clock.now() + delay_ms)

        await run_forever(self._wake_and_start, pause, "the scheduler's loop")

    async def _wake_and_start(self) -> None:
        """One round of the loop: start what is due, then sleep until the next deadline."""
        clock = self._host.clock
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
        retention = self._retention
        if now >= retention.next_at and (
            self._retention_task is None or self._retention_task.done()
        ):
            self._retention_task = asyncio.create_task(self._clean_up(now))
        next_job = wheel.next_deadline()
        deadline = min(
            float("inf") if next_job is None else next_job,
            float("inf") if self._window_full else self._next_load,
            retention.next_at,
        )
        await self._sleep(deadline)

    async def _clean_up(self, now: float) -> None:
        await self._retention.run(now)
        self._wake.set()  # the next retention run is planned: sleep until then

    async def _sleep(self, deadline: float) -> None:
        if self._host.clock.now() >= deadline:
            await asyncio.sleep(0)  # due already: not asleep, as far as the harness knows
            return
        self._wake.clear()
        self._sleep_deadline = deadline
        self.sleeping = True
        await sleep_until_or_woken(self._host.clock, deadline, self._wake, self._woken)

    def _woken(self) -> None:
        self.sleeping = False
        self._sleep_deadline = float("inf")

    # -- loading the window ---------------------------------------------------------

    @property
    def _backlog(self) -> int:
        wheel = self._wheel
        return (len(wheel) if wheel is not None else 0) + len(self._ready) + len(self._running)

    def _needs_load(self, now: float) -> bool:
        if self._window_full:
            return self._backlog < self.max_loaded // 2
        return now >= self._next_load

    async def _load(self, until: float) -> None:
        """Put pending jobs due before ``until`` into the wheel (up to :attr:`max_loaded`)."""
        wheel = self._wheel
        assert wheel is not None
        store = self._host.store
        waiting, running = self._waiting, self._running
        loaded_until = until
        full = False
        after: bytes | None = None
        while True:
            jobs = await store.due_jobs(1000, before=until, after_key=after)
            for job in jobs:
                # Jobs in the wheel or the ready queue are in `waiting`.
                if job.id not in running and job.id not in waiting:
                    wheel.add(job.id, job.scheduled_time)
                    waiting[job.id] = job.name
            if len(jobs) < 1000:
                break
            after = jobs[-1].key
            if len(wheel) >= self.max_loaded:
                # Too much is due at once: load the rest as the wheel drains.
                loaded_until = jobs[-1].scheduled_time
                full = True
                break
        self._loaded_until = loaded_until
        self._window_full = full
        if full:
            self._next_load = float("inf")
            return
        # The first job beyond the window says when to look again.
        beyond = await store.due_jobs(1, at_or_after=until)
        self._next_load = beyond[0].scheduled_time - self.window_ms / 2 if beyond else float("inf")

    # -- starting jobs ---------------------------------------------------------------

    def _start_ready(self) -> None:
        limit = self.parallelism
        ready = self._ready
        tasks, running, alone, waiting = self._tasks, self._running, self._alone, self._waiting
        job_functions = self._host.job_functions
        mutation = FunctionKind.MUTATION
        while ready and len(tasks) < limit and not (self._stopping or self.paused):
            # Spread the backlog over the free slots: one job when little is
            # due (lowest latency), up to MAX_BATCH under load (throughput).
            free = limit - len(tasks)
            size = max(1, min(MAX_BATCH, -(-len(ready) // free)))
            batch: list[str] = []
            due = ready.take(size)
            for at, (_, job_id) in enumerate(due):
                if job_id in running:
                    continue
                # Batched: mutations whose function is known without a read.
                name = waiting.get(job_id)
                found = None if name is None else job_functions[name]
                if found is not None and found[1].kind is mutation and job_id not in alone:
                    batch.append(job_id)
                elif batch:
                    ready.put_back(due[at:])  # their turn comes with the next free slot
                    break
                else:
                    self._spawn([job_id], self._runner.run_one(job_id))
                    ready.put_back(due[at + 1 :])
                    break
            if batch:
                self._spawn(batch, self._runner.run_batch(batch))

    def _spawn(self, job_ids: list[str], work: Coroutine[Any, Any, None]) -> None:
        if self._shared:
            work = self._claimed(job_ids, work)
        task = asyncio.create_task(work, name=f"convexpy-jobs-{job_ids[0]}")
        self.started += len(job_ids)
        self._tasks.add(task)
        waiting, running = self._waiting, self._running
        for job_id in job_ids:
            waiting.pop(job_id, None)
            running[job_id] = task
        task.add_done_callback(functools.partial(self._jobs_done, job_ids))

    def _jobs_done(self, job_ids: list[str], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The runner handles every failure it can: this one is a bug of ours.
            logger.error(
                "scheduled jobs %s crashed the scheduler", job_ids, exc_info=task.exception()
            )
        running, alone = self._running, self._alone
        finished: list[str] = []
        for job_id in job_ids:
            if running.get(job_id) is task:
                del running[job_id]
                if alone:
                    alone.discard(job_id)
                finished.append(job_id)
        if self.on_jobs_done is not None and finished:
            self.on_jobs_done(finished)
        if self._ready and not self._stopping:
            self._start_ready()
        if self._window_full and self._backlog < self.max_loaded // 2:
            self._wake.set()

    def _run_alone(self, job_ids: list[str]) -> None:
        """Jobs of a batch that conflicted: queue them again, each to run alone."""
        for job_id in job_ids:
            self._alone.add(job_id)
            del self._running[job_id]
            self._ready.add(float("-inf"), job_id)

    # -- several processes: claims and leases ----------------------------------------

    async def _claimed(self, job_ids: list[str], work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (the jobs' run) once ``job_ids`` are claimed; jobs
        claimed by another process are looked at again a lease later. The run
        only skips (it reads each job's state) those it did not claim."""
        store = self._host.store
        try:
            claims = await store.claim_jobs(job_ids)
        except Exception as exc:  # the store failed: try them all again later
            logger.debug("claiming jobs failed: %s", exc)
            claims = Claims([])
        claimed = claims.granted
        if len(claimed) < len(job_ids):
            self._not_claimed(job_ids, claimed, claims.ended)
        if not claimed:
            work.close()
            return
        if len(claimed) < len(job_ids):  # part of a batch of mutations
            work.close()
            work = self._runner.run_batch(claimed)
        task = asyncio.current_task()
        try:
            await work
        finally:
            # Not those of a conflicting batch queued again to run alone.
            done = [job_id for job_id in claimed if self._running.get(job_id) is task]
            with contextlib.suppress(Exception):
                await store.release_claims(done)

    def _not_claimed(self, job_ids: list[str], claimed: list[str], ended: Sequence[str]) -> None:
        """The jobs of ``job_ids`` not ``claimed`` are not running here; those
        claimed elsewhere (not ``ended``) go back in the wheel, due one lease
        from now."""
        wheel = self._wheel
        running = self._running
        task = asyncio.current_task()
        when = self._host.clock.now() + self._host.store.lease * 1000
        mine, gone = set(claimed), set(ended)
        for job_id in job_ids:
            if job_id in mine:
                continue
            if running.get(job_id) is task:
                del running[job_id]
            if job_id not in gone and wheel is not None and not self._stopping:
                wheel.add(job_id, when)
        if when < self._sleep_deadline:
            self._wake.set()

    async def _keep_leases(self) -> None:
        """Every third of a lease, renew the claims of the running jobs; every
        lease, fail the actions of processes that are gone (real time: leases
        are kept by the database's clock)."""
        host = self._host
        store = host.store
        rounds = 0
        while True:
            await asyncio.sleep(store.lease / 3)
            rounds += 1
            try:
                if self._running:
                    await store.renew_claims(list(self._running))
                if rounds % 3 == 0:
                    while await store.fail_interrupted_actions(
                        host.clock.now(), TRANSIENT_ACTION_ERROR
                    ):
                        pass
            except Exception as exc:  # the store failed: next round
                logger.debug("keeping leases failed: %s", exc)

    # -- waiting -----------------------------------------------------------------------

    async def _pause(self, delay_ms: float, jobs: int, store_failure: bool) -> None:
        """A backoff of ``jobs`` running jobs: at rest for the harness; after a
        store failure, it ends early when the store works again."""
        self._backing_off += jobs
        try:
            if store_failure:
                await self._store_wait(delay_ms)
            else:
                clock = self._host.clock
                await clock.sleep_until(clock.now() + delay_ms)
        finally:
            self._backing_off -= jobs

    async def _store_wait(self, delay_ms: float) -> None:
        """``delay_ms`` on the clock, or less if the store's writes work again."""
        host = self._host
        await pause_for_store(host.clock, host.store.health, delay_ms)
