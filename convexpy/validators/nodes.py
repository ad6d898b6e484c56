"""The validator nodes: :class:`Validator` and a subclass per ``v.*`` form.

Each node knows how to describe itself, check a value on the Python path
(``_check``) and compile itself to a msgspec type (``_ms``).
"""

from __future__ import annotations

import json
import math
import types
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Union, cast

import msgspec

from ..convex_json import to_convex_json
from ..ids import id_problem
from ..values import (
    INT64_MAX,
    INT64_MIN,
    describe_value,
    find_invalid,
    is_valid_field_name,
)
from .core import (
    _ALL_KINDS,
    _BUILTIN_TYPES,
    _FALLBACK,
    _FIELD_NAME,
    _I64,
    _I64_OR_WHOLE,
    _NOT_BUILT,
    _Checked,
    _dec_hook,
    _Mismatch,
    _value_kind,
)

# --------------------------------------------------------------------------
# Validators


class Validator(ABC):
    """Base class of all validators (what ``v.*`` returns).

    ``describe()`` gives the short form used in messages (``array<int64>``),
    ``json()`` a structural description in the shape of Convex's validator
    JSON, and ``is_optional`` whether the field may be absent (see
    ``v.optional``). Validators are immutable and compare structurally.
    """

    __slots__ = ("_ms_type", "_ms_whole_type", "is_optional")

    def __init__(self) -> None:
        self.is_optional = False
        self._ms_type: Any = _NOT_BUILT
        self._ms_whole_type: Any = _NOT_BUILT

    # -- public ------------------------------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """A short type expression for messages, e.g. ``{ name: string, age?: int64 }``."""

    @abstractmethod
    def json(self) -> dict[str, Any]:
        """A JSON-compatible structural description (Convex's validator JSON shape)."""

    @abstractmethod
    def _repr(self) -> str:
        """The ``v.*(...)`` expression that builds this validator."""

    def __repr__(self) -> str:
        return f"v.optional({self._repr()})" if self.is_optional else self._repr()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Validator):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.is_optional == other.is_optional
            and self.json() == other.json()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.is_optional, repr(self)))

    # -- internals ---------------------------------------------------------

    @abstractmethod
    def _check(self, value: Any) -> Any:
        """Python path: return the converted value or raise ``_Mismatch``."""

    @abstractmethod
    def _kinds(self) -> frozenset[str]:
        """The value kinds this validator can accept (for union compilation)."""

    def _shallow_match(self, value: object) -> bool:
        # Whether a union's error should be explained by this member's own
        # error (the value has this container's shape) rather than by the
        # union as a whole. Scalars never: "expected string | null" is clearer.
        return False

    def _build_ms(self, whole: bool) -> Any:
        """The msgspec type for this node, or ``_FALLBACK`` for the Python path.

        Children's types are ``child._ms(whole)``.
        """
        return _FALLBACK

    def _ms(self, whole: bool = False) -> Any:
        """The msgspec type of this node (built once).

        With ``whole``, ``int`` annotations (:class:`VIntAnnotation`) also
        take whole floats within ±2^53, which stay floats: see
        :func:`whole_floats_to_ints`. Nodes without one have a single type.
        """
        if whole:
            ms = self._ms_whole_type
            if ms is _NOT_BUILT:
                built = self._build_ms(True) if takes_integral_floats(self) else self._ms()
                ms = self._ms_whole_type = self._marker(built)
            return ms
        ms = self._ms_type
        if ms is _NOT_BUILT:
            ms = self._ms_type = self._marker(self._build_ms(False))
        return ms

    def _marker(self, ms: Any) -> Any:
        if ms is not _FALLBACK:
            return ms
        return type(f"Checked{type(self).__name__}", (_Checked,), {"__slots__": (), "node": self})


class _Scalar(Validator):
    """A validator without parameters: its texts, kinds and msgspec type are class data."""

    __slots__ = ()
    _name: ClassVar[str]  # describe()
    _json_type: ClassVar[str]  # json()["type"], Convex's name
    _factory: ClassVar[str]  # repr(): v.<factory>()
    _kind_set: ClassVar[frozenset[str]]
    _ms_plain: ClassVar[Any]  # the msgspec type, or _FALLBACK

    def describe(self) -> str:
        return self._name

    def json(self) -> dict[str, Any]:
        return {"type": self._json_type}

    def _repr(self) -> str:
        return f"v.{self._factory}()"

    def _kinds(self) -> frozenset[str]:
        return self._kind_set

    def _build_ms(self, whole: bool) -> Any:
        return self._ms_plain


