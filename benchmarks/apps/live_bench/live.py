"""The live-query benchmark's app (benchmarks/live.py).

``get`` reads one item by key (through the index, so a commit touching
another key leaves it alone); ``touch`` stamps some items with the wall
clock once it has read them, just before it commits; ``runs`` says how often ``get`` has run in this
process. Benchmark-only code, so it may read the wall clock and keep a count.
"""

import time

from convexpy import mutation, query

RUNS = [0]


async def _item(db, key):
    return await db.query("items").with_index("by_key", lambda q: q.eq("key", key)).first()


@query
async def get(ctx, key: int) -> dict:
    RUNS[0] += 1
    item = await _item(ctx.db, key)
    return {"key": key, "at": item["at"] if item else 0.0}


@query
async def runs(ctx) -> int:
    return RUNS[0]


@mutation
async def seed(ctx, n: int) -> None:
    for key in range(n):
        await ctx.db.insert("items", {"key": key, "at": 0.0})


@mutation
async def touch(ctx, keys: list[int]) -> None:
    items = [await _item(ctx.db, key) for key in keys]
    at = time.time() * 1000.0  # after the reads: the commit comes next
    for item in items:
        await ctx.db.patch(item["_id"], {"at": at})
