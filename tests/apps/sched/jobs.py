"""Functions exercising the scheduler."""

import asyncio
from datetime import timedelta

from convexpy import (
    ConvexError,
    action,
    internal,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)

# Actions block on these events so tests can observe them mid-flight.
gates: dict[str, asyncio.Event] = {}
started: list[str] = []
started_signals: dict[str, asyncio.Event] = {}


@internal_mutation
async def record(ctx, label: str) -> None:
    await ctx.db.insert("log", {"label": label})


@query
async def log(ctx) -> list:
    return [d["label"] for d in await ctx.db.query("log").collect()]


@mutation
async def schedule(ctx, delay: float, label: str) -> str:
    return await ctx.scheduler.run_after(delay, internal.jobs.record, {"label": label})


@mutation
async def schedule_at(ctx, when: float, label: str) -> str:
    return await ctx.scheduler.run_at(when, internal.jobs.record, {"label": label})


@mutation
async def schedule_aliases(ctx, past: float) -> list:
    a = await ctx.scheduler.runAfter(timedelta(seconds=1), internal.jobs.record, {"label": "td"})
    b = await ctx.scheduler.runAt(past, "jobs:record", {"label": "past"})
    return [a, b]


@mutation
async def schedule_then_fail(ctx) -> None:
    await ctx.scheduler.run_after(0, internal.jobs.record, {"label": "never"})
    raise ConvexError("rolled back")


@mutation
async def schedule_many(ctx, n: int) -> int:
    for i in range(n):
        await ctx.scheduler.run_after(1000, internal.jobs.record, {"label": f"m{i}"})
    return n


@mutation
async def schedule_big(ctx, count: int, size: int) -> None:
    for _ in range(count):
        await ctx.scheduler.run_after(0, internal.jobs.record, {"label": "x" * size})


@mutation
async def try_schedule(ctx, case: str, warm: bool = False):
    s = ctx.scheduler
    target = internal.jobs.record
    if warm:  # a first, valid call: the bad one takes the scheduler's fast path
        await s.run_after(1, target, {"label": "warm"})
    if case == "negative":
        await s.run_after(-1, target, {"label": "x"})
    elif case == "nan":
        await s.run_after(float("nan"), target, {"label": "x"})
    elif case == "inf":
        await s.run_after(float("inf"), target, {"label": "x"})
    elif case == "naive":
        import datetime

        await s.run_at(datetime.datetime(2030, 1, 1), target, {"label": "x"})
    elif case == "unknown":
        await s.run_after(0, "jobs:nope", {})
    elif case == "query":
        await s.run_after(0, "jobs:log", {})
    elif case == "args_not_dict":
        await s.run_after(0, target, ["x"])
    elif case == "args_not_convex":
        await s.run_after(0, target, {"label": {1, 2}})
    elif case == "cancel_other_table":
        doc_id = await ctx.db.insert("log", {"label": "y"})
        await s.cancel(doc_id)
    elif case == "cancel_garbage":
        await s.cancel("garbage")
    elif case == "too_far":
        await s.run_after(6 * 365 * 24 * 3600 * 1000, target, {"label": "x"})
    elif case == "huge":
        await s.run_after(10**400, target, {"label": "x"})


@mutation
async def cancel(ctx, job_id: str) -> None:
    await ctx.scheduler.cancel(job_id)


@internal_mutation
async def fails(ctx, label: str) -> None:
    await ctx.db.insert("log", {"label": label})
    raise ValueError(f"bad {label}")


@mutation
async def schedule_fails(ctx) -> str:
    return await ctx.scheduler.run_after(0, internal.jobs.fails, {"label": "f"})


@mutation
async def schedule_bad_args(ctx) -> str:
    return await ctx.scheduler.run_after(0, internal.jobs.record, {"label": 5})


@internal_mutation
async def self_cancel(ctx, me: str) -> None:
    await ctx.scheduler.cancel(me)


@mutation
async def schedule_self_cancel(ctx) -> str:
    job = await ctx.scheduler.run_after(10, internal.jobs.record, {"label": "placeholder"})
    return job


@internal_mutation
async def whoami(ctx) -> None:
    identity = ctx.auth.get_user_identity()
    await ctx.db.insert("log", {"label": "anonymous" if identity is None else identity.subject})


@mutation
async def schedule_whoami(ctx) -> str:
    assert ctx.auth.get_user_identity() is not None
    return await ctx.scheduler.run_after(0, internal.jobs.whoami, {})


@internal_action
async def slow_action(ctx, gate: str, then: str | None = None) -> str:
    started.append(gate)
    started_signals.setdefault(gate, asyncio.Event()).set()
    event = gates.setdefault(gate, asyncio.Event())
    await event.wait()
    if then is not None:
        await ctx.scheduler.run_after(0, internal.jobs.record, {"label": then})
    await ctx.run_mutation(internal.jobs.record, {"label": f"done {gate}"})
    return gate


@internal_action
async def failing_action(ctx) -> None:
    await ctx.scheduler.run_after(0, internal.jobs.record, {"label": "survives"})
    raise RuntimeError("action failed")


@action
async def schedule_from_action(ctx, fail: bool) -> str:
    job = await ctx.scheduler.run_after(0, internal.jobs.record, {"label": "from action"})
    if fail:
        raise RuntimeError("after scheduling")
    return job


@mutation
async def schedule_action(ctx, gate: str, then: str | None = None, delay: float = 0) -> str:
    return await ctx.scheduler.run_after(
        delay, internal.jobs.slow_action, {"gate": gate, "then": then}
    )


@mutation
async def schedule_failing_action(ctx) -> str:
    return await ctx.scheduler.run_after(0, internal.jobs.failing_action, {})


@internal_mutation
async def forever(ctx) -> None:
    await ctx.scheduler.run_after(1000, internal.jobs.forever, {})


@mutation
async def start_forever(ctx) -> None:
    await ctx.scheduler.run_after(0, internal.jobs.forever, {})


@internal_action
async def read_own_state(ctx) -> None:
    states = await ctx.run_query(internal.jobs.states)
    await ctx.run_mutation(internal.jobs.record, {"label": ",".join(states)})


@internal_query
async def states(ctx) -> list:
    docs = await ctx.db.system.query("_scheduled_functions").collect()
    return [d["state"]["kind"] for d in docs]


@mutation
async def schedule_read_own_state(ctx) -> str:
    return await ctx.scheduler.run_after(0, internal.jobs.read_own_state, {})


attempts: list[str] = []


@mutation
async def make_counter(ctx) -> str:
    return await ctx.db.insert("counters", {"value": 0})


@mutation
async def bump_counter(ctx, counter: str) -> int:
    doc = await ctx.db.get(counter)
    await ctx.db.patch(counter, {"value": doc["value"] + 1})
    return doc["value"] + 1


@internal_mutation
async def slow_bump(ctx, counter: str) -> None:
    doc = await ctx.db.get(counter)
    attempts.append(counter)
    started_signals.setdefault("slow_bump", asyncio.Event()).set()
    if len(attempts) == 1:
        await gates.setdefault("slow_bump", asyncio.Event()).wait()
    await ctx.db.patch(counter, {"value": doc["value"] + 1})


@mutation
async def schedule_slow_bump(ctx, counter: str) -> str:
    return await ctx.scheduler.run_after(0, internal.jobs.slow_bump, {"counter": counter})


@query
async def counter_value(ctx, counter: str) -> float:
    return (await ctx.db.get(counter))["value"]
