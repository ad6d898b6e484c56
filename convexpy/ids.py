"""Document ids: strings that encode the table they belong to.

The format is Convex's: lowercase Crockford base32 of

    varint(table number) + 16-byte internal id + 2-byte footer

where the footer is Convex's Fletcher-16 (sums modulo 256) over the preceding
bytes, little-endian. Unlike Convex, which assigns table numbers in a
catalog, convexpy derives the number from the table *name*
(:func:`table_number`), always in ``[2**28, 2**32)``: the varint is then
exactly 5 bytes = 40 bits = 8 base32 characters, so every id of a table
starts with the same 8 characters and is 37 characters long. The decoder
also accepts Convex's shorter ids (table numbers of 1 to 4 varint bytes).

The internal id of a new document is 5 bytes of the wall clock in
milliseconds (modulo 2**40, about 35 years), 85 random bits from the
operating system and 3 zero bits. The random bits keep ids unguessable
(UUIDv7 has 74); the time prefix keeps the ids of one table roughly in
creation order, so a store keyed by id (SQLite's B-trees) appends near the
end instead of dirtying a random page per insert. Nothing relies on that
order: ``_creationTime`` is the order of record.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass
from itertools import accumulate
from typing import Annotated, Any, Literal, get_args, get_origin

from .errors import InvalidIdError

__all__ = [
    "ID_LENGTH",
    "Id",
    "IdOf",
    "check_id",
    "decode_id",
    "encode_id",
    "id_prefix",
    "id_problem",
    "id_table_number",
    "is_id_of",
    "new_id",
    "table_number",
]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

# Encoding: the bytes as one big int, read out ten bits (two characters) at a
# time from a 1024-entry table. Decoding: translate to the digits Python's
# int(..., 32) understands and let int() do the work. Both are several times
# faster than the pure-Python base64.b32encode/b32decode. Every ASCII
# character outside the alphabet (uppercase, "_", whitespace, signs, which
# int() would otherwise accept) translates to "!", which int() rejects.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_TO_DIGITS = str.maketrans(
    {chr(c): "!" for c in range(128)}
    | {c: "0123456789abcdefghijklmnopqrstuv"[i] for i, c in enumerate(_ALPHABET)}
)
_layouts: dict[int, tuple[int, int, tuple[int, ...]]] = {}

_INTERNAL_ID_LENGTH = 16
_FOOTER_LENGTH = 2
_VERSION = 0
_MIN_TABLE_NUMBER = 1 << 28
_TABLE_NUMBER_SPAN = (1 << 32) - _MIN_TABLE_NUMBER

ID_LENGTH = 37
"""Length of every id :func:`new_id` makes (5 + 16 + 2 bytes in base32)."""

# base32 lengths of 1..5-byte varints + 18 bytes; 33 and 35 cannot occur.
_VALID_LENGTHS = frozenset(-(-(n + 18) * 8 // 5) for n in range(1, 6))


def _layout(nbytes: int) -> tuple[int, int, tuple[int, ...]]:
    # (padding bits, shift of a leading single character or -1, pair shifts)
    nbits = nbytes * 8
    nchars = -(-nbits // 5)
    top = (nchars - 1) * 5 if nchars % 2 else -1
    start = (nchars - 2) * 5 if nchars % 2 == 0 else (nchars - 3) * 5
    layout = (nchars * 5 - nbits, top, tuple(range(start, -1, -10)))
    _layouts[nbytes] = layout
    return layout


def _base32(data: bytes) -> str:
    """Crockford base32 (lowercase, no padding), bits in RFC 4648 order."""
    pad, top, shifts = _layouts.get(len(data)) or _layout(len(data))
    n = int.from_bytes(data, "big") << pad
    pairs = _PAIRS
    text = "".join([pairs[(n >> shift) & 1023] for shift in shifts])
    return _ALPHABET[n >> top] + text if top >= 0 else text


def _fletcher16(data: bytes) -> int:
    # Convex's Fletcher-16 with sums modulo 256: c0 is the byte sum, c1 the
    # sum of the running sums; accumulate() keeps both loops in C.
    return ((sum(accumulate(data)) & 0xFF) << 8) | (sum(data) & 0xFF)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@functools.lru_cache(maxsize=1024)
def table_number(table: str) -> int:
    """The table number of ``table``: a stable hash of its UTF-8 name.

    Always in ``[2**28, 2**32)``. Two names could collide (about one chance
    in 2**32 per pair), so whoever owns the schema should check its tables.
    """
    if not isinstance(table, str) or not table:
        raise ValueError(f"table name must be a non-empty string, got {table!r}")
    digest = hashlib.blake2b(table.encode("utf-8"), digest_size=4, person=b"convexpy").digest()
    number = _MIN_TABLE_NUMBER + int.from_bytes(digest, "big") % _TABLE_NUMBER_SPAN
    _table_names.setdefault(number, table)
    return number


# Table names seen by table_number(), so messages can say which table an id
# belongs to. Best effort: only names hashed in this process are known.
_table_names: dict[int, str] = {}


@functools.lru_cache(maxsize=1024)
def _table_prefix(table: str) -> tuple[str, int, int]:
    """The table's varint in base32, with its byte sum and running sums' sum."""
    varint = _varint(table_number(table))
    # 5 varint bytes are exactly 8 base32 characters, so the text prefix can
    # be cached and the rest encoded on its own.
    return _base32(varint), sum(varint), sum(accumulate(varint))


def id_prefix(table: str) -> str:
    """The 8 characters every id :func:`new_id` makes for ``table`` starts with."""
    return _table_prefix(table)[0]


def encode_id(table_num: int, internal_id: bytes) -> str:
    """Encode a table number (1 .. 2**32-1) and 16-byte internal id as an id string."""
    if not 0 < table_num < 1 << 32:
        raise ValueError(f"table number must be in [1, 2**32), got {table_num}")
    if len(internal_id) != _INTERNAL_ID_LENGTH:
        raise ValueError(f"internal id must be 16 bytes, got {len(internal_id)}")
    payload = _varint(table_num) + bytes(internal_id)
    footer = _fletcher16(payload) ^ _VERSION
    return _base32(payload + footer.to_bytes(2, "little"))


_RANDOM_CHARS = 17
"""Random base32 characters in a new id: 85 bits."""
_TAIL_BYTES = 11
"""The internal id's bytes after the clock: the 85 random bits and 3 zero bits."""
_POOL_IDS = 512
_BYTE_TO_CHAR = bytes(ord(_ALPHABET[b & 31]) for b in range(256))


