"""Several processes sharing one PostgreSQL store: each hears of the jobs the
others schedule, claims due jobs so that each starts once, and holds a lease
on the actions it runs, so that a survivor fails those of a process that died.

Real processes (tests/multiproc_child.py) on the session's throwaway cluster
(tests/pg_server.py); skips without PostgreSQL, fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pg_server
import pytest
from conformance.helpers import T0
from conformance.test_job_queue import add_jobs, job, set_job
from e2e_helpers import dev_server

from convexpy import Runtime
from convexpy.client import AsyncConvexClient, Subscription
from convexpy.store import MemoryStore, PostgresStore
from convexpy.store.jobs import (
    SYSTEM_INDEXES,
    TRANSIENT_ACTION_ERROR,
    JobState,
    ended,
    started,
)

APP = Path(__file__).parent / "apps" / "multiproc"
CRONS_APP = Path(__file__).parent / "apps" / "multiproc_crons"
CHILD = str(Path(__file__).with_name("multiproc_child.py"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return pg_server.database_url(tmp_path)


@contextlib.asynccontextmanager
async def child(
    url: str, log: Path, app: Path = APP
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """A runtime in a process of its own on ``url``: the process and its pid;
    stopped at the end (killed if it does not stop)."""
    proc = await start_child(url, log, app)
    try:
        yield proc, proc.pid
    finally:
        await stop_child(proc)


async def start_child(url: str, log: Path, app: Path = APP) -> asyncio.subprocess.Process:
    """A runtime in a process of its own, once it says it is ready."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, CHILD, str(app), url, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    with anyio.fail_after(60):
        line = await proc.stdout.readline()
    if not line.startswith(b"ready "):
        raise AssertionError(line.decode() + await anyio.Path(log).read_text())
    return proc


async def stop_child(proc: asyncio.subprocess.Process) -> None:
    """Ends a child at the end of its stdin (killed if it does not stop)."""
    if proc.returncode is None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            with anyio.fail_after(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def idle_runtime(url: str, app: Path = APP) -> AsyncIterator[Runtime]:
    """A runtime in this process whose dispatcher starts no job (it still
    keeps leases): jobs it schedules must be run by the other processes."""
    async with Runtime(app, store=url, crons=False) as rt:
        rt.dispatcher.paused = True
        yield rt


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while not await check():  # noqa: ASYNC110 (state in another process)
            await asyncio.sleep(0.02)


async def runs(rt: Runtime) -> list[list[Any]]:
    found: list[list[Any]] = await rt.query("work:runs")
    return found


@pytest.mark.slow
async def test_jobs_scheduled_by_another_process_run_there_at_once(
    url: str, tmp_path: Path
) -> None:
    async with idle_runtime(url) as rt, child(url, tmp_path / "b.log") as (_, pid):
        await rt.mutation("work:schedule", {"n": 20})  # told in the NOTIFY
        await rt.mutation("work:schedule", {"n": 300})  # too many: read from the store

        async def all_ran() -> bool:
            return len(await runs(rt)) >= 320

        # No window reload comes within the deadline: only the NOTIFY wakes it.
        await until(all_ran, seconds=20)
        found = await runs(rt)
        assert sorted(i for i, _ in found) == sorted([*range(20), *range(300)])
        assert {p for _, p in found} == {pid}
        assert {s["kind"] for s in await rt.query("work:jobs")} == {"success"}


@pytest.mark.slow
async def test_processes_sharing_due_jobs_run_each_once(url: str, tmp_path: Path) -> None:
    async with (
        idle_runtime(url) as rt,
        child(url, tmp_path / "b.log") as (_, b),
        child(url, tmp_path / "c.log") as (_, c),
    ):
        for _ in range(3):
            await rt.mutation("work:schedule", {"n": 100})

        async def all_done() -> bool:
            states = await rt.query("work:jobs")
            return all(s["kind"] == "success" for s in states)

        await until(all_done, seconds=60)
        found = await runs(rt)
        assert sorted(i for i, _ in found) == sorted(list(range(100)) * 3)
        assert {p for _, p in found} <= {b, c}


async def test_claims_are_exclusive_until_their_lease_expires(url: str) -> None:
    first, second = PostgresStore(url, lease=0.5), PostgresStore(url, lease=0.5)
    await first.open()
    await second.open()

    async def granted(store: PostgresStore, job_ids: list[str]) -> list[str]:
        return sorted((await store.claim_jobs(job_ids)).granted)

    try:
        await first.configure_indexes(SYSTEM_INDEXES)
        a, b, c, done = sorted(await add_jobs(first, *[("a:f", T0)] * 4))
        await set_job(first, done, ended(await job(first, done), JobState.SUCCESS, T0))
        # Nothing to run in a job that ended, or in one that does not exist.
        assert await first.claim_jobs([done, "no-such-job"]) == ([], [done, "no-such-job"])
        assert await granted(first, [a, b]) == [a, b]
        assert await second.claim_jobs([b, c]) == ([c], [])  # b is held by the first
        assert await granted(first, [a, b]) == [a, b]  # its own: renewed
        await second.release_claims([c])
        assert await granted(first, [c]) == [c]
        await first.release_claims([a])
        assert await granted(second, [a]) == [a]

        async def taken_over() -> bool:  # b and c are not renewed: their claims expire
            return await granted(second, [b, c]) == [b, c]

        await until(taken_over, seconds=10)
    finally:
        await first.close()
        await second.close()


async def test_a_store_of_one_process_grants_every_claim() -> None:
    store = MemoryStore()
    await store.open()
    assert not store.shared
    assert await store.claim_jobs(["a", "b"]) == (["a", "b"], ())
    await store.close()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_a_bad_lease_in_the_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="lease must be a positive number of seconds"):
        PostgresStore.from_url(f"postgresql://u@h/db?lease={bad}")