class VString(_Scalar):
    """``v.string()``: a ``str``."""

    __slots__ = ()
    _name = _json_type = _factory = "string"
    _kind_set = frozenset({"str"})
    _ms_plain = str

    def _check(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        raise _Mismatch(value, "string")


class VFloat64(_Scalar):
    """``v.number()`` / ``v.float64()``: a float; ints are accepted and converted."""

    __slots__ = ()
    _name, _json_type, _factory = "float64", "number", "number"
    _kind_set = frozenset({"float", "int"})
    _ms_plain = float

    def _check(self, value: Any) -> Any:
        if type(value) is float:  # msgspec refuses float subclasses too
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise _Mismatch(value, "float64", detail="too large for a float64") from None
        raise _Mismatch(value, "float64")


class VInt64(_Scalar):
    """``v.int64()`` / ``v.bigint()``: an ``int`` in the int64 range (not a ``bool``)."""

    __slots__ = ()
    _name, _json_type, _factory = "int64", "bigint", "int64"
    _kind_set = frozenset({"int"})
    _ms_plain = _I64

    def _check(self, value: Any) -> Any:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and INT64_MIN <= value <= INT64_MAX
        ):
            return int(value)
        raise _Mismatch(value, "int64")


MAX_EXACT_FLOAT_INT = 2**53
"""Integral floats up to this magnitude are exact: every integer in
``[-2**53, 2**53]`` has a float64 of the same value."""

INTEGRAL_FLOATS = "`int` takes integers (a float only when it is whole and within ±2^53)"


def integral_float(value: float) -> int | None:
    """``value`` as an ``int`` when it is whole and within ±2^53, else None."""
    if -MAX_EXACT_FLOAT_INT <= value <= MAX_EXACT_FLOAT_INT and value.is_integer():
        return int(value)
    return None  # fractional, too large to be exact, NaN or infinite


class VIntAnnotation(VInt64):
    """The ``int`` annotation: an int64, or a float that is a whole number
    within ±2^53 (returned as an ``int``).

    Clients that know only float64 (JSON numbers, the official Python client
    for plain ``int`` values) send ``3`` as ``3.0``; an ``int`` parameter
    takes it as ``3``. Other floats are refused (``_Mismatch.kind`` is
    ``"integral"``). ``v.int64()`` stays strict. The msgspec type is
    ``v.int64()``'s: ints are checked at C speed, and a float sends the whole
    input down the Python path (see ``compiled.py``).
    """

    __slots__ = ()
    # Both: in a union with a float member, the Python path decides (a float stays a float).
    _kind_set = frozenset({"int", "float"})

    def _repr(self) -> str:
        return "int"

    def json(self) -> dict[str, Any]:
        # Convex's shape, marked: it takes more than v.int64() (and so is not equal to it).
        return {"type": self._json_type, "wholeFloats": True}

    def _build_ms(self, whole: bool) -> Any:
        return _I64_OR_WHOLE if whole else _I64

    def _check(self, value: Any) -> Any:
        if type(value) is float:
            converted = integral_float(value)
            if converted is None:
                raise _Mismatch(value, self._name, detail=INTEGRAL_FLOATS, kind="integral")
            return converted
        return super()._check(value)


def takes_integral_floats(validator: Validator) -> bool:
    """Whether an ``int`` annotation (:class:`VIntAnnotation`) is anywhere in ``validator``."""
    if isinstance(validator, VIntAnnotation):
        return True
    if isinstance(validator, VArray):
        return takes_integral_floats(validator.item)
    if isinstance(validator, VObject):
        return any(takes_integral_floats(field) for field in validator.fields.values())
    if isinstance(validator, VRecord):
        return takes_integral_floats(validator.values)
    if isinstance(validator, VUnion):
        return any(takes_integral_floats(member) for member in validator.members)
    return False