def _sum_tables() -> tuple[list[bytes], list[bytes]]:
    # Random character k of a tail (its 5 bits, from a random byte's low 5)
    # lands in known bits of known tail bytes, so its share of the tail's
    # Fletcher sums (byte sum, and each byte times the bytes from it to the
    # end) is a function of the character alone: one translate table per
    # position and sum, modulo 256 like the sums.
    sums, weighted = [], []
    for k in range(_RANDOM_CHARS):
        by_sum, by_weighted = bytearray(256), bytearray(256)
        for byte in range(256):
            digit = byte & 31
            total = total_weighted = 0
            for i in range(5):
                if digit >> (4 - i) & 1:
                    bit = 5 * k + i
                    value = 1 << (7 - bit % 8)
                    total += value
                    total_weighted += value * (_TAIL_BYTES - bit // 8)
            by_sum[byte], by_weighted[byte] = total & 0xFF, total_weighted & 0xFF
        sums.append(bytes(by_sum))
        weighted.append(bytes(by_weighted))
    return sums, weighted


_SUM_TABLES, _WEIGHTED_TABLES = _sum_tables()


def _lanes(data: bytes) -> int:
    """``data`` as an int with one byte per 16-bit lane, so that adding up to
    257 of them never carries from a lane into the next."""
    wide = bytearray(2 * len(data))
    wide[::2] = data
    return int.from_bytes(wide, "little")


def _refill() -> None:
    # One getrandom() call per 512 ids. Each random byte becomes one
    # character (its low 5 bits), translated in C. The tails' Fletcher sums
    # are added up position by position for all 512 at once, in 16-bit lanes
    # of big ints (see _sum_tables), so new_id only adds the head's.
    global _pool_text, _pool_sums, _pool_weighted, _pool_next
    raw = os.urandom(_RANDOM_CHARS * _POOL_IDS)
    sums = weighted = 0
    for k in range(_RANDOM_CHARS):
        column = raw[k::_RANDOM_CHARS]
        sums += _lanes(column.translate(_SUM_TABLES[k]))
        weighted += _lanes(column.translate(_WEIGHTED_TABLES[k]))
    _pool_text = raw.translate(_BYTE_TO_CHAR).decode("ascii")
    _pool_sums = sums.to_bytes(2 * _POOL_IDS, "little")[::2]
    _pool_weighted = weighted.to_bytes(2 * _POOL_IDS, "little")[::2]
    _pool_next = 0


_pool_text = ""
"""Random tails of 17 characters, one after another."""
_pool_sums = b""
"""The byte sum of each tail, modulo 256."""
_pool_weighted = b""
"""The sum of each tail's running byte sums, modulo 256."""
_pool_next = _POOL_IDS
"""The next unused tail."""


@functools.lru_cache(maxsize=64)
def _time_prefix(table: str, ms: int) -> tuple[str, int, int]:
    # varint (5 bytes) + clock (5 bytes) = 80 bits = 16 characters, cached
    # for the millisecond with what the head adds to the Fletcher sums' low
    # bytes: its byte sum, and its running sums' sum plus its byte sum once
    # per tail byte (the running sums carry it through the tail). The
    # varint's share is the table's; the clock's running sums each start
    # from the varint's byte sum.
    text, varint_sum, varint_running = _table_prefix(table)
    clock = (ms & 0xFF_FFFF_FFFF).to_bytes(5, "big")
    head_sum = varint_sum + sum(clock)
    running = varint_running + 5 * varint_sum + sum(accumulate(clock))
    return text + _base32(clock), head_sum & 0xFF, (running + _TAIL_BYTES * head_sum) & 0xFF


# The footer's four characters (3 zero bits, the footer little-endian, 1 bit
# of padding) by the Fletcher sums' low bytes: ``low`` (the byte sum) and
# ``high`` (the running sums'), before the version.
_FOOTER_HEAD = [_PAIRS[(low ^ (_VERSION & 0xFF)) >> 1] for low in range(256)]
"""Characters 1-2, by ``low``."""
_FOOTER_TAIL = [
    _PAIRS[((low ^ _VERSION) & 1) << 9 | (high ^ (_VERSION >> 8)) << 1]
    for low in range(2)
    for high in range(256)
]
"""Characters 3-4, by ``(low & 1) << 8 | high``."""

_last_prefix: tuple[str, int, str, int, int] = ("", -1, "", 0, 0)
"""(table, ms, :func:`_time_prefix`) of the latest id."""


def new_id(table: str) -> str:
    """A fresh id for a document of ``table``: time-prefixed, 85 random bits."""
    global _last_prefix, _pool_next
    ms = int(time.time() * 1000)
    last = _last_prefix
    if last[1] != ms or last[0] != table:
        last = _last_prefix = (table, ms, *_time_prefix(table, ms))
    at = _pool_next
    if at == _POOL_IDS:
        _refill()
        at = 0
    _pool_next = at + 1
    low = (last[3] + _pool_sums[at]) & 0xFF
    high = (last[4] + _pool_weighted[at]) & 0xFF
    start = at * _RANDOM_CHARS
    return (
        last[2]
        + _pool_text[start : start + _RANDOM_CHARS]
        + _FOOTER_HEAD[low]
        + _FOOTER_TAIL[(low & 1) << 8 | high]
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _MalformedId(InvalidIdError):
    """An id that does not decode; ``why`` is the reason without the id itself."""

    def __init__(self, value: object, why: str) -> None:
        super().__init__(f"not a valid document id: {_shown(value)} ({why})")
        self.why = why


def _invalid(value: object, why: str) -> InvalidIdError:
    return _MalformedId(value, why)


@functools.lru_cache(maxsize=8192)
def _decode(text: str) -> tuple[int, bytes]:
    # Cached: the same ids are checked over and over (arguments, patches,
    # scheduler calls), and a hit costs a tenth of a decode.
    if len(text) not in _VALID_LENGTHS:
        raise _invalid(text, f"wrong length {len(text)}, ids are {ID_LENGTH} characters")
    if not text.isascii():
        raise _invalid(text, "contains characters outside the base32 alphabet")
    try:
        bits = int(text.translate(_TO_DIGITS), 32)
    except ValueError:
        raise _invalid(text, "contains characters outside the base32 alphabet") from None
    nbytes = len(text) * 5 // 8
    spare = len(text) * 5 - nbytes * 8
    data = (bits >> spare).to_bytes(nbytes, "big")
    number = 0
    for index in range(5):
        byte = data[index]
        number |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            varint_length = index + 1
            break
    else:
        raise _invalid(text, "bad table number")
    # A zero table number, or a varint longer than needed, is not canonical.
    if number == 0 or number >= 1 << 32 or -(-number.bit_length() // 7) != varint_length:
        raise _invalid(text, "bad table number")
    if len(data) != varint_length + _INTERNAL_ID_LENGTH + _FOOTER_LENGTH:
        raise _invalid(text, f"wrong length {len(text)} for its table number")
    body = data[:-_FOOTER_LENGTH]
    footer = int.from_bytes(data[-_FOOTER_LENGTH:], "little")
    if footer != _fletcher16(body) ^ _VERSION:
        raise _invalid(text, "bad checksum")
    # Unused trailing bits must be zero, or two strings would name one id.
    if bits & ((1 << spare) - 1):
        raise _invalid(text, "not in canonical form")
    return number, body[varint_length:]


def decode_id(id: object) -> tuple[int, bytes]:
    """Decode an id into ``(table number, 16-byte internal id)``.

    Raises :class:`InvalidIdError` ("not a valid document id: ...") for
    non-strings and for strings of the wrong length, alphabet or checksum.
    """
    if not isinstance(id, str):
        raise InvalidIdError(
            f"not a valid document id: {_shown(id)} (ids are strings, got {type(id).__name__})"
        )
    return _decode(str.__str__(id))


def id_table_number(id: object) -> int:
    """The table number encoded in ``id`` (raises :class:`InvalidIdError`)."""
    return decode_id(id)[0]


def is_id_of(id: object, table: str) -> bool:
    """Whether ``id`` is a well-formed id of a document in ``table``."""
    try:
        return decode_id(id)[0] == table_number(table)
    except InvalidIdError:
        return False


def id_problem(id: object, table: str | None) -> str | None:
    """Why ``id`` is not an id of ``table`` (of any table if ``None``), or ``None``.

    For messages: ``"not a valid document id (bad checksum)"`` or ``"it is an
    id of table 'users'"`` (``"of another table"`` when this process has not
    seen the other table's name).
    """
    try:
        number, _ = decode_id(id)
    except _MalformedId as error:
        return f"not a valid document id ({error.why})"
    if table is not None and number != table_number(table):
        other = _table_names.get(number)
        return f"it is an id of table {other!r}" if other else "it is an id of another table"
    return None


def check_id(id: object, table: str | None) -> None:
    """Raise :class:`InvalidIdError` unless ``id`` is an id of ``table``.

    ``table=None`` accepts a well-formed id of any table. The message names
    the expected table and, for a well-formed id of another table, says so
    (naming that table when this process knows its name).
    """
    problem = id_problem(id, table)
    if problem is not None:
        expected = "a document id" if table is None else f"an id of table {table!r}"
        raise InvalidIdError(f"expected {expected}, got {_shown(id)}: {problem}")


@dataclass(frozen=True, slots=True)
class IdOf:
    """Marker in ``Annotated[str, IdOf("t")]``: an id of table ``t`` (``None``: any)."""

    table: str | None


class Id(str):
    """A document id; as an annotation, ``Id["messages"]`` is an id of ``messages``.

    ``Id["t"]`` is ``Annotated[str, IdOf("t")]``, so it works in handler
    annotations and TypedDicts; ``Id[Literal["t"]]`` is the same (linters such
    as pyflakes read ``Id["t"]`` in an annotation as a forward reference to a
    name ``t``). ``Id`` alone and ``Id[str]`` mean an id of any table. Ids at
    runtime are plain ``str``; this class exists for annotations.
    """

    __slots__ = ()

    def __class_getitem__(cls, table: Any) -> Any:
        if table is str:
            return Annotated[str, IdOf(None)]
        # Id[Literal["messages"]] is the same thing, spelled so that linters
        # do not read "messages" as a forward reference to a missing name.
        if get_origin(table) is Literal and len(get_args(table)) == 1:
            (table,) = get_args(table)
        if isinstance(table, str) and table:
            return Annotated[str, IdOf(table)]
        raise TypeError(f'Id[...] takes a table name such as Id["messages"], got {table!r}')
