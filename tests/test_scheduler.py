"""The scheduler through the public API, in virtual time (no sleeps)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from convexpy import ConvexError, UserIdentity, api, internal
from convexpy.errors import ConvexpyError, SchedulerError
from convexpy.testing import ConvexTest

SCHED_APP = Path(__file__).parent / "apps" / "sched"


@pytest.fixture
async def t():
    async with ConvexTest(SCHED_APP) as harness:
        yield harness


async def jobs(t):
    return await t.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())


async def job(t, job_id):
    return await t.run(lambda ctx: ctx.db.system.get(job_id))


async def log(t):
    return await t.query(api.jobs.log)


def module(t, name="jobs"):
    return t.runtime.app.modules[name]


async def started(t, gate):
    """Wait (with a deadline) until the slow action behind ``gate`` has started."""
    signal = module(t).started_signals.setdefault(gate, asyncio.Event())
    with anyio.fail_after(5):
        await signal.wait()


async def test_job_document_shape_and_states(t):
    start = t.now
    job_id = await t.mutation(api.jobs.schedule, {"delay": 5000, "label": "a"})
    doc = await job(t, job_id)
    assert set(doc) == {"_id", "_creationTime", "name", "args", "scheduledTime", "state"}
    assert doc["name"] == "jobs:record"
    assert doc["args"] == [{"label": "a"}]
    assert doc["scheduledTime"] == start + 5000
    assert doc["state"] == {"kind": "pending"}
    await t.advance(5000)
    doc = await job(t, job_id)
    assert doc["state"] == {"kind": "success"}
    assert doc["completedTime"] == start + 5000
    assert await log(t) == ["a"]


async def test_never_runs_early_and_runs_in_scheduled_time_order(t):
    for delay, label in [(300, "c"), (100, "a"), (200, "b"), (100, "a2")]:
        await t.mutation(api.jobs.schedule, {"delay": delay, "label": label})
    await t.advance(99)
    assert await log(t) == []
    await t.advance(1)
    assert await log(t) == ["a", "a2"]
    await t.advance(199)
    assert await log(t) == ["a", "a2", "b"]
    await t.advance(1)
    assert await log(t) == ["a", "a2", "b", "c"]


async def test_run_at_timedelta_datetime_and_aliases(t):
    from datetime import UTC, datetime

    when = t.now + 2500
    await t.mutation(api.jobs.schedule_at, {"when": when, "label": "at"})
    ids = await t.mutation(api.jobs.schedule_aliases, {"past": t.now - 60_000})
    assert (await job(t, ids[0]))["scheduledTime"] == t.now + 1000
    await t.finish_in_progress_scheduled_functions()
    assert await log(t) == ["past"]  # a past time runs as soon as possible
    await t.advance(2500)
    assert await log(t) == ["past", "td", "at"]
    aware = datetime.fromtimestamp((t.now + 1000) / 1000, tz=UTC)
    job_id = await t.run(
        lambda ctx: ctx.scheduler.run_at(aware, internal.jobs.record, {"label": "dt"})
    )
    assert (await job(t, job_id))["scheduledTime"] == pytest.approx(t.now + 1000)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("negative", "non-negative"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("naive", "naive"),
        ("unknown", "nonexistent path: jobs:nope"),
        ("query", "is a query"),
        ("args_not_dict", "must be a dict"),
        ("args_not_convex", "not Convex values"),
        ("cancel_other_table", "_scheduled_functions"),
        ("cancel_garbage", "_scheduled_functions"),
        ("too_far", "5 years"),
        ("huge", "finite"),
    ],
)
@pytest.mark.parametrize("warm", [False, True])
async def test_bad_scheduler_calls_raise_and_change_nothing(t, case, message, warm):
    with pytest.raises(SchedulerError, match=message):
        await t.mutation(api.jobs.try_schedule, {"case": case, "warm": warm})
    assert await jobs(t) == []
    assert await log(t) == []


async def test_limit_of_1000_jobs_per_transaction(t):
    assert await t.mutation(api.jobs.schedule_many, {"n": 1000}) == 1000
    with pytest.raises(
        SchedulerError, match=r"Too many functions scheduled by this mutation \(limit: 1000\)"
    ):
        await t.mutation(api.jobs.schedule_many, {"n": 1001})
    assert len(await jobs(t)) == 1000


async def test_limit_of_16_mib_of_arguments(t):
    await t.mutation(api.jobs.schedule_big, {"count": 15, "size": 1_000_000})
    with pytest.raises(SchedulerError, match="Too large total size"):
        await t.mutation(api.jobs.schedule_big, {"count": 17, "size": 1_000_000})
    assert len(await jobs(t)) == 15


async def test_jobs_from_a_failed_mutation_do_not_exist(t):
    with pytest.raises(ConvexError):
        await t.mutation(api.jobs.schedule_then_fail)
    await t.finish_all_scheduled_functions()
    assert await jobs(t) == []
    assert await log(t) == []


async def test_jobs_from_an_action_survive_the_action_failing(t):
    with pytest.raises(RuntimeError):
        await t.action(api.jobs.schedule_from_action, {"fail": True})
    await t.finish_all_scheduled_functions()
    assert await log(t) == ["from action"]


async def test_failing_mutation_job_records_error_and_rolls_back(t):
    job_id = await t.mutation(api.jobs.schedule_fails)
    await t.finish_all_scheduled_functions()
    doc = await job(t, job_id)
    assert doc["state"]["kind"] == "failed"
    assert "ValueError: bad f" in doc["state"]["error"]
    assert "completedTime" in doc
    assert await log(t) == []  # the handler's insert was rolled back


async def test_argument_validation_failure_marks_job_failed(t):
    job_id = await t.mutation(api.jobs.schedule_bad_args)
    await t.finish_all_scheduled_functions()
    doc = await job(t, job_id)
    assert doc["state"]["kind"] == "failed"
    assert "label" in doc["state"]["error"]


async def test_cancel_pending_job_never_runs(t):
    job_id = await t.mutation(api.jobs.schedule, {"delay": 1000, "label": "x"})
    await t.mutation(api.jobs.cancel, {"job_id": job_id})
    doc = await job(t, job_id)
    assert doc["state"] == {"kind": "canceled"} and doc["completedTime"] == t.now
    await t.advance(5000)
    assert await log(t) == []
    # Cancelling a finished job is a no-op.
    await t.mutation(api.jobs.cancel, {"job_id": job_id})
    done = await t.mutation(api.jobs.schedule, {"delay": 0, "label": "y"})
    await t.finish_in_progress_scheduled_functions()
    await t.mutation(api.jobs.cancel, {"job_id": done})
    assert (await job(t, done))["state"] == {"kind": "success"}


async def test_cancel_in_a_failed_mutation_is_rolled_back(t):
    job_id = await t.mutation(api.jobs.schedule, {"delay": 1000, "label": "x"})

    async def cancel_then_fail(ctx):
        await ctx.scheduler.cancel(job_id)
        raise ConvexError("no")

    with pytest.raises(ConvexError):
        await t.run(cancel_then_fail)
    await t.advance(1000)
    assert await log(t) == ["x"]


async def test_a_scheduled_mutation_cannot_cancel_itself(t):
    job_ids = []

    async def schedule(ctx):
        job_ids.append(await ctx.scheduler.run_after(10, internal.jobs.self_cancel, {"me": "?"}))

    await t.run(schedule)
    # Re-point the job's argument at itself by scheduling a fresh one with its id.
    first = job_ids[0]
    await t.mutation(api.jobs.cancel, {"job_id": first})

    async def schedule_self(ctx):
        # The id is only known after insert, so schedule with a placeholder then
        # run a job that cancels a job id equal to its own.
        return await ctx.scheduler.run_after(10, internal.jobs.self_cancel, {"me": "pending"})

    job_id = await t.run(schedule_self)

    async def fix_args(ctx):
        doc = await ctx.db.system.get(job_id)
        assert doc is not None
        return doc

    doc = await t.run(fix_args)
    assert doc["args"] == [{"me": "pending"}]
    # Direct check through the scheduler API of a running job:
    from convexpy.scheduler.api import MutationScheduler

    txn = t.runtime.transaction(writable=True)
    try:
        scheduler = MutationScheduler(t.runtime, txn, current_job=job_id)
        with pytest.raises(SchedulerError, match="A mutation cannot cancel itself"):
            await scheduler.cancel(job_id)
    finally:
        txn.release()


async def test_auth_is_not_propagated_to_scheduled_functions(t):
    me = UserIdentity(subject="u1", issuer="iss")
    await t.mutation(api.jobs.schedule_whoami, identity=me)
    await t.finish_all_scheduled_functions()
    assert await log(t) == ["anonymous"]


async def test_action_is_in_progress_before_its_handler_runs(t):
    job_id = await t.mutation(api.jobs.schedule_read_own_state)
    await t.finish_all_scheduled_functions()
    assert await log(t) == ["inProgress"]
    assert (await job(t, job_id))["state"] == {"kind": "success"}


async def test_failed_action_is_never_retried(t):
    job_id = await t.mutation(api.jobs.schedule_failing_action)
    await t.finish_all_scheduled_functions()
    doc = await job(t, job_id)
    assert doc["state"]["kind"] == "failed"
    assert "RuntimeError: action failed" in doc["state"]["error"]
    await t.advance(24 * 3600 * 1000)
    assert await log(t) == ["survives"]  # ran once, and its scheduled job survived


async def test_cancel_running_action_keeps_running_and_ends_canceled(t):
    gates = module(t).gates
    gates["g"] = asyncio.Event()
    job_id = await t.mutation(api.jobs.schedule_action, {"gate": "g", "then": "after cancel"})
    runner = asyncio.create_task(t.finish_in_progress_scheduled_functions())
    await started(t, "g")
    assert (await job(t, job_id))["state"] == {"kind": "inProgress"}
    await t.mutation(api.jobs.cancel, {"job_id": job_id})
    gates["g"].set()
    await runner
    await t.finish_all_scheduled_functions()
    assert (await job(t, job_id))["state"] == {"kind": "canceled"}
    # It kept running (its mutation committed) ...
    assert await log(t) == ["done g"]
    # ... and the job it scheduled after the cancel was created canceled.
    others = [j for j in await jobs(t) if j["name"] == "jobs:record"]
    assert [j["state"]["kind"] for j in others] == ["canceled"]


async def test_parallelism_bounds_running_jobs(tmp_path):
    async with ConvexTest(SCHED_APP, parallelism=3) as t:
        gates = module(t).gates
        for i in range(7):
            gates[f"p{i}"] = asyncio.Event()
            await t.mutation(api.jobs.schedule_action, {"gate": f"p{i}"})
        runner = asyncio.create_task(t.advance(10))
        for gate in ("p0", "p1", "p2"):
            await started(t, gate)
        for _ in range(100):  # give a fourth job every chance to start, if it could
            await asyncio.sleep(0)
        assert module(t).started == ["p0", "p1", "p2"]
        assert t.runtime.dispatcher.running == 3
        gates["p0"].set()
        await started(t, "p3")
        assert module(t).started == ["p0", "p1", "p2", "p3"]  # in scheduled order
        for gate in gates.values():
            gate.set()
        await runner
        assert sorted(await log(t)) == sorted(f"done p{i}" for i in range(7))


async def test_retry_pattern_gives_up_after_three_attempts(t):
    task = await t.mutation(api.retry.enqueue, {"payload": "p", "fail_times": 10})
    await t.finish_all_scheduled_functions()
    assert await t.query(api.retry.status, {"taskId": task}) == {"status": "failed", "attempts": 3}
    ok = await t.mutation(api.retry.enqueue, {"payload": "q", "fail_times": 1})
    await t.finish_all_scheduled_functions()
    assert await t.query(api.retry.status, {"taskId": ok}) == {"status": "done", "attempts": 1}


async def test_finish_all_has_a_bound_against_infinite_rescheduling(t):
    await t.mutation(api.jobs.start_forever)
    with pytest.raises(ConvexpyError, match="reschedules itself"):
        await t.finish_all_scheduled_functions(max_jobs=50)


async def test_advance_runs_a_self_rescheduling_chain_on_virtual_time(t):
    start = t.now
    await t.mutation(api.jobs.start_forever)
    await t.advance(3600 * 1000)  # an hour of a job rescheduling itself every second
    done = [j for j in await jobs(t) if j["state"]["kind"] == "success"]
    assert len(done) == 3601
    assert sorted(j["completedTime"] - start for j in done) == [1000.0 * i for i in range(3601)]


async def test_retention_deletes_finished_jobs_after_seven_days(t):
    job_id = await t.mutation(api.jobs.schedule, {"delay": 0, "label": "x"})
    pending = await t.mutation(api.jobs.schedule, {"delay": 30 * 24 * 3600 * 1000, "label": "y"})
    await t.finish_in_progress_scheduled_functions()
    await t.advance(7 * 24 * 3600 * 1000 - 1)
    assert await job(t, job_id) is not None
    await t.advance(120_000)
    assert await job(t, job_id) is None
    assert (await job(t, pending))["state"] == {"kind": "pending"}


async def test_conflicting_scheduled_mutation_retries_and_applies_exactly_once(t):
    counter = await t.mutation(api.jobs.make_counter)
    job_id = await t.mutation(api.jobs.schedule_slow_bump, {"counter": counter})
    runner = asyncio.create_task(t.advance(60_000))
    await started(t, "slow_bump")
    # While the job holds its read of the counter, a client bumps it: the job's
    # commit must conflict, back off on the virtual clock and re-run.
    await t.mutation(api.jobs.bump_counter, {"counter": counter})
    module(t).gates["slow_bump"].set()
    await runner
    assert module(t).attempts == [counter, counter]
    assert await t.query(api.jobs.counter_value, {"counter": counter}) == 2
    assert (await job(t, job_id))["state"] == {"kind": "success"}
    assert t.runtime.store.conflicts >= 1


async def test_job_whose_function_disappeared_on_reload_fails_clearly(make_app):
    code = """
