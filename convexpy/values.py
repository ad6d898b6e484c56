"""Convex values in Python: checks, limits, sizes and copies.

A Convex value is one of ``None``, ``bool``, ``int`` (int64 range), ``float``
(float64), ``str``, ``bytes``, ``list`` of values and ``dict`` with ``str``
keys. ``bool`` is its own type here, never an ``int``.

Limits follow Convex: arrays hold at most 8192 items, objects at most 1024
fields, values nest at most 64 levels (documents 16), field names are
non-empty printable ASCII of at most 1024 characters that do not start with
``$`` (and, at the top level of a document, not with ``_``), and a document
is at most 1 MiB as measured by :func:`value_size`.

Subclasses of the Python types above (``IntEnum`` members, ``str``
subclasses such as :class:`convexpy.ids.Id`, ``OrderedDict``) count as the
type they extend.

How values travel as JSON is :mod:`convexpy.convex_json`.
"""

from __future__ import annotations

import json
import reprlib
from typing import Any, TypeAlias

from .errors import InvalidValueError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ARRAY_LENGTH",
    "MAX_DOCUMENT_NESTING",
    "MAX_DOCUMENT_SIZE",
    "MAX_FIELD_NAME_LENGTH",
    "MAX_OBJECT_FIELDS",
    "MAX_VALUE_NESTING",
    "ConvexValue",
    "PathPart",
    "check_document",
    "check_value",
    "convex_type_name",
    "copy_document",
    "copy_value",
    "describe_value",
    "find_invalid",
    "format_path",
    "is_valid_field_name",
    "value_size",
]

ConvexValue: TypeAlias = (
    "bool | int | float | str | bytes | list[ConvexValue] | dict[str, ConvexValue] | None"
)
"""The Python types that make up Convex values (see the module docstring)."""

PathPart: TypeAlias = "str | int"
"""One step of a path into a value: an object field name or an array index."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_ARRAY_LENGTH = 8192
MAX_OBJECT_FIELDS = 1024
MAX_FIELD_NAME_LENGTH = 1024
MAX_VALUE_NESTING = 64
MAX_DOCUMENT_NESTING = 16
MAX_DOCUMENT_SIZE = 1 << 20

_ALLOWED = (
    "Convex values are None, bool, int (int64), float, str, bytes, list and dict with str keys"
)
_FIELD_RULES = (
    "field names must be non-empty printable ASCII, at most 1024 characters, "
    "and must not start with '$'"
)


# --------------------------------------------------------------------------
# Paths and descriptions


def _is_identifier_like(key: str) -> bool:
    return key.isidentifier() and key.isascii()


def format_path(parts: list[PathPart] | tuple[PathPart, ...], root: str = "$") -> str:
    """Render path parts as ``$.tags[3].name``.

    Field names that are not identifiers are quoted: ``$["a b"]``.
    """
    out = [root]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _is_identifier_like(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def convex_type_name(value: object) -> str:
    """The Convex type name of ``value``, for messages.

    One of ``"null"``, ``"boolean"``, ``"int64"``, ``"float64"``, ``"string"``,
    ``"bytes"``, ``"array"``, ``"object"``; for anything that is not a Convex
    value, the Python type name (``"tuple"``, ``"datetime"`` ...).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = 4
_repr.maxtuple = 4
_repr.maxset = 4
_repr.maxdict = 4
_repr.maxlong = 40


def describe_value(value: object) -> str:
    """A short, readable rendering of ``value`` with its type: ``"x" (string)``.

    Long strings and containers are abbreviated, so the result is safe to put
    into error messages whatever the size of the value.
    """
    if isinstance(value, str) and not isinstance(value, bool):
        text = value if len(value) <= 60 else value[:57] + "..."
        try:
            shown = json.dumps(text, ensure_ascii=False)
            shown.encode()
        except UnicodeEncodeError:
            shown = json.dumps(text)
        return f"{shown} (string)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (boolean)"
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return f"{int(value)} (int64)"
        return f"{_repr.repr(int(value))} (int, outside the int64 range)"
    if isinstance(value, float):
        return f"{float(value)!r} (float64)"
    name = convex_type_name(value)
    if name in ("bytes", "array", "object"):
        return f"{_repr.repr(value)} ({name})"
    return f"{_repr.repr(value)} ({name}, not a Convex value)"


