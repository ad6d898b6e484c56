"""The cron compiler: schedule specs in, ``next_after(ts_ms)`` out. Pure, no I/O.

:func:`compile_schedule` validates a schedule (a cron string, or a dict tagged
with its ``kind`` in Convex's field names) and returns a :class:`Schedule`
whose :meth:`~Schedule.next_after` is the first fire time strictly after a
given epoch-millisecond timestamp. Nothing here reads a clock.

Cron strings follow Convex's rules (DESIGN §5): exactly five fields (minute,
hour, day-of-month, month, day-of-week) separated by ASCII whitespace; ``*``,
values, ranges ``a-b`` (``a-a`` is the single value ``a``; ``a > b`` wraps
round, so ``fri-mon`` and ``22-2`` work), steps ``*/n``, ``a/n`` (from ``a``
to the field's maximum: Saturday for day-of-week, so ``7/n`` is Sunday alone)
and ``a-b/n`` with ``1 <= n <=`` the field's span, comma lists, JAN-DEC and
SUN-SAT in any case, day-of-week 0-6 from Sunday and 7 for Sunday too (7 is
an extension: saffron, the parser Convex runs, in the fork Convex pins,
takes 0-6 only). Day-of-month ``L`` (the last day), ``L-n`` (``n`` = 1-30
days before it: ``L-3`` is the 28th of a 31-day month, and a month of ``n``
days or fewer has no ``L-n`` day), ``LW``, ``L-nW`` and ``nW`` (the weekday
nearest to the last day, to day ``L-n`` or to day ``n``, without leaving the
month, as in Quartz: ``1W`` on a Saturday is Monday the 3rd, ``31W`` on a
Sunday is Friday the 29th, and a month without day ``n`` has no ``nW``
day); day-of-week ``L`` (Saturday, as saffron reads it), ``nL`` (the last
weekday ``n`` of the month) and ``n#k`` (the ``k``-th, ``k`` = 1-5). The
forms with ``L``, ``W`` or ``#`` fill their field alone, as in saffron;
``L`` and ``W`` are accepted in either case (saffron takes upper case only).
When both day fields are restricted (neither is a bare ``*``; ``*/2`` counts
as restricted) a day matching either fires; otherwise both must match. A
spec that can never fire is refused when compiled. The day rules depend only
on the length of the month and the weekday of its first day, so the compiler
tabulates the 28 possible months, and the "never fires" check is exact:
every (month, length, first weekday) combination occurs in the 400-year
Gregorian cycle. Where saffron reads a string otherwise (a wrapping range
``50-10`` there also fires at :49, for one), README.md lists it.

Why not croniter (or cronsim)? Both differ from these rules in edge cases:
croniter reads ``5-5`` as the whole cycle, accepts steps larger than the
field (``*/61``), lacks ``LW`` and ``nL``, moves a ``31W`` in a 30-day month
to the 30th, and treats a day field covering every value as ``*`` for the OR
rule; cronsim refuses wrapping ranges, lacks ``nW``, lets ``1/2`` in
day-of-week reach 7 (Sunday), and uses the Vixie rule (a day field *starting*
with ``*`` forces AND). Neither has the DST rules below. Evaluating the
fields ourselves is also 5-50x faster (``benchmarks/cron_next.py``): they
compile to lookup tables and bitsets, and the search skips whole months,
days and hours instead of testing minutes one by one.

Time zones. Clock schedules (everything but ``interval``) fire in UTC unless
compiled with ``timezone="Europe/Paris"`` (an IANA name, via :mod:`zoneinfo`;
an extension of Convex). The fields are then local wall-clock time, with two
DST rules: a local time skipped by a spring-forward gap fires once, at the end
of the gap (the first instant after it, e.g. 03:00 for a skipped 02:30); a
local time repeated by a fall-back fires once, at its first occurrence. So in
a zone with DST a ``*/30 * * * *`` schedule pauses for the repeated hour; use
UTC when strict periodicity matters. ``interval`` schedules ignore time zones.
With a time zone, the dict fields ``hourUTC`` and ``minuteUTC`` (names kept
for Convex compatibility) are read as local time.

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
months that have that day. Validation messages are Convex's, followed by the
offending value, the field and the cron job's name.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Final, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from convexpy.errors import CronSpecError

__all__ = [
    "DAYS_OF_WEEK",
    "ClockSchedule",
    "IntervalSchedule",
    "Schedule",
    "compile_schedule",
]

#: Convex's ``dayOfWeek`` values, Sunday first (index = cron day-of-week number).
DAYS_OF_WEEK: Final = (
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
)

_MONTH_NAMES: Final = {
    name: i + 1
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_DAY_NAMES: Final = {name[:3].upper(): i for i, name in enumerate(DAYS_OF_WEEK)}

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
# Days in each month of a common year; index 0 unused.
_MONTH_DAYS: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Lengths a month can have in some year.
_POSSIBLE_LENGTHS: Final = tuple(
    (28, 29) if month == 2 else (_MONTH_DAYS[month],) for month in range(13)
)
# The Gregorian calendar (weekdays included) repeats every 400 years, so any
# schedule that can fire does so within this many years of any start.
_CYCLE_YEARS: Final = 400

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

_ASCII_WHITESPACE: Final = " \t\n\r\f\v"
_FIELD_SPLIT: Final = re.compile(r"[ \t\n\r\f\v]+")
_DIGITS: Final = re.compile(r"[0-9]+")
_ALLOWED_CHARS: Final = re.compile(r"[0-9A-Za-z*,/#-]*")


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


class Schedule(ABC):
    """A compiled, immutable schedule.

    ``kind`` is ``"interval"``, ``"hourly"``, ``"daily"``, ``"weekly"``,
    ``"monthly"`` or ``"cron"``; :attr:`spec` is the normalized spec (for
    storing and for comparing on redeploy: two schedules are equal when their
    specs are); ``timezone`` is the IANA zone clock schedules fire in, or
    ``None`` for UTC; ``period_ms`` is the period of an interval schedule and
    ``None`` otherwise.
    """

    __slots__ = ("_kind", "_spec", "_timezone")

    def __init__(self, kind: str, spec: dict[str, str | int], timezone: str | None) -> None:
        self._kind = kind
        self._spec = spec
        self._timezone = timezone

    @property
    def kind(self) -> str:
        """``"interval"``, ``"hourly"``, ``"daily"``, ``"weekly"``, ``"monthly"`` or ``"cron"``."""
        return self._kind

    @property
    def timezone(self) -> str | None:
        """The IANA zone a clock schedule fires in, ``None`` for UTC (and intervals)."""
        return self._timezone

    @property
    def spec(self) -> dict[str, str | int]:
        """The normalized spec, a fresh dict of strings and ints."""
        return dict(self._spec)

    @property
    @abstractmethod
    def period_ms(self) -> int | None:
        """The period of an interval schedule, ``None`` for clock schedules."""

    @abstractmethod
    def next_after(self, ts_ms: float) -> int:
        """The first fire time strictly after ``ts_ms``, in epoch milliseconds."""

    @abstractmethod
    def describe(self) -> str:
        """A short English description, e.g. ``"every day at 08:00 (UTC)"``."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._spec.items())))

    def __repr__(self) -> str:
        return f"compile_schedule({self._spec!r})"