from convexpy import internal, internal_mutation, mutation

@internal_mutation
async def later(ctx) -> None:
    pass

@mutation
async def plan(ctx) -> str:
    return await ctx.scheduler.run_after(1000, internal.m.later, {})
"""
    root = make_app({"m.py": code})
    async with ConvexTest(root) as t:
        job_id = await t.mutation("m:plan")
        (root / "m.py").write_text(code.replace("async def later", "async def renamed"))
        await t.runtime.reload()
        await t.advance(1000)
        doc = await job(t, job_id)
        assert doc["state"]["kind"] == "failed"
        assert "'m:later' no longer exists" in doc["state"]["error"]


async def test_reload_keeps_data_and_a_broken_module_keeps_the_old_version(make_app):
    from convexpy.loader import AppLoadError

    code = """
from convexpy import mutation, query

@mutation
async def add(ctx) -> str:
    return await ctx.db.insert("things", {"n": 1.0})

@query
async def count(ctx) -> int:
    return len(await ctx.db.query("things").collect())
"""
    root = make_app({"m.py": code})
    async with ConvexTest(root) as t:
        await t.mutation("m:add")
        (root / "m.py").write_text(code + "\n\nsyntax error here\n")
        with pytest.raises(AppLoadError, match=r"m\.py"):
            await t.runtime.reload()
        assert await t.query("m:count") == 1  # the previous version keeps serving
        (root / "m.py").write_text(code.replace('"n": 1.0', '"n": 2.0'))
        await t.runtime.reload()
        await t.mutation("m:add")
        assert await t.query("m:count") == 2


async def test_parallelism_holds_with_mutations_and_actions_mixed():
    async with ConvexTest(SCHED_APP, parallelism=2) as t:
        dispatcher = t.runtime.dispatcher
        peak = 0
        spawn = dispatcher._spawn

        def counting_spawn(job_ids, work):
            nonlocal peak
            spawn(job_ids, work)
            peak = max(peak, len(dispatcher._tasks))

        dispatcher._spawn = counting_spawn
        gates = module(t).gates
        for gate in ("a1", "a2", "a3"):
            gates[gate] = asyncio.Event()
        await t.mutation(api.jobs.schedule_action, {"gate": "a1"})
        await t.mutation(api.jobs.schedule, {"delay": 0, "label": "m1"})
        await t.mutation(api.jobs.schedule_action, {"gate": "a2"})
        await t.mutation(api.jobs.schedule_action, {"gate": "a3"})
        runner = asyncio.create_task(t.advance(0))
        await started(t, "a1")
        await started(t, "a2")
        for _ in range(100):
            await asyncio.sleep(0)
        assert module(t).started == ["a1", "a2"]
        for gate in gates.values():
            gate.set()
        await runner
        assert peak <= 2
        assert sorted(await log(t)) == ["done a1", "done a2", "done a3", "m1"]


async def test_retention_period_is_configurable():
    async with ConvexTest(SCHED_APP, retention_ms=3600 * 1000) as t:
        job_id = await t.mutation(api.jobs.schedule, {"delay": 0, "label": "x"})
        await t.finish_in_progress_scheduled_functions()
        await t.advance(3600 * 1000 - 1)
        assert await job(t, job_id) is not None
        await t.advance(1)
        assert await job(t, job_id) is None


async def test_store_failures_at_commit_are_retried_until_the_job_commits(t):
    store = t.runtime.store
    commit = store.commit
    failures = []

    async def flaky_commit(snapshot, reads, writes, on_accepted=None):
        if any(w.table == "log" for w in writes) and len(failures) < 2:
            failures.append(True)
            raise OSError("disk hiccup")
        return await commit(snapshot, reads, writes, on_accepted)

    store.commit = flaky_commit
    job_id = await t.mutation(api.jobs.schedule, {"delay": 0, "label": "once"})
    await t.advance(60_000)  # backoff is 500 ms doubling, on the virtual clock
    assert failures == [True, True]
    assert await log(t) == ["once"]
    assert (await job(t, job_id))["state"] == {"kind": "success"}
