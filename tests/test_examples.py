"""The apps in examples/, tested the way users test theirs: ConvexTest, virtual time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from convexpy import ConvexError, api
from convexpy.testing import ConvexTest

EXAMPLES = Path(__file__).parent.parent / "examples"
HOUR = 3600 * 1000


def app(name: str) -> Path:
    return EXAMPLES / name / "convex"


async def test_messages_destruct_after_five_seconds():
    async with ConvexTest(app("messages")) as t:
        await t.mutation(api.messages.send, {"body": "hi", "author": "ada"})
        await t.advance(4999)
        assert await t.query(api.messages.count) == 1
        await t.advance(1)
        assert await t.query(api.messages.count) == 0


async def test_reminder_is_sent_when_unpaid_and_canceled_when_paid():
    async with ConvexTest(app("reminders")) as t:
        due = t.now + HOUR
        unpaid = await t.mutation(
            api.payments.create, {"customer": "ada", "amount": 10, "dueAt": due}
        )
        paid = await t.mutation(api.payments.create, {"customer": "bob", "amount": 5, "dueAt": due})
        assert await t.query(api.payments.status, {"paymentId": paid}) == {
            "paid": False,
            "reminder": "pending",
        }
        await t.mutation(api.payments.pay, {"paymentId": paid})
        assert await t.query(api.payments.status, {"paymentId": paid}) == {
            "paid": True,
            "reminder": "canceled",
        }
        await t.advance(HOUR)
        assert await t.query(api.payments.emails) == ["ada"]
        assert (await t.query(api.payments.status, {"paymentId": unpaid}))["reminder"] == "success"
        # Paying after the reminder went out: cancel is a no-op.
        await t.mutation(api.payments.pay, {"paymentId": unpaid})
        assert (await t.query(api.payments.status, {"paymentId": unpaid}))["reminder"] == "success"


def unavailable(attempt: int) -> str:
    return f"upstream unavailable (attempt {attempt})"


@pytest.mark.parametrize(
    ("fail_first", "expected"),
    [
        (0, {"status": "done", "attempts": 0, "result": "HELLO", "error": None}),
        (2, {"status": "done", "attempts": 2, "result": "HELLO", "error": unavailable(2)}),
        (5, {"status": "failed", "attempts": 3, "result": None, "error": unavailable(3)}),
    ],
)
async def test_job_queue_retries_then_gives_up_after_three(fail_first, expected):
    async with ConvexTest(app("jobqueue")) as t:
        task = await t.mutation(api.queue.enqueue, {"payload": "hello", "failFirst": fail_first})
        await t.finish_all_scheduled_functions()
        assert await t.query(api.queue.status, {"taskId": task}) == expected


async def test_rate_limit_per_window_and_cleanup_cron():
    async with ConvexTest(app("ratelimit")) as t:
        for _ in range(3):
            await t.mutation(api.limits.send, {"user": "ada", "body": "x"})
        with pytest.raises(ConvexError) as info:
            await t.mutation(api.limits.send, {"user": "ada", "body": "x"})
        assert info.value.data["code"] == "RATE_LIMITED"
        await t.mutation(api.limits.send, {"user": "bob", "body": "x"})
        await t.advance(60_000)
        await t.mutation(api.limits.send, {"user": "ada", "body": "x"})  # a new window
        assert await t.query(api.limits.counters) == 3
        await t.advance(HOUR)  # the hourly cleanup cron removes finished windows
        assert await t.query(api.limits.counters) == 0


async def test_rate_limit_holds_under_concurrent_sends():
    async with ConvexTest(app("ratelimit")) as t:
        results = await asyncio.gather(
            *(t.mutation(api.limits.send, {"user": "ada", "body": str(i)}) for i in range(10)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, Exception) for r in results) == 3
        assert all(isinstance(r, ConvexError) for r in results if isinstance(r, Exception))


async def test_every_cron_kind_runs_over_a_month():
    start = 1_767_225_600_000.0  # Thursday 2026-01-01 00:00 UTC
    async with ConvexTest(app("crons"), start_ms=start) as t:
        await t.advance(31 * 24 * HOUR - 1)  # all of January, not February 1st

        async def count(job):
            return await t.query(api.tasks.count, {"job": job})

        assert await count("check queue") == 31 * 24 * 6  # at deploy, then every 10 min
        assert await count("metrics") == 31 * 24
        assert await count("digest") == 31
        assert await count("backup") == 4  # Sundays 4, 11, 18, 25
        assert await count("billing") == 1
        assert await count("weekday reminder") == 22
        assert await count("paris lunch") == 31


@pytest.mark.parametrize(
    ("fail_first", "status", "result", "tries"),
    [
        (0, "done", "HELLO", 1),
        (2, "done", "HELLO", 3),
        (5, "failed", "ConnectionError: upstream unavailable (try 3)", 3),
    ],
)
async def test_durable_tasks_retry_with_backoff_then_record_once(fail_first, status, result, tries):
    async with ConvexTest(app("durable")) as t:
        start = t.now
        task = await t.mutation(api.tasks.enqueue, {"payload": "hello", "failFirst": fail_first})
        await t.finish_all_scheduled_functions()
        got = await t.query(api.tasks.status, {"taskId": task})
        assert (got["status"], got["result"], got["tries"]) == (status, result, tries)
        assert got["run"]["type"] == "completed"
        # Retries wait 1 s, then 2 s (max_failures=2): the last attempt starts at +3 s.
        assert t.now - start == {1: 0, 3: 3000}[tries]


async def test_durable_import_fetches_two_at_a_time_and_counts_in_on_complete():
    async with ConvexTest(app("durable")) as t:
        import_id = await t.mutation(api.imports.start, {"rows": 9, "badRow": 4})
        await t.finish_all_scheduled_functions()
        assert await t.query(api.imports.progress, {"importId": import_id}) == {
            "rows": 9,
            "done": 8,
            "failed": 1,  # after 3 attempts
        }
        [pool] = await t.run(lambda ctx: ctx.db.system.query("_workpools").collect())
        assert (pool["name"], pool["running"], pool["maxParallelism"]) == ("fetches", 0, 2)


async def test_durable_digests_follow_each_users_schedule():
    async with ConvexTest(app("durable")) as t:  # starts 2026-01-01, a Thursday, 00:00 UTC
        await t.mutation(
            api.digests.subscribe, {"user": "ada", "cron": "0 8 * * *", "timezone": "Europe/Paris"}
        )
        await t.mutation(
            api.digests.subscribe, {"user": "bob", "cron": "30 6 * * 1-5", "timezone": "UTC"}
        )
        assert (await t.query(api.digests.schedule, {"user": "ada"}))["nextRun"] == t.now + 7 * HOUR
        await t.advance(24 * HOUR)
        assert sorted(await t.query(api.digests.sent)) == ["ada", "bob"]
        # Changing a schedule replaces it; unsubscribing deletes it.
        await t.mutation(
            api.digests.subscribe, {"user": "ada", "cron": "0 12 * * *", "timezone": "UTC"}
        )
        assert await t.mutation(api.digests.unsubscribe, {"user": "bob"}) is True
        await t.advance(3 * 24 * HOUR)
        assert (await t.query(api.digests.sent)).count("ada") == 4
        assert (await t.query(api.digests.sent)).count("bob") == 1
