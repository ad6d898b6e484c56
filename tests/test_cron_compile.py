"""The cron compiler: DESIGN §5's rules pinned by hand, validation, oracles, DST.

Expected timestamps in the pinned tables were read off a calendar, not
computed by the code under test. The property tests compare against an
independent brute-force reference of the same rules (full grammar), and
against croniter and cronsim on the sub-grammar where all three agree.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from cronsim import CronSim
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convexpy.cron import ClockSchedule, IntervalSchedule, Schedule, compile_schedule
from convexpy.errors import CronSpecError


def ms(text: str) -> int:
    """Epoch ms of an ISO time; a bare ``YYYY-MM-DDTHH:MM`` is UTC."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1000


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def fires(spec: str | dict[str, object], start: str, count: int, **kwargs: str) -> list[str]:
    schedule = compile_schedule(spec, **kwargs)
    ts = ms(start)
    out = []
    for _ in range(count):
        ts = schedule.next_after(ts)
        out.append(iso(ts))
    return out


# --- (a) the rules, pinned ----------------------------------------------------

PINNED = [
    # a-a is the single value a (croniter reads 5-5 as every minute).
    ("5-5 * * * *", "2024-01-01T00:00", ["2024-01-01T00:05", "2024-01-01T01:05"]),
    ("5-5/10 * * * *", "2024-01-01T00:00", ["2024-01-01T00:05", "2024-01-01T01:05"]),
    ("0 0 1-1 * *", "2024-01-01T00:00", ["2024-02-01T00:00", "2024-03-01T00:00"]),
    ("0 0 * * mon-mon", "2024-01-01T00:00", ["2024-01-08T00:00", "2024-01-15T00:00"]),
    # Wrapping ranges.
    (
        "0 22-2 * * *",
        "2024-01-01T00:00",
        ["2024-01-01T01:00", "2024-01-01T02:00", "2024-01-01T22:00", "2024-01-01T23:00"],
    ),
    (
        "0 0 * * fri-mon",
        "2024-01-01T00:00",
        [
            "2024-01-05T00:00",
            "2024-01-06T00:00",
            "2024-01-07T00:00",
            "2024-01-08T00:00",
            "2024-01-12T00:00",
        ],
    ),
    (
        "0 0 30-2 * *",
        "2024-01-29T00:00",
        [
            "2024-01-30T00:00",
            "2024-01-31T00:00",
            "2024-02-01T00:00",
            "2024-02-02T00:00",
            "2024-03-01T00:00",
            "2024-03-02T00:00",
            "2024-03-30T00:00",
        ],
    ),
    (
        "0 0 1 nov-feb *",
        "2024-03-01T00:00",
        [
            "2024-11-01T00:00",
            "2024-12-01T00:00",
            "2025-01-01T00:00",
            "2025-02-01T00:00",
            "2025-11-01T00:00",
        ],
    ),
    # Steps: */n, a/n (to the field's max), a-b/n, wrapping a-b/n.
    (
        "10/20 * * * *",
        "2024-01-01T00:00",
        ["2024-01-01T00:10", "2024-01-01T00:30", "2024-01-01T00:50", "2024-01-01T01:10"],
    ),
    (
        "10-40/15 9 * * *",
        "2024-01-01T00:00",
        ["2024-01-01T09:10", "2024-01-01T09:25", "2024-01-01T09:40", "2024-01-02T09:10"],
    ),
    (
        "0 22-3/2 * * *",
        "2024-01-01T00:00",
        ["2024-01-01T02:00", "2024-01-01T22:00", "2024-01-02T00:00", "2024-01-02T02:00"],
    ),
    (
        "0 0 */10 * *",
        "2024-01-01T00:00",
        ["2024-01-11T00:00", "2024-01-21T00:00", "2024-01-31T00:00", "2024-02-01T00:00"],
    ),
    (
        "0 0 1 */5 *",
        "2024-01-01T00:00",
        ["2024-06-01T00:00", "2024-11-01T00:00", "2025-01-01T00:00"],
    ),
    ("*/59 * * * *", "2024-01-01T00:00", ["2024-01-01T00:59", "2024-01-01T01:00"]),
    # Where saffron reads these otherwise (README's table), the intended
    # meaning: no :49 in 50-10; wrapping steps over day of week, month and
    # day of month reach the cycle's first value (Sunday, January, the 1st).
    ("50-10 * * * *", "2024-01-01T00:45", ["2024-01-01T00:50", "2024-01-01T00:51"]),
    (
        "0 0 * * 5-1/2",
        "2024-01-01T00:00",
        ["2024-01-05T00:00", "2024-01-07T00:00", "2024-01-12T00:00"],
    ),
    ("0 0 1 11-2/2 *", "2024-03-01T00:00", ["2024-11-01T00:00", "2025-01-01T00:00"]),
    (
        "0 0 25-5/7 * *",
        "2024-01-01T00:00",
        ["2024-01-25T00:00", "2024-02-01T00:00", "2024-02-25T00:00", "2024-03-01T00:00"],
    ),
    # Names in any case, in lists and ranges.
    (
        "0 9 * jAn-MaR Mon,wed",
        "2024-03-27T00:00",
        ["2024-03-27T09:00", "2025-01-01T09:00", "2025-01-06T09:00"],
    ),
    ("0 0 * * sun,SAT", "2024-01-01T00:00", ["2024-01-06T00:00", "2024-01-07T00:00"]),
    # Sunday is 0 and 7.
    ("0 0 * * 0", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),
    ("0 0 * * 7", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),
    (
        "0 0 * * 5-7",
        "2024-01-01T00:00",
        ["2024-01-05T00:00", "2024-01-06T00:00", "2024-01-07T00:00", "2024-01-12T00:00"],
    ),
    ("0 0 * * 7-1", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-08T00:00"]),
    # a/n runs to Saturday, so 1/2 is Mon, Wed, Fri; 7/2 is Sunday alone.
    ("0 0 * * 1/2", "2024-01-05T00:00", ["2024-01-08T00:00", "2024-01-10T00:00"]),
    ("0 0 * * 7/2", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),
    # L: the last day of the month (2024 is a leap year, 2023 not).
    (
        "0 0 L * *",
        "2024-01-01T00:00",
        ["2024-01-31T00:00", "2024-02-29T00:00", "2024-03-31T00:00", "2024-04-30T00:00"],
    ),
    ("0 0 L 2 *", "2023-01-01T00:00", ["2023-02-28T00:00", "2024-02-29T00:00"]),
    # LW: the last weekday (Mar 31 2024 is a Sunday, Jun 30 a Sunday, Aug 31 a Saturday).
    (
        "0 0 LW * *",
        "2024-01-01T00:00",
        [
            "2024-01-31T00:00",
            "2024-02-29T00:00",
            "2024-03-29T00:00",
            "2024-04-30T00:00",
            "2024-05-31T00:00",
            "2024-06-28T00:00",
            "2024-07-31T00:00",
            "2024-08-30T00:00",
        ],
    ),
    # nW: 1W on Saturday Jun 1 2024 -> Monday 3rd; on Sunday Sep 1 -> Monday 2nd.
    (
        "0 0 1W * *",
        "2024-05-31T00:00",
        [
            "2024-06-03T00:00",
            "2024-07-01T00:00",
            "2024-08-01T00:00",
            "2024-09-02T00:00",
            "2024-10-01T00:00",
        ],
    ),
    # 31W: Sunday Mar 31 2024 -> Friday 29th; Saturday Aug 31 -> Friday 30th;
    # months without a 31st are skipped.
    (
        "0 0 31W * *",
        "2024-01-31T00:00",
        [
            "2024-03-29T00:00",
            "2024-05-31T00:00",
            "2024-07-31T00:00",
            "2024-08-30T00:00",
            "2024-10-31T00:00",
            "2024-12-31T00:00",
        ],
    ),
    # 15W: Saturday Jun 15 2024 -> Friday 14th; Sunday Sep 15 -> Monday 16th.
    ("0 0 15W 6,9 *", "2024-01-01T00:00", ["2024-06-14T00:00", "2024-09-16T00:00"]),
    # 30W: no February; Saturday Mar 30 2024 -> Friday 29th.
    ("0 0 30W * *", "2024-01-30T00:00", ["2024-03-29T00:00", "2024-04-30T00:00"]),
    # L-n: n days before the last day (Feb 2024 has 29 days, Apr 30).
    (
        "0 0 L-3 * *",
        "2024-01-01T00:00",
        ["2024-01-28T00:00", "2024-02-26T00:00", "2024-03-28T00:00", "2024-04-27T00:00"],
    ),
    (
        "0 0 L-1 2 *",
        "2023-01-01T00:00",
        ["2023-02-27T00:00", "2024-02-28T00:00", "2025-02-27T00:00"],
    ),
    ("0 0 L-1 2 *", "2099-03-01T00:00", ["2100-02-27T00:00"]),  # 2100 is not a leap year
    # A month of n days or fewer has no L-n day: L-30 is the 1st of 31-day
    # months only, L-29 the 2nd of those and the 1st of 30-day months.
    (
        "0 0 L-30 * *",
        "2024-01-01T00:00",
        [
            "2024-03-01T00:00",
            "2024-05-01T00:00",
            "2024-07-01T00:00",
            "2024-08-01T00:00",
            "2024-10-01T00:00",
        ],
    ),
    (
        "0 0 L-29 * *",
        "2024-01-01T00:00",
        [
            "2024-01-02T00:00",
            "2024-03-02T00:00",
            "2024-04-01T00:00",
            "2024-05-02T00:00",
            "2024-06-01T00:00",
        ],
    ),
    ("0 0 L-28 2 *", "2023-01-01T00:00", ["2024-02-01T00:00", "2028-02-01T00:00"]),
    ("0 0 L-28 2 *", "2096-03-01T00:00", ["2104-02-01T00:00"]),
    # L-nW: the weekday nearest to day L-n. Jan 28 2024 is a Sunday -> Monday
    # 29th; Feb 26 a Monday; Mar 28 a Thursday; Apr 27 a Saturday -> Friday 26th.
    (
        "0 0 L-3W * *",
        "2023-12-31T00:00",
        [
            "2024-01-29T00:00",
            "2024-02-26T00:00",
            "2024-03-28T00:00",
            "2024-04-26T00:00",
            "2024-05-28T00:00",
        ],
    ),
    # Saturday Feb 12 2000 (day L-17) moves to Friday 11th: nothing fires on
    # Monday 14th, even when the search starts that day (saffron's same-day check
    # would fire then), and Tuesday Mar 14 comes next.
    ("0 12 L-17W * *", "2000-02-14T06:00", ["2000-03-14T12:00"]),
    # L-30W is the 1st of 31-day months, moved within the month: Saturday
    # May 1 2021 -> Monday 3rd, Sunday Aug 1 -> Monday 2nd, Saturday Jan 1 2022 -> 3rd.
    (
        "0 0 L-30W * *",
        "2021-04-01T00:00",
        [
            "2021-05-03T00:00",
            "2021-07-01T00:00",
            "2021-08-02T00:00",
            "2021-10-01T00:00",
            "2021-12-01T00:00",
            "2022-01-03T00:00",
        ],
    ),
    # L-1W on May 30: Saturday in 2020 -> Friday 29th; Sunday in 2021 ->
    # Monday 31st (the last day, still in May); a Monday in 2022.
    (
        "0 0 L-1W 5 *",
        "2020-01-01T00:00",
        ["2020-05-29T00:00", "2021-05-31T00:00", "2022-05-30T00:00"],
    ),
    # L-28W in February: only leap years have a day 29-28 = 1 (Sunday in 2032 -> 2nd).
    (
        "0 0 L-28W 2 *",
        "2023-01-01T00:00",
        ["2024-02-01T00:00", "2028-02-01T00:00", "2032-02-02T00:00"],
    ),
    # L and W in either case, as elsewhere.
    ("0 0 l-3w * *", "2024-01-02T00:00", ["2024-01-29T00:00", "2024-02-26T00:00"]),
    # nL: the last Friday / Sunday of the month.
    (
        "0 0 * * 5L",
        "2024-01-01T00:00",
        ["2024-01-26T00:00", "2024-02-23T00:00", "2024-03-29T00:00", "2024-04-26T00:00"],
    ),
    ("0 0 * * 7L", "2024-01-01T00:00", ["2024-01-28T00:00", "2024-02-25T00:00"]),
    # Day-of-week L alone is Saturday (saffron's reading).
    ("0 0 * * L", "2024-01-01T00:00", ["2024-01-06T00:00", "2024-01-13T00:00"]),
    ("0 0 * * l", "2024-01-01T00:00", ["2024-01-06T00:00", "2024-01-13T00:00"]),
    ("0 0 * * sunL", "2024-02-26T00:00", ["2024-03-31T00:00", "2024-04-28T00:00"]),
    # n#k, and #5 only in months that have a fifth.
    (
        "15 10 * * 5#3",
        "2024-01-01T00:00",
        ["2024-01-19T10:15", "2024-02-16T10:15", "2024-03-15T10:15", "2024-04-19T10:15"],
    ),
    (
        "0 0 * * 1#5",
        "2024-01-01T00:00",
        [
            "2024-01-29T00:00",
            "2024-04-29T00:00",
            "2024-07-29T00:00",
            "2024-09-30T00:00",
            "2024-12-30T00:00",
            "2025-03-31T00:00",
        ],
    ),
    ("0 0 * 2 1#5", "2024-01-01T00:00", ["2044-02-29T00:00", "2072-02-29T00:00"]),
    # Both day fields restricted: either fires (Friday or the 13th).
    (
        "0 0 13 * 5",
        "2024-09-01T00:00",
        [
            "2024-09-06T00:00",
            "2024-09-13T00:00",
            "2024-09-20T00:00",
            "2024-09-27T00:00",
            "2024-10-04T00:00",
            "2024-10-11T00:00",
            "2024-10-13T00:00",
            "2024-10-18T00:00",
        ],
    ),
    (
        "0 0 L * 1",
        "2024-01-27T00:00",
        ["2024-01-29T00:00", "2024-01-31T00:00", "2024-02-05T00:00"],
    ),
    # ... with day-of-week L: Saturdays or day L-3 (Sunday Jan 28, Monday Feb 26 2024).
    (
        "0 0 L-3 * L",
        "2024-01-20T00:00",
        [
            "2024-01-27T00:00",
            "2024-01-28T00:00",
            "2024-02-03T00:00",
            "2024-02-10T00:00",
            "2024-02-17T00:00",
            "2024-02-24T00:00",
            "2024-02-26T00:00",
        ],
    ),
    # Saturday Jun 15 2024 matches both; Monday Jul 15 the day of month alone.
    (
        "0 0 15 * L",
        "2024-06-10T00:00",
        [
            "2024-06-15T00:00",
            "2024-06-22T00:00",
            "2024-06-29T00:00",
            "2024-07-06T00:00",
            "2024-07-13T00:00",
            "2024-07-15T00:00",
        ],
    ),
    # */2 is restricted (not a bare *), so OR applies: odd days or Mondays.
    (
        "0 0 */2 * 1",
        "2024-01-01T00:00",
        ["2024-01-03T00:00", "2024-01-05T00:00", "2024-01-07T00:00", "2024-01-08T00:00"],
    ),
    # One day field a bare *: the other alone decides (AND).
    ("0 0 13 * *", "2024-09-01T00:00", ["2024-09-13T00:00", "2024-10-13T00:00"]),
    ("0 0 * * 5", "2024-09-01T00:00", ["2024-09-06T00:00", "2024-09-13T00:00"]),
    # Leap days: 2100 is not a leap year.
    ("0 0 29 2 *", "2024-03-01T00:00", ["2028-02-29T00:00", "2032-02-29T00:00"]),
    ("30 2 29 2 *", "2096-03-01T00:00", ["2104-02-29T02:30"]),
    # The 31st fires only in the months that have one.
    (
        "0 0 31 * *",
        "2024-01-31T00:00",
        [
            "2024-03-31T00:00",
            "2024-05-31T00:00",
            "2024-07-31T00:00",
            "2024-08-31T00:00",
            "2024-10-31T00:00",
            "2024-12-31T00:00",
            "2025-01-31T00:00",
        ],
    ),
    # Fields separated by any ASCII whitespace.
    (" 0\t17  * *\n1-5 ", "2024-01-05T17:00", ["2024-01-08T17:00"]),
]


@pytest.mark.parametrize(("expr", "start", "expected"), PINNED, ids=[p[0] for p in PINNED])
def test_pinned(expr: str, start: str, expected: list[str]) -> None:
    assert fires(expr, start, len(expected)) == expected


DICT_PINNED: list[tuple[dict[str, object], str, list[str]]] = [
    ({"kind": "hourly", "minuteUTC": 15}, "2024-01-01T00:15", ["2024-01-01T01:15"]),
    ({"kind": "hourly"}, "2024-01-01T00:15", ["2024-01-01T01:00"]),
    (
        {"kind": "daily", "hourUTC": 8, "minuteUTC": 30},
        "2024-01-01T08:30",
        ["2024-01-02T08:30"],
    ),
    ({"kind": "daily", "hourUTC": 8}, "2024-01-01T00:00", ["2024-01-01T08:00"]),
    (
        {"kind": "weekly", "dayOfWeek": "sunday", "hourUTC": 2, "minuteUTC": 0},
        "2024-01-01T00:00",
        ["2024-01-07T02:00", "2024-01-14T02:00"],
    ),
    (
        {"kind": "monthly", "day": 31, "hourUTC": 9, "minuteUTC": 0},
        "2024-01-31T09:00",
        ["2024-03-31T09:00", "2024-05-31T09:00"],
    ),
    (
        {"kind": "monthly", "day": 29, "hourUTC": 0},
        "2023-01-30T00:00",
        ["2023-03-29T00:00", "2023-04-29T00:00"],
    ),
    ({"kind": "cron", "cron": "0 17 * * 1-5"}, "2024-01-05T17:00", ["2024-01-08T17:00"]),
    # Convex's own tag, "type", is accepted too.
    ({"type": "daily", "hourUTC": 23}, "2024-01-01T00:00", ["2024-01-01T23:00"]),
]


@pytest.mark.parametrize(("spec", "start", "expected"), DICT_PINNED)
def test_dict_schedules(spec: dict[str, object], start: str, expected: list[str]) -> None:
    assert fires(spec, start, len(expected)) == expected


def test_next_after_is_strictly_after_and_on_whole_minutes() -> None:
    schedule = compile_schedule("*/5 * * * *")
    fire = ms("2024-01-01T00:05")
    assert schedule.next_after(fire - 1) == fire
    assert schedule.next_after(fire - 0.001) == fire
    assert schedule.next_after(fire) == fire + 300_000
    assert schedule.next_after(fire + 0.5) == fire + 300_000
    assert schedule.next_after(float(fire)) == fire + 300_000
    assert isinstance(schedule.next_after(fire + 0.5), int)
    assert schedule.next_after(-1) == 0  # pre-epoch times work too
    assert schedule.next_after(-300_001) == -300_000
    with pytest.raises(ValueError, match="finite"):
        schedule.next_after(float("nan"))


def test_interval() -> None:
    schedule = compile_schedule({"kind": "interval", "seconds": 30})
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.period_ms == 30_000
    assert schedule.next_after(1_000) == 31_000
    assert schedule.next_after(1_000.7) == 31_000
    assert compile_schedule({"kind": "interval", "minutes": 5}).period_ms == 300_000
    assert compile_schedule({"kind": "interval", "hours": 2}).period_ms == 7_200_000
    # minutes=None counts as absent, as undefined does in Convex.
    assert compile_schedule({"kind": "interval", "seconds": 1, "minutes": None}).period_ms == 1000


def test_schedule_api() -> None:
    daily = compile_schedule({"kind": "daily", "hourUTC": 8.0, "minuteUTC": 0})
    assert isinstance(daily, ClockSchedule)
    assert isinstance(daily, Schedule)
    assert daily.kind == "daily"
    assert daily.spec == {"kind": "daily", "hourUTC": 8, "minuteUTC": 0}
    assert type(daily.spec["hourUTC"]) is int  # 8.0 normalized
    assert daily.timezone is None
    assert daily.period_ms is None
    assert daily.describe() == "every day at 08:00 (UTC)"
    daily.spec["hourUTC"] = 9  # a copy: the schedule is unchanged
    assert daily.spec["hourUTC"] == 8
    assert compile_schedule(daily.spec) == daily
    assert hash(compile_schedule(daily.spec)) == hash(daily)
    assert repr(daily) == "compile_schedule({'kind': 'daily', 'hourUTC': 8, 'minuteUTC': 0})"

    # Intervals normalize to seconds, so equal periods compare equal.
    assert compile_schedule({"kind": "interval", "minutes": 60}) == compile_schedule(
        {"kind": "interval", "hours": 1}
    )
    assert compile_schedule({"kind": "interval", "minutes": 60}).spec == {
        "kind": "interval",
        "seconds": 3600,
    }
    cron = compile_schedule("0  17 * *   1-5")
    assert cron.spec == {"kind": "cron", "cron": "0 17 * * 1-5"}
    assert cron == compile_schedule({"kind": "cron", "cron": "0 17 * * 1-5"})
    assert cron != daily

    paris = compile_schedule("30 2 * * *", timezone="Europe/Paris")
    assert paris.timezone == "Europe/Paris"
    assert paris.spec == {"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Paris"}
    assert compile_schedule(paris.spec) == paris
    assert paris != compile_schedule("30 2 * * *")

    described: dict[str, dict[str, object]] = {
        "every 30 seconds": {"kind": "interval", "seconds": 30},
        "every minute": {"kind": "interval", "seconds": 60},
        "every 90 seconds": {"kind": "interval", "seconds": 90},
        "every 2 hours": {"kind": "interval", "minutes": 120},
        "every hour at minute 5 (UTC)": {"kind": "hourly", "minuteUTC": 5},
        "every Sunday at 02:00 (UTC)": {"kind": "weekly", "dayOfWeek": "sunday", "hourUTC": 2},
        "on day 1 of every month at 09:00 (Europe/Paris)": {
            "kind": "monthly",
            "day": 1,
            "hourUTC": 9,
            "timezone": "Europe/Paris",
        },
        "on day 31 of every month at 09:00 (skipping months without a day 31) (UTC)": {
            "kind": "monthly",
            "day": 31,
            "hourUTC": 9,
        },
        'cron "0 17 * * 1-5" (UTC)': {"kind": "cron", "cron": "0 17 * * 1-5"},
    }
    for text, spec in described.items():
        assert compile_schedule(spec).describe() == text


def test_interval_ignores_timezone() -> None:
    schedule = compile_schedule({"kind": "interval", "seconds": 30}, timezone="Europe/Paris")
    assert schedule.timezone is None
    assert schedule.spec == {"kind": "interval", "seconds": 30}
    with pytest.raises(CronSpecError, match="Unknown timezone"):
        compile_schedule({"kind": "interval", "seconds": 30}, timezone="Mars/Olympus")


# --- (b) validation -----------------------------------------------------------

CRON_ERRORS = [
    ("* * * *", "cron", "expected 5 fields"),
    ("* * * * * *", "cron", "seconds and year fields are not supported"),
    ("0 0 0 * * * 2024", "cron", "seconds and year fields"),
    ("", "cron", "empty"),
    ("   ", "cron", "empty"),
    ("@daily", "cron", "macros"),
    ("@hourly", "cron", "macros"),
    ("\uff10 * * * *", "cron", "ASCII"),  # full-width digit
    ("0\u00a00 * * *", "cron", "ASCII"),  # no-break space
    ("61 * * * *", "minute", "minute 61 is out of range 0-59"),
    ("* 24 * * *", "hour", "out of range 0-23"),
    ("* * 0 * *", "day-of-month", "out of range 1-31"),
    ("* * 32 * *", "day-of-month", "out of range 1-31"),
    ("* * * 0 *", "month", "out of range 1-12"),
    ("* * * 13 *", "month", "out of range 1-12"),
    ("* * * * 8", "day-of-week", "out of range 0-7"),
    ("*/0 * * * *", "minute", "step 0 in '*/0' must be from 1 to 59"),
    ("*/60 * * * *", "minute", "step 60 in '*/60' must be from 1 to 59"),
    ("5/61 * * * *", "minute", "from 1 to 59"),
    ("0 */24 * * *", "hour", "from 1 to 23"),
    ("0 0 */31 * *", "day-of-month", "from 1 to 30"),
    ("0 0 * */12 *", "month", "from 1 to 11"),
    ("0 0 * * */7", "day-of-week", "from 1 to 6"),
    ("0 0 * * 1-5/0", "day-of-week", "from 1 to 6"),
    ("*/x * * * *", "minute", "not a number"),
    ("5/2/3 * * * *", "minute", "not a number"),
    ("0 0 ? * *", "day-of-month", "'?' is not supported"),
    ("0 0 * * ?", "day-of-week", "'?' is not supported"),
    ("H * * * *", "minute", "'H' (hashed)"),
    ("a * * * *", "minute", "invalid minute value 'a'"),
    ("1- * * * *", "minute", "missing minute value"),
    ("1-2-3 * * * *", "minute", "invalid minute value '2-3'"),
    ("1,,2 * * * *", "minute", "empty item"),
    ("*,5 * * * *", "minute", "'*' must be the whole field"),
    ("5,* * * * *", "minute", "'*' must be the whole field"),
    ("0 0 * foo *", "month", "invalid month value 'foo'; expected 1-12 or JAN-DEC"),
    ("0 0 * january *", "month", "invalid month value"),
    ("0 0 * * monday", "day-of-week", "expected 0-7 or SUN-SAT"),
    ("0 0 * * 5#6", "day-of-week", "occurrence 6"),
    ("0 0 * * 5#0", "day-of-week", "occurrence 0"),
    ("0 0 * * 8#1", "day-of-week", "out of range 0-7"),
    ("0 0 * * 5#", "day-of-week", "n#k"),
    ("0 0 * * 1#2,3", "day-of-week", "n#k"),
    ("0 0 * * 1,5L", "day-of-week", "L and nL must be the whole day-of-week field"),
    ("0 0 * * 1,L", "day-of-week", "L and nL must be the whole day-of-week field"),
    ("0 0 * * L,1", "day-of-week", "L and nL must be the whole day-of-week field"),
    ("0 0 * * L-5", "day-of-week", "L and nL must be the whole day-of-week field"),
    ("0 0 * * 8L", "day-of-week", "out of range 0-7"),
    ("0 0 L,15 * *", "day-of-month", "whole day-of-month field"),
    ("0 0 15,L-3 * *", "day-of-month", "L, L-n, LW, L-nW and nW must be the whole"),
    ("0 0 L- * *", "day-of-month", "expected L-n or L-nW (n from 1 to 30)"),
    ("0 0 L-x * *", "day-of-month", "expected L-n or L-nW (n from 1 to 30)"),
    ("0 0 L-W * *", "day-of-month", "expected L-n or L-nW"),
    ("0 0 L-3,5 * *", "day-of-month", "expected L-n or L-nW"),
    ("0 0 L-3-1 * *", "day-of-month", "expected L-n or L-nW"),
    ("0 0 L-3/2 * *", "day-of-month", "expected L-n or L-nW"),
    ("0 0 L-3WW * *", "day-of-month", "expected L-n or L-nW"),
    ("0 0 L-0 * *", "day-of-month", "offset 0 in 'L-0' must be from 1 to 30"),
    ("0 0 L-31 * *", "day-of-month", "offset 31 in 'L-31' must be from 1 to 30"),
    ("0 0 L-99W * *", "day-of-month", "offset 99 in 'L-99W' must be from 1 to 30"),
    ("0 0 W * *", "day-of-month", "whole day-of-month field"),
    ("0 0 0W * *", "day-of-month", "out of range 1-31"),
    ("0 0 32W * *", "day-of-month", "out of range 1-31"),
    ("0 0 5#2 * *", "day-of-month", "only allowed in the day-of-week field"),
    ("5#2 0 * * *", "minute", "only allowed in the day-of-week field"),
    ("0 0 * * 1;2", "day-of-week", "unexpected character ';'"),
    # Specs that can never fire.
    ("0 0 30 2 *", "cron", "will never match any time"),
    ("0 0 31 2 *", "cron", "will never match any time"),
    ("0 0 30,31 feb *", "cron", "will never match any time"),
    ("0 0 31 4,6,9,11 *", "cron", "will never match any time"),
    ("0 0 30W 2 *", "cron", "will never match any time"),
    ("0 0 L-30 2 *", "cron", "will never match any time"),
    ("0 0 L-29 2 *", "cron", "will never match any time"),  # leap Februaries too
    ("0 0 L-30 4,6,9,11 *", "cron", "will never match any time"),
    ("0 0 L-30W feb *", "cron", "will never match any time"),
    ("0 0 L-29W 2 *", "cron", "will never match any time"),
]


@pytest.mark.parametrize(("expr", "field", "message"), CRON_ERRORS, ids=[e[0] for e in CRON_ERRORS])
def test_cron_string_errors(expr: str, field: str, message: str) -> None:
    with pytest.raises(CronSpecError, match=re.escape(message)) as caught:
        compile_schedule(expr, job="the job")
    assert caught.value.field == field
    assert caught.value.job == "the job"
    assert 'cron job "the job"' in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_never_firing_message_is_convexs() -> None:
    with pytest.raises(CronSpecError) as caught:
        compile_schedule("0 0 30 2 *")
    assert str(caught.value) == 'The cron spec "0 0 30 2 *" will never match any time'
    assert caught.value.job is None


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 29 2 *",  # leap years
        "0 0 29W 2 *",
        "0 0 L 2 *",
        "0 0 LW 2 *",
        "0 0 31 4,7 *",
        "0 0 30 2 1",  # OR: any Monday in February
        "0 0 31 2 1#5",  # OR: a fifth Monday in a leap February
        "0 0 * 2 5#5",
        "0 0 * 2 6L",
        "0 0 30-1 2 *",  # wraps to the 1st
        "0 0 L-28 2 *",  # leap years
        "0 0 L-28W 2 *",
        "0 0 L-29 4 *",
        "0 0 L-30 2,3 *",
        "0 0 L-30 2 L",  # OR: any Saturday in February
    ],
)
def test_specs_that_do_fire_are_accepted(expr: str) -> None:
    schedule = compile_schedule(expr)
    assert schedule.next_after(ms("2001-01-01T00:00")) > 0


