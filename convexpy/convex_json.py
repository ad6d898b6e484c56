"""Convex JSON: how Convex values travel as JSON, and the readable exports.

:func:`to_convex_json` and :func:`from_convex_json` are the lossless codec
Convex's clients speak: JSON numbers are float64, and what JSON cannot carry
takes a one-key object, ``{"$integer": ...}`` (int64), ``{"$bytes": ...}`` and
``{"$float": ...}`` (NaN, ±inf, -0.0), each holding base64 of the value's
little-endian bytes. :func:`to_plain_json` (logs, CLI output) and
:func:`to_clean_json` (the HTTP API's ``"json"`` format) are lossy exports for
people.

Errors are :class:`~convexpy.errors.InvalidValueError` naming the path of the
bad part, worded as :mod:`convexpy.values` words its checks.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

from .values import (
    _ALLOWED,
    _FIELD_RULES,
    INT64_MAX,
    INT64_MIN,
    _Bad,
    _field_name_problem,
    _raise_invalid,
    _repr,
    describe_value,
)

__all__ = ["from_convex_json", "to_clean_json", "to_convex_json", "to_plain_json"]

_INT64 = struct.Struct("<q")
_FLOAT64 = struct.Struct("<d")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_json_float(value: float) -> bool:
    # JSON has no NaN/Infinity, and -0.0 would come back as 0.0.
    return math.isfinite(value) and (value != 0.0 or math.copysign(1.0, value) > 0)


def _encode(value: Any, plain: bool) -> object:
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is float:
        if _is_json_float(value):
            return value
        if plain:
            if math.isnan(value):
                return "NaN"
            if math.isinf(value):
                return "Infinity" if value > 0 else "-Infinity"
            return value
        return {"$float": _b64(_FLOAT64.pack(value))}
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Bad(
                f"integer {_repr.repr(value)} is outside the int64 range",
                f"ints must be between {INT64_MIN} and {INT64_MAX}",
            )
        return value if plain else {"$integer": _b64(_INT64.pack(value))}
    if t is list or (t is not dict and isinstance(value, list)):
        out: list[object] = []
        for index, item in enumerate(value):
            try:
                out.append(_encode(item, plain))
            except _Bad as bad:
                bad.parts.append(index)
                raise
        return out
    if isinstance(value, dict):
        obj: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad(
                    f"object key {_repr.repr(key)} is not a str", "object keys must be strings"
                )
            if key.startswith("$"):
                problem = _Bad(_field_name_problem(key), _FIELD_RULES)
                problem.parts.append(key)
                raise problem
            try:
                obj[str.__str__(key)] = _encode(item, plain)
            except _Bad as bad:
                bad.parts.append(key)
                raise
        return obj
    if isinstance(value, bytes):
        return _b64(bytes(value)) if plain else {"$bytes": _b64(bytes(value))}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return _encode(int(value), plain)
    if isinstance(value, float):
        return _encode(float(value), plain)
    raise _Bad(f"unsupported type {type(value).__name__} ({_repr.repr(value)})", _ALLOWED)


def to_convex_json(value: object) -> object:
    """Encode a Convex value as a JSON-compatible structure in Convex JSON.

    ``int`` becomes ``{"$integer": base64(8-byte little-endian)}``, ``bytes``
    ``{"$bytes": base64}``, and floats that JSON cannot carry (NaN, ±inf,
    -0.0) ``{"$float": base64(8-byte little-endian IEEE 754)}``; other floats
    are JSON numbers. Raises :class:`InvalidValueError` for values that are
    not Convex values (limits other than the int64 range are not checked).
    """
    try:
        return _encode(value, plain=False)
    except _Bad as bad:
        raise _raise_invalid(bad, "$") from None


def to_plain_json(value: object) -> object:
    """Encode a Convex value as plain JSON for humans (logs, CLI output).

    ints stay numbers, bytes become base64 strings, NaN and infinities become
    the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``. Lossy: there is no
    way back.
    """
    try:
        return _encode(value, plain=True)
    except _Bad as bad:
        raise _raise_invalid(bad, "$") from None


def to_clean_json(value: object) -> object:
    """Convex's ``"json"`` export: lossy but readable.

    int64 becomes a decimal string, bytes a base64 string, NaN and infinities
    the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [to_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_clean_json(item) for key, item in value.items()}
    # Not a Convex value: let the encoder name the problem.
    return to_convex_json(value)


def _decode_b64(text: object, length: int | None, key: str) -> bytes:
    if not isinstance(text, str):
        raise _Bad(
            f"{key} must hold a base64 string, got {describe_value(text)}",
            "see the Convex JSON format",
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{key} holds invalid base64 {describe_value(text)}") from None
    if length is not None and len(data) != length:
        raise _Bad(f"{key} must encode exactly {length} bytes, got {len(data)}")
    return data


def _decode(obj: Any) -> object:
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is float:
        return obj
    if t is int:
        # JSON numbers are float64 in Convex; ints travel as {"$integer": ...}.
        try:
            return float(obj)
        except OverflowError:
            raise _Bad(f"number {_repr.repr(obj)} is too large for a float64") from None
    if t is list:
        out: list[object] = []
        for index, item in enumerate(obj):
            try:
                out.append(_decode(item))
            except _Bad as bad:
                bad.parts.append(index)
                raise
        return out
    if t is dict:
        fields: dict[str, object] = obj
        if len(fields) == 1:
            ((key, item),) = fields.items()
            if key == "$integer":
                return _INT64.unpack(_decode_b64(item, 8, key))[0]
            if key == "$float":
                return _FLOAT64.unpack(_decode_b64(item, 8, key))[0]
            if key == "$bytes":
                return _decode_b64(item, None, key)
        decoded: dict[str, object] = {}
        for key, item in fields.items():
            if not isinstance(key, str):
                raise _Bad(
                    f"object key {_repr.repr(key)} is not a str", "object keys must be strings"
                )
            if key.startswith("$"):
                problem = _Bad(
                    f"unknown special key {describe_value(key)}",
                    "field names must not start with '$'; the special forms are "
                    '{"$integer": ...}, {"$float": ...} and {"$bytes": ...}',
                )
                problem.parts.append(key)
                raise problem
            try:
                decoded[key] = _decode(item)
            except _Bad as bad:
                bad.parts.append(key)
                raise
        return decoded
    raise _Bad(f"unsupported type {type(obj).__name__} in JSON input", "expected parsed JSON")


def from_convex_json(obj: object) -> object:
    """Decode a parsed Convex JSON structure back into a Convex value.

    The inverse of :func:`to_convex_json`: JSON numbers become floats, the
    ``$integer`` / ``$float`` / ``$bytes`` forms decode back (their base64 and
    lengths are checked), and any other key starting with ``$`` is refused.
    Raises :class:`InvalidValueError` naming the path of a bad part.
    """
    try:
        return _decode(obj)
    except _Bad as bad:
        raise _raise_invalid(bad, "$", prefix="Invalid Convex JSON") from None
