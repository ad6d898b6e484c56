"""A background job queue whose action uses the retry pattern.

`enqueue` stores a task and schedules the `process` action. The action calls
a flaky upstream; on a transient failure it schedules the `retry` mutation,
which counts attempts and either schedules `process` again (with exponential
backoff) or gives up and marks the task `failed` after three attempts.
Actions run at most once, so retrying is the app's decision, made here.
"""

from convexpy import (
    internal,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
    v,
)

MAX_ATTEMPTS = 3
BASE_DELAY_MS = 1000


class TransientError(Exception):
    """The upstream was unavailable; trying again later may work."""


async def call_upstream(payload: str, attempt: int, fail_first: int) -> str:
    """Stand-in for an HTTP call: fails `fail_first` times, then succeeds."""
    if attempt < fail_first:
        raise TransientError(f"upstream unavailable (attempt {attempt + 1})")
    return payload.upper()


@mutation(args={"payload": v.string(), "failFirst": v.int64()})
async def enqueue(ctx, payload, failFirst):
    task_id = await ctx.db.insert(
        "tasks",
        {"payload": payload, "failFirst": failFirst, "attempts": 0, "status": "queued"},
    )
    await ctx.scheduler.run_after(0, internal.queue.process, {"taskId": task_id})
    return task_id


@internal_action(args={"taskId": v.id("tasks")})
async def process(ctx, taskId):
    task = await ctx.run_query(internal.queue.get, {"taskId": taskId})
    try:
        result = await call_upstream(task["payload"], task["attempts"], task["failFirst"])
    except TransientError as exc:
        await ctx.scheduler.run_after(
            0, internal.queue.retry, {"taskId": taskId, "error": str(exc)}
        )
        return
    await ctx.run_mutation(internal.queue.complete, {"taskId": taskId, "result": result})


@internal_mutation(args={"taskId": v.id("tasks"), "error": v.string()})
async def retry(ctx, taskId, error):
    task = await ctx.db.get(taskId)
    attempts = task["attempts"] + 1
    if attempts >= MAX_ATTEMPTS:
        await ctx.db.patch(taskId, {"attempts": attempts, "status": "failed", "error": error})
        return
    await ctx.db.patch(taskId, {"attempts": attempts, "status": "retrying", "error": error})
    delay = BASE_DELAY_MS * 2**attempts
    await ctx.scheduler.run_after(delay, internal.queue.process, {"taskId": taskId})


@internal_mutation(args={"taskId": v.id("tasks"), "result": v.string()})
async def complete(ctx, taskId, result):
    await ctx.db.patch(taskId, {"status": "done", "result": result})


@internal_query(args={"taskId": v.id("tasks")})
async def get(ctx, taskId):
    return await ctx.db.get(taskId)


@query(args={"taskId": v.id("tasks")})
async def status(ctx, taskId):
    task = await ctx.db.get(taskId)
    return {key: task.get(key) for key in ("status", "attempts", "result", "error")}