DICT_ERRORS: list[tuple[object, str, str]] = [
    ({"kind": "interval"}, "interval", "^Must specify one of seconds, minutes, or hours"),
    ({"kind": "interval", "seconds": 1, "minutes": 1}, "interval", "^Must specify one of"),
    ({"kind": "interval", "seconds": 0}, "seconds", "^Interval must be an integer greater than 0"),
    ({"kind": "interval", "minutes": -5}, "minutes", "^Interval must be an integer greater"),
    ({"kind": "interval", "hours": 1.5}, "hours", "^Interval must be an integer greater"),
    ({"kind": "interval", "seconds": True}, "seconds", "^Interval must be an integer greater"),
    ({"kind": "interval", "seconds": "30"}, "seconds", "^Interval must be an integer greater"),
    ({"kind": "hourly", "minuteUTC": 60}, "minuteUTC", "^Minute of hour must be an integer from"),
    ({"kind": "hourly", "minuteUTC": -1}, "minuteUTC", "^Minute of hour must be an integer"),
    ({"kind": "hourly", "minuteUTC": False}, "minuteUTC", "^Minute of hour must be an integer"),
    ({"kind": "hourly", "minuteUTC": 0.5}, "minuteUTC", "^Minute of hour must be an integer"),
    ({"kind": "hourly", "minuteUTC": "5"}, "minuteUTC", "^Minute of hour must be an integer"),
    ({"kind": "daily", "hourUTC": 24}, "hourUTC", "^Hour of day must be an integer from 0 to 23"),
    ({"kind": "daily", "minuteUTC": 0}, "hourUTC", "^Hour of day must be an integer"),
    ({"kind": "daily", "hourUTC": float("nan")}, "hourUTC", "^Hour of day must be an integer"),
    ({"kind": "daily", "hourUTC": 8, "minuteUTC": 75}, "minuteUTC", "^Minute of hour"),
    ({"kind": "weekly", "dayOfWeek": "Monday", "hourUTC": 8}, "dayOfWeek", "^Day of week must"),
    ({"kind": "weekly", "dayOfWeek": "mon", "hourUTC": 8}, "dayOfWeek", "^Day of week must"),
    ({"kind": "weekly", "dayOfWeek": 1, "hourUTC": 8}, "dayOfWeek", "^Day of week must"),
    ({"kind": "weekly", "hourUTC": 8}, "dayOfWeek", "^Day of week must"),
    ({"kind": "monthly", "day": 0, "hourUTC": 8}, "day", "^Day of month must be an integer from 1"),
    ({"kind": "monthly", "day": 32, "hourUTC": 8}, "day", "^Day of month must be an integer"),
    ({"kind": "monthly", "hourUTC": 8}, "day", "^Day of month must be an integer"),
    ({"kind": "daily", "hourUtc": 8}, "hourUtc", "^Unknown field 'hourUtc' in a daily schedule"),
    ({"kind": "interval", "secs": 8}, "secs", "^Unknown field"),
    ({"kind": "yearly"}, "kind", "^A schedule's kind must be one of"),
    ({"hourUTC": 8}, "kind", "^A schedule's kind must be one of"),
    ({"kind": "daily", "type": "weekly", "hourUTC": 8}, "kind", "^Conflicting schedule kind"),
    ({"kind": "cron", "cron": 5}, "cron", "^A cron schedule needs a cron string"),
    ({"kind": "cron"}, "cron", "^A cron schedule needs a cron string"),
    ({"kind": "cron", "cron": "0 0 30 2 *"}, "cron", "will never match any time"),
    ({"kind": "daily", "hourUTC": 8, "timezone": "Mars/Olympus"}, "timezone", "^Unknown timezone"),
    ({"kind": "daily", "hourUTC": 8, "timezone": 5}, "timezone", "^A timezone must be"),
    ({"kind": "daily", "hourUTC": 8, "timezone": ""}, "timezone", "^Unknown timezone"),
    (["0 0 * * *"], "schedule", "^A schedule must be a cron string or a dict"),
    (None, "schedule", "^A schedule must be a cron string or a dict"),
]


