"""Rate limiting: at most N messages per user per fixed window.

Each (user, window) pair has one counter document, read and updated in the
sending mutation's transaction, so concurrent sends can never exceed the
limit: optimistic concurrency makes the losers retry against the new count.
A cron job deletes counters of windows that have ended.
"""

from convexpy import ConvexError, internal_mutation, mutation, query, v

LIMIT = 3
WINDOW_MS = 60_000


@mutation(args={"user": v.string(), "body": v.string()})
async def send(ctx, user, body):
    now = ctx.now()
    window = int(now // WINDOW_MS)
    counter = (
        await ctx.db.query("counters")
        .with_index("by_user_window", lambda r: r.eq("user", user).eq("window", window))
        .unique()
    )
    used = 0 if counter is None else counter["count"]
    if used >= LIMIT:
        retry_after = (window + 1) * WINDOW_MS - now
        raise ConvexError({"code": "RATE_LIMITED", "retryAfterMs": retry_after})
    if counter is None:
        await ctx.db.insert("counters", {"user": user, "window": window, "count": 1})
    else:
        await ctx.db.patch(counter["_id"], {"count": used + 1})
    return await ctx.db.insert("messages", {"user": user, "body": body})


@internal_mutation
async def cleanup(ctx) -> int:
    """Delete counters of finished windows (run by the cron in crons.py)."""
    current = int(ctx.now() // WINDOW_MS)
    deleted = 0
    for counter in await ctx.db.query("counters").collect():
        if counter["window"] < current:
            await ctx.db.delete(counter["_id"])
            deleted += 1
    return deleted


@query
async def counters(ctx) -> int:
    return len(await ctx.db.query("counters").collect())
