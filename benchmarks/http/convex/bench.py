"""The HTTP benchmark app (see benchmarks/README.md, "HTTP: the dev server under wrk")."""

from convexpy import mutation, query


@query
async def latest(ctx) -> list:
    return await ctx.db.query("items").order("desc").take(10)


@mutation
async def insert(ctx, n: float) -> str:
    return await ctx.db.insert("items", {"n": n, "label": "x"})
