"""Jobs for the crash test in tests/test_multiproc.py: mutations that leave one
row each, and actions that note their start in a file before they run on."""

import asyncio
import os

from convexpy import internal, internal_action, internal_mutation, mutation, query


@mutation
async def schedule(ctx, start: int, n: int, spread_ms: float, actions_every: int, log: str) -> int:
    """Jobs ``start`` .. ``start + n - 1``, due over the next ``spread_ms``; every
    ``actions_every``-th one is an action."""
    for i in range(start, start + n):
        delay = spread_ms * (i - start) / n
        if i % actions_every == 0:
            await ctx.scheduler.run_after(delay, internal.crash.act, {"i": i, "log": log})
        else:
            await ctx.scheduler.run_after(delay, internal.crash.bump, {"i": i})
    return n


@internal_mutation
async def bump(ctx, i: int) -> None:
    await ctx.db.insert("bumps", {"i": i})


@internal_action
async def act(ctx, i: int, log: str) -> None:
    """Notes its start (one line, appended atomically), then runs long enough
    to be caught by a kill now and then."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    await asyncio.sleep(0.3)


@query
async def bumps(ctx, cursor: str | None = None) -> dict:
    """A page of the rows the mutations left, as their ``i``."""
    found = await ctx.db.query("bumps").paginate({"numItems": 5000, "cursor": cursor})
    return {**found, "page": [d["i"] for d in found["page"]]}


@query
async def counts(ctx) -> dict:
    """How many jobs are in each state."""
    found: dict = {}
    for d in await ctx.db.system.query("_scheduled_functions").collect():
        found[d["state"]["kind"]] = found.get(d["state"]["kind"], 0) + 1
    return found


@query
async def jobs(ctx, cursor: str | None = None) -> dict:
    """A page of jobs, each as ``[i, kind of function, state]``."""
    found = await ctx.db.system.query("_scheduled_functions").paginate(
        {"numItems": 5000, "cursor": cursor}
    )
    page = [[d["args"][0]["i"], d["name"].rsplit(":", 1)[-1], d["state"]] for d in found["page"]]
    return {**found, "page": page}