@pytest.mark.parametrize(("spec", "field", "message"), DICT_ERRORS)
def test_dict_errors(spec: object, field: str, message: str) -> None:
    with pytest.raises(CronSpecError, match=message) as caught:
        compile_schedule(spec, job="digest")  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.job == "digest"
    assert str(caught.value).endswith('cron job "digest")')


def test_error_message_shows_value_field_and_job() -> None:
    with pytest.raises(CronSpecError) as caught:
        compile_schedule({"kind": "daily", "hourUTC": 24}, job="digest")
    assert str(caught.value) == (
        'Hour of day must be an integer from 0 to 23 (got 24 for hourUTC; cron job "digest")'
    )
    with pytest.raises(CronSpecError) as caught:
        compile_schedule({"kind": "daily", "hourUTC": 24})
    assert str(caught.value) == "Hour of day must be an integer from 0 to 23 (got 24 for hourUTC)"


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/abs", "Europe/"])
def test_invalid_timezones(name: str) -> None:
    with pytest.raises(CronSpecError, match="Unknown timezone") as caught:
        compile_schedule("0 0 * * *", timezone=name, job="j")
    assert caught.value.field == "timezone"


def test_conflicting_timezones() -> None:
    spec = {"kind": "daily", "hourUTC": 8, "timezone": "Europe/Paris"}
    assert compile_schedule(spec, timezone="Europe/Paris").timezone == "Europe/Paris"
    with pytest.raises(CronSpecError, match="Conflicting timezones"):
        compile_schedule(spec, timezone="America/New_York")


