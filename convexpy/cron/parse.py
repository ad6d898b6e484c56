"""The cron grammar: a cron string in, its compiled fields out. Pure, no I/O.

Cron strings follow Convex's rules: exactly five fields (minute,
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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from convexpy.cron.schedule import (
    _LAST,
    _LAST_WEEKDAY,
    _NEAREST_WEEKDAY,
    _NTH,
    _SET,
    _STAR,
    _day_table,
    _Matcher,
)

__all__ = ["DAYS_OF_WEEK"]

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

_ASCII_WHITESPACE: Final = " \t\n\r\f\v"
_FIELD_SPLIT: Final = re.compile(r"[ \t\n\r\f\v]+")
_DIGITS: Final = re.compile(r"[0-9]+")
_ALLOWED_CHARS: Final = re.compile(r"[0-9A-Za-z*,/#-]*")


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