# --------------------------------------------------------------------------
# Field names

# Valid field names seen so far. Documents reuse a handful of field names
# millions of times, and one set lookup (the str hash is cached) is cheaper
# than the four checks below. Bounded so that arbitrary keys cannot grow it.
_valid_names: set[str] = set()
_VALID_NAMES_LIMIT = 4096


def is_valid_field_name(name: object) -> bool:
    """Whether ``name`` may be a field name inside a Convex object.

    Non-empty printable ASCII, at most 1024 characters, not starting with
    ``$``. (Top-level document fields additionally must not start with
    ``_``; see :func:`check_document`.)
    """
    if type(name) is str and name in _valid_names:
        return True
    if not isinstance(name, str):
        return False
    if (
        name
        and len(name) <= MAX_FIELD_NAME_LENGTH
        and name[0] != "$"
        and name.isascii()
        and name.isprintable()
    ):
        if type(name) is str and len(_valid_names) < _VALID_NAMES_LIMIT:
            _valid_names.add(name)
        return True
    return False


def _field_name_problem(name: str) -> str:
    if not name:
        return "field name is empty"
    if name[0] == "$":
        return f"field name {describe_value(name)} starts with '$'"
    if len(name) > MAX_FIELD_NAME_LENGTH:
        return f"field name is {len(name)} characters long (limit: {MAX_FIELD_NAME_LENGTH})"
    return f"field name {describe_value(name)} contains a character that is not printable ASCII"


# --------------------------------------------------------------------------
# The checking walk