# --- (c) property tests -------------------------------------------------------

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
START_MIN = ms("1995-01-01T00:00")
START_MAX = ms("2045-01-01T00:00")
starts = st.integers(START_MIN // 1000, START_MAX // 1000).map(lambda s: s * 1000)


def _cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.capitalize()])


def _value(low: int, high: int, names: list[str] | None, name_base: int) -> st.SearchStrategy[str]:
    numbers = st.integers(low, high).map(str)
    if names is None:
        return numbers
    named = st.integers(0, len(names) - 1).flatmap(lambda i: _cased(names[i]))
    return st.one_of(numbers, named)


# ---- an independent reference of the full grammar ----


def _ref_number(text: str, names: list[str] | None, name_base: int) -> int:
    if names is not None and text.upper() in names:
        return names.index(text.upper()) + name_base
    return int(text)


def _ref_walk(start: int, end: int, low: int, size: int) -> list[int]:
    """start, start+1, ... end, cyclically over low..low+size-1."""
    count = (end - start) % size + 1
    return [low + (start - low + i) % size for i in range(count)]


def _ref_set(text: str, field: str) -> set[int]:
    low, high, names, base = {
        "minute": (0, 59, None, 0),
        "hour": (0, 23, None, 0),
        "dom": (1, 31, None, 0),
        "month": (1, 12, MONTHS, 1),
        "dow": (0, 6, DAYS, 0),
    }[field]
    size = high - low + 1
    if text == "*":
        return set(range(low, high + 1))
    out: set[int] = set()
    for item in text.split(","):
        base_text, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base_text == "*":
            values = list(range(low, high + 1))
        elif "-" in base_text:
            a, b = (_ref_number(x, names, base) for x in base_text.split("-"))
            if field == "dow" and b == 7 and a != 7:
                values = list(range(a, 8))
            else:
                if field == "dow":
                    a, b = a % 7, b % 7
                values = _ref_walk(a, b, low, size)
        else:
            a = _ref_number(base_text, names, base)
            top = 7 if field == "dow" and a == 7 else high
            values = list(range(a, top + 1)) if step_text else [a]
        out.update(v % 7 if field == "dow" else v for v in values[::step])
    return out


