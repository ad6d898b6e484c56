"""Validators (``v``) and argument validation, compiled to msgspec.

A validator tree (``v.object({"name": v.string()})``, or one derived from a
handler's annotations) is checked in two ways that must agree:

* the fast path: the tree compiled once to a msgspec type (``str``,
  ``list[...]``, a ``Struct`` per object ...) and run by
  ``msgspec.convert``. Nodes msgspec cannot express (ids, ``v.any()``,
  unions of several objects, boolean and float literals ...) become marker
  classes whose values msgspec hands to a ``dec_hook`` that runs the Python
  check for that node only;
* the Python path: every node's ``_check``. It runs inside those markers, and
  again over the whole input when the fast path fails, to find the exact path,
  value and expectation for the error message. Errors are rare, so the fast
  path carries no bookkeeping.

Conversions: ``v.number()`` turns ints into floats; arrays accept lists,
tuples and sets and produce lists; bytes accept ``bytearray`` and
``memoryview`` and produce ``bytes``; ``str``/``int`` subclasses become
plain ``str``/``int``. A union keeps an int an int when one of its members
accepts int64 (or an int literal), and only then tries ``v.number()``.
"""

from __future__ import annotations

import copy
import enum
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal, NoReturn, TypeAlias, Union, cast

import msgspec

from .errors import (
    ArgumentValidationError,
    ReturnsValidationError,
    SchemaValidationError,
)
from .ids import Id, IdOf, id_problem
from .values import (
    INT64_MAX,
    INT64_MIN,
    PathPart,
    describe_value,
    find_invalid,
    format_path,
    is_valid_field_name,
    to_convex_json,
)

__all__ = [
    "ArgsValidator",
    "ObjectValidator",
    "ReturnsValidator",
    "VAny",
    "VArray",
    "VBoolean",
    "VBytes",
    "VFloat64",
    "VId",
    "VInt64",
    "VLiteral",
    "VNull",
    "VObject",
    "VRecord",
    "VString",
    "VUnion",
    "Validator",
    "ValidatorBuilder",
    "compile_args",
    "compile_object",
    "compile_returns",
    "v",
    "validator_from_annotation",
]

_I64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
# Record keys must be field names: printable ASCII not starting with "$".
# msgspec applies patterns with re.search, hence the explicit anchors.
_FIELD_NAME = Annotated[str, msgspec.Meta(pattern=r"\A[ -#%-~][ -~]*\Z", max_length=1024)]
# Without this, msgspec.convert would decode base64 *strings* into bytes.
_BUILTIN_TYPES = (bytes,)

_ALL_KINDS = frozenset({"null", "bool", "int", "float", "str", "bytes", "list", "dict"})


