"""The benchmark app: one small insert mutation (see benchmarks/mutations.py)."""

from convexpy import mutation


@mutation
async def insert(ctx, n: int) -> str:
    return await ctx.db.insert("items", {"n": n, "label": "x"})
