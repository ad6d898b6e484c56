"""Order-preserving binary encoding of Convex values, for index keys.

Index entries are compared as raw bytes (``memcmp`` in SQLite, ``bytes``
comparison in memory), so the encoding must sort exactly like Convex orders
values: undefined < null < int64 < float64 < boolean < string < bytes <
array < object. Every encoded value is self-delimiting (no encoding is a
proper prefix of another), which lets a range over the leading fields of an
index be expressed as a byte range over key prefixes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Final, Protocol

__all__ = [
    "MISSING",
    "IndexShape",
    "encode_fields",
    "encode_index_key",
    "index_key_of",
    "encode_suffix",
    "encode_prefix",
    "encode_value",
    "prefix_successor",
]


class _Missing:
    """A field absent from the document (Convex's ``undefined``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

_T_UNDEFINED = b"\x01"
_T_NULL = b"\x02"
_T_INT = b"\x03"
_T_FLOAT = b"\x04"
_T_FALSE = b"\x05"
_T_TRUE = b"\x06"
_T_STR = b"\x07"
_T_BYTES = b"\x08"
_T_ARRAY = b"\x09"
_T_OBJECT = b"\x0a"
_END = b"\x00"

_pack_q = struct.Struct(">Q").pack
_unpack_q = struct.Struct(">Q").unpack
_pack_d = struct.Struct(">d").pack
_SIGN = 1 << 63
_MASK = (1 << 64) - 1


def _escape(raw: bytes) -> bytes:
    # 0x00 ends a string, so a literal 0x00 becomes 0x00 0xff: that sorts
    # after the terminator (0x00 0x00 never appears), keeping prefixes first.
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def _encode_float(value: float) -> bytes:
    bits: int = _unpack_q(_pack_d(value))[0]
    # Negative floats: flip all bits; positive: flip the sign bit.
    return _T_FLOAT + _pack_q((~bits & _MASK) if bits & _SIGN else bits | _SIGN)


_short_strings: dict[object, bytes] = {}
"""Encodings of short strings seen in keys (states, kinds, flags repeat)."""


def encode_value(value: object) -> bytes:
    """Encode one Convex value (or ``MISSING``) so byte order is value order."""
    # The common index field types first: this runs for every index of every write.
    cls = type(value)
    if cls is str:
        known = _short_strings.get(value)
        if known is not None:
            return known
        raw: bytes = value.encode("utf-8")  # type: ignore[attr-defined]
        encoded = _T_STR + raw + b"\x00\x00" if b"\x00" not in raw else _T_STR + _escape(raw)
        if len(raw) <= 16 and len(_short_strings) < 4096:
            _short_strings[value] = encoded
        return encoded
    if cls is float:
        return _encode_float(value)  # type: ignore[arg-type]
    if value is MISSING:
        return _T_UNDEFINED
    if value is None:
        return _T_NULL
    if value is True:
        return _T_TRUE
    if value is False:
        return _T_FALSE
    if isinstance(value, int):
        return _T_INT + _pack_q((value + _SIGN) & _MASK)
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, str):
        return _T_STR + _escape(value.encode("utf-8"))
    if isinstance(value, bytes):
        return _T_BYTES + _escape(value)
    if isinstance(value, list):
        return _T_ARRAY + b"".join(b"\x01" + encode_value(item) for item in value) + _END
    if isinstance(value, dict):
        parts = [
            b"\x01" + _escape(key.encode("utf-8")) + encode_value(item)
            # Convex objects compare by fields sorted by name, not insertion order.
            for key, item in sorted(value.items())
        ]
        return _T_OBJECT + b"".join(parts) + _END
    if value is MISSING:
        return _T_UNDEFINED
    raise TypeError(f"cannot index a value of type {type(value).__name__}")


def encode_prefix(values: list[object] | tuple[object, ...]) -> bytes:
    """Encode the leading field values of an index key."""
    return b"".join(encode_value(value) for value in values)


def encode_index_key(
    doc: dict[str, object],
    fields: tuple[str, ...],
    creation_time: float,
    doc_id: str,
    *,
    sparse: bool = False,
    where: tuple[str, tuple[str, ...]] | None = None,
) -> bytes | None:
    """The full key of ``doc`` in an index on ``fields``.

    Like Convex, every index ends with ``_creationTime`` and ``_id``, so keys
    are unique and ties between equal field values sort by creation. For a
    ``sparse`` index, a document missing a field has no key (None); so has a
    document a partial index (``where``) leaves out.
    """
    prefix = prefix_encoder(fields, sparse, where)(doc)
    if prefix is None:
        return None
    return prefix + encode_suffix(creation_time, doc_id)