def _ref_day(dom: str, dow: str, day: date) -> bool:
    length = calendar.monthrange(day.year, day.month)[1]

    def weekday(d: int) -> int:  # Monday=0 ... Sunday=6
        return date(day.year, day.month, d).weekday()

    def nearest_weekday(n: int) -> int | None:
        if not 1 <= n <= length:
            return None
        if weekday(n) == 5:
            return n - 1 if n > 1 else n + 2
        if weekday(n) == 6:
            return n + 1 if n < length else n - 2
        return n

    def dom_ok() -> bool:
        upper = dom.upper()
        if upper == "L":
            return day.day == length
        if upper == "LW":
            last = length
            while weekday(last) >= 5:
                last -= 1
            return day.day == last
        if upper.startswith("L-"):  # L-n, L-nW: day length - n, if the month has it
            target = length - int(upper[2:].removesuffix("W"))
            if upper.endswith("W"):
                return day.day == nearest_weekday(target)
            return day.day == target
        if upper.endswith("W"):
            return day.day == nearest_weekday(int(upper[:-1]))
        return day.day in _ref_set(dom, "dom")

    def dow_ok() -> bool:
        sunday_zero = (day.weekday() + 1) % 7
        if dow.upper() == "L":
            return sunday_zero == 6
        if "#" in dow:
            wd, k = dow.split("#")
            return sunday_zero == _ref_number(wd, DAYS, 0) % 7 and (day.day - 1) // 7 + 1 == int(k)
        if dow.upper().endswith("L"):
            wd_l = _ref_number(dow[:-1], DAYS, 0) % 7
            return sunday_zero == wd_l and day.day + 7 > length
        return sunday_zero in _ref_set(dow, "dow")

    if dom == "*" and dow == "*":
        return True
    if dom == "*":
        return dow_ok()
    if dow == "*":
        return dom_ok()
    return dom_ok() or dow_ok()


