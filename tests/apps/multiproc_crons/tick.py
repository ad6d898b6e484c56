"""A cron run by several processes sharing one PostgreSQL store (tests/test_multiproc.py)."""

import os

from convexpy import internal_mutation, query


@internal_mutation
async def tick(ctx) -> None:
    await ctx.db.insert("ticks", {"pid": os.getpid()})


@query
async def runs(ctx) -> list:
    """``[scheduledTime, state]`` of every run, earliest first."""
    jobs = await ctx.db.system.query("_scheduled_functions").collect()
    return sorted([job["scheduledTime"], job["state"]["kind"]] for job in jobs)
