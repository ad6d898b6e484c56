"""The building blocks through crashes: real processes killed with SIGKILL.

``on_complete`` runs exactly once per retrier run however the process dies:
mid-attempt (the attempt's job is failed "Transient error while executing
action" at the next start, and the run's watch counts it as a failed
attempt) or anywhere else (completions are transactions).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pg_server
import pytest
from test_components import max_overlap, rt_run

from convexpy import Runtime
from convexpy.components import Workpool
from convexpy.components.attempts import RUN_ACTION
from convexpy.store.jobs import TRANSIENT_ACTION_ERROR

TESTS = Path(__file__).parent
APP = TESTS / "apps" / "durable"
CHILD = TESTS / "durable_crash_child.py"


def spawn(db: Path, mode: str, batch: int = 0, env: dict[str, str] | None = None):
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(APP), str(db), mode, str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


async def read_line(proc: subprocess.Popen[str], prefix: str, seconds: float = 60) -> str:
    assert proc.stdout is not None
    with anyio.fail_after(seconds):
        while True:
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line, "the child exited early"
            if line.startswith(prefix):
                return line.strip()


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.slow
async def test_sigkill_mid_attempt_is_a_failed_attempt_and_on_complete_runs_once(tmp_path):
    db = tmp_path / "crash.sqlite3"
    block = tmp_path / "block"
    block.touch()
    proc = spawn(db, "marker", env={"CONVEXPY_DURABLE_BLOCK": str(block)})
    run_id = (await read_line(proc, "run ")).split()[1]
    started = tmp_path / "block.started"
    with anyio.fail_after(30):
        while not started.exists():  # noqa: ASYNC110 (written by the child's action)
            await asyncio.sleep(0.01)
    kill(proc)  # mid-attempt: its job is left inProgress, nothing was reported
    block.unlink()

    async with Runtime(APP, store=f"sqlite:///{db}") as rt:
        with anyio.fail_after(30):
            while not await rt.query("work:completions"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        completions = await rt.query("work:completions")
        [run] = await rt.query("work:runs")
    success = {"type": "success", "returnValue": "done m"}
    assert completions == [{"id": run_id, "result": success}]
    assert (run["state"], run["attempt"], run["result"]) == ("completed", 2, success)
    assert run["lastError"] == TRANSIENT_ACTION_ERROR


@pytest.mark.slow
async def test_sigkill_loop_every_retrier_run_completes_exactly_once(tmp_path):
    db = tmp_path / "crash.sqlite3"
    rng = random.Random(1818)
    for round_number in range(5):
        proc = spawn(db, "produce", batch=round_number * 1_000_000)
        for _ in range(rng.randint(3, 20)):
            await read_line(proc, "batch")
        kill(proc)

    proc = spawn(db, "drain")
    await read_line(proc, "drained", seconds=120)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()

    async with Runtime(APP, store=f"sqlite:///{db}") as rt:
        rt.dispatcher.paused = True
        runs = await rt.query("work:runs")
        completions = await rt.query("work:completions")
        jobs = await rt.query("work:attempt_jobs")
    assert runs, "the child started nothing"
    by_run: dict[str, list[dict]] = {}
    for completion in completions:
        by_run.setdefault(completion["id"], []).append(completion["result"])
    # Exactly once: one on_complete per run, with the run's own result.
    assert sorted(by_run) == sorted(run["_id"] for run in runs)
    for run in runs:
        assert by_run[run["_id"]] == [run["result"]]
        assert run["result"]["type"] == "success"
    # Some kills landed mid-attempt, and those attempts were retried.
    interrupted = [j for j in jobs if j["state"].get("error") == TRANSIENT_ACTION_ERROR]
    assert interrupted and all(j["name"] == RUN_ACTION for j in interrupted)


async def test_pool_parallelism_holds_across_two_runtimes_on_postgresql(tmp_path):
    url = pg_server.database_url(tmp_path)
    pool = Workpool("shared", max_parallelism=2)
    async with (
        Runtime(APP, store=url, crons=False) as one,
        Runtime(APP, store=url, crons=False) as two,
    ):

        async def enqueue(ctx):
            for i in range(16):
                await pool.enqueue_action(
                    ctx, "work:busy", {"key": f"k{i}"}, on_complete="work:work_done"
                )

        await rt_run(one, enqueue)
        with anyio.fail_after(60):
            while len(await two.query("work:completions")) < 16:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        spans = await one.query("work:spans")
        runners = set(await one.query("work:span_runners"))
    assert len(spans) == 16
    assert max_overlap(spans) <= 2  # counted on the shared monotonic clock
    assert len(runners) == 2, "both runtimes ran some of the work"