def _ref_next(expr: str, ts_ms: int, years: int = 45) -> int | None:
    minute, hour, dom, month, dow = expr.split()
    minutes = sorted(_ref_set(minute, "minute"))
    hours = sorted(_ref_set(hour, "hour"))
    months = _ref_set(month, "month")
    start = datetime.fromtimestamp(ts_ms // 60_000 * 60 + 60, UTC)
    day = start.date()
    for _ in range(366 * years):
        if day.month in months and _ref_day(dom, dow, day):
            for h in hours:
                for m in minutes:
                    candidate = datetime.combine(day, time(h, m), UTC)
                    if candidate >= start:
                        return int(candidate.timestamp()) * 1000
        day += timedelta(days=1)
    return None


@st.composite
def _list_field(
    draw: st.DrawFn,
    low: int,
    high: int,
    span: int,
    names: list[str] | None = None,
    name_base: int = 0,
) -> str:
    value = _value(low, high, names, name_base)
    items = []
    for _ in range(draw(st.integers(1, 3))):
        form = draw(st.sampled_from(["one", "range", "star_step", "start_step", "range_step"]))
        step = draw(st.integers(1, span))
        if form == "one":
            items.append(draw(value))
        elif form == "range":
            items.append(f"{draw(value)}-{draw(value)}")
        elif form == "star_step":
            items.append(f"*/{step}")
        elif form == "start_step":
            items.append(f"{draw(value)}/{step}")
        else:
            items.append(f"{draw(value)}-{draw(value)}/{step}")
    return ",".join(items)


def _field(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"), strategy)


FULL_DOM = st.one_of(
    st.just("*"),
    _list_field(1, 31, 30),
    st.sampled_from(["L", "LW", "l", "lw"]),
    st.integers(1, 31).map(lambda n: f"{n}W"),
    st.tuples(
        st.sampled_from(["L-", "l-"]),
        st.integers(1, 30).map(str),
        st.sampled_from(["", "W", "w"]),
    ).map("".join),
)
FULL_DOW = st.one_of(
    st.just("*"),
    st.sampled_from(["L", "l"]),
    _list_field(0, 7, 6, DAYS),
    st.tuples(_value(0, 7, DAYS, 0), st.sampled_from(["L", "l"])).map("".join),
    st.tuples(_value(0, 7, DAYS, 0), st.integers(1, 5)).map(lambda t: f"{t[0]}#{t[1]}"),
)
FULL_EXPRS = st.tuples(
    _field(_list_field(0, 59, 59)),
    _field(_list_field(0, 23, 23)),
    FULL_DOM,
    _field(_list_field(1, 12, 11, MONTHS, 1)),
    FULL_DOW,
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(FULL_EXPRS, starts)
def test_matches_independent_reference(expr: str, start: int) -> None:
    try:
        schedule = compile_schedule(expr)
    except CronSpecError as error:
        assert "will never match" in str(error)
        assert _ref_next(expr, start, years=9) is None
        return
    ts = start
    for _ in range(3):
        expected = _ref_next(expr, ts)
        assume(expected is not None)  # beyond the reference's horizon
        assert expected is not None
        ts = schedule.next_after(ts)
        assert iso(ts) == iso(expected), expr


# ---- croniter and cronsim, on the grammar where all three agree ----
# No a-a, no wrapping ranges, no oversize steps, no L/W/#; a day field is
# "*" or both are restricted without starting with "*" and without covering
# every value (croniter then reads it as "*", and cronsim's Vixie rule looks
# at the first character); "a/n" and ranges in day-of-week stay within 0-6
# (cronsim runs 1/2 up to 7).


@st.composite
def _oracle_field(
    draw: st.DrawFn,
    low: int,
    high: int,
    names: list[str] | None = None,
    name_base: int = 0,
    *,
    star_steps: bool = True,
    start_steps: bool = True,
) -> str:
    value_range = st.integers(low, high)

    def show(v: int) -> str:
        if names is not None and draw(st.booleans()):
            return draw(_cased(names[v - name_base]))
        return str(v)

    items = []
    for _ in range(draw(st.integers(1, 3))):
        forms = ["one", "range", "range_step"]
        forms += (["star_step"] if star_steps else []) + (["start_step"] if start_steps else [])
        form = draw(st.sampled_from(forms))
        step = draw(st.integers(1, high - low))
        a = draw(value_range)
        b = draw(st.integers(a, high))
        if form in ("range", "range_step"):
            assume(a < b)
        if form == "one":
            items.append(show(a))
        elif form == "range":
            items.append(f"{show(a)}-{show(b)}")
        elif form == "star_step":
            items.append(f"*/{step}")
        elif form == "start_step":
            items.append(f"{show(a)}/{step}")
        else:
            items.append(f"{show(a)}-{show(b)}/{step}")
    return ",".join(items)


@st.composite
def oracle_exprs(draw: st.DrawFn) -> str:
    minute = draw(_field(_oracle_field(0, 59)))
    hour = draw(_field(_oracle_field(0, 23)))
    month = draw(_field(_oracle_field(1, 12, MONTHS, 1)))
    mode = draw(st.sampled_from(["dom", "dow", "both", "neither"]))
    dom = dow = "*"
    if mode in ("dom", "both"):
        dom = draw(_oracle_field(1, 31, star_steps=mode == "dom"))
    if mode in ("dow", "both"):
        dow = draw(
            st.one_of(
                _oracle_field(0, 6, DAYS, star_steps=mode == "dow", start_steps=False), st.just("7")
            )
        )
    if mode == "both":
        assume(_ref_set(dom, "dom") != set(range(1, 32)))
        assume(_ref_set(dow, "dow") != set(range(7)))
    return f"{minute} {hour} {dom} {month} {dow}"


@settings(max_examples=300, deadline=None)
@given(oracle_exprs(), starts)
def test_agrees_with_croniter_and_cronsim(expr: str, start: int) -> None:
    try:
        schedule = compile_schedule(expr)
    except CronSpecError as error:
        assert "will never match" in str(error)
        return
    start_dt = datetime.fromtimestamp(start / 1000, UTC)
    by_croniter = croniter(expr, start_dt)
    by_cronsim = CronSim(expr, start_dt)
    ts = start
    for _ in range(4):
        ts = schedule.next_after(ts)
        ours = datetime.fromtimestamp(ts / 1000, UTC)
        assert by_croniter.get_next(datetime) == ours, f"croniter, {expr}"
        assert next(by_cronsim) == ours, f"cronsim, {expr}"


# cronsim also has L, LW, nL and n#k (not nW); with the other day field "*"
# (so AND applies in both) its answers must be ours.
CRONSIM_SPECIALS = st.one_of(
    st.tuples(st.sampled_from(["L", "LW"]), st.just("*")),
    st.tuples(
        st.just("*"),
        st.one_of(
            st.integers(0, 7).map(lambda n: f"{n}L"),
            st.tuples(st.integers(0, 7), st.integers(1, 5)).map(lambda t: f"{t[0]}#{t[1]}"),
        ),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    CRONSIM_SPECIALS,
    _field(_oracle_field(1, 12, MONTHS, 1)),
    st.integers(0, 59),
    st.integers(0, 23),
    starts,
)
def test_special_days_agree_with_cronsim(
    days: tuple[str, str], month: str, minute: int, hour: int, start: int
) -> None:
    expr = f"{minute} {hour} {days[0]} {month} {days[1]}"
    schedule = compile_schedule(expr)
    by_cronsim = CronSim(expr, datetime.fromtimestamp(start / 1000, UTC))
    ts = start
    for _ in range(3):
        ts = schedule.next_after(ts)
        assert next(by_cronsim) == datetime.fromtimestamp(ts / 1000, UTC), expr


# L-n and L-nW in months of one length are the plain day length - n and its
# nW, which croniter and cronsim know (cronsim has no nW; croniter's agrees
# with ours for a day before the month's last, as here).
MONTHS_OF_LENGTH = {31: [1, 3, 5, 7, 8, 10, 12], 30: [4, 6, 9, 11]}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([31, 30]).flatmap(
        lambda length: st.tuples(
            st.just(length),
            st.lists(st.sampled_from(MONTHS_OF_LENGTH[length]), min_size=1, unique=True),
        )
    ),
    st.integers(1, 30),
    st.booleans(),
    st.integers(0, 59),
    st.integers(0, 23),
    starts,
)
def test_last_offset_agrees_with_croniter_and_cronsim(
    months_of_one_length: tuple[int, list[int]],
    offset: int,
    nearest: bool,
    minute: int,
    hour: int,
    start: int,
) -> None:
    length, month_list = months_of_one_length
    months = ",".join(map(str, sorted(month_list)))
    w = "W" if nearest else ""
    expr = f"{minute} {hour} L-{offset}{w} {months} *"
    day = length - offset
    if day < 1:  # these months have no day L-n
        with pytest.raises(CronSpecError, match="will never match"):
            compile_schedule(expr)
        return
    plain = f"{minute} {hour} {day}{w} {months} *"
    start_dt = datetime.fromtimestamp(start / 1000, UTC)
    by_croniter = croniter(plain, start_dt)
    by_cronsim = None if nearest else CronSim(plain, start_dt)
    schedule = compile_schedule(expr)
    ts = start
    for _ in range(3):
        ts = schedule.next_after(ts)
        ours = datetime.fromtimestamp(ts / 1000, UTC)
        assert by_croniter.get_next(datetime) == ours, (expr, plain)
        if by_cronsim is not None:
            assert next(by_cronsim) == ours, (expr, plain)


# Convex refuses a spec that never fires by saffron's check: with day-of-week
# "*", L-n and L-nW need a month of at least n + 1 days among those allowed.
@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 30),
    st.sampled_from(["", "W"]),
    st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True),
)
def test_last_offset_never_fires_exactly_when_convex_says(
    offset: int, w: str, month_list: list[int]
) -> None:
    longest = max(calendar.monthrange(2024, month)[1] for month in month_list)  # a leap year
    fields = f"0 0 L-{offset}{w} {','.join(map(str, month_list))}"
    start = ms("2001-01-01T00:00")
    if offset + 1 <= longest:
        assert compile_schedule(f"{fields} *").next_after(start) > start
    else:
        with pytest.raises(CronSpecError, match="will never match any time"):
            compile_schedule(f"{fields} *")
        # With day-of-week restricted too, either fires (OR): here Saturdays alone.
        fire = compile_schedule(f"{fields} L").next_after(start)
        assert datetime.fromtimestamp(fire / 1000, UTC).weekday() == 5


