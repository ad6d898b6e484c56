"""Functions for the durable building blocks' tests: flaky and slow actions,
mutations, and on_complete handlers that record what they were told."""

import asyncio
import contextlib
import os
import time

from convexpy import action, internal, internal_action, internal_mutation, internal_query, mutation
from convexpy.components import ActionRetrier, RetryPolicy, RuntimeCrons, Workpool

RUNNER = os.urandom(4).hex()
"""Which runtime's copy of this module ran a span."""
calls: dict[str, int] = {}
"""How often each key's action ran (this runtime's copy of the module)."""
concurrency = {"active": 0, "max": 0}
gates: dict[str, asyncio.Event] = {}

retrier = ActionRetrier(initial_backoff_ms=1000, base=2, max_failures=3, jitter=0)
pool = Workpool(
    "main",
    max_parallelism=3,
    retry_action_by_default=True,
    default_retry_behavior={"maxAttempts": 3, "initialBackoffMs": 100, "base": 2, "jitter": 0},
)
crons = RuntimeCrons()


@internal_action
async def flaky(ctx, key: str, fail: int) -> str:
    """Fails its first ``fail`` runs for ``key``, then returns "ok <key>"."""
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= fail:
        raise RuntimeError(f"boom {calls[key]}")
    return f"ok {key}"


@internal_action
async def busy(ctx, key: str) -> str:
    """Runs for a few milliseconds, counting how many run at once in this
    module, and records its span (monotonic clock, shared by processes)."""
    began = time.monotonic()
    concurrency["active"] += 1
    concurrency["max"] = max(concurrency["max"], concurrency["active"])
    try:
        await asyncio.sleep(0.005)
    finally:
        concurrency["active"] -= 1
    ended = time.monotonic()
    await ctx.run_mutation("work:span", {"key": key, "began": began, "ended": ended, "by": RUNNER})
    return key


@internal_mutation
async def span(ctx, key: str, began: float, ended: float, by: str = "") -> None:
    await ctx.db.insert("spans", {"key": key, "began": began, "ended": ended, "by": by})


@internal_query
async def spans(ctx) -> list:
    return [[d["began"], d["ended"]] for d in await ctx.db.query("spans").collect()]


@internal_query
async def span_runners(ctx) -> list:
    return [d["by"] for d in await ctx.db.query("spans").collect()]


@internal_action
async def gated(ctx, key: str) -> str:
    """Waits for ``gates[key]`` (set by the test)."""
    calls[key] = calls.get(key, 0) + 1
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@internal_action
async def marker(ctx, key: str) -> str:
    """While the file CONVEXPY_DURABLE_BLOCK names exists, logs that it started
    and blocks (the SIGKILL test kills the process meanwhile)."""
    block = os.environ.get("CONVEXPY_DURABLE_BLOCK")
    if block:
        await asyncio.to_thread(_append, block + ".started", key)
        while await asyncio.to_thread(os.path.exists, block):  # noqa: ASYNC110 - a file, polled
            await asyncio.sleep(0.01)
    return f"done {key}"


@internal_action
async def shaky(ctx, key: str) -> str:
    """Slow enough that kills land mid-run; fails on the first try of odd keys."""
    calls[key] = calls.get(key, 0) + 1
    await asyncio.sleep(0.01)
    if calls[key] == 1 and int(key.rsplit("-", 1)[1]) % 2:
        raise RuntimeError(f"shaky {key}")
    return key


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@internal_mutation
async def note(ctx, key: str) -> None:
    await ctx.db.insert("notes", {"key": key})


@internal_mutation
async def explode(ctx, key: str) -> None:
    await ctx.db.insert("notes", {"key": key})
    raise ValueError(f"explode {key}")


@internal_mutation
async def done(ctx, runId: str, result: dict) -> None:
    await ctx.db.insert("completions", {"id": runId, "result": result})


@internal_mutation
async def work_done(ctx, workId: str, context: object, result: dict) -> None:
    await ctx.db.insert("completions", {"id": workId, "context": context, "result": result})


@internal_query
async def completions(ctx) -> list:
    return [
        {k: v for k, v in doc.items() if not k.startswith("_")}
        for doc in await ctx.db.query("completions").collect()
    ]


@internal_query
async def notes(ctx) -> list:
    return [doc["key"] for doc in await ctx.db.query("notes").collect()]


@mutation
async def start(ctx, key: str, fail: int) -> str:
    return await retrier.run(ctx, "work:flaky", {"key": key, "fail": fail}, on_complete="work:done")


quick = ActionRetrier(initial_backoff_ms=50, jitter=0, max_failures=10, watch_interval_ms=200)
"""For the crash tests: short backoffs, and a crashed attempt noticed after 200 ms."""


@mutation
async def start_marker(ctx, key: str) -> str:
    return await quick.run(ctx, "work:marker", {"key": key}, on_complete="work:done")


@mutation
async def start_shaky(ctx, batch: int, n: int) -> list:
    return [
        await quick.run(ctx, "work:shaky", {"key": f"{batch}-{i}"}, on_complete="work:done")
        for i in range(n)
    ]


@internal_query
async def runs(ctx) -> list:
    return await ctx.db.system.query("_retrier_runs").collect()


@internal_query
async def attempt_jobs(ctx) -> list:
    jobs = await ctx.db.system.query("_scheduled_functions").collect()
    return [{"name": j["name"], "state": j["state"]} for j in jobs]


@internal_mutation
async def enqueue_then_fail(ctx, key: str) -> None:
    """Enqueues ``key`` in the pool, then raises: the enqueue is rolled back."""
    await pool.enqueue_mutation(ctx, "work:note", {"key": key})
    raise ValueError("changed my mind")


@mutation
async def enqueue_after_a_rollback(ctx, key: str) -> str:
    """A nested enqueue rolled back, then the same enqueue for real, in one transaction."""
    with contextlib.suppress(ValueError):
        await ctx.run_mutation("work:enqueue_then_fail", {"key": key})
    return await pool.enqueue_mutation(ctx, "work:note", {"key": key})


@action
async def from_an_action(ctx, key: str) -> dict:
    """Every building block called with an action's ctx (each call commits on its own)."""
    run_id = await retrier.run(
        ctx, internal.work.flaky, {"key": key, "fail": 1}, on_complete=internal.work.done
    )
    work_id = await pool.enqueue_action(
        ctx,
        internal.work.flaky,
        {"key": f"{key}-pool", "fail": 1},
        on_complete=internal.work.work_done,
        context={"from": "an action"},
        retry=RetryPolicy(max_attempts=2, initial_backoff_ms=10, jitter=0),
    )
    schedule = {"kind": "interval", "minutes": 1}
    cron_id = await crons.register(
        ctx, schedule, internal.work.note, {"key": f"{key}-cron"}, name=key
    )
    return {
        "run": run_id,
        "work": work_id,
        "cron id": cron_id,
        "run status": await retrier.status(ctx, run_id),
        "work status": await pool.status(ctx, work_id),
        "cron": await crons.get(ctx, name=key),
        "crons": len(await crons.list(ctx)),
    }


@action
async def stop_from_an_action(ctx, key: str, run_id: str) -> list:
    return [
        await crons.delete(ctx, name=key),
        await retrier.cancel(ctx, run_id),
        await pool.cancel_all(ctx),
    ]


@internal_query
async def enqueue_in_a_query(ctx) -> str:
    return await pool.enqueue_mutation(ctx, "work:note", {"key": "x"})
