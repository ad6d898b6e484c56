"""Self-destructing messages: each message deletes itself five seconds after it is sent."""

from convexpy import Id, internal, internal_mutation, mutation, query, v

LIFETIME_MS = 5000


@mutation(args={"body": v.string(), "author": v.string()})
async def send(ctx, body, author):
    message_id = await ctx.db.insert("messages", {"body": body, "author": author})
    # Part of this mutation's transaction: the job exists only if the insert commits.
    await ctx.scheduler.run_after(
        LIFETIME_MS, internal.messages.destruct, {"messageId": message_id}
    )
    return message_id


@internal_mutation
async def destruct(ctx, messageId: Id["messages"]):  # validated from the annotation
    if await ctx.db.get(messageId) is not None:
        await ctx.db.delete(messageId)


@query
async def list(ctx) -> list:
    return await ctx.db.query("messages").order("desc").take(50)


@query
async def count(ctx) -> int:
    return len(await ctx.db.query("messages").collect())