@settings(max_examples=100, deadline=None)
@given(
    _field(_list_field(0, 59, 59)),
    _field(_list_field(0, 23, 23)),
    FULL_DOM,
    _field(_list_field(1, 12, 11, MONTHS, 1)),
    starts,
)
def test_day_of_week_l_is_saturday(
    minute: str, hour: str, dom: str, month: str, start: int
) -> None:
    fields = f"{minute} {hour} {dom} {month}"
    try:
        saturday = compile_schedule(f"{fields} 6")
    except CronSpecError:
        with pytest.raises(CronSpecError, match="will never match"):
            compile_schedule(f"{fields} L")
        return
    last = compile_schedule(f"{fields} L")
    ts_l = ts_6 = start
    for _ in range(3):
        ts_l, ts_6 = last.next_after(ts_l), saturday.next_after(ts_6)
        assert ts_l == ts_6, fields


# --- (d) time zones and DST ---------------------------------------------------

PARIS = "Europe/Paris"  # 2024: 02:00 -> 03:00 on Mar 31, 03:00 -> 02:00 on Oct 27
NEW_YORK = "America/New_York"  # 2024: 02:00 -> 03:00 on Mar 10, 02:00 -> 01:00 on Nov 3
LORD_HOWE = "Australia/Lord_Howe"  # a 30-minute DST: 02:00 -> 02:30 on Oct 6 2024