@pytest.mark.slow
async def test_a_dead_process_s_action_fails_after_its_lease_a_live_one_s_never(
    url: str, tmp_path: Path
) -> None:
    url = f"{url}?lease=1"
    async with idle_runtime(url) as rt, child(url, tmp_path / "a.log") as (proc, pid):
        await rt.mutation("work:schedule", {"n": 1, "kind": "action"})

        async def started() -> bool:
            return await runs(rt) == [[0, pid]]

        await until(started)

        async def states() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = await rt.query("work:jobs")
            return found

        # A process starting, and leases checked meanwhile, leave it running.
        async with child(url, tmp_path / "c.log"):
            assert await states() == [{"kind": "inProgress"}]
            await asyncio.sleep(3)  # three leases: renewed each time
            assert await states() == [{"kind": "inProgress"}]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        async def failed() -> bool:
            return (await states())[0]["kind"] == "failed"

        await until(failed)
        assert await states() == [{"kind": "failed", "error": TRANSIENT_ACTION_ERROR}]


@pytest.mark.slow
async def test_a_cron_run_by_three_processes_runs_each_tick_once_one_dying(
    url: str, tmp_path: Path
) -> None:
    url = f"{url}?lease=0.3"
    async with (
        idle_runtime(url, CRONS_APP) as rt,
        child(url, tmp_path / "a.log", CRONS_APP) as (a, _),
        child(url, tmp_path / "b.log", CRONS_APP),
        child(url, tmp_path / "c.log", CRONS_APP),
    ):

        async def ticked(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                runs = await rt.query("tick:runs")
                return sum(state == "success" for _, state in runs) >= n

            return check

        await until(await ticked(4))
        a.send_signal(signal.SIGKILL)
        await a.wait()
        await until(await ticked(9))
    runs = await rt_runs(url)
    times = [when for when, _ in runs]
    assert len(times) == len(set(times)), "a tick ran twice"
    # No gap (the first run is at the start time, the rest on its whole-ms grid).
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(abs(gap - 1000) < 1 for gap in gaps), gaps
    assert all(state in ("success", "pending") for _, state in runs)


async def rt_runs(url: str) -> list[list[Any]]:
    """The cron's runs, read once every process stopped."""
    async with Runtime(CRONS_APP, store=url, crons=False) as rt:
        rt.dispatcher.paused = True
        found: list[list[Any]] = await rt.query("tick:runs")
        return found


async def test_actions_with_a_live_lease_are_passed_over_not_failed(url: str) -> None:
    runner, checker = PostgresStore(url, lease=60), PostgresStore(url, lease=60)
    await runner.open()
    await checker.open()
    try:
        await checker.configure_indexes(SYSTEM_INDEXES)
        await runner.configure_indexes(SYSTEM_INDEXES)
        ids = await add_jobs(checker, *[("a:act", T0 + n) for n in range(5)])
        for job_id in ids:
            await set_job(checker, job_id, started(await job(checker, job_id)))
        assert sorted((await runner.claim_jobs(ids[:3])).granted) == sorted(ids[:3])  # running
        # The live ones come first, more than a page of them: the rest is still found.
        assert await checker.fail_interrupted_actions(T0 + 9, TRANSIENT_ACTION_ERROR, 2) == 2
        assert await checker.fail_interrupted_actions(T0 + 9, TRANSIENT_ACTION_ERROR, 2) == 0
        states = [(await job(checker, job_id))["state"]["kind"] for job_id in ids]
        assert states == ["inProgress"] * 3 + ["failed"] * 2
    finally:
        await runner.close()
        await checker.close()


@pytest.mark.slow
async def test_a_subscription_on_one_server_sees_another_process_s_commits(
    url: str, tmp_path: Path
) -> None:
    """The dev server on PostgreSQL re-runs a subscribed query when another
    process commits to what it read (told by NOTIFY, the writes read back)."""
    app = tmp_path / "app"
    shutil.copytree(APP, app)  # the server keeps its admin key next to the app
    async with (
        dev_server(app, url, "--no-watch", cwd=tmp_path) as server,
        idle_runtime(url) as rt,
        AsyncConvexClient(server.url) as client,
        client.subscribe("work:runs") as found,
    ):
        assert await next_result(found) == []
        await rt.mutation("work:note", {"i": 1})
        assert await next_result(found) == [[1, os.getpid()]]
        await rt.mutation("work:note", {"i": 2})
        assert await next_result(found) == [[1, os.getpid()], [2, os.getpid()]]


async def next_result(subscription: Subscription) -> Any:
    with anyio.fail_after(20):
        return await subscription.next()


CRASH_JOBS = 20_000
CRASH_ACTIONS_EVERY = 100  # 200 of them are actions


async def every(rt: Runtime, name: str) -> list[Any]:
    """All pages of the paginated query ``name``."""
    found: list[Any] = []
    cursor = None
    while True:
        result = await rt.query(name, {"cursor": cursor})
        found += result["page"]
        if result["isDone"]:
            return found
        cursor = result["continueCursor"]


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_three_processes_one_killed_again_and_again_lose_and_double_nothing(
    url: str, tmp_path: Path
) -> None:
    """20,000 jobs (200 of them actions) due over 12 s, run by three processes
    while one of them is SIGKILLed every 1.5 s and started again: every
    mutation commits once, no action starts twice, every job ends in one
    terminal state (an action caught by a kill: failed, transient)."""
    url = f"{url}?lease=1"
    starts = tmp_path / "action-starts.txt"
    logs = [tmp_path / f"{name}.log" for name in "abc"]
    procs: list[asyncio.subprocess.Process] = []
    kills_with_work_left = 0
    killed: set[int] = set()
    settled = asyncio.Event()

    async def kill_one_after_another() -> None:
        nonlocal kills_with_work_left
        for victim in itertools.cycle(range(3)):
            await asyncio.sleep(1.5)  # pacing the kills, not waiting for a result
            if settled.is_set():
                return
            procs[victim].send_signal(signal.SIGKILL)
            await procs[victim].wait()
            killed.add(procs[victim].pid)
            kills_with_work_left += not settled.is_set()
            procs[victim] = await start_child(url, logs[victim])

    try:
        async with idle_runtime(url) as rt:
            procs = [await start_child(url, log) for log in logs]
            for start in range(0, CRASH_JOBS, 1000):
                await rt.mutation(
                    "crash:schedule",
                    {"start": start, "n": 1000, "spread_ms": 12_000.0,
                     "actions_every": CRASH_ACTIONS_EVERY, "log": str(starts)},
                )  # fmt: skip
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(kill_one_after_another)
                with anyio.fail_after(180):
                    while True:
                        counts = await rt.query("crash:counts")
                        if counts.get("success", 0) + counts.get("failed", 0) == CRASH_JOBS:
                            break
                        await asyncio.sleep(0.5)  # state in other processes: polled
                settled.set()
            jobs = await every(rt, "crash:jobs")
            bumps = await every(rt, "crash:bumps")
    finally:
        for proc in procs:
            await stop_child(proc)

    assert kills_with_work_left >= 3, f"only {kills_with_work_left} kills came before the end"
    assert len(jobs) == CRASH_JOBS
    assert sorted(i for i, _, _ in jobs) == list(range(CRASH_JOBS)), "a job was lost or doubled"
    mutations = {i for i, kind, _ in jobs if kind == "bump"}
    assert all(state == {"kind": "success"} for _, kind, state in jobs if kind == "bump")
    assert sorted(bumps) == sorted(mutations), "a mutation ran twice or not at all"
    lines = [line.split() for line in starts.read_text().splitlines()]
    started = {int(i): int(pid) for i, pid in lines}
    assert len(started) == len(lines), "an action started twice"
    for i, kind, state in jobs:
        if kind == "act":
            if state["kind"] == "success":
                assert i in started
            else:  # failed by a kill: never started, or started in a process killed
                assert state == {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}
                assert started.get(i, -1) in killed | {-1}, "a live process's action failed"
    failed = sum(1 for _, kind, state in jobs if kind == "act" and state["kind"] == "failed")
    print(f"kills: {kills_with_work_left}; actions failed by a kill: {failed} of 200")
