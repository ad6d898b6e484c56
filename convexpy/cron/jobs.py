"""The ``crons.py`` API: ``crons = cron_jobs()`` and one call per job.

```python
from convexpy import cron_jobs, internal

crons = cron_jobs()
crons.interval("check queue", {"seconds": 30}, internal.queue.process)
crons.daily("digest", {"hourUTC": 8, "minuteUTC": 0}, internal.emails.send_digest)
crons.cron("weekday reminder", "0 17 * * 1-5", internal.reminders.send)
```

Each call validates at once, as Convex's ``cronJobs()`` does: the name
(non-empty printable ASCII, unique), the schedule (compiled here, so a bad
one fails while ``crons.py`` is imported, naming the job) and the arguments
(``None`` or a dict with string keys). The function reference is stored as
given: resolving it, and checking that it is a mutation or an action, happens
when the app is loaded. Nothing here runs anything.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from convexpy.cron.compile import Schedule, compile_schedule
from convexpy.errors import CronSpecError

__all__ = ["CronJob", "CronJobs", "cron_jobs"]


@dataclass(frozen=True, slots=True)
class CronJob:
    """One registered cron job.

    ``function`` is the function reference exactly as given (a decorated
    function, a ``"module:function"`` path or a lazy ``internal.x.y``
    reference); ``args`` is a private copy of the arguments.
    """

    name: str
    schedule: Schedule
    function: object
    args: dict[str, Any]


def cron_jobs() -> CronJobs:
    """Create the :class:`CronJobs` that ``crons.py`` exposes as ``crons``."""
    return CronJobs()


class CronJobs:
    """The cron jobs of an app, by name, in registration order."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        self._jobs: dict[str, CronJob] = {}

    @property
    def jobs(self) -> Mapping[str, CronJob]:
        """A read-only view of the jobs by name, in registration order."""
        return MappingProxyType(self._jobs)

    def __iter__(self) -> Iterator[CronJob]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __repr__(self) -> str:
        return f"<CronJobs {list(self._jobs)!r}>"

    def interval(
        self,
        name: str,
        schedule: Mapping[str, object],
        function: object,
        args: Mapping[str, Any] | None = None,
    ) -> CronJob:
        """Run ``function`` every ``{"seconds" | "minutes" | "hours": n}``.

        The first run is when the job is first deployed, then every period
        from the previous scheduled run.
        """
        return self._register(name, "interval", schedule, function, args, None)

    def hourly(
        self,
        name: str,
        schedule: Mapping[str, object],
        function: object,
        args: Mapping[str, Any] | None = None,
        *,
        timezone: str | None = None,
    ) -> CronJob:
        """Run ``function`` every hour at ``{"minuteUTC": m}`` (default 0)."""
        return self._register(name, "hourly", schedule, function, args, timezone)

    def daily(
        self,
        name: str,
        schedule: Mapping[str, object],
        function: object,
        args: Mapping[str, Any] | None = None,
        *,
        timezone: str | None = None,
    ) -> CronJob:
        """Run ``function`` every day at ``{"hourUTC": h, "minuteUTC": m}``."""
        return self._register(name, "daily", schedule, function, args, timezone)

    def weekly(
        self,
        name: str,
        schedule: Mapping[str, object],
        function: object,
        args: Mapping[str, Any] | None = None,
        *,
        timezone: str | None = None,
    ) -> CronJob:
        """Run ``function`` every week at ``{"dayOfWeek": "monday", "hourUTC", "minuteUTC"}``."""
        return self._register(name, "weekly", schedule, function, args, timezone)

    def monthly(
        self,
        name: str,
        schedule: Mapping[str, object],
        function: object,
        args: Mapping[str, Any] | None = None,
        *,
        timezone: str | None = None,
    ) -> CronJob:
        """Run ``function`` every month at ``{"day": d, "hourUTC", "minuteUTC"}``.

        Days 29-31 fire only in the months that have them.
        """
        return self._register(name, "monthly", schedule, function, args, timezone)

    def cron(
        self,
        name: str,
        expr: str,
        function: object,
        args: Mapping[str, Any] | None = None,
        *,
        timezone: str | None = None,
    ) -> CronJob:
        """Run ``function`` on a 5-field cron string such as ``"0 17 * * 1-5"`` (UTC)."""
        job = _validated_name(name, self._jobs)
        if not isinstance(expr, str):
            raise CronSpecError(
                f"A cron schedule must be a string such as '0 17 * * 1-5', got {expr!r} "
                f'(cron job "{name}")',
                job=job,
                field="cron",
            )
        compiled = compile_schedule(expr, job=job, timezone=timezone)
        return self._add(job, compiled, function, args)

    def _register(
        self,
        name: str,
        kind: str,
        schedule: Mapping[str, object],
        function: object,
        args: Mapping[str, Any] | None,
        timezone: str | None,
    ) -> CronJob:
        job = _validated_name(name, self._jobs)
        if not isinstance(schedule, Mapping):
            raise CronSpecError(
                f"A {kind} schedule must be a dict, got {type(schedule).__name__} "
                f'(cron job "{name}")',
                job=job,
                field="schedule",
            )
        given = schedule.get("kind", kind)
        if given != kind:
            raise CronSpecError(
                f'crons.{kind}() was given a schedule of kind {given!r} (cron job "{name}")',
                job=job,
                field="kind",
            )
        compiled = compile_schedule({**schedule, "kind": kind}, job=job, timezone=timezone)
        return self._add(job, compiled, function, args)

    def _add(
        self,
        name: str,
        schedule: Schedule,
        function: object,
        args: Mapping[str, Any] | None,
    ) -> CronJob:
        if function is None:
            raise CronSpecError(
                f'Cron job "{name}" needs a function reference, got None',
                job=name,
                field="function",
            )
        job = CronJob(name, schedule, function, _validated_args(args, name))
        self._jobs[name] = job
        return job


def _validated_name(name: object, existing: Mapping[str, CronJob]) -> str:
    if not isinstance(name, str):
        raise CronSpecError(
            f"A cron identifier must be a string, got {type(name).__name__}", field="name"
        )
    if not name:
        raise CronSpecError("A cron identifier must not be empty", field="name")
    if not all(" " <= c <= "~" for c in name):
        raise CronSpecError(
            f"Invalid cron identifier {name!r}: use ASCII letters that are not control characters",
            job=name,
            field="name",
        )
    if name in existing:
        raise CronSpecError(f"Cron identifier registered twice: {name}", job=name, field="name")
    return name


def _validated_args(args: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping) or not all(isinstance(key, str) for key in args):
        raise CronSpecError(
            "The arguments to a Convex function must be an object (a dict with string keys). "
            f'Received: {args!r} (cron job "{name}")',
            job=name,
            field="args",
        )
    return copy.deepcopy(dict(args))
