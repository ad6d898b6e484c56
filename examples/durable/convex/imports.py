"""An import of many rows through a Workpool: at most two fetches at a time."""

from convexpy import internal, internal_action, internal_mutation, mutation, query, v
from convexpy.components import Workpool

fetches = Workpool(
    "fetches",
    max_parallelism=2,
    retry_action_by_default=True,
    default_retry_behavior={"maxAttempts": 3, "initialBackoffMs": 500, "base": 2, "jitter": 0},
)


@mutation(args={"rows": v.int64(), "badRow": v.int64()})
async def start(ctx, rows, badRow):
    import_id = await ctx.db.insert("imports", {"rows": rows, "done": 0, "failed": 0})
    for row in range(rows):
        await fetches.enqueue_action(
            ctx,
            internal.imports.fetch,
            {"row": row, "bad": row == badRow},
            on_complete=internal.imports.fetched,
            context={"importId": import_id},
        )
    return import_id


@internal_action(args={"row": v.int64(), "bad": v.boolean()})
async def fetch(ctx, row, bad):
    if bad:
        raise ValueError(f"row {row} is malformed")
    return row * 10


@internal_mutation(args={"workId": v.string(), "context": v.any(), "result": v.any()})
async def fetched(ctx, workId, context, result):
    imported = await ctx.db.get(context["importId"])
    field = "done" if result["kind"] == "success" else "failed"
    await ctx.db.patch(imported["_id"], {field: imported[field] + 1})


@mutation(args={})
async def cancel_all(ctx):
    return await fetches.cancel_all(ctx)


@query(args={"importId": v.id("imports")})
async def progress(ctx, importId):
    imported = await ctx.db.get(importId)
    return {key: imported[key] for key in ("rows", "done", "failed")}