def whole_floats_to_ints(validator: Validator) -> Callable[[Any], Any] | None:
    """What turns the whole floats that ``validator._ms(whole=True)`` took at
    ``int`` annotations into ints, in a plain value it accepted (containers
    are converted in place); None when there is nothing to turn.

    Nodes left to the Python path (markers) are skipped: their values are
    converted already.
    """
    if not takes_integral_floats(validator):
        return None
    ms = validator._ms(whole=True)
    if isinstance(ms, type) and issubclass(ms, _Checked):
        return None
    if isinstance(validator, VIntAnnotation):
        return _whole_to_int
    if isinstance(validator, VArray):
        item = whole_floats_to_ints(validator.item)
        if item is None:  # the items are left to the Python path
            return None
        if item is _whole_to_int:  # list[int]: no call per item
            return lambda items: [int(x) if type(x) is float else x for x in items]
        return lambda items: [item(x) for x in items]
    if isinstance(validator, VRecord):
        values = whole_floats_to_ints(validator.values)
        if values is None:
            return None
        if values is _whole_to_int:
            return lambda record: {
                key: int(x) if type(x) is float else x for key, x in record.items()
            }
        return lambda record: {key: values(x) for key, x in record.items()}
    if isinstance(validator, VObject):
        fields = {
            name: convert
            for name, field in validator.fields.items()
            if (convert := whole_floats_to_ints(field)) is not None
        }
        if not fields:
            return None

        def convert_fields(obj: dict[str, Any]) -> dict[str, Any]:
            for name, convert in fields.items():
                if name in obj:
                    obj[name] = convert(obj[name])
            return obj

        return convert_fields
    assert isinstance(validator, VUnion)
    # A compiled union's members take disjoint kinds of values.
    by_kind = {
        kind: convert
        for member in _members(validator)
        if (convert := whole_floats_to_ints(member)) is not None
        for kind in member._kinds()
    }
    if not by_kind:
        return None
    return lambda value: by_kind.get(_value_kind(value), _unchanged)(value)


def _whole_to_int(value: Any) -> Any:
    return int(value) if type(value) is float else value


def _unchanged(value: Any) -> Any:
    return value


class VBoolean(_Scalar):
    """``v.boolean()``: ``True`` or ``False``."""

    __slots__ = ()
    _name = _json_type = _factory = "boolean"
    _kind_set = frozenset({"bool"})
    _ms_plain = bool

    def _check(self, value: Any) -> Any:
        if type(value) is bool:
            return value
        raise _Mismatch(value, "boolean")


class VNull(_Scalar):
    """``v.null()``: ``None``."""

    __slots__ = ()
    _name = _json_type = _factory = "null"
    _kind_set = frozenset({"null"})
    _ms_plain = None

    def _check(self, value: Any) -> Any:
        if value is None:
            return None
        raise _Mismatch(value, "null")


