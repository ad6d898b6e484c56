"""The workpool benchmark's app (benchmarks/workpool.py).

``plain`` schedules no-op jobs with ``run_after(0)``; ``pooled`` enqueues the
same no-ops into a Workpool. The counters tell the benchmark when every job
ran (plain) or every item completed (pooled: its ``on_complete`` ran).
"""

import asyncio

from convexpy import internal, internal_action, internal_mutation
from convexpy.components import Workpool

done = {"count": 0, "target": 0}
finished = asyncio.Event()


def _count() -> None:
    done["count"] += 1
    if done["count"] >= done["target"] > 0:
        finished.set()


@internal_mutation
async def noop(ctx, i: int) -> None:
    _count()


@internal_action
async def noop_action(ctx, i: int) -> None:
    _count()


@internal_mutation
async def noop_quiet(ctx, i: int) -> None:
    return None


@internal_action
async def noop_action_quiet(ctx, i: int) -> None:
    return None


@internal_mutation
async def completed(ctx, workId: str, context: object, result: dict) -> None:
    _count()


@internal_mutation
async def plain(ctx, first: int, count: int, kind: str) -> None:
    target = internal.jobs.noop if kind == "mutation" else internal.jobs.noop_action
    for i in range(first, first + count):
        await ctx.scheduler.run_after(0, target, {"i": i})


@internal_mutation
async def pooled(ctx, first: int, count: int, kind: str, parallelism: int) -> None:
    pool = Workpool("bench", max_parallelism=parallelism)
    for i in range(first, first + count):
        if kind == "mutation":
            await pool.enqueue_mutation(
                ctx, internal.jobs.noop_quiet, {"i": i}, on_complete=internal.jobs.completed
            )
        else:
            await pool.enqueue_action(
                ctx, internal.jobs.noop_action_quiet, {"i": i}, on_complete=internal.jobs.completed
            )
