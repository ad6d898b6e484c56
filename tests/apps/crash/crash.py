"""Jobs for the scheduler crash test: counted mutations and logged actions."""

import asyncio
import os

from convexpy import internal, internal_action, internal_mutation, mutation, query

ACTION_LOG = os.environ.get("CONVEXPY_CRASH_ACTION_LOG", "")


@mutation
async def produce(ctx, batch: int, n: int) -> int:
    for i in range(n):
        token = f"{batch}-{i}"
        if i % 3 == 2:
            await ctx.scheduler.run_after(i % 7, internal.crash.act, {"token": token})
        else:
            await ctx.scheduler.run_after(i % 5, internal.crash.bump, {"token": token})
    return n


@internal_mutation
async def bump(ctx, token: str) -> None:
    counter = await ctx.db.query("counter").first()
    if counter is None:
        await ctx.db.insert("counter", {"value": 1})
    else:
        await ctx.db.patch(counter["_id"], {"value": counter["value"] + 1})
    await ctx.db.insert("applied", {"token": token})


@internal_action
async def act(ctx, token: str) -> None:
    # Slow enough that kills often land while actions run.
    await asyncio.sleep(0.01)
    await asyncio.to_thread(_append, token)
    await asyncio.sleep(0.01)


def _append(token: str) -> None:
    with open(ACTION_LOG, "a") as log:
        log.write(token + "\n")
        log.flush()
        os.fsync(log.fileno())


@query
async def summary(ctx) -> dict:
    counter = await ctx.db.query("counter").first()
    applied = [d["token"] for d in await ctx.db.query("applied").collect()]
    jobs = await ctx.db.system.query("_scheduled_functions").collect()
    return {
        "counter": 0 if counter is None else counter["value"],
        "applied": applied,
        "jobs": [
            {"name": j["name"], "state": j["state"]["kind"], "token": j["args"][0]["token"]}
            for j in jobs
        ],
    }
