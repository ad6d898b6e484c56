"""Jobs run by several processes sharing one PostgreSQL store (tests/test_multiproc.py)."""

import asyncio
import os

from convexpy import internal, internal_action, internal_mutation, mutation, query


@mutation
async def schedule(ctx, n: int, kind: str = "mutation") -> list:
    target = internal.work.record if kind == "mutation" else internal.work.hold
    return [await ctx.scheduler.run_after(0, target, {"i": i}) for i in range(n)]


@internal_mutation
async def record(ctx, i: int) -> None:
    await ctx.db.insert("runs", {"i": i, "pid": os.getpid()})


@internal_action
async def hold(ctx, i: int) -> None:
    """Says it started, then runs until its process dies."""
    await ctx.run_mutation(internal.work.record, {"i": i})
    await asyncio.Event().wait()


@query
async def runs(ctx) -> list:
    return [[d["i"], d["pid"]] for d in await ctx.db.query("runs").collect()]


@query
async def jobs(ctx) -> list:
    return [d["state"] for d in await ctx.db.system.query("_scheduled_functions").collect()]


@mutation
async def note(ctx, i: int) -> None:
    """A row written straight from a client call, in the calling process."""
    await ctx.db.insert("runs", {"i": i, "pid": os.getpid()})
