"""Compiled schedules and the search for their next fire time. Pure, no I/O.

A :class:`Schedule` comes from :func:`~convexpy.cron.compile.compile_schedule`;
its :meth:`~Schedule.next_after` is the first fire time strictly after a given
epoch-millisecond timestamp. Nothing here reads a clock. The fields of a clock
schedule, as :mod:`convexpy.cron.parse` compiles them, are lookup tables for
minutes, hours and months and per-month bitsets of firing days
(:class:`_Matcher`), so the search skips whole months, days and hours instead
of testing minutes one by one.

Time zones. Clock schedules (everything but ``interval``) fire in UTC unless
compiled with ``timezone="Europe/Paris"`` (an IANA name, via :mod:`zoneinfo`;
an extension of Convex). The fields are then local wall-clock time, with two
DST rules: a local time skipped by a spring-forward gap fires once, at the end
of the gap (the first instant after it, e.g. 03:00 for a skipped 02:30); a
local time repeated by a fall-back fires once, at its first occurrence. So in
a zone with DST a ``*/30 * * * *`` schedule pauses for the repeated hour; use
UTC when strict periodicity matters. ``interval`` schedules ignore time zones.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import date, datetime
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "ClockSchedule",
    "IntervalSchedule",
    "Schedule",
]

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