class _Bad(Exception):
    """A problem found inside a walk over a value (the checks here, the codec in
    :mod:`convexpy.convex_json`); ``parts`` is filled in, innermost first, on unwind."""

    def __init__(self, problem: str, allowed: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.allowed = allowed
        self.parts: list[PathPart] = []

    def path_parts(self) -> tuple[PathPart, ...]:
        return tuple(reversed(self.parts))


def _str_size(value: str) -> int:
    if value.isascii():
        return 2 + len(value)
    try:
        return 2 + len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Bad(
            f"string {describe_value(value)} is not valid Unicode (it contains a lone surrogate)",
            "strings must be encodable as UTF-8",
        ) from None


def _walk(value: Any, depth: int, max_depth: int) -> int:
    """Check ``value`` and return its size (see :func:`value_size`)."""
    t = type(value)
    if t is str:
        return _str_size(value)
    if t is float:
        return 9
    if t is int:
        if INT64_MIN <= value <= INT64_MAX:
            return 9
        raise _Bad(
            f"integer {_repr.repr(value)} is outside the int64 range",
            f"ints must be between {INT64_MIN} and {INT64_MAX}; use a float for larger numbers",
        )
    if value is None or t is bool:
        return 1
    if t is list or (t is not dict and isinstance(value, list)):
        return _walk_list(value, depth, max_depth)
    if t is dict or isinstance(value, dict):
        return _walk_dict(value, depth, max_depth)
    if t is bytes:
        return 2 + len(value)
    # Subclasses of the scalar types count as their base type.
    if isinstance(value, str):
        return _str_size(str.__str__(value))
    if isinstance(value, int):
        return _walk(int(value), depth, max_depth)
    if isinstance(value, float):
        return 9
    if isinstance(value, bytes):
        return 2 + len(value)
    raise _Bad(f"unsupported type {type(value).__name__} ({_repr.repr(value)})", _ALLOWED)


def _too_nested(max_depth: int) -> _Bad:
    return _Bad(
        f"value is nested more than {max_depth} levels deep",
        f"the nesting limit is {max_depth}",
    )


def _walk_list(value: list[Any], depth: int, max_depth: int) -> int:
    depth += 1
    if depth > max_depth:
        raise _too_nested(max_depth)
    if len(value) > MAX_ARRAY_LENGTH:
        raise _Bad(
            f"array has {len(value)} items",
            f"arrays hold at most {MAX_ARRAY_LENGTH} items",
        )
    size = 2
    for index, item in enumerate(value):
        # Inline the common scalars: a function call per item dominates otherwise.
        ti = type(item)
        if ti is float:
            size += 9
        elif ti is str and item.isascii():
            size += 2 + len(item)
        elif ti is int and INT64_MIN <= item <= INT64_MAX:
            size += 9
        else:
            try:
                size += _walk(item, depth, max_depth)
            except _Bad as bad:
                bad.parts.append(index)
                raise
    return size


def _walk_dict(value: dict[Any, Any], depth: int, max_depth: int) -> int:
    depth += 1
    if depth > max_depth:
        raise _too_nested(max_depth)
    if len(value) > MAX_OBJECT_FIELDS:
        raise _Bad(
            f"object has {len(value)} fields",
            f"objects hold at most {MAX_OBJECT_FIELDS} fields",
        )
    size = 2
    for key, item in value.items():
        if type(key) is not str or key not in _valid_names:
            if not isinstance(key, str):
                raise _Bad(
                    f"object key {_repr.repr(key)} is a {type(key).__name__}, not a str",
                    "object keys must be strings",
                )
            if not is_valid_field_name(key):
                problem = _Bad(_field_name_problem(key), _FIELD_RULES)
                problem.parts.append(key)
                raise problem
        # Valid field names are ASCII, so len() is their UTF-8 length.
        size += len(key) + 1
        ti = type(item)
        if ti is float:
            size += 9
        elif ti is str and item.isascii():
            size += 2 + len(item)
        elif ti is int and INT64_MIN <= item <= INT64_MAX:
            size += 9
        else:
            try:
                size += _walk(item, depth, max_depth)
            except _Bad as bad:
                bad.parts.append(key)
                raise
    return size


def _raise_invalid(bad: _Bad, path: str, prefix: str = "Invalid value") -> InvalidValueError:
    where = path + format_path(bad.path_parts(), root="")
    message = f"{prefix} at {where}: {bad.problem}"
    if bad.allowed:
        message += f" ({bad.allowed})"
    return InvalidValueError(message, where)


# --------------------------------------------------------------------------
# Public checks


def find_invalid(
    value: object, *, max_depth: int = MAX_VALUE_NESTING
) -> tuple[tuple[PathPart, ...], str] | None:
    """Locate the first reason ``value`` is not a Convex value.

    Returns ``(path_parts, problem)`` or ``None`` when the value is valid.
    Used by validators that need the location as parts rather than text.
    """
    try:
        _walk(value, 0, max_depth)
    except _Bad as bad:
        problem = bad.problem + (f" ({bad.allowed})" if bad.allowed else "")
        return bad.path_parts(), problem
    return None


def check_value(value: object, path: str = "$") -> None:
    """Raise :class:`InvalidValueError` unless ``value`` is a Convex value.

    The message says what is wrong, where (``$.tags[3].name``, prefixed with
    ``path``) and what is allowed; the error's ``path`` attribute holds the
    location. Checks types, the int64 range, field names, array and object
    sizes and a nesting depth of at most 64.
    """
    try:
        _walk(value, 0, MAX_VALUE_NESTING)
    except _Bad as bad:
        raise _raise_invalid(bad, path) from None


def check_document(fields: dict[str, object], path: str = "$") -> None:
    """Raise :class:`InvalidValueError` unless ``fields`` is a valid document body.

    ``fields`` is what a user writes (no ``_id`` / ``_creationTime``): it must
    be a dict of Convex values whose top-level field names do not start with
    ``_`` (those are system fields, set by the database), nested at most 16
    levels deep (the document itself is the first level) and at most 1 MiB in
    :func:`value_size`.
    """
    if not isinstance(fields, dict):
        raise InvalidValueError(
            f"Invalid document at {path}: expected an object (dict) of fields, "
            f"got {describe_value(fields)}",
            path,
        )
    for key in fields:
        if isinstance(key, str) and key.startswith("_"):
            where = path + format_path([key], root="")
            raise InvalidValueError(
                f"Invalid document at {where}: field name {describe_value(key)} starts with '_' "
                "(top-level fields starting with '_' are system fields, set by the database)",
                where,
            )
    try:
        size = _walk(fields, 0, MAX_DOCUMENT_NESTING)
    except _Bad as bad:
        raise _raise_invalid(bad, path, prefix="Invalid document") from None
    if size > MAX_DOCUMENT_SIZE:
        raise InvalidValueError(
            f"Invalid document at {path}: document is too large "
            f"({size:,} bytes > maximum size {MAX_DOCUMENT_SIZE:,} bytes)",
            path,
        )


def value_size(value: object) -> int:
    """The size of a Convex value in bytes, as Convex counts it.

    Null and booleans 1; int64 and float64 9; strings and bytes 2 plus their
    (UTF-8) length; arrays 2 plus their items; objects 2 plus, per field, the
    name's length + 1 + the value's size. Raises :class:`InvalidValueError`
    if ``value`` is not a Convex value (the size is computed by the same walk
    as :func:`check_value`).
    """
    try:
        return _walk(value, 0, MAX_VALUE_NESTING)
    except _Bad as bad:
        raise _raise_invalid(bad, "$") from None


# --------------------------------------------------------------------------
# Copies


def _flat_size(value: dict[Any, Any]) -> int | None:
    """The :func:`value_size` of an object of known-valid field names and
    scalar values (the usual arguments and documents), in one loop; None if
    it is anything else, for the full walk to decide."""
    if len(value) > MAX_OBJECT_FIELDS:
        return None
    size = 2
    names = _valid_names
    for key, item in value.items():
        ti = type(item)
        if type(key) is not str or key not in names:
            return None
        if ti is float:
            size += 9
        elif ti is str and item.isascii():
            size += 2 + len(item)
        elif ti is int and INT64_MIN <= item <= INT64_MAX:
            size += 9
        elif item is None or ti is bool:
            size += 1
        else:
            return None
        size += len(key) + 1  # valid names are ASCII
    return size


def copy_with_size(value: Any) -> tuple[Any, int]:
    """``(copy_value(value), value_size(value))``, checking ``value`` on the way.

    One pass for the common case, an object of valid field names and scalar
    values (scheduled functions' arguments); anything else takes both walks.
    """
    if type(value) is dict:
        size = _flat_size(value)
        if size is not None:
            return dict(value), size
    size = value_size(value)
    return copy_value(value), size


def copy_document(fields: Any) -> dict[str, Any]:
    """A private copy of ``fields``, checked as :func:`check_document` does
    (with its errors); one pass for a document of scalar fields."""
    if type(fields) is dict:
        size = _flat_size(fields)
        if size is not None and size <= MAX_DOCUMENT_SIZE:
            for key in fields:
                if key.startswith("_"):
                    break  # a system field: check_document says so
            else:
                return dict(fields)
    check_document(fields)
    copied: dict[str, Any] = copy_value(fields)
    return copied


def copy_value(value: Any) -> Any:
    """A deep copy of a Convex value (only lists and dicts need copying)."""
    if isinstance(value, dict):
        copied = dict(value)
        for key, item in copied.items():
            if isinstance(item, _CONTAINERS):  # scalars are shared: no call each
                copied[key] = copy_value(item)
        return copied
    if isinstance(value, list):
        return [copy_value(item) if isinstance(item, _CONTAINERS) else item for item in value]
    return value


_CONTAINERS = (dict, list)
