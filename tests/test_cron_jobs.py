"""The crons.py API: cron_jobs(), registration and its validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from convexpy.cron import CronJob, CronJobs, compile_schedule, cron_jobs
from convexpy.errors import CronSpecError


async def tick(ctx: object) -> None:  # stands in for a decorated mutation
    return None


def test_design_example_registers_every_kind() -> None:
    crons = cron_jobs()
    assert isinstance(crons, CronJobs)
    crons.interval("check queue", {"seconds": 30}, "queue:process")
    crons.hourly("metrics", {"minuteUTC": 0}, "metrics:collect")
    crons.daily("digest", {"hourUTC": 8, "minuteUTC": 0}, "emails:send_digest")
    crons.weekly("backup", {"dayOfWeek": "sunday", "hourUTC": 2, "minuteUTC": 0}, "backup:run")
    crons.monthly("billing", {"day": 1, "hourUTC": 9, "minuteUTC": 0}, "billing:process")
    crons.cron("weekday reminder", "0 17 * * 1-5", "reminders:send")
    crons.daily("report", {"hourUTC": 8, "minuteUTC": 0}, tick, {"type": "daily"})

    names = ["check queue", "metrics", "digest", "backup", "billing", "weekday reminder", "report"]
    assert list(crons.jobs) == names
    assert [job.name for job in crons] == names
    assert len(crons) == 7
    assert "digest" in crons and "nope" not in crons
    kinds = [job.schedule.kind for job in crons]
    assert kinds == ["interval", "hourly", "daily", "weekly", "monthly", "cron", "daily"]
    assert crons.jobs["check queue"].schedule.period_ms == 30_000
    assert crons.jobs["weekday reminder"].schedule.spec == {
        "kind": "cron",
        "cron": "0 17 * * 1-5",
    }
    assert crons.jobs["backup"].schedule == compile_schedule(
        {"kind": "weekly", "dayOfWeek": "sunday", "hourUTC": 2}
    )
    report = crons.jobs["report"]
    assert report.function is tick  # stored as given
    assert report.args == {"type": "daily"}
    assert crons.jobs["digest"].args == {}


def test_cron_job_is_frozen() -> None:
    crons = cron_jobs()
    job = crons.interval("a", {"minutes": 1}, "m:f")
    assert isinstance(job, CronJob)
    assert job == crons.jobs["a"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "b"  # type: ignore[misc]


def test_jobs_view_is_read_only() -> None:
    crons = cron_jobs()
    crons.interval("a", {"minutes": 1}, "m:f")
    with pytest.raises(TypeError):
        crons.jobs["b"] = crons.jobs["a"]  # type: ignore[index]


def test_function_reference_is_opaque() -> None:
    class LazyReference:  # like internal.queue.process
        pass

    reference = LazyReference()
    crons = cron_jobs()
    assert crons.interval("lazy", {"seconds": 1}, reference).function is reference
    assert crons.interval("path", {"seconds": 1}, "queue:process").function == "queue:process"
    with pytest.raises(CronSpecError, match="needs a function reference") as caught:
        crons.interval("none", {"seconds": 1}, None)
    assert caught.value.job == "none"
    assert "none" not in crons


def test_duplicate_names() -> None:
    crons = cron_jobs()
    crons.interval("a", {"seconds": 1}, "m:f")
    with pytest.raises(CronSpecError) as caught:
        crons.daily("a", {"hourUTC": 1}, "m:f")
    assert str(caught.value) == "Cron identifier registered twice: a"
    assert caught.value.job == "a"
    assert caught.value.field == "name"
    assert crons.jobs["a"].schedule.kind == "interval"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "A cron identifier must not be empty"),
        ("tab\there", "Invalid cron identifier 'tab\\there': use ASCII letters that are not"),
        ("new\nline", "Invalid cron identifier"),
        ("café", "Invalid cron identifier"),
        ("\x7f", "Invalid cron identifier"),
        (5, "A cron identifier must be a string, got int"),
        (None, "A cron identifier must be a string"),
    ],
)
def test_bad_names(name: Any, message: str) -> None:
    crons = cron_jobs()
    with pytest.raises(CronSpecError) as caught:
        crons.interval(name, {"seconds": 1}, "m:f")
    assert str(caught.value).startswith(message)
    assert caught.value.field == "name"
    assert len(crons) == 0


def test_printable_ascii_names_are_fine() -> None:
    crons = cron_jobs()
    name = "".join(chr(c) for c in range(0x20, 0x7F))
    crons.interval(name, {"seconds": 1}, "m:f")
    crons.interval(" ", {"seconds": 1}, "m:f")
    assert list(crons.jobs) == [name, " "]


@pytest.mark.parametrize(
    ("register", "field", "message"),
    [
        (lambda c: c.interval("j", {}, "m:f"), "interval", "Must specify one of seconds"),
        (lambda c: c.interval("j", {"seconds": 0}, "m:f"), "seconds", "Interval must be"),
        (lambda c: c.hourly("j", {"minuteUTC": 60}, "m:f"), "minuteUTC", "Minute of hour"),
        (lambda c: c.daily("j", {"hourUTC": 24}, "m:f"), "hourUTC", "Hour of day"),
        (lambda c: c.daily("j", {"minuteUTC": 0}, "m:f"), "hourUTC", "Hour of day"),
        (
            lambda c: c.weekly("j", {"dayOfWeek": "Sunday", "hourUTC": 1}, "m:f"),
            "dayOfWeek",
            'Day of week must be a string like "monday".',
        ),
        (lambda c: c.monthly("j", {"day": 0, "hourUTC": 1}, "m:f"), "day", "Day of month"),
        (lambda c: c.cron("j", "61 * * * *", "m:f"), "minute", "Invalid cron spec"),
        (lambda c: c.cron("j", "0 0 30 2 *", "m:f"), "cron", "will never match any time"),
        (lambda c: c.cron("j", 5, "m:f"), "cron", "A cron schedule must be a string"),
        (lambda c: c.daily("j", "0 8 * * *", "m:f"), "schedule", "A daily schedule must be a"),
        (
            lambda c: c.daily("j", {"kind": "weekly", "hourUTC": 1}, "m:f"),
            "kind",
            "crons.daily() was given a schedule of kind 'weekly'",
        ),
        (
            lambda c: c.daily("j", {"hourUTC": 1}, "m:f", timezone="Nowhere/Land"),
            "timezone",
            "Unknown timezone",
        ),
        (lambda c: c.daily("j", {"hourUTC": 1, "minuteUtc": 0}, "m:f"), "minuteUtc", "Unknown"),
    ],
)
def test_bad_schedules_name_the_job(register: Any, field: str, message: str) -> None:
    crons = cron_jobs()
    with pytest.raises(CronSpecError) as caught:
        register(crons)
    assert str(caught.value).startswith(message) or message in str(caught.value)
    assert caught.value.job == "j"
    assert caught.value.field == field
    assert 'cron job "j"' in str(caught.value)
    assert "j" not in crons  # nothing registered


def test_kind_in_schedule_may_repeat_the_method() -> None:
    crons = cron_jobs()
    job = crons.daily("j", {"kind": "daily", "hourUTC": 1}, "m:f")
    assert job.schedule.spec == {"kind": "daily", "hourUTC": 1, "minuteUTC": 0}


def test_args() -> None:
    crons = cron_jobs()
    args: dict[str, Any] = {"nested": {"list": [1, 2]}, "n": 1}
    job = crons.interval("copy", {"seconds": 1}, "m:f", args)
    args["nested"]["list"].append(3)  # the job keeps its own copy
    assert job.args == {"nested": {"list": [1, 2]}, "n": 1}
    assert crons.interval("none", {"seconds": 1}, "m:f", None).args == {}
    assert crons.interval("empty", {"seconds": 1}, "m:f", {}).args == {}


@pytest.mark.parametrize("args", [[1, 2], "x", 5, {1: "a"}])
def test_bad_args(args: Any) -> None:
    crons = cron_jobs()
    with pytest.raises(CronSpecError, match="must be an object") as caught:
        crons.interval("j", {"seconds": 1}, "m:f", args)
    assert caught.value.job == "j"
    assert caught.value.field == "args"
    assert "j" not in crons


def test_timezone_keyword() -> None:
    crons = cron_jobs()
    paris = "Europe/Paris"
    jobs = [
        crons.hourly("h", {}, "m:f", timezone=paris),
        crons.daily("d", {"hourUTC": 9}, "m:f", timezone=paris),
        crons.weekly("w", {"dayOfWeek": "monday", "hourUTC": 9}, "m:f", timezone=paris),
        crons.monthly("mo", {"day": 1, "hourUTC": 9}, "m:f", timezone=paris),
        crons.cron("c", "0 9 * * *", "m:f", timezone=paris),
    ]
    for job in jobs:
        assert job.schedule.timezone == paris
        assert job.schedule.spec["timezone"] == paris
    job = crons.cron("ny", "0 9 * * *", "m:f", timezone="America/New_York")
    # 09:00 in New York on Jan 2 2024 is 14:00 UTC.
    assert job.schedule.next_after(1_704_153_600_000) == 1_704_204_000_000


def test_repr() -> None:
    crons = cron_jobs()
    crons.interval("a", {"seconds": 1}, "m:f")
    assert repr(crons) == "<CronJobs ['a']>"
