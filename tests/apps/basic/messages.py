from convexpy import ConvexError, internal, internal_mutation, mutation, query, v


@mutation(args={"body": v.string()})
async def send(ctx, body):
    message_id = await ctx.db.insert("messages", {"body": body})
    await ctx.scheduler.run_after(5000, internal.messages.destruct, {"messageId": message_id})
    return message_id


@internal_mutation(args={"messageId": v.id("messages")})
async def destruct(ctx, messageId):
    if await ctx.db.get(messageId) is not None:
        await ctx.db.delete(messageId)


@query
async def count(ctx) -> int:
    return len(await ctx.db.query("messages").collect())


@query
async def list_all(ctx):
    return await ctx.db.query("messages").collect()


@mutation
async def fail(ctx, body: str):
    await ctx.db.insert("messages", {"body": body})
    raise ConvexError({"code": "nope", "body": body})
