"""Cron jobs end to end in virtual time: instants, overlap, skips, restarts, redeploys."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convexpy.clock import VirtualClock
from convexpy.errors import CronSpecError
from convexpy.testing import ConvexTest

CRON_APP = Path(__file__).parent / "apps" / "crons"
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def ms(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp() * 1000


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


async def runs(t, name):
    return [iso(x) for x in await t.query("runs:runs", {"name": name})]


async def cron_docs(t):
    docs = await t.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect())
    return {d["name"]: d for d in docs}


async def test_clock_schedules_fire_at_the_right_instants_over_months():
    # 2028 is a leap year; start on Jan 30th, run to Mar 2nd.
    async with ConvexTest(CRON_APP, start_ms=ms(2028, 1, 30, 0, 0, 0)) as t:
        await t.advance(ms(2028, 3, 2) - t.now)
        assert await runs(t, "monthly 31st") == ["2028-01-31 00:00"]  # not in February
        assert await runs(t, "leap day") == ["2028-02-29 12:00"]
        weekly = await runs(t, "weekly")
        assert weekly == [
            "2028-01-30 02:00",  # a Sunday
            "2028-02-06 02:00",
            "2028-02-13 02:00",
            "2028-02-20 02:00",
            "2028-02-27 02:00",
        ]
        daily = await runs(t, "daily")
        assert len(daily) == 32 and daily[0] == "2028-01-30 08:30"
        assert daily[-1] == "2028-03-01 08:30"
        hourly = await runs(t, "hourly")
        assert len(hourly) == 32 * 24 and hourly[0] == "2028-01-30 00:15"
        weekdays = await runs(t, "weekdays 17h")
        assert weekdays[0] == "2028-01-31 17:00"  # Jan 30 2028 is a Sunday
        assert all(datetime.strptime(d, "%Y-%m-%d %H:%M").weekday() < 5 for d in weekdays)
        assert len(weekdays) == 23


async def test_interval_runs_at_deploy_then_on_its_grid(make_app):
    start = ms(2026, 5, 1, 10, 0, 7)
    root = make_app(
        {
            "runs.py": (CRON_APP / "runs.py").read_text(),
            "crons.py": textwrap.dedent(
                """
                from convexpy import cron_jobs, internal
                crons = cron_jobs()
                crons.interval("every 90s", {"seconds": 90}, internal.runs.record,
                               {"name": "every 90s"})
                """
            ),
        }
    )
    async with ConvexTest(root, start_ms=start) as t:
        await t.advance(10 * MINUTE)
        times = await t.query("runs:runs", {"name": "every 90s"})
        assert times[0] == start
        assert [b - a for a, b in itertools.pairwise(times)] == [90_000.0] * (len(times) - 1)
        assert len(times) == 7  # 0, 90, ..., 540 s


def slow_app(make_app, schedule="{'minutes': 1}"):
    return make_app(
        {
            "runs.py": (CRON_APP / "runs.py").read_text(),
            "crons.py": textwrap.dedent(
                f"""
                from convexpy import cron_jobs, internal
                crons = cron_jobs()
                crons.interval("slow", {schedule}, internal.runs.slow, {{"name": "slow"}})
                """
            ),
        }
    )


async def test_slow_action_never_overlaps_and_missed_runs_are_skipped(make_app):
    async with ConvexTest(slow_app(make_app), start_ms=ms(2026, 1, 1)) as t:
        gates = t.runtime.app.modules["runs"].gates
        gates["slow"] = asyncio.Event()
        runner = asyncio.create_task(t.advance(0))
        await asyncio.sleep(0)
        # The first run is stuck; five virtual minutes pass.
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(await t.query("runs:runs", {"name": "slow"})) == 1
        t.clock.advance(5 * MINUTE + 30_000)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(await t.query("runs:runs", {"name": "slow"})) == 1  # no overlap
        gates["slow"].set()
        await runner
        await t.advance(0)
        doc = (await cron_docs(t))["slow"]
        statuses = [(r["status"], r.get("skipped")) for r in doc["lastRuns"]]
        assert statuses == [("success", None), ("skipped", 5)]
        assert doc["nextRun"] == ms(2026, 1, 1) + 6 * MINUTE
        await t.advance(MINUTE)
        assert len(await t.query("runs:runs", {"name": "slow"})) == 2


async def test_restart_after_a_day_down_runs_each_job_once(tmp_path):
    store = f"sqlite:///{tmp_path}/crons.sqlite3"
    clock = VirtualClock(ms(2026, 3, 2, 0, 0, 0))
    async with ConvexTest(CRON_APP, store=store, clock=clock) as t:
        await t.advance(HOUR)
        assert len(await runs(t, "hourly")) == 1
    clock.advance(DAY)  # down for a day
    async with ConvexTest(CRON_APP, store=store, clock=clock) as t:
        await t.advance(0)
        assert len(await runs(t, "hourly")) == 2  # once, not once per missed hour
        assert len(await runs(t, "daily")) == 1  # missed 08:30 ran once, late
        doc = (await cron_docs(t))["hourly"]
        assert doc["lastRuns"][-1]["status"] == "skipped"
        assert doc["lastRuns"][-1]["skipped"] == 23
        assert doc["nextRun"] == ms(2026, 3, 3, 1, 15)


async def test_redeploy_matches_jobs_by_name(make_app):
    root = make_app(
        {
            "runs.py": (CRON_APP / "runs.py").read_text(),
            "crons.py": textwrap.dedent(
                """
                from convexpy import cron_jobs, internal
                crons = cron_jobs()
                crons.daily("same", {"hourUTC": 9}, internal.runs.record, {"name": "same"})
                crons.daily("changed", {"hourUTC": 9}, internal.runs.record, {"name": "changed"})
                crons.daily("removed", {"hourUTC": 9}, internal.runs.record, {"name": "removed"})
                """
            ),
        }
    )
    async with ConvexTest(root, start_ms=ms(2026, 1, 1)) as t:
        await t.advance(DAY)
        before = await cron_docs(t)
        assert set(before) == {"same", "changed", "removed"}
        (root / "crons.py").write_text(
            textwrap.dedent(
                """
                from convexpy import cron_jobs, internal
                crons = cron_jobs()
                crons.daily("same", {"hourUTC": 9}, internal.runs.record, {"name": "same"})
                crons.daily("changed", {"hourUTC": 20}, internal.runs.record, {"name": "changed"})
                crons.hourly("new", {"minuteUTC": 5}, internal.runs.record, {"name": "new"})
                """
            )
        )
        await t.runtime.reload()
        after = await cron_docs(t)
        assert set(after) == {"same", "changed", "new"}
        assert after["same"]["_id"] == before["same"]["_id"]
        assert after["same"]["nextRun"] == before["same"]["nextRun"]
        assert after["same"]["lastRuns"] == before["same"]["lastRuns"]
        assert after["changed"]["nextRun"] == ms(2026, 1, 2, 20, 0)
        assert after["new"]["nextRun"] == ms(2026, 1, 2, 0, 5)
        await t.advance(DAY)
        assert await runs(t, "removed") == ["2026-01-01 09:00"]
        assert await runs(t, "changed") == ["2026-01-01 09:00", "2026-01-02 20:00"]


@pytest.mark.parametrize(
    ("zone", "start", "expected", "expr"),
    [
        # Spring forward: 02:30 does not exist; fires at the end of the gap (03:00).
        (
            "Europe/Paris",
            (2026, 3, 28),
            ["2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"],
            "30 2 * * *",
        ),
        # Fall back: 02:30 happens twice; fires once, at the first one (CEST, UTC+2).
        (
            "Europe/Paris",
            (2026, 10, 24),
            ["2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"],
            "30 2 * * *",
        ),
        (
            "America/New_York",
            (2026, 3, 7),
            ["2026-03-07 07:30", "2026-03-08 07:00", "2026-03-09 06:30"],
            "30 2 * * *",
        ),
        # New York repeats 01:00-02:00: 01:30 fires once, at the first (EDT, UTC-4).
        (
            "America/New_York",
            (2026, 10, 31),
            ["2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30"],
            "30 1 * * *",
        ),
    ],
)
async def test_timezone_jobs_across_dst(make_app, zone, start, expected, expr):
    root = make_app(
        {
            "runs.py": (CRON_APP / "runs.py").read_text(),
            "crons.py": textwrap.dedent(
                f"""
                from convexpy import cron_jobs, internal
                crons = cron_jobs()
                crons.cron("local", {expr!r}, internal.runs.record, {{"name": "local"}},
                           timezone={zone!r})
                """
            ),
        }
    )
    async with ConvexTest(root, start_ms=ms(*start)) as t:
        await t.advance(3 * DAY)
        assert await runs(t, "local") == expected


async def test_crons_can_be_disabled():
    async with ConvexTest(CRON_APP, crons=False, start_ms=ms(2026, 1, 1)) as t:
        await t.advance(2 * DAY)
        assert await runs(t, "hourly") == []
        assert await cron_docs(t) == {}


async def test_invalid_cron_target_is_refused_at_load(make_app):
    root = make_app(
        {
            "q.py": "from convexpy import query\n\n@query\nasync def q(ctx):\n    return 1\n",
            "crons.py": textwrap.dedent(
                """
                from convexpy import cron_jobs
                crons = cron_jobs()
                crons.hourly("bad", {"minuteUTC": 0}, "q:q")
                """
            ),
        }
    )
    with pytest.raises(CronSpecError, match="query"):
        async with ConvexTest(root):
            pass


async def test_clock_schedules_over_a_leap_year_quarter():
    # Four months of 2028: the 31st fires only in Jan and Mar; Feb 29 exists.
    async with ConvexTest(CRON_APP, start_ms=ms(2028, 1, 1)) as t:
        await t.advance(ms(2028, 5, 1) - 1 - t.now)
        assert await runs(t, "monthly 31st") == ["2028-01-31 00:00", "2028-03-31 00:00"]
        assert await runs(t, "leap day") == ["2028-02-29 12:00"]
        days = 31 + 29 + 31 + 30
        assert len(await runs(t, "daily")) == days
        assert len(await runs(t, "hourly")) == days * 24
        sundays = await runs(t, "weekly")
        assert len(sundays) == 18 and sundays[0] == "2028-01-02 02:00"  # Jan 2 .. Apr 30
        weekdays = await runs(t, "weekdays 17h")
        expected = sum(
            1
            for day in range(days)
            if datetime.fromtimestamp(ms(2028, 1, 1) / 1000 + day * 86400, tz=UTC).weekday() < 5
        )
        assert len(weekdays) == expected
