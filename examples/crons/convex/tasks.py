"""Targets for every cron schedule kind; each records that it ran."""

from convexpy import internal_action, internal_mutation, query, v


@internal_mutation(args={"job": v.string()})
async def record(ctx, job):
    await ctx.db.insert("runs", {"job": job})


@internal_action(args={"job": v.string()})
async def ping(ctx, job):
    # Actions do I/O (HTTP calls and the like); this one records through a mutation.
    await ctx.run_mutation("tasks:record", {"job": job})


@query(args={"job": v.string()})
async def count(ctx, job):
    return sum(1 for run in await ctx.db.query("runs").collect() if run["job"] == job)