class IntervalSchedule(Schedule):
    """Every ``period_ms`` milliseconds from an anchor (the previous run)."""

    __slots__ = ("_period_ms",)

    def __init__(self, spec: dict[str, str | int], period_ms: int) -> None:
        super().__init__("interval", spec, None)
        self._period_ms = period_ms

    @property
    def period_ms(self) -> int:
        return self._period_ms

    def next_after(self, ts_ms: float) -> int:
        """``ts_ms`` (floored to a whole millisecond) plus the period."""
        return math.floor(ts_ms) + self._period_ms

    def describe(self) -> str:
        seconds = self._period_ms // 1000
        for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
            if seconds % size == 0:
                count = seconds // size
                return f"every {unit}" if count == 1 else f"every {count} {unit}s"
        raise AssertionError("unreachable")  # pragma: no cover


class ClockSchedule(Schedule):
    """A schedule on the wall clock: a cron string, or hourly/daily/weekly/monthly."""

    __slots__ = ("_matcher", "_when", "_zone")

    def __init__(
        self,
        kind: str,
        spec: dict[str, str | int],
        matcher: _Matcher,
        timezone: str | None,
        zone: ZoneInfo | None,
        when: str,
    ) -> None:
        super().__init__(kind, spec, timezone)
        self._matcher = matcher
        self._zone = zone
        self._when = when

    @property
    def period_ms(self) -> None:
        return None

    def describe(self) -> str:
        return f"{self._when} ({self.timezone or 'UTC'})"

    def next_after(self, ts_ms: float) -> int:
        """The first whole minute strictly after ``ts_ms`` that the fields match."""
        if not math.isfinite(ts_ms):
            raise ValueError(f"ts_ms must be a finite number, got {ts_ms!r}")
        if self._zone is not None:
            return self._next_after_local(ts_ms, self._zone)
        # Minutes since the epoch of the first candidate: the minute after ts_ms's.
        minute = int(ts_ms // 60_000) + 1
        days, rest = divmod(minute, 1440)
        day = date.fromordinal(days + _EPOCH_ORDINAL)
        hour, minute_of_hour = divmod(rest, 60)
        y, mo, d, h, mi = self._matcher.first_match(
            day.year, day.month, day.day, hour, minute_of_hour
        )
        if d != day.day or mo != day.month or y != day.year:
            days = date(y, mo, d).toordinal() - _EPOCH_ORDINAL
        return (days * 1440 + h * 60 + mi) * 60_000

    def _next_after_local(self, ts_ms: float, zone: ZoneInfo) -> int:
        # Search naive local wall-clock time from the minute after ts_ms's,
        # mapping each match to an instant. That map never decreases (a gap's
        # times all map to its end, a repeated time to its first occurrence),
        # so the first match mapping after ts_ms is the answer. Only a match in
        # a repeated hour, already passed on its first occurrence, can map to
        # ts_ms or before: then the search goes on from the next minute.
        local = datetime.fromtimestamp(int(ts_ms // 60_000) * 60, zone)
        y, mo, d, h, mi = local.year, local.month, local.day, local.hour, local.minute + 1
        while True:
            y, mo, d, h, mi = self._matcher.first_match(y, mo, d, h, mi)
            instant_ms = _local_instant_ms(y, mo, d, h, mi, zone)
            if instant_ms > ts_ms:
                return instant_ms
            mi += 1


def _local_instant_ms(y: int, mo: int, d: int, h: int, mi: int, zone: ZoneInfo) -> int:
    """The instant a local wall-clock minute fires at, under the DST rules."""
    naive = datetime(y, mo, d, h, mi)
    wall_s = ((date(y, mo, d).toordinal() - _EPOCH_ORDINAL) * 1440 + h * 60 + mi) * 60
    before = naive.replace(tzinfo=zone).utcoffset()
    after = naive.replace(tzinfo=zone, fold=1).utcoffset()
    assert before is not None and after is not None
    before_s = int(before.total_seconds())
    after_s = int(after.total_seconds())
    if before_s >= after_s:
        # An ordinary time, or one repeated by a fall-back: its first occurrence.
        return (wall_s - before_s) * 1000
    # Skipped by a spring-forward gap: fire when the gap ends, the transition
    # instant, which lies in (wall_s - after_s, wall_s - before_s].
    low, high = wall_s - after_s, wall_s - before_s
    while high - low > 1:
        middle = (low + high) // 2
        offset = datetime.fromtimestamp(middle, zone).utcoffset()
        assert offset is not None
        if int(offset.total_seconds()) == after_s:
            high = middle
        else:
            low = middle
    return high * 1000


# --- the matcher -------------------------------------------------------------

# Day-field kinds.
_STAR: Final = 0
_SET: Final = 1
_LAST: Final = 2  # dom L and L-n (arg n, 0 for L) / dow nL
_LAST_WEEKDAY: Final = 3  # dom LW and L-nW (arg n, 0 for LW)
_NEAREST_WEEKDAY: Final = 4  # dom nW
_NTH: Final = 5  # dow n#k


class _Matcher:
    """Compiled cron fields and the search for the first matching minute.

    ``minutes[m]`` is the first allowed minute ``>= m`` or -1 (and likewise
    ``hours`` and ``months``, which have a -1 sentinel past their last
    value). ``days[(length - 28) * 7 + first_weekday]`` is the bitmask of
    firing days (bit ``d`` for day ``d``) of a month of that length whose
    first day falls on that weekday (0 = Sunday): the day rules, OR rule
    included, depend on nothing else.
    """

    __slots__ = ("days", "first_month", "hours", "minutes", "months")

    def __init__(
        self,
        minutes: int,
        hours: int,
        months: int,
        days: tuple[int, ...],
    ) -> None:
        self.minutes = _next_table(minutes, 60)
        self.hours = _next_table(hours, 24)
        self.months = _next_table(months, 13)
        self.first_month = self.months[1]
        self.days = days

    def never_fires(self) -> bool:
        """Whether no allowed month, of any length or first weekday, has a firing day."""
        for month in range(1, 13):
            if self.months[month] != month:
                continue
            for length in _POSSIBLE_LENGTHS[month]:
                base = (length - 28) * 7
                if any(self.days[base : base + 7]):
                    return False
        return True

    def first_match(
        self, y: int, mo: int, d: int, h: int, mi: int
    ) -> tuple[int, int, int, int, int]:
        """The first matching minute at or after the given naive time.

        The inputs may overflow by one step (``mi == 60``, ``h == 24``, ``d``
        one past the month's end): the search carries them over.
        """
        minutes, hours, months, days = self.minutes, self.hours, self.months, self.days
        give_up = y + _CYCLE_YEARS + 1
        while True:
            month = months[mo]
            if month != mo:
                if month < 0:
                    y += 1
                    if y > give_up:  # pragma: no cover - compile refuses such specs
                        raise AssertionError("a compiled schedule never fired")
                    month = self.first_month
                mo, d, h, mi = month, 1, 0, 0
            if mo == 2:
                length = 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
            else:
                length = _MONTH_DAYS[mo]
            first_weekday = date(y, mo, 1).toordinal() % 7
            later = days[(length - 28) * 7 + first_weekday] >> d
            if not later:
                mo, d, h, mi = mo + 1, 1, 0, 0
                continue
            if not later & 1:
                d += (later & -later).bit_length() - 1
                h = mi = 0
            hour = hours[h]
            if hour < 0:
                d, h, mi = d + 1, 0, 0
                continue
            if hour != h:
                h, mi = hour, 0
            minute = minutes[mi]
            if minute < 0:
                h, mi = h + 1, 0
                continue
            return y, mo, d, h, minute


def _next_table(mask: int, size: int) -> tuple[int, ...]:
    """``table[i]`` = the first set bit ``>= i`` of ``mask``, or -1; one extra -1 entry."""
    table = [-1] * (size + 1)
    following = -1
    for i in range(size - 1, -1, -1):
        if mask >> i & 1:
            following = i
        table[i] = following
    return tuple(table)


def _day_table(dom_kind: int, dom: int, dow_kind: int, dow: int) -> tuple[int, ...]:
    """The firing-day masks of the 28 possible months (see :class:`_Matcher`)."""
    table = []
    for length in range(28, 32):
        full = (2 << length) - 2
        for first in range(7):
            dom_mask = _dom_mask(dom_kind, dom, length, first) & full
            dow_mask = _dow_mask(dow_kind, dow, length, first) & full
            if dom_kind == _STAR and dow_kind == _STAR:
                mask = full
            elif dow_kind == _STAR:
                mask = dom_mask
            elif dom_kind == _STAR:
                mask = dow_mask
            else:
                mask = dom_mask | dow_mask
            table.append(mask)
    return tuple(table)


def _dom_mask(kind: int, arg: int, length: int, first: int) -> int:
    if kind == _SET:
        return arg
    if kind == _LAST:  # day length - n; none when that is before the 1st
        return 1 << (length - arg) if arg < length else 0
    if kind == _LAST_WEEKDAY:
        return _nearest_weekday(length - arg, length, first)
    if kind == _NEAREST_WEEKDAY:
        return _nearest_weekday(arg, length, first)
    return 0


def _nearest_weekday(day: int, length: int, first: int) -> int:
    """The bit of the weekday nearest to ``day`` within its month; 0 if no such day."""
    if not 1 <= day <= length:
        return 0
    weekday = (first + day - 1) % 7
    if weekday == 6:  # Saturday: the Friday before, or Monday 3rd for the 1st
        day = day - 1 if day > 1 else day + 2
    elif weekday == 0:  # Sunday: the Monday after, or the Friday before the last day
        day = day + 1 if day < length else day - 2
    return 1 << day


def _dow_mask(kind: int, arg: int, length: int, first: int) -> int:
    if kind == _SET:
        mask = 0
        for day in range(1, length + 1):
            if arg >> ((first + day - 1) % 7) & 1:
                mask |= 1 << day
        return mask
    if kind == _LAST:
        last_weekday = (first + length - 1) % 7
        return 1 << (length - (last_weekday - arg) % 7)
    if kind == _NTH:
        weekday, nth = arg & 7, arg >> 3
        day = 1 + (weekday - first) % 7 + 7 * (nth - 1)
        return 1 << day if day <= length else 0
    return 0


# --- parsing -----------------------------------------------------------------


class _Field:
    """One cron field's bounds: values ``low..high``, steps ``1..span``."""

    __slots__ = ("expected", "high", "label", "low", "names", "span")

    def __init__(
        self,
        label: str,
        low: int,
        high: int,
        span: int,
        names: Mapping[str, int] | None = None,
        name_range: str = "",
    ) -> None:
        self.label = label
        self.low = low
        self.high = high
        self.span = span
        self.names = names
        self.expected = f"{low}-{high}" + (f" or {name_range}" if name_range else "")


_MINUTE: Final = _Field("minute", 0, 59, 59)
_HOUR: Final = _Field("hour", 0, 23, 23)
_DAY_OF_MONTH: Final = _Field("day-of-month", 1, 31, 30)
_MONTH: Final = _Field("month", 1, 12, 11, _MONTH_NAMES, "JAN-DEC")
# 7 is Sunday too; steps run over the seven days.
_DAY_OF_WEEK: Final = _Field("day-of-week", 0, 7, 6, _DAY_NAMES, "SUN-SAT")


class _CronSyntaxError(Exception):
    """A field-level parse problem, turned into a CronSpecError by the caller."""

    def __init__(self, field: _Field | None, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


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


def _parse_fields(expr: str) -> _Matcher:
    stripped = expr.strip(_ASCII_WHITESPACE)
    if not stripped:
        raise _CronSyntaxError(None, "it is empty; expected 5 fields")
    if stripped.startswith("@"):
        raise _CronSyntaxError(
            None, "macros such as @daily are not supported; write the 5 fields, e.g. '0 0 * * *'"
        )
    if not stripped.isascii():
        raise _CronSyntaxError(None, "it must be ASCII")
    fields = _FIELD_SPLIT.split(stripped)
    if len(fields) != 5:
        hint = " (seconds and year fields are not supported)" if len(fields) in (6, 7) else ""
        raise _CronSyntaxError(
            None,
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}{hint}",
        )
    for text, field in zip(
        fields, (_MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK), strict=True
    ):
        if "?" in text:
            raise _CronSyntaxError(field, "'?' is not supported; use '*'")
        if not _ALLOWED_CHARS.fullmatch(text):
            bad = next(c for c in text if not _ALLOWED_CHARS.fullmatch(c))
            raise _CronSyntaxError(field, f"unexpected character {bad!r} in {text!r}")

    minutes = _parse_plain(fields[0], _MINUTE)
    hours = _parse_plain(fields[1], _HOUR)
    dom_kind, dom = _parse_day_of_month(fields[2])
    months = _parse_plain(fields[3], _MONTH)
    dow_kind, dow = _parse_day_of_week(fields[4])
    return _Matcher(minutes, hours, months, _day_table(dom_kind, dom, dow_kind, dow))


def _parse_plain(text: str, field: _Field) -> int:
    """A bitmask of the values a field without special forms allows."""
    if text == "*":
        return _bits(range(field.low, field.high + 1))
    if "#" in text:
        raise _CronSyntaxError(field, f"'#' is only allowed in the day-of-week field ({text!r})")
    return _parse_list(text, field)


def _parse_day_of_month(text: str) -> tuple[int, int]:
    field = _DAY_OF_MONTH
    if text == "*":
        return _STAR, 0
    upper = text.upper()
    if upper == "L":
        return _LAST, 0
    if upper == "LW":
        return _LAST_WEEKDAY, 0
    if upper.startswith("L-"):
        offset_text = upper[2:].removesuffix("W")
        if not _DIGITS.fullmatch(offset_text):
            raise _CronSyntaxError(
                field,
                f"expected L-n or L-nW (n from 1 to 30) as the whole field, got {text!r}",
            )
        offset = int(offset_text)
        if not 1 <= offset <= 30:
            raise _CronSyntaxError(field, f"offset {offset} in {text!r} must be from 1 to 30")
        return (_LAST_WEEKDAY if upper.endswith("W") else _LAST), offset
    if upper.endswith("W") and _DIGITS.fullmatch(upper[:-1]):
        day = int(upper[:-1])
        if not 1 <= day <= 31:
            raise _CronSyntaxError(field, f"day {day} in {text!r} is out of range 1-31")
        return _NEAREST_WEEKDAY, day
    if "L" in upper or "W" in upper:
        raise _CronSyntaxError(
            field,
            f"L, L-n, LW, L-nW and nW must be the whole day-of-month field, got {text!r}",
        )
    if "#" in text:
        raise _CronSyntaxError(field, f"'#' is only allowed in the day-of-week field ({text!r})")
    return _SET, _parse_list(text, field)


def _parse_day_of_week(text: str) -> tuple[int, int]:
    field = _DAY_OF_WEEK
    if text == "*":
        return _STAR, 0
    if "#" in text:
        weekday_text, _, nth_text = text.partition("#")
        if "," in text or not _DIGITS.fullmatch(nth_text):
            raise _CronSyntaxError(
                field, f"expected n#k (e.g. 5#3) as the whole field, got {text!r}"
            )
        nth = int(nth_text)
        if not 1 <= nth <= 5:
            raise _CronSyntaxError(field, f"occurrence {nth} in {text!r} must be from 1 to 5")
        return _NTH, nth << 3 | _value(weekday_text, field) % 7
    upper = text.upper()
    if upper == "L":
        return _SET, 1 << 6  # L alone is Saturday, the last day of the week
    if "L" in upper:  # no day name has an L
        if not upper.endswith("L") or any(c in text for c in ",-/"):
            raise _CronSyntaxError(
                field, f"L and nL must be the whole day-of-week field, got {text!r}"
            )
        return _LAST, _value(text[:-1], field) % 7
    return _SET, _parse_list(text, field)


def _parse_list(text: str, field: _Field) -> int:
    mask = 0
    for item in text.split(","):
        if not item:
            raise _CronSyntaxError(field, f"empty item in list {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text):
                raise _CronSyntaxError(field, f"step {step_text!r} in {item!r} is not a number")
            step = int(step_text)
            if not 1 <= step <= field.span:
                raise _CronSyntaxError(
                    field, f"step {step} in {item!r} must be from 1 to {field.span}"
                )
        if base == "*":
            if not slash:
                raise _CronSyntaxError(field, f"'*' must be the whole field, got {text!r}")
            sequence = list(range(field.low, field.high + 1))
            if field is _DAY_OF_WEEK:
                sequence = sequence[:-1]  # 7 repeats Sunday
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            sequence = _range(_value(start_text, field), _value(end_text, field), field, item)
        else:
            start = _value(base, field)
            if slash:
                # a/n: from a to the field's maximum (Saturday, or 7 for 7/n).
                high = 6 if field is _DAY_OF_WEEK and start < 7 else field.high
                sequence = list(range(start, high + 1))
            else:
                sequence = [start]
        values = sequence[::step]
        if field is _DAY_OF_WEEK:
            values = [value % 7 for value in values]
        mask |= _bits(values)
    return mask


def _range(start: int, end: int, field: _Field, item: str) -> list[int]:
    """The values of ``start-end`` in order; ``start > end`` wraps round the field."""
    if start == end:
        return [start]
    if field is _DAY_OF_WEEK:
        if end == 7:  # e.g. 5-7: Friday to Sunday, no wrap
            return list(range(start, 8))
        if start == 7:
            start = 0
        high = 6
    else:
        high = field.high
    if start <= end:
        return list(range(start, end + 1))
    return list(range(start, high + 1)) + list(range(field.low, end + 1))


def _value(text: str, field: _Field) -> int:
    if _DIGITS.fullmatch(text):
        value = int(text)
        if not field.low <= value <= field.high:
            raise _CronSyntaxError(
                field, f"{field.label} {value} is out of range {field.low}-{field.high}"
            )
        return value
    if field.names is not None and text.upper() in field.names:
        return field.names[text.upper()]
    if not text:
        raise _CronSyntaxError(field, f"missing {field.label} value")
    if text.upper() == "H":
        raise _CronSyntaxError(field, "'H' (hashed) values are not supported")
    raise _CronSyntaxError(
        field, f"invalid {field.label} value {text!r}; expected {field.expected}"
    )


def _bits(values: Iterable[int]) -> int:
    mask = 0
    for value in values:
        mask |= 1 << value
    return mask


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
