"""Jobs survive restarts; crashed actions fail; real processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from convexpy import Runtime, api
from convexpy.clock import VirtualClock
from convexpy.store.jobs import SCHEDULED_FUNCTIONS

TESTS = Path(__file__).parent
SCHED_APP = TESTS / "apps" / "sched"
CRASH_APP = TESTS / "apps" / "crash"


class JobEvents:
    """Collects the runtime's job events; ``wait(n)`` waits for the n-th one."""

    def __init__(self, rt):
        self.events = []
        self._changed = anyio.Event()
        rt.listeners.append(self._on_event)

    def _on_event(self, event):
        if event.get("type") == "job":
            self.events.append(event)
            self._changed.set()

    async def wait(self, count, seconds=10.0):
        with anyio.fail_after(seconds):
            while len(self.events) < count:
                self._changed = anyio.Event()
                await self._changed.wait()


async def _system_docs(rt):
    txn = rt.transaction(writable=False)
    try:
        from convexpy.db import SystemReader

        for doc in await SystemReader(txn).query(SCHEDULED_FUNCTIONS).collect():
            yield doc
    finally:
        txn.release()


async def test_pending_jobs_resume_after_restart_and_past_due_run_promptly(tmp_path):
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    clock = VirtualClock()
    async with Runtime(SCHED_APP, store=store, clock=clock) as rt:
        await rt.mutation(api.jobs.schedule, {"delay": 1000, "label": "soon"})
        await rt.mutation(api.jobs.schedule, {"delay": 60 * 60 * 1000, "label": "later"})
    # Down for 10 minutes: "soon" is past due, "later" is not.
    clock.advance(10 * 60 * 1000)
    async with Runtime(SCHED_APP, store=store, clock=clock) as rt:
        events = JobEvents(rt)
        await events.wait(1)
        assert await rt.query("jobs:log") == ["soon"]
        clock.advance(50 * 60 * 1000)
        await events.wait(2)
        assert await rt.query("jobs:log") == ["soon", "later"]


async def test_action_in_progress_at_crash_becomes_failed_on_start(tmp_path):
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    clock = VirtualClock()
    async with Runtime(SCHED_APP, store=store, clock=clock) as rt:
        job_id = await rt.mutation(api.jobs.schedule_action, {"gate": "never", "delay": 10})
        rt.dispatcher.paused = True

        # Simulate the state a crash leaves behind: the action was claimed.
        async def claim(txn):
            doc = await txn.get(job_id)
            txn.put(SCHEDULED_FUNCTIONS, doc, {**doc, "state": {"kind": "inProgress"}})

        await rt.system_mutation(claim)
    async with Runtime(SCHED_APP, store=store, clock=clock) as rt:
        docs = [d async for d in _system_docs(rt)]
        assert docs[0]["_id"] == job_id
        assert docs[0]["state"] == {
            "kind": "failed",
            "error": "Transient error while executing action",
        }
        assert "completedTime" in docs[0]


@pytest.mark.slow
async def test_sigkill_crash_loop_runs_every_job_exactly_or_at_most_once(tmp_path):
    db = tmp_path / "crash.sqlite3"
    action_log = tmp_path / "actions.log"
    env = {**os.environ, "CONVEXPY_CRASH_ACTION_LOG": str(action_log)}
    child = TESTS / "sched_crash_child.py"
    rng = random.Random(1234)
    batch = 0

    def spawn(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(child), str(CRASH_APP), str(db), mode, str(batch)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    for round_number in range(5):
        batch = round_number * 1_000_000  # tokens stay unique even if a batch was cut short
        proc = spawn("produce")
        assert proc.stdout is not None
        target = rng.randint(3, 25)
        seen = 0
        with anyio.fail_after(60):
            while seen < target:
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
                assert line, "child exited early"
                if line.startswith("batch"):
                    seen += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

    proc = spawn("drain")
    assert proc.stdout is not None
    with anyio.fail_after(120):
        out = await anyio.to_thread.run_sync(proc.stdout.read)
    proc.wait()
    proc.stdout.close()
    assert "drained" in out

    async with Runtime(CRASH_APP, store=f"sqlite:///{db}") as rt:
        rt.dispatcher.paused = True
        summary = await rt.query("crash:summary")
    jobs = summary["jobs"]
    assert jobs, "the child scheduled nothing"
    assert {job["state"] for job in jobs} <= {"success", "failed"}
    mutation_jobs = [j for j in jobs if j["name"] == "crash:bump"]
    succeeded = [j["token"] for j in mutation_jobs if j["state"] == "success"]
    # Mutations: exactly once. Nothing is lost and nothing applied twice.
    assert [j for j in mutation_jobs if j["state"] != "success"] == []
    assert summary["counter"] == len(succeeded)
    assert sorted(summary["applied"]) == sorted(succeeded)
    # Actions: at most once; ones that crashed mid-run are failed, never rerun.
    logged = action_log.read_text().split() if action_log.exists() else []
    assert len(logged) == len(set(logged))
    action_jobs = {j["token"]: j["state"] for j in jobs if j["name"] == "crash:act"}
    assert set(logged) <= set(action_jobs)
    for token, state in action_jobs.items():
        if state == "success":
            assert token in logged


async def test_shutdown_lets_a_running_action_finish_within_the_grace(tmp_path):
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    async with Runtime(SCHED_APP, store=store, shutdown_grace=30.0) as rt:
        events = JobEvents(rt)
        module = rt.app.modules["jobs"]
        module.gates["slow"] = gate = asyncio.Event()
        job_id = await rt.mutation(api.jobs.schedule_action, {"gate": "slow"})
        signal = module.started_signals.setdefault("slow", asyncio.Event())
        with anyio.fail_after(10):
            await signal.wait()
        # Leaving the block while the action runs: release it from a callback.
        asyncio.get_running_loop().call_soon(gate.set)
    assert [e["outcome"] for e in events.events] == ["success"]
    async with Runtime(SCHED_APP, store=store) as rt:
        docs = {d["_id"]: d async for d in _system_docs(rt)}
        assert docs[job_id]["state"] == {"kind": "success"}


async def test_shutdown_without_grace_fails_the_action_on_next_start(tmp_path):
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    async with Runtime(SCHED_APP, store=store, shutdown_grace=0.0) as rt:
        module = rt.app.modules["jobs"]
        module.gates["stuck"] = asyncio.Event()
        job_id = await rt.mutation(api.jobs.schedule_action, {"gate": "stuck"})
        signal = module.started_signals.setdefault("stuck", asyncio.Event())
        with anyio.fail_after(10):
            await signal.wait()
    async with Runtime(SCHED_APP, store=store) as rt:
        docs = {d["_id"]: d async for d in _system_docs(rt)}
        assert docs[job_id]["state"] == {
            "kind": "failed",
            "error": "Transient error while executing action",
        }
