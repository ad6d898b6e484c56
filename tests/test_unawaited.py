"""A ``ctx`` call the handler never awaited fails the call, and nothing commits."""

from __future__ import annotations

import gc
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convexpy import ConvexError, UnawaitedCallError, api, internal
from convexpy.scheduler.run import JobRunner
from convexpy.testing import ConvexTest

APP = {
    "forgot.py": textwrap.dedent(
        '''
        import asyncio

        from convexpy import (
            ConvexError,
            action,
            api,
            internal,
            internal_action,
            internal_mutation,
            mutation,
            query,
        )


        async def setup(ctx):
            """An item and a pending job, for the calls that need ids."""
            doc_id = await ctx.db.insert("items", {"n": 0})
            job_id = await ctx.scheduler.run_after(1000, internal.forgot.noop)
            return {"doc_id": doc_id, "job_id": job_id}


        @mutation
        async def in_mutation(ctx, code: str) -> None:
            names = {"ctx": ctx, "api": api, "internal": internal, **await setup(ctx)}
            eval(code, names)  # the call under test, not awaited


        @query
        async def in_query(ctx, code: str, doc_id: str, job_id: str) -> None:
            eval(code, {"ctx": ctx, "api": api, "doc_id": doc_id, "job_id": job_id})


        @action
        async def in_action(ctx, code: str) -> None:
            await ctx.run_mutation(internal.forgot.add, {"n": 1})  # awaited: it commits
            eval(code, {"ctx": ctx, "api": api, "internal": internal})


        @mutation
        async def forgets_then_raises(ctx) -> None:
            ctx.db.insert("items", {"n": 1})
            raise ConvexError("own error")


        @action
        async def action_forgets_then_raises(ctx) -> None:
            ctx.run_mutation(internal.forgot.add, {"n": 1})
            raise ConvexError("own error")


        @mutation
        async def awaits_late_and_together(ctx) -> int:
            later = ctx.db.insert("items", {"n": 1})
            await asyncio.gather(ctx.db.insert("items", {"n": 2}), ctx.db.insert("items", {"n": 3}))
            await later
            return len(await ctx.db.query("items").collect())


        @mutation
        async def forgets_first_of_many(ctx, n: int) -> None:
            forgotten = ctx.db.insert("items", {"n": -1})
            for i in range(n):
                await ctx.db.insert("items", {"n": i})
            assert len(ctx.db._calls) < 2 * 64 + 2  # awaited calls were pruned
            del forgotten  # the tracker still holds it


        @internal_mutation
        async def add(ctx, n: int) -> str:
            return await ctx.db.insert("items", {"n": n})


        @internal_mutation
        async def job_good(ctx, n: int) -> None:
            await ctx.db.insert("items", {"n": n})


        @internal_mutation
        async def job_forgets(ctx) -> None:
            await ctx.db.insert("items", {"n": 100})
            ctx.db.insert("items", {"n": 101})


        @internal_action
        async def job_action_forgets(ctx) -> None:
            ctx.scheduler.run_after(0, internal.forgot.noop)


        @mutation
        async def schedule_batch(ctx) -> None:
            await ctx.scheduler.run_after(10, internal.forgot.job_good, {"n": 1})
            await ctx.scheduler.run_after(10, internal.forgot.job_forgets)
            await ctx.scheduler.run_after(10, internal.forgot.job_good, {"n": 2})


        @internal_mutation
        async def noop(ctx) -> None:
            return None


        @query
        async def items(ctx) -> list:
            return sorted(d["n"] for d in await ctx.db.query("items").collect())
        '''
    )
}