def _value_kind(value: object) -> str:
    """The kind of Python value msgspec dispatches unions on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, list | tuple | set | frozenset):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "other"


# --------------------------------------------------------------------------
# Mismatches (Python path)


class _Mismatch(Exception):
    """A value does not match a node. ``parts`` collects the path, innermost first."""

    def __init__(
        self,
        value: object,
        expected: str,
        *,
        detail: str = "",
        reason: str = "",
        kind: str = "type",
        sub_parts: Iterable[PathPart] = (),
    ) -> None:
        super().__init__(expected)
        self.value = value
        self.expected = expected
        self.detail = detail
        self.reason = reason
        self.kind = kind
        self.parts: list[PathPart] = list(sub_parts)[::-1]

    def path_parts(self) -> list[PathPart]:
        return self.parts[::-1]

    def describe(self) -> str:
        if self.reason:
            return self.reason
        text = f"expected {self.expected}, got {describe_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text


# --------------------------------------------------------------------------
# Marker types: msgspec calls _dec_hook for them, which runs the Python check.


class _Checked:
    """A value checked by the Python path, wrapped so msgspec accepts it."""

    __slots__ = ("value",)
    node: ClassVar[Validator]

    def __init__(self, value: object) -> None:
        self.value = value


def _dec_hook(tp: type, obj: Any) -> Any:
    if not (isinstance(tp, type) and issubclass(tp, _Checked)):
        raise NotImplementedError
    try:
        return tp(tp.node._check(obj))
    except _Mismatch:
        # The message is never shown: a failed fast path reruns the Python
        # path over the whole input to build the real error.
        raise ValueError(f"expected {tp.node.describe()}") from None


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, _Checked):
        return obj.value
    if isinstance(obj, str):
        return str.__str__(obj)
    raise NotImplementedError


def _to_plain(converted: object) -> Any:
    # Structs become dicts (UNSET fields dropped), markers their values,
    # str subclasses str: the handler sees plain Convex values.
    return msgspec.to_builtins(converted, builtin_types=_BUILTIN_TYPES, enc_hook=_enc_hook)


_FALLBACK: Any = object()
_NOT_BUILT: Any = object()


# --------------------------------------------------------------------------
# Validators


class Validator:
    """Base class of all validators (what ``v.*`` returns).

    ``describe()`` gives the short form used in messages (``array<int64>``),
    ``json()`` a structural description in the shape of Convex's validator
    JSON, and ``is_optional`` whether the field may be absent (see
    ``v.optional``). Validators are immutable and compare structurally.
    """

    __slots__ = ("_ms_type", "is_optional")

    def __init__(self) -> None:
        self.is_optional = False
        self._ms_type: Any = _NOT_BUILT

    # -- public ------------------------------------------------------------

    def describe(self) -> str:
        """A short type expression for messages, e.g. ``{ name: string, age?: int64 }``."""
        raise NotImplementedError

    def json(self) -> dict[str, Any]:
        """A JSON-compatible structural description (Convex's validator JSON shape)."""
        raise NotImplementedError

    def _repr(self) -> str:
        raise NotImplementedError

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

    def _check(self, value: Any) -> Any:
        """Python path: return the converted value or raise ``_Mismatch``."""
        raise NotImplementedError

    def _kinds(self) -> frozenset[str]:
        """The value kinds this validator can accept (for union compilation)."""
        raise NotImplementedError

    def _shallow_match(self, value: object) -> bool:
        # Whether a union's error should be explained by this member's own
        # error (the value has this container's shape) rather than by the
        # union as a whole. Scalars never: "expected string | null" is clearer.
        return False

    def _build_ms(self) -> Any:
        """The msgspec type for this node, or ``_FALLBACK`` for the Python path."""
        return _FALLBACK

    def _ms(self) -> Any:
        ms = self._ms_type
        if ms is _NOT_BUILT:
            ms = self._build_ms()
            if ms is _FALLBACK:
                ms = type(
                    f"Checked{type(self).__name__}", (_Checked,), {"__slots__": (), "node": self}
                )
            self._ms_type = ms
        return ms


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

    def _build_ms(self) -> Any:
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

    def _build_ms(self) -> Any:
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

    def _build_ms(self) -> Any:
        return types.GenericAlias(list, (self.item._ms(),))


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

    def _build_ms(self) -> Any:
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
                spec.append((attr, Union[field._ms(), msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
            else:
                spec.append((attr, field._ms()))
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

    def _build_ms(self) -> Any:
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
        return types.GenericAlias(dict, (key_type, self.values._ms()))


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
    accepts it.
    """

    __slots__ = ("_int_order", "members")

    def __init__(self, members: tuple[Validator, ...]) -> None:
        super().__init__()
        if not members:
            raise TypeError("v.union() needs at least one member")
        self.members = tuple(_no_optional(m, "as a union member") for m in members)
        numbers: list[Validator] = [m for m in self.members if isinstance(m, VFloat64)]
        others: list[Validator] = [m for m in self.members if not isinstance(m, VFloat64)]
        self._int_order = tuple(others + numbers)

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
        failures: list[tuple[Validator, _Mismatch]] = []
        for member in members:
            try:
                return member._check(value)
            except _Mismatch as mismatch:
                failures.append((member, mismatch))
        shaped = [mismatch for member, mismatch in failures if member._shallow_match(value)]
        if len(shaped) == 1:
            raise shaped[0]
        raise _Mismatch(value, self.describe())

    def _kinds(self) -> frozenset[str]:
        return frozenset().union(*(member._kinds() for member in self.members))

    def _shallow_match(self, value: object) -> bool:
        return any(member._shallow_match(value) for member in self.members)

    def _build_ms(self) -> Any:
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
            parts.append(member._ms())
        tp = cast(Any, Union)[tuple(parts)]
        return tp if _msgspec_accepts(tp) else _FALLBACK


# --------------------------------------------------------------------------
# v


def _as_validator(spec: object, where: str) -> Validator:
    if isinstance(spec, Validator):
        return spec
    try:
        return validator_from_annotation(spec)
    except TypeError as error:
        raise TypeError(f"{where}: {error}") from None


_Spec: TypeAlias = object
"""A validator, or a Python type annotation standing for one."""


class ValidatorBuilder:
    """The ``v`` namespace: ``v.string()``, ``v.object({...})`` ...

    Wherever a validator is expected, a Python type annotation is accepted
    too (``v.array(int)`` is ``v.array(v.int64())``).
    """

    __slots__ = ()

    def string(self) -> VString:
        """A ``str``."""
        return VString()

    def number(self) -> VFloat64:
        """A float64; ints are accepted and converted to float."""
        return VFloat64()

    def float64(self) -> VFloat64:
        """Alias of :meth:`number`."""
        return VFloat64()

    def int64(self) -> VInt64:
        """An ``int`` in the int64 range (``bool`` is not an int here)."""
        return VInt64()

    def bigint(self) -> VInt64:
        """Alias of :meth:`int64` (Convex's name)."""
        return VInt64()

    def boolean(self) -> VBoolean:
        """``True`` or ``False``."""
        return VBoolean()

    def null(self) -> VNull:
        """``None``."""
        return VNull()

    def bytes(self) -> VBytes:
        """``bytes``."""
        return VBytes()

    def any(self) -> VAny:
        """Any Convex value."""
        return VAny()

    def id(self, table: str) -> VId:
        """An id of a document in ``table``."""
        if not isinstance(table, str) or not table:
            raise TypeError(f'v.id() takes a table name such as v.id("messages"), got {table!r}')
        return VId(table)

    def array(self, item: _Spec) -> VArray:
        """A list whose items match ``item``."""
        return VArray(_as_validator(item, "v.array()"))

    def object(self, fields: dict[str, _Spec] | None = None, /, **more: _Spec) -> VObject:
        """A dict with exactly these fields: ``v.object({"name": v.string()})``.

        Fields may also be given as keywords. Wrap a field in
        :meth:`optional` to let it be absent.
        """
        merged = {**(fields or {}), **more}
        return VObject(
            {name: _as_validator(f, f"v.object() field {name!r}") for name, f in merged.items()}
        )

    def record(self, keys: _Spec, values: _Spec) -> VRecord:
        """A dict with keys matching ``keys`` (string-like) and values matching ``values``."""
        return VRecord(_as_validator(keys, "v.record() keys"), _as_validator(values, "v.record()"))

    def union(self, *members: _Spec) -> Validator:
        """A value matching any of ``members`` (a single member is returned as is)."""
        validators = tuple(_as_validator(m, "v.union()") for m in members)
        if len(validators) == 1:
            return validators[0]
        return VUnion(validators)

    def literal(self, value: str | int | float | bool) -> VLiteral:
        """Exactly ``value`` (a str, int64, float or bool)."""
        return VLiteral(value)

    def optional(self, validator: _Spec) -> Validator:
        """``validator``, but the field or argument may be absent (not ``None``)."""
        result = copy.copy(_as_validator(validator, "v.optional()"))
        result.is_optional = True
        return result

    def nullable(self, validator: _Spec) -> Validator:
        """``validator`` or ``None``: ``v.union(validator, v.null())``."""
        return VUnion((_as_validator(validator, "v.nullable()"), VNull()))


v = ValidatorBuilder()
"""The validator namespace: ``v.string()``, ``v.id("messages")`` ..."""


# --------------------------------------------------------------------------
# Annotations -> validators

_SUPPORTED = (
    "supported annotations are str, int, float, bool, None, bytes, list[X], "
    'dict[str, X], a TypedDict, Literal[...], X | None, Union[...], Any and Id["table"]'
)


def validator_from_annotation(annotation: object) -> Validator:
    """The validator matching a Python type annotation.

    ``str`` → string, ``int`` → int64, ``float`` → number, ``bool``,
    ``None``, ``bytes``, ``list[X]``, ``dict[str, X]`` (record), TypedDict
    (object; ``NotRequired`` fields optional), ``Literal[...]``,
    ``X | None`` / ``Optional[X]`` / ``Union[...]``, ``Any`` / ``object``
    (any Convex value), ``Id["t"]`` / ``Id``. A validator is returned as is.
    Raises ``TypeError`` for anything else.
    """
    return _from_annotation(annotation, ())


def _from_annotation(tp: Any, seen: tuple[type, ...]) -> Validator:
    if isinstance(tp, Validator):
        return tp
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return VAny()
    if tp is None or tp is type(None):
        return VNull()
    if isinstance(tp, type):
        if issubclass(tp, Id):
            return VId(None)
        simple: dict[type, Callable[[], Validator]] = {
            str: VString,
            bool: VBoolean,
            int: VInt64,
            float: VFloat64,
            bytes: VBytes,
        }
        if tp in simple:
            return simple[tp]()
        if tp is list:
            return VArray(VAny())
        if tp is dict:
            return VRecord(VString(), VAny())
        if typing.is_typeddict(tp):
            return _from_typeddict(tp, seen)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, IdOf):
                return VId(meta.table)
            if isinstance(meta, Validator):
                return meta
        return _from_annotation(args[0], seen)
    if origin in (typing.Required, typing.NotRequired):
        return _from_annotation(args[0], seen)
    if origin is list:
        return VArray(_from_annotation(args[0], seen))
    if origin is dict:
        return VRecord(_from_annotation(args[0], seen), _from_annotation(args[1], seen))
    if origin is Literal:
        literals: list[Validator] = []
        for value in args:
            if value is None:
                literals.append(VNull())
            elif isinstance(value, str | int | float) and not isinstance(value, enum.Enum):
                literals.append(VLiteral(value))
            else:
                raise TypeError(f"unsupported Literal value {value!r} in {tp!r}")
        return literals[0] if len(literals) == 1 else VUnion(tuple(literals))
    if origin is Union or origin is types.UnionType:
        members = tuple(_from_annotation(arg, seen) for arg in args)
        return members[0] if len(members) == 1 else VUnion(members)
    raise TypeError(f"unsupported type annotation {tp!r}; {_SUPPORTED}")


def _from_typeddict(tp: type, seen: tuple[type, ...]) -> Validator:
    if tp in seen:
        raise TypeError(f"recursive TypedDict {tp.__qualname__} is not supported")
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception as error:
        raise TypeError(f"cannot resolve the annotations of {tp.__qualname__}: {error}") from None
    # With string annotations (PEP 563), Python 3.11 computes
    # __optional_keys__ without seeing Required/NotRequired, so the wrappers
    # (kept by include_extras=True) decide when present.
    optional: frozenset[str] = getattr(tp, "__optional_keys__", frozenset())
    fields: dict[str, Validator] = {}
    for name, hint in hints.items():
        wrapper = typing.get_origin(hint)
        is_optional = wrapper is typing.NotRequired or (
            wrapper is not typing.Required and name in optional
        )
        field = _from_annotation(hint, (*seen, tp))
        if is_optional:
            field = copy.copy(field)
            field.is_optional = True
        fields[name] = field
    return VObject(fields)


# --------------------------------------------------------------------------
# Compiled validators


def _converted(root_struct: Any, value: object) -> Any:
    return msgspec.convert(
        value, root_struct, strict=True, dec_hook=_dec_hook, builtin_types=_BUILTIN_TYPES
    )


def _mismatch_or_none(validator: Validator, value: object) -> _Mismatch | None:
    try:
        validator._check(value)
    except _Mismatch as mismatch:
        return mismatch
    return None


def _divergence(error: msgspec.ValidationError) -> _Mismatch:
    # The Python path accepted what msgspec refused; that is a bug in this
    # module. Still report something useful rather than accept the input.
    text = str(error)
    return _Mismatch(None, "", reason=f"invalid value ({text})")


class ArgsValidator:
    """Validates and converts the arguments of one function.

    ``fields`` maps argument names to validators; ``extra`` is the validator
    for undeclared arguments (a handler with ``**kwargs``), or ``None`` when
    they are refused.
    """

    __slots__ = ("_object", "_struct", "extra", "fields")

    def __init__(self, fields: dict[str, Validator], extra: Validator | None = None) -> None:
        self._object = VObject(fields)
        self.fields = self._object.fields
        self.extra = extra
        self._struct = self._object._ms()

    def describe(self) -> str:
        """The arguments as an object type, e.g. ``{ body: string }``."""
        return self._object.describe()

    def json(self) -> dict[str, Any]:
        """The arguments as Convex validator JSON (an object validator)."""
        return self._object.json()

    def __repr__(self) -> str:
        return f"ArgsValidator({self._object!r}, extra={self.extra!r})"

    def validate(self, args: object, function: str) -> dict[str, object]:
        """Return the converted arguments or raise :class:`ArgumentValidationError`."""
        if not isinstance(args, dict):
            raise ArgumentValidationError(
                f'Invalid arguments for "{function}": expected an object (dict) of arguments, '
                f"got {describe_value(args)}",
                function=function,
                path="$",
                value=args,
                expected=self.describe(),
            )
        extras: dict[str, object] | None = None
        if self.extra is not None:
            known = self.fields
            if any(key not in known for key in args):
                extras = {k: item for k, item in args.items() if k not in known}
                args = {k: item for k, item in args.items() if k in known}
        try:
            result: dict[str, object] = _to_plain(_converted(self._struct, args))
        except msgspec.ValidationError as error:
            self._fail(args, function, error)
        if extras:
            result.update(self._check_extras(extras, function))
        return result

    def _check_extras(self, extras: dict[Any, object], function: str) -> dict[str, object]:
        assert self.extra is not None
        record = VRecord(VString(), self.extra)
        try:
            converted: dict[str, object] = record._check(extras)
        except _Mismatch as mismatch:
            self._raise(mismatch, function)
        return converted

    def _fail(self, args: object, function: str, error: msgspec.ValidationError) -> NoReturn:
        mismatch = _mismatch_or_none(self._object, args) or _divergence(error)
        self._raise(mismatch, function)

    def _raise(self, mismatch: _Mismatch, function: str) -> NoReturn:
        parts = mismatch.path_parts()
        path = format_path(parts)
        if len(parts) == 1 and mismatch.kind == "missing":
            message = (
                f'Invalid arguments for "{function}": missing required argument `{parts[0]}` '
                f"(expected {mismatch.expected})"
            )
        elif len(parts) == 1 and mismatch.kind == "unexpected":
            message = (
                f'Invalid arguments for "{function}": unexpected argument `{parts[0]}` '
                f"(expected arguments: {self.describe()})"
            )
        else:
            message = f'Invalid argument for "{function}" at {path}: {mismatch.describe()}'
        raise ArgumentValidationError(
            message,
            function=function,
            path=path,
            value=mismatch.value,
            expected=mismatch.expected,
        ) from None


class ReturnsValidator:
    """Validates and converts the return value of one function."""

    __slots__ = ("_struct", "validator")

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        # A one-field struct as the root: msgspec caches the compiled type
        # info on struct classes, while a bare list[...] would be re-parsed
        # on every call.
        self._struct = msgspec.defstruct("Returns", [("v", validator._ms())], gc=False)

    def __repr__(self) -> str:
        return f"ReturnsValidator({self.validator!r})"

    def validate(self, value: object, function: str) -> object:
        """Return the converted value or raise :class:`ReturnsValidationError`."""
        try:
            return _to_plain(_converted(self._struct, {"v": value}).v)
        except msgspec.ValidationError as error:
            mismatch = _mismatch_or_none(self.validator, value) or _divergence(error)
        path = format_path(mismatch.path_parts())
        raise ReturnsValidationError(
            f'Invalid return value of "{function}" at {path}: {mismatch.describe()}'
        )


class ObjectValidator:
    """Validates documents of one table against its schema (system fields excluded)."""

    __slots__ = ("_object", "_struct", "name")

    def __init__(self, fields: dict[str, Validator], name: str) -> None:
        self._object = VObject(fields)
        self.name = name
        self._struct = self._object._ms()

    @property
    def fields(self) -> dict[str, Validator]:
        """The field validators."""
        return self._object.fields

    def describe(self) -> str:
        """The document type, e.g. ``{ title: string, done: boolean }``."""
        return self._object.describe()

    def json(self) -> dict[str, Any]:
        """Convex validator JSON of the document type."""
        return self._object.json()

    def __repr__(self) -> str:
        return f"ObjectValidator({self.name!r}, {self._object!r})"

    def validate(self, doc: object) -> dict[str, object]:
        """Return the converted document or raise :class:`SchemaValidationError`."""
        try:
            result: dict[str, object] = _to_plain(_converted(self._struct, doc))
            return result
        except msgspec.ValidationError as error:
            mismatch = _mismatch_or_none(self._object, doc) or _divergence(error)
        path = format_path(mismatch.path_parts())
        raise SchemaValidationError(
            f'Document does not match the schema of table "{self.name}" at {path}: '
            f"{mismatch.describe()}"
        )


def compile_object(fields: dict[str, Validator], *, name: str) -> ObjectValidator:
    """Compile a table's document validator (``name`` is the table, for messages)."""
    return ObjectValidator(
        {key: _as_validator(f, f"table {name!r} field {key!r}") for key, f in fields.items()},
        name,
    )


def compile_returns(returns: object) -> ReturnsValidator | None:
    """Compile a ``returns=`` validator or return annotation; ``None`` means unchecked."""
    if returns is None:
        return None
    return ReturnsValidator(_as_validator(returns, "returns"))


def _function_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "?"
    name = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{name}"


def _argument_hints(
    handler: Callable[..., Any], parameters: list[inspect.Parameter], name: str
) -> dict[str, Any]:
    namespace = getattr(inspect.unwrap(handler), "__globals__", {})
    hints: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.annotation is inspect.Parameter.empty:
            continue

        def holder() -> None: ...

        holder.__annotations__ = {parameter.name: parameter.annotation}
        try:
            hints.update(typing.get_type_hints(holder, namespace, include_extras=True))
        except Exception as error:
            raise TypeError(
                f"{name}: parameter `{parameter.name}`: cannot resolve its annotation "
                f"{parameter.annotation!r}: {error}"
            ) from None
    return hints


def compile_args(
    args: dict[str, Validator] | VObject | None, handler: Callable[..., Any]
) -> ArgsValidator:
    """Compile the argument validator of a function.

    With ``args`` (a dict of validators, or ``v.object(...)``), the handler's
    annotations are ignored. Without it, the parameters after the first
    (``ctx``) define the arguments from their annotations; parameters with a
    default are optional, unannotated ones accept any Convex value, and
    ``**kwargs`` accepts extra arguments. Raises ``TypeError`` naming the
    function and parameter for annotations that cannot be validated.
    """
    name = _function_name(handler)
    if args is not None:
        if isinstance(args, VObject):
            return ArgsValidator(args.fields)
        if not isinstance(args, dict):
            raise TypeError(f"{name}: args= must be a dict of validators, got {args!r}")
        return ArgsValidator(
            {key: _as_validator(f, f"{name}: argument {key!r}") for key, f in args.items()}
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: cannot read the signature: {error}") from None
    parameters = list(signature.parameters.values())
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except Exception:
        # Often only `ctx` or the return type is unresolvable (imported under
        # TYPE_CHECKING); only the arguments' annotations matter here.
        hints = _argument_hints(handler, parameters[1:], name)
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"{name} must take `ctx` as its first positional parameter")
    fields: dict[str, Validator] = {}
    extra: Validator | None = None
    for parameter in parameters[1:]:
        hint = hints.get(parameter.name, inspect.Parameter.empty)
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # the handler is called with keywords only
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"{name}: parameter `{parameter.name}` is positional-only, but arguments "
                "are passed by name"
            )
        try:
            validator = _from_annotation(hint, ())
        except TypeError as error:
            raise TypeError(f"{name}: parameter `{parameter.name}`: {error}") from None
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = validator
            continue
        if not is_valid_field_name(parameter.name):
            raise TypeError(
                f"{name}: parameter `{parameter.name}` is not a valid Convex field name "
                "(printable ASCII only)"
            )
        if parameter.default is not inspect.Parameter.empty:
            validator = copy.copy(validator)
            validator.is_optional = True
        fields[parameter.name] = validator
    return ArgsValidator(fields, extra)
