"""The seed's retry pattern: an action that catches a transient failure and
schedules a retry mutation, which counts attempts and gives up after 3."""

from convexpy import internal, internal_action, internal_mutation, internal_query, mutation, query

MAX_ATTEMPTS = 3


class TransientError(Exception):
    pass


@mutation
async def enqueue(ctx, payload: str, fail_times: int) -> str:
    task_id = await ctx.db.insert(
        "tasks", {"payload": payload, "attempts": 0, "status": "queued", "failTimes": fail_times}
    )
    await ctx.scheduler.run_after(0, internal.retry.process, {"taskId": task_id})
    return task_id


@internal_action
async def process(ctx, taskId: str) -> None:
    task = await ctx.run_query(internal.retry.get, {"taskId": taskId})
    try:
        if task["attempts"] < task["failTimes"]:
            raise TransientError("upstream unavailable")
        await ctx.run_mutation(internal.retry.mark, {"taskId": taskId, "status": "done"})
    except TransientError:
        await ctx.scheduler.run_after(0, internal.retry.retry, {"taskId": taskId})


@internal_mutation
async def retry(ctx, taskId: str) -> None:
    task = await ctx.db.get(taskId)
    attempts = task["attempts"] + 1
    if attempts >= MAX_ATTEMPTS:
        await ctx.db.patch(taskId, {"attempts": attempts, "status": "failed"})
        return
    await ctx.db.patch(taskId, {"attempts": attempts})
    await ctx.scheduler.run_after(1000 * 2**attempts, internal.retry.process, {"taskId": taskId})


@internal_query
async def get(ctx, taskId: str):
    return await ctx.db.get(taskId)


@internal_mutation
async def mark(ctx, taskId: str, status: str) -> None:
    await ctx.db.patch(taskId, {"status": status})


@query
async def status(ctx, taskId: str):
    task = await ctx.db.get(taskId)
    return {"status": task["status"], "attempts": task["attempts"]}
