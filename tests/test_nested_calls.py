"""``ctx.run_query`` / ``ctx.run_mutation`` inside queries and mutations: one
transaction, nested mutations as sub-transactions."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import anyio
import pytest

from convexpy import (
    ArgumentValidationError,
    ConvexError,
    Runtime,
    UserIdentity,
    api,
    internal,
)
from convexpy.errors import (
    ConvexpyError,
    FunctionNotFoundError,
    ReadOnlyError,
    ReturnsValidationError,
)
from convexpy.testing import ConvexTest

APP = {
    "nested.py": textwrap.dedent(
        '''
        import asyncio

        from convexpy import (
            ConvexError,
            Id,
            action,
            api,
            internal,
            internal_mutation,
            internal_query,
            mutation,
            query,
            v,
        )

        gates: dict[str, asyncio.Event] = {}
        attempts: list[str] = []


        # -- callees ------------------------------------------------------------

        @internal_query
        async def labels(ctx) -> list[str]:
            return [d["label"] for d in await ctx.db.query("items").collect()]


        @internal_query
        async def whoami(ctx) -> str | None:
            identity = ctx.auth.get_user_identity()
            return None if identity is None else identity.subject


        @internal_query
        async def clock(ctx) -> float:
            return ctx.now()


        @internal_query(returns=v.string())
        async def wrong_return(ctx):
            return 3


        @internal_query
        async def tries_to_write(ctx) -> None:
            await ctx.db.insert("items", {"label": "from a query"})


        @internal_query
        async def mutates_its_args(ctx, tags: list[str]) -> list[str]:
            tags.append("changed")
            return tags


        @internal_mutation
        async def add(ctx, label: str) -> str:
            return await ctx.db.insert("items", {"label": label})


        @internal_mutation
        async def add_after_yield(ctx, label: str) -> str:
            await asyncio.sleep(0)  # yields to the loop: a sibling call starts meanwhile
            return await ctx.db.insert("items", {"label": label})


        @internal_mutation(returns=v.null())
        async def add_then_return_wrong(ctx, label: str):
            await ctx.db.insert("items", {"label": label})
            return "not null"


        @internal_mutation
        async def add_schedule_then_fail(ctx, label: str) -> None:
            await ctx.db.insert("items", {"label": label})
            await ctx.scheduler.run_after(0, internal.nested.add, {"label": label + " (job)"})
            raise ConvexError(f"{label} failed")


        @internal_mutation
        async def add_and_schedule(ctx, label: str) -> str:
            await ctx.db.insert("items", {"label": label})
            job = {"label": label + " (job)"}
            return await ctx.scheduler.run_after(0, internal.nested.add, job)


        @internal_mutation
        async def cancel(ctx, job: str) -> None:
            await ctx.scheduler.cancel(job)


        @internal_mutation
        async def middle(ctx, inner_fails: bool) -> list[str]:
            """Nested of nested: calls `inner`, catches its failure, then writes more."""
            await ctx.db.insert("items", {"label": "middle 1"})
            fn = internal.nested.add_schedule_then_fail if inner_fails else internal.nested.add
            try:
                await ctx.run_mutation(fn, {"label": "inner"})
            except ConvexError:
                pass
            await ctx.db.insert("items", {"label": "middle 2"})
            return await ctx.run_query(internal.nested.labels)


        @internal_mutation
        async def middle_then_fail(ctx) -> None:
            await ctx.run_mutation(internal.nested.add, {"label": "inner of failing middle"})
            raise ConvexError("middle failed")


        @internal_mutation
        async def forgets(ctx) -> None:
            await ctx.db.insert("items", {"label": "forgetful"})
            ctx.db.insert("items", {"label": "never"})


        @action
        async def an_action(ctx) -> None:
            return None


        @internal_mutation
        async def bump(ctx, counter: Id["counters"]) -> int:
            doc = await ctx.db.get(counter)
            await ctx.db.patch(counter, {"value": doc["value"] + 1})
            return doc["value"] + 1


        # -- callers ------------------------------------------------------------

        @mutation
        async def sees_and_is_seen(ctx) -> dict:
            await ctx.db.insert("items", {"label": "outer"})
            before = await ctx.run_query(internal.nested.labels)
            inner_id = await ctx.run_mutation(internal.nested.add, {"label": "inner"})
            doc = await ctx.db.get(inner_id)
            after = await ctx.runQuery(internal.nested.labels)
            return {"before": before, "inner": doc["label"], "after": after}


        @mutation
        async def catches_failure(ctx) -> dict:
            await ctx.db.insert("items", {"label": "before"})
            try:
                await ctx.run_mutation(internal.nested.add_schedule_then_fail, {"label": "doomed"})
            except ConvexError as error:
                caught = error.data
            await ctx.db.insert("items", {"label": "after"})
            jobs = await ctx.db.system.query("_scheduled_functions").collect()
            return {"caught": caught, "labels": await ctx.run_query(internal.nested.labels),
                    "jobs": len(jobs)}


        @mutation
        async def sees_nested_job(ctx) -> dict:
            job_id = await ctx.run_mutation(internal.nested.add_and_schedule, {"label": "n"})
            job = await ctx.db.system.get(job_id)
            return {"state": job["state"], "name": job["name"]}


        @mutation
        async def nested_cancel_rolled_back(ctx) -> str:
            job_id = await ctx.scheduler.run_after(1000, internal.nested.add, {"label": "kept"})
            await ctx.run_mutation(internal.nested.cancel, {"job": job_id})
            canceled = (await ctx.db.system.get(job_id))["state"]["kind"]
            await ctx.db.insert("items", {"label": canceled})
            return job_id


        @mutation
        async def via(ctx, how: str) -> list:
            """Nested calls, through a reference spelled `how`."""
            refs = {
                "object": (labels, add),
                "path": ("nested:labels", "nested:add"),
                "internal": (internal.nested.labels, internal.nested.add),
            }
            query_ref, mutation_ref = refs[how]
            await ctx.run_mutation(mutation_ref, {"label": how})
            return await ctx.run_query(query_ref)


        @mutation
        async def call_mutation(ctx, ref: str, args: dict) -> object:
            return await ctx.run_mutation(eval(ref), args)


        @mutation
        async def call_query(ctx, ref: str, args: dict) -> object:
            return await ctx.run_query(eval(ref), args)


        @mutation
        async def calls_nested_of_nested(ctx, inner_fails: bool) -> list[str]:
            await ctx.db.insert("items", {"label": "outer"})
            seen = await ctx.run_mutation(internal.nested.middle, {"inner_fails": inner_fails})
            return seen


        @mutation
        async def middle_fails(ctx) -> str:
            try:
                await ctx.run_mutation(internal.nested.middle_then_fail)
            except ConvexError as error:
                return error.data
            return "not raised"


        @mutation
        async def two_at_once(ctx) -> str:
            results = await asyncio.gather(
                ctx.run_mutation(internal.nested.add_after_yield, {"label": "first"}),
                ctx.run_mutation(internal.nested.add_after_yield, {"label": "second"}),
                return_exceptions=True,
            )
            raise results[1] if isinstance(results[1], Exception) else AssertionError(results)


        @mutation
        async def catches_forgetful(ctx) -> str:
            try:
                await ctx.run_mutation(internal.nested.forgets)
            except Exception as error:  # UnawaitedCallError
                message = f"{type(error).__name__}: {error}"
            await ctx.db.insert("items", {"label": "kept"})
            return message


        @mutation
        async def outer_bump(ctx, counter: Id["counters"]) -> int:
            attempts.append("outer")
            value = await ctx.run_mutation(internal.nested.bump, {"counter": counter})
            gate = gates.get("outer")
            if gate is not None and len(attempts) == 1:
                gates["outer started"].set()
                await gate.wait()
            return value


        @mutation
        async def make_counter(ctx) -> str:
            return await ctx.db.insert("counters", {"value": 0})


        @query
        async def counter_value(ctx, counter: Id["counters"]) -> int:
            return (await ctx.db.get(counter))["value"]


        @query
        async def query_calls_query(ctx) -> dict:
            return {
                "labels": await ctx.run_query(internal.nested.labels),
                "same_clock": await ctx.run_query(internal.nested.clock) == ctx.now(),
            }


        @query
        async def query_calls(ctx, ref: str) -> object:
            return await ctx.run_query(eval(ref))


        @query
        async def query_attribute(ctx, name: str) -> None:
            getattr(ctx, name)


        @mutation
        async def mutation_attribute(ctx, name: str) -> None:
            getattr(ctx, name)


        @query
        async def who(ctx) -> str | None:
            return await ctx.run_query(internal.nested.whoami)


        @mutation
        async def who_in_mutation(ctx) -> str | None:
            return await ctx.run_query(internal.nested.whoami)


        @mutation
        async def passes_args(ctx) -> dict:
            tags = ["a"]
            returned = await ctx.run_query(internal.nested.mutates_its_args, {"tags": tags})
            return {"mine": tags, "returned": returned}


        @internal_mutation
        async def job(ctx) -> None:
            await ctx.run_mutation(internal.nested.add, {"label": "from job"})
            try:
                inner = internal.nested.add_schedule_then_fail
                await ctx.run_mutation(inner, {"label": "job inner"})
            except ConvexError:
                pass
            seen = await ctx.run_query(internal.nested.labels)
            await ctx.db.insert("items", {"label": f"job saw {len(seen)}"})


        @query
        async def items(ctx) -> list[str]:
            return sorted(d["label"] for d in await ctx.db.query("items").collect())


        @query
        async def job_names(ctx) -> list[str]:
            jobs = await ctx.db.system.query("_scheduled_functions").collect()
            return sorted(j["name"] + " " + j["state"]["kind"] for j in jobs)
        '''
    )
}


async def items(t: ConvexTest) -> list[str]:
    result: list[str] = await t.query(api.nested.items)
    return result


async def jobs(t: ConvexTest) -> list[str]:
    result: list[str] = await t.query(api.nested.job_names)
    return result


# -- one transaction -------------------------------------------------------------------


async def test_nested_calls_see_the_callers_writes_and_it_sees_theirs(t: ConvexTest) -> None:
    result = await t.mutation(api.nested.sees_and_is_seen)
    assert result == {"before": ["outer"], "inner": "inner", "after": ["outer", "inner"]}
    assert await items(t) == ["inner", "outer"]


async def test_a_failing_nested_mutation_is_rolled_back_and_can_be_caught(t: ConvexTest) -> None:
    result = await t.mutation(api.nested.catches_failure)
    # Its insert and the job it scheduled are gone; the caller's writes commit.
    assert result == {"caught": "doomed failed", "labels": ["before", "after"], "jobs": 0}
    assert await items(t) == ["after", "before"]
    await t.finish_all_scheduled_functions()
    assert await jobs(t) == []
    assert await items(t) == ["after", "before"]


async def test_jobs_a_nested_mutation_schedules_are_the_callers(t: ConvexTest) -> None:
    assert await t.mutation(api.nested.sees_nested_job) == {
        "state": {"kind": "pending"},
        "name": "nested:add",
    }
    await t.finish_all_scheduled_functions()
    assert await items(t) == ["n", "n (job)"]
    assert await jobs(t) == ["nested:add success"]


async def test_a_nested_cancel_commits_with_the_caller(t: ConvexTest) -> None:
    await t.mutation(api.nested.nested_cancel_rolled_back)
    assert await items(t) == ["canceled"]
    assert await jobs(t) == ["nested:add canceled"]


@pytest.mark.parametrize("inner_fails", [False, True])
async def test_nested_of_nested(t: ConvexTest, inner_fails: bool) -> None:
    seen = await t.mutation(api.nested.calls_nested_of_nested, {"inner_fails": inner_fails})
    inner = [] if inner_fails else ["inner"]
    assert seen == ["outer", "middle 1", *inner, "middle 2"]
    assert await items(t) == sorted(seen)
    assert await jobs(t) == []  # the failing inner's job went with it


async def test_a_failing_middle_takes_its_successful_inner_call_with_it(t: ConvexTest) -> None:
    assert await t.mutation(api.nested.middle_fails) == "middle failed"
    assert await items(t) == []


async def test_returns_are_checked_and_a_bad_return_rolls_back(t: ConvexTest) -> None:
    with pytest.raises(ReturnsValidationError, match="nested:wrong_return"):
        await t.mutation(api.nested.call_query, {"ref": "internal.nested.wrong_return", "args": {}})
    ref = "internal.nested.add_then_return_wrong"
    with pytest.raises(ReturnsValidationError, match="nested:add_then_return_wrong"):
        await t.mutation(api.nested.call_mutation, {"ref": ref, "args": {"label": "x"}})
    assert await items(t) == []


async def test_arguments_are_validated_and_copied(t: ConvexTest) -> None:
    with pytest.raises(ArgumentValidationError, match=r'"nested:add" at \$\.label'):
        await t.mutation(
            api.nested.call_mutation, {"ref": "internal.nested.add", "args": {"label": 3}}
        )
    assert await t.mutation(api.nested.passes_args) == {
        "mine": ["a"],
        "returned": ["a", "changed"],
    }


@pytest.mark.parametrize("how", ["object", "path", "internal"])
async def test_references(t: ConvexTest, how: str) -> None:
    assert await t.mutation(api.nested.via, {"how": how}) == [how]


async def test_api_references_do_not_reach_internal_functions(t: ConvexTest) -> None:
    with pytest.raises(FunctionNotFoundError, match="nested:add"):
        await t.mutation(api.nested.call_mutation, {"ref": "api.nested.add", "args": {}})


async def test_the_identity_is_passed_on(t: ConvexTest) -> None:
    ada = UserIdentity(subject="ada", issuer="https://auth.example")
    assert await t.query(api.nested.who, identity=ada) == "ada"
    assert await t.mutation(api.nested.who_in_mutation, identity=ada) == "ada"
    assert await t.mutation(api.nested.who_in_mutation) is None


async def test_a_nested_query_cannot_write(t: ConvexTest) -> None:
    with pytest.raises(ReadOnlyError, match="not allowed in a query"):
        await t.mutation(
            api.nested.call_query, {"ref": "internal.nested.tries_to_write", "args": {}}
        )
    assert await items(t) == []


async def test_one_nested_mutation_at_a_time(t: ConvexTest) -> None:
    with pytest.raises(ConvexpyError, match="another ctx.run_mutation of this function is still"):
        await t.mutation(api.nested.two_at_once)
    assert await items(t) == []


async def test_a_nested_mutation_that_forgets_an_await_fails_alone(t: ConvexTest) -> None:
    assert await t.mutation(api.nested.catches_forgetful) == (
        "UnawaitedCallError: nested:forgets: ctx.db.insert(...) was called but never awaited: "
        "add `await` (its writes were rolled back)"
    )
    assert await items(t) == ["kept"]


# -- kinds --------------------------------------------------------------------------------


async def test_mutations_cannot_run_actions(t: ConvexTest) -> None:
    with pytest.raises(FunctionNotFoundError) as caught:
        await t.mutation(api.nested.call_mutation, {"ref": "api.nested.an_action", "args": {}})
    assert str(caught.value) == (
        "ctx.run_mutation: 'nested:an_action' is an action; a mutation cannot run actions, as in "
        "Convex: schedule it with `await ctx.scheduler.run_after(0, ...)` from a mutation, or "
        "call it from an action"
    )
    with pytest.raises(AttributeError, match="a mutation cannot run actions"):
        await t.mutation(api.nested.mutation_attribute, {"name": "run_action"})


async def test_wrong_kinds_name_the_right_call(t: ConvexTest) -> None:
    with pytest.raises(FunctionNotFoundError, match=r"is a mutation; call it with ctx\.run_mutat"):
        await t.mutation(api.nested.call_query, {"ref": "internal.nested.add", "args": {}})
    with pytest.raises(FunctionNotFoundError, match=r"is a query; call it with ctx\.run_query"):
        await t.mutation(api.nested.call_mutation, {"ref": "internal.nested.labels", "args": {}})


async def test_queries_run_queries_only(t: ConvexTest) -> None:
    await t.mutation(api.nested.via, {"how": "path"})
    assert await t.query(api.nested.query_calls_query) == {"labels": ["path"], "same_clock": True}
    with pytest.raises(FunctionNotFoundError, match="a query cannot run mutations"):
        await t.query(api.nested.query_calls, {"ref": "internal.nested.add"})
    with pytest.raises(FunctionNotFoundError, match="a query cannot run actions"):
        await t.query(api.nested.query_calls, {"ref": "api.nested.an_action"})
    for name in ("run_mutation", "run_action"):
        with pytest.raises(AttributeError, match="a query cannot run"):
            await t.query(api.nested.query_attribute, {"name": name})


# -- scheduled mutations and retries -------------------------------------------------------


async def test_scheduled_mutations_have_nested_calls(t: ConvexTest) -> None:
    await t.run(lambda ctx: ctx.scheduler.run_after(0, internal.nested.job))
    await t.finish_all_scheduled_functions()
    assert await items(t) == ["from job", "job saw 1"]
    assert await jobs(t) == ["nested:job success"]  # the failed inner call's job is gone


async def test_a_conflict_in_a_nested_call_reruns_the_whole_mutation(t: ConvexTest) -> None:
    module = t.runtime._loaded.modules["nested"]
    counter = await t.mutation(api.nested.make_counter)
    module.gates["outer"] = asyncio.Event()
    module.gates["outer started"] = asyncio.Event()
    outer = asyncio.create_task(t.mutation(api.nested.outer_bump, {"counter": counter}))
    with anyio.fail_after(5):
        await module.gates["outer started"].wait()
    # The nested bump read the counter; a client bump commits before the outer
    # mutation does, so its commit conflicts and it runs again from the start.
    await t.mutation(internal.nested.bump, {"counter": counter})
    module.gates["outer"].set()
    with anyio.fail_after(5):
        assert await outer == 2
    assert module.attempts == ["outer", "outer"]
    assert await t.query(api.nested.counter_value, {"counter": counter}) == 2


async def test_nested_calls_work_on_sqlite(module_app: Path, tmp_path: Path) -> None:
    async with Runtime(module_app, store=f"sqlite:///{tmp_path / 'data.db'}", crons=False) as rt:
        result = await rt.mutation("nested:catches_failure")
        assert result["labels"] == ["before", "after"]
        assert await rt.query(api.nested.items) == ["after", "before"]
        with pytest.raises(ConvexError):
            await rt.mutation("nested:middle_then_fail")
