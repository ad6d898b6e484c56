from convexpy import Id, internal_query, mutation, query

from ._helpers import counter_value


@mutation
async def create(ctx, name: str) -> str:
    return await ctx.db.insert("counters", {"name": name, "value": 0})


@mutation
async def increment(ctx, counter_id: Id["counters"], by: int = 1) -> int:
    doc = await ctx.db.get(counter_id)
    value = counter_value(doc) + by
    await ctx.db.patch(counter_id, {"value": value})
    return value


@query
async def get(ctx, counter_id: Id["counters"]):
    return await ctx.db.get(counter_id)


@internal_query
async def secret(ctx) -> str:
    return "internal"