DST_PINNED = [
    # Spring forward: the skipped 02:30 fires at the end of the gap, 03:00 local.
    (
        PARIS,
        "30 2 * * *",
        "2024-03-30T12:00",
        ["2024-03-31T01:00", "2024-04-01T00:30"],  # 03:00 CEST, then 02:30 CEST
    ),
    # Fall back: the repeated 02:30 fires once, at its first occurrence (CEST).
    (
        PARIS,
        "30 2 * * *",
        "2024-10-26T12:00",
        ["2024-10-27T00:30", "2024-10-28T01:30"],
    ),
    # Every half hour: the gap's times collapse into one run at 03:00 ...
    (
        PARIS,
        "*/30 * * * *",
        "2024-03-31T00:15",
        ["2024-03-31T00:30", "2024-03-31T01:00", "2024-03-31T01:30"],
    ),
    # ... and the repeated hour runs once (02:00 and 02:30 CEST, then 03:00 CET).
    (
        PARIS,
        "*/30 * * * *",
        "2024-10-26T23:45",
        ["2024-10-27T00:00", "2024-10-27T00:30", "2024-10-27T02:00", "2024-10-27T02:30"],
    ),
    # A time just after the gap is unaffected.
    (PARIS, "0 3 * * *", "2024-03-30T12:00", ["2024-03-31T01:00", "2024-04-01T01:00"]),
    (
        NEW_YORK,
        "30 2 * * *",
        "2024-03-09T12:00",
        ["2024-03-10T07:00", "2024-03-11T06:30"],  # 03:00 EDT, then 02:30 EDT
    ),
    (
        NEW_YORK,
        "30 1 * * *",
        "2024-11-02T12:00",
        ["2024-11-03T05:30", "2024-11-04T06:30"],  # 01:30 EDT once, then 01:30 EST
    ),
    # Starting inside the second pass of the repeated hour: nothing more fires in it.
    (NEW_YORK, "30 1 * * *", "2024-11-03T06:10", ["2024-11-04T06:30"]),
    (NEW_YORK, "*/20 * * * *", "2024-11-03T06:05", ["2024-11-03T07:00", "2024-11-03T07:20"]),
    # Outside DST changes, local time is UTC-5 in winter, UTC-4 in summer.
    (NEW_YORK, "0 9 * * 1-5", "2024-01-05T15:00", ["2024-01-08T14:00"]),
    (NEW_YORK, "0 9 * * 1-5", "2024-07-05T14:00", ["2024-07-08T13:00"]),
    # A 30-minute gap ends at 02:30 local (+11:00).
    (LORD_HOWE, "15 2 * * *", "2024-10-05T00:00", ["2024-10-05T15:30", "2024-10-06T15:15"]),
]


@pytest.mark.parametrize(("zone", "expr", "start", "expected"), DST_PINNED)
def test_dst(zone: str, expr: str, start: str, expected: list[str]) -> None:
    assert fires(expr, start, len(expected), timezone=zone) == expected


def test_timezone_applies_to_dict_schedules() -> None:
    daily = {"kind": "daily", "hourUTC": 2, "minuteUTC": 30}
    assert fires(daily, "2024-03-30T12:00", 2, timezone=PARIS) == [
        "2024-03-31T01:00",
        "2024-04-01T00:30",
    ]
    weekly = {"kind": "weekly", "dayOfWeek": "monday", "hourUTC": 9, "timezone": NEW_YORK}
    assert fires(weekly, "2024-01-01T00:00", 1) == ["2024-01-01T14:00"]
    monthly = {"kind": "monthly", "day": 1, "hourUTC": 0}
    assert fires(monthly, "2024-01-01T00:00", 1, timezone="Asia/Tokyo") == ["2024-01-31T15:00"]
    hourly = {"kind": "hourly", "minuteUTC": 0}
    assert fires(hourly, "2024-03-31T00:00", 2, timezone=PARIS) == [
        "2024-03-31T01:00",  # 02:00 local is skipped: 03:00 CEST
        "2024-03-31T02:00",
    ]


def _is_gap_end(instant: datetime, zone: ZoneInfo) -> bool:
    before = (instant - timedelta(seconds=1)).astimezone(zone).utcoffset()
    after = instant.astimezone(zone).utcoffset()
    assert before is not None and after is not None
    return after > before


def _brute_force_local(expr: str, zone: ZoneInfo, ts_ms: int) -> int:
    """The rules, stated on instants: scan whole UTC minutes forward."""
    minute, hour, _, _, _ = expr.split()
    minutes, hours = _ref_set(minute, "minute"), _ref_set(hour, "hour")
    instant = datetime.fromtimestamp(ts_ms // 60_000 * 60, UTC)
    while True:
        instant += timedelta(minutes=1)
        local = instant.astimezone(zone)
        if local.hour in hours and local.minute in minutes:
            first = local.replace(fold=0).astimezone(UTC)
            if first == instant:  # not the second pass of a repeated time
                return int(instant.timestamp()) * 1000
        if _is_gap_end(instant, zone):
            # Did any skipped wall time match? The gap is [wall - size, wall).
            after = local.utcoffset()
            before = (instant - timedelta(seconds=1)).astimezone(zone).utcoffset()
            assert after is not None and before is not None
            wall = local.replace(tzinfo=None)
            size = after - before
            probe = wall - size
            while probe < wall:
                if probe.hour in hours and probe.minute in minutes:
                    return int(instant.timestamp()) * 1000
                probe += timedelta(minutes=1)


TRANSITIONS = [
    (PARIS, "2024-03-31T01:00"),
    (PARIS, "2024-10-27T01:00"),
    (NEW_YORK, "2024-03-10T07:00"),
    (NEW_YORK, "2024-11-03T06:00"),
    (LORD_HOWE, "2024-10-05T15:30"),
    (LORD_HOWE, "2024-04-06T15:00"),
    ("Australia/Sydney", "2024-10-05T16:00"),
    ("America/Santiago", "2024-09-08T04:00"),  # a gap at midnight
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(TRANSITIONS),
    st.integers(-180, 180),
    _field(_list_field(0, 59, 59)),
    st.one_of(
        st.integers(0, 23).map(lambda h: f"{h}-{(h + 3) % 24}"),
        st.just("*"),
    ),
)
def test_dst_matches_brute_force(
    transition: tuple[str, str], offset_minutes: int, minute: str, hour: str
) -> None:
    zone_name, at = transition
    zone = ZoneInfo(zone_name)
    expr = f"{minute} {hour} * * *"
    start = ms(at) + offset_minutes * 60_000 + 17_000
    schedule = compile_schedule(expr, timezone=zone_name)
    ts = start
    for _ in range(3):
        expected = _brute_force_local(expr, zone, ts)
        ts = schedule.next_after(ts)
        assert iso(ts) == iso(expected), expr


def test_pure_and_reasonably_fast() -> None:
    # Not a benchmark (see benchmarks/cron_next.py): a guard against a
    # minute-by-minute search sneaking back in.
    schedule = compile_schedule("0 0 29 2 1#5")
    ts = ms("2001-01-01T00:00")
    for _ in range(100):
        ts = schedule.next_after(ts)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00", iso(ts))