class VBytes(_Scalar):
    """``v.bytes()``: ``bytes`` (``bytearray`` and ``memoryview`` are converted)."""

    __slots__ = ()
    _name = _json_type = _factory = "bytes"
    _kind_set = frozenset({"bytes"})
    _ms_plain = bytes

    def _check(self, value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise _Mismatch(value, "bytes")


class VAny(_Scalar):
    """``v.any()``: any Convex value (checked with :func:`convexpy.values.check_value`)."""

    __slots__ = ()
    _name = _json_type = _factory = "any"
    _kind_set = _ALL_KINDS
    _ms_plain = _FALLBACK

    def _check(self, value: Any) -> Any:
        problem = find_invalid(value)
        if problem is None:
            return value
        parts, text = problem
        inner: Any = value
        for part in parts:
            try:
                inner = inner[part]
            except (LookupError, TypeError):
                break
        raise _Mismatch(
            inner, "a Convex value", reason=f"not a Convex value: {text}", sub_parts=parts
        )


class VId(Validator):
    """``v.id("table")``: a document id of that table (``table=None``: any table)."""

    __slots__ = ("table",)

    def __init__(self, table: str | None) -> None:
        super().__init__()
        if table is not None and (not isinstance(table, str) or not table):
            raise TypeError(f"v.id() takes a table name, got {table!r}")
        self.table = table

    def describe(self) -> str:
        return f"id({json.dumps(self.table)})" if self.table is not None else "id"

    def json(self) -> dict[str, Any]:
        return {"type": "id", "tableName": self.table}

    def _repr(self) -> str:
        return f"v.id({self.table!r})"

    def _check(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise _Mismatch(value, self.describe())
        problem = id_problem(value, self.table)
        if problem is not None:
            raise _Mismatch(value, self.describe(), detail=problem)
        return value

    def _kinds(self) -> frozenset[str]:
        return frozenset({"str"})


class VLiteral(Validator):
    """``v.literal(value)``: exactly that string, int64, float or boolean."""

    __slots__ = ("value",)

    def __init__(self, value: str | int | float | bool) -> None:
        super().__init__()
        if isinstance(value, bool | str):
            pass
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise ValueError(f"v.literal({value}) is outside the int64 range")
            value = int(value)
        elif isinstance(value, float):
            if math.isnan(value):
                raise ValueError("v.literal(nan) can never match (NaN is not equal to itself)")
        else:
            raise TypeError(
                f"v.literal() takes a str, int, float or bool, got {describe_value(value)}"
            )
        self.value = value

    def describe(self) -> str:
        value = self.value
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return repr(value)

    def json(self) -> dict[str, Any]:
        return {"type": "literal", "value": to_convex_json(self.value)}

    def _repr(self) -> str:
        return f"v.literal({self.value!r})"

    def _matches(self, value: object) -> bool:
        literal = self.value
        if isinstance(literal, bool):
            return value is literal
        if isinstance(literal, str):
            return isinstance(value, str) and value == literal
        if isinstance(literal, int):
            return isinstance(value, int) and not isinstance(value, bool) and value == literal
        return type(value) is float and value == literal

    def _check(self, value: Any) -> Any:
        if self._matches(value):
            return self.value
        raise _Mismatch(value, self.describe())

    def _kinds(self) -> frozenset[str]:
        return frozenset({_value_kind(self.value)})

    def _build_ms(self, whole: bool) -> Any:
        # msgspec's Literal supports str and int values only.
        if isinstance(self.value, str) or (
            isinstance(self.value, int) and not isinstance(self.value, bool)
        ):
            return _literal_type([self.value])
        return _FALLBACK


def _literal_type(values: list[Any]) -> Any:
    return cast(Any, Literal)[tuple(values)]


def _no_optional(validator: Validator, where: str) -> Validator:
    if validator.is_optional:
        raise TypeError(
            f"v.optional(...) is only allowed as an object field or an argument, not {where}"
        )
    return validator


class VArray(Validator):
    """``v.array(item)``: a list whose items match ``item``."""

    __slots__ = ("item",)

    def __init__(self, item: Validator) -> None:
        super().__init__()
        self.item = _no_optional(item, "as an array item")

    def describe(self) -> str:
        return f"array<{self.item.describe()}>"

    def json(self) -> dict[str, Any]:
        return {"type": "array", "value": self.item.json()}

    def _repr(self) -> str:
        return f"v.array({self.item!r})"

    def _check(self, value: Any) -> Any:
        if not isinstance(value, list | tuple | set | frozenset):
            raise _Mismatch(value, self.describe())
        check = self.item._check
        out = []
        for index, item in enumerate(value):
            try:
                out.append(check(item))
            except _Mismatch as mismatch:
                mismatch.parts.append(index)
                raise
        return out

    def _kinds(self) -> frozenset[str]:
        return frozenset({"list"})

    def _shallow_match(self, value: object) -> bool:
        return isinstance(value, list | tuple | set | frozenset)

    def _build_ms(self, whole: bool) -> Any:
        return types.GenericAlias(list, (self.item._ms(whole),))


class VObject(Validator):
    """``v.object({...})``: a dict with exactly these fields (optional ones may be absent)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Validator]) -> None:
        super().__init__()
        for name, field in fields.items():
            if not isinstance(field, Validator):
                raise TypeError(
                    f"field {name!r} must be a validator such as v.string(), got {field!r}"
                )
            if not is_valid_field_name(name):
                raise ValueError(
                    f"invalid field name {name!r}: field names are non-empty printable "
                    "ASCII, at most 1024 characters, not starting with '$'"
                )
        self.fields = dict(fields)

    def describe(self) -> str:
        if not self.fields:
            return "{}"
        inner = ", ".join(
            f"{name}{'?' if f.is_optional else ''}: {f.describe()}"
            for name, f in self.fields.items()
        )
        return f"{{ {inner} }}"

    def json(self) -> dict[str, Any]:
        return {
            "type": "object",
            "value": {
                name: {"fieldType": f.json(), "optional": f.is_optional}
                for name, f in self.fields.items()
            },
        }

    def _repr(self) -> str:
        inner = ", ".join(f"{name!r}: {f!r}" for name, f in self.fields.items())
        return f"v.object({{{inner}}})"

    def _check(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Mismatch(value, self.describe())
        fields = self.fields
        out: dict[str, Any] = {}
        for key, item in value.items():
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                if not isinstance(key, str):
                    raise _Mismatch(
                        value,
                        self.describe(),
                        reason=f"object keys must be strings, got {describe_value(key)}",
                    )
                raise _Mismatch(
                    item,
                    self.describe(),
                    reason=f"unexpected field `{key}` (expected {self.describe()})",
                    kind="unexpected",
                    sub_parts=(key,),
                )
            try:
                out[key] = field._check(item)
            except _Mismatch as mismatch:
                mismatch.parts.append(key)
                raise
        if len(out) != len(fields):
            for name, field in fields.items():
                if name not in out and not field.is_optional:
                    raise _Mismatch(
                        None,
                        field.describe(),
                        reason=f"missing required field `{name}` (expected {field.describe()})",
                        kind="missing",
                        sub_parts=(name,),
                    )
        return out

    def _kinds(self) -> frozenset[str]:
        return frozenset({"dict"})

    def _shallow_match(self, value: object) -> bool:
        # A discriminated union member matches when its literal fields do.
        if not isinstance(value, dict):
            return False
        for name, field in self.fields.items():
            if isinstance(field, VLiteral) and not (name in value and field._matches(value[name])):
                return False
        return True

    def _build_ms(self, whole: bool) -> Any:
        # Struct attributes are f0, f1 ... renamed to the real field names, so
        # any field name works (keywords, "my-field", leading underscores).
        if any('"' in name or "\\" in name for name in self.fields):
            return _FALLBACK  # msgspec refuses these characters in renamed fields
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for index, (name, field) in enumerate(self.fields.items()):
            attr = f"f{index}"
            rename[attr] = name
            if field.is_optional:
                spec.append((attr, Union[field._ms(whole), msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
            else:
                spec.append((attr, field._ms(whole)))
        # gc=False: these structs live for one conversion and cannot form cycles.
        return msgspec.defstruct(
            "Object", spec, kw_only=True, forbid_unknown_fields=True, rename=rename, gc=False
        )


def _is_string_key(validator: Validator) -> bool:
    if isinstance(validator, VString | VId):
        return True
    if isinstance(validator, VLiteral):
        return isinstance(validator.value, str)
    if isinstance(validator, VUnion):
        return all(_is_string_key(member) for member in validator.members)
    return False


class VRecord(Validator):
    """``v.record(keys, values)``: a dict whose keys match ``keys`` and values ``values``."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: Validator, values: Validator) -> None:
        super().__init__()
        if not _is_string_key(_no_optional(keys, "as record keys")):
            raise TypeError(
                "v.record() keys must be v.string(), v.id(...), string literals or a union "
                f"of them, got {keys!r}"
            )
        self.keys = keys
        self.values = _no_optional(values, "as record values")

    def describe(self) -> str:
        return f"record<{self.keys.describe()}, {self.values.describe()}>"

    def json(self) -> dict[str, Any]:
        return {
            "type": "record",
            "keys": self.keys.json(),
            "values": {"fieldType": self.values.json(), "optional": False},
        }

    def _repr(self) -> str:
        return f"v.record({self.keys!r}, {self.values!r})"

    def _check(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Mismatch(value, self.describe())
        out: dict[str, Any] = {}
        check_key = self.keys._check
        check_value = self.values._check
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Mismatch(
                    value,
                    self.describe(),
                    reason=f"object keys must be strings, got {describe_value(key)}",
                )
            if not is_valid_field_name(key):
                raise _Mismatch(
                    key,
                    self.keys.describe(),
                    reason=f"invalid record key {describe_value(key)}: keys are field names "
                    "(non-empty printable ASCII, at most 1024 characters, not starting with '$')",
                    sub_parts=(key,),
                )
            try:
                converted_key = check_key(key)
            except _Mismatch:
                raise _Mismatch(
                    key,
                    self.keys.describe(),
                    reason=f"invalid record key: expected {self.keys.describe()}, "
                    f"got {describe_value(key)}",
                    sub_parts=(key,),
                ) from None
            try:
                out[str.__str__(converted_key)] = check_value(item)
            except _Mismatch as mismatch:
                mismatch.parts.append(key)
                raise
        return out

    def _kinds(self) -> frozenset[str]:
        return frozenset({"dict"})

    def _shallow_match(self, value: object) -> bool:
        return isinstance(value, dict)

    def _build_ms(self, whole: bool) -> Any:
        keys = self.keys
        key_type: Any
        if isinstance(keys, VString):
            key_type = _FIELD_NAME
        elif isinstance(keys, VLiteral | VUnion) and all(
            isinstance(member, VLiteral) for member in _members(keys)
        ):
            key_type = _literal_type([cast(VLiteral, m).value for m in _members(keys)])
        else:
            return _FALLBACK
        return types.GenericAlias(dict, (key_type, self.values._ms(whole)))


def _last(members: tuple[Validator, ...], kind: type[Validator]) -> tuple[Validator, ...]:
    """``members`` with those of type ``kind`` moved to the end, order kept otherwise."""
    return tuple(m for m in members if not isinstance(m, kind)) + tuple(
        m for m in members if isinstance(m, kind)
    )


def _members(validator: Validator) -> list[Validator]:
    if isinstance(validator, VUnion):
        return [leaf for member in validator.members for leaf in _members(member)]
    return [validator]


def _msgspec_accepts(tp: Any) -> bool:
    try:
        msgspec.convert(None, tp, dec_hook=_dec_hook, builtin_types=_BUILTIN_TYPES)
    except TypeError:
        return False
    except msgspec.ValidationError:
        pass
    return True


class VUnion(Validator):
    """``v.union(a, b, ...)``: a value matching any member.

    Members are tried in order, except that an int is offered to
    ``v.number()`` members last, so it stays an int when another member
    accepts it, and a float is offered to ``int`` annotations last, so it
    stays a float when another member accepts it.
    """

    __slots__ = ("_float_order", "_int_order", "members")

    def __init__(self, members: tuple[Validator, ...]) -> None:
        super().__init__()
        if not members:
            raise TypeError("v.union() needs at least one member")
        self.members = tuple(_no_optional(m, "as a union member") for m in members)
        self._int_order = _last(self.members, VFloat64)
        self._float_order = _last(self.members, VIntAnnotation)

    def describe(self) -> str:
        return " | ".join(member.describe() for member in self.members)

    def json(self) -> dict[str, Any]:
        return {"type": "union", "value": [member.json() for member in self.members]}

    def _repr(self) -> str:
        return f"v.union({', '.join(repr(m) for m in self.members)})"

    def _check(self, value: Any) -> Any:
        members = self.members
        if isinstance(value, int) and not isinstance(value, bool):
            members = self._int_order
        elif type(value) is float:
            members = self._float_order
        failures: list[tuple[Validator, _Mismatch]] = []
        for member in members:
            try:
                return member._check(value)
            except _Mismatch as mismatch:
                failures.append((member, mismatch))
        shaped = [mismatch for member, mismatch in failures if member._shallow_match(value)]
        if len(shaped) == 1:
            raise shaped[0]
        for _, failure in failures:
            if failure.kind == "integral":  # say why an `int` member refused this float
                raise _Mismatch(value, self.describe(), detail=failure.detail, kind="integral")
        raise _Mismatch(value, self.describe())

    def _kinds(self) -> frozenset[str]:
        return frozenset().union(*(member._kinds() for member in self.members))

    def _shallow_match(self, value: object) -> bool:
        return any(member._shallow_match(value) for member in self.members)

    def _build_ms(self, whole: bool) -> Any:
        # msgspec picks a union member by the input's type, the Python path
        # by trying members in order. They agree when no two members accept
        # the same kind of value, so only such unions are compiled. Literals
        # of one kind merge into a single Literal[...] first.
        leaves = _members(self)
        str_literals = [
            m.value for m in leaves if isinstance(m, VLiteral) and isinstance(m.value, str)
        ]
        int_literals = [m.value for m in leaves if isinstance(m, VLiteral) and type(m.value) is int]
        parts: list[Any] = []
        seen: set[str] = set()
        if str_literals:
            parts.append(_literal_type(str_literals))
            seen.add("str")
        if int_literals:
            parts.append(_literal_type(int_literals))
            seen.add("int")
        for member in leaves:
            if isinstance(member, VLiteral) and type(member.value) in (str, int):
                continue
            kinds = member._kinds()
            if kinds & seen:
                return _FALLBACK
            seen |= kinds
            parts.append(member._ms(whole))
        tp = cast(Any, Union)[tuple(parts)]
        return tp if _msgspec_accepts(tp) else _FALLBACK
