"""The durable building blocks: action retrier, workpools, runtime crons.

On ConvexTest's virtual clock, so backoffs and cron periods take no wall
time; restarts on a SQLite file; crashes in test_components_durability.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from pathlib import Path

import anyio
import pytest

from convexpy import CronSpecError, MutationCtx, Runtime
from convexpy.clock import VirtualClock
from convexpy.components import ActionRetrier, ComponentError, RetryPolicy, RuntimeCrons, Workpool
from convexpy.components import workpool as workpool_module
from convexpy.components.attempts import RUN_ACTION
from convexpy.components.retrier import EXPIRE
from convexpy.context import Auth, fixed_time
from convexpy.db import DatabaseWriter
from convexpy.loader import AppLoadError
from convexpy.scheduler.api import MutationScheduler
from convexpy.testing import ConvexTest

APP = Path(__file__).parent / "apps" / "durable"
MINUTE = 60_000


def work(t: ConvexTest):
    """This harness's copy of the app's ``work`` module."""
    assert t.runtime.app is not None
    return t.runtime.app.modules["work"]


async def system(t: ConvexTest, table: str) -> list[dict]:
    return await t.run(lambda ctx: ctx.db.system.query(table).collect())


async def attempt_times(t: ConvexTest) -> list[float]:
    """When each action attempt was scheduled, in order."""
    jobs = await system(t, "_scheduled_functions")
    return sorted(j["scheduledTime"] for j in jobs if j["name"] == RUN_ACTION)


async def until(check, seconds: float = 10.0) -> None:
    """Wait until ``check()`` (a coroutine function) is true, failing after ``seconds``."""
    with anyio.fail_after(seconds):
        while not await check():  # noqa: ASYNC110 (state in a runtime, not an event)
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def live(**kwargs):
    """A Runtime on a virtual clock whose jobs run as soon as they are due
    (for actions that wait on gates the test opens: ConvexTest would wait for them)."""
    clock = VirtualClock(1_767_225_600_000.0)
    async with Runtime(APP, clock=clock, shutdown_grace=0, **kwargs) as rt:
        assert rt.app is not None
        yield rt, clock, rt.app.modules["work"]


async def rt_run(rt: Runtime, body):
    """``body(ctx)`` in a mutation of ``rt`` (what ConvexTest.run does)."""

    async def transaction(txn):
        ctx = MutationCtx(
            DatabaseWriter(txn, allow_system_reads=True),
            Auth(None),
            MutationScheduler(rt, txn),
            fixed_time(rt.clock.now()),
            rt,
        )
        return await body(ctx)

    return await rt.system_mutation(transaction)


def max_overlap(spans: list[list[float]]) -> int:
    """The most intervals ``[began, ended]`` that share an instant."""
    edges = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# -- the retrier ----------------------------------------------------------------------------


async def test_retrier_backoff_times_are_exact_and_on_complete_runs_once():
    async with ConvexTest(APP) as t:
        start = t.now
        run_id = await t.mutation("work:start", {"key": "a", "fail": 3})
        retrier = work(t).retrier
        status = lambda: t.run(lambda ctx: retrier.status(ctx, run_id))  # noqa: E731
        assert await status() == {"type": "inProgress", "attempt": 1}
        await t.advance(0)
        assert await status() == {"type": "inProgress", "attempt": 2}
        assert [x - start for x in await attempt_times(t)] == [0, 1000]
        await t.finish_all_scheduled_functions()
        # max_failures=3: four attempts, waiting 1000 * 2 ** (n - 1) ms before the n-th retry.
        assert [x - start for x in await attempt_times(t)] == [0, 1000, 3000, 7000]
        assert t.now - start == 7000
        result = {"type": "success", "returnValue": "ok a"}
        assert await status() == {"type": "completed", "result": result}
        assert await t.query("work:completions") == [{"id": run_id, "result": result}]
        # Every watch was cancelled by the attempt's report: nothing is left
        # pending but the run's deletion, seven days on, which cleanup cancels.
        jobs = await system(t, "_scheduled_functions")
        pending = [j for j in jobs if j["state"]["kind"] == "pending"]
        assert [(j["name"], j["scheduledTime"] - t.now) for j in pending] == [
            (EXPIRE, 7 * 24 * 60 * MINUTE)
        ]
        assert {j["state"]["kind"] for j in jobs} == {"success", "canceled", "pending"}
        assert await t.run(lambda ctx: retrier.cleanup(ctx, run_id)) is True
        with pytest.raises(ComponentError, match="no run"):
            await status()
        expire = await t.run(lambda ctx: ctx.db.system.get(pending[0]["_id"]))
        assert expire["state"]["kind"] == "canceled"


async def test_a_completed_run_is_deleted_after_its_time_to_be_kept():
    async with ConvexTest(APP) as t:
        keeping = ActionRetrier(keep_completed_ms=MINUTE, jitter=0)
        forever = ActionRetrier(keep_completed_ms=None)

        async def start(ctx):
            return [
                await r.run(ctx, "work:flaky", {"key": key, "fail": 0})
                for r, key in ((keeping, "k"), (forever, "f"))
            ]

        kept, unbounded = await t.run(start)
        await t.finish_all_scheduled_functions()  # housekeeping is not waited for
        assert await t.run(lambda ctx: keeping.status(ctx, kept)) == {
            "type": "completed",
            "result": {"type": "success", "returnValue": "ok k"},
        }
        await t.advance(MINUTE)
        with pytest.raises(ComponentError, match="no run"):
            await t.run(lambda ctx: keeping.status(ctx, kept))
        await t.advance(30 * 24 * 60 * MINUTE)  # far beyond seven days
        status = await t.run(lambda ctx: forever.status(ctx, unbounded))
        assert status["type"] == "completed"
        with pytest.raises(ComponentError, match="keep_completed_ms must be"):
            ActionRetrier(keep_completed_ms=-1)


async def test_retrier_gives_up_after_max_failures_with_the_last_error():
    async with ConvexTest(APP) as t:
        run_id = await t.mutation("work:start", {"key": "b", "fail": 99})
        await t.finish_all_scheduled_functions()
        assert work(t).calls["b"] == 4
        failed = {"type": "failed", "error": "RuntimeError: boom 4"}
        assert await t.query("work:completions") == [{"id": run_id, "result": failed}]
        [run] = await system(t, "_retrier_runs")
        assert run["lastError"] == "RuntimeError: boom 3"


async def test_jitter_stays_within_its_bound():
    policy = RetryPolicy(max_attempts=9, initial_backoff_ms=1000, base=3, jitter=0.25)
    for retry in range(1, 9):
        nominal = 1000 * 3 ** (retry - 1)
        assert policy.nominal_delay_ms(retry) == nominal
        assert policy.delay_ms(retry, 0.0) == nominal * 0.75
        assert policy.delay_ms(retry, 0.5) == nominal
        assert nominal * 1.25 - policy.delay_ms(retry, 0.999999) < 1e-3 * nominal
    assert RetryPolicy(base=10).nominal_delay_ms(10_000) == 365 * 24 * 3600 * 1000.0
    # End to end: the scheduled retry lands within +-50% of the nominal second.
    jittery = ActionRetrier(initial_backoff_ms=1000, max_failures=1, jitter=0.5)
    async with ConvexTest(APP) as t:
        for i in range(40):
            args = {"key": f"j{i}", "fail": 1}
            await t.run(lambda ctx, args=args: jittery.run(ctx, "work:flaky", args))
        start = t.now
        await t.advance(0)
        delays = [x - start for x in await attempt_times(t) if x > start]
        assert len(delays) == 40
        assert all(500 <= d < 1500 for d in delays), delays
        assert len(set(delays)) > 30  # spread, not one value


async def test_cancel_during_backoff_stops_the_run():
    async with ConvexTest(APP) as t:
        run_id = await t.mutation("work:start", {"key": "c", "fail": 5})
        await t.advance(500)  # the first attempt failed; the retry waits until +1000
        retrier = work(t).retrier
        assert await t.run(lambda ctx: retrier.cancel(ctx, run_id)) is True
        assert await t.run(lambda ctx: retrier.cancel(ctx, run_id)) is False
        await t.advance(60_000)
        assert work(t).calls["c"] == 1
        canceled = {"type": "canceled"}
        assert await t.query("work:completions") == [{"id": run_id, "result": canceled}]
        jobs = await system(t, "_scheduled_functions")
        assert [j["state"]["kind"] for j in jobs if j["name"] == RUN_ACTION] == [
            "success",
            "canceled",
        ]


async def test_cancel_while_an_attempt_runs_drops_its_outcome():
    async with live() as (rt, _, module):
        retrier = module.retrier
        run_id = await rt_run(
            rt, lambda ctx: retrier.run(ctx, "work:gated", {"key": "g"}, on_complete="work:done")
        )
        await until(lambda: _true(module.calls.get("g") == 1))  # running, waiting on its gate
        assert await rt_run(rt, lambda ctx: retrier.cancel(ctx, run_id)) is True
        module.gates["g"].set()
        canceled = {"type": "canceled"}
        await until(lambda: _true(not rt.dispatcher.running))
        assert await rt.query("work:completions") == [{"id": run_id, "result": canceled}]


async def _true(value: bool) -> bool:
    return value


async def test_retrier_refuses_bad_input_naming_it():
    with pytest.raises(ComponentError, match="base must be >= 1"):
        ActionRetrier(base=0.5)
    with pytest.raises(ComponentError, match="max_failures must be an integer >= 0"):
        ActionRetrier(max_failures=-1)
    with pytest.raises(ComponentError, match="initial_backoff_ms must be a finite number"):
        ActionRetrier(initial_backoff_ms=float("nan"))
    with pytest.raises(ComponentError, match="jitter must be between 0 and 1"):
        ActionRetrier(jitter=2)
    retrier = ActionRetrier()
    async with ConvexTest(APP) as t:
        with pytest.raises(
            ComponentError, match="must be an action, but 'work:note' is a mutation"
        ):
            await t.run(lambda ctx: retrier.run(ctx, "work:note", {"key": "x"}))
        with pytest.raises(ComponentError, match="Could not find function for 'work:nope'"):
            await t.run(lambda ctx: retrier.run(ctx, "work:nope"))
        with pytest.raises(ComponentError, match="on_complete must be a mutation"):
            await t.run(lambda ctx: retrier.run(ctx, "work:busy", on_complete="work:busy"))
        with pytest.raises(ComponentError, match="is not an id of '_retrier_runs'"):
            await t.run(lambda ctx: retrier.status(ctx, "nope"))
        with pytest.raises(TypeError, match="needs the ctx of a mutation"):
            await retrier.run(object(), "work:busy")  # type: ignore[arg-type]
        assert await system(t, "_retrier_runs") == []


# -- workpools ------------------------------------------------------------------------------


async def test_pool_never_runs_more_than_its_parallelism():
    async with ConvexTest(APP, parallelism=16) as t:
        pool = work(t).pool

        async def enqueue(ctx):
            return [
                await pool.enqueue_action(
                    ctx, "work:busy", {"key": f"k{i}"}, on_complete="work:work_done", context=i
                )
                for i in range(12)
            ]

        ids = await t.run(enqueue)
        await t.finish_all_scheduled_functions()
        assert work(t).concurrency["max"] == 3  # reached, never passed
        assert max_overlap(await t.query("work:spans")) <= 3
        completions = await t.query("work:completions")
        assert sorted(c["context"] for c in completions) == list(range(12))
        assert {c["id"] for c in completions} == set(ids)
        [doc] = await system(t, "_workpools")
        assert (doc["name"], doc["running"], doc["maxParallelism"]) == ("main", 0, 3)
        assert await system(t, "_workpool_work") == []  # finished work is deleted


async def test_pool_retries_actions_and_runs_mutations_once():
    async with ConvexTest(APP) as t:
        pool = work(t).pool

        async def enqueue(ctx):
            return (
                await pool.enqueue_action(
                    ctx, "work:flaky", {"key": "p", "fail": 2}, on_complete="work:work_done"
                ),
                await pool.enqueue_mutation(
                    ctx, "work:explode", {"key": "m"}, on_complete="work:work_done", context="m"
                ),
                await pool.enqueue_mutation(ctx, "work:note", {"key": "n"}, run_after=5000),
            )

        flaky, explode, later = await t.run(enqueue)
        start = t.now
        await t.advance(0)
        status = await t.run(lambda ctx: pool.status(ctx, flaky))
        assert status == {"state": "pending", "previousAttempts": 1}
        assert await t.run(lambda ctx: pool.status(ctx, later)) == {
            "state": "pending",
            "previousAttempts": 0,
        }
        await t.finish_all_scheduled_functions()
        # maxAttempts 3, 100 ms doubling: attempts at +0, +100, +300.
        assert [x - start for x in await attempt_times(t)] == [0, 100, 300]
        assert await t.query("work:completions") == [
            {
                "id": explode,
                "context": "m",
                "result": {"kind": "failed", "error": "ValueError: explode m"},
            },
            {"id": flaky, "context": None, "result": {"kind": "success", "returnValue": "ok p"}},
        ]
        assert await t.query("work:notes") == ["n"]  # explode's insert was rolled back
        assert await t.run(lambda ctx: pool.status(ctx, later)) == {"state": "finished"}


async def test_an_enqueue_after_a_rolled_back_one_still_gets_its_item_started():
    """The pool's pump scheduled by an enqueue that was rolled back (a nested
    mutation that raised) is not counted on by the next enqueue."""
    async with ConvexTest(APP) as t:
        await t.mutation("work:enqueue_after_a_rollback", {"key": "kept"})
        await t.finish_all_scheduled_functions()
        assert await t.query("work:notes") == ["kept"]


async def test_pool_cancel_one_and_all():
    async with live() as (rt, _, module):
        pool = module.pool

        async def enqueue(ctx):
            return [
                await pool.enqueue_action(
                    ctx, "work:gated", {"key": f"g{i}"}, on_complete="work:work_done", context=i
                )
                for i in range(6)
            ]

        ids = await rt_run(rt, enqueue)
        started = lambda *keys: _true(sorted(module.calls) == list(keys))  # noqa: E731
        await until(lambda: started("g0", "g1", "g2"))  # three slots
        # A pending item goes at once; a running one holds its slot until it ends.
        assert await rt_run(rt, lambda ctx: pool.cancel(ctx, ids[4])) is True
        assert await rt_run(rt, lambda ctx: pool.cancel(ctx, ids[0])) is True
        assert await rt_run(rt, lambda ctx: pool.status(ctx, ids[0])) == {"state": "finished"}
        assert await rt_run(rt, lambda ctx: pool.status(ctx, ids[3])) == {
            "state": "pending",
            "previousAttempts": 0,
        }
        module.gates["g0"].set()
        await until(lambda: started("g0", "g1", "g2", "g3"))  # in g0's slot, once freed
        assert await rt_run(rt, lambda ctx: pool.cancel_all(ctx)) == 4
        for gate in ("g1", "g2", "g3"):
            module.gates[gate].set()
        await until(lambda: _true(not rt.dispatcher.running))
        completions = await rt.query("work:completions")
        assert [c["context"] for c in completions] == [4, 0, 1, 2, 3, 5]
        assert {c["result"]["kind"] for c in completions} == {"canceled"}
        assert "g5" not in module.calls
        [doc] = await rt_run(rt, lambda ctx: ctx.db.system.query("_workpools").collect())
        assert doc["running"] == 0
        assert await rt_run(rt, lambda ctx: ctx.db.system.query("_workpool_work").collect()) == []


async def test_finishers_never_conflict_with_each_other(tmp_path):
    """Many attempts finishing at once only record their outcomes; the pool's
    loop accounts for them in batches, so no commit is refused. (SQLite: its
    commits wait for its writer, so transactions overlap.)"""
    pool = Workpool("wide", max_parallelism=12)
    async with live(crons=False, store=f"sqlite:///{tmp_path}/pool.sqlite3") as (rt, _, _m):

        async def enqueue(ctx):
            for i in range(60):
                await pool.enqueue_mutation(
                    ctx, "work:note", {"key": f"n{i}"}, on_complete="work:work_done", context=i
                )
                await pool.enqueue_action(
                    ctx, "work:busy", {"key": f"b{i}"}, on_complete="work:work_done", context=i
                )

        await rt_run(rt, enqueue)
        await until(lambda: _count(rt, "work:completions", 120))
        assert rt.store.conflicts == 0
        assert max_overlap(await rt.query("work:spans")) <= 12
        assert sorted(await rt.query("work:notes")) == sorted(f"n{i}" for i in range(60))
        [doc] = await rt_run(rt, lambda ctx: ctx.db.system.query("_workpools").collect())
        assert doc["running"] == 0


async def test_a_pool_of_one_runs_its_items_one_after_another():
    pool = Workpool("single", max_parallelism=1)
    async with live(crons=False) as (rt, _, _module):

        async def enqueue(ctx):
            for i in range(8):
                await pool.enqueue_action(ctx, "work:busy", {"key": f"s{i}"})

        await rt_run(rt, enqueue)
        await until(lambda: _count(rt, "work:spans", 8))
        spans = await rt.query("work:spans")
        assert max_overlap(spans) == 1
        # In enqueue order (oldest readyAt first), each after the previous ended.
        assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))
        keys = await rt_run(rt, lambda ctx: ctx.db.query("spans").collect())
        assert [k["key"] for k in keys] == [f"s{i}" for i in range(8)]


async def test_a_failing_round_is_tried_again_later(monkeypatch, caplog):
    """A round that raises (a bug) keeps the loop going: its work is rolled
    back and the round runs again a second later."""
    original = workpool_module._round
    failures = []

    async def flaky_round(*args):
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug")
        await original(*args)

    monkeypatch.setattr(workpool_module, "_round", flaky_round)
    async with ConvexTest(APP) as t:
        pool = work(t).pool
        start = t.now
        await t.run(lambda ctx: pool.enqueue_mutation(ctx, "work:note", {"key": "again"}))
        await t.finish_all_scheduled_functions()
        assert await t.query("work:notes") == ["again"]
        assert t.now - start == workpool_module.ROUND_RETRY_MS
    assert "a round of workpool 'main' failed" in caplog.text


async def _count(rt: Runtime, query: str, n: int) -> bool:
    return len(await rt.query(query)) >= n


async def test_pool_refuses_bad_input_naming_it():
    with pytest.raises(ComponentError, match="max_parallelism must be an integer >= 1"):
        Workpool("x", max_parallelism=0)
    with pytest.raises(ComponentError, match="missing \\['base'\\]"):
        Workpool("x", default_retry_behavior={"maxAttempts": 2, "initialBackoffMs": 1})
    with pytest.raises(ComponentError, match="non-empty printable ASCII"):
        Workpool("")
    other = Workpool("other")
    async with ConvexTest(APP) as t:
        pool = work(t).pool
        with pytest.raises(ComponentError, match="enqueue_action must be an action"):
            await t.run(lambda ctx: pool.enqueue_action(ctx, "work:note", {"key": "x"}))
        with pytest.raises(ComponentError, match="enqueue_mutation must be a mutation"):
            await t.run(lambda ctx: pool.enqueue_mutation(ctx, "work:busy", {"key": "x"}))
        with pytest.raises(ComponentError, match="run_after must be >= 0"):
            await t.run(lambda ctx: pool.enqueue_mutation(ctx, "work:note", run_after=-1))
        with pytest.raises(ComponentError, match="maxAttempts must be an integer >= 1"):
            retry = {"maxAttempts": 0, "initialBackoffMs": 1, "base": 2}
            await t.run(lambda ctx: pool.enqueue_action(ctx, "work:busy", retry=retry))
        work_id = await t.run(lambda ctx: other.enqueue_mutation(ctx, "work:note", {"key": "o"}))
        with pytest.raises(ComponentError, match="belongs to the pool 'other', not this one"):
            await t.run(lambda ctx: pool.status(ctx, work_id))


# -- runtime crons ----------------------------------------------------------------------------


async def test_runtime_cron_register_get_list_delete():
    crons = RuntimeCrons()
    async with ConvexTest(APP) as t:
        start = t.now
        every = await t.run(
            lambda ctx: crons.register(
                ctx, {"kind": "interval", "minutes": 1}, "work:note", {"key": "m"}, name="minutely"
            )
        )
        paris = await t.run(
            lambda ctx: crons.register(
                ctx, "0 9 * * *", "work:note", {"key": "p"}, timezone="Europe/Paris"
            )
        )
        info = await t.run(lambda ctx: crons.get(ctx, name="minutely"))
        assert info == await t.run(lambda ctx: crons.get(ctx, id=every))
        assert info["nextRun"] == start + MINUTE  # an interval runs one period after registering
        assert info["schedule"] == {"kind": "interval", "seconds": 60}  # normalized
        by_id = await t.run(lambda ctx: crons.get(ctx, id=paris))
        assert by_id["name"] is None
        assert by_id["nextRun"] == start + 8 * 60 * MINUTE  # 09:00 in Paris is 08:00 UTC in January
        assert [c["id"] for c in await t.run(crons.list)] == [every, paris]
        await t.advance(3 * MINUTE)
        assert (await t.query("work:notes")).count("m") == 3
        info = await t.run(lambda ctx: crons.get(ctx, name="minutely"))
        assert [r["status"] for r in info["lastRuns"]] == ["success"] * 3
        assert info["nextRun"] == start + 4 * MINUTE
        assert await t.run(lambda ctx: crons.delete(ctx, name="minutely")) is True
        assert await t.run(lambda ctx: crons.delete(ctx, name="minutely")) is False
        await t.advance(8 * 60 * MINUTE)
        notes = await t.query("work:notes")
        assert (notes.count("m"), notes.count("p")) == (3, 1)
        assert await t.run(lambda ctx: crons.get(ctx, name="minutely")) is None
        assert await t.run(lambda ctx: crons.delete(ctx, id=paris)) is True
        assert await t.run(crons.list) == []


async def test_runtime_cron_runs_one_at_a_time_and_skips_missed_runs():
    crons = RuntimeCrons()
    async with live(crons=False) as (rt, clock, module):
        start = clock.now()
        every = {"kind": "interval", "minutes": 1}
        await rt_run(
            rt, lambda ctx: crons.register(ctx, every, "work:gated", {"key": "c"}, name="slow")
        )
        get = lambda: rt_run(rt, lambda ctx: crons.get(ctx, name="slow"))  # noqa: E731
        clock.advance(MINUTE)
        await until(lambda: _true(module.calls.get("c") == 1))
        for _ in range(11):  # five and a half minutes, the first run still waiting on its gate
            clock.advance(MINUTE / 2)
            await asyncio.sleep(0.01)
        assert module.calls["c"] == 1
        assert (await get())["running"] is True
        module.gates["c"].set()
        await until(lambda: _true(not rt.dispatcher.running))
        info = await get()
        assert [r["status"] for r in info["lastRuns"]] == ["success", "skipped"]
        assert info["lastRuns"][1]["skipped"] == 5
        assert info["nextRun"] == start + 7 * MINUTE  # on the grid, at or after now
        clock.advance(MINUTE)
        await until(lambda: _true(module.calls["c"] == 2))


async def test_runtime_cron_names_never_collide_silently():
    crons = RuntimeCrons()
    async with ConvexTest(APP) as t:
        with pytest.raises(CronSpecError, match='"static tick" is a cron job of crons.py'):
            await t.run(
                lambda ctx: crons.register(
                    ctx, "* * * * *", "work:note", {"key": "x"}, name="static tick"
                )
            )
        await t.run(
            lambda ctx: crons.register(ctx, "* * * * *", "work:note", {"key": "x"}, name="one")
        )
        with pytest.raises(CronSpecError, match='a runtime cron job "one" exists'):
            await t.run(
                lambda ctx: crons.register(
                    ctx, "*/5 * * * *", "work:note", {"key": "y"}, name="one"
                )
            )
        with pytest.raises(CronSpecError, match="will never match"):
            await t.run(lambda ctx: crons.register(ctx, "0 0 30 2 *", "work:note", {"key": "z"}))
        with pytest.raises(CronSpecError, match="Interval must be an integer greater than 0"):
            await t.run(
                lambda ctx: crons.register(ctx, {"kind": "interval", "seconds": 0}, "work:note")
            )
        with pytest.raises(
            ComponentError, match="must be a mutation or an action, but 'work:notes' is a query"
        ):
            await t.run(lambda ctx: crons.register(ctx, "* * * * *", "work:notes"))
        with pytest.raises(ComponentError, match="give name= or id=, exactly one"):
            await t.run(lambda ctx: crons.get(ctx))
        assert [c["name"] for c in await t.run(crons.list)] == ["one"]


async def test_runtime_crons_survive_restart_and_reload(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(APP, app)
    store = f"sqlite:///{tmp_path}/data.sqlite3"
    clock = VirtualClock(1_767_225_600_000.0)
    crons = RuntimeCrons()
    async with ConvexTest(app, store=store, clock=clock) as t:
        start = t.now
        await t.run(
            lambda ctx: crons.register(
                ctx, {"kind": "interval", "minutes": 10}, "work:note", {"key": "r"}, name="ten"
            )
        )
        await t.advance(10 * MINUTE)
        assert await t.query("work:notes") == ["r"]
    async with ConvexTest(app, store=store, clock=clock) as t:
        await t.advance(10 * MINUTE)
        assert (await t.query("work:notes")).count("r") == 2
        await t.runtime.reload()
        await t.advance(10 * MINUTE)
        assert (await t.query("work:notes")).count("r") == 3
        info = await t.run(lambda ctx: crons.get(ctx, name="ten"))
        assert info["nextRun"] == start + 40 * MINUTE
        # A crons.py job named like the runtime cron is refused; the old code keeps running.
        (app / "crons.py").write_text(
            "from convexpy import cron_jobs\n\ncrons = cron_jobs()\n"
            'crons.interval("ten", {"hours": 1}, "work:note", {"key": "s"})\n'
        )
        with pytest.raises(CronSpecError, match='"ten" in crons.py is also a runtime cron job'):
            await t.runtime.reload()
        await t.advance(10 * MINUTE)
        assert (await t.query("work:notes")).count("r") == 4
    with pytest.raises((CronSpecError, AppLoadError)):
        async with ConvexTest(app, store=store, clock=clock):
            pass


async def test_every_building_block_takes_an_action_s_ctx_too():
    async with ConvexTest(APP) as t:
        # References travel to the mutation as paths, the retry policy as its fields.
        found = await t.action("work:from_an_action", {"key": "a"})
        assert found["run status"] == {"type": "inProgress", "attempt": 1}
        assert found["work status"] == {"state": "pending", "previousAttempts": 0}
        assert found["cron"]["id"] == found["cron id"] and found["cron"]["name"] == "a"
        assert found["crons"] == 1
        await t.advance(MINUTE)
        await t.finish_in_progress_scheduled_functions()
        await t.advance(1000)  # the retrier's backoff
        await t.finish_in_progress_scheduled_functions()
        assert await t.query("work:notes") == ["a-cron"]  # the cron's first run
        completions = await t.query("work:completions")
        assert {"id": found["run"], "result": {"type": "success", "returnValue": "ok a"}} in (
            completions
        )
        assert {
            "id": found["work"],
            "context": {"from": "an action"},
            "result": {"kind": "success", "returnValue": "ok a-pool"},
        } in completions
        stopped = await t.action("work:stop_from_an_action", {"key": "a", "run_id": found["run"]})
        assert stopped == [True, False, 0]  # the run had completed, the pool was empty
        assert await t.run(lambda ctx: work(t).crons.list(ctx)) == []


async def test_a_query_cannot_write_through_a_building_block():
    async with ConvexTest(APP) as t:
        with pytest.raises(TypeError, match="ctx of a mutation or an action, got QueryCtx"):
            await t.query("work:enqueue_in_a_query")


async def test_builtin_functions_resolve_but_are_not_listed_as_the_apps():
    async with ConvexTest(APP) as t:
        registry = t.runtime.app.registry
        assert not [path for path, _ in registry if path.startswith("_components/")]
        assert len(registry) == len(list(registry))
        path, fn = t.runtime.resolve(RUN_ACTION)
        assert (path, fn.kind, fn.visibility) == (RUN_ACTION, "action", "internal")
        with pytest.raises(Exception, match="Could not find public function"):
            registry.resolve(RUN_ACTION, trusted=False)
