"""Per-user digests on a schedule each user picks: crons registered at runtime."""

from convexpy import internal, internal_mutation, mutation, query, v
from convexpy.components import RuntimeCrons

crons = RuntimeCrons()


@mutation(args={"user": v.string(), "cron": v.string(), "timezone": v.string()})
async def subscribe(ctx, user, cron, timezone):
    """Send ``user`` a digest on ``cron`` in ``timezone``; replaces their old schedule."""
    await crons.delete(ctx, name=f"digest {user}")
    return await crons.register(
        ctx, cron, internal.digests.send, {"user": user}, name=f"digest {user}", timezone=timezone
    )


@mutation(args={"user": v.string()})
async def unsubscribe(ctx, user):
    return await crons.delete(ctx, name=f"digest {user}")


@internal_mutation(args={"user": v.string()})
async def send(ctx, user):
    await ctx.db.insert("digests", {"user": user})


@query(args={})
async def sent(ctx):
    return [d["user"] for d in await ctx.db.query("digests").collect()]


@query(args={"user": v.string()})
async def schedule(ctx, user):
    cron = await crons.get(ctx, name=f"digest {user}")
    return None if cron is None else {"schedule": cron["schedule"], "nextRun": cron["nextRun"]}
