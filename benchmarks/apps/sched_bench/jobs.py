"""The scheduler benchmarks' app (benchmarks/scheduler.py and benchmarks/dispatch.py).

``noop`` is the job; ``schedule`` queues ``count`` of them from one mutation;
``offer`` and ``probe`` measure lateness: ``offer`` schedules each probe with
``run_at`` at a time it passes along, and the probe records how late its
handler started. Benchmark-only code, so it may read the wall clock.
"""

import time

from convexpy import internal, internal_mutation

STARTS: dict[int, tuple[float, float]] = {}
"""Probe number -> (its scheduled time, its handler's start), wall-clock epoch ms."""


@internal_mutation
async def noop(ctx, i: int) -> None:
    return None


@internal_mutation
async def schedule(ctx, first: int, count: int, delay_ms: float) -> None:
    run_after = ctx.scheduler.run_after
    for i in range(first, first + count):
        await run_after(delay_ms, internal.jobs.noop, {"i": i})


@internal_mutation
async def offer(ctx, first: int, delays: list[float]) -> None:
    run_at = ctx.scheduler.run_at
    for k, delay in enumerate(delays, first):
        at = time.time() * 1000.0 + delay
        await run_at(at, internal.jobs.probe, {"k": k, "at": at})


@internal_mutation
async def probe(ctx, k: int, at: float) -> None:
    # First attempt only: a conflict retry would otherwise overwrite it.
    STARTS.setdefault(k, (at, time.time() * 1000.0))
