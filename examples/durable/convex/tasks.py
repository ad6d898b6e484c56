"""The job queue of examples/jobqueue, with ActionRetrier instead of a retry loop."""

from convexpy import (
    internal,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
    v,
)
from convexpy.components import ActionRetrier

retrier = ActionRetrier(initial_backoff_ms=1000, base=2, max_failures=2, jitter=0)


@mutation(args={"payload": v.string(), "failFirst": v.int64()})
async def enqueue(ctx, payload, failFirst):
    task_id = await ctx.db.insert(
        "tasks", {"payload": payload, "failFirst": failFirst, "tries": 0, "status": "queued"}
    )
    run_id = await retrier.run(
        ctx, internal.tasks.process, {"taskId": task_id}, on_complete=internal.tasks.finished
    )
    await ctx.db.patch(task_id, {"runId": run_id})
    return task_id


@internal_action(args={"taskId": v.id("tasks")})
async def process(ctx, taskId):
    tries = await ctx.run_mutation(internal.tasks.count_try, {"taskId": taskId})
    task = await ctx.run_query(internal.tasks.get, {"taskId": taskId})
    if tries <= task["failFirst"]:  # stand-in for a flaky HTTP call
        raise ConnectionError(f"upstream unavailable (try {tries})")
    return task["payload"].upper()


@internal_mutation(args={"runId": v.string(), "result": v.any()})
async def finished(ctx, runId, result):
    task = await ctx.db.query("tasks").with_index("by_run", lambda q: q.eq("runId", runId)).unique()
    if result["type"] == "success":
        await ctx.db.patch(task["_id"], {"status": "done", "result": result["returnValue"]})
    else:
        await ctx.db.patch(task["_id"], {"status": result["type"], "result": result.get("error")})


@internal_mutation(args={"taskId": v.id("tasks")})
async def count_try(ctx, taskId):
    task = await ctx.db.get(taskId)
    await ctx.db.patch(taskId, {"tries": task["tries"] + 1})
    return task["tries"] + 1


@internal_query(args={"taskId": v.id("tasks")})
async def get(ctx, taskId):
    return await ctx.db.get(taskId)


@query(args={"taskId": v.id("tasks")})
async def status(ctx, taskId):
    task = await ctx.db.get(taskId)
    run = await retrier.status(ctx, task["runId"])
    return {
        "status": task["status"],
        "tries": task["tries"],
        "result": task.get("result"),
        "run": run,
    }
