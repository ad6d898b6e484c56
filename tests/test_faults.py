"""Background work survives store faults: commits that fail for a while, a full disk.

Each test runs the same small app on the real clock: a cron every second,
an action that is running when the fault starts and finishes during it, and
an action that falls due during it. After the fault, without a restart,
every job finishes with its true state and the cron keeps ticking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import mounted_tmpfs

from convexpy import Runtime
from convexpy.db import SystemReader
from convexpy.store import SqliteStore
from convexpy.store.base import ReadSet, Snapshot, Write
from convexpy.store.jobs import SCHEDULED_FUNCTIONS
from convexpy.testing import ConvexTest

APP = {
    "crons.py": """
from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.interval("tick", {"seconds": 1}, internal.work.tick)
""",
    "work.py": """
import asyncio

from convexpy import action, internal_mutation, mutation

started = asyncio.Event()
release = asyncio.Event()


@internal_mutation
async def tick(ctx):
    await ctx.db.insert("ticks", {"at": ctx.now()})


@action
async def slow(ctx):
    started.set()
    await release.wait()
    return "slow done"


@action
async def later(ctx):
    return "later done"


@mutation
async def schedule(ctx, name: str, delay: float):
    return await ctx.scheduler.run_after(delay, "work:" + name)
""",
}


class FlakyStore(SqliteStore):
    """A SQLite store whose commits raise ``OSError(28)`` while ``failing``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failing = False

    async def commit(
        self,
        snapshot: Snapshot,
        reads: ReadSet,
        writes: list[Write],
        on_accepted: Any = None,
    ) -> int:
        if self.failing and writes:
            raise OSError(28, "No space left on device")
        return await super().commit(snapshot, reads, writes, on_accepted)


async def _jobs(rt: Runtime) -> dict[str, dict[str, Any]]:
    txn = rt.transaction(writable=False)
    try:
        docs = await SystemReader(txn).query(SCHEDULED_FUNCTIONS).collect()
    finally:
        txn.release()
    return {doc["_id"]: doc for doc in docs}


async def _ticks(rt: Runtime) -> list[float]:
    return [doc["at"] for doc in await rt.query("faultprobe:ticks")]


PROBE = """
from convexpy import query

@query
async def ticks(ctx):
    return await ctx.db.query("ticks").collect()
"""


FAULT_SECONDS = 1.2


async def _wait_for(condition: Any, seconds: float = 15.0) -> None:
    """Poll ``condition()`` (async) until true, failing after ``seconds``
    (the state lives in the store and the runtime: there is no event to wait on)."""
    with anyio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _run_fault(
    app: Path,
    store: SqliteStore,
    start_fault: Callable[[], None],
    end_fault: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scenario of the module docstring, with a fault that lasts 1.2 s (a
    cron tick and the later action's due time fall inside it) and at least
    until the store has seen 3 failed writes."""
    caplog.set_level(logging.WARNING, logger="convexpy")
    async with Runtime(app, store=store) as rt:
        work = rt.app.modules["work"]  # type: ignore[union-attr]
        slow_id = await rt.mutation("work:schedule", {"name": "slow", "delay": 0})
        with anyio.fail_after(10):
            await work.started.wait()
        await _wait_for(lambda: _ticked(rt, 1))
        later_id = await rt.mutation("work:schedule", {"name": "later", "delay": 300})

        start_fault()
        started = time.monotonic()
        work.release.set()  # the running action finishes during the fault

        async def failed_enough() -> bool:
            return store.health.failures >= 3

        await _wait_for(failed_enough)
        await anyio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - started)))
        ticks_before = len(await _ticks(rt))
        end_fault()

        async def recovered() -> bool:
            jobs = await _jobs(rt)
            return (
                jobs[slow_id]["state"]["kind"] == "success"
                and jobs[later_id]["state"]["kind"] == "success"
            )

        await _wait_for(recovered)
        await _wait_for(lambda: _ticked(rt, ticks_before + 2))
        jobs = await _jobs(rt)
    assert jobs[slow_id]["state"] == {"kind": "success"}
    assert jobs[later_id]["state"] == {"kind": "success"}
    assert [doc for doc in jobs.values() if doc["state"]["kind"] == "inProgress"] == []
    messages = [r.message for r in caplog.records]
    assert sum("Writes to the store are failing" in m for m in messages) == 1, messages
    assert sum("Writes to the store work again" in m for m in messages) == 1, messages
    assert [r.message for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _ticked(rt: Runtime, count: int) -> bool:
    return len(await _ticks(rt)) >= count


@pytest.mark.slow
async def test_background_work_survives_commits_failing_for_a_while(
    make_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(tmp_path / "data.sqlite3")

    def start() -> None:
        store.failing = True

    def end() -> None:
        store.failing = False

    await _run_fault(make_app({**APP, "faultprobe.py": PROBE}), store, start, end, caplog)


# -- a real full disk --------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB disk to fill."""
    with mounted_tmpfs(tmp_path / "tmpfs", "4m") as mount:
        yield mount


def _fill(filler: Path) -> None:
    """Fill the file system of ``filler`` to the last byte, writing that file."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.slow
async def test_background_work_survives_a_full_disk(
    make_app: Any, small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filler = small_tmpfs / "filler"

    def end() -> None:
        os.unlink(filler)

    store = SqliteStore(small_tmpfs / "data.sqlite3")
    app = make_app({**APP, "faultprobe.py": PROBE})
    await _run_fault(app, store, lambda: _fill(filler), end, caplog)


async def test_retries_of_actions_and_crons_run_on_the_virtual_clock(make_app: Any) -> None:
    """Under the test harness, background retries wait on the virtual clock:
    a fault of 3 virtual seconds costs no real time, and nothing is abandoned."""
    app = make_app(
        {
            "crons.py": APP["crons.py"],
            "work.py": """
from convexpy import action, internal_mutation, mutation, query

@internal_mutation
async def tick(ctx):
    await ctx.db.insert("ticks", {"at": ctx.now()})

@action
async def quick(ctx):
    return 1

@mutation
async def schedule(ctx):
    return await ctx.scheduler.run_after(500, "work:quick")

@query
async def ticks(ctx):
    return [doc["at"] for doc in await ctx.db.query("ticks").collect()]
""",
        }
    )
    async with ConvexTest(app) as t:
        store = t.runtime.store
        commit = store.commit
        failing = [False]
        refused: list[list[str]] = []

        async def flaky_commit(
            snapshot: Any, reads: Any, writes: Any, on_accepted: Any = None
        ) -> int:
            if failing[0] and writes:
                refused.append(sorted({w.table for w in writes}))
                raise OSError(28, "No space left on device")
            return int(await commit(snapshot, reads, writes, on_accepted))

        store.commit = flaky_commit  # type: ignore[method-assign]
        job_id = await t.mutation("work:schedule")
        start = t.now
        failing[0] = True
        await t.advance(3000)
        assert ["_scheduled_functions"] in refused  # the action's claim
        assert ["_cron_jobs", "_scheduled_functions"] in refused  # a cron run's start
        assert (await t.run(lambda ctx: ctx.db.get(job_id)))["state"]["kind"] == "pending"
        failing[0] = False
        await t.advance(6000)  # longer than the longest retry pause (5 s)
        job = await t.run(lambda ctx: ctx.db.get(job_id))
        assert job["state"] == {"kind": "success"}
        ticks = await t.query("work:ticks")
        assert ticks and ticks[-1] >= start + 6000  # the cron ticks again
