"""The cron compiler: schedule specs in, ``next_after(ts_ms)`` out. Pure, no I/O.

:func:`compile_schedule` validates a schedule (a cron string, or a dict tagged
with its ``kind`` in Convex's field names) and returns a :class:`Schedule`
whose :meth:`~Schedule.next_after` is the first fire time strictly after a
given epoch-millisecond timestamp. Nothing here reads a clock.

The work is shared: :mod:`convexpy.cron.parse` reads cron strings (its
docstring has the grammar), :mod:`convexpy.cron.schedule` holds the compiled
schedules, the search for the next fire time and the time-zone rules; this
module checks a spec, cron string or dict, and puts the two together.

Why not croniter (or cronsim)? Both differ from the grammar's rules in edge
cases: croniter reads ``5-5`` as the whole cycle, accepts steps larger than
the field (``*/61``), lacks ``LW`` and ``nL``, moves a ``31W`` in a 30-day
month to the 30th, and treats a day field covering every value as ``*`` for
the OR rule; cronsim refuses wrapping ranges, lacks ``nW``, lets ``1/2`` in
day-of-week reach 7 (Sunday), and uses the Vixie rule (a day field *starting*
with ``*`` forces AND). Neither has the DST rules of the schedules. Evaluating
the fields ourselves also lets the search skip whole months, days and hours
(see :mod:`convexpy.cron.schedule`; ``benchmarks/cron_next.py`` measures it).

Dict specs. ``{"kind": "interval", "seconds" | "minutes" | "hours": n}``
(exactly one, a positive integer), ``{"kind": "hourly", "minuteUTC"}``,
``{"kind": "daily", "hourUTC", "minuteUTC"}``, ``{"kind": "weekly",
"dayOfWeek": "monday", "hourUTC", "minuteUTC"}``, ``{"kind": "monthly",
"day", "hourUTC", "minuteUTC"}`` and ``{"kind": "cron", "cron": "..."}``;
``minuteUTC`` defaults to 0, and the key ``type`` (Convex's own tag) is
accepted for ``kind``. Integers may be given as integral floats (``5.0``),
because Convex numbers are float64 and specs may come back from JSON; they
are normalized to ``int``. ``bool`` is not an integer, and unknown keys are
refused (a typo such as ``hourUtc`` would otherwise be silently ignored).
Monthly schedules are the cron ``m h d * *``, so day 29-31 fires only in
months that have that day. With a time zone, the fields ``hourUTC`` and
``minuteUTC`` (names kept for Convex compatibility) are read as local time.
Validation messages are Convex's, followed by the offending value, the field
and the cron job's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from convexpy.cron.parse import (
    _ASCII_WHITESPACE,
    _FIELD_SPLIT,
    DAYS_OF_WEEK,
    _CronSyntaxError,
    _parse_fields,
)
from convexpy.cron.schedule import ClockSchedule, IntervalSchedule, Schedule, _Matcher
from convexpy.errors import CronSpecError

__all__ = [
    "DAYS_OF_WEEK",
    "ClockSchedule",
    "IntervalSchedule",
    "Schedule",
    "compile_schedule",
]

_KIND_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "interval": ("seconds", "minutes", "hours"),
    "hourly": ("minuteUTC",),
    "daily": ("hourUTC", "minuteUTC"),
    "weekly": ("dayOfWeek", "hourUTC", "minuteUTC"),
    "monthly": ("day", "hourUTC", "minuteUTC"),
    "cron": ("cron",),
}
_UNIT_SECONDS: Final = {"seconds": 1, "minutes": 60, "hours": 3600}

_MINUTE_MESSAGE: Final = "Minute of hour must be an integer from 0 to 59"
_HOUR_MESSAGE: Final = "Hour of day must be an integer from 0 to 23"
_DAY_MESSAGE: Final = "Day of month must be an integer from 1 to 31"
_DAY_OF_WEEK_MESSAGE: Final = 'Day of week must be a string like "monday".'
_INTERVAL_MESSAGE: Final = "Interval must be an integer greater than 0"
_INTERVAL_UNITS_MESSAGE: Final = "Must specify one of seconds, minutes, or hours"


def compile_schedule(
    spec: str | Mapping[str, object],
    *,
    job: str | None = None,
    timezone: str | None = None,
) -> Schedule:
    """Validate ``spec`` and compile it into a :class:`Schedule`.

    ``spec`` is a cron string or a dict tagged with its ``kind`` (see the
    module docstring). ``job`` names the cron job in error messages.
    ``timezone`` (an IANA name) makes clock schedules fire in local time; it
    may also be given as the spec's ``"timezone"`` key, which is how
    :attr:`Schedule.spec` records it, so ``compile_schedule(s.spec) == s``.

    Raises :class:`~convexpy.errors.CronSpecError` (a ``ValueError``) naming
    the job and the field at fault.
    """
    if isinstance(spec, str):
        zone = _zone(timezone, job)
        return _compile_cron(spec, timezone, zone, job)
    if not isinstance(spec, Mapping):
        _fail(
            "A schedule must be a cron string or a dict tagged with its kind, "
            f"got {type(spec).__name__}",
            job=job,
            field="schedule",
        )
    kind = _kind_of(spec, job)
    allowed = {"kind", "type", "timezone", *_KIND_FIELDS[kind]}
    for key in spec:
        if key not in allowed:
            expected = ", ".join(_KIND_FIELDS[kind])
            _fail(
                f"Unknown field {key!r} in a {kind} schedule; expected {expected}",
                job=job,
                field=str(key),
            )
    timezone = _timezone_name(spec.get("timezone"), timezone, job)
    zone = _zone(timezone, job)
    if kind == "interval":
        return _compile_interval(spec, job)
    if kind == "cron":
        expr = spec.get("cron")
        if not isinstance(expr, str):
            _fail(
                f"A cron schedule needs a cron string, got {expr!r}",
                job=job,
                field="cron",
            )
        return _compile_cron(expr, timezone, zone, job)

    minute = _int_field(spec, "minuteUTC", 0, 59, _MINUTE_MESSAGE, job, default=0)
    normalized: dict[str, str | int] = {"kind": kind}
    if kind == "hourly":
        fields = f"{minute} * * * *"
        when = f"every hour at minute {minute}"
    else:
        hour = _int_field(spec, "hourUTC", 0, 23, _HOUR_MESSAGE, job)
        clock = f"{hour:02d}:{minute:02d}"
        if kind == "daily":
            fields = f"{minute} {hour} * * *"
            when = f"every day at {clock}"
        elif kind == "weekly":
            day_of_week = spec.get("dayOfWeek")
            if not isinstance(day_of_week, str) or day_of_week not in DAYS_OF_WEEK:
                _fail(_DAY_OF_WEEK_MESSAGE, job=job, field="dayOfWeek", value=day_of_week)
            normalized["dayOfWeek"] = day_of_week
            fields = f"{minute} {hour} * * {DAYS_OF_WEEK.index(day_of_week)}"
            when = f"every {day_of_week.capitalize()} at {clock}"
        else:
            day = _int_field(spec, "day", 1, 31, _DAY_MESSAGE, job)
            normalized["day"] = day
            fields = f"{minute} {hour} {day} * *"
            when = f"on day {day} of every month at {clock}"
            if day > 28:
                when += f" (skipping months without a day {day})"
        normalized["hourUTC"] = hour
    normalized["minuteUTC"] = minute
    if timezone is not None:
        normalized["timezone"] = timezone
    matcher = _parse_cron(fields, job)
    return ClockSchedule(kind, normalized, matcher, timezone, zone, when)


def _compile_cron(
    expr: str, timezone: str | None, zone: ZoneInfo | None, job: str | None
) -> ClockSchedule:
    matcher = _parse_cron(expr, job)
    canonical = " ".join(_FIELD_SPLIT.split(expr.strip(_ASCII_WHITESPACE)))
    spec: dict[str, str | int] = {"kind": "cron", "cron": canonical}
    if timezone is not None:
        spec["timezone"] = timezone
    return ClockSchedule("cron", spec, matcher, timezone, zone, f'cron "{canonical}"')


def _parse_cron(expr: str, job: str | None) -> _Matcher:
    try:
        matcher = _parse_fields(expr)
    except _CronSyntaxError as error:
        field = error.field.label if error.field is not None else "cron"
        _fail(f"Invalid cron spec {_quote(expr)}: {error.detail}", job=job, field=field)
    if matcher.never_fires():
        _fail(
            f"The cron spec {_quote(expr)} will never match any time",
            job=job,
            field="cron",
        )
    return matcher


# --- dict specs --------------------------------------------------------------


def _kind_of(spec: Mapping[str, object], job: str | None) -> str:
    kind = spec.get("kind")
    tag = spec.get("type")
    if kind is None:
        kind = tag
    elif tag is not None and tag != kind:
        _fail(f"Conflicting schedule kind {kind!r} and type {tag!r}", job=job, field="kind")
    if not isinstance(kind, str) or kind not in _KIND_FIELDS:
        kinds = ", ".join(_KIND_FIELDS)
        _fail(f"A schedule's kind must be one of {kinds}", job=job, field="kind", value=kind)
    return kind


def _compile_interval(spec: Mapping[str, object], job: str | None) -> IntervalSchedule:
    given = [unit for unit in _UNIT_SECONDS if spec.get(unit) is not None]
    if len(given) != 1:
        _fail(_INTERVAL_UNITS_MESSAGE, job=job, field="interval")
    unit = given[0]
    count = _as_int(spec[unit])
    if count is None or count <= 0:
        _fail(_INTERVAL_MESSAGE, job=job, field=unit, value=spec[unit])
    seconds = count * _UNIT_SECONDS[unit]
    return IntervalSchedule({"kind": "interval", "seconds": seconds}, seconds * 1000)


def _int_field(
    spec: Mapping[str, object],
    key: str,
    low: int,
    high: int,
    message: str,
    job: str | None,
    *,
    default: int | None = None,
) -> int:
    raw = spec.get(key)
    if raw is None and default is not None:
        return default
    value = _as_int(raw)
    if value is None or not low <= value <= high:
        _fail(message, job=job, field=key, value=raw)
    return value


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (integral floats included), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _timezone_name(in_spec: object, argument: str | None, job: str | None) -> str | None:
    if in_spec is None:
        return argument
    if not isinstance(in_spec, str):
        _fail(
            "A timezone must be an IANA name such as 'Europe/Paris'",
            job=job,
            field="timezone",
            value=in_spec,
        )
    if argument is not None and argument != in_spec:
        _fail(
            f"Conflicting timezones {in_spec!r} (in the spec) and {argument!r}",
            job=job,
            field="timezone",
        )
    return in_spec


def _zone(name: str | None, job: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    _fail(
        "Unknown timezone: use an IANA name such as 'Europe/Paris'",
        job=job,
        field="timezone",
        value=name,
    )


# --- errors ------------------------------------------------------------------

_NO_VALUE: Final = object()


def _fail(message: str, *, job: str | None, field: str, value: object = _NO_VALUE) -> NoReturn:
    """Raise CronSpecError: Convex's message, then the value, field and job."""
    details = []
    if value is not _NO_VALUE:
        details.append(f"got {value!r} for {field}")
    if job is not None:
        details.append(f"cron job {_quote(job)}")
    if details:
        message = f"{message} ({'; '.join(details)})"
    raise CronSpecError(message, job=job, field=field)


def _quote(text: str) -> str:
    """Double-quote ``text`` as Convex's messages do (JSON-style escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped) + '"'
