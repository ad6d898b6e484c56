"""What scheduled jobs and cron runs print is captured with their event, like
a client call's, instead of going straight to the terminal."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from convexpy import Runtime
from convexpy.clock import VirtualClock

APP = {
    "crons.py": """
from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.interval("chatty tick", {"seconds": 10}, internal.jobs.tick)
""",
    "jobs.py": """
import logging

from convexpy import action, internal_mutation, mutation

@internal_mutation
async def tick(ctx):
    print("tick output")

@internal_mutation
async def work(ctx, n: float):
    print("mutation says", n)
    logging.getLogger("app").warning("mutation warns")

@action
async def act(ctx):
    print("action says hi")
    raise ValueError("boom")

@mutation
async def kick(ctx):
    await ctx.scheduler.run_after(0, "jobs:work", {"n": 1})
    await ctx.scheduler.run_after(0, "jobs:act")
""",
}


async def test_job_and_cron_output_is_captured_with_their_events(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[dict[str, Any]] = []
    three_jobs = asyncio.Event()

    def listen(event: dict[str, Any]) -> None:
        events.append(event)
        if sum(e["type"] == "job" for e in events) >= 3:
            three_jobs.set()

    rt = Runtime(make_app(APP), clock=VirtualClock(), capture_logs=True)
    rt.listeners.append(listen)
    async with rt:
        await rt.mutation("jobs:kick")  # the cron's first run is due at start
        with anyio.fail_after(10):
            await three_jobs.wait()
    jobs = {e["path"]: e for e in events if e["type"] == "job"}
    assert jobs["jobs:work"]["logs"] == ["mutation says 1.0", "[WARNING] mutation warns"]
    assert jobs["jobs:act"]["logs"] == ["action says hi"]
    assert jobs["jobs:act"]["error"] == "ValueError: boom"
    assert jobs["jobs:tick"]["logs"] == ["tick output"]
    assert jobs["jobs:tick"]["cron"] == "chatty tick"
    assert "cron" not in jobs["jobs:work"]
    out = capsys.readouterr().out
    assert "says" not in out and "tick output" not in out
