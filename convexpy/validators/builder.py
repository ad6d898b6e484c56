"""``v``: the builder of validators."""

from __future__ import annotations

import copy
from typing import TypeAlias

from .annotations import _as_validator
from .nodes import (
    Validator,
    VAny,
    VArray,
    VBoolean,
    VBytes,
    VFloat64,
    VId,
    VInt64,
    VLiteral,
    VNull,
    VObject,
    VRecord,
    VString,
    VUnion,
)

# --------------------------------------------------------------------------
# v


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
