import asyncio

from convexpy import internal_action, internal_mutation, query

gates: dict[str, asyncio.Event] = {}


@internal_mutation
async def record(ctx, name: str) -> None:
    await ctx.db.insert("runs", {"name": name})


@internal_action
async def slow(ctx, name: str) -> None:
    await ctx.run_mutation("runs:record", {"name": name})
    gate = gates.setdefault(name, asyncio.Event())
    await gate.wait()


@query
async def runs(ctx, name: str) -> list:
    docs = await ctx.db.query("runs").collect()
    return [d["_creationTime"] for d in docs if d["name"] == name]