class IndexShape(Protocol):
    """What a key needs of an index (``convexpy.store.types.IndexDef`` has it)."""

    @property
    def fields(self) -> tuple[str, ...]: ...

    @property
    def sparse(self) -> bool: ...

    @property
    def where(self) -> tuple[str, tuple[str, ...]] | None: ...


def index_key_of(index: IndexShape, doc: dict[str, object]) -> bytes | None:
    """The key of ``doc`` in ``index`` (None: a sparse or partial index leaves it out)."""
    return encode_index_key(
        doc,
        index.fields,
        doc["_creationTime"],  # type: ignore[arg-type]
        doc["_id"],  # type: ignore[arg-type]
        sparse=index.sparse,
        where=index.where,
    )


def encode_fields(
    doc: dict[str, object], fields: tuple[str, ...], *, sparse: bool = False
) -> bytes | None:
    """The part of an index key made of ``fields`` (None: sparse and one is missing)."""
    out = b""
    for field in fields:
        value = doc.get(field, MISSING) if "." not in field else _lookup(doc, field)
        if value is MISSING:
            if sparse:
                return None
            out += _T_UNDEFINED
        else:
            out += encode_value(value)
    return out


@functools.lru_cache(maxsize=1024)
def prefix_encoder(
    fields: tuple[str, ...],
    sparse: bool = False,
    where: tuple[str, tuple[str, ...]] | None = None,
) -> Callable[[dict[str, object]], bytes | None]:
    """A function computing :func:`encode_fields` for ``fields``, specialised
    for the common one- and two-field shapes (it runs for every index of
    every write). With ``where=(field, values)``, documents whose ``field``
    is not one of ``values`` have no key (None)."""
    encode = _prefix_encoder(fields, sparse)
    if where is None:
        return encode
    field, values = where
    wanted, allowed = _getter(field), frozenset(values)

    def partial(doc: dict[str, object]) -> bytes | None:
        return encode(doc) if wanted(doc) in allowed else None

    return partial


def _prefix_encoder(
    fields: tuple[str, ...], sparse: bool
) -> Callable[[dict[str, object]], bytes | None]:
    if len(fields) == 1 and "." not in fields[0]:
        (name,) = fields

        def one(doc: dict[str, object]) -> bytes | None:
            value = doc.get(name, MISSING)
            if value is MISSING:
                return None if sparse else _T_UNDEFINED
            return encode_value(value)

        return one
    if len(fields) == 2 and not sparse:
        first, second = (_getter(field) for field in fields)

        def two(doc: dict[str, object]) -> bytes | None:
            return encode_value(first(doc)) + encode_value(second(doc))

        return two
    return functools.partial(encode_fields, fields=fields, sparse=sparse)


def _getter(field: str) -> Callable[[dict[str, object]], object]:
    if "." not in field:
        return lambda doc: doc.get(field, MISSING)
    head, _, rest = field.partition(".")
    if "." not in rest:

        def nested(doc: dict[str, object]) -> object:
            inner = doc.get(head, MISSING)
            if isinstance(inner, dict):  # as _lookup decides
                return inner.get(rest, MISSING)
            return MISSING

        return nested
    return functools.partial(_lookup, field=field)


def encode_suffix(creation_time: float, doc_id: str) -> bytes:
    """The end every index key shares: ``_creationTime`` then ``_id``."""
    # Ids are base32 text: no 0x00 to escape.
    return _encode_float(creation_time) + doc_id.encode("ascii") + b"\x00\x00"


def _lookup(doc: dict[str, object], field: str) -> object:
    if "." not in field:
        return doc.get(field, MISSING)
    current: object = doc
    for part in _split(field):
        if not isinstance(current, dict) or part not in current:
            return MISSING
        current = current[part]
    return current


@functools.lru_cache(maxsize=1024)
def _split(field: str) -> list[str]:
    return field.split(".")


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``.

    ``None`` means there is none (the prefix is all 0xff, or empty).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