@pytest.fixture
def no_never_awaited_warning() -> Iterator[None]:
    """Fails the test if a coroutine was left to be collected un-awaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def committed(t: ConvexTest) -> tuple[list[int], int]:
    """The items and the number of scheduled jobs in the store."""
    jobs = await t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())
    return await t.query(api.forgot.items), len(jobs)


# (function, the call it makes without `await`, how the error spells it)
CASES = [
    *[
        ("in_mutation", code, label)
        for code, label in [
            ('ctx.db.insert("items", {"n": 1})', "ctx.db.insert(...)"),
            ("ctx.db.get(doc_id)", "ctx.db.get(...)"),
            ('ctx.db.patch(doc_id, {"n": 2})', "ctx.db.patch(...)"),
            ('ctx.db.replace(doc_id, {"n": 2})', "ctx.db.replace(...)"),
            ("ctx.db.delete(doc_id)", "ctx.db.delete(...)"),
            ('ctx.db.query("items").collect()', 'ctx.db.query("items").collect(...)'),
            ('ctx.db.query("items").take(1)', 'ctx.db.query("items").take(...)'),
            ('ctx.db.query("items").order("desc").first()', 'ctx.db.query("items").first(...)'),
            (
                'ctx.db.query("items").filter(lambda d: True).unique()',
                'ctx.db.query("items").unique(...)',
            ),
            (
                'ctx.db.query("items").paginate({"numItems": 1, "cursor": None})',
                'ctx.db.query("items").paginate(...)',
            ),
            ("ctx.db.system.get(job_id)", "ctx.db.system.get(...)"),
            (
                'ctx.db.system.query("_scheduled_functions").collect()',
                'ctx.db.system.query("_scheduled_functions").collect(...)',
            ),
            ("ctx.scheduler.run_after(0, internal.forgot.noop)", "ctx.scheduler.run_after(...)"),
            ("ctx.scheduler.runAfter(0, internal.forgot.noop)", "ctx.scheduler.runAfter(...)"),
            ("ctx.scheduler.run_at(0, internal.forgot.noop)", "ctx.scheduler.run_at(...)"),
            ("ctx.scheduler.runAt(0, internal.forgot.noop)", "ctx.scheduler.runAt(...)"),
            ("ctx.scheduler.cancel(job_id)", "ctx.scheduler.cancel(...)"),
            ("ctx.run_query(api.forgot.items)", "ctx.run_query(...)"),
            ("ctx.runQuery(api.forgot.items)", "ctx.runQuery(...)"),
            ('ctx.run_mutation(internal.forgot.add, {"n": 5})', "ctx.run_mutation(...)"),
            ('ctx.runMutation(internal.forgot.add, {"n": 5})', "ctx.runMutation(...)"),
        ]
    ],
    *[
        ("in_query", code, label)
        for code, label in [
            ("ctx.db.get(doc_id)", "ctx.db.get(...)"),
            ('ctx.db.query("items").collect()', 'ctx.db.query("items").collect(...)'),
            ('ctx.db.query("items").first()', 'ctx.db.query("items").first(...)'),
            ("ctx.db.system.get(job_id)", "ctx.db.system.get(...)"),
            ('ctx.db.insert("items", {"n": 1})', "ctx.db.insert(...)"),  # refused if awaited
            ("ctx.run_query(api.forgot.items)", "ctx.run_query(...)"),
        ]
    ],
    *[
        ("in_action", code, label)
        for code, label in [
            ("ctx.run_query(api.forgot.items)", "ctx.run_query(...)"),
            ('ctx.run_mutation(internal.forgot.add, {"n": 2})', "ctx.run_mutation(...)"),
            ('ctx.runMutation(internal.forgot.add, {"n": 2})', "ctx.runMutation(...)"),
            ('ctx.run_action(api.forgot.in_action, {"code": "0"})', "ctx.run_action(...)"),
            ("ctx.scheduler.run_after(0, internal.forgot.noop)", "ctx.scheduler.run_after(...)"),
            ("ctx.scheduler.cancel('x')", "ctx.scheduler.cancel(...)"),
        ]
    ],
]

# What the error says it means, and what is left in the store (items, jobs).
OUTCOMES = {
    # Not even the awaited insert and job of setup() commit.
    "in_mutation": ("nothing was committed", ([], 0)),
    # The item and job are the test's, for the ids.
    "in_query": ("the call never ran", ([0], 1)),
    # The awaited mutation committed; the forgotten call never ran.
    "in_action": ("the call never ran; the calls the action awaited did", ([1], 0)),
}


@pytest.mark.parametrize(("function", "code", "label"), CASES, ids=[c for _, _, c in CASES])
async def test_the_call_fails_naming_what_was_not_awaited(
    t: ConvexTest, function: str, code: str, label: str, no_never_awaited_warning: None
) -> None:
    args = {"code": code, **(await t.run(_ids) if function == "in_query" else {})}
    call = {"in_mutation": t.mutation, "in_query": t.query, "in_action": t.action}[function]
    with pytest.raises(UnawaitedCallError) as caught:
        await call(f"forgot:{function}", args)
    outcome, left = OUTCOMES[function]
    assert str(caught.value) == (
        f"forgot:{function}: {label} was called but never awaited: add `await` ({outcome})"
    )
    assert caught.value.calls == [label]
    assert await committed(t) == left


async def _ids(ctx: Any) -> dict[str, str]:
    doc_id = await ctx.db.insert("items", {"n": 0})
    job_id = await ctx.scheduler.run_after(1000, internal.forgot.noop)
    return {"doc_id": doc_id, "job_id": job_id}


async def test_several_forgotten_calls_are_all_named(t: ConvexTest) -> None:
    code = (
        'ctx.db.insert("items", {"n": 1}), ctx.db.insert("items", {"n": 2}), '
        "ctx.scheduler.run_after(0, internal.forgot.noop)"
    )
    with pytest.raises(UnawaitedCallError) as caught:
        await t.mutation(api.forgot.in_mutation, {"code": code})
    assert str(caught.value) == (
        "forgot:in_mutation: ctx.db.insert(...) (2 times) and ctx.scheduler.run_after(...) "
        "were called but never awaited: add `await` (nothing was committed)"
    )


async def test_the_handlers_own_error_wins_and_nothing_warns(
    t: ConvexTest, no_never_awaited_warning: None
) -> None:
    with pytest.raises(ConvexError, match="own error"):
        await t.mutation(api.forgot.forgets_then_raises)
    with pytest.raises(ConvexError, match="own error"):
        await t.action(api.forgot.action_forgets_then_raises)
    assert await committed(t) == ([], 0)


async def test_calls_awaited_later_or_together_are_fine(t: ConvexTest) -> None:
    assert await t.mutation(api.forgot.awaits_late_and_together) == 3


async def test_pruning_keeps_the_forgotten_call(
    t: ConvexTest, no_never_awaited_warning: None
) -> None:
    with pytest.raises(UnawaitedCallError, match=r"ctx\.db\.insert\(\.\.\.\) was called"):
        await t.mutation(api.forgot.forgets_first_of_many, {"n": 500})
    assert await committed(t) == ([], 0)


async def test_scheduled_mutation_in_a_batch_fails_alone(
    module_app: Path, monkeypatch: pytest.MonkeyPatch, no_never_awaited_warning: None
) -> None:
    batches: list[int] = []
    attempt = JobRunner._batch_attempt

    async def spy(self: JobRunner, job_ids: list[str]) -> Any:
        batches.append(len(job_ids))
        return await attempt(self, job_ids)

    monkeypatch.setattr(JobRunner, "_batch_attempt", spy)
    async with ConvexTest(module_app, parallelism=1) as t:  # one slot: the three run as one batch
        await t.mutation(api.forgot.schedule_batch)
        await t.advance(10)
        assert batches == [3]
        jobs = await t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())
        states = {job["name"]: job["state"] for job in jobs}
        assert states["forgot:job_good"] == {"kind": "success"}
        assert states["forgot:job_forgets"] == {
            "kind": "failed",
            "error": "UnawaitedCallError: forgot:job_forgets: ctx.db.insert(...) was called "
            "but never awaited: add `await` (nothing was committed)",
        }
        assert await t.query(api.forgot.items) == [1, 2]  # not 100: rolled back with its job


async def test_scheduled_action_fails(t: ConvexTest, no_never_awaited_warning: None) -> None:
    job_id = await t.run(lambda ctx: ctx.scheduler.run_after(0, internal.forgot.job_action_forgets))
    await t.finish_in_progress_scheduled_functions()
    job = await t.run(lambda ctx: ctx.db.system.get(job_id))
    assert job["state"] == {
        "kind": "failed",
        "error": "UnawaitedCallError: forgot:job_action_forgets: ctx.scheduler.run_after(...) "
        "was called but never awaited: add `await` (the call never ran; the calls the action "
        "awaited did)",
    }
    assert await committed(t) == ([], 1)  # only that job: the forgotten one never ran


async def test_harness_run_fails_too(t: ConvexTest) -> None:
    async def forgets(ctx: Any) -> None:
        ctx.db.insert("items", {"n": 1})

    with pytest.raises(UnawaitedCallError, match=r"^t\.run: ctx\.db\.insert\(\.\.\.\)"):
        await t.run(forgets)
    assert await committed(t) == ([], 0)
